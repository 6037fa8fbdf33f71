"""Every portable sampler is exact in distribution in float32, float64, float16 and bfloat16.

For each sampler and dtype, a large sample (fixed key) is tested against the exact target:

* Kolmogorov–Smirnov against the target CDF *of the value rounded to the grid it is stored on*
  (float32's for float32 and float64, whose values are computed in float32; the dtype's own for
  float16 and bfloat16): for a stored value ``v`` with grid neighbours ``v-`` and ``v+`` that is
  ``F((v + v+) / 2)``, so the test judges the sampler, not the rounding that every dtype implies;
* z-tests of the mean and the variance against the target's (where they exist);
* bounds, no value on a far bound, no ±inf or NaN;
* enough distinct values: at least 90% of the expected number of distinct values of the rounded
  target (computed exactly over the grid for 16-bit dtypes and discrete targets).

Thresholds are PyTorch's own (p > 1e-4).  No scipy: the Kolmogorov distribution and the
chi-square tail (``torch.special.gammaincc``) are computed here.  ``-m slow`` runs 20x larger
samples.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np
import pytest
import torch
import torch.nn as nn

import initrecipe
from initrecipe.rng.portable.philox import derive_key
from initrecipe.rng.portable.samplers import multinomial, sample_

P_MIN = 1e-4  # PyTorch's threshold in its distribution tests
DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16)
N_FAST = 50_000
N_SLOW = 2_000_000
SQRT2 = math.sqrt(2.0)


# ------------------------------------------------------------------------------- statistics
def kolmogorov_sf(x: float) -> float:
    """P(K > x) for the Kolmogorov distribution (the limit of sqrt(n) * D_n)."""
    if x < 0.2:
        return 1.0
    return max(0.0, min(1.0, 2.0 * sum((-1) ** (k - 1) * math.exp(-2.0 * k * k * x * x) for k in range(1, 101))))


def ks_pvalue(d: float, n: int) -> float:
    """The asymptotic p-value of the KS statistic ``d`` of ``n`` samples (Stephens' correction)."""
    root = math.sqrt(n)
    return kolmogorov_sf((root + 0.12 + 0.11 / root) * d)


def chi2_sf(statistic: float, dof: int) -> float:
    return float(torch.special.gammaincc(torch.tensor(dof / 2.0, dtype=torch.float64),
                                         torch.tensor(statistic / 2.0, dtype=torch.float64)))


def normal_pvalue(z: float) -> float:
    """Two-sided p-value of a standard normal statistic."""
    return math.erfc(abs(z) / SQRT2)


def grid_of(dtype: torch.dtype) -> torch.dtype:
    """The grid the stored values lie on: float64 outputs hold float32 values."""
    return torch.float32 if dtype == torch.float64 else dtype


def rounded_cdf(values: torch.Tensor, cdf: Callable[[torch.Tensor], torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """(G(v), G(v-)) for grid values ``v`` (sorted, unique, on their grid's dtype): the target CDF of
    the value rounded to the grid at v and just below v."""
    inf = torch.full_like(values, math.inf)
    up = torch.nextafter(values, inf).double()
    down = torch.nextafter(values, -inf).double()
    v = values.double()
    return cdf((v + up) / 2), cdf((v + down) / 2)


def ks_statistic(sample: torch.Tensor, cdf: Callable[[torch.Tensor], torch.Tensor]) -> float:
    """sup |F_n - G| over the sample's grid values, G the target CDF of the rounded value."""
    flat = sample.reshape(-1).to(grid_of(sample.dtype))
    values, counts = torch.unique(flat, sorted=True, return_counts=True)
    n = flat.numel()
    upper = torch.cumsum(counts, 0).double() / n
    lower = upper - counts.double() / n
    g_at, g_below = rounded_cdf(values, cdf)
    return float(torch.maximum((upper - g_at).abs().max(), (lower - g_below).abs().max()))


def expected_distinct(dtype: torch.dtype, cdf: Callable[[torch.Tensor], torch.Tensor], n: int,
                      support: torch.Tensor | None = None, cells: int | None = None) -> float:
    """The expected number of distinct values among ``n`` draws of the target rounded to ``dtype``'s
    grid: over every value of a 16-bit grid, or over ``support`` (a discrete target's values).  On
    the float32 grid the target is effectively continuous, unless the sampler itself has only
    ``cells`` equally likely levels (then ``cells * (1 - exp(-n / cells))``)."""
    if support is None:
        if grid_of(dtype).itemsize != 2:
            return float(n) if cells is None else cells * -math.expm1(-n / cells)
        every = torch.arange(-(2**15), 2**15, dtype=torch.int32).to(torch.int16).view(grid_of(dtype))
        values = every[torch.isfinite(every)].unique()
    else:
        values = support.to(grid_of(dtype)).unique()
    g_at, g_below = rounded_cdf(values, cdf)
    p = (g_at - g_below).clamp(min=0.0)
    return float((1.0 - torch.pow(1.0 - p, n)).sum())


# ------------------------------------------------------------------------------- targets
def phi(x: torch.Tensor) -> torch.Tensor:
    return 0.5 * torch.erfc(-x / SQRT2)


@dataclass(frozen=True)
class Target:
    """A target distribution: its CDF, moments (None where they do not exist), support and bounds."""

    cdf: Callable[[torch.Tensor], torch.Tensor]
    mean: float | None
    var: float | None
    mu4: float | None  # the central fourth moment (the variance of the sample variance)
    low: float = -math.inf  # every value >= low
    high: float = math.inf  # every value <= high (or < high when open_high)
    open_high: bool = False
    support: torch.Tensor | None = None  # a discrete target's values
    cells: int | None = None  # how many distinct values the sampler can produce at most (float32 grid)


def normal_target(mean: float, std: float) -> Target:
    return Target(lambda x: phi((x - mean) / std), mean, std**2, 3 * std**4)


def uniform_target(a: float, b: float) -> Target:
    w = b - a
    return Target(lambda x: ((x - a) / w).clamp(0.0, 1.0), (a + b) / 2, w * w / 12, w**4 / 80, a, b, open_high=True)


def exponential_target(lambd: float) -> Target:
    return Target(lambda x: (-torch.expm1(-lambd * x.clamp(min=0.0))), 1 / lambd, 1 / lambd**2, 9 / lambd**4, 0.0)


def cauchy_target(median: float, sigma: float) -> Target:
    return Target(lambda x: 0.5 + torch.atan((x - median) / sigma) / math.pi, None, None, None)


def log_normal_target(mean: float, std: float) -> Target:
    raw = [math.exp(k * mean + k * k * std * std / 2) for k in range(5)]
    m1 = raw[1]
    var = raw[2] - m1 * m1
    mu4 = raw[4] - 4 * m1 * raw[3] + 6 * m1 * m1 * raw[2] - 3 * m1**4
    return Target(lambda x: phi((torch.log(x.clamp(min=1e-300)) - mean) / std) * (x > 0), m1, var, mu4, 0.0)


def geometric_target(p: float) -> Target:
    q = 1.0 - p
    return Target(lambda x: torch.where(x >= 1, 1.0 - torch.pow(torch.tensor(q, dtype=torch.float64), torch.floor(x)), 0.0),
                  1 / p, q / p**2, q * (9 - 9 * p + p * p) / p**4, 1.0,
                  support=torch.arange(1, 2000, dtype=torch.float64))


def bernoulli_target(p: float) -> Target:
    return Target(lambda x: torch.where(x < 0, 0.0, torch.where(x < 1, 1.0 - p, 1.0)).double(), p, p * (1 - p),
                  p * (1 - p) * (1 - 3 * p + 3 * p * p), 0.0, 1.0, support=torch.tensor([0.0, 1.0]))


def randint_target(low: int, high: int) -> Target:
    m = high - low
    values = torch.arange(low, high, dtype=torch.float64)
    mean = float(values.mean())
    return Target(lambda x: ((torch.floor(x) - low + 1) / m).clamp(0.0, 1.0), mean, float(((values - mean) ** 2).mean()),
                  float(((values - mean) ** 4).mean()), low, high - 1, support=values)


def trunc_normal_target(mean: float, std: float, a: float, b: float) -> Target:
    alpha, beta = (a - mean) / std, (b - mean) / std
    pa, pb = (0.5 * math.erfc(-v / SQRT2) for v in (alpha, beta))
    x = np.linspace(a, b, 400_001)
    pdf = np.exp(-0.5 * ((x - mean) / std) ** 2)
    pdf /= np.trapezoid(pdf, x)
    m1 = float(np.trapezoid(x * pdf, x))
    var = float(np.trapezoid((x - m1) ** 2 * pdf, x))
    mu4 = float(np.trapezoid((x - m1) ** 4 * pdf, x))
    # Its resolution is the uniform's: u on the 2^-24 grid, scaled to (2Φ(α)-1, 2Φ(β)-1) and rounded to
    # float32 there, so at most 2^24 levels, fewer where float32 is coarser than the scaled grid.
    lo, hi = 2 * pa - 1, 2 * pb - 1
    cells = min(2**24, float32_values_between(lo, hi))
    return Target(lambda v: ((phi((v - mean) / std) - pa) / (pb - pa)).clamp(0.0, 1.0), m1, var, mu4, a, b,
                  cells=cells)


def float32_values_between(lo: float, hi: float) -> int:
    """How many float32 values lie in [lo, hi]."""
    def ordered(x: float) -> int:
        bits = int(torch.tensor(x, dtype=torch.float32).view(torch.int32))
        return bits if bits >= 0 else -(bits & 0x7FFFFFFF)

    return ordered(hi) - ordered(lo) + 1


# ------------------------------------------------------------------------------- the checks
def check_sample(sample: torch.Tensor, target: Target, what: str, far: tuple[float, ...] = ()) -> None:
    """Every property of the module docstring for one sample of ``target``."""
    n = sample.numel()
    x = sample.double().reshape(-1)
    assert torch.isfinite(x).all(), f"{what}: a value is not finite"
    # A half-open [low, high) holds on the float32 grid; rounding to a 16-bit dtype may reach high.
    open_high = target.open_high and grid_of(sample.dtype) == torch.float32
    assert x.min() >= target.low and (x.max() < target.high if open_high else x.max() <= target.high), \
        f"{what}: a value outside [{target.low}, {target.high}]: {x.min().item()} .. {x.max().item()}"
    for bound in far:
        assert not (x == bound).any(), f"{what}: {int((x == bound).sum())} values on the far bound {bound}"
    d = ks_statistic(sample, target.cdf)
    p = ks_pvalue(d, n)
    assert p > P_MIN, f"{what}: Kolmogorov-Smirnov D = {d:.3g}, p = {p:.3g}"
    if target.mean is not None and target.var is not None:
        z_mean = (float(x.mean()) - target.mean) / math.sqrt(target.var / n)
        assert normal_pvalue(z_mean) > P_MIN, f"{what}: mean {float(x.mean())} vs {target.mean} (z = {z_mean:.2f})"
        # (The sample variance of a fair coin has no first-order spread: mu4 = var**2; skip that test.)
        if target.mu4 is not None and target.mu4 - target.var**2 > 1e-9 * target.var**2:
            sample_var = float(x.var())
            z_var = (sample_var - target.var) / math.sqrt((target.mu4 - target.var**2) / n)
            assert normal_pvalue(z_var) > P_MIN, f"{what}: variance {sample_var} vs {target.var} (z = {z_var:.2f})"
    distinct = torch.unique(sample.reshape(-1).to(grid_of(sample.dtype))).numel()
    expected = expected_distinct(sample.dtype, target.cdf, n, target.support, target.cells)
    assert distinct >= 0.9 * expected, f"{what}: {distinct} distinct values, expected about {expected:.0f}"


CASES: dict[str, tuple[str, tuple, Target]] = {
    "uniform": ("uniform", (-0.5, 1.5), uniform_target(-0.5, 1.5)),
    "normal": ("normal", (0.25, 2.0), normal_target(0.25, 2.0)),
    "normal small std": ("normal", (0.0, 0.02), normal_target(0.0, 0.02)),
    "exponential": ("exponential", (2.0,), exponential_target(2.0)),
    "bernoulli": ("bernoulli", (0.3,), bernoulli_target(0.3)),
    "randint": ("randint", (-3, 11), randint_target(-3, 11)),
    "cauchy": ("cauchy", (0.5, 2.0), cauchy_target(0.5, 2.0)),
    "log_normal": ("log_normal", (0.0, 0.5), log_normal_target(0.0, 0.5)),
    "log_normal torch defaults": ("log_normal", (1.0, 2.0), log_normal_target(1.0, 2.0)),
    "geometric": ("geometric", (0.3,), geometric_target(0.3)),
    "geometric small p": ("geometric", (0.002,), geometric_target(0.002)),
}


def draw(kind: str, params: tuple, dtype: torch.dtype, n: int, name: str) -> torch.Tensor:
    return sample_(torch.empty(n, dtype=dtype), kind, derive_key(2024, name, 0), params)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("case", sorted(CASES))
def test_sampler_distribution(case: str, dtype: torch.dtype) -> None:
    kind, params, target = CASES[case]
    if case == "log_normal torch defaults":
        # Heavy-tailed (variance ~ e^10): its moments' z-tests need far larger samples; KS and the rest apply.
        target = Target(target.cdf, None, None, None, 0.0)
    if dtype == torch.float16 and case == "geometric small p":
        target = Target(target.cdf, None, None, None, 1.0, 65504.0, support=target.support)  # saturates at 65504
    check_sample(draw(kind, params, dtype, N_FAST, case), target, f"{case} {dtype}")


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_tensor_parameter_samplers(dtype: torch.dtype) -> None:
    n = N_FAST
    # bernoulli with a probability per element: each of four levels is its own bernoulli sample.
    levels = torch.tensor([0.05, 0.3, 0.5, 0.9], dtype=dtype)
    p = levels.repeat(n // 4)
    out = sample_(torch.empty(n, dtype=dtype), "bernoulli_tensor", derive_key(2024, "bt", 0), (p,))
    for j, level in enumerate(levels.tolist()):
        check_sample(out[j::4], bernoulli_target(float(torch.tensor(level, dtype=torch.float32))),
                     f"bernoulli_tensor p={level} {dtype}")
    # normal with a mean and std per element: two interleaved populations.
    mean = torch.tensor([-1.0, 3.0], dtype=dtype).repeat(n // 2)
    std = torch.tensor([0.5, 2.0], dtype=dtype).repeat(n // 2)
    out = sample_(torch.empty(n, dtype=dtype), "normal_tensor", derive_key(2024, "nt", 0), (mean, std))
    check_sample(out[0::2], normal_target(-1.0, 0.5), f"normal_tensor (-1, 0.5) {dtype}")
    check_sample(out[1::2], normal_target(3.0, 2.0), f"normal_tensor (3, 2) {dtype}")


def test_multinomial_distribution() -> None:
    weights = torch.tensor([0.05, 0.0, 0.15, 0.3, 0.5, 1e-3])
    probabilities = (weights / weights.sum()).double()
    for dtype in DTYPES:
        counts = torch.bincount(multinomial(weights.to(dtype), N_FAST, True, derive_key(2024, "mn", 0)), minlength=6)
        expected = probabilities.to(dtype).double() / probabilities.to(dtype).double().sum() * N_FAST
        assert counts[1] == 0
        keep = expected > 0
        statistic = float((((counts.double() - expected) ** 2)[keep] / expected[keep]).sum())
        assert chi2_sf(statistic, int(keep.sum()) - 1) > P_MIN, (dtype, counts)
    # Without replacement: the first pick is proportional to the weights; the pair order follows
    # P(i then j) = w_i / W * w_j / (W - w_i).
    w = torch.tensor([1.0, 2.0, 3.0, 4.0], dtype=torch.float64)
    rows = 20_000
    picks = multinomial(w.expand(rows, 4), 2, False, derive_key(2024, "mn2", 0))
    pair = picks[:, 0] * 4 + picks[:, 1]
    counts = torch.bincount(pair, minlength=16).double()
    total = float(w.sum())
    expected = torch.tensor([(w[i] / total * w[j] / (total - w[i])).item() if i != j else 0.0
                             for i in range(4) for j in range(4)], dtype=torch.float64) * rows
    keep = expected > 0
    assert (counts[~keep] == 0).all()
    statistic = float((((counts - expected) ** 2)[keep] / expected[keep]).sum())
    assert chi2_sf(statistic, int(keep.sum()) - 1) > P_MIN, counts


# ------------------------------------------------------------------------------- trunc_normal_
def _trunc_normal_model(dtype: torch.dtype, n: int, std: float, a: float, b: float, mean: float = 0.0) -> Callable[[], nn.Module]:
    def build() -> nn.Module:
        module = nn.Module()
        module.w = nn.Parameter(torch.empty(n, dtype=dtype))
        nn.init.trunc_normal_(module.w, mean=mean, std=std, a=a, b=b)
        return module

    return build


def portable_trunc_normal(dtype: torch.dtype, n: int, std: float, a: float, b: float, mean: float = 0.0,
                          seed: int = 0) -> torch.Tensor:
    recipe = initrecipe.record(_trunc_normal_model(dtype, n, std, a, b, mean), seed=seed, rng="portable")
    return initrecipe.replay(recipe)["w"].detach()


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_trunc_normal_no_boundary_values_small_std(dtype: torch.dtype) -> None:
    """PyTorch's regression test (test/nn/test_init.py), on a portable recipe: 10,000 elements,
    std 0.1, bounds +-2 (20 standard deviations out): no value on a bound, the truncated std."""
    w = portable_trunc_normal(dtype, 10_000, 0.1, -2.0, 2.0).detach()
    assert w.dtype == dtype
    assert not ((w == 2.0) | (w == -2.0)).any()
    assert torch.isfinite(w).all()
    assert abs(float(w.double().std()) - 0.1) < 0.1 * 0.05


TRUNC_CASES = {
    "vit std 0.02": (0.0, 0.02, -2.0, 2.0),
    "std 1, bounds +-2": (0.0, 1.0, -2.0, 2.0),
    "one-sided, narrow": (0.5, 1.0, 0.0, 1.0),
    "one tail": (0.0, 1.0, 1.0, 3.0),
}


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("case", sorted(TRUNC_CASES))
def test_trunc_normal_distribution(case: str, dtype: torch.dtype) -> None:
    mean, std, a, b = TRUNC_CASES[case]
    w = portable_trunc_normal(dtype, N_FAST, std, a, b, mean)
    far = tuple(bound for bound in (a, b) if abs(bound - mean) > 5 * std)
    check_sample(w, trunc_normal_target(mean, std, a, b), f"trunc_normal {case} {dtype}", far)


# ------------------------------------------------------------------------------- slow variants
@pytest.mark.slow
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("case", sorted(CASES))
def test_sampler_distribution_large(case: str, dtype: torch.dtype) -> None:
    kind, params, target = CASES[case]
    if case == "log_normal torch defaults" or (dtype == torch.float16 and case == "geometric small p"):
        target = Target(target.cdf, None, None, None, target.low, 65504.0 if dtype == torch.float16 else math.inf,
                        support=target.support)
    check_sample(draw(kind, params, dtype, N_SLOW, case + " large"), target, f"{case} {dtype} (large)")


@pytest.mark.slow
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("case", sorted(TRUNC_CASES))
def test_trunc_normal_distribution_large(case: str, dtype: torch.dtype) -> None:
    mean, std, a, b = TRUNC_CASES[case]
    w = portable_trunc_normal(dtype, N_SLOW, std, a, b, mean, seed=1)
    far = tuple(bound for bound in (a, b) if abs(bound - mean) > 5 * std)
    check_sample(w, trunc_normal_target(mean, std, a, b), f"trunc_normal {case} {dtype} (large)", far)
