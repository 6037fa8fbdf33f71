"""Materialize a recipe's tensors: :func:`replay` and its streaming form :func:`iter_replay`."""

from __future__ import annotations

from typing import Iterable, Iterator, TypeVar

import torch

from initrecipe.analysis.infer import infer_facts
from initrecipe.errors import ReplayError
from initrecipe.format.recipe import Recipe, TensorEntry
from initrecipe.runtime.replay_plan import NameFilter, RecipeSource, as_recipe, check_entries, prepare_replay
from initrecipe.runtime.replay_run import run_plan
from initrecipe.runtime.replay_shards import iter_sharded
from initrecipe.runtime.regions import ShardRequest
from initrecipe.runtime.sharding import Dependencies, plan_slice
from initrecipe.support.gcpause import gc_paused, pausing_gc

__all__ = ["replay", "iter_replay", "sliceable", "sliceable_names"]

M = TypeVar("M", bound=torch.nn.Module)


def iter_replay(
    recipe: RecipeSource,
    *,
    device: str | torch.device = "cpu",
    names: NameFilter = None,
    max_bytes: int | None = None,
    draw_in_place: bool = True,
    shards: ShardRequest = None,
    max_work: float | None = None,
    threads: int | None = None,
) -> Iterator[tuple[list[TensorEntry], torch.Tensor]]:
    """Materialize a recipe's tensors one after another, as soon as each is final.

    Yields ``(entries, tensor)`` once per distinct tensor: ``entries`` lists every name bound to it
    (several for tied weights).  Tensors are plain (not ``nn.Parameter``) and each is dropped by
    the replayer once yielded, so memory stays bounded by the tensors still being built.

    Args:
        recipe: a :class:`Recipe`, or a path or bytes to :func:`initrecipe.load`.
        device: where the yielded tensors live.  In ``torch`` RNG mode every value is computed on
            the CPU from torch's CPU generator and then moved, so the bits equal eager CPU init.
        names: only these names (a list, or a predicate on the name).
        max_bytes: refuse (:class:`ResourceLimitError`, before allocating anything) a replay that
            would allocate more than this many bytes.  Default: the memory available now
            (``MemAvailable``; for a CUDA ``device`` the tensors must also fit its free memory).
        draw_in_place: run dead random draws (whose values are overwritten later) in the memory
            of the tensor they target, as eager does: fastest, but that tensor then occupies memory
            from its first draw on.  False draws them into a small reused buffer instead, so each
            tensor occupies memory only from its final initialization to its yield (streaming).
        shards: yield only a slice of some tensors: a mapping name -> :class:`Shard` (or
            :class:`Box`, a block over several dimensions), or a callable ``(name, shape) -> Shard |
            Box | None``.  A slice equals the same slice of the
            whole tensor.  In ``portable`` recipes a tensor with an elementwise program (see
            :func:`sliceable`) is generated slice-only; otherwise the whole tensor is built first.
        max_work: refuse (:class:`~initrecipe.WorkLimitError`, before allocating anything) a
            replay estimated at more than this many seconds of work on the reference CPU
            (:mod:`initrecipe.analysis.cost`).  Default: a minute, plus 0.1 µs per element of the tensors
            it returns; ``math.inf`` for no limit.
        threads: worker threads for large random fills drawn from torch generators (default: one
            per core, as torch uses).  Any count gives the same bits: each piece of a fill is drawn
            from its own generator, positioned where eager's stream stands at that piece.

    Example:
        >>> import initrecipe, torch
        >>> recipe = initrecipe.record(lambda: torch.nn.Linear(4, 2), seed=0)
        >>> [(entries[0].name, tuple(t.shape)) for entries, t in initrecipe.iter_replay(recipe)]
        [('weight', (2, 4)), ('bias', (2,))]
    """
    if shards is not None:
        return iter_sharded(as_recipe(recipe), torch.device(device), names, max_bytes, draw_in_place, shards,
                             max_work, threads)
    plan = prepare_replay(recipe, device=device, names=names, max_bytes=max_bytes, draw_in_place=draw_in_place,
                          max_work=max_work, threads=threads)
    return run_plan(plan)


def sliceable(recipe: RecipeSource, name: str) -> bool:
    """Whether a shard of tensor ``name`` is generated without building the whole tensor: true for
    tensors of ``portable`` recipes whose program is elementwise (:mod:`initrecipe.runtime.sharding`)."""
    recipe = as_recipe(recipe)
    if name not in recipe.entries:
        raise ReplayError(f"`{name}` is not a tensor of this recipe; `initrecipe show RECIPE` lists the names")
    return name in sliceable_names(recipe, [name])


@pausing_gc
def sliceable_names(recipe: RecipeSource, names: Iterable[str] | None = None) -> set[str]:
    """The names (of ``names``, default all) whose shards are generated slice-only (see :func:`sliceable`)."""
    recipe = as_recipe(recipe)
    if recipe.rng != "portable":
        return set()
    facts = infer_facts(recipe.program, recipe.generators, rng=recipe.rng)
    check_entries(recipe, facts)
    dependencies = Dependencies(recipe.program, facts)
    wanted = set(recipe.names if names is None else names)
    return {
        e.name for e in recipe.tensors
        if e.name in wanted and plan_slice(recipe.program, facts, e.value, dependencies) is not None
    }


def replay(
    recipe: RecipeSource,
    *,
    device: str | torch.device = "cpu",
    into: M | None = None,
    names: NameFilter = None,
    max_bytes: int | None = None,
    shards: ShardRequest = None,
    max_work: float | None = None,
    threads: int | None = None,
) -> dict[str, torch.Tensor] | M:
    """Materialize a recipe's parameters and buffers, or only some of them, or slices of them.

    Args:
        recipe: a :class:`Recipe`, or a path or bytes to :func:`initrecipe.load`.
        device: where the tensors are created (``"cpu"``, ``"cuda"``, ...).
        into: a module built on the meta device (``with torch.device("meta"): m = Model(cfg)``)
            to fill in place; it is returned, with ties as the recipe records them.
        names: only these names (a list, or a predicate on the name); not with ``into``.
        max_bytes: refuse (:class:`ResourceLimitError`, before allocating anything) a replay that
            would allocate more than this many bytes.  Default: the memory available now
            (``MemAvailable`` from ``/proc/meminfo``; for a CUDA ``device`` the tensors must also
            fit the free memory ``torch.cuda.mem_get_info`` reports).
        shards: only a slice of some tensors (see :func:`iter_replay`); not with ``into``.
        max_work: refuse (:class:`~initrecipe.WorkLimitError`, before allocating anything) a
            replay estimated at more than this many seconds of work on the reference CPU.
            Default: a minute, plus 0.1 µs per element of the tensors it returns (see
            :mod:`initrecipe.analysis.cost`); ``math.inf`` for no limit.
        threads: worker threads for large random fills (default: one per core); the bits do not
            depend on it.

    Returns:
        Without ``into``: every fully qualified name mapped to its tensor; parameters are
        ``nn.Parameter`` with the recorded ``requires_grad``, tied names map to one object.
        With ``into``: the filled module.

    Example:
        >>> import initrecipe, torch
        >>> recipe = initrecipe.record(lambda: torch.nn.Linear(4, 2), seed=0)
        >>> weights = initrecipe.replay(recipe)
        >>> torch.manual_seed(0); eager = torch.nn.Linear(4, 2)  # doctest: +ELLIPSIS
        <...>
        >>> torch.equal(weights["weight"], eager.weight)
        True
    """
    if into is not None and (names is not None or shards is not None):
        raise TypeError("`names` and `shards` cannot be combined with `into`: a module needs all of its tensors")
    recipe = as_recipe(recipe)
    if into is not None:
        _check_module_names(recipe, into)
    with gc_paused():
        stream = iter_replay(recipe, device=device, names=names, max_bytes=max_bytes, shards=shards,
                             max_work=max_work, threads=threads)
        ordered = _collect(recipe, stream)
    if into is None:
        return ordered
    _fill_module(into, ordered)
    return into


def _collect(recipe: Recipe, stream: Iterator[tuple[list[TensorEntry], torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Every name of ``stream`` mapped to its tensor, in recipe order: parameters as
    ``nn.Parameter`` with the recorded ``requires_grad``, tied names to one object."""
    result: dict[str, torch.Tensor] = {}
    for entries, tensor in stream:
        first = entries[0]
        obj = torch.nn.Parameter(tensor, requires_grad=first.requires_grad) if first.kind == "parameter" else tensor
        for entry in entries:
            result[entry.name] = obj
    return {t.name: result[t.name] for t in recipe.tensors if t.name in result}


def _module_names(module: torch.nn.Module) -> list[str]:
    """Every parameter and buffer name of ``module``, tied ones included."""
    return [n for n, _ in module.named_parameters(remove_duplicate=False)] + [
        n for n, _ in module.named_buffers(remove_duplicate=False)
    ]


def _check_module_names(recipe: Recipe, module: torch.nn.Module) -> None:
    have = set(_module_names(module))
    want = set(recipe.names)
    if have != want:
        missing = sorted(want - have)
        extra = sorted(have - want)
        parts = []
        if extra:
            parts.append(f"the module has `{extra[0]}`" + (f" and {len(extra) - 1} more" if len(extra) > 1 else "") + " that the recipe lacks")
        if missing:
            parts.append(f"the recipe has `{missing[0]}`" + (f" and {len(missing) - 1} more" if len(missing) > 1 else "") + " that the module lacks")
        raise ReplayError(
            "cannot fill the module: " + "; ".join(parts) + ". Build the module from the same config the recipe was recorded from"
        )
    kinds = {t.name: t.kind for t in recipe.tensors}
    for name, _ in module.named_parameters(remove_duplicate=False):
        if kinds[name] != "parameter":
            raise ReplayError(f"`{name}` is a parameter in the module but a buffer in the recipe")


def _fill_module(module: torch.nn.Module, tensors: dict[str, torch.Tensor]) -> None:
    for prefix, sub in module.named_modules(remove_duplicate=False):
        dot = f"{prefix}." if prefix else ""
        for local in list(sub._parameters):
            if sub._parameters[local] is not None:
                sub._parameters[local] = tensors[dot + local]
        for local in list(sub._buffers):
            if sub._buffers[local] is not None:
                sub._buffers[local] = tensors[dot + local]
