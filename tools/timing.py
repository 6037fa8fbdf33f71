"""Timing helper shared by the benchmarks under tools/."""

from __future__ import annotations

import time
from typing import Any, Callable


def best_seconds(fn: Callable[[], Any], repeats: int = 3) -> float:
    """The fastest of ``repeats`` calls of ``fn``, in seconds (the least disturbed by other load)."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best
