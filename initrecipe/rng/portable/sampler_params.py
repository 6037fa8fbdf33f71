"""Checking a portable draw's arguments: the sampler kind and its parameters (as binary32 values), the
stream key, the segments and the output tensor, and the values of tensor parameters."""

from __future__ import annotations

import math
import struct
from typing import NamedTuple, Sequence

import torch

from initrecipe.rng.portable.binary32 import (
    CAUCHY_MAX_SCALE,
    EXPONENTIAL_MAX_SCALE,
    GEOMETRIC_MIN_P,
    LOG1M_SPLIT,
    LOG_NORMAL_MAX_EXPONENT,
    NORMAL_MAX_Z,
    SATURATE,
    f32,
    log1p_steps,
    log_parts,
)

__all__ = ["Segment", "SAMPLERS", "TENSOR_SAMPLERS", "M32", "Draw", "check_draw", "check_key", "check_segments",
           "check_out", "checked_tensor_params"]

Segment = tuple[int, int]
"""(first global element index, length): a run of a draw's elements, stored contiguously."""

SAMPLERS: frozenset[str] = frozenset({
    "uniform", "normal", "bernoulli", "randint", "exponential",  # format 1.1
    "cauchy", "log_normal", "geometric", "bernoulli_tensor", "normal_tensor",  # format 1.2
})
"""The sampler kinds :func:`sample_` accepts."""

TENSOR_SAMPLERS: frozenset[str] = frozenset({"bernoulli_tensor", "normal_tensor"})
"""Sampler kinds whose parameters are tensors, one value per element of the output."""

_ARITY = {"uniform": 2, "normal": 2, "bernoulli": 1, "randint": 2, "exponential": 1, "cauchy": 2,
          "log_normal": 2, "geometric": 1, "bernoulli_tensor": 1, "normal_tensor": 2}

M32 = 0xFFFFFFFF


class Draw(NamedTuple):
    """A validated draw: sampler kind and its binary32 (or integer) parameters."""

    kind: str
    a: float | int  # uniform: low32; normal: mean32; bernoulli: p32; exponential: 1/lambda; randint: low
    b: float | int  # uniform: range32; normal: std32; randint: high - low; otherwise 0.0
    c: float = 0.0  # format 1.2 samplers: the largest finite value of the output dtype (float32)
    tensors: tuple = ()  # bernoulli_tensor: (p,); normal_tensor: (mean, std) (numbers or tensors)


def _number(kind: str, name: str, value: object) -> float:
    """A finite real parameter as a float."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{kind}: parameter {name} must be a real number, got {value!r}")
    try:
        result = float(value)
    except OverflowError:
        raise ValueError(f"{kind}: parameter {name} is out of range, got {value!r}") from None
    if not math.isfinite(result):
        raise ValueError(f"{kind}: parameter {name} must be finite, got {value!r}")
    return result


def check_draw(kind: str, params: tuple, dtype: torch.dtype) -> Draw:
    """The :class:`Draw` of sampler ``kind`` with ``params`` for an output of ``dtype``;
    ``ValueError`` says what is wrong."""
    if not isinstance(kind, str) or kind not in SAMPLERS:
        raise ValueError(f"unknown sampler kind {kind!r}; expected one of {sorted(SAMPLERS)}")
    if not isinstance(params, (tuple, list)):
        raise ValueError(f"{kind}: params must be a tuple, got {type(params).__name__}")
    expected = _ARITY[kind]
    if len(params) != expected:
        raise ValueError(f"{kind} takes {expected} parameter(s), got {len(params)}: {tuple(params)!r}")
    if dtype.is_complex or not (dtype.is_floating_point or kind in ("randint", "bernoulli", "bernoulli_tensor")):
        raise ValueError(f"{kind} cannot fill a {dtype} tensor")
    if not dtype.is_floating_point and dtype == torch.bool and kind == "randint":
        raise ValueError("randint cannot fill a torch.bool tensor")
    if kind == "randint":
        low, high = params
        if any(isinstance(v, bool) or not isinstance(v, int) for v in (low, high)):
            raise ValueError(f"randint bounds must be integers, got {low!r} and {high!r}")
        if not 1 <= high - low <= 1 << 32:
            raise ValueError(f"randint needs 1 <= high - low <= 2**32, got [{low}, {high})")
        if low < -(1 << 63) or high > 1 << 63:
            raise ValueError(f"randint values must fit int64: [{low}, {high}) is outside [-2**63, 2**63)")
        if not dtype.is_floating_point:
            info = torch.iinfo(dtype)
            if low < info.min or high - 1 > info.max:
                raise ValueError(f"randint values [{low}, {high}) do not fit {dtype}")
        return Draw(kind, int(low), int(high - low))
    if kind == "uniform":
        low = _number(kind, "low", params[0])
        high = _number(kind, "high", params[1])
        if not low <= high:
            raise ValueError(f"uniform needs low <= high, got [{low}, {high})")
        return Draw(kind, f32(low), f32(high - low))
    if kind == "normal":
        mean = _number(kind, "mean", params[0])
        std = _number(kind, "std", params[1])
        if std < 0:
            raise ValueError(f"normal needs std >= 0, got {std}")
        return Draw(kind, f32(mean), f32(std))
    if kind == "bernoulli":
        p = _number(kind, "p", params[0])
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"bernoulli needs 0 <= p <= 1, got {p}")
        return Draw(kind, f32(p), 0.0)
    if kind == "exponential":
        lambd = _number(kind, "lambd", params[0])
        if not lambd >= 1.0 / EXPONENTIAL_MAX_SCALE:
            raise ValueError(f"exponential needs lambd >= 2**-122 (and > 0), got {lambd}")
        return Draw(kind, struct.unpack("<f", struct.pack("<f", 1.0 / lambd))[0], 0.0)
    return _check_new_params(kind, params, dtype)


def _check_new_params(kind: str, params: tuple, dtype: torch.dtype) -> Draw:
    """The format 1.2 samplers' parameters (schema/PORTABLE_RNG.md §6.6-6.10)."""
    saturate = SATURATE.get(dtype, SATURATE[torch.float32])
    if kind == "cauchy":
        median = _number(kind, "median", params[0])
        sigma = _number(kind, "sigma", params[1])
        if not 0.0 < sigma <= CAUCHY_MAX_SCALE:
            raise ValueError(f"cauchy needs 0 < sigma <= 2**100, got {sigma}")
        return Draw(kind, f32(median), f32(sigma), saturate)
    if kind == "log_normal":
        mean = _number(kind, "mean", params[0])
        std = _number(kind, "std", params[1])
        if not std > 0.0:
            raise ValueError(f"log_normal needs std > 0, got {std}")
        if not mean + NORMAL_MAX_Z * std <= LOG_NORMAL_MAX_EXPONENT:
            raise ValueError(
                f"log_normal needs mean + 6.4 * std <= 88 (so that exp stays finite in float32), got mean {mean}, std {std}"
            )
        return Draw(kind, f32(mean), f32(std), saturate)
    if kind == "geometric":
        p = _number(kind, "p", params[0])
        if not GEOMETRIC_MIN_P <= p < 1.0 or f32(p) >= 1.0:
            raise ValueError(f"geometric needs 2**-100 <= p < 1 (and p < 1 in float32), got {p}")
        return Draw(kind, log1m(f32(p)), 0.0, saturate)
    if kind == "bernoulli_tensor":
        p = params[0]
        _check_tensor_param(kind, "p", p, allow_number=False)
        return Draw(kind, 0.0, 0.0, 0.0, (p,))
    mean, std = params
    _check_tensor_param(kind, "mean", mean, allow_number=True)
    _check_tensor_param(kind, "std", std, allow_number=True)
    return Draw(kind, 0.0, 0.0, saturate, (mean, std))


def _check_tensor_param(kind: str, name: str, value: object, allow_number: bool) -> None:
    """A tensor parameter must be a floating tensor (its values are checked when drawing).  While a
    recipe is recorded or checked it may be a placeholder (not a tensor, not a number): skipped."""
    if isinstance(value, torch.Tensor):
        if not value.dtype.is_floating_point:
            raise ValueError(f"{kind}: parameter {name} must be a floating-point tensor, got {value.dtype}")
    elif allow_number and isinstance(value, (int, float)) and not isinstance(value, bool):
        _number(kind, name, value)
    elif isinstance(value, (bool, int, float, str, bytes, type(None))):
        raise ValueError(f"{kind}: parameter {name} must be a tensor, got {value!r}")


def log1m(p32: float) -> float:
    """log(1 - p32) in float32 (schema §6.8), for 0 < p32 < 1: from f = -p32 through plog's
    log1p steps when p32 <= 0.2929, else plog(1 - p32).  Computed with the reference ops on CPU."""
    p = torch.tensor([p32], dtype=torch.float32)
    if p32 <= LOG1M_SPLIT:
        value = log1p_steps(torch.neg(p))
    else:
        value = log_parts(torch.rsub(p, 1.0), None)
    return float(value[0])


def check_key(key: tuple[int, int]) -> tuple[int, int]:
    """``key`` as a pair of 32-bit unsigned integers (``ValueError`` otherwise)."""
    if (
        not isinstance(key, (tuple, list))
        or len(key) != 2
        or not all(isinstance(k, int) and not isinstance(k, bool) and 0 <= k <= M32 for k in key)
    ):
        raise ValueError(f"key must be a pair of 32-bit unsigned integers, got {key!r}")
    return int(key[0]), int(key[1])


def check_segments(segments: Sequence[Segment] | None, numel: int) -> list[Segment]:
    """The non-empty segments, which must cover exactly ``numel`` elements (None: all of them from 0)."""
    if segments is None:
        return [(0, numel)] if numel else []
    result: list[Segment] = []
    total = 0
    for segment in segments:
        try:
            first, length = segment
        except (TypeError, ValueError):
            raise ValueError(f"a segment is a (first, length) pair, got {segment!r}") from None
        if any(isinstance(v, bool) or not isinstance(v, int) for v in (first, length)):
            raise ValueError(f"segment bounds must be integers, got {segment!r}")
        if first < 0 or length < 0 or first + length > 1 << 64:
            raise ValueError(f"segment {segment!r} must lie within element indices [0, 2**64)")
        total += length
        if length:
            result.append((int(first), int(length)))
    if total != numel:
        raise ValueError(f"segments cover {total} elements but the output tensor has {numel}")
    return result


def check_out(out: torch.Tensor) -> None:
    """``out`` must be a contiguous tensor."""
    if not isinstance(out, torch.Tensor):
        raise ValueError(f"out must be a torch.Tensor, got {type(out).__name__}")
    if not out.is_contiguous():
        raise ValueError("out must be contiguous (its elements in memory order are the draw's elements)")


def checked_tensor_params(draw: Draw, out: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """The tensor parameters of a bernoulli_tensor or normal_tensor draw as flat float32 tensors
    on ``out``'s device, one value per element of ``out`` (in its memory order), checked."""
    n = out.numel()
    values: list[torch.Tensor] = []
    for name, value in zip(("p",) if draw.kind == "bernoulli_tensor" else ("mean", "std"), draw.tensors):
        if isinstance(value, torch.Tensor):
            if value.numel() not in (1, n):
                raise ValueError(
                    f"{draw.kind}: parameter {name} has {value.numel()} elements, the output {n} (broadcast it first)"
                )
            t = value.detach().to(device=out.device, dtype=torch.float32).reshape(-1).expand(n).contiguous()
        else:
            t = torch.full((n,), f32(float(value)), dtype=torch.float32, device=out.device)
        values.append(t)
    if out.device.type == "meta":  # no values to check (shape checks and tests of the device path)
        return tuple(values)
    largest = SATURATE[torch.float32]
    with torch.no_grad():
        if draw.kind == "bernoulli_tensor":
            _require_within(values[0], 0.0, 1.0, "bernoulli: every probability p must be in [0, 1]")
        else:
            _require_within(values[0], -largest, largest, "normal: every mean must be finite in float32")
            _require_within(values[1], 0.0, largest, "normal: every std must be finite in float32 and >= 0")
    return tuple(values)


def _require_within(values: torch.Tensor, low: float, high: float, message: str) -> None:
    """ValueError naming the first element of ``values`` outside [low, high] (NaN included)."""
    smallest, largest = torch.aminmax(values)  # one pass; NaN propagates into both
    if float(smallest) >= low and float(largest) <= high:
        return
    bad = torch.logical_not(torch.logical_and(torch.ge(values, low), torch.le(values, high)))
    index = int(torch.nonzero(bad)[0, 0])
    raise ValueError(f"{message}; element {index} is {float(values[index])!r}")

