"""Large random fills of an rng="torch" replay, split into pieces that run on every core.

torch's CPU random kernels are sequential: one generator, one thread.  But the values of
``uniform_`` at each element, and of ``normal_`` at each block of 16 contiguous elements, depend
only on the generator outputs at that element's (block's) position in the stream.  So a fill can be
cut at multiples of its granule (:func:`initrecipe.rng.torch.draw_costs.chunk_granule`) and each piece drawn
into its own slice of the tensor by its own ``torch.Generator``, started by a jump-ahead at the
piece's first output: the bits are exactly eager's, on as many threads as the machine has.

The interpreter hands such fills to :class:`ParallelDraws` and goes on; before an instruction
touches a storage that pieces are still filling, it waits for them (:meth:`ParallelDraws.wait`).
"""

from __future__ import annotations

import os
from concurrent.futures import Future, ThreadPoolExecutor
from types import TracebackType
from typing import Any, Callable, Iterable

import torch

from initrecipe.rng.torch.draw_costs import chunk_granule, is_contiguous

__all__ = ["ParallelDraws", "default_threads", "split_points", "PIECE_ELEMENTS", "PARALLEL_MIN_ELEMENTS"]

PIECE_ELEMENTS = 1 << 23
"""Largest piece of a split fill, in elements (32 MiB of float32: the jump to its start costs a few
percent of drawing it)."""
PARALLEL_MIN_ELEMENTS = 1 << 18
"""Fills smaller than this run where they are, on the interpreter's thread."""


def default_threads() -> int:
    """Worker threads for split fills: torch's intra-op thread count (one per core by default)."""
    return max(1, min(torch.get_num_threads(), os.cpu_count() or 1))


def split_points(numel: int, granule: int, pieces: int, *, last_at_least: int = 1) -> list[int]:
    """Boundaries ``[0, b1, ..., numel]`` of about ``pieces`` near-equal pieces cut at multiples of
    ``granule``, the last one at least ``last_at_least`` elements long."""
    if pieces <= 1 or numel < 2 * max(granule, last_at_least):
        return [0, numel]
    step = max(granule, -(-numel // pieces) // granule * granule)
    bounds = list(range(0, numel, step))
    while len(bounds) > 1 and numel - bounds[-1] < last_at_least:
        bounds.pop()  # fold a short tail into the previous piece
    return bounds + [numel]


class ParallelDraws:
    """Worker threads for split random fills, and the storages they are still filling.

    Use as a context manager: leaving it waits for (or, after an error, cancels) every piece.
    """

    def __init__(self, threads: int | None = None) -> None:
        self.threads = default_threads() if threads is None else max(1, threads)
        self._pool: ThreadPoolExecutor | None = None
        self._pending: dict[int, list[Future[Any]]] = {}

    def __enter__(self) -> ParallelDraws:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 traceback: TracebackType | None) -> None:
        if kind is None:
            self.wait_all()
        else:
            for futures in self._pending.values():
                for future in futures:
                    future.cancel()
            self._pending.clear()
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None

    @property
    def enabled(self) -> bool:
        return self.threads > 1

    def pieces(self, op: str, tensor: torch.Tensor) -> list[tuple[int, int]] | None:
        """How to split a fill ``op`` of ``tensor``: element ranges, or None to run it whole."""
        numel = tensor.numel()
        if not self.enabled or numel < PARALLEL_MIN_ELEMENTS:
            return None
        if not is_contiguous(tuple(tensor.shape), tuple(tensor.stride())):
            return None
        granule = chunk_granule(op, numel, tensor.dtype, True)
        if granule is None:
            return None
        count = max(self.threads, -(-numel // PIECE_ELEMENTS))
        bounds = split_points(numel, granule, count, last_at_least=16 if granule > 1 else 1)
        if len(bounds) <= 2:
            return None
        return list(zip(bounds[:-1], bounds[1:]))

    def submit(self, storage: int, tasks: Iterable[Callable[[], Any]]) -> None:
        """Run ``tasks`` (the pieces of one fill of ``storage``) on the workers."""
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=self.threads, thread_name_prefix="initrecipe-draw")
        futures = self._pending.setdefault(storage, [])
        futures.extend(self._pool.submit(task) for task in tasks)

    def wait(self, storages: Iterable[int]) -> None:
        """Wait until no piece is filling any of ``storages`` (re-raising a piece's error)."""
        if not self._pending:
            return
        for storage in storages:
            futures = self._pending.pop(storage, None)
            if futures:
                for future in futures:
                    future.result()

    def wait_all(self) -> None:
        self.wait(list(self._pending))
