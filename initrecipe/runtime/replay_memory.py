"""The memory a planned replay needs, checked against what the machine has (or ``max_bytes``)."""

from __future__ import annotations

import torch

from initrecipe.analysis.facts import Action, ProgramFacts, call_refs
from initrecipe.errors import ResourceLimitError
from initrecipe.format.recipe import Recipe, TensorEntry
from initrecipe.program.ir import Call, Literal
from initrecipe.runtime.scratch import chunked_draw_bytes
from initrecipe.support.display import format_bytes

__all__ = ["available_memory", "check_memory", "limit_source"]


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


def check_memory(
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
                nbytes = min(nbytes, chunked_draw_bytes(ins, facts) or nbytes)
                if nbytes > scratch:
                    scratch, scratch_at = nbytes, (i, sid)
    needed = sum(created.values()) + scratch
    if limit is not None and needed > limit:
        raise ResourceLimitError(
            f"replaying this recipe needs {format_bytes(needed)}, more than the limit of "
            f"{format_bytes(limit)}{_largest(facts, value_names, created, scratch, scratch_at)} "
            f"({limit_source(limit if explicit else None)})"
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


def _largest(facts: ProgramFacts, value_names: dict[int, str], created: dict[int, int], scratch: int,
             scratch_at: tuple[int, int]) -> str:
    """The largest allocation of a replay, for the message that refuses it ("" when there is none)."""

    def holder(sid: int) -> str:
        holders = [n for v, n in value_names.items() if v in facts.values and facts.values[v].storage == sid]
        return f"`{holders[0]}`" if holders else f"intermediate value {sid}"

    sid = max(created, key=created.__getitem__) if created else None
    if sid is not None and created[sid] >= scratch:
        return (f"; the largest is {holder(sid)} ({format_bytes(created[sid])}, built by "
                f"program[{facts.storage_creator[sid]}])")
    if scratch:
        return (f"; the largest is scratch memory for program[{scratch_at[0]}], a random draw into "
                f"{holder(scratch_at[1])} that this replay needs only to advance the generator "
                f"({format_bytes(scratch)})")
    return ""


def limit_source(max_bytes: int | None) -> str:
    """Where a memory limit came from, for a message."""
    if max_bytes is not None:
        return f"max_bytes={max_bytes}"
    return "the memory available now; pass `max_bytes` to replay on a machine that has more"
