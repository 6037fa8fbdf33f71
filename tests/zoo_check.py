"""The zoo checks: a model constructor records, round-trips and replays like eager construction.

Shared by every model zoo (``tests/test_zoo.py`` for ``transformers``, ``tests/test_zoo_diffusers.py``,
``tools/zoo_vision.py`` for ``timm`` and ``torchvision``, ``tools/zoo_llm.py`` for ``torchtune`` and
``torchtitan``).  Each check raises ``AssertionError`` with a message naming the model and the first
differing tensors; it needs nothing but torch and initrecipe (no pytest), so the tools can run it in
other environments.

* :func:`check_torch_mode`: ``replay(record(fn, seed=s))`` is bitwise equal to
  ``torch.manual_seed(s); fn()``: names (order too), parameter/buffer split, dtypes, shapes, bytes,
  ``nn.Parameter`` with eager's ``requires_grad``, tie groups; the recipe survives ``to_bytes``/``load``.
* :func:`check_portable`: ``rng="portable"`` keeps eager's names, kinds, dtypes, shapes and ties;
  tensors without random draws keep eager's bits; a tensor replayed alone, or in halves, is the full
  replay's.
* :func:`check_portable_shards`: every tensor in 3 shards along dim 0 and 2 along the last dim
  stitches back into the full replay bit for bit.
"""

from __future__ import annotations

from typing import Callable

import torch

import initrecipe

SEED = 0
_SHOW = 5  # how many differing names a failure message lists

ModelFn = Callable[[], torch.nn.Module]


def eager_tensors(model: torch.nn.Module) -> tuple[dict[str, torch.Tensor], list[str], list[str]]:
    """Every parameter and buffer of ``model`` by name, and the parameter and buffer names in order."""
    params = list(model.named_parameters(remove_duplicate=False))
    buffers = list(model.named_buffers(remove_duplicate=False))
    tensors = dict(params)
    tensors.update(buffers)
    return tensors, [n for n, _ in params], [n for n, _ in buffers]


def tie_groups(tensors: dict[str, torch.Tensor]) -> set[frozenset[str]]:
    """Tie groups: sets of two or more names bound to one tensor object."""
    by_object: dict[int, list[str]] = {}
    for name, tensor in tensors.items():
        by_object.setdefault(id(tensor), []).append(name)
    return {frozenset(names) for names in by_object.values() if len(names) > 1}


def bits(t: torch.Tensor) -> bytes:
    """The bytes of ``t`` in row-major order."""
    return t.detach().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()


def bitwise_equal(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Same dtype, shape and bytes (so 0.0 and -0.0 differ; NaNs compare by their bits)."""
    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    return a.numel() == 0 or bits(a) == bits(b)


def _describe(name: str, a: torch.Tensor, b: torch.Tensor) -> str:
    if a.dtype != b.dtype or a.shape != b.shape:
        return f"{name} (eager {a.dtype}{list(a.shape)} vs replay {b.dtype}{list(b.shape)})"
    detail = ""
    if a.numel() and (a.dtype.is_floating_point or a.dtype.is_complex):
        diff = (a.detach().double() - b.detach().double()).abs()
        detail = f", max |diff| {diff.max().item():.3g}, {int((diff != 0).sum())}/{a.numel()} elements differ"
    return f"{name} ({a.dtype}{list(a.shape)}{detail})"


def _eager(model_fn: ModelFn, seed: int) -> tuple[dict[str, torch.Tensor], list[str], list[str]]:
    torch.manual_seed(seed)
    return eager_tensors(model_fn())


def check_torch_mode(label: str, model_fn: ModelFn, seed: int = SEED) -> initrecipe.Recipe:
    """``rng="torch"``: the replay is eager construction, bit for bit (see the module docstring)."""
    recipe = initrecipe.record(model_fn, seed=seed)
    data = recipe.to_bytes()
    loaded = initrecipe.load(data)
    assert loaded.names == recipe.names, f"[{label}] names changed through to_bytes/load"
    assert loaded.to_bytes() == data, f"[{label}] recipe bytes changed through load/to_bytes"
    replayed = initrecipe.replay(loaded)
    eager, param_names, buffer_names = _eager(model_fn, seed)
    eager_names = param_names + buffer_names

    replay_names = list(replayed)
    if replay_names != eager_names:
        missing = [n for n in eager_names if n not in replayed][:_SHOW]
        extra = [n for n in replay_names if n not in eager][:_SHOW]
        first = next(
            (i for i, (x, y) in enumerate(zip(eager_names, replay_names)) if x != y),
            min(len(eager_names), len(replay_names)),
        )
        raise AssertionError(
            f"[{label}] name lists differ: eager has {len(eager_names)}, replay {len(replay_names)}; "
            f"missing from replay {missing}, extra in replay {extra}; first differing position {first}: "
            f"eager {eager_names[first:first + 1]} vs replay {replay_names[first:first + 1]}"
        )
    assert loaded.names == eager_names, f"[{label}] recipe.names differ from eager names"
    assert loaded.parameter_names == param_names, f"[{label}] recipe.parameter_names differ from eager"
    assert loaded.buffer_names == buffer_names, f"[{label}] recipe.buffer_names differ from eager"

    differing = [n for n in eager_names if not bitwise_equal(eager[n], replayed[n])]
    if differing:
        shown = "; ".join(_describe(n, eager[n], replayed[n]) for n in differing[:_SHOW])
        raise AssertionError(f"[{label}] {len(differing)}/{len(eager_names)} tensors differ from eager; first: {shown}")

    bad_params = [
        n
        for n in param_names
        if not isinstance(replayed[n], torch.nn.Parameter) or replayed[n].requires_grad != eager[n].requires_grad
    ]
    if bad_params:
        first = replayed[bad_params[0]]
        raise AssertionError(
            f"[{label}] parameters not replayed as nn.Parameter with eager's requires_grad: {bad_params[:_SHOW]} "
            f"(e.g. {type(first).__name__}, requires_grad={first.requires_grad} "
            f"vs eager {eager[bad_params[0]].requires_grad})"
        )
    bad_buffers = [n for n in buffer_names if isinstance(replayed[n], torch.nn.Parameter)]
    assert not bad_buffers, f"[{label}] buffers replayed as nn.Parameter: {bad_buffers[:_SHOW]}"

    eager_groups = tie_groups(eager)
    replay_groups = tie_groups(replayed)
    assert replay_groups == eager_groups, (
        f"[{label}] tie groups differ: only in eager {sorted(map(sorted, eager_groups - replay_groups))}, "
        f"only in replay {sorted(map(sorted, replay_groups - eager_groups))}"
    )
    for recorded, which in ((recipe, "recorded"), (loaded, "loaded")):
        recipe_groups = {frozenset(g) for g in recorded.tie_groups}
        assert recipe_groups == eager_groups, (
            f"[{label}] {which} recipe.tie_groups differ from eager ties: only in eager "
            f"{sorted(map(sorted, eager_groups - recipe_groups))}, only in recipe "
            f"{sorted(map(sorted, recipe_groups - eager_groups))}"
        )
    return loaded


def names_without_draws(recipe: initrecipe.Recipe) -> list[str]:
    """Names whose live programs contain no random draw (their bits must equal eager's).

    One forward pass (:func:`initrecipe.analysis.lineage.analyse`); a draw whose values are overwritten
    before they reach the tensor (``torch.randn`` allocated, then ``zero_``) does not count.
    """
    from initrecipe.analysis.lineage import analyse

    lineage = analyse(recipe)
    infos = lineage.facts.infos
    return [
        t.entry.name
        for t in lineage
        if not any(infos[i] is not None and infos[i].is_random for i in t.live_indices())
    ]


def record_portable(model_fn: ModelFn, seed: int = SEED) -> initrecipe.Recipe:
    """The ``rng="portable"`` recipe of ``model_fn``, through ``to_bytes``/``load``."""
    return initrecipe.load(initrecipe.record(model_fn, seed=seed, rng="portable", sync_rng=False).to_bytes())


def check_portable(label: str, model_fn: ModelFn, seed: int = SEED,
                   recipe: initrecipe.Recipe | None = None, samples: int = 6) -> initrecipe.Recipe:
    """``rng="portable"``: eager's names, kinds, dtypes, shapes and ties; draw-free tensors keep
    eager's bits; about ``samples`` tensors, evenly spread over the names, replayed alone and in
    halves equal the full replay."""
    recipe = record_portable(model_fn, seed) if recipe is None else recipe
    replayed = initrecipe.replay(recipe)
    eager, param_names, buffer_names = _eager(model_fn, seed)
    assert list(replayed) == param_names + buffer_names, f"[{label}] names differ from eager"
    for name in replayed:
        a, b = eager[name], replayed[name]
        assert (a.dtype, a.shape, isinstance(b, torch.nn.Parameter)) == (b.dtype, b.shape, name in param_names), (
            f"[{label}] `{name}`: eager {a.dtype}{list(a.shape)} vs portable {b.dtype}{list(b.shape)}, "
            f"parameter: {isinstance(b, torch.nn.Parameter)}"
        )
        if name in param_names:
            assert b.requires_grad == a.requires_grad, f"[{label}] `{name}`: requires_grad"
    assert tie_groups(replayed) == tie_groups(eager), f"[{label}] tie groups differ"
    for name in names_without_draws(recipe):
        assert bitwise_equal(eager[name], replayed[name]), f"[{label}] `{name}` has no draw but differs from eager"
    for name in recipe.names[:: max(1, len(recipe.names) // samples)]:
        alone = initrecipe.replay(recipe, names=[name])[name]
        assert bits(alone) == bits(replayed[name]), f"[{label}] `{name}` replayed alone differs"
        shape = recipe.shapes[name]
        if shape and shape[0] > 1:
            halves = [initrecipe.replay(recipe, names=[name], shards={name: initrecipe.Shard.of(shape[0], r, 2)})[name]
                      for r in (0, 1)]
            assert bits(torch.cat(halves)) == bits(replayed[name]), f"[{label}] `{name}` halves differ"
    return recipe


def check_portable_shards(label: str, recipe: initrecipe.Recipe) -> None:
    """Every tensor, 3 shards along dim 0 and 2 along the last dim, stitched: the full replay's bits."""
    full = initrecipe.replay(recipe)
    for dim, world in ((0, 3), (-1, 2)):
        parts = [
            initrecipe.replay(recipe, shards=lambda n, s, k=k: initrecipe.Shard.of(s[dim], k, world, dim) if s else None)
            for k in range(world)
        ]
        for name, tensor in full.items():
            if tensor.dim():
                stitched = torch.cat([p[name] for p in parts], dim=dim)
                assert bits(stitched) == bits(tensor), f"[{label}] `{name}` along dim {dim}"
