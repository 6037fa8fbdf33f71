"""Throughput of the format 1.2 portable samplers: C kernel, torch-op reference and eager torch.

Usage: python tools/bench_new_samplers.py [--n N] [--repeats R]

For each elementwise sampler that format 1.2 added (cauchy, log_normal, geometric,
bernoulli_tensor, normal_tensor), in one process, on one float32 tensor of N elements (default
2**22) that is already touched: ``sample_`` (the C kernel), ``reference_sample_`` (the eager
torch-op path that accelerators run) and the eager torch operator it stands for (``cauchy_``,
``log_normal_``, ``geometric_``, ``torch.bernoulli(p, out=)``, ``torch.normal(mean, std, out=)``).
Prints samples/s of each and the kernel's ratio to the other two (best of ``--repeats``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Callable

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from initrecipe.rng.portable.samplers import KERNEL_AVAILABLE, reference_sample_, sample_  # noqa: E402
from timing import best_seconds  # noqa: E402  (tools/ is the script's folder)

KEY = (0x12345678, 0x9ABCDEF0)


def cases(n: int) -> dict[str, tuple[str, tuple, Callable[[torch.Tensor], object]]]:
    p = torch.rand(n)
    mean, std = torch.randn(n), torch.rand(n)
    return {
        "cauchy": ("cauchy", (0.0, 1.0), lambda t: t.cauchy_(0.0, 1.0)),
        "log_normal": ("log_normal", (0.0, 0.5), lambda t: t.log_normal_(0.0, 0.5)),
        "geometric": ("geometric", (0.3,), lambda t: t.geometric_(0.3)),
        "bernoulli_tensor": ("bernoulli_tensor", (p,), lambda t: torch.bernoulli(p, out=t)),
        "normal_tensor": ("normal_tensor", (mean, std), lambda t: torch.normal(mean, std, out=t)),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1 << 22)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    if not KERNEL_AVAILABLE:
        raise SystemExit("bench_new_samplers: the C kernel is not built")
    t = torch.empty(args.n)
    t.fill_(0.0)
    print(f"n = {args.n}, float32, {torch.get_num_threads()} threads, torch {torch.__version__}")
    print(f"{'sampler':<18} {'kernel /s':>11} {'torch-op /s':>12} {'eager /s':>11} {'vs torch-op':>12} {'vs eager':>9}")
    for name, (kind, params, eager) in cases(args.n).items():
        sample_(t[:4096], kind, KEY, tuple(q[:4096] if isinstance(q, torch.Tensor) else q for q in params))
        kernel = best_seconds(lambda: sample_(t, kind, KEY, params), args.repeats)
        reference = best_seconds(lambda: reference_sample_(t, kind, KEY, params), max(1, args.repeats // 2))
        torch_eager = best_seconds(lambda: eager(t), args.repeats)
        rate = [args.n / s for s in (kernel, reference, torch_eager)]
        print(f"{name:<18} {rate[0]:>11.3g} {rate[1]:>12.3g} {rate[2]:>11.3g} "
              f"{reference / kernel:>11.1f}x {torch_eager / kernel:>8.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
