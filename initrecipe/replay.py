"""Materialize a recipe's tensors: :func:`replay` and its streaming form :func:`iter_replay`."""

from __future__ import annotations

import os
from typing import Callable, Iterable, Iterator, TypeVar, Union

import torch

from .analysis import Action, ProgramFacts, call_refs, infer_facts, plan_execution
from .errors import RecipeFormatError, ReplayError
from .interpreter import SequentialGenerators, execute
from .program import Call, Literal
from .recipe import Recipe, TensorEntry, load

__all__ = ["replay", "iter_replay", "RecipeSource", "NameFilter"]

RecipeSource = Union[Recipe, str, os.PathLike, bytes]
NameFilter = Union[Iterable[str], Callable[[str], bool], None]
M = TypeVar("M", bound=torch.nn.Module)


def _as_recipe(recipe: RecipeSource) -> Recipe:
    if isinstance(recipe, Recipe):
        return recipe
    return load(recipe)


def _select(recipe: Recipe, names: NameFilter) -> list[TensorEntry]:
    if names is None:
        return list(recipe.tensors)
    if callable(names):
        return [t for t in recipe.tensors if names(t.name)]
    if isinstance(names, str):
        raise TypeError("`names` must be a list of names or a callable, not a single string")
    wanted = list(names)
    known = recipe.entries
    missing = [n for n in wanted if n not in known]
    if missing:
        raise ReplayError(
            f"`{missing[0]}` is not a tensor of this recipe"
            + (f" ({len(missing) - 1} more names are missing)" if len(missing) > 1 else "")
            + "; `initrecipe show RECIPE` lists the names"
        )
    wanted_set = set(wanted)
    return [t for t in recipe.tensors if t.name in wanted_set]


def check_entries(recipe: Recipe, facts: ProgramFacts) -> None:
    """Check that every tensor entry names a value the program defines, with matching metadata."""
    for i, entry in enumerate(recipe.tensors):
        meta = facts.values.get(entry.value)
        if meta is None:
            raise RecipeFormatError(f"tensors[{i}] (`{entry.name}`): value {entry.value} is never defined")
        if meta.shape != entry.shape or meta.dtype != entry.dtype:
            raise RecipeFormatError(
                f"tensors[{i}] (`{entry.name}`): declared {list(entry.shape)} {entry.dtype}, "
                f"but the program builds {list(meta.shape)} {meta.dtype}"
            )


def _release_schedule(
    recipe: Recipe, facts: ProgramFacts, actions: list[Action], outputs: set[int]
) -> tuple[dict[int, list[int]], dict[int, int]]:
    """When each value can be dropped, and when each output's contents are final."""
    last_use: dict[int, int] = {}
    last_write: dict[int, int] = {}
    for i, action in enumerate(actions):
        if action == Action.SKIP:
            continue
        ins = recipe.program[i]
        if isinstance(ins, Call):
            if action == Action.RUN:
                for v in call_refs(ins):
                    last_use[v] = i
                for _, storage in facts.written_storages(i, ins):
                    last_write[storage] = i
            if action in (Action.RUN, Action.ALLOC):
                for o in ins.outs:
                    if o is not None:
                        last_use[o] = max(last_use.get(o, i), i)
                        if facts.storage_creator.get(facts.values[o].storage) == i:
                            last_write[facts.values[o].storage] = max(last_write.get(facts.values[o].storage, i), i)
        elif isinstance(ins, Literal):
            last_use[ins.out] = max(last_use.get(ins.out, i), i)
            last_write[facts.values[ins.out].storage] = i
    final: dict[int, int] = {}
    for v in outputs:
        final[v] = max(last_use.get(v, 0), last_write.get(facts.values[v].storage, 0), facts.value_def[v])
    release: dict[int, list[int]] = {}
    for v, i in last_use.items():
        if v not in outputs:
            release.setdefault(i, []).append(v)
    for v, i in final.items():
        release.setdefault(i, []).append(v)
    return release, final


def iter_replay(
    recipe: RecipeSource,
    *,
    device: str | torch.device = "cpu",
    names: NameFilter = None,
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

    Example:
        >>> import initrecipe, torch
        >>> recipe = initrecipe.record(lambda: torch.nn.Linear(4, 2), seed=0)
        >>> [(entries[0].name, tuple(t.shape)) for entries, t in initrecipe.iter_replay(recipe)]
        [('weight', (2, 4)), ('bias', (2,))]
    """
    recipe = _as_recipe(recipe)
    device = torch.device(device)
    selected = _select(recipe, names)
    facts = infer_facts(recipe.program, recipe.generators)
    check_entries(recipe, facts)
    by_value: dict[int, list[TensorEntry]] = {}
    for entry in selected:
        by_value.setdefault(entry.value, []).append(entry)
    outputs = set(by_value)
    actions = plan_execution(
        recipe.program, facts, outputs, advance_dead_draws=recipe.rng == "torch"
    )
    release, final = _release_schedule(recipe, facts, actions, outputs)
    finishing: dict[int, list[int]] = {}
    for v, i in final.items():
        finishing.setdefault(i, []).append(v)
    env: dict[int, torch.Tensor] = {}
    bank = SequentialGenerators(recipe.program, recipe.generators)
    pending: list[tuple[list[TensorEntry], torch.Tensor]] = []
    order = {v: k for k, v in enumerate(by_value)}

    # Values whose final point is an instruction the plan skips (e.g. an output nothing writes)
    # are finished before the loop starts.
    run_indices = {i for i, a in enumerate(actions) if a != Action.SKIP}
    early = sorted((v for v, i in final.items() if i not in run_indices), key=order.get)
    if early:
        raise ReplayError(
            f"tensor `{by_value[early[0]][0].name}` is never built by the program"
        )
    for i in execute(recipe.program, facts, actions, env, bank, release=None):
        for v in sorted(finishing.get(i, ()), key=order.get):
            pending.append((by_value[v], env[v]))
        for v in release.get(i, ()):
            env.pop(v, None)
        while pending:
            entries, tensor = pending.pop(0)
            yield entries, tensor if device.type == "cpu" else tensor.to(device)
            del tensor


def replay(
    recipe: RecipeSource,
    *,
    device: str | torch.device = "cpu",
    into: M | None = None,
    names: NameFilter = None,
) -> dict[str, torch.Tensor] | M:
    """Materialize a recipe's parameters and buffers.

    Args:
        recipe: a :class:`Recipe`, or a path or bytes to :func:`initrecipe.load`.
        device: where the tensors are created (``"cpu"``, ``"cuda"``, ...).
        into: a module built on the meta device (``with torch.device("meta"): m = Model(cfg)``)
            to fill in place; it is returned, with ties as the recipe records them.
        names: only these names (a list, or a predicate on the name); not with ``into``.

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
    if into is not None and names is not None:
        raise TypeError("`names` cannot be combined with `into`: a module needs all of its tensors")
    recipe = _as_recipe(recipe)
    if into is not None:
        _check_module_names(recipe, into)
    result: dict[str, torch.Tensor] = {}
    for entries, tensor in iter_replay(recipe, device=device, names=names):
        first = entries[0]
        obj = torch.nn.Parameter(tensor, requires_grad=first.requires_grad) if first.kind == "parameter" else tensor
        for entry in entries:
            result[entry.name] = obj
    ordered = {t.name: result[t.name] for t in recipe.tensors if t.name in result}
    if into is None:
        return ordered
    _fill_module(into, ordered)
    return into


def _module_names(module: torch.nn.Module) -> list[str]:
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
