"""Throughput of the portable samplers' CPU kernel against ``fill_`` on the same memory.

Usage: python tools/bench_portable_kernel.py [--n N] [--threads T] [--repeats R] [--variant V] [--json OUT]

Measures, in one process and on one float32 tensor of N elements (default 2**28, 1 GiB):

* warm: ``sample_(t, "normal" | "uniform", ...)`` into the already-touched tensor, against
  ``t.fill_(1.0)`` on the same tensor (the memory-write bound) and eager ``t.normal_()`` /
  ``t.uniform_()`` for reference;
* fresh: ``sample_(torch.empty(N), ...)`` into a newly allocated tensor (so the page faults are
  paid inside the call), against ``torch.empty(N).fill_(1.0)``.

Each figure is the best of ``--repeats`` runs.  Prints samples/s, GB/s (10**9 bytes of float32
output per second) and the fraction of the matching ``fill_``; ``--json`` also writes them to a
file.  The target is normal >= 2e9 samples/s with two threads.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from initrecipe import samplers  # noqa: E402
from initrecipe.samplers import KERNEL_AVAILABLE, sample_  # noqa: E402
from timing import best_seconds  # noqa: E402  (tools/ is the script's folder)

TARGET_NORMAL = 2e9
KEY = (0x12345678, 0x9ABCDEF0)
PARAMS = {"normal": (0.0, 0.02), "uniform": (-0.1, 0.1)}


def measure(n: int, repeats: int) -> dict[str, Any]:
    t = torch.empty(n, dtype=torch.float32)
    t.fill_(0.0)  # touch every page once: "warm"
    seconds: dict[str, float] = {}
    seconds["warm_fill"] = best_seconds(lambda: t.fill_(1.0), repeats)
    for kind, params in PARAMS.items():
        sample_(t[: 1 << 20], kind, KEY, params)  # thread pool, first-call costs
        seconds[f"warm_{kind}"] = best_seconds(lambda: sample_(t, kind, KEY, params), repeats)
    seconds["warm_eager_normal"] = best_seconds(lambda: t.normal_(0.0, 0.02), 1)
    seconds["warm_eager_uniform"] = best_seconds(lambda: t.uniform_(-0.1, 0.1), 1)
    t = torch.empty(0)  # free the warm tensor before the fresh measurements

    seconds["fresh_fill"] = best_seconds(lambda: torch.empty(n, dtype=torch.float32).fill_(1.0), repeats)
    for kind, params in PARAMS.items():
        seconds[f"fresh_{kind}"] = best_seconds(
            lambda: sample_(torch.empty(n, dtype=torch.float32), kind, KEY, params), repeats
        )

    rows: dict[str, Any] = {}
    for name, s in seconds.items():
        state = name.split("_", 1)[0]
        rows[name] = {
            "seconds": s,
            "samples_per_s": n / s,
            "gb_per_s": 4 * n / s / 1e9,
            "fraction_of_fill": seconds[f"{state}_fill"] / s,
        }
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=1 << 28, help="float32 elements (default 2**28: 1 GiB)")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: unchanged)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--variant", default=None, help="kernel variant: avx512f, avx2 or generic (default: best)")
    parser.add_argument("--json", type=Path, default=None, help="also write the results to this file")
    args = parser.parse_args(argv)

    if args.threads is not None:
        torch.set_num_threads(args.threads)
    variant = None
    if samplers._kernel is not None:
        if args.variant:
            samplers._kernel.set_variant(args.variant)
        variant = samplers._kernel.variant()
    rows = measure(args.n, args.repeats)
    result = {
        "n": args.n,
        "threads": torch.get_num_threads(),
        "kernel": KERNEL_AVAILABLE,
        "variant": variant,
        "torch": torch.__version__,
        "results": rows,
        "normal_target_samples_per_s": TARGET_NORMAL,
        "normal_meets_target": rows["warm_normal"]["samples_per_s"] >= TARGET_NORMAL,
    }

    print(f"n = {args.n:,} float32 ({4 * args.n / 2**30:.2f} GiB), threads = {result['threads']}, "
          f"kernel = {KERNEL_AVAILABLE} ({variant}), torch {torch.__version__}")
    print(f"{'measurement':22s} {'seconds':>9s} {'Gsamples/s':>11s} {'GB/s':>7s} {'of fill_':>9s}")
    for name, row in rows.items():
        print(f"{name:22s} {row['seconds']:9.4f} {row['samples_per_s'] / 1e9:11.3f} {row['gb_per_s']:7.2f} "
              f"{row['fraction_of_fill']:9.1%}")
    verdict = "meets" if result["normal_meets_target"] else "MISSES"
    print(f"normal (warm): {rows['warm_normal']['samples_per_s'] / 1e9:.2f}e9 samples/s, {verdict} the "
          f"{TARGET_NORMAL / 1e9:.0f}e9 target")
    if args.json is not None:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
