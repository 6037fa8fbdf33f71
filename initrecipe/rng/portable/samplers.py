"""Samplers of the ``portable`` random-number mode: bits that depend on nothing but their inputs.

:func:`sample_` fills a tensor with draws from one Philox4x32-10 stream (:mod:`initrecipe.rng.portable.philox`).
Element ``i`` of a draw is computed from stream word ``i`` alone, by a transform that uses only
correctly rounded IEEE-754 binary32 ``+ - * /`` (its own logarithm and square root are built from
them), comparisons, selects and integer operations, so its bits are the same on CPU and CUDA, for
any thread count, any split of the work and any torch version.  The normative definition is ``schema/PORTABLE_RNG.md``.

Two implementations compute the same bits:

* the *reference*, written here with eager torch tensor operations, one IEEE operation per torch
  call (never a fused multiply-add, ``addcmul``, ``lerp`` or ``torch.compile``), constants that are
  exact binary32 values, and integer Philox arithmetic that never overflows int64.  It runs on any
  device and is what CUDA tensors use.  It avoids ``torch.sqrt`` (not correctly rounded on some
  CPU builds) in favour of its own square root from ``+ * /``.  :func:`sample_` takes its Philox
  words there from torch's own kernel where that passes a self-check (:mod:`initrecipe.rng.portable.torch_philox`);
  :func:`reference_sample_` always computes them with integer ops;
* the C kernel ``initrecipe.rng.portable._portable_kernel`` (built at install time when a compiler is present;
  :data:`KERNEL_AVAILABLE`), used automatically for CPU tensors, split across
  ``torch.get_num_threads()`` threads.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import numpy as np
import torch

from initrecipe.rng.portable.binary32 import log_parts, reference_erfinv32, reference_log32, unit24
from initrecipe.rng.portable.kernel_samplers import (
    KERNEL,
    KERNEL_EXT_KIND,
    Piece,
    kernel_fill,
    kernel_fill_ext,
    plan_tasks,
    run_tasks,
)
from initrecipe.rng.portable.philox import philox_words
from initrecipe.rng.portable.reference_samplers import reference_fill, reference_unary
from initrecipe.rng.portable.sampler_params import (
    SAMPLERS,
    TENSOR_SAMPLERS,
    Segment,
    check_draw,
    check_key,
    check_out,
    check_segments,
    checked_tensor_params,
)
from initrecipe.rng.portable.torch_philox import device_words

_kernel = KERNEL  # the C kernel CPU draws use (None: the reference path does everything)

__all__ = [
    "Segment",
    "KERNEL_AVAILABLE",
    "kernel_path",
    "SAMPLERS",
    "sample_",
    "check_params",
    "reference_sample_",
    "erfinv",
    "erfinv_",
    "log",
    "multinomial",
    "TENSOR_SAMPLERS",
]

KERNEL_AVAILABLE: bool = _kernel is not None
"""Whether the C kernel was built; CPU tensors then use it, with the same bits as the reference."""


def check_params(kind: str, params: tuple, dtype: torch.dtype) -> None:
    """Validate a sampler's parameters for an output of ``dtype``; ``ValueError`` says what is wrong."""
    check_draw(kind, params, dtype)


def sample_(
    out: torch.Tensor,
    kind: str,
    key: tuple[int, int],
    params: tuple,
    segments: Sequence[Segment] | None = None,
) -> torch.Tensor:
    """Fill ``out`` in place with draws of sampler ``kind`` from the Philox stream of ``key``.

    Args:
        out: contiguous tensor on any device; floating dtype (``randint`` and ``bernoulli``: also
            integer dtypes, ``bernoulli`` also bool).  Values are computed in float32 (``randint``:
            int64) and cast into ``out`` with round-to-nearest-even.
        kind: one of :data:`SAMPLERS`.
        key: the stream's Philox key (:func:`initrecipe.rng.portable.philox.derive_key`).
        params: ``uniform`` (low, high), ``normal`` (mean, std), ``bernoulli`` (p,), ``randint``
            (low, high) integers with 1 <= high - low <= 2**32, ``exponential`` (lambd,);
            format 1.2: ``cauchy`` (median, sigma), ``log_normal`` (mean, std), ``geometric``
            (p,), ``bernoulli_tensor`` (p,) and ``normal_tensor`` (mean, std) whose tensors hold
            one value per element of ``out`` (in its memory order) or a single value (a number
            is also accepted for ``normal_tensor``).  The format 1.2 samplers clamp their values
            to the output dtype's finite range.
        segments: which draw elements ``out`` holds: ``out``'s elements in memory order are the
            concatenation of the (first, length) runs.  None means ``[(0, out.numel())]``.

    Returns:
        ``out``.  Element ``first + j`` of a segment is computed from stream word ``first + j``
        alone, identically on every device and for every thread count.

    Raises:
        ValueError: unknown kind, invalid parameters or dtype (tensor parameters: a value out of
            range, naming the element), non-contiguous ``out``, or segments that do not add up
            to ``out.numel()``.
    """
    return _fill(out, kind, key, params, segments, use_kernel=True)


def reference_sample_(
    out: torch.Tensor,
    kind: str,
    key: tuple[int, int],
    params: tuple,
    segments: Sequence[Segment] | None = None,
) -> torch.Tensor:
    """:func:`sample_` computed by the eager-torch reference on ``out``'s device, never the C
    kernel nor torch's Philox kernel (same bits, slower; for tests and cross-checks)."""
    return _fill(out, kind, key, params, segments, use_kernel=False)


def _fill(out: torch.Tensor, kind: str, key: tuple[int, int], params: tuple,
          segments: Sequence[Segment] | None, use_kernel: bool) -> torch.Tensor:
    check_out(out)
    draw = check_draw(kind, params, out.dtype)
    k = check_key(key)
    segs = check_segments(segments, out.numel())
    if not segs:
        return out
    tensor_params = checked_tensor_params(draw, out) if kind in TENSOR_SAMPLERS else ()
    if use_kernel and out.device.type == "cpu" and _kernel is not None:
        if kind in KERNEL_EXT_KIND:
            kernel_fill_ext(out, draw, k, segs, tensor_params)
        else:
            kernel_fill(out, draw, k, segs)
    else:  # sample_ takes its words from torch's Philox kernel where it passes its self-check
        reference_fill(out, draw, k, segs, tensor_params, device_words if use_kernel else philox_words)
    return out


def _unary(x: torch.Tensor, name: str, reference: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
    """The C kernel's function ``name`` of ``x`` computed in float32 on CPU (``reference`` elsewhere)."""
    if not isinstance(x, torch.Tensor) or not x.dtype.is_floating_point:
        raise ValueError(f"{name} takes a floating-point tensor, got {getattr(x, 'dtype', type(x).__name__)}")
    with torch.no_grad():
        x32 = x.to(torch.float32).contiguous()
        if x32.device.type == "cpu" and _kernel is not None and x32.numel():
            result = torch.empty_like(x32)
            fn = getattr(_kernel, name)
            src, dst, size = x32.data_ptr(), result.data_ptr(), x32.element_size()
            workers = max(1, torch.get_num_threads())

            def work(task: list[Piece]) -> None:
                for offset, _, n in task:
                    fn(src + offset * size, dst + offset * size, n)

            n = x32.numel()
            run_tasks(plan_tasks([(0, n)], n, workers), work, workers)
        else:
            result = reference_unary(x32, reference)
        return result.to(x.dtype)


def erfinv(x: torch.Tensor) -> torch.Tensor:
    """Portable inverse error function, computed in float32 and returned in ``x``'s dtype.

    Bitwise identical on every device (schema/PORTABLE_RNG.md §8): relative error below 3e-7
    for |x| < 1 (subnormal results aside), finite there; erfinv(+-1) = +-inf; NaN for |x| > 1
    and NaN inputs.
    """
    return _unary(x, "erfinv", reference_erfinv32)


def erfinv_(x: torch.Tensor) -> torch.Tensor:
    """In-place :func:`erfinv`; returns ``x``."""
    with torch.no_grad():
        return x.copy_(erfinv(x))


def log(x: torch.Tensor) -> torch.Tensor:
    """Portable natural logarithm, computed in float32 and returned in ``x``'s dtype.

    Error at most 1.1 ulp of float32 for positive finite inputs (subnormals included);
    log(+-0) = -inf, log(+inf) = +inf, NaN for negative and NaN inputs.  Bitwise identical on
    every device (schema/PORTABLE_RNG.md §5.2).
    """
    return _unary(x, "log", reference_log32)


def multinomial(probs: torch.Tensor, num_samples: int, replacement: bool, key: tuple[int, int]) -> torch.Tensor:
    """Portable ``torch.multinomial`` (schema/PORTABLE_RNG.md §6.11): int64 category indices of
    shape ``probs.shape[:-1] + (num_samples,)``, on ``probs``'s device, the same bits everywhere.

    With replacement, sample ``j`` of row ``r`` is element ``r * num_samples + j`` of the stream:
    ``u = W * 2**-32`` (binary64) scaled by the row's total, and the first category whose running
    sum (binary64, left to right) exceeds it.  Without replacement, category ``k`` of row ``r``
    gets the exponential(1) value ``E`` of element ``r * K + k`` and the row keeps the
    ``num_samples`` categories with the smallest ``E / weight`` (an exponential race: the order in
    which weighted sampling without replacement picks them), ties to the lower index.

    Raises:
        ValueError: ``probs`` not 1-D or 2-D floating, a weight negative or not finite, a row sum
            zero (or below 2**-1000) or infinite, ``num_samples`` < 1, or more samples than
            positive weights without replacement.
    """
    k = check_key(key)
    if not isinstance(probs, torch.Tensor) or probs.dim() not in (1, 2) or not probs.dtype.is_floating_point:
        raise ValueError("multinomial: probabilities must be a 1-D or 2-D floating-point tensor")
    if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 1:
        raise ValueError(f"multinomial: num_samples must be a positive integer, got {num_samples!r}")
    device = probs.device
    rows = probs.detach().reshape(-1, probs.shape[-1]).to(device="cpu", dtype=torch.float64)
    count, categories = rows.shape
    if categories == 0:
        raise ValueError("multinomial: cannot sample from an empty distribution")
    if not replacement and num_samples > categories:
        raise ValueError(f"multinomial: cannot draw {num_samples} samples without replacement from {categories} categories")
    weights = rows.numpy()
    if not np.all(np.isfinite(weights)) or np.any(weights < 0):
        raise ValueError("multinomial: every probability must be finite and >= 0")
    with torch.no_grad():
        if replacement:
            cumulative = np.add.accumulate(weights, axis=1)  # binary64, left to right
            totals = cumulative[:, -1]
            if not np.all(np.isfinite(totals)) or np.any(totals < 2.0**-1000):
                raise ValueError("multinomial: every row must have a positive, finite sum of probabilities")
            words = device_words(k, 0, count * num_samples, device).reshape(count, num_samples)
            u = torch.mul(words.to(torch.float64), 2.0**-32)
            v = torch.mul(u, torch.from_numpy(totals).to(device).unsqueeze(1))
            result = torch.searchsorted(torch.from_numpy(cumulative).to(device), v, right=True)
        else:
            positive = (weights > 0).sum(axis=1)
            if np.any(positive < num_samples):
                raise ValueError(
                    f"multinomial: a row has fewer than {num_samples} categories with positive probability "
                    "(needed without replacement)"
                )
            words = device_words(k, 0, count * categories, device)
            e = torch.mul(torch.rsub(log_parts(torch.rsub(unit24(words), 1.0), None), 0.0), 1.0)
            e = e.reshape(count, categories).to(torch.float64)
            w = torch.from_numpy(weights).to(device)
            race = torch.where(torch.gt(w, 0.0), torch.div(e, torch.where(torch.gt(w, 0.0), w, 1.0)), math.inf)
            result = torch.sort(race, dim=1, stable=True).indices[:, :num_samples]
    return result.reshape(*probs.shape[:-1], num_samples).to(torch.int64)


def kernel_path() -> str:
    """The code path CPU draws take: ``"avx512f"``, ``"avx2"`` or ``"generic"`` (the C kernel's
    instruction-set variant: the best the CPU runs, or the one ``INITRECIPE_KERNEL_PATH`` forces),
    or ``"reference"`` when the kernel is not built.  Every path computes the same bits."""
    return _kernel.variant() if _kernel is not None else "reference"
