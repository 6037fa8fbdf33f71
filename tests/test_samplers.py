"""The portable samplers, erfinv and log (schema/PORTABLE_RNG.md §5-§11).

Three implementations are held to the same bits: a scalar transcription of the specification
written here with numpy float32 scalars, the eager-torch reference (``reference_sample_``) and the
C kernel (``sample_`` on CPU tensors), in every instruction-set variant the CPU runs.  Then the
statistics and the accuracy of what they compute, and the errors.
"""

from __future__ import annotations

import math
import os
import platform
import statistics
import struct
import subprocess
import sys

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from initrecipe.rng.portable import binary32, kernel_samplers, reference_samplers, sampler_params, samplers
from initrecipe.rng.portable.philox import derive_key, philox_words, stream_word
from initrecipe.rng.portable.samplers import (
    KERNEL_AVAILABLE,
    SAMPLERS,
    TENSOR_SAMPLERS,
    erfinv,
    erfinv_,
    log,
    reference_sample_,
    sample_,
)

F = np.float32
KEY = derive_key(42, "model.layers.0.weight", 0)
FLOAT_DTYPES = (torch.float32, torch.bfloat16, torch.float16, torch.float64)
PARAMS = {
    "uniform": (-0.5, 0.5),
    "normal": (0.0, 1.0),
    "bernoulli": (0.25,),
    "randint": (-5, 10),
    "exponential": (2.0,),
    "cauchy": (0.5, 2.0),
    "log_normal": (1.0, 0.5),
    "geometric": (0.3,),
}
SCALAR_SAMPLERS = sorted(SAMPLERS - TENSOR_SAMPLERS)


def tensor_params(kind: str, n: int, seed: int = 0) -> tuple[torch.Tensor, ...]:
    """Per-element parameters of a tensor sampler for ``n`` elements (float64: converted once to float32)."""
    g = torch.Generator().manual_seed(seed)
    if kind == "bernoulli_tensor":
        p = torch.rand(n, generator=g, dtype=torch.float64)
        p[::7] = 0.0
        p[1::11] = 1.0
        return (p,)
    return (torch.randn(n, generator=g, dtype=torch.float64) * 10, torch.rand(n, generator=g, dtype=torch.float64) * 3)


# ---------------------------------------------------------------------------------------------
# The specification, transcribed with numpy float32 scalars (every operation rounds once)
# ---------------------------------------------------------------------------------------------


def bits(x: np.float32) -> int:
    return struct.unpack("<I", struct.pack("<f", x))[0]


def from_bits(b: int) -> np.float32:
    return F(struct.unpack("<f", struct.pack("<I", b & 0xFFFFFFFF))[0])


def hexf(h: str) -> np.float32:
    value = float.fromhex(h)
    assert float(F(value)) == value, h
    return F(value)


C1, C2, C3, LN2 = (hexf(h) for h in ("0x1.55555cp-1", "0x1.997c26p-2", "0x1.2ee78ap-2", "0x1.62e430p-1"))
ERF = (
    [hexf(h) for h in ("0x1.805c5ep+0", "0x1.f91e8ap-3", "-0x1.11c4ecp-8", "-0x1.486616p-10", "0x1.c9e6c8p-13",
                       "-0x1.4d15a4p-18", "-0x1.d0c1a0p-19", "0x1.f48beap-22", "0x1.8f2230p-26", "-0x1.2e0eb6p-27")],
    F(2.5),
    [hexf(h) for h in ("0x1.aaf132p+1", "0x1.01e2f2p+0", "0x1.ad60eep-9", "-0x1.0f326ap-9", "0x1.2033b8p-10",
                       "-0x1.57d9a0p-11", "0x1.b5a60ap-12", "-0x1.1685f0p-12", "0x1.83f3c0p-14", "0x1.abb418p-16",
                       "-0x1.6623f2p-16")],
    F(5.0),
)
NORMAL = (
    [hexf(h) for h in ("0x1.25e47ep+1", "0x1.5deb84p-2", "-0x1.09f950p-7", "-0x1.36b13ap-10", "0x1.22989ep-12",
                       "-0x1.1ba22cp-16", "-0x1.757b26p-19", "0x1.ff5cf0p-22")],
    F(3.0),
    [hexf(h) for h in ("0x1.2de4c8p+2", "0x1.6cb4c0p+0", "0x1.302362p-8", "-0x1.7c0998p-9", "0x1.8bc6bcp-10",
                       "-0x1.08ea90p-10", "0x1.67e03cp-11", "-0x1.265ddep-12", "0x1.5e165ap-15")],
    F(6.0),
)


def spec_plog(y: np.float32) -> np.float32:
    ix = (bits(y) + 0x004AFB0D) & 0xFFFFFFFF
    e = (ix >> 23) - 127
    m = from_bits((ix & 0x007FFFFF) + 0x3F3504F3)
    f = m - F(1)
    d = F(2) + f
    s = f / d
    z = s * s
    r = C3 * z
    r = r + C2
    r = r * z
    r = r + C1
    r = r * z
    t = f - r
    t = s * t
    lg = f - t
    el = F(e) * LN2
    return lg + el


def spec_log(y: np.float32) -> np.float32:
    if math.isnan(y) or y < 0:
        return F("nan")
    if y == 0:
        return F("-inf")
    if math.isinf(y):
        return F("inf")
    if y < F(2.0**-126):
        return _plog_scaled(y * F(2.0**23), 23)
    return spec_plog(y)


def _plog_scaled(y: np.float32, eoff: int) -> np.float32:
    # §5.2 for a subnormal input: the formula on y * 2**23, with e reduced by 23.
    ix = (bits(y) + 0x004AFB0D) & 0xFFFFFFFF
    e = (ix >> 23) - 127 - eoff
    m = from_bits((ix & 0x007FFFFF) + 0x3F3504F3)
    f = m - F(1)
    s = f / (F(2) + f)
    z = s * s
    r = ((C3 * z + C2) * z + C1) * z
    lg = f - s * (f - r)
    return lg + F(e) * LN2


def spec_psqrt(w: np.float32) -> np.float32:
    y = from_bits((bits(w) >> 1) + 0x1FC00000)
    for _ in range(3):
        q = w / y
        y = y + q
        y = y * F(0.5)
    return y


def spec_poly(c: list[np.float32], t: np.float32) -> np.float32:
    p = c[-1]
    for ck in c[-2::-1]:
        p = p * t
        p = p + ck
    return p


def spec_core(x: np.float32, om: np.float32, op: np.float32, coefficients) -> np.float32:
    central, center, tail, split = coefficients
    y = om * op
    w = F(0) - spec_plog(y)
    if w < split:
        p = spec_poly(central, w - center)
    else:
        p = spec_poly(tail, spec_psqrt(w) - F(3.5))
    return p * x


def spec_unit(word: int) -> np.float32:
    return F(word >> 8) * F(2.0**-24)


def spec_sample(kind: str, params: tuple, word: int) -> np.float32 | int:
    """§6: the value of one element from its stream word."""
    if kind == "uniform":
        low, high = params
        return spec_unit(word) * F(high - low) + F(low)
    if kind == "normal":
        mean, std = params
        m2 = (word & 0x7FFFFFFF) << 1
        om = F(m2 + 1) * F(2.0**-32)
        x = F(0xFFFFFFFF - m2) * F(2.0**-32)
        op = F(1) + x
        t = spec_core(x, om, op, NORMAL)
        z = -t if word >> 31 else t
        return z * F(std) + F(mean)
    if kind == "bernoulli":
        return F(1) if spec_unit(word) < F(params[0]) else F(0)
    if kind == "randint":
        low, high = params
        return low + ((word * (high - low)) >> 32)
    if kind == "exponential":
        v = F(1) - spec_unit(word)
        lg = F(0) - spec_plog(v)
        return lg * F(1.0 / params[0])
    if kind == "cauchy":
        return spec_saturate(spec_cauchy(word) * F(params[1]) + F(params[0]), F32_MAX)
    if kind == "log_normal":
        return spec_saturate(spec_exp(spec_z(word) * F(params[1]) + F(params[0])), F32_MAX)
    if kind == "geometric":
        v = F(2 * (word >> 9) + 1) * F(2.0**-24)
        return spec_saturate(F(np.ceil(spec_plog(v) / spec_log1m(F(params[0])))), F32_MAX)
    if kind == "bernoulli_tensor":
        return F(1) if spec_unit(word) < F(params[0]) else F(0)
    if kind == "normal_tensor":
        mean, std = params
        return spec_saturate(spec_z(word) * F(std) + F(mean), F32_MAX)
    raise AssertionError(kind)


F32_MAX = hexf("0x1.fffffep+127")
TAN_PI = [hexf(h) for h in ("0x1.921fb6p+1", "0x1.4abb28p+3", "0x1.4694e0p+5", "0x1.424292p+7", "0x1.6eaa36p+9",
                            "0x1.a9f8e0p+9", "0x1.aeefd6p+14")]
EXP_C = [hexf(h) for h in ("0x1p+0", "0x1p+0", "0x1p-1", "0x1.555556p-3", "0x1.555556p-5", "0x1.111112p-7",
                           "0x1.6c16c2p-10", "0x1.a01a02p-13")]


def spec_z(word: int) -> np.float32:
    """§6.2's z (the standard normal deviate, before std and mean)."""
    m2 = (word & 0x7FFFFFFF) << 1
    om = F(m2 + 1) * F(2.0**-32)
    x = F(0xFFFFFFFF - m2) * F(2.0**-32)
    t = spec_core(x, om, F(1) + x, NORMAL)
    return -t if word >> 31 else t


def spec_saturate(v: np.float32, limit: np.float32) -> np.float32:
    return max(-limit, min(limit, v))


def spec_cauchy(word: int) -> np.float32:
    """§6.6."""
    q = (word & 0x7FFFFFFF) >> 8
    s = F(2 * q + 1) * F(2.0**-25)
    r = s if s <= F(0.25) else F(0.5) - s
    t = r * spec_poly(TAN_PI, r * r)
    c = F(1) / t if s <= F(0.25) else t
    return -c if word >> 31 else c


def spec_exp(y: np.float32) -> np.float32:
    """§5.6."""
    y = max(y, hexf("-0x1.ap+6"))
    k = F(np.floor(y * hexf("0x1.715476p+0") + F(0.5)))
    r = y - k * hexf("0x1.62ep-1")
    r = r - k * hexf("0x1.0bfbe8p-15")
    p = spec_poly(EXP_C, r)
    n = int(k)
    n1 = n >> 1
    return (p * F(2.0**n1)) * F(2.0 ** (n - n1))


def spec_log1m(p: np.float32) -> np.float32:
    """§6.8: log(1 - p)."""
    if p <= hexf("0x1.2bec34p-2"):
        f = -p
        s = f / (F(2) + f)
        z = s * s
        r = ((C3 * z + C2) * z + C1) * z
        return f - s * (f - r)
    return spec_plog(F(1) - p)


def spec_erfinv(x: np.float32) -> np.float32:
    if math.isnan(x) or abs(x) > 1:
        return F("nan")
    if abs(x) == 1:
        return x * F("inf")
    return spec_core(x, F(1) - x, F(1) + x, ERF)


def as_bits(t: torch.Tensor) -> torch.Tensor:
    """A tensor's storage as integers, so that equality is bitwise (NaN == NaN, -0 != +0)."""
    view = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}[t.element_size()]
    return t.contiguous().view(view) if t.dtype.is_floating_point else t


def bitwise_equal(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.dtype == b.dtype and a.shape == b.shape and torch.equal(as_bits(a), as_bits(b))


def both(out_dtype: torch.dtype, n: int, kind: str, key, params, segments=None) -> tuple[torch.Tensor, torch.Tensor]:
    """(sample_, reference_sample_) of the same draw."""
    a = sample_(torch.empty(n, dtype=out_dtype), kind, key, params, segments)
    b = reference_sample_(torch.empty(n, dtype=out_dtype), kind, key, params, segments)
    return a, b


# ---------------------------------------------------------------------------------------------
# Test vectors (schema/PORTABLE_RNG.md §11) and the scalar specification
# ---------------------------------------------------------------------------------------------

INDICES = (0, 1, 5, 1000003, 2**40 + 3)
VECTORS = {
    ("uniform", (-0.5, 0.5)): ("-0x1.9f1e28p-2", "-0x1.22cb40p-6", "0x1.a1fe98p-2", "-0x1.80c700p-6", "0x1.2c7a84p-2"),
    ("normal", (0.0, 1.0)): ("0x1.5018f4p+0", "0x1.6c9366p-5", "-0x1.db82fap-3", "0x1.e28664p-5", "-0x1.163524p-1"),
    ("normal", (0.5, 0.02)): ("0x1.0d71a4p-1", "0x1.0074aap-1", "0x1.fb3eb0p-2", "0x1.009a68p-1", "0x1.f4df28p-2"),
    ("bernoulli", (0.25,)): ("0x1p+0", "0x0p+0", "0x0p+0", "0x0p+0", "0x0p+0"),
    ("exponential", (2.0,)): ("0x1.971b34p-5", "0x1.510828p-2", "0x1.31addep+0", "0x1.4b63f6p-2", "0x1.93bfd0p-1"),
    ("cauchy", (0.0, 1.0)): ("0x1.a1e264p+1", "0x1.c94054p-5", "-0x1.2fcc06p-2", "0x1.2ec0a8p-4", "-0x1.845e5cp-1"),
    ("cauchy", (0.5, 2.0)): ("0x1.c1e264p+2", "0x1.39280ap-1", "-0x1.7e6030p-4", "0x1.4bb02ap-1", "-0x1.045e5cp+0"),
    ("log_normal", (0.0, 1.0)): ("0x1.dbc242p+1", "0x1.0ba67ap+0", "0x1.95e9fap-1", "0x1.0f8826p+0", "0x1.295cb0p-1"),
    ("log_normal", (1.0, 0.5)): ("0x1.4f665ep+2", "0x1.63c4ecp+1", "0x1.35cdb8p+1", "0x1.6656f4p+1", "0x1.0929a0p+1"),
    ("geometric", (0.3,)): ("0x1.cp+2", "0x1.8p+1", "0x1p+0", "0x1.8p+1", "0x1p+0"),
    ("geometric", (0.001,)): ("0x1.26ap+11", "0x1.6c8p+9", "0x1.84p+6", "0x1.728p+9", "0x1.dp+7"),
    ("randint", (-5, 10)): (-4, 2, 8, 2, 6),
    ("randint", (0, 2**32)): (406353650, 2071253872, 3900679729, 2046616698, 3407782248),
}


@pytest.mark.parametrize("case", sorted(VECTORS, key=str))
def test_spec_vectors(case):
    kind, params = case
    expected = VECTORS[case]
    dtype = torch.int64 if kind == "randint" else torch.float32
    segments = [(i, 1) for i in INDICES]
    for fill in (sample_, reference_sample_):
        out = fill(torch.empty(len(INDICES), dtype=dtype), kind, KEY, params, segments)
        got = out.tolist() if kind == "randint" else [float(v).hex() for v in out.tolist()]
        want = list(expected) if kind == "randint" else [float.fromhex(h).hex() for h in expected]
        assert got == want, fill.__name__
    for i, want in zip(INDICES, expected):
        value = spec_sample(kind, params, stream_word(KEY, i))
        if kind == "randint":
            assert value == want
        else:
            assert float(value) == float.fromhex(want)


def test_tensor_sampler_vectors():
    # Element i of the draw with its own parameters (the i-th of the tensors below).
    segments = [(i, 1) for i in INDICES]
    cases = [
        ("bernoulli_tensor", (torch.tensor([0.9, 0.1, 0.5, 0.5, 0.99]),), ("0x1p+0", "0x0p+0", "0x0p+0", "0x1p+0", "0x1p+0")),
        ("normal_tensor", (torch.tensor([0.0, 1.0, -1.0, 10.0, 0.5]), torch.tensor([1.0, 2.0, 0.5, 0.1, 3.0])),
         ("0x1.5018f4p+0", "0x1.16c936p+0", "-0x1.1db830p+0", "0x1.403040p+3", "-0x1.214fb6p+0")),
    ]
    for kind, params, expected in cases:
        for fill in (sample_, reference_sample_):
            out = fill(torch.empty(len(INDICES)), kind, KEY, params, segments)
            assert [float(v).hex() for v in out.tolist()] == [float.fromhex(h).hex() for h in expected], (kind, fill)


def test_multinomial_vectors():
    probs = torch.tensor([0.1, 0.2, 0.3, 0.4])
    assert samplers.multinomial(probs, 8, True, KEY).tolist() == [0, 2, 1, 3, 3, 3, 2, 3]
    assert samplers.multinomial(probs, 4, False, KEY).tolist() == [0, 2, 1, 3]
    rows = torch.tensor([[0.0, 1.0, 0.0, 3.0], [5.0, 0.0, 1.0, 1.0]])
    assert samplers.multinomial(rows, 2, False, KEY).tolist() == [[3, 1], [0, 2]]
    # Every dtype of the probabilities gives the same categories when it holds the same values.
    for dtype in (torch.float64, torch.float16, torch.bfloat16):
        assert samplers.multinomial(probs.to(dtype).float().to(dtype), 8, True, KEY).tolist() == \
            samplers.multinomial(probs.to(dtype).float(), 8, True, KEY).tolist()


def test_multinomial_spec_and_errors():
    # With replacement: the first category whose binary64 running sum exceeds u * total.
    probs = torch.tensor([[0.5, 0.0, 1.5, 2.0], [1.0, 1.0, 1.0, 1.0]], dtype=torch.float64)
    out = samplers.multinomial(probs, 300, True, KEY)
    for r in range(2):
        cumulative = np.add.accumulate(probs[r].numpy())
        for j in range(300):
            u = stream_word(KEY, r * 300 + j) * 2.0**-32
            assert out[r, j].item() == int(np.searchsorted(cumulative, u * cumulative[-1], side="right"))
    assert (out[0] != 1).all()  # a zero weight is never drawn
    # Without replacement: distinct categories, never a zero-weight one while positive ones remain.
    out = samplers.multinomial(torch.tensor([0.0, 2.0, 1.0, 0.0, 5.0]), 3, False, KEY)
    assert sorted(out.tolist()) == [1, 2, 4]
    errors = [
        ((torch.tensor([0.5, -0.1]), 1, True), r"multinomial: every probability must be finite and >= 0"),
        ((torch.tensor([0.0, 0.0]), 1, True), r"every row must have a positive, finite sum"),
        ((torch.tensor([0.0, 1.0]), 2, False), r"a row has fewer than 2 categories with positive probability"),
        ((torch.tensor([0.5, 0.5]), 3, False), r"cannot draw 3 samples without replacement from 2 categories"),
        ((torch.ones(2, 2, 2), 1, True), r"1-D or 2-D floating-point tensor"),
        ((torch.ones(2), 0, True), r"num_samples must be a positive integer, got 0"),
    ]
    for args, message in errors:
        with pytest.raises(ValueError, match=message):
            samplers.multinomial(*args, KEY)


def test_normal_tail_vectors():
    out = sample_(torch.empty(2), "normal", KEY, (0.0, 1.0), [(18366, 1), (18844, 1)])
    assert [float(v).hex() for v in out.tolist()] == [float.fromhex("-0x1.1cfd04p+2").hex(),
                                                      float.fromhex("-0x1.165516p+2").hex()]
    assert stream_word(KEY, 18366) == 0x8000470D


@pytest.mark.parametrize("kind", SCALAR_SAMPLERS)
def test_scalar_spec_agrees_with_the_implementations(kind):
    rng = np.random.default_rng(11)
    params = {"uniform": (-3.25, 7.0), "normal": (0.125, 2.5), "bernoulli": (0.6,), "randint": (-1000, 2**31 + 7),
              "exponential": (0.75,), "cauchy": (-1.5, 0.25), "log_normal": (-0.5, 1.5),
              "geometric": (0.01,)}[kind]
    key = derive_key(9, kind, 1)
    # Elements whose words take both normal polynomials, plus random ones far away.
    words = philox_words(key, 0, 1 << 16)
    tail = torch.nonzero((words & 0x7FFFFFFF) < 2_000_000).flatten()[:40].tolist()
    indices = sorted(set(tail + rng.integers(0, 1 << 16, 150).tolist() + rng.integers(0, 2**50, 50).tolist()))
    segments = [(i, 1) for i in indices]
    dtype = torch.int64 if kind == "randint" else torch.float32
    a = sample_(torch.empty(len(indices), dtype=dtype), kind, key, params, segments)
    b = reference_sample_(torch.empty(len(indices), dtype=dtype), kind, key, params, segments)
    assert bitwise_equal(a, b)
    for j, i in enumerate(indices):
        value = spec_sample(kind, params, stream_word(key, i))
        if kind == "randint":
            assert a[j].item() == value
        else:
            assert bits(F(a[j].item())) == bits(value), (i, a[j].item(), value)


@pytest.mark.parametrize("kind", sorted(TENSOR_SAMPLERS))
def test_tensor_sampler_spec_agrees_with_the_implementations(kind):
    # Element i uses its own parameters, converted once to float32, and its own word.
    rng = np.random.default_rng(12)
    key = derive_key(9, kind, 2)
    indices = sorted(set(rng.integers(0, 1 << 16, 200).tolist() + rng.integers(0, 2**50, 50).tolist()))
    segments = [(i, 1) for i in indices]
    params = tensor_params(kind, len(indices), 4)
    for dtype in (torch.float32, torch.float64):
        a = sample_(torch.empty(len(indices), dtype=dtype), kind, key, params, segments)
        b = reference_sample_(torch.empty(len(indices), dtype=dtype), kind, key, params, segments)
        assert bitwise_equal(a, b)
    for j, i in enumerate(indices):
        value = spec_sample(kind, tuple(float(p[j]) for p in params), stream_word(key, i))
        assert bits(F(a[j].item())) == bits(value), (i, a[j].item(), value)


def test_tensor_samplers_with_constant_parameters_equal_the_scalar_ones():
    n = 5000
    for dtype in FLOAT_DTYPES:
        scalar = sample_(torch.empty(n, dtype=dtype), "bernoulli", KEY, (0.3,))
        assert bitwise_equal(sample_(torch.empty(n, dtype=dtype), "bernoulli_tensor", KEY, (torch.full((n,), 0.3),)),
                             scalar)
        scalar = sample_(torch.empty(n, dtype=dtype), "normal", KEY, (0.5, 2.0))
        assert bitwise_equal(sample_(torch.empty(n, dtype=dtype), "normal_tensor", KEY, (0.5, torch.full((n,), 2.0))),
                             scalar)


def test_tensor_sampler_errors():
    for p, bad in [(torch.tensor([0.5, 1.5]), 1.5), (torch.tensor([-0.25, 0.5]), -0.25), (torch.tensor([0.5, math.nan]), "nan")]:
        with pytest.raises(ValueError, match=r"bernoulli: every probability p must be in \[0, 1\]; element \d is"):
            sample_(torch.empty(2), "bernoulli_tensor", KEY, (p,))
    with pytest.raises(ValueError, match=r"normal: every std must be finite in float32 and >= 0; element 1 is -1.0"):
        sample_(torch.empty(2), "normal_tensor", KEY, (0.0, torch.tensor([1.0, -1.0])))
    with pytest.raises(ValueError, match=r"normal: every mean must be finite in float32; element 0 is inf"):
        sample_(torch.empty(2), "normal_tensor", KEY, (torch.tensor([1e300, 0.0], dtype=torch.float64), 1.0))
    with pytest.raises(ValueError, match=r"parameter p has 3 elements, the output 2"):
        sample_(torch.empty(2), "bernoulli_tensor", KEY, (torch.rand(3),))
    with pytest.raises(ValueError, match=r"parameter p must be a floating-point tensor, got torch.int64"):
        sample_(torch.empty(2), "bernoulli_tensor", KEY, (torch.ones(2, dtype=torch.int64),))


def test_new_sampler_parameter_errors():
    cases = [
        ("cauchy", (0.0, 0.0), r"cauchy needs 0 < sigma <= 2\*\*100, got 0.0"),
        ("cauchy", (0.0, 2.0**101), r"cauchy needs 0 < sigma <= 2\*\*100"),
        ("log_normal", (0.0, -1.0), r"log_normal needs std > 0, got -1.0"),
        ("log_normal", (80.0, 2.0), r"log_normal needs mean \+ 6.4 \* std <= 88"),
        ("geometric", (1.0,), r"geometric needs 2\*\*-100 <= p < 1"),
        ("geometric", (1.0 - 1e-10,), r"geometric needs 2\*\*-100 <= p < 1 \(and p < 1 in float32\)"),
        ("geometric", (0.0,), r"geometric needs 2\*\*-100 <= p < 1"),
        ("cauchy", (0.0, math.inf), r"cauchy: parameter sigma must be finite"),
    ]
    for kind, params, message in cases:
        with pytest.raises(ValueError, match=message):
            sample_(torch.empty(3), kind, KEY, params)
    with pytest.raises(ValueError, match=r"geometric cannot fill a torch.int64 tensor"):
        sample_(torch.empty(3, dtype=torch.int64), "geometric", KEY, (0.5,))


def test_new_samplers_never_overflow_a_narrow_dtype():
    # Values beyond the dtype's range saturate at its largest finite value (§7): never inf or NaN.
    for dtype, limit in ((torch.float16, 65504.0), (torch.bfloat16, float.fromhex("0x1.fep+127"))):
        for kind, params in (("cauchy", (0.0, 2.0**100)), ("geometric", (2.0**-100,)), ("log_normal", (80.0, 1.2)),
                             ("normal_tensor", (0.0, torch.full((20_000,), 3e38)))):
            a, b = both(dtype, 20_000, kind, KEY, params)
            assert bitwise_equal(a, b)
            assert torch.isfinite(a).all(), (dtype, kind)
            if dtype == torch.float16 or kind == "normal_tensor":
                assert a.float().abs().max().item() == limit, (dtype, kind)


def test_scalar_spec_erfinv_and_log():
    rng = np.random.default_rng(5)
    xs = np.concatenate([rng.uniform(-1, 1, 300), 1 - np.logspace(-7.2, -0.2, 100), [0.0, -0.0, 1e-30, 1.0, -1.0,
                                                                                        1.5, np.nan]]).astype(F)
    got = erfinv(torch.from_numpy(xs))
    assert bitwise_equal(got, binary32.reference_erfinv32(torch.from_numpy(xs)))
    for x, g in zip(xs, got.numpy()):
        e = spec_erfinv(x)
        assert bits(g) == bits(e) or (math.isnan(g) and math.isnan(e)), (x, g, e)
    ys = np.concatenate([rng.uniform(0, 10, 200), 10.0 ** rng.uniform(-44, 38, 200), [0.0, -0.0, -1.0, np.inf, np.nan,
                                                                                         1e-45, 1.0]]).astype(F)
    got = log(torch.from_numpy(ys))
    assert bitwise_equal(got, binary32.reference_log32(torch.from_numpy(ys)))
    for y, g in zip(ys, got.numpy()):
        e = spec_log(y)
        assert bits(g) == bits(e) or (math.isnan(g) and math.isnan(e)), (y, g, e)


ERFINV_VECTORS = [
    ("0x0p+0", "0x0p+0"), ("0x1p-1", "0x1.e861fep-2"), ("-0x1.ccccccp-1", "-0x1.29c014p+0"),
    ("0x1.ff7ceep-1", "0x1.29d326p+1"), ("0x1.fffffcp-1", "0x1.df38cep+1"), ("0x1.4484c0p-100", "0x1.1f98dcp-100"),
]
LOG_VECTORS = [
    ("0x1p+0", "0x0p+0"), ("0x1p-1", "-0x1.62e430p-1"), ("0x1p+1", "0x1.62e430p-1"), ("0x1.99999ap-4", "-0x1.26bb1cp+1"),
    ("0x1.c363ccp+127", "0x1.62632cp+6"), ("0x1.16c2p-133", "-0x1.7069e4p+6"),
]


def test_erfinv_and_log_vectors():
    xs = torch.tensor([float.fromhex(x) for x, _ in ERFINV_VECTORS] + [1.0, -1.0, 1.5])
    got = erfinv(xs).tolist()
    assert [float(v).hex() for v in got[:-3]] == [float.fromhex(y).hex() for _, y in ERFINV_VECTORS]
    assert got[-3] == math.inf and got[-2] == -math.inf and math.isnan(got[-1])
    ys = torch.tensor([float.fromhex(x) for x, _ in LOG_VECTORS] + [0.0, -1.0])
    got = log(ys).tolist()
    assert [float(v).hex() for v in got[:-2]] == [float.fromhex(y).hex() for _, y in LOG_VECTORS]
    assert got[-2] == -math.inf and math.isnan(got[-1])


# ---------------------------------------------------------------------------------------------
# C kernel == reference, bit for bit
# ---------------------------------------------------------------------------------------------


def test_kernel_is_built_on_the_target_platform():
    assert KERNEL_AVAILABLE == (samplers._kernel is not None)
    if sys.platform == "linux" and platform.machine() == "x86_64":
        assert KERNEL_AVAILABLE, "initrecipe.rng.portable._portable_kernel was not built (pip install needs a C compiler)"


@st.composite
def draws(draw):
    kind = draw(st.sampled_from(sorted(SAMPLERS)))
    finite = dict(allow_nan=False, allow_infinity=False)
    if kind == "uniform":
        low = draw(st.floats(-1e4, 1e4, **finite))
        params = (low, low + draw(st.floats(0, 1e4, **finite)))
    elif kind == "normal":
        params = (draw(st.floats(-100, 100, **finite)), draw(st.floats(0, 100, **finite)))
    elif kind == "bernoulli":
        params = (draw(st.floats(0, 1, **finite)),)
    elif kind == "exponential":
        params = (draw(st.floats(1e-3, 1e3, **finite)),)
    elif kind == "cauchy":
        params = (draw(st.floats(-100, 100, **finite)), draw(st.floats(1e-3, 1e3, **finite)))
    elif kind == "log_normal":
        params = (draw(st.floats(-20, 20, **finite)), draw(st.floats(1e-3, 10, **finite)))
    elif kind == "geometric":
        params = (draw(st.floats(1e-6, 0.999, **finite)),)
    elif kind in TENSOR_SAMPLERS:
        params = ("tensors", draw(st.integers(0, 1000)))
    else:
        low = draw(st.integers(-(2**40), 2**40))
        params = (low, low + draw(st.one_of(st.integers(1, 300), st.integers(1, 2**32))))
    dtypes = list(FLOAT_DTYPES)
    if kind == "randint" and -(2**31) <= params[0] and params[1] <= 2**31:
        dtypes += [torch.int64, torch.int32]
    if kind in ("bernoulli", "bernoulli_tensor"):
        dtypes += [torch.uint8, torch.bool]
    dtype = draw(st.sampled_from(dtypes))
    segments = draw(
        st.lists(
            st.tuples(st.one_of(st.integers(0, 5000), st.integers(0, 2**64 - 5000)), st.integers(0, 2000)),
            max_size=5,
        )
    )
    key = (draw(st.integers(0, 2**32 - 1)), draw(st.integers(0, 2**32 - 1)))
    return kind, params, dtype, segments, key


@settings(max_examples=120, deadline=None)
@given(draws())
def test_kernel_matches_reference(case):
    kind, params, dtype, segments, key = case
    n = sum(length for _, length in segments)
    if kind in TENSOR_SAMPLERS:
        params = tensor_params(kind, n, params[1])
    a, b = both(dtype, n, kind, key, params, segments)
    assert bitwise_equal(a, b)


@pytest.mark.parametrize("kind", sorted(SAMPLERS))
def test_every_kernel_variant_matches_reference(kind):
    if samplers._kernel is None:
        return
    K = samplers._kernel
    segments = [(3, 61), (1000, 5000), (2**40 + 7, 20001), (64 * 1000, 64 * 40 + 1)]
    n = sum(length for _, length in segments)
    params = {"uniform": (-3.0, 5.5), "normal": (1.0, 3.0), "bernoulli": (0.7,), "randint": (-100, 2**32 - 100),
              "exponential": (0.25,), "cauchy": (2.0, 0.5), "log_normal": (0.0, 1.0), "geometric": (0.6,)}.get(kind)
    if kind in TENSOR_SAMPLERS:
        params = tensor_params(kind, n, 3)
    previous = K.variant()
    try:
        for dtype in FLOAT_DTYPES:
            ref = reference_sample_(torch.empty(n, dtype=dtype), kind, KEY, params, segments)
            for name in K.variants():
                K.set_variant(name)
                got = sample_(torch.empty(n, dtype=dtype), kind, KEY, params, segments)
                assert bitwise_equal(got, ref), (name, dtype)
        x = torch.cat([torch.rand(10_001) * 2 - 1, torch.tensor([1.0, -1.0, 2.0, math.nan, 0.0, -0.0, 1e-40])])
        y = torch.cat([torch.rand(10_001) * 100, torch.tensor([0.0, -0.0, -1.0, math.inf, math.nan, 1e-45, 1e-39])])
        for name in K.variants():
            K.set_variant(name)
            assert bitwise_equal(erfinv(x), binary32.reference_erfinv32(x)), name
            assert bitwise_equal(log(y), binary32.reference_log32(y)), name
    finally:
        K.set_variant(previous)
    with pytest.raises(ValueError):
        K.set_variant("sse9")


SPEC_PARAMS = {"uniform": (-3.25, 7.0), "normal": (0.125, 2.5), "bernoulli": (0.6,), "randint": (-1000, 2**31 + 7),
               "exponential": (0.75,), "cauchy": (-1.5, 0.25), "log_normal": (-0.5, 1.5), "geometric": (0.3,)}


@pytest.mark.parametrize("kind", SCALAR_SAMPLERS)  # tensor-parameter draws: test_every_kernel_variant_matches_reference
def test_every_kernel_path_matches_the_scalar_spec(kind):
    # Each path's whole-superblock, whole-group and partial-group code: a long run at an odd
    # offset and of odd length, written into an unaligned slice of a larger tensor, and a short
    # run far out in the stream.  All of it must equal the torch-op reference; the elements whose
    # words take the normal's tail polynomial, the ends and a random sample also the scalar spec.
    params = SPEC_PARAMS[kind]
    key = derive_key(17, kind, 3)
    segments = [(5, 64 * 1000 + 3), (2**40 + 61, 301)]
    n = sum(length for _, length in segments)
    dtype = torch.int64 if kind == "randint" else torch.float32
    ref = reference_sample_(torch.empty(n, dtype=dtype), kind, key, params, segments)
    words = torch.cat([philox_words(key, first, length) for first, length in segments])
    index = [first + j for first, length in segments for j in range(length)]
    tail = torch.nonzero((words & 0x7FFFFFFF) < 2_750_000).flatten().tolist()
    rng = np.random.default_rng(23)
    checked = sorted(set(tail + [0, 1, 63, 64, n - 302, n - 301, n - 1] + rng.integers(0, n, 120).tolist()))
    assert len(tail) > 20  # the tail screen fires: the fix-up code runs
    for j in checked:
        value = spec_sample(kind, params, int(words[j]))
        if kind == "randint":
            assert ref[j].item() == value, j
        else:
            assert bits(F(ref[j].item())) == bits(value), (index[j], ref[j].item(), value)
    paths = samplers._kernel.variants() if samplers._kernel is not None else []
    previous = samplers.kernel_path()
    try:
        for name in paths:
            samplers._kernel.set_variant(name)
            big = torch.full((n + 7,), 99, dtype=dtype)
            got = sample_(big[3 : 3 + n], kind, key, params, segments)
            assert bitwise_equal(got, ref), name
            assert (big[:3] == 99).all() and (big[3 + n :] == 99).all(), name  # nothing written outside
    finally:
        if samplers._kernel is not None:
            samplers._kernel.set_variant(previous)


_PATH_PROBE = """
import hashlib, torch
from initrecipe.rng.portable import samplers
out = []
for kind, params in [("normal", (0.0, 1.0)), ("uniform", (-1.0, 2.0)), ("exponential", (0.5,))]:
    t = samplers.sample_(torch.empty(70_001), kind, (7, 11), params, [(9, 70_001)])
    out.append(hashlib.sha256(t.numpy().tobytes()).hexdigest())
print(samplers.kernel_path(), *out)
"""


def _probe(value: str | None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "INITRECIPE_KERNEL_PATH"}
    if value is not None:
        env["INITRECIPE_KERNEL_PATH"] = value
    env["PYTHONPATH"] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    return subprocess.run([sys.executable, "-c", _PATH_PROBE], capture_output=True, text=True, env=env)


def test_kernel_path_environment_variable_forces_each_path():
    import hashlib

    expected = []
    for kind, params in [("normal", (0.0, 1.0)), ("uniform", (-1.0, 2.0)), ("exponential", (0.5,))]:
        t = reference_sample_(torch.empty(70_001), kind, (7, 11), params, [(9, 70_001)])
        expected.append(hashlib.sha256(t.numpy().tobytes()).hexdigest())
    if samplers._kernel is None:
        assert samplers.kernel_path() == "reference"
        return
    best = samplers._kernel.variants()[0]
    for value, path in [("", best), ("best", best)] + [(v, v) for v in samplers._kernel.variants()]:
        proc = _probe(value)
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.split() == [path, *expected], value


def test_kernel_path_environment_variable_rejects_unknown_paths():
    value = "AVX2"  # names are case-sensitive
    proc = _probe(value)
    if samplers._kernel is None:
        return
    assert proc.returncode != 0
    supported = ", ".join(samplers._kernel.variants())
    assert (f"initrecipe.errors.SettingError: INITRECIPE_KERNEL_PATH={value}: not a kernel path (avx512f, avx2, "
            f"generic or best); set it to one of the paths this CPU runs ({supported}), to 'best', or unset it"
            ) in proc.stderr


def test_extreme_values_convert_like_torch():
    # float16 overflow and subnormals, bfloat16 near its range: the kernel's own conversions.
    for dtype, params in [(torch.float16, (0.0, 1e5)), (torch.float16, (0.0, 1e-6)), (torch.float16, (1e-7, 1e-7)),
                          (torch.bfloat16, (0.0, 1e38)), (torch.bfloat16, (0.0, 1e-39)), (torch.float64, (0.0, 3e38))]:
        a, b = both(dtype, 70_001, "normal", KEY, params, [(5, 70_001)])
        assert bitwise_equal(a, b), (dtype, params)
        assert bitwise_equal(a, b.float().to(dtype)) or dtype == torch.float64
    a, b = both(torch.float16, 20_000, "uniform", KEY, (-70000.0, 70000.0))
    assert bitwise_equal(a, b) and a.isinf().any()


def test_half_and_bfloat16_conversions_match_torch():
    # uniform(v, v) is exactly f32(v) everywhere: converts arbitrary float32 values to the output
    # dtype through the kernel's own conversion code (whole groups and a partial one).
    rng = np.random.default_rng(8)
    patterns = rng.integers(0, 2**32, 1500, dtype=np.uint64).astype(np.uint32).view(F)
    edges = [65504.0, 65519.996, 65520.0, 2.0**-24, 2.0**-25, 3 * 2.0**-26, 2.0**-14, 2.0**-14 - 2.0**-25,
             3.3895314e38, 1e-45, 1.0 + 2.0**-11, 1.0 + 3 * 2.0**-11, -65520.0, -(2.0**-25)]
    values = [float(v) for v in patterns if np.isfinite(v)] + edges
    for dtype in (torch.float16, torch.bfloat16):
        for v in values:
            out = sample_(torch.empty(130, dtype=dtype), "uniform", KEY, (v, v))
            expected = torch.tensor(v, dtype=torch.float32).to(dtype)
            assert torch.equal(as_bits(out), as_bits(expected).expand(130)), (dtype, v)


def test_randint_dtypes_and_bounds():
    for dtype, params in [(torch.int64, (-(2**63), -(2**63) + 2**32)), (torch.int64, (2**63 - 2**32, 2**63)),
                          (torch.float32, (2**60, 2**60 + 2**32)), (torch.float64, (-(2**62), -(2**62) + 2**32)),
                          (torch.bfloat16, (-300, 300)), (torch.float16, (0, 2**32)), (torch.uint8, (0, 256)),
                          (torch.int8, (-128, 128)), (torch.int16, (-5, 5)), (torch.int32, (-(2**31), 2**31))]:
        a, b = both(dtype, 10_007, "randint", KEY, params, [(77, 10_007)])
        assert bitwise_equal(a, b), dtype
        exact = sample_(torch.empty(10_007, dtype=torch.int64), "randint", KEY, params, [(77, 10_007)])
        assert exact.min().item() >= params[0] and exact.max().item() < params[1]
        if dtype in (torch.float16, torch.bfloat16):
            assert bitwise_equal(a, exact.to(torch.float32).to(dtype))
        elif dtype.is_floating_point:
            assert bitwise_equal(a, exact.to(dtype))
        else:
            assert torch.equal(a.to(torch.int64), exact)


def test_bernoulli_into_integer_and_bool():
    for dtype in (torch.bool, torch.uint8, torch.int64):
        a, b = both(dtype, 3001, "bernoulli", KEY, (0.4,))
        assert torch.equal(a, b)
        assert torch.equal(a.to(torch.float32), sample_(torch.empty(3001), "bernoulli", KEY, (0.4,)))


def test_thread_count_does_not_change_bits():
    previous = torch.get_num_threads()
    n = 3_000_017
    segments = [(11, 1_000_000), (2**33, 2_000_017)]
    try:
        results = {}
        for threads in (1, 2, 3):
            torch.set_num_threads(threads)
            results[threads] = [sample_(torch.empty(n, dtype=dtype), kind, KEY, PARAMS[kind], segments)
                                for kind in ("normal", "uniform") for dtype in (torch.float32, torch.bfloat16)]
        for threads in (2, 3):
            for a, b in zip(results[1], results[threads]):
                assert bitwise_equal(a, b)
    finally:
        torch.set_num_threads(previous)


def test_chunking_does_not_change_bits(monkeypatch):
    n = 200_003
    whole = {kind: sample_(torch.empty(n), kind, KEY, PARAMS[kind], [(9, n)]) for kind in ("normal", "exponential")}
    monkeypatch.setattr(kernel_samplers, "_KERNEL_MIN_CHUNK", 1000)
    monkeypatch.setattr(kernel_samplers, "_KERNEL_MAX_CHUNK", 4093)
    monkeypatch.setattr(reference_samplers, "REF_CHUNK", 777)
    for kind, ref in whole.items():
        assert bitwise_equal(sample_(torch.empty(n), kind, KEY, PARAMS[kind], [(9, n)]), ref)
        split = [(9, 1), (10, 63), (73, 100_000), (100_073, n - 100_064)]
        assert bitwise_equal(sample_(torch.empty(n), kind, KEY, PARAMS[kind], split), ref)
        assert bitwise_equal(reference_sample_(torch.empty(n), kind, KEY, PARAMS[kind], split), ref)
        # Segments in another order: the same elements, reordered.
        swapped = sample_(torch.empty(n), kind, KEY, PARAMS[kind], [(100_009, n - 100_000), (9, 100_000)])
        assert bitwise_equal(swapped, torch.cat([ref[100_000:], ref[:100_000]]))


def test_reference_path_when_no_kernel(monkeypatch):
    x = torch.rand(5000, dtype=torch.float64) * 2 - 1
    y = torch.rand(5000) * 50
    expected = (erfinv(x), log(y), sample_(torch.empty(3000, dtype=torch.bfloat16), "normal", KEY, (0.0, 1.0)))
    monkeypatch.setattr(samplers, "_kernel", None)
    monkeypatch.setattr(reference_samplers, "REF_CHUNK", 999)
    got = (erfinv(x), log(y), sample_(torch.empty(3000, dtype=torch.bfloat16), "normal", KEY, (0.0, 1.0)))
    for a, b in zip(got, expected):
        assert bitwise_equal(a, b)


def test_element_depends_on_its_index_only():
    a = sample_(torch.empty(5000), "normal", KEY, (0.0, 1.0))
    b = sample_(torch.empty(1), "normal", KEY, (0.0, 1.0), [(4321, 1)])
    assert bitwise_equal(a[4321:4322], b)
    c = sample_(torch.empty(7, 3), "normal", KEY, (0.0, 1.0))
    assert bitwise_equal(c.flatten(), a[:21])
    other = sample_(torch.empty(5000), "normal", derive_key(42, "model.layers.0.weight", 1), (0.0, 1.0))
    assert not torch.equal(a, other)


def test_returns_out_and_handles_empty_and_scalar():
    out = torch.empty(0)
    assert sample_(out, "normal", KEY, (0.0, 1.0)) is out
    assert sample_(out, "normal", KEY, (0.0, 1.0), []) is out
    scalar = torch.empty(())
    assert sample_(scalar, "uniform", KEY, (0.0, 1.0)) is scalar
    assert bitwise_equal(scalar.reshape(1), sample_(torch.empty(1), "uniform", KEY, (0.0, 1.0)))


def test_kernel_fallback_gives_the_same_bits():
    code = (
        "import sys, hashlib; sys.modules['initrecipe.rng.portable._portable_kernel'] = None\n"
        "import torch\n"
        "from initrecipe.rng.portable import samplers\n"
        "assert not samplers.KERNEL_AVAILABLE\n"
        "t = samplers.sample_(torch.empty(3000), 'normal', (5, 6), (0.0, 1.0), [(7, 1000), (2**40, 2000)])\n"
        "e = samplers.erfinv(torch.linspace(-1, 1, 1001))\n"
        "print(hashlib.sha256(t.numpy().tobytes() + e.numpy().tobytes()).hexdigest())\n"
    )
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    import hashlib

    t = sample_(torch.empty(3000), "normal", (5, 6), (0.0, 1.0), [(7, 1000), (2**40, 2000)])
    e = erfinv(torch.linspace(-1, 1, 1001))
    assert done.stdout.strip() == hashlib.sha256(t.numpy().tobytes() + e.numpy().tobytes()).hexdigest()


# ---------------------------------------------------------------------------------------------
# Statistics (fixed keys, so these are deterministic)
# ---------------------------------------------------------------------------------------------

KS_CRITICAL = 1.95  # Kolmogorov-Smirnov at alpha = 0.001, times sqrt(n)


def ks_statistic(sample: torch.Tensor, cdf) -> float:
    x = torch.sort(sample.double()).values
    n = x.numel()
    f = cdf(x)
    upper = torch.arange(1, n + 1, dtype=torch.float64) / n - f
    lower = f - torch.arange(0, n, dtype=torch.float64) / n
    return max(upper.max().item(), lower.max().item())


def test_uniform_ks():
    n = 1_000_000
    x = sample_(torch.empty(n), "uniform", derive_key(1, "ks.uniform", 0), (-2.0, 3.0))
    assert x.min().item() >= -2.0 and x.max().item() < 3.0
    assert ks_statistic(x, lambda v: (v + 2.0) / 5.0) < KS_CRITICAL / math.sqrt(n)


def test_normal_ks_and_moments():
    n = 1_000_000
    z = sample_(torch.empty(n), "normal", derive_key(1, "ks.normal", 0), (0.0, 1.0))
    assert ks_statistic(z, torch.special.ndtr) < KS_CRITICAL / math.sqrt(n)
    assert abs(z.double().mean().item()) < 5 / math.sqrt(n)
    assert abs(z.double().var().item() - 1) < 5 * math.sqrt(2 / n)
    # Tails: P(|z| > 4) = 6.33e-5.
    expected = n * 2 * (1 - statistics.NormalDist().cdf(4.0))
    assert abs((z.abs() > 4).sum().item() - expected) < 5 * math.sqrt(expected)
    assert z.abs().max().item() < 6.34 and torch.isfinite(z).all()
    scaled = sample_(torch.empty(n), "normal", derive_key(1, "ks.normal", 0), (3.0, 0.5))
    assert ks_statistic(scaled, lambda v: torch.special.ndtr((v - 3.0) / 0.5)) < KS_CRITICAL / math.sqrt(n)


def test_exponential_ks():
    n = 1_000_000
    lam = 1.5
    x = sample_(torch.empty(n), "exponential", derive_key(1, "ks.exponential", 0), (lam,))
    assert x.min().item() >= 0 and torch.isfinite(x).all()
    assert ks_statistic(x, lambda v: -torch.expm1(-lam * v)) < KS_CRITICAL / math.sqrt(n)


def test_bernoulli_frequency():
    n = 1_000_000
    for p in (0.3, 0.5, 0.999):
        x = sample_(torch.empty(n), "bernoulli", derive_key(1, "bernoulli", 0), (p,))
        assert set(torch.unique(x).tolist()) <= {0.0, 1.0}
        assert abs(x.double().mean().item() - p) < 5 * math.sqrt(p * (1 - p) / n)
    assert sample_(torch.empty(1000), "bernoulli", KEY, (0.0,)).sum().item() == 0
    assert sample_(torch.empty(1000), "bernoulli", KEY, (1.0,)).sum().item() == 1000


def chi2_critical(df: int, z: float = 3.09) -> float:
    """Wilson-Hilferty approximation of the chi-square quantile (z = 3.09: alpha = 0.001)."""
    return df * (1 - 2 / (9 * df) + z * math.sqrt(2 / (9 * df))) ** 3


@pytest.mark.parametrize("low,high", [(-3, 4), (0, 1000), (10, 11)])
def test_randint_uniformity(low, high):
    n = 700_000
    x = sample_(torch.empty(n, dtype=torch.int64), "randint", derive_key(1, "randint", high), (low, high))
    assert x.min().item() >= low and x.max().item() < high
    k = high - low
    if k == 1:
        assert (x == low).all()
        return
    counts = torch.bincount(x - low, minlength=k).double()
    expected = n / k
    chi2 = ((counts - expected) ** 2 / expected).sum().item()
    assert chi2 < chi2_critical(k - 1)


def test_randint_full_range_is_the_word():
    w = philox_words(KEY, 100, 1000)
    x = sample_(torch.empty(1000, dtype=torch.int64), "randint", KEY, (0, 2**32), [(100, 1000)])
    assert torch.equal(x, w)


# ---------------------------------------------------------------------------------------------
# Accuracy
# ---------------------------------------------------------------------------------------------


def test_normal_accuracy_against_float64_inverse_cdf():
    rng = np.random.default_rng(3)
    m = np.concatenate([
        rng.integers(0, 2**31, 60_000), np.arange(0, 20_000), 2**31 - 1 - np.arange(20_000),
        2 ** np.arange(31) - 1, np.arange(2_740_000, 2_760_000, 97), np.arange(2_600_000, 2_700_000, 101),
    ])
    words = torch.from_numpy(m.astype(np.int64))
    t = reference_samplers.reference_values(sampler_params.Draw("normal", 0.0, 1.0), words).double().numpy()
    p = (2 * m + 1) / 2.0**33
    inv = statistics.NormalDist().inv_cdf
    ref = -np.array([inv(v) for v in p])
    err = np.abs(t - ref) / np.maximum(1.0, np.abs(ref))
    assert err.max() < 1e-6  # the design target is 2e-6; measured 6.1e-7
    assert (t > 0).all()
    # The negative half is the exact mirror image.
    neg = reference_samplers.reference_values(sampler_params.Draw("normal", 0.0, 1.0), words | (1 << 31)).double().numpy()
    assert np.array_equal(neg, -t)


def test_normal_tail_screen_is_conservative():
    # The kernel recomputes only blocks holding a word with (W & 0x7fffffff) < 2750000: every word
    # at or above that must have w < 6 (schema §10).
    m = torch.cat([torch.arange(2_750_000, 2_850_000), torch.randint(2_750_000, 2**31, (100_000,))])
    x = torch.mul(torch.rsub(2 * m, 0xFFFFFFFF).to(torch.float32), 2.0**-32)
    om = torch.mul(torch.add(2 * m, 1).to(torch.float32), 2.0**-32)
    w = torch.rsub(binary32.log_parts(torch.mul(om, torch.add(x, 1.0)), None), 0.0)
    assert w.max().item() < 5.98


def test_erfinv_accuracy():
    rng = np.random.default_rng(4)
    x = np.concatenate([
        rng.uniform(-1, 1, 400_000), 1 - np.logspace(-7, -0.3, 50_000), -(1 - np.logspace(-7, -0.3, 50_000)),
        np.logspace(-37, -1, 5_000),
    ]).astype(F)
    x = x[np.abs(x) < F(1 - 1e-7)]
    got = erfinv(torch.from_numpy(x)).double()
    ref = torch.erfinv(torch.from_numpy(x).double())
    rel = ((got - ref).abs() / ref.abs().clamp_min(1e-300)).numpy()
    assert rel[np.abs(x) > 1e-30].max() < 1e-6  # measured 2.5e-7
    # torch's float64 erfinv, the reference above, against mpmath at a few points.
    import mpmath  # installed with torch (through sympy)

    for v in (0.1, 0.5, 0.9, 0.999, 0.999999):
        assert abs(torch.erfinv(torch.tensor(v, dtype=torch.float64)).item() - float(mpmath.erfinv(v))) < 1e-14


def test_erfinv_finite_inside_and_special_outside():
    near_one = torch.tensor([float(np.nextafter(F(1), F(0))), 1 - 2.0**-23, 2.0**-149, 2.0**-126])
    x = torch.cat([near_one, -near_one])
    assert torch.isfinite(erfinv(x)).all()
    special = erfinv(torch.tensor([1.0, -1.0, 1.0000001, -2.0, math.inf, math.nan, 0.0, -0.0]))
    assert special[0].item() == math.inf and special[1].item() == -math.inf
    assert torch.isnan(special[2:6]).all()
    assert bits(F(special[6].item())) == 0 and bits(F(special[7].item())) == 0x80000000
    # trunc_normal_'s use: uniform_(2l-1, 2u-1) -> erfinv_ -> mul_ -> add_ -> clamp_.
    u = sample_(torch.empty(1_000_000), "uniform", KEY, (-1.0, 1.0))
    e = erfinv(u)
    assert torch.isfinite(e[u > -1]).all()
    e.mul_(0.02 * math.sqrt(2.0)).add_(0.0).clamp_(-0.04, 0.04)
    assert torch.isfinite(e).all()


def test_erfinv_dtypes_and_in_place():
    x = torch.rand(1000, dtype=torch.float64) * 2 - 1
    for dtype in (torch.float64, torch.float32, torch.bfloat16, torch.float16):
        xi = x.to(dtype)
        got = erfinv(xi)
        assert got.dtype == dtype and got.shape == xi.shape
        assert bitwise_equal(got, erfinv(xi.float()).to(dtype))
    y = x.float().reshape(10, 100).t()  # non-contiguous
    expected = erfinv(y.contiguous())
    assert bitwise_equal(erfinv(y), expected)
    assert erfinv_(y) is y and bitwise_equal(y.contiguous(), expected)
    with pytest.raises(ValueError, match="floating-point"):
        erfinv(torch.arange(3))


def test_log_accuracy():
    rng = np.random.default_rng(6)
    y = rng.integers(0x00800000, 0x7F800000, 2_000_000, dtype=np.int64).astype(np.uint32).view(F)
    got = log(torch.from_numpy(y)).double().numpy()
    ref = np.log(y.astype(np.float64))
    ulp = np.spacing(np.abs(ref).astype(F)).astype(np.float64)
    assert (np.abs(got - ref) / ulp).max() < 1.1
    sub = (rng.integers(1, 0x00800000, 10_000)).astype(np.uint32).view(F)
    got = log(torch.from_numpy(sub)).double().numpy()
    assert np.abs(got - np.log(sub.astype(np.float64))).max() < 1e-4
    assert log(torch.tensor([2.0], dtype=torch.float64)).dtype == torch.float64


def test_psqrt_accuracy():
    rng = np.random.default_rng(7)
    w = rng.uniform(4, 32, 1_000_000).astype(F)
    got = binary32.psqrt(torch.from_numpy(w)).double().numpy()
    ref = np.sqrt(w.astype(np.float64))
    ulp = np.spacing(ref.astype(F)).astype(np.float64)
    assert (np.abs(got - ref) / ulp).max() <= 0.76


# ---------------------------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kind,params,dtype,match",
    [
        ("gamma", (1.0,), torch.float32, "unknown sampler kind"),
        ("normal", (0.0,), torch.float32, "takes 2 parameter"),
        ("normal", (0.0, -1.0), torch.float32, "std >= 0"),
        ("normal", (math.nan, 1.0), torch.float32, "finite"),
        ("normal", ("0", 1.0), torch.float32, "real number"),
        ("normal", (0.0, 1e39), torch.float32, "float32 range"),
        ("normal", (10**400, 1.0), torch.float32, "out of range"),
        ("normal", (0.0, 1.0), torch.int64, "cannot fill"),
        ("uniform", (1.0, 0.0), torch.float32, "low <= high"),
        ("uniform", (True, 2.0), torch.float32, "real number"),
        ("uniform", (0.0, 1.0), torch.complex64, "cannot fill"),
        ("bernoulli", (1.5,), torch.float32, "0 <= p <= 1"),
        ("exponential", (0.0,), torch.float32, "lambd"),
        ("exponential", (1e-40,), torch.float32, "lambd"),
        ("randint", (0, 0), torch.int64, "high - low"),
        ("randint", (0, 2**32 + 1), torch.int64, "high - low"),
        ("randint", (0.0, 5), torch.int64, "integers"),
        ("randint", (0, 300), torch.uint8, "do not fit"),
        ("randint", (2**63 - 5, 2**63 + 5), torch.int64, "int64"),
        ("randint", (0, 2), torch.bool, "cannot fill"),
        ("normal", [0.0, 1.0, 2.0], torch.float32, "takes 2"),
        ("normal", 0.5, torch.float32, "must be a tuple"),
    ],
)
def test_parameter_errors(kind, params, dtype, match):
    for fill in (sample_, reference_sample_):
        with pytest.raises(ValueError, match=match):
            fill(torch.empty(4, dtype=dtype), kind, KEY, params)


def test_segment_and_tensor_errors():
    with pytest.raises(ValueError, match="segments cover 5 elements but the output tensor has 4"):
        sample_(torch.empty(4), "normal", KEY, (0.0, 1.0), [(0, 5)])
    with pytest.raises(ValueError, match="segments cover"):
        sample_(torch.empty(4), "normal", KEY, (0.0, 1.0), [])
    with pytest.raises(ValueError, match="must lie within"):
        sample_(torch.empty(4), "normal", KEY, (0.0, 1.0), [(-1, 4)])
    with pytest.raises(ValueError, match="must lie within"):
        sample_(torch.empty(4), "normal", KEY, (0.0, 1.0), [(2**64 - 2, 4)])
    with pytest.raises(ValueError, match="pair"):
        sample_(torch.empty(4), "normal", KEY, (0.0, 1.0), [(0, 2, 2)])
    with pytest.raises(ValueError, match="contiguous"):
        sample_(torch.empty(4, 3).t(), "normal", KEY, (0.0, 1.0))
    with pytest.raises(ValueError, match="key"):
        sample_(torch.empty(4), "normal", (1, 2**32), (0.0, 1.0))
    with pytest.raises(ValueError, match="key"):
        sample_(torch.empty(4), "normal", 7, (0.0, 1.0))
    with pytest.raises(ValueError, match="torch.Tensor"):
        sample_([0.0] * 4, "normal", KEY, (0.0, 1.0))


_GENERIC_BUILD_PROBE = """
import importlib.util, sys, torch
spec = importlib.util.spec_from_file_location("generic_build._portable_kernel", sys.argv[1])
try:
    K = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(K)
except ValueError as exc:
    print("ValueError:", exc)
    raise SystemExit(0)
out = torch.empty(70_001)
K.fill(1, out.data_ptr(), 0, out.numel(), 7, 11, 9, 0.0, 1.0)
print(K.variant(), *K.variants(), out.numpy().tobytes().hex()[:64], out.sum().item())
"""


def test_a_build_without_the_x86_paths_refuses_them(tmp_path):
    # -DIR_GENERIC_ONLY builds what other architectures get: the generic path alone.  Forcing a
    # path it lacks fails the import with the "cannot run" message; unforced, it gives the bits.
    if samplers._kernel is None:
        return
    import sysconfig

    from setuptools import Distribution, Extension
    from setuptools.command.build_ext import build_ext

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    source = os.path.join(root, "initrecipe", "rng", "portable", "_portable_kernel.c")
    ext = Extension("_portable_kernel", sources=[source],
                    define_macros=[("IR_GENERIC_ONLY", "1")],
                    extra_compile_args=["-O1", "-std=gnu11", "-fno-fast-math", "-ffp-contract=off"])
    cmd = build_ext(Distribution({"ext_modules": [ext]}))
    cmd.build_lib, cmd.build_temp = str(tmp_path / "lib"), str(tmp_path / "tmp")
    cmd.ensure_finalized()
    cmd.run()
    built = str(tmp_path / "lib" / ("_portable_kernel" + sysconfig.get_config_var("EXT_SUFFIX")))

    def probe(value):
        env = {k: v for k, v in os.environ.items() if k != "INITRECIPE_KERNEL_PATH"}
        if value is not None:
            env["INITRECIPE_KERNEL_PATH"] = value
        proc = subprocess.run([sys.executable, "-c", _GENERIC_BUILD_PROBE, built], capture_output=True, text=True,
                              env=env, check=True)
        return proc.stdout.strip()

    assert probe("avx2") == ("ValueError: INITRECIPE_KERNEL_PATH=avx2: this CPU (or this build) cannot run that "
                             "kernel path; set it to one of the paths this CPU runs (generic), to 'best', or unset it")
    ref = reference_sample_(torch.empty(70_001), "normal", (7, 11), (0.0, 1.0), [(9, 70_001)])
    assert probe(None).split() == ["generic", "generic", ref.numpy().tobytes().hex()[:64], str(ref.sum().item())]
