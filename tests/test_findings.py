"""Uninitialized tensors are findings: ``record`` warns, ``check`` lists them (``--strict`` fails),
``show`` counts them, ``diff`` says when a tensor becomes (un)initialized: the flow audit."""

from __future__ import annotations

import json
import re
import sys
import warnings
from pathlib import Path

import jsonschema
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

import initrecipe
from initrecipe.analysis import describe, uninitialized
from initrecipe.cli import main
from initrecipe.analysis.uninitialized import Uninitialized, uninitialized_tensors
from initrecipe.analysis.lineage import analyse
from initrecipe.inspect.show import summarize

ROOT = Path(__file__).resolve().parent.parent
DIFF_SCHEMA = jsonschema.Draft202012Validator(json.loads((ROOT / "schema" / "diff.schema.json").read_text()))

FULL = ("uninitialized: written by no instruction; eager gives whatever memory holds: "
        "initialize it in the constructor or with init_weights")


def partly(count: str) -> str:
    return (f"partly uninitialized: {count} elements written by no instruction; eager gives whatever memory "
            "holds there: initialize all of it in the constructor or with init_weights")


def quiet_record(fn, **kwargs) -> initrecipe.Recipe:
    """Record a constructor whose uninitialized tensors are the point of the test."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", initrecipe.UninitializedWarning)
        return initrecipe.record(fn, **kwargs)


def empty_dict() -> nn.Module:
    return nn.ParameterDict({"w": nn.Parameter(torch.empty(3, 4))})


class EmptyWeight(nn.Module):
    """``nn.Linear(4, 3)``'s tensors, as a meta flow that forgot the weight leaves them."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(3, 4))
        self.bias = nn.Parameter(torch.empty(3))
        with torch.no_grad():
            self.bias.uniform_(-0.5, 0.5)


class Rows(nn.Module):
    """A weight whose rows ``lo:hi`` are drawn and the others never written."""

    def __init__(self, rows: int, cols: int, lo: int, hi: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(rows, cols))
        with torch.no_grad():
            self.weight[lo:hi].normal_()


# ----------------------------------------------------------------------------- the decision
def test_record_warns_naming_the_tensor_and_the_recipe_lists_it():
    with pytest.warns(initrecipe.UninitializedWarning) as caught:
        recipe = initrecipe.record(empty_dict, seed=0)
    assert len(caught) == 1
    assert str(caught[0].message) == (
        "the constructor leaves 1 tensor uninitialized, `w`: no instruction writes its values, so eager gives it "
        "whatever memory holds and so does replay; initialize it in the constructor or with init_weights "
        "(`recipe.uninitialized_names` lists them all, `initrecipe check` explains each)"
    )
    assert caught[0].filename == __file__  # attributed to the caller of `record`
    assert recipe.uninitialized_names == ["w"]
    assert recipe.uninitialized == [Uninitialized("w", (3, 4), torch.float32, 12, 12)]
    assert recipe.uninitialized[0].text() == f"`w` (3, 4) float32 {FULL}"


def test_the_warning_is_in_the_error_tree_and_exported():
    assert issubclass(initrecipe.UninitializedWarning, initrecipe.RecipeWarning)
    assert issubclass(initrecipe.RecipeWarning, UserWarning)
    assert {"UninitializedWarning", "RecipeWarning"} <= set(initrecipe.__all__)


def test_an_initialized_model_records_without_a_warning():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        recipe = initrecipe.record(lambda: nn.Sequential(nn.Linear(4, 3), nn.LayerNorm(3)), seed=0)
    assert recipe.uninitialized_names == []


def test_the_message_shows_three_names_and_counts_the_rest():
    def many() -> nn.Module:
        m = nn.Module()
        for i in range(5):
            m.register_buffer(f"b{i}", torch.empty(2))
        m.b1[0] = 1.0
        return m

    with pytest.warns(initrecipe.UninitializedWarning, match=re.escape(
        "the constructor leaves 5 tensors uninitialized, `b0`, `b1` (partly), `b2` and 2 more: no instruction "
        "writes their values, so eager gives them whatever memory holds and so does replay; initialize them in "
        "the constructor"
    )):
        recipe = initrecipe.record(many, seed=0)
    assert recipe.uninitialized_names == ["b0", "b1", "b2", "b3", "b4"]
    assert [u.elements for u in recipe.uninitialized] == [2, 1, 2, 2, 2]


def test_ties_are_listed_under_each_name():
    def tied() -> nn.Module:
        m = nn.Module()
        m.a = nn.Parameter(torch.empty(2, 2))
        m.b = m.a
        return m

    assert quiet_record(tied, seed=0).uninitialized_names == ["a", "b"]


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rows=st.integers(1, 6), cols=st.integers(1, 5), data=st.data())
def test_rows_written_partly_count_exactly_and_the_written_rows_match_eager(rows, cols, data):
    lo = data.draw(st.integers(0, rows))
    hi = data.draw(st.integers(lo, rows))
    recipe = quiet_record(lambda: Rows(rows, cols, lo, hi), seed=5)
    unwritten = (rows - (hi - lo)) * cols
    if unwritten == 0:
        assert recipe.uninitialized == []
    else:
        assert recipe.uninitialized == [Uninitialized("weight", (rows, cols), torch.float32, rows * cols, unwritten)]
        expected = FULL if hi == lo else partly(f"{unwritten:,} of {rows * cols:,}")
        assert recipe.uninitialized[0].why == expected
    torch.manual_seed(5)
    eager = Rows(rows, cols, lo, hi)
    assert torch.equal(initrecipe.replay(recipe)["weight"][lo:hi], eager.weight[lo:hi])


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(size=st.integers(1, 12), data=st.data())
def test_a_buffer_viewing_part_of_a_storage_counts_only_its_own_elements(size, data):
    written = data.draw(st.integers(0, size))
    start = data.draw(st.integers(0, size - 1))

    def build() -> nn.Module:
        m = nn.Module()
        storage = torch.empty(size)
        storage[:written].zero_()
        m.register_buffer("tail", storage[start:])
        return m

    recipe = quiet_record(build, seed=0)
    unwritten = size - max(start, written)
    assert [u.elements for u in recipe.uninitialized] == ([unwritten] if unwritten else [])


def test_writes_through_a_view_of_another_dtype_count_by_bytes():
    def build() -> nn.Module:
        m = nn.Module()
        b = torch.empty(4)
        b.view(torch.uint8)[:6].zero_()  # element 0 and half of element 1
        m.register_buffer("b", b)
        return m

    assert quiet_record(build, seed=0).uninitialized == [Uninitialized("b", (4,), torch.float32, 4, 3)]


def test_copies_of_uninitialized_memory_are_uninitialized():
    def build() -> nn.Module:
        m = nn.Module()
        b = torch.zeros(4, 3)
        b[1:].copy_(torch.empty(3, 3))
        m.register_buffer("b", b)
        m.register_buffer("c", torch.empty(2).clone())
        m.register_buffer("d", torch.empty(2).fill_(1.0))
        return m

    recipe = quiet_record(build, seed=0)
    assert [(u.name, u.elements) for u in recipe.uninitialized] == [("b", 9), ("c", 2)]


def test_expanded_and_overlapping_writes_count_their_elements():
    def build() -> nn.Module:
        m = nn.Module()
        b = torch.empty(3, 4)
        b[:, 0].copy_(torch.ones(1).expand(3))
        b.view(-1).unfold(0, 3, 2)[:2].fill_(2.0)  # elements 0..4, through overlapping windows
        m.register_buffer("b", b)
        return m

    recipe = quiet_record(build, seed=0)
    assert recipe.uninitialized == [Uninitialized("b", (3, 4), torch.float32, 12, 12 - 6)]


def test_a_storage_over_the_mask_limit_is_reported_partly_uncounted(monkeypatch):
    monkeypatch.setattr(uninitialized, "_MASK_LIMIT", 8)
    recipe = quiet_record(lambda: Rows(4, 3, 0, 2), seed=0)
    assert recipe.uninitialized == [Uninitialized("weight", (4, 3), torch.float32, 12, None)]
    assert recipe.uninitialized[0].why == partly("some")


def test_show_counts_them_in_its_header():
    recipe = quiet_record(lambda: Rows(4, 3, 0, 2), seed=0)
    text = summarize(recipe).text()
    assert "uninitialized: 1 tensor, `weight` (partly)  (`initrecipe check` lists them)\n" in text
    assert "uninitialized" not in summarize(initrecipe.record(lambda: nn.Linear(2, 2), seed=0)).text()


def test_portable_recipes_agree():
    recipe = quiet_record(lambda: Rows(4, 3, 1, 2), seed=0, rng="portable")
    assert [(u.name, u.elements) for u in recipe.uninitialized] == [("weight", 9)]


def test_uninitialized_tensors_is_the_one_decision_show_uses():
    recipe = quiet_record(EmptyWeight, seed=0)
    lineage = analyse(recipe)
    d = describe.Describer()
    fully = {u.name for u in uninitialized_tensors(lineage, d) if not u.partly}
    assert fully == {t.entry.name for t in lineage if d.tensor(t).uninitialized} == {"weight"}


# ----------------------------------------------------------------------------- the command line
@pytest.fixture
def models(tmp_path, monkeypatch):
    (tmp_path / "flows.py").write_text(
        "import torch\nfrom torch import nn\n"
        "def eager():\n    return nn.Linear(4, 3)\n"
        "class Meta(nn.Module):\n"
        "    def __init__(self):\n"
        "        super().__init__()\n"
        "        self.weight = nn.Parameter(torch.empty(3, 4))\n"
        "        self.bias = nn.Parameter(torch.empty(3))\n"
        "        with torch.no_grad():\n"
        "            self.bias.uniform_(-0.5, 0.5)\n"
        "def half():\n"
        "    m = nn.Linear(4, 3)\n"
        "    m.weight = nn.Parameter(torch.empty(3, 4))\n"
        "    with torch.no_grad():\n"
        "        m.weight[:1].normal_()\n"
        "    return m\n"
    )
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield tmp_path
    sys.modules.pop("flows", None)


def test_cli_record_prints_the_warning_on_stderr(models, capsys):
    assert main(["record", "flows:Meta", "--seed", "0", "-o", "meta.recipe"]) == 0
    err = capsys.readouterr().err.splitlines()
    assert err[1] == (
        "initrecipe: warning: the constructor leaves 1 tensor uninitialized, `weight`: no instruction writes its "
        "values, so eager gives it whatever memory holds and so does replay; initialize it in the constructor or "
        "with init_weights (`initrecipe check meta.recipe` lists each)"
    )
    assert main(["record", "flows:eager", "--seed", "0", "-o", "eager.recipe"]) == 0
    assert len(capsys.readouterr().err.splitlines()) == 1


def test_cli_check_lists_each_tensor_and_strict_fails(models, capsys):
    main(["record", "flows:Meta", "--seed", "0", "-o", "meta.recipe"])
    main(["record", "flows:half", "--seed", "0", "-o", "half.recipe"])
    main(["record", "flows:eager", "--seed", "0", "-o", "eager.recipe"])
    capsys.readouterr()
    work = r" \(replay estimated at [^\n]* of work \([^\n]*\), budget 60 s\)\n"
    for strict, code, status in (([], 0, "ok with 1 warning"), (["--strict"], 1, "failed (--strict) on 1 warning")):
        assert main(["check", "meta.recipe", *strict]) == code
        out = capsys.readouterr().out
        assert re.fullmatch(re.escape(f"meta.recipe: warning: `weight` (3, 4) float32 {FULL}\nmeta.recipe: {status}")
                            + work, out), out
    assert main(["check", "half.recipe", "--strict"]) == 1
    assert capsys.readouterr().out.splitlines()[0] == f"half.recipe: warning: `weight` (3, 4) float32 {partly('8 of 12')}"
    assert main(["check", "eager.recipe", "--strict"]) == 0
    assert re.fullmatch(re.escape("eager.recipe: ok") + work, capsys.readouterr().out)


def test_cli_check_json_has_the_warnings(models, capsys):
    main(["record", "flows:half", "--seed", "0", "-o", "half.recipe"])
    capsys.readouterr()
    assert main(["check", "half.recipe", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["valid"] is True and doc["findings"] == []
    assert doc["warnings"] == [{"kind": "uninitialized", "name": "weight", "shape": [3, 4], "dtype": "float32",
                                "numel": 12, "uninitialized_elements": 8, "message": partly("8 of 12")}]
    assert main(["check", "half.recipe", "--json", "--strict"]) == 1


# ----------------------------------------------------------------------------- diff: the flow audit
def test_diff_names_the_tensor_the_meta_flow_leaves_uninitialized(models, capsys):
    main(["record", "flows:eager", "--seed", "0", "-o", "eager.recipe"])
    main(["record", "flows:Meta", "--seed", "0", "-o", "meta.recipe"])
    capsys.readouterr()
    assert main(["diff", "eager.recipe", "meta.recipe"]) == 1
    assert capsys.readouterr().out == (
        "--- eager.recipe  (recipe: rng torch, seed 0, 2 tensors)\n"
        "+++ meta.recipe  (recipe: rng torch, seed 0, 2 tensors)\n"
        "~ weight  (3, 4) float32\n"
        "    initialized -> uninitialized: b's program never writes it\n"
        "    init: kaiming_uniform_(a=sqrt(5)) -> uninitialized\n"
        "~ bias  (3,) float32\n"
        "    values differ: same init, drawn at another position of torch's random stream\n"
        "b: uninitialized: 1 tensor, `weight`\n"
        "0 added, 0 removed, 2 changed (1 only in values, 1 newly uninitialized), 0 keep their bits\n"
    )
    assert main(["diff", "meta.recipe", "eager.recipe"]) == 1
    out = capsys.readouterr().out
    assert "~ weight  (3, 4) float32\n    uninitialized -> initialized\n" in out
    assert "a: uninitialized: 1 tensor, `weight`\n" in out
    assert out.endswith("0 added, 0 removed, 2 changed (1 only in values, 1 newly initialized), 0 keep their bits\n")


def test_diff_json_of_the_audit_matches_the_schema(models, capsys):
    main(["record", "flows:eager", "--seed", "0", "-o", "eager.recipe"])
    main(["record", "flows:half", "--seed", "0", "-o", "half.recipe"])
    capsys.readouterr()
    assert main(["diff", "--json", "eager.recipe", "half.recipe"]) == 1
    doc = json.loads(capsys.readouterr().out)
    assert list(DIFF_SCHEMA.iter_errors(doc)) == []
    assert doc["uninitialized"] == {"a": [], "b": [{"name": "weight", "numel": 12, "uninitialized_elements": 8}]}
    assert doc["changed"][0]["changes"][0] == {
        "field": "initialized", "a": 0, "b": 8,
        "text": "initialized -> partly uninitialized (8 of 12 elements): b's program never writes them",
    }
    assert doc["summary"]["newly_uninitialized"] == 1 and doc["summary"]["newly_initialized"] == 0


def test_diff_api_and_values_keep_the_initialized_change():
    eager = initrecipe.record(lambda: nn.Linear(4, 3), seed=0)
    meta = quiet_record(EmptyWeight, seed=0)
    d = initrecipe.diff(eager, meta)
    assert d.newly_uninitialized == ["weight"] and d.newly_initialized == []
    assert [u.name for u in d.uninitialized_b] == ["weight"] and d.uninitialized_a == []
    with_values = initrecipe.diff(eager, meta, values=True)
    weight = next(c for c in with_values.changed if c.name == "weight")
    assert weight.changes[0].field == "initialized"
    assert with_values.newly_uninitialized == ["weight"]


def test_diff_against_a_checkpoint_lists_the_recipe_side(models, capsys, tmp_path):
    recipe = quiet_record(EmptyWeight, seed=0)
    initrecipe.to_safetensors(recipe, tmp_path / "ckpt", progress=False)
    d = initrecipe.diff(recipe, tmp_path / "ckpt")
    assert [u.name for u in d.uninitialized_a] == ["weight"] and d.uninitialized_b is None
    assert list(DIFF_SCHEMA.iter_errors(d.to_json())) == []
    assert "a: uninitialized: 1 tensor, `weight`\n" in d.text()


def test_writes_through_index_tensors_count_as_writing_nothing():
    # Their reach depends on data: the decision stays on the safe side (documented in the README).
    def build() -> nn.Module:
        m = nn.Module()
        b = torch.empty(3)
        b[torch.tensor([0, 1, 2])] = 1.0
        m.register_buffer("b", b)
        return m

    recipe = quiet_record(build, seed=0)
    assert recipe.uninitialized == [Uninitialized("b", (3,), torch.float32, 3, 3)]
    torch.manual_seed(0)
    assert torch.equal(initrecipe.replay(recipe)["b"], build().b)  # replay is still eager's


def test_audit_of_a_meta_device_flow_that_forgets_the_bias():
    def meta_flow() -> nn.Module:
        with torch.device("meta"):
            m = nn.Linear(8, 8)
        m.weight = nn.Parameter(torch.empty_like(m.weight, device="cpu"))
        m.bias = nn.Parameter(torch.empty_like(m.bias, device="cpu"))
        nn.init.normal_(m.weight)
        return m

    with pytest.warns(initrecipe.UninitializedWarning, match="leaves 1 tensor uninitialized, `bias`: "):
        meta = initrecipe.record(meta_flow, seed=0)
    d = initrecipe.diff(initrecipe.record(lambda: nn.Linear(8, 8), seed=0), meta)
    assert d.newly_uninitialized == ["bias"] and not d.identical
    texts = {c.name: [x.text for x in c.changes] for c in d.changed}
    assert texts == {
        "weight": ["init: kaiming_uniform_(a=sqrt(5)) -> normal_(mean=0.0, std=1.0)"],
        "bias": ["initialized -> uninitialized: b's program never writes it",
                 "init: uniform_(a=-1/sqrt(8), b=1/sqrt(8)) -> uninitialized"],
    }
