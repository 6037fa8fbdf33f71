"""How close a system's tensors are to eager's: bitwise, and in distribution (two-sample KS test).

A benchmark child calls :func:`snapshot` on the tensors it built: a sha256 per name, the tie
groups, and a fixed subsample of every tensor's values, written to one small file.  The parent
then calls :func:`compare` on eager's snapshot and the system's, so no process ever holds two
models.  Used by ``tools/bench.py``.
"""

from __future__ import annotations

import math
import os
import sys
from pathlib import Path
from typing import Any, Mapping

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_record_replay as base  # noqa: E402

# Values compared per tensor by the KS test: evenly spaced positions, the same in every process.
SAMPLE_SIZE = 16384
# A tensor "has eager's distribution" when the two-sample KS test does not reject it at the
# family-wise level KS_FAMILY_ALPHA, Bonferroni-corrected over the tensors tested in one comparison
# (about 150 per model: at a fixed 1e-3 per tensor, one in seven correct models would show a
# false "wrong distribution").  Real differences are far below that at this sample size: a
# uniform with normal(0, 0.02)'s mean and std gives p ~ 1e-23, kaiming_uniform_ ~ 1e-135,
# uninitialized memory 0.
KS_FAMILY_ALPHA = 0.01


def _sample(tensor: Any) -> Any:
    import torch

    flat = tensor.detach().reshape(-1)
    n = flat.numel()
    if n > SAMPLE_SIZE:
        idx = torch.linspace(0, n - 1, SAMPLE_SIZE, dtype=torch.float64).round().long()
        flat = flat[idx]
    return flat.to(torch.float64).clone()


def tie_groups(tensors: Mapping[str, Any]) -> list[list[str]]:
    """Sorted groups of two or more names that hold one tensor object."""
    groups: dict[int, list[str]] = {}
    for name, t in tensors.items():
        groups.setdefault(id(t), []).append(name)
    return sorted(sorted(g) for g in groups.values() if len(g) > 1)


def snapshot(tensors: Mapping[str, Any], path: str | os.PathLike, *, ties: bool = True) -> dict[str, Any]:
    """Write what :func:`compare` needs about ``tensors`` to ``path``; returns it too.

    ``ties=False`` for tensors read back from a file, where tie groups do not exist.
    """
    import torch

    snap = {
        "digests": {n: base.tensor_sha256(n, t) for n, t in tensors.items()},
        "shapes": {n: [list(t.shape), str(t.dtype)] for n, t in tensors.items()},
        "ties": tie_groups(tensors) if ties else None,
        "samples": {n: _sample(t) for n, t in tensors.items()},
    }
    tmp = Path(f"{path}.tmp")
    torch.save(snap, tmp)
    os.replace(tmp, path)
    return snap


def load_snapshot(path: str | os.PathLike) -> dict[str, Any]:
    import torch

    return torch.load(path, weights_only=True)


def kolmogorov_sf(x: float) -> float:
    """P(K > x) for the Kolmogorov distribution (``scipy.stats.kstwobign.sf``)."""
    if x <= 0:
        return 1.0
    if x < 0.2:  # the series converges slowly here; the value is 1 to 15 digits
        return 1.0
    total = 0.0
    for k in range(1, 101):
        term = math.exp(-2.0 * k * k * x * x)
        total += term if k % 2 else -term
        if term < 1e-17:
            break
    return min(1.0, max(0.0, 2.0 * total))


def ks_2samp(a: Any, b: Any) -> tuple[float, float]:
    """Two-sample Kolmogorov-Smirnov test: the statistic D and its asymptotic two-sided p-value.

    D is the largest distance between the two empirical CDFs (ties handled as
    ``scipy.stats.ks_2samp`` does); the p-value is the Kolmogorov distribution's tail at
    ``sqrt(n m / (n + m)) * D``.  A NaN on one side only gives D = 1.
    """
    import torch

    a = a.reshape(-1).to(torch.float64)
    b = b.reshape(-1).to(torch.float64)
    n, m = a.numel(), b.numel()
    if n == 0 or m == 0:
        raise ValueError("ks_2samp needs two non-empty samples")
    nan_a, nan_b = bool(torch.isnan(a).any()), bool(torch.isnan(b).any())
    if nan_a != nan_b:
        return 1.0, 0.0
    if nan_a:
        a, b = a[~torch.isnan(a)], b[~torch.isnan(b)]
        n, m = a.numel(), b.numel()
        if n == 0 or m == 0:
            return 0.0, 1.0
    a, _ = torch.sort(a)
    b, _ = torch.sort(b)
    both = torch.cat([a, b])
    cdf_a = torch.searchsorted(a, both, right=True).to(torch.float64) / n
    cdf_b = torch.searchsorted(b, both, right=True).to(torch.float64) / m
    d = float((cdf_a - cdf_b).abs().max())
    return d, kolmogorov_sf(math.sqrt(n * m / (n + m)) * d)


def compare(eager: Mapping[str, Any], got: Mapping[str, Any], *, names: str = "eager") -> dict[str, Any]:
    """Count ``got``'s tensors that are bitwise equal to eager's, and those with eager's distribution.

    ``names="eager"`` compares every name eager has (a name the system lacks counts as
    different); ``names="got"`` only the names ``got`` has (a checkpoint file, which stores
    tied tensors once and leaves non-persistent buffers out).
    """
    universe = sorted(eager["digests"]) if names == "eager" else sorted(got["digests"])
    bitwise, missing, not_bitwise, p_values = 0, [], [], {}
    for name in universe:
        if name not in got["digests"] or name not in eager["digests"]:
            missing.append(name)
        elif got["digests"][name] == eager["digests"][name]:
            bitwise += 1
        else:
            not_bitwise.append(name)
            same_kind = got["shapes"][name] == eager["shapes"][name]
            p_values[name] = ks_2samp(eager["samples"][name], got["samples"][name])[1] if same_kind else 0.0
    alpha = KS_FAMILY_ALPHA / max(1, len(p_values))
    not_distribution = [name for name in not_bitwise if p_values[name] < alpha]
    result: dict[str, Any] = {
        "tensors": len(universe),
        "bitwise": bitwise,
        "missing": missing,
        "not_bitwise": not_bitwise,
        "not_distribution": not_distribution,
        "distribution": bitwise + len(not_bitwise) - len(not_distribution),
        "ks_alpha_per_tensor": alpha,
        "min_ks_p": min(p_values.values(), default=None),
    }
    if names == "eager" and got.get("ties") is not None:
        result["ties_kept"] = got["ties"] == eager["ties"]
        result["tie_groups"] = len(got["ties"])
        result["eager_tie_groups"] = len(eager["ties"])
    return result
