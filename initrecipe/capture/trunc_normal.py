"""``nn.init.trunc_normal_`` in ``rng="portable"`` recordings: an inverse-CDF transform instead of
torch's rejection sampler, whose draw count portable recording cannot know."""

from __future__ import annotations

import contextlib
import math
import struct
from typing import Iterator

import torch
import torch.nn.init as init_module
from torch._subclasses.fake_tensor import FakeTensor

from initrecipe.capture.program_builder import ProgramBuilder

__all__ = ["inner_bound", "portable_trunc_normal"]


@contextlib.contextmanager
def portable_trunc_normal(builder: ProgramBuilder) -> Iterator[None]:
    """In ``rng="portable"`` recordings, make ``nn.init.trunc_normal_`` an inverse-CDF transform.

    torch's ``trunc_normal_`` is a rejection sampler: how many draws it makes depends on the values
    drawn, which portable recording cannot know (keys depend on names known only at the end).  For
    unpinned draws it is recorded instead as ``uniform_(2Φ(α)-1, 2Φ(β)-1)``, ``clamp_`` into the
    open interval (-1, 1), ``erfinv_``, ``mul_(std·√2)``, ``add_(mean)``, ``clamp_`` into the
    tensor dtype's values within [a, b], computed in float32 (float64 for float64 tensors) and
    copied into the tensor, rounded once: exactly truncated-normal in distribution, elementwise,
    with the portable ``erfinv``, never ±inf and never a far bound (docs/PORTABLE.md).  Recipes
    recorded before this (the chain in the tensor's own dtype, without the open-interval clamp)
    keep replaying to their own bits.  Pinned draws keep torch's own sampler.
    """
    original = init_module._no_grad_trunc_normal_

    def trunc_normal(tensor: torch.Tensor, mean: float, std: float, a: float, b: float,
                     generator: torch.Generator | None = None) -> torch.Tensor:
        own = generator is None or generator is torch.default_generator
        if not (isinstance(tensor, FakeTensor) and own and not builder.pinned_now(torch.default_generator)):
            return original(tensor, mean, std, a, b, generator)

        def norm_cdf(x: float) -> float:
            return (1.0 + math.erf(x / math.sqrt(2.0))) / 2.0

        with torch.no_grad():
            low, high = norm_cdf((a - mean) / std), norm_cdf((b - mean) / std)
            wide = torch.float64 if tensor.dtype == torch.float64 else torch.float32
            work = tensor if tensor.dtype == wide else torch.empty(tensor.shape, dtype=wide, device=tensor.device)
            work.uniform_(2 * low - 1, 2 * high - 1)
            work.clamp_(min=-_BELOW_ONE, max=_BELOW_ONE)
            work.erfinv_()
            work.mul_(std * math.sqrt(2.0))
            work.add_(mean)
            work.clamp_(min=inner_bound(a, tensor.dtype, up=True), max=inner_bound(b, tensor.dtype, up=False))
            if work is not tensor:
                tensor.copy_(work)
        return tensor

    init_module._no_grad_trunc_normal_ = trunc_normal
    try:
        yield
    finally:
        init_module._no_grad_trunc_normal_ = original


_BELOW_ONE = 1.0 - 2.0**-24  # the largest float32 below 1: erfinv of it is finite (3.93)

# Floating dtypes as (struct format of the value, bits, bits dropped from a float32): bfloat16 is
# the top half of a float32.
_FLOAT_LAYOUT = {torch.float32: ("<f", 32, 0), torch.float16: ("<e", 16, 0), torch.bfloat16: ("<f", 32, 16)}


def inner_bound(value: float, dtype: torch.dtype, up: bool) -> float:
    """The value of ``dtype`` nearest to ``value`` on its inner side: the smallest one >= ``value``
    (``up``) or the largest one <= it; a bound beyond the dtype's range gives its largest finite
    value (a ``float`` that ``dtype`` holds exactly; infinite and NaN bounds are returned as given)."""
    if not math.isfinite(value) or dtype == torch.float64 or dtype not in _FLOAT_LAYOUT:
        return value
    fmt, width, drop = _FLOAT_LAYOUT[dtype]
    sign_bit = 1 << (width - drop - 1)

    def to_ordered(x: float) -> int:
        bits = struct.unpack("<I" if width == 32 else "<H", struct.pack(fmt, x))[0] >> drop
        return -(bits & (sign_bit - 1)) if bits & sign_bit else bits

    def from_ordered(o: int) -> float:
        bits = (-o | sign_bit) if o < 0 else o
        return struct.unpack(fmt, struct.pack("<I" if width == 32 else "<H", bits << drop))[0]

    finite_max = from_ordered((sign_bit - 1) - (1 << (23 - drop if width == 32 else 10)))
    if value >= finite_max:
        return finite_max
    if value <= -finite_max:
        return -finite_max
    o = to_ordered(value)  # a neighbour (rounded, or for bfloat16 truncated); then step to the inner side
    step = 1 if up else -1
    while (from_ordered(o) < value) if up else (from_ordered(o) > value):
        o += step
    while (from_ordered(o - step) >= value) if up else (from_ordered(o - step) <= value):
        o -= step
    return from_ordered(o)
