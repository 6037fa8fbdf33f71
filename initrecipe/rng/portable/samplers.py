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

import concurrent.futures
import math
import os
import struct
import threading
from typing import Callable, NamedTuple, Sequence

import torch

from initrecipe.errors import SettingError
from initrecipe.rng.portable.philox import philox_words
from initrecipe.rng.portable.torch_philox import device_words

try:
    from initrecipe.rng.portable import _portable_kernel as _kernel
except ImportError:  # built without a C compiler: the reference path does everything
    _kernel = None
except ValueError as exc:  # INITRECIPE_KERNEL_PATH names a path this CPU or build cannot run
    raise SettingError(str(exc)) from None

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

Segment = tuple[int, int]
"""(first global element index, length): a run of a draw's elements, stored contiguously."""

KERNEL_AVAILABLE: bool = _kernel is not None
"""Whether the C kernel was built; CPU tensors then use it, with the same bits as the reference."""

SAMPLERS: frozenset[str] = frozenset({
    "uniform", "normal", "bernoulli", "randint", "exponential",  # format 1.1
    "cauchy", "log_normal", "geometric", "bernoulli_tensor", "normal_tensor",  # format 1.2
})
"""The sampler kinds :func:`sample_` accepts."""

TENSOR_SAMPLERS: frozenset[str] = frozenset({"bernoulli_tensor", "normal_tensor"})
"""Sampler kinds whose parameters are tensors, one value per element of the output."""

_ARITY = {"uniform": 2, "normal": 2, "bernoulli": 1, "randint": 2, "exponential": 1, "cauchy": 2,
          "log_normal": 2, "geometric": 1, "bernoulli_tensor": 1, "normal_tensor": 2}

_M32 = 0xFFFFFFFF
_REF_CHUNK = 1 << 20  # elements per reference-path step (bounds temporary memory)
_KERNEL_MIN_CHUNK = 1 << 16
_KERNEL_MAX_CHUNK = 1 << 22
_CAST_BLOCK = 1 << 15  # torch casts below its parallel grain size run on the calling thread


def _fx(text: str) -> float:
    """A binary32 constant written in hexadecimal (checked to be exactly representable)."""
    value = float.fromhex(text)
    if struct.unpack("<f", struct.pack("<f", value))[0] != value:
        raise AssertionError(f"constant {text} is not a binary32 value")
    return value


# Constants of schema/PORTABLE_RNG.md, all exact binary32 values.
TWO_M24 = _fx("0x1p-24")
TWO_M32 = _fx("0x1p-32")
TWO_P23 = _fx("0x1p+23")
TWO_M126 = _fx("0x1p-126")
LOG_C = (_fx("0x1.55555cp-1"), _fx("0x1.997c26p-2"), _fx("0x1.2ee78ap-2"))
LN2 = _fx("0x1.62e430p-1")
ERFINV_CENTRAL = tuple(
    _fx(c)
    for c in (
        "0x1.805c5ep+0", "0x1.f91e8ap-3", "-0x1.11c4ecp-8", "-0x1.486616p-10", "0x1.c9e6c8p-13",
        "-0x1.4d15a4p-18", "-0x1.d0c1a0p-19", "0x1.f48beap-22", "0x1.8f2230p-26", "-0x1.2e0eb6p-27",
    )
)
ERFINV_TAIL = tuple(
    _fx(c)
    for c in (
        "0x1.aaf132p+1", "0x1.01e2f2p+0", "0x1.ad60eep-9", "-0x1.0f326ap-9", "0x1.2033b8p-10",
        "-0x1.57d9a0p-11", "0x1.b5a60ap-12", "-0x1.1685f0p-12", "0x1.83f3c0p-14", "0x1.abb418p-16",
        "-0x1.6623f2p-16",
    )
)
NORMAL_CENTRAL = tuple(
    _fx(c)
    for c in (
        "0x1.25e47ep+1", "0x1.5deb84p-2", "-0x1.09f950p-7", "-0x1.36b13ap-10",
        "0x1.22989ep-12", "-0x1.1ba22cp-16", "-0x1.757b26p-19", "0x1.ff5cf0p-22",
    )
)
NORMAL_TAIL = tuple(
    _fx(c)
    for c in (
        "0x1.2de4c8p+2", "0x1.6cb4c0p+0", "0x1.302362p-8", "-0x1.7c0998p-9", "0x1.8bc6bcp-10",
        "-0x1.08ea90p-10", "0x1.67e03cp-11", "-0x1.265ddep-12", "0x1.5e165ap-15",
    )
)
ERFINV_SPLIT = _fx("0x1.4p+2")  # 5: w >= 5 (or NaN) takes erfinv's tail polynomial
ERFINV_CENTER = _fx("0x1.4p+1")  # 2.5: erfinv's central polynomial is in w - 2.5
NORMAL_SPLIT = _fx("0x1.8p+2")  # 6: w >= 6 takes the normal's tail polynomial
NORMAL_CENTER = _fx("0x1.8p+1")  # 3: the normal's central polynomial is in w - 3
TAIL_CENTER = _fx("0x1.cp+1")  # 3.5: both tail polynomials are in psqrt(w) - 3.5
EXPONENTIAL_MAX_SCALE = 2.0**122  # 1/lambda above this could overflow float32
# Format 1.2 samplers (schema/PORTABLE_RNG.md §6.6-6.10).
TAN_PI = tuple(  # tan(pi*r)/r as a polynomial in r*r, for 0 < r <= 1/4
    _fx(c)
    for c in ("0x1.921fb6p+1", "0x1.4abb28p+3", "0x1.4694e0p+5", "0x1.424292p+7", "0x1.6eaa36p+9",
              "0x1.a9f8e0p+9", "0x1.aeefd6p+14")
)
EXP_C = tuple(  # e**r for |r| <= 0.35: Taylor coefficients 1/k!
    _fx(c)
    for c in ("0x1p+0", "0x1p+0", "0x1p-1", "0x1.555556p-3", "0x1.555556p-5", "0x1.111112p-7",
              "0x1.6c16c2p-10", "0x1.a01a02p-13")
)
INV_LN2 = _fx("0x1.715476p+0")
LN2_HI = _fx("0x1.62ep-1")  # 13 significant bits: k * LN2_HI is exact for |k| < 2**11
LN2_LO = _fx("0x1.0bfbe8p-15")
EXP_LOW = _fx("-0x1.ap+6")  # -104: e**-104 rounds to +0 in float32, so lower arguments are clamped here
LOG1M_SPLIT = _fx("0x1.2bec34p-2")  # about 1 - sqrt(1/2): log(1 - p) from f = -p at or below it
CAUCHY_MAX_SCALE = 2.0**100  # |tan| <= 1.07e7 < 2**24: sigma * 2**24 stays finite in float32
GEOMETRIC_MIN_P = 2.0**-100  # l / log(1 - p) <= 16.7 * 2**100 stays finite in float32
LOG_NORMAL_MAX_EXPONENT = 88.0  # mean + 6.4 * std at most this: e**x stays finite in float32
NORMAL_MAX_Z = 6.4  # above the largest |z| of the normal sampler (6.3380)
_SATURATE = {  # largest finite value of each floating dtype, as a float32 value
    torch.float32: _fx("0x1.fffffep+127"),
    torch.float64: _fx("0x1.fffffep+127"),
    torch.bfloat16: _fx("0x1.fep+127"),
    torch.float16: _fx("0x1.ffcp+15"),
}


def f32(value: float) -> float:
    """``value`` rounded to the nearest binary32 (ties to even), as a Python float.

    ValueError if the result is not finite (overflow, inf or NaN).
    """
    try:
        result: float = struct.unpack("<f", struct.pack("<f", value))[0]
    except OverflowError:
        raise ValueError(f"{value!r} is out of the float32 range") from None
    if not math.isfinite(result):
        raise ValueError(f"{value!r} is not a finite float32 value")
    return result


# ---------------------------------------------------------------------------------------------
# Parameters
# ---------------------------------------------------------------------------------------------


class _Draw(NamedTuple):
    """A validated draw: sampler kind and its binary32 (or integer) parameters."""

    kind: str
    a: float | int  # uniform: low32; normal: mean32; bernoulli: p32; exponential: 1/lambda; randint: low
    b: float | int  # uniform: range32; normal: std32; randint: high - low; otherwise 0.0
    c: float = 0.0  # format 1.2 samplers: the largest finite value of the output dtype (float32)
    tensors: tuple = ()  # bernoulli_tensor: (p,); normal_tensor: (mean, std) (numbers or tensors)


def _number(kind: str, name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{kind}: parameter {name} must be a real number, got {value!r}")
    try:
        result = float(value)
    except OverflowError:
        raise ValueError(f"{kind}: parameter {name} is out of range, got {value!r}") from None
    if not math.isfinite(result):
        raise ValueError(f"{kind}: parameter {name} must be finite, got {value!r}")
    return result


def _check_params(kind: str, params: tuple, dtype: torch.dtype) -> _Draw:
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
        return _Draw(kind, int(low), int(high - low))
    if kind == "uniform":
        low = _number(kind, "low", params[0])
        high = _number(kind, "high", params[1])
        if not low <= high:
            raise ValueError(f"uniform needs low <= high, got [{low}, {high})")
        return _Draw(kind, f32(low), f32(high - low))
    if kind == "normal":
        mean = _number(kind, "mean", params[0])
        std = _number(kind, "std", params[1])
        if std < 0:
            raise ValueError(f"normal needs std >= 0, got {std}")
        return _Draw(kind, f32(mean), f32(std))
    if kind == "bernoulli":
        p = _number(kind, "p", params[0])
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"bernoulli needs 0 <= p <= 1, got {p}")
        return _Draw(kind, f32(p), 0.0)
    if kind == "exponential":
        lambd = _number(kind, "lambd", params[0])
        if not lambd >= 1.0 / EXPONENTIAL_MAX_SCALE:
            raise ValueError(f"exponential needs lambd >= 2**-122 (and > 0), got {lambd}")
        return _Draw(kind, struct.unpack("<f", struct.pack("<f", 1.0 / lambd))[0], 0.0)
    return _check_new_params(kind, params, dtype)


def _check_new_params(kind: str, params: tuple, dtype: torch.dtype) -> _Draw:
    """The format 1.2 samplers' parameters (schema/PORTABLE_RNG.md §6.6-6.10)."""
    saturate = _SATURATE.get(dtype, _SATURATE[torch.float32])
    if kind == "cauchy":
        median = _number(kind, "median", params[0])
        sigma = _number(kind, "sigma", params[1])
        if not 0.0 < sigma <= CAUCHY_MAX_SCALE:
            raise ValueError(f"cauchy needs 0 < sigma <= 2**100, got {sigma}")
        return _Draw(kind, f32(median), f32(sigma), saturate)
    if kind == "log_normal":
        mean = _number(kind, "mean", params[0])
        std = _number(kind, "std", params[1])
        if not std > 0.0:
            raise ValueError(f"log_normal needs std > 0, got {std}")
        if not mean + NORMAL_MAX_Z * std <= LOG_NORMAL_MAX_EXPONENT:
            raise ValueError(
                f"log_normal needs mean + 6.4 * std <= 88 (so that exp stays finite in float32), got mean {mean}, std {std}"
            )
        return _Draw(kind, f32(mean), f32(std), saturate)
    if kind == "geometric":
        p = _number(kind, "p", params[0])
        if not GEOMETRIC_MIN_P <= p < 1.0 or f32(p) >= 1.0:
            raise ValueError(f"geometric needs 2**-100 <= p < 1 (and p < 1 in float32), got {p}")
        return _Draw(kind, _log1m(f32(p)), 0.0, saturate)
    if kind == "bernoulli_tensor":
        p = params[0]
        _check_tensor_param(kind, "p", p, allow_number=False)
        return _Draw(kind, 0.0, 0.0, 0.0, (p,))
    mean, std = params
    _check_tensor_param(kind, "mean", mean, allow_number=True)
    _check_tensor_param(kind, "std", std, allow_number=True)
    return _Draw(kind, 0.0, 0.0, saturate, (mean, std))


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


def _log1m(p32: float) -> float:
    """log(1 - p32) in float32 (schema §6.8), for 0 < p32 < 1: from f = -p32 through plog's
    log1p steps when p32 <= 0.2929, else plog(1 - p32).  Computed with the reference ops on CPU."""
    p = torch.tensor([p32], dtype=torch.float32)
    if p32 <= LOG1M_SPLIT:
        value = _log1p_steps(torch.neg(p))
    else:
        value = _log_parts(torch.rsub(p, 1.0), None)
    return float(value[0])


def check_params(kind: str, params: tuple, dtype: torch.dtype) -> None:
    """Validate a sampler's parameters for an output of ``dtype``; ``ValueError`` says what is wrong."""
    _check_params(kind, params, dtype)


def _check_key(key: tuple[int, int]) -> tuple[int, int]:
    if (
        not isinstance(key, (tuple, list))
        or len(key) != 2
        or not all(isinstance(k, int) and not isinstance(k, bool) and 0 <= k <= _M32 for k in key)
    ):
        raise ValueError(f"key must be a pair of 32-bit unsigned integers, got {key!r}")
    return int(key[0]), int(key[1])


def _check_segments(segments: Sequence[Segment] | None, numel: int) -> list[Segment]:
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


def _check_out(out: torch.Tensor) -> None:
    if not isinstance(out, torch.Tensor):
        raise ValueError(f"out must be a torch.Tensor, got {type(out).__name__}")
    if not out.is_contiguous():
        raise ValueError("out must be contiguous (its elements in memory order are the draw's elements)")


# ---------------------------------------------------------------------------------------------
# Reference transforms (eager torch; one IEEE operation per call)
# ---------------------------------------------------------------------------------------------


def _unit24(words: torch.Tensor) -> torch.Tensor:
    """u = (w >> 8) * 2**-24 as float32 (exact)."""
    return torch.mul(torch.bitwise_right_shift(words, 8).to(torch.float32), TWO_M24)


def _horner(coefficients: tuple[float, ...], t: torch.Tensor) -> torch.Tensor:
    p = torch.full_like(t, coefficients[-1])
    for c in coefficients[-2::-1]:
        p = torch.add(torch.mul(p, t), c)
    return p


def _log_parts(y: torch.Tensor, exponent_adjust: torch.Tensor | None) -> torch.Tensor:
    """log(y) for positive finite normal float32 ``y`` (with ``y`` scaled by 2**23 when
    ``exponent_adjust`` holds 23 for that element)."""
    ix = torch.add(y.view(torch.int32), 0x3F800000 - 0x3F3504F3)
    e = torch.sub(torch.bitwise_right_shift(ix, 23), 127)
    if exponent_adjust is not None:
        e = torch.sub(e, exponent_adjust)
    m = torch.add(torch.bitwise_and(ix, 0x007FFFFF), 0x3F3504F3).view(torch.float32)
    f = torch.sub(m, 1.0)
    return torch.add(_log1p_steps(f), torch.mul(e.to(torch.float32), LN2))


def _log1p_steps(f: torch.Tensor) -> torch.Tensor:
    """plog's log(1 + f) for float32 ``f`` in [sqrt(1/2) - 1, sqrt(2) - 1] (schema §5.2, from d)."""
    d = torch.add(f, 2.0)
    s = torch.div(f, d)
    z = torch.mul(s, s)
    r = torch.full_like(z, LOG_C[2])
    for c in LOG_C[1::-1]:
        r = torch.add(torch.mul(r, z), c)
    r = torch.mul(r, z)
    return torch.sub(f, torch.mul(s, torch.sub(f, r)))


def _psqrt(w: torch.Tensor) -> torch.Tensor:
    """The portable square root (torch.sqrt is not correctly rounded on every CPU build): a guess
    from the halved bit pattern, then three Heron steps y = (y + w/y) * 0.5.  Within 1 ulp for
    positive normal ``w``; unspecified otherwise."""
    y = torch.add(torch.bitwise_right_shift(w.view(torch.int32), 1), 0x1FC00000).view(torch.float32)
    for _ in range(3):
        y = torch.mul(torch.add(y, torch.div(w, y)), 0.5)
    return y


def _erfinv_core(
    x: torch.Tensor,
    one_minus: torch.Tensor,
    one_plus: torch.Tensor,
    central: tuple[float, ...],
    center: float,
    tail: tuple[float, ...],
    split: float,
) -> torch.Tensor:
    """x * P(w) with w = 0 - log((1-x)(1+x)): P is the central polynomial in w - center where
    w < split, else the tail polynomial in psqrt(w) - 3.5.  The product must be a positive normal
    float wherever the result is used."""
    y = torch.mul(one_minus, one_plus)
    w = torch.rsub(_log_parts(y, None), 0.0)
    pc = _horner(central, torch.sub(w, center))
    pt = _horner(tail, torch.sub(_psqrt(w), TAIL_CENTER))
    p = torch.where(torch.lt(w, split), pc, pt)
    return torch.mul(p, x)


def _reference_values(draw: _Draw, words: torch.Tensor) -> torch.Tensor:
    """The draw's values of int64 ``words`` (in [0, 2**32)): float32, or int64 for randint."""
    kind = draw.kind
    if kind == "randint":
        # (w * range) >> 32 with range = rh * 2**16 + rl: partial products stay below 2**49.
        rng = int(draw.b)
        a = torch.mul(words, rng & 0xFFFF)
        c = torch.mul(words, rng >> 16)
        k = torch.bitwise_right_shift(torch.add(c, torch.bitwise_right_shift(a, 16)), 16)
        return torch.add(k, int(draw.a))
    if kind == "uniform":
        return torch.add(torch.mul(_unit24(words), draw.b), draw.a)
    if kind == "bernoulli":
        return torch.lt(_unit24(words), draw.a).to(torch.float32)
    if kind == "exponential":
        v = torch.rsub(_unit24(words), 1.0)
        return torch.mul(torch.rsub(_log_parts(v, None), 0.0), draw.a)
    if kind != "normal":
        return _reference_new_values(draw, words)
    return torch.add(torch.mul(_standard_normal(words), draw.b), draw.a)


def _standard_normal(words: torch.Tensor) -> torch.Tensor:
    """z of the normal sampler (schema §6.2), before scaling: float32."""
    m2 = torch.bitwise_left_shift(torch.bitwise_and(words, 0x7FFFFFFF), 1)
    one_minus = torch.mul(torch.add(m2, 1).to(torch.float32), TWO_M32)
    x = torch.mul(torch.rsub(m2, _M32).to(torch.float32), TWO_M32)
    one_plus = torch.add(x, 1.0)
    t = _erfinv_core(x, one_minus, one_plus, NORMAL_CENTRAL, NORMAL_CENTER, NORMAL_TAIL, NORMAL_SPLIT)
    negative = torch.bitwise_right_shift(words, 31).to(torch.bool)
    return torch.where(negative, torch.neg(t), t)


def _saturate(v: torch.Tensor, limit: float) -> torch.Tensor:
    """Clamp float32 ``v`` to [-limit, limit] (the output dtype's finite range; schema §7)."""
    return torch.clamp(v, -limit, limit)


def _pexp(y: torch.Tensor) -> torch.Tensor:
    """The portable exponential of float32 ``y`` <= 88.7 (schema §5.6)."""
    y = torch.clamp(y, min=EXP_LOW)
    k = torch.floor(torch.add(torch.mul(y, INV_LN2), 0.5))
    r = torch.sub(y, torch.mul(k, LN2_HI))
    r = torch.sub(r, torch.mul(k, LN2_LO))
    p = _horner(EXP_C, r)
    n = k.to(torch.int32)
    n1 = torch.bitwise_right_shift(n, 1)
    n2 = torch.sub(n, n1)
    s1 = torch.bitwise_left_shift(torch.add(n1, 127), 23).view(torch.float32)
    s2 = torch.bitwise_left_shift(torch.add(n2, 127), 23).view(torch.float32)
    return torch.mul(torch.mul(p, s1), s2)


def _cauchy_values(words: torch.Tensor) -> torch.Tensor:
    """The standard Cauchy value of each word (schema §6.6), float32."""
    q = torch.bitwise_right_shift(torch.bitwise_and(words, 0x7FFFFFFF), 8)
    s = torch.mul(torch.add(torch.bitwise_left_shift(q, 1), 1).to(torch.float32), 2.0**-25)
    near = torch.le(s, 0.25)
    r = torch.where(near, s, torch.rsub(s, 0.5))
    t = torch.mul(r, _horner(TAN_PI, torch.mul(r, r)))
    c = torch.where(near, torch.div(torch.ones_like(t), t), t)
    negative = torch.bitwise_right_shift(words, 31).to(torch.bool)
    return torch.where(negative, torch.neg(c), c)


def _tensor_param(value: object, like: torch.Tensor) -> torch.Tensor:
    """A tensor parameter's float32 values, one per element (a number: repeated)."""
    if isinstance(value, torch.Tensor):
        return value.to(device=like.device, dtype=torch.float32)
    return torch.full(like.shape, float(value), dtype=torch.float32, device=like.device)


def _reference_new_values(draw: _Draw, words: torch.Tensor, params: tuple = ()) -> torch.Tensor:
    """The values of the format 1.2 samplers: float32.  ``params``: the tensor parameters' values
    for these words (float32, one per word)."""
    kind = draw.kind
    if kind == "cauchy":
        v = torch.add(torch.mul(_cauchy_values(words), draw.b), draw.a)
    elif kind == "log_normal":
        v = _pexp(torch.add(torch.mul(_standard_normal(words), draw.b), draw.a))
    elif kind == "geometric":
        u = torch.mul(torch.add(torch.bitwise_left_shift(torch.bitwise_right_shift(words, 9), 1), 1).to(torch.float32),
                      TWO_M24)
        v = torch.ceil(torch.div(_log_parts(u, None), torch.full_like(u, draw.a)))
    elif kind == "bernoulli_tensor":
        return torch.lt(_unit24(words), params[0]).to(torch.float32)
    else:  # normal_tensor
        v = torch.add(torch.mul(_standard_normal(words), params[1]), params[0])
    return _saturate(v, draw.c)


def _store(dst: torch.Tensor, values: torch.Tensor, draw: _Draw) -> None:
    """Cast ``values`` (float32, or int64 for randint) into ``dst`` as the spec says."""
    if values.dtype == torch.int64 and dst.dtype.is_floating_point and dst.dtype != torch.float64:
        values = values.to(torch.float32)
    dst.copy_(values)


def stream_words(key: tuple[int, int], first: int, count: int, device: torch.device) -> torch.Tensor:
    """Words ``first .. first+count-1`` of ``key``'s stream as int64 on ``device``, computed with
    eager torch ops (:func:`initrecipe.rng.portable.philox.philox_words`): the reference word source."""
    return philox_words(key, first, count, device)


def _reference_fill(out: torch.Tensor, draw: _Draw, key: tuple[int, int], segments: list[Segment],
                    tensor_params: tuple[torch.Tensor, ...] = (),
                    words_of: Callable[..., torch.Tensor] = stream_words) -> None:
    flat = out.view(-1)
    offset = 0
    with torch.no_grad():
        for first, length in segments:
            done = 0
            while done < length:
                n = min(_REF_CHUNK, length - done)
                words = words_of(key, first + done, n, out.device)
                lo = offset + done
                if tensor_params:
                    values = _reference_new_values(draw, words, tuple(t[lo : lo + n] for t in tensor_params))
                else:
                    values = _reference_values(draw, words)
                _store(flat[lo : lo + n], values, draw)
                done += n
            offset += length


def _tensor_params(draw: _Draw, out: torch.Tensor) -> tuple[torch.Tensor, ...]:
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
    largest = _SATURATE[torch.float32]
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


# ---------------------------------------------------------------------------------------------
# C kernel path (CPU)
# ---------------------------------------------------------------------------------------------

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


def _plan(segments: list[Segment], total: int, workers: int) -> list[list[Piece]]:
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


def _run_tasks(tasks: list[list[Piece]], work: Callable[[list[Piece]], None], workers: int) -> None:
    """Run ``work`` on every task: on the shared pool, or inline for one task, one worker, or when
    called from a pool thread (which must not wait on its own pool)."""
    if workers <= 1 or len(tasks) <= 1 or threading.current_thread().name.startswith(_POOL_PREFIX):
        for task in tasks:
            work(task)
        return
    for future in [_executor(workers).submit(work, task) for task in tasks]:
        future.result()


_KERNEL_EXT_KIND = {"cauchy": 0, "log_normal": 1, "geometric": 2, "bernoulli_tensor": 3, "normal_tensor": 4}


def _kernel_fill_ext(out: torch.Tensor, draw: _Draw, key: tuple[int, int], segments: list[Segment],
                     tensor_params: tuple[torch.Tensor, ...]) -> None:
    """The format 1.2 samplers with the C kernel: float32 values (straight into a float32 ``out``,
    else through blocks cast with torch, as the spec's conversion says)."""
    assert _kernel is not None
    k0, k1 = key
    flat = out.view(-1)
    kind = _KERNEL_EXT_KIND[draw.kind]
    a, b, c = float(draw.a), float(draw.b), float(draw.c)
    src1 = tensor_params[0].data_ptr() if tensor_params else 0
    src2 = tensor_params[1].data_ptr() if len(tensor_params) > 1 else 0
    workers = max(1, torch.get_num_threads())
    kernel = _kernel
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
        _run_tasks(_plan(segments, total, workers), work, workers)
    torch.autograd.graph.increment_version(out)


def _kernel_fill(out: torch.Tensor, draw: _Draw, key: tuple[int, int], segments: list[Segment]) -> None:
    assert _kernel is not None
    k0, k1 = key
    flat = out.view(-1)
    dtype = out.dtype
    base = out.data_ptr()
    size = out.element_size()
    workers = max(1, torch.get_num_threads())
    kernel = _kernel

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
        _run_tasks(_plan(segments, total, workers), work, workers)
    # The kernel wrote through a raw pointer: record the in-place change as torch's own ops do.
    torch.autograd.graph.increment_version(out)


# ---------------------------------------------------------------------------------------------
# Public API
# ---------------------------------------------------------------------------------------------


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
    _check_out(out)
    draw = _check_params(kind, params, out.dtype)
    k = _check_key(key)
    segs = _check_segments(segments, out.numel())
    if not segs:
        return out
    tensor_params = _tensor_params(draw, out) if kind in TENSOR_SAMPLERS else ()
    if use_kernel and out.device.type == "cpu" and _kernel is not None:
        if kind in _KERNEL_EXT_KIND:
            _kernel_fill_ext(out, draw, k, segs, tensor_params)
        else:
            _kernel_fill(out, draw, k, segs)
    else:  # sample_ takes its words from torch's Philox kernel where it passes its self-check
        _reference_fill(out, draw, k, segs, tensor_params, device_words if use_kernel else stream_words)
    return out


def _reference_erfinv32(x: torch.Tensor) -> torch.Tensor:
    """Portable erfinv of a float32 tensor with eager torch ops (schema §8)."""
    ax = torch.abs(x)
    inside = torch.lt(ax, 1.0)
    xs = torch.where(inside, x, 0.0)
    r = _erfinv_core(xs, torch.rsub(xs, 1.0), torch.add(xs, 1.0), ERFINV_CENTRAL, ERFINV_CENTER, ERFINV_TAIL, ERFINV_SPLIT)
    special = torch.where(torch.eq(ax, 1.0), torch.mul(x, math.inf), math.nan)
    return torch.where(inside, r, special)


def _reference_log32(x: torch.Tensor) -> torch.Tensor:
    """Portable log of a float32 tensor with eager torch ops (schema §5.2)."""
    regular = torch.logical_and(torch.gt(x, 0.0), torch.lt(x, math.inf))
    y = torch.where(regular, x, 1.0)
    tiny = torch.lt(y, TWO_M126)
    ys = torch.where(tiny, torch.mul(y, TWO_P23), y)
    adjust = torch.mul(tiny.to(torch.int32), 23)
    res = _log_parts(ys, adjust)
    special = torch.where(torch.eq(x, 0.0), -math.inf, torch.where(torch.eq(x, math.inf), math.inf, math.nan))
    return torch.where(regular, res, special)


def _unary(x: torch.Tensor, name: str, reference: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
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
            _run_tasks(_plan([(0, n)], n, workers), work, workers)
        else:
            flat = x32.reshape(-1)
            result = torch.empty_like(flat)
            for start in range(0, flat.numel(), _REF_CHUNK):
                result[start : start + _REF_CHUNK] = reference(flat[start : start + _REF_CHUNK])
            result = result.reshape(x32.shape)
        return result.to(x.dtype)


def erfinv(x: torch.Tensor) -> torch.Tensor:
    """Portable inverse error function, computed in float32 and returned in ``x``'s dtype.

    Bitwise identical on every device (schema/PORTABLE_RNG.md §8): relative error below 3e-7
    for |x| < 1 (subnormal results aside), finite there; erfinv(+-1) = +-inf; NaN for |x| > 1
    and NaN inputs.
    """
    return _unary(x, "erfinv", _reference_erfinv32)


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
    return _unary(x, "log", _reference_log32)


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
    import numpy as np

    k = _check_key(key)
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
            e = torch.mul(torch.rsub(_log_parts(torch.rsub(_unit24(words), 1.0), None), 0.0), 1.0)
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
