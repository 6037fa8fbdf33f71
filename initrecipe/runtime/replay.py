"""Materialize a recipe's tensors: :func:`replay` and its streaming form :func:`iter_replay`."""

from __future__ import annotations

import math
import os
from typing import Callable, Iterable, Iterator, Mapping, TypeVar, Union

import torch

from initrecipe.analysis.facts import (
    Action,
    is_rng_instruction,
    ProgramFacts,
    call_refs,
    infer_facts,
    plan_execution,
    repeat_interleave_output_size,
)
from initrecipe.errors import MemoryLimitError, RecipeError, RecipeFormatError, ReplayError, ResourceLimitError
from initrecipe.support.display import format_bytes
from initrecipe.support.gcpause import gc_paused, pausing_gc
from initrecipe.rng.torch import generator_state as cpu_generator
from initrecipe.rng.torch.positions import modelled_draws
from initrecipe.runtime.interpreter import GeneratorBank, PortableContext, PositionedGenerators, SequentialGenerators, execute
from initrecipe.rng.torch.parallel_draws import ParallelDraws
from initrecipe.program.ir import Call, Instruction, Literal, Ref, RngRestore
from initrecipe.format.recipe import Recipe, TensorEntry, load
from initrecipe.runtime.sharding import Box, Dependencies, Shard, ShardRequest, plan_slice, run_slice, segments_of
from initrecipe.runtime.torch_versions import check_torch_version
from initrecipe.analysis.cost import CHECK_SECONDS, WorkEstimate, cost_seconds, estimate, portable_rate, refuse, work_budget

__all__ = ["replay", "iter_replay", "available_memory", "sliceable", "sliceable_names", "select_entries", "shard_box",
           "RecipeSource", "NameFilter"]

RecipeSource = Union[Recipe, str, os.PathLike, bytes]
NameFilter = Union[Iterable[str], Callable[[str], bool], None]
M = TypeVar("M", bound=torch.nn.Module)


def _as_recipe(recipe: RecipeSource) -> Recipe:
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
        return _iter_sharded(_as_recipe(recipe), torch.device(device), names, max_bytes, draw_in_place, shards,
                             max_work, threads)
    plan = prepare_replay(recipe, device=device, names=names, max_bytes=max_bytes, draw_in_place=draw_in_place,
                          max_work=max_work, threads=threads)
    return _run_plan(plan)


def shard_box(shards: ShardRequest, entry: TensorEntry) -> Box | None:
    """The block of ``entry`` that ``shards`` requests (``None``: the whole tensor), checked against its shape."""
    shard = shards(entry.name, entry.shape) if callable(shards) else shards.get(entry.name)  # type: ignore[union-attr]
    if shard is None:
        return None
    if isinstance(shard, Shard):
        return Box.of(shard.checked(entry.name, entry.shape), entry.shape)
    if not isinstance(shard, Box):
        raise TypeError(
            f"shards must give initrecipe.Shard or initrecipe.Box values, found {type(shard).__name__} for `{entry.name}`"
        )
    return shard.checked(entry.name, entry.shape)


def sliceable(recipe: RecipeSource, name: str) -> bool:
    """Whether a shard of tensor ``name`` is generated without building the whole tensor: true for
    tensors of ``portable`` recipes whose program is elementwise (:mod:`initrecipe.runtime.sharding`)."""
    recipe = _as_recipe(recipe)
    if name not in recipe.entries:
        raise ReplayError(f"`{name}` is not a tensor of this recipe; `initrecipe show RECIPE` lists the names")
    return name in sliceable_names(recipe, [name])


@pausing_gc
def sliceable_names(recipe: RecipeSource, names: Iterable[str] | None = None) -> set[str]:
    """The names (of ``names``, default all) whose shards are generated slice-only (see :func:`sliceable`)."""
    recipe = _as_recipe(recipe)
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


def _iter_sharded(recipe: Recipe, device: torch.device, names: NameFilter, max_bytes: int | None,
                  draw_in_place: bool, shards: ShardRequest,
                  max_work: float | None = None,
                  threads: int | None = None) -> Iterator[tuple[list[TensorEntry], torch.Tensor]]:
    """:func:`iter_replay` with shard requests: slice-only tensors first, then the rest."""
    check_torch_version(recipe.rng, recipe.producer)
    if not (callable(shards) or isinstance(shards, Mapping)):
        raise TypeError(f"shards must be a mapping name -> Shard or a callable, not {type(shards).__name__}")
    selected = select_entries(recipe, names)
    if isinstance(shards, Mapping):
        unknown = sorted(set(shards) - {e.name for e in selected})
        if unknown:
            raise ReplayError(f"a shard is requested for `{unknown[0]}`, which is not a tensor this replay yields")
    requests = {e.name: shard_box(shards, e) for e in selected}
    _precheck_work(recipe, selected, max_work)
    facts = infer_facts(recipe.program, recipe.generators, rng=recipe.rng)
    check_entries(recipe, facts)
    sliced: dict[tuple[int, Box], list[TensorEntry]] = {}
    whole: list[TensorEntry] = []
    plans = {}
    dependencies = Dependencies(recipe.program, facts) if recipe.rng == "portable" else None
    for entry in selected:
        shard = requests[entry.name]
        if shard is not None and recipe.rng == "portable":
            if entry.value not in plans:
                plans[entry.value] = plan_slice(recipe.program, facts, entry.value, dependencies)
            if plans[entry.value] is not None:
                sliced.setdefault((entry.value, shard), []).append(entry)
                continue
        whole.append(entry)
    limit = max_bytes if max_bytes is not None else available_memory()
    need = sum(
        len(plans[value].full_storages) * math.prod(shard.shape(entries[0].shape)) * 8
        for (value, shard), entries in sliced.items()
    )
    if limit is not None and need > limit:
        raise ResourceLimitError(
            f"replaying these shards needs about {format_bytes(need)}, more than the limit of "
            f"{format_bytes(limit)} ({_limit_source(max_bytes)})"
        )
    # The tensors built whole are planned now, so that every check runs before the first slice.
    wanted = {e.name for e in whole}
    whole_plan = prepare_replay(recipe, device=device, names=lambda n: n in wanted, max_bytes=max_bytes,
                                draw_in_place=draw_in_place, max_work=math.inf, threads=threads) if whole else None
    _check_sharded_work(recipe, facts, device, sliced, plans, whole_plan, max_work)
    return _run_sharded(recipe, facts, device, sliced, plans, whole_plan, requests)


def _check_sharded_work(recipe: Recipe, facts: ProgramFacts, device: torch.device,
                        sliced: dict[tuple[int, Box], list[TensorEntry]], plans: dict,
                        whole_plan: "ReplayPlan | None", max_work: float | None) -> WorkEstimate:
    """The work of a sharded replay: each slice's share of its tensor's program, and the tensors
    built whole; :class:`~initrecipe.WorkLimitError` when over the budget."""
    program_seconds: dict[int, float] = {}  # id of a slice plan -> reference seconds of its whole program
    sliced_seconds = 0.0
    elements = 0
    costs = facts.costs
    rate = portable_rate(device)
    for (value, shard), entries in sliced.items():
        plan = plans[value]
        if id(plan) not in program_seconds:
            program_seconds[id(plan)] = sum(cost_seconds(costs[i], rate) for i in plan.indices)
        full = math.prod(entries[0].shape)
        part = math.prod(shard.shape(entries[0].shape))
        sliced_seconds += program_seconds[id(plan)] * (part / full if full else 0.0)
        elements += part
    executed: list[int] = []
    if whole_plan is not None:
        executed = [i for i, a in enumerate(whole_plan.actions) if a != Action.SKIP]
        elements += _output_elements(facts, whole_plan.by_value)
    work = estimate(recipe.program, costs, executed, elements, max_work, device, extra=sliced_seconds)
    if work.seconds > work.budget:
        raise refuse(work, recipe.program, "replaying these shards")
    return work


def _run_sharded(recipe: Recipe, facts: ProgramFacts, device: torch.device,
                 sliced: dict[tuple[int, Box], list[TensorEntry]], plans: dict, whole_plan: "ReplayPlan | None",
                 requests: dict[str, Box | None]) -> Iterator[tuple[list[TensorEntry], torch.Tensor]]:
    context = PortableContext(recipe.seed, device) if sliced else None
    for (value, shard), entries in sliced.items():
        assert context is not None
        segments = segments_of(entries[0].shape, shard)
        flat = run_slice(plans[value], recipe.program, facts, segments, context.seed, context.device,
                         context.split_devices)
        yield entries, _to_device(flat.reshape(shard.shape(entries[0].shape)), device, entries[0].name)
    if whole_plan is None:
        return
    for entries, tensor in _run_plan(whole_plan):
        groups: dict[Box | None, list[TensorEntry]] = {}
        for entry in entries:
            groups.setdefault(requests[entry.name], []).append(entry)
        for box, members in groups.items():
            if box is None:
                yield members, tensor
            else:
                yield members, box.take(tensor).clone()
        del tensor


def _to_device(tensor: torch.Tensor, device: torch.device, name: str) -> torch.Tensor:
    if device.type == "cpu":
        return tensor
    try:
        return tensor.to(device)
    except Exception as exc:
        detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ReplayError(f"cannot move `{name}` to {device}: {detail}") from None


class ReplayPlan:
    """Everything :func:`iter_replay` decides before it allocates anything (see :func:`prepare_replay`)."""

    def __init__(self, recipe: Recipe, device: torch.device, facts: ProgramFacts, actions: list[Action],
                 by_value: dict[int, list[TensorEntry]], program: list[Instruction],
                 release: dict[int, list[int]], final: dict[int, int], needed_bytes: int,
                 computed_draws: set[int], work: WorkEstimate | None = None) -> None:
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
        self.threads: int | None = None  # worker threads for large random fills (None: one per core)


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
    recipe = _as_recipe(recipe)
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
    _precheck_work(recipe, selected, max_work)
    # The whole program's storages bound what a full replay allocates: stop at the first
    # instruction over the limit, before even finishing the (meta) shape propagation.
    try:
        facts = infer_facts(
            recipe.program, recipe.generators, max_bytes=limit if names is None else None, names=value_names,
            rng=recipe.rng,
        )
    except MemoryLimitError as exc:
        raise ResourceLimitError(f"{exc} ({_limit_source(max_bytes)})") from None
    check_entries(recipe, facts)
    outputs = set(by_value)
    computed = modelled_draws(recipe.program, facts) if cpu_generator.available() else set()
    actions = plan_execution(
        recipe.program, facts, outputs, advance_dead_draws=True, draw_in_place=draw_in_place,
        computed_draws=computed,
    )
    needed = _check_memory(recipe, facts, actions, by_value, device, limit, max_bytes is not None, value_names)
    work = estimate(recipe.program, facts.costs, (i for i, a in enumerate(actions) if a != Action.SKIP),
                    _output_elements(facts, by_value), max_work, device)
    if work.seconds > work.budget:
        raise refuse(work, recipe.program)
    for i, ins in enumerate(recipe.program):
        if (isinstance(ins, RngRestore) and actions[i] != Action.SKIP and actions[ins.after] == Action.SKIP
                and ins.after not in computed and not is_rng_instruction(recipe.program[ins.after])):
            raise ReplayError(
                f"program[{i}]: restores generator {ins.gen} to its state after program[{ins.after}], "
                f"a random draw this replay skips (rng={recipe.rng!r} recipes do not advance dead draws)"
            )
    release, final = _release_schedule(recipe, facts, actions, outputs)
    order = {v: k for k, v in enumerate(by_value)}
    # Values whose final point is an instruction the plan skips (e.g. an output nothing writes)
    # are finished before the loop starts.
    run_indices = {i for i, a in enumerate(actions) if a != Action.SKIP}
    early = sorted((v for v, i in final.items() if i not in run_indices), key=order.get)
    if early:
        raise ReplayError(
            f"tensor `{by_value[early[0]][0].name}` is never built by the program"
        )
    program = _bounded_program(recipe.program, facts, actions)
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
        raise TypeError(f"threads must be a positive int or None, not {threads!r}")
    plan = ReplayPlan(recipe, device, facts, actions, by_value, program, release, final, needed, computed, work)
    plan.threads = threads
    return plan


def _precheck_work(recipe: Recipe, selected: list[TensorEntry], max_work: float | None) -> None:
    """Refuse, before analysing it, a program whose analysis alone would exceed the work budget
    (the budget taken as large as the selected tensors could make it)."""
    elements = sum({e.value: e.numel for e in selected}.values())
    budget, explicit = work_budget(max_work, elements)
    seconds = len(recipe.program) * CHECK_SECONDS
    if seconds > budget:
        n = len(recipe.program)
        raise refuse(WorkEstimate(seconds, 0.0, 0.0, 0, n, (-1, 0.0), elements, budget, explicit), recipe.program,
                     f"checking this recipe's {n} instructions")


def _output_elements(facts: ProgramFacts, values: Iterable[int]) -> int:
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


def _run_plan(plan: ReplayPlan) -> Iterator[tuple[list[TensorEntry], torch.Tensor]]:
    recipe, facts, actions, by_value, device = plan.recipe, plan.facts, plan.actions, plan.by_value, plan.device
    finishing: dict[int, list[int]] = {}
    for v, i in plan.final.items():
        finishing.setdefault(i, []).append(v)
    order = {v: k for k, v in enumerate(by_value)}
    env: dict[int, torch.Tensor] = {}
    bank: GeneratorBank
    if cpu_generator.available():
        bank = PositionedGenerators(plan.program, facts, recipe.generators)
    else:  # pragma: no cover - without the C extension generators advance by drawing, as eager
        bank = SequentialGenerators(recipe.program, recipe.generators)
    pending: list[tuple[list[TensorEntry], torch.Tensor]] = []
    last = -1
    portable = PortableContext(recipe.seed, device) if recipe.rng == "portable" else None
    with ParallelDraws(plan.threads) as parallel:
        steps = execute(plan.program, facts, actions, env, bank, release=None, portable=portable, parallel=parallel)
        while True:
            try:
                i = next(steps)
                last = i
                for v in sorted(finishing.get(i, ()), key=order.get):
                    parallel.wait([facts.values[v].storage])
                    pending.append((by_value[v], env[v]))
            except StopIteration:
                break
            except RecipeError:
                raise
            except MemoryError:
                raise ResourceLimitError(
                    f"ran out of memory after program[{last}] (the replay needs about "
                    f"{format_bytes(plan.needed_bytes)})"
                ) from None
            except Exception as exc:  # a safety net: whatever a damaged program makes torch raise
                detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                raise ReplayError(
                    f"replay failed after program[{last}]: {type(exc).__name__}: {detail}"
                ) from None
            for v in plan.release.get(i, ()):
                env.pop(v, None)
            while pending:
                entries, tensor = pending.pop(0)
                tensor = _to_device(tensor, device, entries[0].name)
                yield entries, tensor
                del tensor


def available_memory(device: str | torch.device | None = None) -> int | None:
    """Bytes of memory available for a replay now: ``MemAvailable`` from ``/proc/meminfo``
    (CPU), or the free memory ``torch.cuda.mem_get_info`` reports for a CUDA device.
    None when it cannot be told."""
    device = torch.device(device) if device is not None else torch.device("cpu")
    if device.type == "cuda":
        try:
            if torch.cuda.is_available():
                return int(torch.cuda.mem_get_info(device)[0])
        except Exception:
            return None
        return None
    try:
        with open("/proc/meminfo", "rb") as handle:
            for line in handle:
                if line.startswith(b"MemAvailable:"):
                    parts = line.split()
                    return int(parts[1]) * (1024 if parts[2:3] == [b"kB"] else 1)
    except (OSError, ValueError, IndexError):
        return None
    return None


def _check_memory(
    recipe: Recipe,
    facts: ProgramFacts,
    actions: list[Action],
    by_value: dict[int, list[TensorEntry]],
    device: torch.device,
    limit: int | None,
    explicit: bool,
    value_names: dict[int, str],
) -> int:
    """Bytes the planned replay allocates; :class:`ResourceLimitError` when over ``limit``."""
    created: dict[int, int] = {}
    scratch = 0
    scratch_at = (-1, -1)  # (instruction, storage) of the largest dead draw
    for i, action in enumerate(actions):
        ins = recipe.program[i]
        if action in (Action.RUN, Action.ALLOC):
            outs = ins.outs if isinstance(ins, Call) else (ins.out,) if isinstance(ins, Literal) else ()
            for o in outs:
                if o is None:
                    continue
                sid = facts.values[o].storage
                if facts.storage_creator.get(sid) == i:
                    created[sid] = max(facts.storage_nbytes[sid], facts.storage_grown.get(sid, 0))
        elif action == Action.ADVANCE and isinstance(ins, Call):
            for r in call_refs(ins):
                sid = facts.values[r].storage
                nbytes = max(facts.storage_nbytes.get(sid, 0), facts.storage_grown.get(sid, 0))
                nbytes = min(nbytes, _chunked_draw_bytes(ins, facts) or nbytes)
                if nbytes > scratch:
                    scratch, scratch_at = nbytes, (i, sid)
    needed = sum(created.values()) + scratch
    if limit is not None and needed > limit:

        def holder(sid: int) -> str:
            holders = [n for v, n in value_names.items() if v in facts.values and facts.values[v].storage == sid]
            return f"`{holders[0]}`" if holders else f"intermediate value {sid}"

        sid = max(created, key=created.get) if created else None
        owner = ""
        if sid is not None and created[sid] >= scratch:
            owner = (f"; the largest is {holder(sid)} ({format_bytes(created[sid])}, built by "
                     f"program[{facts.storage_creator[sid]}])")
        elif scratch:
            owner = (f"; the largest is scratch memory for program[{scratch_at[0]}], a random draw into "
                     f"{holder(scratch_at[1])} that this replay needs only to advance the generator "
                     f"({format_bytes(scratch)})")
        raise ResourceLimitError(
            f"replaying this recipe needs {format_bytes(needed)}, more than the limit of "
            f"{format_bytes(limit)}{owner} ({_limit_source(limit if explicit else None)})"
        )
    if device.type == "cuda":
        out_bytes = sum(entries[0].nbytes for entries in by_value.values())
        free = limit if explicit else available_memory(device)
        if free is not None and out_bytes > free:
            raise ResourceLimitError(
                f"the replayed tensors need {format_bytes(out_bytes)} on {device}, which has "
                f"{format_bytes(free)} free; pass a larger `max_bytes` to try anyway"
            )
    return needed


def _chunked_draw_bytes(ins: Call, facts: ProgramFacts) -> int | None:
    """The scratch a large dead fill needs when the interpreter draws it chunk by chunk, else None."""
    from initrecipe.runtime.interpreter import _CHUNK_ELEMENTS, _CHUNKABLE_FILLS, _is_contiguous

    granule = _CHUNKABLE_FILLS.get(ins.op)
    target = ins.args[0] if ins.args else None
    if granule is None or not isinstance(target, Ref):
        return None
    meta = facts.values[target.id]
    if (
        meta.dtype not in (torch.float32, torch.float64)
        or meta.numel <= 2 * _CHUNK_ELEMENTS
        or not _is_contiguous(meta.shape, meta.stride)
    ):
        return None
    return (_CHUNK_ELEMENTS + 2 * granule) * meta.dtype.itemsize


def _limit_source(max_bytes: int | None) -> str:
    if max_bytes is not None:
        return f"max_bytes={max_bytes}"
    return "the memory available now; pass `max_bytes` to replay on a machine that has more"


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
    recipe = _as_recipe(recipe)
    if into is not None:
        _check_module_names(recipe, into)
    result: dict[str, torch.Tensor] = {}
    with gc_paused():
        for entries, tensor in iter_replay(recipe, device=device, names=names, max_bytes=max_bytes, shards=shards,
                                           max_work=max_work, threads=threads):
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
