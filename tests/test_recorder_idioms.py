"""Constructor idioms the library zoos found (docs/ZOO.md), each pinned on its own.

``torch.tensor`` of a list of recorded tensors (torchtune's RoPE scaling) is pinned in
``test_record_replay.py``; here: ``copy.deepcopy`` inside the constructor (torchtune's
``_get_clones``) and the refusal message of an operator replay cannot run.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

import initrecipe
from eager_check import assert_replay_matches_eager
from zoo_check import check_portable


class SharedStorage(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        table = torch.randn(6, 4)
        self.register_buffer("table", table)
        self.register_buffer("rows", table[2:5])  # a view of the same storage
        self.register_buffer("cols", table[:, 1:3])  # a strided view
        self.lin = nn.Linear(4, 4)


class Clones(nn.Module):
    """torchtune's ``_get_clones``: ``copy.deepcopy`` of a freshly built layer, inside the constructor."""

    def __init__(self) -> None:
        super().__init__()
        layer = SharedStorage()
        self.layers = nn.ModuleList([copy.deepcopy(layer) for _ in range(3)])
        self.layers[1].table.mul_(2)  # writes through one copy's storage only


def test_deepcopy_inside_the_constructor_keeps_views_and_shared_storage() -> None:
    recipe = assert_replay_matches_eager(Clones, seed=0)
    weights = initrecipe.replay(recipe)
    torch.manual_seed(0)
    eager = dict(Clones().named_buffers())
    for k in range(3):
        table, rows, cols = (weights[f"layers.{k}.{n}"] for n in ("table", "rows", "cols"))
        ptrs = {t.untyped_storage().data_ptr() for t in (table, rows, cols)}
        assert len(ptrs) == 1  # one storage per copy, as in eager
        assert cols.stride() == eager[f"layers.{k}.cols"].stride() == (4, 1)
        assert cols.storage_offset() == eager[f"layers.{k}.cols"].storage_offset() == 1
        assert rows.storage_offset() == eager[f"layers.{k}.rows"].storage_offset() == 8
    storages = {weights[f"layers.{k}.table"].untyped_storage().data_ptr() for k in range(3)}
    assert len(storages) == 3  # each copy has its own
    assert torch.equal(weights["layers.1.rows"], 2 * weights["layers.0.rows"])
    assert torch.equal(weights["layers.2.cols"], weights["layers.0.cols"])
    check_portable("Clones", Clones, seed=0)


def test_deepcopy_keeps_user_attributes_and_requires_grad() -> None:
    seen = {}

    class Module(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            marked = torch.zeros(3)
            marked.tag = "kept"
            self.register_buffer("a", copy.deepcopy(marked))
            seen["tag"] = self.a.tag
            self.p = nn.Parameter(torch.randn(2), requires_grad=False)
            self.q = copy.deepcopy(self.p)
            self.r = copy.deepcopy(nn.Parameter(torch.randn(2)))

    recipe = assert_replay_matches_eager(Module, seed=0)
    assert seen["tag"] == "kept"
    weights = initrecipe.replay(recipe)
    assert weights["q"].requires_grad is False and weights["r"].requires_grad is True
    assert torch.equal(weights["p"], weights["q"])
    assert weights["p"].untyped_storage().data_ptr() != weights["q"].untyped_storage().data_ptr()


def test_deepcopy_keeps_one_storage_viewed_as_two_dtypes() -> None:
    class Viewed(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            a = torch.randn(4)
            self.register_buffer("a", a)
            self.register_buffer("bits", a.view(torch.int32))

    class Copied(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.m = copy.deepcopy(Viewed())
            self.m.bits.add_(1)  # through the int32 view: changes `a` as well

    weights = initrecipe.replay(assert_replay_matches_eager(Copied, seed=0))
    assert weights["m.a"].untyped_storage().data_ptr() == weights["m.bits"].untyped_storage().data_ptr()
    assert torch.equal(weights["m.a"].view(torch.int32), weights["m.bits"])
