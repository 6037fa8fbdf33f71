"""Dead random draws run only to advance their generator: on reusable scratch memory of the
shapes they draw into, and a large fill in bounded chunks."""

from __future__ import annotations

from typing import Any

import torch

from initrecipe.analysis.facts import ProgramFacts, TensorMeta
from initrecipe.program.ir import Call, GenRef, Ref
from initrecipe.program.operators import CHUNKABLE_FILLS, OpInfo
from initrecipe.program.walk import map_arg
from initrecipe.rng.torch.draw_costs import is_contiguous
from initrecipe.runtime.calls import call_op
from initrecipe.support import hugepages

__all__ = ["ScratchPool", "draw_on_scratch", "chunked_draw_bytes"]

_CHUNK_ELEMENTS = 1 << 22


class ScratchPool:
    """One reusable buffer for dead draws, so their pages are faulted in once, not per draw."""

    def __init__(self) -> None:
        self._buffer = torch.empty(0, dtype=torch.uint8)

    def tensor(self, meta: TensorMeta) -> torch.Tensor:
        """Uninitialized memory of ``meta``'s shape, strides and dtype (valid until the next call)."""
        span = 1 + sum((size - 1) * stride for size, stride in zip(meta.shape, meta.stride)) if meta.numel else 0
        nbytes = span * meta.dtype.itemsize
        if nbytes > self._buffer.numel():
            self._buffer = torch.empty(0, dtype=torch.uint8)  # free the old one first
            self._buffer = hugepages.empty_strided((nbytes,), (1,), torch.uint8)
        return self._buffer[:nbytes].view(meta.dtype).as_strided(meta.shape, meta.stride)


def _chunked_fill(ins: Call, facts: ProgramFacts) -> tuple[int, TensorMeta] | None:
    """The granule and target of a dead fill large enough to draw chunk by chunk, else None."""
    granule = CHUNKABLE_FILLS.get(ins.op)
    target = ins.args[0] if ins.args else None
    if granule is None or not isinstance(target, Ref):
        return None
    meta = facts.values[target.id]
    if (
        meta.dtype not in (torch.float32, torch.float64)
        or meta.numel <= 2 * _CHUNK_ELEMENTS
        or not is_contiguous(meta.shape, meta.stride)
    ):
        return None
    return granule, meta


def chunked_draw_bytes(ins: Call, facts: ProgramFacts) -> int | None:
    """The scratch a large dead fill needs when it is drawn chunk by chunk, else None."""
    chunked = _chunked_fill(ins, facts)
    if chunked is None:
        return None
    granule, meta = chunked
    return (_CHUNK_ELEMENTS + 2 * granule) * meta.dtype.itemsize


def _scratch(value: object, facts: ProgramFacts, generator: torch.Generator | None, pool: ScratchPool) -> Any:
    """An argument with its tensor references replaced by uninitialized tensors of their geometry
    (from ``pool``) and generators by ``generator``."""
    return map_arg(
        value, (Ref, GenRef), lambda leaf: pool.tensor(facts.values[leaf.id]) if isinstance(leaf, Ref) else generator
    )


def _advance_in_chunks(ins: Call, info: OpInfo, facts: ProgramFacts, generator: torch.Generator, where: str,
                       pool: ScratchPool) -> bool:
    """Advance ``generator`` as a large dead fill would, using a bounded buffer; False if not applicable."""
    chunked = _chunked_fill(ins, facts)
    if chunked is None:
        return False
    granule, meta = chunked
    numel = meta.numel
    rest = [_scratch(a, facts, generator, pool) for a in ins.args[1:]]
    kwargs = {k: _scratch(v, facts, generator, pool) for k, v in ins.kwargs.items()}
    buffer = torch.empty(_CHUNK_ELEMENTS + granule * 2, dtype=meta.dtype)
    done = 0
    while done < numel:
        count = min(_CHUNK_ELEMENTS, numel - done)
        if numel - done - count < max(granule, 1) * 2 and numel - done - count > 0:
            count = numel - done  # fold a short tail into this chunk (the buffer has room)
        call_op(ins, info, [buffer[:count], *rest], dict(kwargs), generator, where)
        done += count
    return True


def draw_on_scratch(ins: Call, info: OpInfo, facts: ProgramFacts, generator: torch.Generator, where: str,
                    pool: ScratchPool) -> None:
    """Run a random call on uninitialized memory of the same shapes, only to advance ``generator``."""
    if _advance_in_chunks(ins, info, facts, generator, where, pool):
        return
    args = [_scratch(a, facts, generator, pool) for a in ins.args]
    kwargs = {k: _scratch(v, facts, generator, pool) for k, v in ins.kwargs.items()}
    call_op(ins, info, args, kwargs, generator, where)
