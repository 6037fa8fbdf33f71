"""Comparing tensor values element by element, chunk by chunk (bitwise, or within a tolerance):
two tensors, or a tensor with one stored in a checkpoint."""

from __future__ import annotations

import math
import sys

import torch
from tqdm import tqdm

from initrecipe.export.checkpoint import Checkpoint
from initrecipe.inspect.diff_result import ValueDiff

__all__ = ["compare_values", "compare_with_stored", "Tally", "CHUNK", "progress_bar"]

CHUNK = 1 << 22  # elements per step of a value comparison (bounds its temporary memory)
_BITS = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}


def _bits(t: torch.Tensor) -> torch.Tensor:
    if t.dtype == torch.bool:
        return t.view(torch.uint8)
    if t.dtype.is_complex:
        return torch.view_as_real(t).flatten().view(_BITS[t.dtype.itemsize // 2])
    return t.view(_BITS[t.dtype.itemsize]) if t.dtype.itemsize in _BITS else t


class Tally:
    """Counts differing elements and the largest difference, chunk by chunk."""

    def __init__(self, tolerance: float | None) -> None:
        self.tolerance = tolerance
        self.numel = 0
        self.differing = 0
        self.worst = 0.0

    def add(self, a: torch.Tensor, b: torch.Tensor) -> None:
        """Compare two 1-D chunks of one dtype and length."""
        self.numel += a.numel()
        if self.tolerance is None and torch.equal(_bits(a), _bits(b)):
            return
        ne = _bits(a) != _bits(b)
        if a.dtype.is_complex:
            ne = ne.view(-1, 2).any(dim=1)
        if not bool(ne.any()):
            return
        if a.dtype.is_floating_point or a.dtype.is_complex:
            wide = torch.complex128 if a.dtype.is_complex else torch.float64
            d = (a.to(wide) - b.to(wide)).abs()
            both_nan = (torch.isnan(a) & torch.isnan(b)) if not a.dtype.is_complex else torch.zeros_like(ne)
            d = torch.where(torch.isnan(d) & ~both_nan, torch.full_like(d, math.inf), d)
            d = torch.where(both_nan, torch.zeros_like(d), d)
        else:
            d = (a.to(torch.float64) - b.to(torch.float64)).abs()
        if self.tolerance is not None:
            ne = ne & (d > self.tolerance)
        count = int(ne.sum())
        if count:
            self.differing += count
            self.worst = max(self.worst, float(d[ne].max()))

    def result(self) -> ValueDiff:
        """What the chunks added so far amount to."""
        return ValueDiff(self.numel, self.differing, self.worst, self.tolerance)


def compare_values(x: torch.Tensor, y: torch.Tensor, tolerance: float | None = None) -> ValueDiff:
    """Compare two tensors of one shape and dtype, chunk by chunk (little extra memory).

    Without ``tolerance`` elements are equal when their bits are (``-0.0`` differs from ``0.0``,
    NaNs with the same payload are equal); with it, when ``|x - y| <= tolerance`` or both are NaN.
    """
    if x.shape != y.shape or x.dtype != y.dtype:
        raise ValueError(f"cannot compare {x.dtype} {tuple(x.shape)} with {y.dtype} {tuple(y.shape)}")
    xf, yf = x.detach().reshape(-1), y.detach().reshape(-1)
    tally = Tally(tolerance)
    if tolerance is None and torch.equal(_bits(xf), _bits(yf)):
        return ValueDiff(xf.numel(), 0, 0.0, tolerance)
    for start in range(0, xf.numel(), CHUNK):
        tally.add(xf[start:start + CHUNK], yf[start:start + CHUNK])
    return tally.result()


def compare_with_stored(x: torch.Tensor, ckpt: Checkpoint, name: str, tolerance: float | None) -> ValueDiff:
    """Compare a tensor with a stored one read chunk by chunk (``x`` is cast chunk by chunk to
    the stored dtype): memory for one chunk, not a second tensor."""
    dtype = ckpt.tensors[name].dtype
    xf = x.detach().reshape(-1)
    tally = Tally(tolerance)
    start = 0
    for chunk in ckpt.read_chunks(name, CHUNK):
        mine = xf[start:start + chunk.numel()]
        tally.add(mine if mine.dtype == dtype else mine.to(dtype), chunk)
        start += chunk.numel()
    return tally.result()


def progress_bar(enabled: bool | None, total: int, desc: str) -> tqdm | None:
    """A transient progress bar on stderr over ``total`` bytes (``enabled`` None: when stderr is a terminal)."""
    if enabled is None:
        enabled = bool(getattr(sys.stderr, "isatty", lambda: False)())
    if not enabled:
        return None
    return tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=desc, file=sys.stderr,
                dynamic_ncols=True, leave=False)
