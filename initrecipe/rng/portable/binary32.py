"""The binary32 arithmetic of the portable samplers (``schema/PORTABLE_RNG.md`` §5): exact binary32
constants, and the logarithm, square root, exponential and erfinv built from correctly rounded
``+ - * /`` with eager torch operations (one IEEE operation per torch call, never fused)."""

from __future__ import annotations

import math
import struct

import torch

__all__ = ["f32", "SATURATE", "unit24", "horner", "log_parts", "log1p_steps", "psqrt", "erfinv_core", "saturate",
           "pexp", "reference_erfinv32", "reference_log32"]

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
SATURATE = {  # largest finite value of each floating dtype, as a float32 value
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


def unit24(words: torch.Tensor) -> torch.Tensor:
    """u = (w >> 8) * 2**-24 as float32 (exact)."""
    return torch.mul(torch.bitwise_right_shift(words, 8).to(torch.float32), TWO_M24)


def horner(coefficients: tuple[float, ...], t: torch.Tensor) -> torch.Tensor:
    """The polynomial with ``coefficients`` (lowest degree first) at ``t``, by Horner's rule."""
    p = torch.full_like(t, coefficients[-1])
    for c in coefficients[-2::-1]:
        p = torch.add(torch.mul(p, t), c)
    return p


def log_parts(y: torch.Tensor, exponent_adjust: torch.Tensor | None) -> torch.Tensor:
    """log(y) for positive finite normal float32 ``y`` (with ``y`` scaled by 2**23 when
    ``exponent_adjust`` holds 23 for that element)."""
    ix = torch.add(y.view(torch.int32), 0x3F800000 - 0x3F3504F3)
    e = torch.sub(torch.bitwise_right_shift(ix, 23), 127)
    if exponent_adjust is not None:
        e = torch.sub(e, exponent_adjust)
    m = torch.add(torch.bitwise_and(ix, 0x007FFFFF), 0x3F3504F3).view(torch.float32)
    f = torch.sub(m, 1.0)
    return torch.add(log1p_steps(f), torch.mul(e.to(torch.float32), LN2))


def log1p_steps(f: torch.Tensor) -> torch.Tensor:
    """plog's log(1 + f) for float32 ``f`` in [sqrt(1/2) - 1, sqrt(2) - 1] (schema §5.2, from d)."""
    d = torch.add(f, 2.0)
    s = torch.div(f, d)
    z = torch.mul(s, s)
    r = torch.full_like(z, LOG_C[2])
    for c in LOG_C[1::-1]:
        r = torch.add(torch.mul(r, z), c)
    r = torch.mul(r, z)
    return torch.sub(f, torch.mul(s, torch.sub(f, r)))


def psqrt(w: torch.Tensor) -> torch.Tensor:
    """The portable square root (torch.sqrt is not correctly rounded on every CPU build): a guess
    from the halved bit pattern, then three Heron steps y = (y + w/y) * 0.5.  Within 1 ulp for
    positive normal ``w``; unspecified otherwise."""
    y = torch.add(torch.bitwise_right_shift(w.view(torch.int32), 1), 0x1FC00000).view(torch.float32)
    for _ in range(3):
        y = torch.mul(torch.add(y, torch.div(w, y)), 0.5)
    return y


def erfinv_core(
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
    w = torch.rsub(log_parts(y, None), 0.0)
    pc = horner(central, torch.sub(w, center))
    pt = horner(tail, torch.sub(psqrt(w), TAIL_CENTER))
    p = torch.where(torch.lt(w, split), pc, pt)
    return torch.mul(p, x)


def saturate(v: torch.Tensor, limit: float) -> torch.Tensor:
    """Clamp float32 ``v`` to [-limit, limit] (the output dtype's finite range; schema §7)."""
    return torch.clamp(v, -limit, limit)


def pexp(y: torch.Tensor) -> torch.Tensor:
    """The portable exponential of float32 ``y`` <= 88.7 (schema §5.6)."""
    y = torch.clamp(y, min=EXP_LOW)
    k = torch.floor(torch.add(torch.mul(y, INV_LN2), 0.5))
    r = torch.sub(y, torch.mul(k, LN2_HI))
    r = torch.sub(r, torch.mul(k, LN2_LO))
    p = horner(EXP_C, r)
    n = k.to(torch.int32)
    n1 = torch.bitwise_right_shift(n, 1)
    n2 = torch.sub(n, n1)
    s1 = torch.bitwise_left_shift(torch.add(n1, 127), 23).view(torch.float32)
    s2 = torch.bitwise_left_shift(torch.add(n2, 127), 23).view(torch.float32)
    return torch.mul(torch.mul(p, s1), s2)


def reference_erfinv32(x: torch.Tensor) -> torch.Tensor:
    """Portable erfinv of a float32 tensor with eager torch ops (schema §8)."""
    ax = torch.abs(x)
    inside = torch.lt(ax, 1.0)
    xs = torch.where(inside, x, 0.0)
    r = erfinv_core(xs, torch.rsub(xs, 1.0), torch.add(xs, 1.0), ERFINV_CENTRAL, ERFINV_CENTER, ERFINV_TAIL, ERFINV_SPLIT)
    special = torch.where(torch.eq(ax, 1.0), torch.mul(x, math.inf), math.nan)
    return torch.where(inside, r, special)


def reference_log32(x: torch.Tensor) -> torch.Tensor:
    """Portable log of a float32 tensor with eager torch ops (schema §5.2)."""
    regular = torch.logical_and(torch.gt(x, 0.0), torch.lt(x, math.inf))
    y = torch.where(regular, x, 1.0)
    tiny = torch.lt(y, TWO_M126)
    ys = torch.where(tiny, torch.mul(y, TWO_P23), y)
    adjust = torch.mul(tiny.to(torch.int32), 23)
    res = log_parts(ys, adjust)
    special = torch.where(torch.eq(x, 0.0), -math.inf, torch.where(torch.eq(x, math.inf), math.inf, math.nan))
    return torch.where(regular, res, special)

