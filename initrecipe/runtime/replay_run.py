"""Running a planned replay: the interpreter executes the program and each tensor is yielded (moved
to its device) as soon as it is final; sliced tensors of a sharded replay first."""

from __future__ import annotations

from typing import Iterator

import torch

from initrecipe.analysis.facts import ProgramFacts
from initrecipe.errors import RecipeError, ReplayError, ResourceLimitError
from initrecipe.format.recipe import Recipe, TensorEntry
from initrecipe.rng.torch import generator_state as cpu_generator
from initrecipe.rng.torch.parallel_draws import ParallelDraws
from initrecipe.runtime.generator_banks import GeneratorBank, PositionedGenerators, SequentialGenerators
from initrecipe.runtime.interpreter import execute
from initrecipe.runtime.rng_modes import PortableContext
from initrecipe.runtime.replay_plan import ReplayPlan
from initrecipe.runtime.regions import Box, segments_of
from initrecipe.runtime.sharding import SlicePlan
from initrecipe.runtime.slice_run import run_slice
from initrecipe.support.display import failure_detail, format_bytes

__all__ = ["run_plan", "run_sharded"]


def run_plan(plan: ReplayPlan) -> Iterator[tuple[list[TensorEntry], torch.Tensor]]:
    """Execute ``plan``, yielding each selected tensor (moved to the plan's device) once final."""
    recipe, facts, actions, by_value, device = plan.recipe, plan.facts, plan.actions, plan.by_value, plan.device
    finishing: dict[int, list[int]] = {}
    for v, i in plan.final.items():
        finishing.setdefault(i, []).append(v)
    order = {v: k for k, v in enumerate(by_value)}
    env: dict[int, torch.Tensor] = {}
    bank: GeneratorBank
    if cpu_generator.available():
        bank = PositionedGenerators(plan.program, facts, recipe.generators)
    else:  # without the C extension generators advance by drawing, as eager
        bank = SequentialGenerators(recipe.program, recipe.generators)
    pending: list[tuple[list[TensorEntry], torch.Tensor]] = []
    last = -1
    portable = PortableContext(recipe.seed, device) if recipe.rng == "portable" else None
    with ParallelDraws(plan.threads) as parallel:
        steps = execute(plan.program, facts, actions, env, bank, portable=portable, parallel=parallel)
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
                raise ReplayError(
                    f"replay failed after program[{last}]: {type(exc).__name__}: {failure_detail(exc)}"
                ) from None
            for v in plan.release.get(i, ()):
                env.pop(v, None)
            while pending:
                entries, tensor = pending.pop(0)
                tensor = _to_device(tensor, device, entries[0].name)
                yield entries, tensor
                del tensor


def run_sharded(recipe: Recipe, facts: ProgramFacts, device: torch.device,
                sliced: dict[tuple[int, Box], list[TensorEntry]], plans: dict[int, SlicePlan | None],
                whole_plan: ReplayPlan | None,
                requests: dict[str, Box | None]) -> Iterator[tuple[list[TensorEntry], torch.Tensor]]:
    """Yield the slice-only tensors (each block generated alone), then run ``whole_plan`` and
    yield the requested block of each of its tensors."""
    context = PortableContext(recipe.seed, device) if sliced else None
    for (value, shard), entries in sliced.items():
        assert context is not None
        segments = segments_of(entries[0].shape, shard)
        flat = run_slice(plans[value], recipe.program, facts, segments, context.seed, context.device,
                         context.split_devices)
        yield entries, _to_device(flat.reshape(shard.shape(entries[0].shape)), device, entries[0].name)
    if whole_plan is None:
        return
    for entries, tensor in run_plan(whole_plan):
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
    """``tensor`` on ``device``; a :class:`ReplayError` naming the tensor when it cannot get there."""
    if device.type == "cpu":
        return tensor
    try:
        return tensor.to(device)
    except Exception as exc:
        raise ReplayError(f"cannot move `{name}` to {device}: {failure_detail(exc)}") from None
