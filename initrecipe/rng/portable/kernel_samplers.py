"""The C kernel path of the portable samplers (CPU): the ``_portable_kernel`` extension, when built,
fills a draw's elements split into tasks on a shared thread pool (same bits as the reference)."""

from __future__ import annotations

import concurrent.futures
import os
import threading
from typing import Callable

import torch

from initrecipe.errors import SettingError
from initrecipe.rng.portable.sampler_params import Draw, Segment

try:
    from initrecipe.rng.portable import _portable_kernel as KERNEL
except ImportError:  # built without a C compiler: the reference path does everything
    KERNEL = None
except ValueError as exc:  # INITRECIPE_KERNEL_PATH names a path this CPU or build cannot run
    raise SettingError(str(exc)) from None

__all__ = ["KERNEL", "KERNEL_EXT_KIND", "Piece", "plan_tasks", "run_tasks", "kernel_fill", "kernel_fill_ext"]

_KERNEL_MIN_CHUNK = 1 << 16
_KERNEL_MAX_CHUNK = 1 << 22
_CAST_BLOCK = 1 << 15  # torch casts below its parallel grain size run on the calling thread

_KERNEL_KIND = {"uniform": 0, "normal": 1, "bernoulli": 2, "exponential": 3}
_KERNEL_DTYPE = {torch.float32: 0, torch.float64: 1, torch.bfloat16: 2, torch.float16: 3}

_POOL_PREFIX = "initrecipe-rng"
_pool_lock = threading.Lock()
_pool: concurrent.futures.ThreadPoolExecutor | None = None
_pool_key: tuple[int, int] = (0, 0)  # (pid, workers)


def _executor(workers: int) -> concurrent.futures.ThreadPoolExecutor:
    """A shared thread pool of ``workers`` threads (recreated after fork or a thread-count change)."""
    global _pool, _pool_key
    with _pool_lock:
        key = (os.getpid(), workers)
        if _pool is None or _pool_key != key:
            if _pool is not None and _pool_key[0] == key[0]:
                _pool.shutdown(wait=False)
            _pool = concurrent.futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix=_POOL_PREFIX)
            _pool_key = key
        return _pool


Piece = tuple[int, int, int]  # (output offset, first word, length)


def plan_tasks(segments: list[Segment], total: int, workers: int) -> list[list[Piece]]:
    """Split the segments into tasks of about equal size (a task may span several segments)."""
    chunk = -(-total // (4 * workers)) if workers > 1 else total
    chunk = max(_KERNEL_MIN_CHUNK, min(_KERNEL_MAX_CHUNK, chunk))
    chunk = -(-chunk // 64) * 64
    tasks: list[list[Piece]] = []
    current: list[Piece] = []
    filled = 0
    offset = 0
    for first, length in segments:
        while length:
            take = min(length, chunk - filled)
            current.append((offset, first, take))
            offset += take
            first += take
            length -= take
            filled += take
            if filled == chunk:
                tasks.append(current)
                current, filled = [], 0
    if current:
        tasks.append(current)
    return tasks


def run_tasks(tasks: list[list[Piece]], work: Callable[[list[Piece]], None], workers: int) -> None:
    """Run ``work`` on every task: on the shared pool, or inline for one task, one worker, or when
    called from a pool thread (which must not wait on its own pool)."""
    if workers <= 1 or len(tasks) <= 1 or threading.current_thread().name.startswith(_POOL_PREFIX):
        for task in tasks:
            work(task)
        return
    for future in [_executor(workers).submit(work, task) for task in tasks]:
        future.result()


KERNEL_EXT_KIND = {"cauchy": 0, "log_normal": 1, "geometric": 2, "bernoulli_tensor": 3, "normal_tensor": 4}


def kernel_fill_ext(out: torch.Tensor, draw: Draw, key: tuple[int, int], segments: list[Segment],
                     tensor_params: tuple[torch.Tensor, ...]) -> None:
    """The format 1.2 samplers with the C kernel: float32 values (straight into a float32 ``out``,
    else through blocks cast with torch, as the spec's conversion says)."""
    assert KERNEL is not None
    k0, k1 = key
    flat = out.view(-1)
    kind = KERNEL_EXT_KIND[draw.kind]
    a, b, c = float(draw.a), float(draw.b), float(draw.c)
    src1 = tensor_params[0].data_ptr() if tensor_params else 0
    src2 = tensor_params[1].data_ptr() if len(tensor_params) > 1 else 0
    workers = max(1, torch.get_num_threads())
    kernel = KERNEL
    direct = out.dtype == torch.float32

    def work(task: list[Piece]) -> None:
        tmp = None if direct else torch.empty(_CAST_BLOCK, dtype=torch.float32)
        for offset, first, n in task:
            for start in range(0, n, _CAST_BLOCK):
                m = min(_CAST_BLOCK, n - start)
                at = offset + start
                p1 = src1 + 4 * at if src1 else 0
                p2 = src2 + 4 * at if src2 else 0
                if tmp is None:
                    kernel.fill_ext(kind, flat.data_ptr() + 4 * at, m, k0, k1, first + start, a, b, c, p1, p2)
                else:
                    kernel.fill_ext(kind, tmp.data_ptr(), m, k0, k1, first + start, a, b, c, p1, p2)
                    flat[at : at + m].copy_(tmp[:m])

    total = sum(length for _, length in segments)
    with torch.no_grad():
        run_tasks(plan_tasks(segments, total, workers), work, workers)
    torch.autograd.graph.increment_version(out)


def kernel_fill(out: torch.Tensor, draw: Draw, key: tuple[int, int], segments: list[Segment]) -> None:
    """The format 1.1 samplers with the C kernel, straight into ``out`` or through float32 (int64
    for randint) blocks cast with torch."""
    assert KERNEL is not None
    k0, k1 = key
    flat = out.view(-1)
    dtype = out.dtype
    base = out.data_ptr()
    size = out.element_size()
    workers = max(1, torch.get_num_threads())
    kernel = KERNEL

    if draw.kind == "randint":
        low, rng = int(draw.a), int(draw.b)
        if dtype in (torch.int64, torch.float32):
            as_float = dtype == torch.float32

            def work(task: list[Piece]) -> None:
                for offset, first, n in task:
                    kernel.randint(base + offset * size, as_float, n, k0, k1, first, low, rng)

        else:
            # int64 (exact) for float64 and integer outputs; float32 for other floating outputs.
            via_float = dtype.is_floating_point and dtype != torch.float64
            tmp_dtype = torch.float32 if via_float else torch.int64

            def work(task: list[Piece]) -> None:
                tmp = torch.empty(_CAST_BLOCK, dtype=tmp_dtype)
                for offset, first, n in task:
                    for start in range(0, n, _CAST_BLOCK):
                        m = min(_CAST_BLOCK, n - start)
                        kernel.randint(tmp.data_ptr(), via_float, m, k0, k1, first + start, low, rng)
                        flat[offset + start : offset + start + m].copy_(tmp[:m])

    else:
        kind = _KERNEL_KIND[draw.kind]
        a, b = float(draw.a), float(draw.b)
        code = _KERNEL_DTYPE.get(dtype)
        if code is not None:

            def work(task: list[Piece]) -> None:
                for offset, first, n in task:
                    kernel.fill(kind, base + offset * size, code, n, k0, k1, first, a, b)

        else:  # other floating dtypes, integer/bool (bernoulli): float32 blocks, then torch's cast

            def work(task: list[Piece]) -> None:
                tmp = torch.empty(_CAST_BLOCK, dtype=torch.float32)
                for offset, first, n in task:
                    for start in range(0, n, _CAST_BLOCK):
                        m = min(_CAST_BLOCK, n - start)
                        kernel.fill(kind, tmp.data_ptr(), 0, m, k0, k1, first + start, a, b)
                        flat[offset + start : offset + start + m].copy_(tmp[:m])

    total = sum(length for _, length in segments)
    with torch.no_grad():
        run_tasks(plan_tasks(segments, total, workers), work, workers)
    # The kernel wrote through a raw pointer: record the in-place change as torch's own ops do.
    torch.autograd.graph.increment_version(out)
