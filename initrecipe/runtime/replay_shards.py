"""Planning a sharded replay (``shards=``): which tensors are generated slice-only and which are
built whole and sliced, with the memory and work that takes checked before anything is allocated."""

from __future__ import annotations

import math
from typing import Iterator, Mapping

import torch

from initrecipe.analysis.cost import WorkEstimate, cost_seconds, estimate, portable_rate, refuse
from initrecipe.analysis.facts import Action, ProgramFacts
from initrecipe.analysis.infer import infer_facts
from initrecipe.errors import ReplayError, ResourceLimitError
from initrecipe.format.recipe import Recipe, TensorEntry
from initrecipe.runtime.replay_memory import available_memory, limit_source
from initrecipe.runtime.replay_plan import (
    NameFilter,
    ReplayPlan,
    check_entries,
    output_elements,
    precheck_work,
    prepare_replay,
    select_entries,
)
from initrecipe.runtime.replay_run import run_sharded
from initrecipe.runtime.regions import Box, Shard, ShardRequest
from initrecipe.runtime.sharding import Dependencies, SlicePlan, plan_slice
from initrecipe.runtime.torch_versions import check_torch_version
from initrecipe.support.display import format_bytes

__all__ = ["shard_box", "iter_sharded"]


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


def iter_sharded(recipe: Recipe, device: torch.device, names: NameFilter, max_bytes: int | None,
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
    precheck_work(recipe, selected, max_work)
    facts = infer_facts(recipe.program, recipe.generators, rng=recipe.rng)
    check_entries(recipe, facts)
    sliced: dict[tuple[int, Box], list[TensorEntry]] = {}
    whole: list[TensorEntry] = []
    plans: dict[int, SlicePlan | None] = {}
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
            f"{format_bytes(limit)} ({limit_source(max_bytes)})"
        )
    # The tensors built whole are planned now, so that every check runs before the first slice.
    wanted = {e.name for e in whole}
    whole_plan = prepare_replay(recipe, device=device, names=lambda n: n in wanted, max_bytes=max_bytes,
                                draw_in_place=draw_in_place, max_work=math.inf, threads=threads) if whole else None
    _check_sharded_work(recipe, facts, device, sliced, plans, whole_plan, max_work)
    return run_sharded(recipe, facts, device, sliced, plans, whole_plan, requests)


def _check_sharded_work(recipe: Recipe, facts: ProgramFacts, device: torch.device,
                        sliced: dict[tuple[int, Box], list[TensorEntry]], plans: dict[int, SlicePlan | None],
                        whole_plan: ReplayPlan | None, max_work: float | None) -> WorkEstimate:
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
        elements += output_elements(facts, whole_plan.by_value)
    work = estimate(recipe.program, costs, executed, elements, max_work, device, extra=sliced_seconds)
    if work.seconds > work.budget:
        raise refuse(work, recipe.program, "replaying these shards")
    return work
