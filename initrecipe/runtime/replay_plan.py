"""Planning a replay before anything is allocated: the tensors selected, the program checked on the
meta device, what runs, when each value is dropped, and the memory and work it needs
(:func:`prepare_replay`, a :class:`ReplayPlan`)."""

from __future__ import annotations

import os
from typing import Callable, Iterable, Union

import torch

from initrecipe.analysis.cost import CHECK_SECONDS, WorkEstimate, estimate, refuse, work_budget
from initrecipe.analysis.facts import Action, ProgramFacts, call_refs, is_rng_instruction
from initrecipe.analysis.infer import infer_facts
from initrecipe.analysis.meta_outputs import repeat_interleave_output_size
from initrecipe.analysis.plan import plan_execution
from initrecipe.errors import MemoryLimitError, RecipeFormatError, ReplayError, ResourceLimitError
from initrecipe.format.decode import load
from initrecipe.format.recipe import Recipe, TensorEntry
from initrecipe.program.ir import Call, Instruction, Literal, RngRestore
from initrecipe.rng.torch import generator_state as cpu_generator
from initrecipe.rng.torch.positions import modelled_draws
from initrecipe.runtime.replay_memory import available_memory, check_memory, limit_source
from initrecipe.runtime.torch_versions import check_torch_version
from initrecipe.support.gcpause import pausing_gc

__all__ = ["RecipeSource", "NameFilter", "as_recipe", "select_entries", "check_entries", "ReplayPlan",
           "prepare_replay", "precheck_work", "output_elements"]

RecipeSource = Union[Recipe, str, os.PathLike, bytes]
NameFilter = Union[Iterable[str], Callable[[str], bool], None]


def as_recipe(recipe: RecipeSource) -> Recipe:
    """``recipe``, loaded when it is a path or bytes."""
    if isinstance(recipe, Recipe):
        return recipe
    return load(recipe)


def select_entries(recipe: Recipe, names: NameFilter) -> list[TensorEntry]:
    """The entries ``names`` selects, in recipe order; :class:`ReplayError` for a listed name the recipe lacks."""
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


class ReplayPlan:
    """Everything :func:`iter_replay` decides before it allocates anything (see :func:`prepare_replay`)."""

    def __init__(self, recipe: Recipe, device: torch.device, facts: ProgramFacts, actions: list[Action],
                 by_value: dict[int, list[TensorEntry]], program: list[Instruction],
                 release: dict[int, list[int]], final: dict[int, int], needed_bytes: int,
                 computed_draws: set[int], work: WorkEstimate | None = None, threads: int | None = None) -> None:
        self.recipe = recipe
        self.device = device
        self.facts = facts
        self.actions = actions
        self.by_value = by_value
        self.program = program
        self.release = release
        self.final = final
        self.needed_bytes = needed_bytes
        self.work = work  # the estimated work, against its budget (initrecipe.analysis.cost)
        self.computed_draws = computed_draws  # dead draws skipped: the generator bank positions the live ones
        self.threads = threads  # worker threads for large random fills (None: one per core)


@pausing_gc
def prepare_replay(
    recipe: RecipeSource,
    *,
    device: str | torch.device = "cpu",
    names: NameFilter = None,
    max_bytes: int | None = None,
    draw_in_place: bool = True,
    max_work: float | None = None,
    threads: int | None = None,
) -> ReplayPlan:
    """Check a recipe completely and plan its replay, allocating nothing real.

    Shape-propagates the program on the meta device, checks the tensor entries against it, plans
    the execution, checks the memory it needs against ``max_bytes`` (default: what is available)
    and its estimated work against ``max_work`` (default: a minute plus an allowance for the
    tensors it returns, :mod:`initrecipe.analysis.cost`; the estimate is ``plan.work``).  Raises the
    :class:`RecipeError` a replay would raise before its first allocation.
    """
    recipe = as_recipe(recipe)
    check_torch_version(recipe.rng, recipe.producer)
    device = torch.device(device)
    selected = select_entries(recipe, names)
    by_value: dict[int, list[TensorEntry]] = {}
    for entry in selected:
        by_value.setdefault(entry.value, []).append(entry)
    limit = max_bytes if max_bytes is not None else available_memory()
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 0):
        raise TypeError(f"max_bytes must be a non-negative int, not {limit!r}")
    value_names = {t.value: t.name for t in reversed(recipe.tensors)}
    precheck_work(recipe, selected, max_work)
    # The whole program's storages bound what a full replay allocates: stop at the first
    # instruction over the limit, before even finishing the (meta) shape propagation.
    try:
        facts = infer_facts(
            recipe.program, recipe.generators, max_bytes=limit if names is None else None, names=value_names,
            rng=recipe.rng,
        )
    except MemoryLimitError as exc:
        raise ResourceLimitError(f"{exc} ({limit_source(max_bytes)})") from None
    check_entries(recipe, facts)
    outputs = set(by_value)
    computed = modelled_draws(recipe.program, facts) if cpu_generator.available() else set()
    actions = plan_execution(
        recipe.program, facts, outputs, advance_dead_draws=True, draw_in_place=draw_in_place,
        computed_draws=computed,
    )
    needed = check_memory(recipe, facts, actions, by_value, device, limit, max_bytes is not None, value_names)
    work = estimate(recipe.program, facts.costs, (i for i, a in enumerate(actions) if a != Action.SKIP),
                    output_elements(facts, by_value), max_work, device)
    if work.seconds > work.budget:
        raise refuse(work, recipe.program)
    _refuse_restores_after_skipped_draws(recipe, actions, computed)
    release, final = _release_schedule(recipe, facts, actions, outputs)
    _refuse_unbuilt_outputs(by_value, actions, final)
    program = _bounded_program(recipe.program, facts, actions)
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
        raise TypeError(f"threads must be a positive int or None, not {threads!r}")
    return ReplayPlan(recipe, device, facts, actions, by_value, program, release, final, needed, computed, work,
                      threads)


def _refuse_restores_after_skipped_draws(recipe: Recipe, actions: list[Action], computed: set[int]) -> None:
    """Refuse a generator restore to the state after a random draw the plan skips (and does not
    compute the position of)."""
    for i, ins in enumerate(recipe.program):
        if (isinstance(ins, RngRestore) and actions[i] != Action.SKIP and actions[ins.after] == Action.SKIP
                and ins.after not in computed and not is_rng_instruction(recipe.program[ins.after])):
            raise ReplayError(
                f"program[{i}]: restores generator {ins.gen} to its state after program[{ins.after}], "
                f"a random draw this replay skips (rng={recipe.rng!r} recipes do not advance dead draws)"
            )


def _refuse_unbuilt_outputs(by_value: dict[int, list[TensorEntry]], actions: list[Action],
                            final: dict[int, int]) -> None:
    """Refuse a selected tensor whose final point is an instruction the plan skips (an output
    nothing writes): it would be finished before the loop starts."""
    order = {v: k for k, v in enumerate(by_value)}
    run_indices = {i for i, a in enumerate(actions) if a != Action.SKIP}
    early = sorted((v for v, i in final.items() if i not in run_indices), key=order.get)
    if early:
        raise ReplayError(
            f"tensor `{by_value[early[0]][0].name}` is never built by the program"
        )


def precheck_work(recipe: Recipe, selected: list[TensorEntry], max_work: float | None) -> None:
    """Refuse, before analysing it, a program whose analysis alone would exceed the work budget
    (the budget taken as large as the selected tensors could make it)."""
    elements = sum({e.value: e.numel for e in selected}.values())
    budget, explicit = work_budget(max_work, elements)
    seconds = len(recipe.program) * CHECK_SECONDS
    if seconds > budget:
        n = len(recipe.program)
        raise refuse(WorkEstimate(seconds, 0.0, 0.0, 0, n, (-1, 0.0), elements, budget, explicit), recipe.program,
                     f"checking this recipe's {n} instructions")


def output_elements(facts: ProgramFacts, values: Iterable[int]) -> int:
    """Elements of the tensors ``values`` as the memory holding them counts them: once per storage,
    however many values view it, and never more than the storage holds."""
    per_storage: dict[int, list[int]] = {}  # storage -> [elements of its values, smallest itemsize]
    for v in values:
        meta = facts.values[v]
        entry = per_storage.get(meta.storage)
        if entry is None:
            per_storage[meta.storage] = [meta.numel, meta.dtype.itemsize]
        else:
            entry[0] += meta.numel
            entry[1] = min(entry[1], meta.dtype.itemsize)
    total = 0
    for storage, (elements, itemsize) in per_storage.items():
        nbytes = max(facts.storage_nbytes.get(storage, 0), facts.storage_grown.get(storage, 0))
        total += min(elements, nbytes // max(itemsize, 1))
    return total


def _bounded_program(program: list[Instruction], facts: ProgramFacts, actions: list[Action]) -> list[Instruction]:
    """The program with ``output_size`` passed to ``repeat_interleave`` calls whose output shape was
    recorded, so that torch checks the data's repeats against it before allocating."""
    patched: list[Instruction] | None = None
    for i, ins in enumerate(program):
        if not isinstance(ins, Call) or actions[i] == Action.SKIP or ins.out_meta is None:
            continue
        size = repeat_interleave_output_size(ins, facts.infos[i])
        if size is None:
            continue
        if patched is None:
            patched = list(program)
        patched[i] = Call(ins.op, ins.outs, ins.args, dict(ins.kwargs, output_size=size), ins.out_meta)
    return patched if patched is not None else program
