"""Record -> save -> load -> replay every model of the tiny transformers zoo and compare with eager init.

For each model of :data:`zoo_models.ZOO` the replayed weights must be bitwise equal to
``torch.manual_seed(0); model_fn()``: same names in the same order, same dtypes and shapes, same
bytes, parameters as ``nn.Parameter`` with eager's ``requires_grad``, and the same tie groups.
"""

from __future__ import annotations

import os
import sys

import pytest
import torch

sys.path.insert(0, os.path.dirname(__file__))

pytest.importorskip("transformers")

import initrecipe  # noqa: E402
from zoo_models import ZOO  # noqa: E402

SEED = 0
_SHOW = 5  # how many differing names an assertion message lists


def _eager_tensors(model: torch.nn.Module) -> tuple[dict[str, torch.Tensor], list[str], list[str]]:
    params = list(model.named_parameters(remove_duplicate=False))
    buffers = list(model.named_buffers(remove_duplicate=False))
    tensors = dict(params)
    tensors.update(buffers)
    return tensors, [n for n, _ in params], [n for n, _ in buffers]


def _groups(tensors: dict[str, torch.Tensor]) -> set[frozenset[str]]:
    """Tie groups: sets of two or more names bound to one tensor object."""
    by_object: dict[int, list[str]] = {}
    for name, tensor in tensors.items():
        by_object.setdefault(id(tensor), []).append(name)
    return {frozenset(names) for names in by_object.values() if len(names) > 1}


def _bitwise_equal(a: torch.Tensor, b: torch.Tensor) -> bool:
    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    a = a.detach().contiguous().reshape(-1)
    b = b.detach().contiguous().reshape(-1)
    if a.numel() == 0:
        return True
    if a.dtype.is_floating_point or a.dtype.is_complex:
        # The zoo is NaN-free at init; torch.equal is then the value check, and the bytes must match too
        # (torch.equal alone would accept 0.0 against -0.0).
        if not (torch.isnan(a).any() or torch.isnan(b).any()) and not torch.equal(a, b):
            return False
    elif not torch.equal(a, b):
        return False
    return torch.equal(a.view(torch.uint8), b.view(torch.uint8))


def _describe(name: str, a: torch.Tensor, b: torch.Tensor) -> str:
    if a.dtype != b.dtype or a.shape != b.shape:
        return f"{name} (eager {a.dtype}{list(a.shape)} vs replay {b.dtype}{list(b.shape)})"
    detail = ""
    if a.numel() and (a.dtype.is_floating_point or a.dtype.is_complex):
        diff = (a.detach().double() - b.detach().double()).abs()
        detail = f", max |diff| {diff.max().item():.3g}, {int((diff != 0).sum())}/{a.numel()} elements differ"
    return f"{name} ({a.dtype}{list(a.shape)}{detail})"


@pytest.mark.parametrize("model_name", list(ZOO), ids=list(ZOO))
def test_zoo_replay_matches_eager(model_name: str) -> None:
    model_fn = ZOO[model_name]

    try:
        recipe = initrecipe.record(model_fn, seed=SEED)
    except Exception as exc:
        pytest.fail(f"[{model_name}] record failed: {type(exc).__name__}: {exc}")
    try:
        data = recipe.to_bytes()
        loaded = initrecipe.load(data)
    except Exception as exc:
        pytest.fail(f"[{model_name}] to_bytes/load round trip failed: {type(exc).__name__}: {exc}")
    assert loaded.names == recipe.names, f"[{model_name}] names changed through to_bytes/load"
    assert loaded.to_bytes() == data, f"[{model_name}] recipe bytes changed through load/to_bytes"
    try:
        replayed = initrecipe.replay(loaded)
    except Exception as exc:
        pytest.fail(f"[{model_name}] replay failed: {type(exc).__name__}: {exc}")

    torch.manual_seed(SEED)
    model = model_fn()
    eager, param_names, buffer_names = _eager_tensors(model)
    eager_names = param_names + buffer_names

    # Names: the same list in the same order.
    replay_names = list(replayed)
    if replay_names != eager_names:
        missing = [n for n in eager_names if n not in replayed][:_SHOW]
        extra = [n for n in replay_names if n not in eager][:_SHOW]
        first = next(
            (i for i, (x, y) in enumerate(zip(eager_names, replay_names)) if x != y),
            min(len(eager_names), len(replay_names)),
        )
        pytest.fail(
            f"[{model_name}] name lists differ: eager has {len(eager_names)}, replay {len(replay_names)}; "
            f"missing from replay {missing}, extra in replay {extra}; first differing position {first}: "
            f"eager {eager_names[first:first + 1]} vs replay {replay_names[first:first + 1]}"
        )
    assert loaded.names == eager_names, f"[{model_name}] recipe.names differ from eager names"
    assert loaded.parameter_names == param_names, f"[{model_name}] recipe.parameter_names differ from eager"
    assert loaded.buffer_names == buffer_names, f"[{model_name}] recipe.buffer_names differ from eager"

    # Values: bitwise, with dtype and shape.
    differing = [n for n in eager_names if not _bitwise_equal(eager[n], replayed[n])]
    if differing:
        shown = "; ".join(_describe(n, eager[n], replayed[n]) for n in differing[:_SHOW])
        pytest.fail(
            f"[{model_name}] {len(differing)}/{len(eager_names)} tensors differ from eager; first: {shown}"
        )

    # Parameters: nn.Parameter with eager's requires_grad.
    bad_params = [
        n
        for n in param_names
        if not isinstance(replayed[n], torch.nn.Parameter) or replayed[n].requires_grad != eager[n].requires_grad
    ]
    assert not bad_params, (
        f"[{model_name}] parameters not replayed as nn.Parameter with eager's requires_grad: {bad_params[:_SHOW]} "
        f"(e.g. {type(replayed[bad_params[0]]).__name__}, requires_grad={replayed[bad_params[0]].requires_grad} "
        f"vs eager {eager[bad_params[0]].requires_grad})"
        if bad_params
        else ""
    )
    bad_buffers = [n for n in buffer_names if isinstance(replayed[n], torch.nn.Parameter)]
    assert not bad_buffers, f"[{model_name}] buffers replayed as nn.Parameter: {bad_buffers[:_SHOW]}"

    # Ties: the same groups in eager, in the replayed dict and in the recipe.
    eager_groups = _groups(eager)
    replay_groups = _groups(replayed)
    assert replay_groups == eager_groups, (
        f"[{model_name}] tie groups differ: only in eager {sorted(map(sorted, eager_groups - replay_groups))}, "
        f"only in replay {sorted(map(sorted, replay_groups - eager_groups))}"
    )
    for recorded, which in ((recipe, "recorded"), (loaded, "loaded")):
        recipe_groups = {frozenset(g) for g in recorded.tie_groups}
        assert recipe_groups == eager_groups, (
            f"[{model_name}] {which} recipe.tie_groups differ from eager ties: only in eager "
            f"{sorted(map(sorted, eager_groups - recipe_groups))}, only in recipe "
            f"{sorted(map(sorted, recipe_groups - eager_groups))}"
        )


def _without_draws(recipe: initrecipe.Recipe) -> list[str]:
    """Names whose programs contain no random draw at all (their bits must equal eager's)."""
    from initrecipe.analysis import Action, infer_facts, plan_execution

    facts = infer_facts(recipe.program, recipe.generators, rng=recipe.rng)
    names = []
    for entry in recipe.tensors:
        actions = plan_execution(recipe.program, facts, [entry.value])
        if not any(a != Action.SKIP and facts.infos[i] is not None and facts.infos[i].is_random
                   for i, a in enumerate(actions)):
            names.append(entry.name)
    return names


def _bits(t: torch.Tensor) -> bytes:
    return t.detach().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()


@pytest.mark.parametrize("model_name", list(ZOO), ids=list(ZOO))
def test_zoo_portable_replay(model_name: str) -> None:
    """rng="portable" for every architecture: records, round-trips, replays to eager's names, kinds,
    dtypes, shapes and ties; tensors without random draws equal eager's bits; every tensor is the
    same when replayed alone, and a sliceable tensor's halves stitch back together."""
    model_fn = ZOO[model_name]
    recipe = initrecipe.load(initrecipe.record(model_fn, seed=SEED, rng="portable", sync_rng=False).to_bytes())
    replayed = initrecipe.replay(recipe)
    torch.manual_seed(SEED)
    eager, param_names, buffer_names = _eager_tensors(model_fn())
    assert list(replayed) == param_names + buffer_names, f"[{model_name}] names differ from eager"
    for name in replayed:
        a, b = eager[name], replayed[name]
        assert (a.dtype, a.shape, isinstance(b, torch.nn.Parameter)) == (b.dtype, b.shape, name in param_names), name
    assert _groups(replayed) == _groups(eager), f"[{model_name}] tie groups differ"
    for name in _without_draws(recipe):
        assert _bitwise_equal(eager[name], replayed[name]), f"[{model_name}] `{name}` has no draw but differs from eager"
    for name in recipe.names[:: max(1, len(recipe.names) // 6)]:
        alone = initrecipe.replay(recipe, names=[name])[name]
        assert _bits(alone) == _bits(replayed[name]), f"[{model_name}] `{name}` replayed alone differs"
        shape = recipe.shapes[name]
        if shape and shape[0] > 1:
            halves = [initrecipe.replay(recipe, names=[name], shards={name: initrecipe.Shard.of(shape[0], r, 2)})[name]
                      for r in (0, 1)]
            assert _bits(torch.cat(halves)) == _bits(replayed[name]), f"[{model_name}] `{name}` halves differ"


@pytest.mark.parametrize("model_name", list(ZOO), ids=list(ZOO))
def test_zoo_portable_every_tensor_shards_exactly(model_name: str) -> None:
    """Every tensor, 3 shards along dim 0 and 2 along the last dim, stitched: the full replay's bits."""
    recipe = initrecipe.record(ZOO[model_name], seed=SEED, rng="portable", sync_rng=False)
    full = initrecipe.replay(recipe)
    for dim, world in ((0, 3), (-1, 2)):
        parts = [
            initrecipe.replay(recipe, shards=lambda n, s, k=k: initrecipe.Shard.of(s[dim], k, world, dim) if s else None)
            for k in range(world)
        ]
        for name, tensor in full.items():
            if tensor.dim():
                stitched = torch.cat([p[name] for p in parts], dim=dim)
                assert _bits(stitched) == _bits(tensor), f"[{model_name}] `{name}` along dim {dim}"
