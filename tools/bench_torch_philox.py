"""Operator count and time per chunk of the samplers' torch-op path: eager Philox words vs torch's kernel.

Usage: python tools/bench_torch_philox.py [--n N] [--repeats R] [--json OUT]

The torch-op path of ``initrecipe.rng.portable.samplers`` (what a GPU runs, and the CPU without the C kernel)
fills one chunk (``reference_samplers.REF_CHUNK`` = 2**20 elements by default) with

* *before*: Philox words from eager torch integer ops (``philox_words``; ``reference_sample_``);
* *after*: Philox words from torch's own kernel (``torch.func._random``, via
  ``initrecipe.rng.portable.torch_philox``), with the same transforms as torch ops.

For every sampler it counts the aten operators one chunk dispatches (a ``TorchDispatchMode``; on
a GPU each is about one kernel launch) and times the chunk on the CPU (best of ``--repeats``,
both in the same process, timed alternately), and checks that both give the same bits.  This is a CPU proxy for the
device path, not a GPU measurement.  Needs a torch whose ``torch.func._random`` passes the
self-check on the CPU (2.14 or later); otherwise it says so and exits with status 2.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
from collections import Counter
from pathlib import Path
from typing import Any, Callable

import torch
from torch.utils._python_dispatch import TorchDispatchMode

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from initrecipe.rng.portable import reference_samplers, samplers  # noqa: E402
from initrecipe.rng.portable import torch_philox  # noqa: E402
from initrecipe.rng.portable.philox import philox_words  # noqa: E402
from timing import best_seconds  # noqa: E402  (tools/ is the script's folder)

KEY = (0x12345678, 0x9ABCDEF0)
PARAMS = {"uniform": (-0.1, 0.1), "normal": (0.0, 0.02), "bernoulli": (0.25,), "randint": (-5, 10),
          "exponential": (2.0,)}


class _Count(TorchDispatchMode):
    """Counts the aten operators dispatched inside it."""

    def __init__(self) -> None:
        super().__init__()
        self.ops: Counter[str] = Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        self.ops[str(func.overloadpacket)] += 1
        return func(*args, **(kwargs or {}))


def count_ops(fn: Callable[[], Any]) -> int:
    with _Count() as counter:
        fn()
    return sum(counter.ops.values())


def interleaved(before: Callable[[], Any], after: Callable[[], Any], repeats: int) -> tuple[float, float]:
    """Best seconds of ``before`` and of ``after``, timed alternately (so that load changes hit both)."""
    best_before = best_after = float("inf")
    for _ in range(repeats):
        best_before = min(best_before, best_seconds(before, 1))
        best_after = min(best_after, best_seconds(after, 1))
    return best_before, best_after


def row(before: Callable[[], Any], after: Callable[[], Any], repeats: int) -> dict[str, Any]:
    seconds_before, seconds_after = interleaved(before, after, repeats)
    return {"ops_before": count_ops(before), "ops_after": count_ops(after),
            "seconds_before": seconds_before, "seconds_after": seconds_after}


def measure(n: int, repeats: int) -> dict[str, Any]:
    kernel, samplers._kernel = samplers._kernel, None  # the torch-op path on the CPU
    try:
        rows: dict[str, Any] = {}
        words_before = lambda: philox_words(KEY, 1, n)  # noqa: E731  (unaligned, like most chunks)
        words_after = lambda: torch_philox.device_words(KEY, 1, n, "cpu")  # noqa: E731
        assert torch.equal(words_before(), words_after())
        rows["words"] = row(words_before, words_after, repeats)
        for kind, params in PARAMS.items():
            dtype = torch.int64 if kind == "randint" else torch.float32
            out_before = torch.empty(n, dtype=dtype)
            out_after = torch.empty(n, dtype=dtype)
            before = lambda: samplers.reference_sample_(out_before, kind, KEY, params, [(1, n)])  # noqa: E731
            after = lambda: samplers.sample_(out_after, kind, KEY, params, [(1, n)])  # noqa: E731
            before()
            after()
            assert torch.equal(out_before.view(-1).view(torch.uint8), out_after.view(-1).view(torch.uint8)), kind
            rows[kind] = row(before, after, repeats)
        return rows
    finally:
        samplers._kernel = kernel


def cpu_name() -> str:
    """The CPU's model name (``/proc/cpuinfo``), else what ``platform`` knows."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else []


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=reference_samplers.REF_CHUNK, help="elements per chunk (default 2**20)")
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--json", metavar="OUT", help="also write the results as JSON")
    args = parser.parse_args(argv)
    if args.n > reference_samplers.REF_CHUNK:
        parser.error(f"--n is one chunk: at most {reference_samplers.REF_CHUNK}")
    found = torch_philox.status("cpu")
    if not found.usable:
        print(f"bench_torch_philox: torch's Philox kernel is not used on the CPU here: {found.reason}", file=sys.stderr)
        return 2
    load_before = load()
    rows = measure(args.n, args.repeats)
    result = {"torch": torch.__version__, "method": found.method, "n": args.n, "threads": torch.get_num_threads(),
              "cpu": cpu_name(), "load_before": load_before, "load_after": load(), "rows": rows}
    print(f"torch {torch.__version__} ({found.method}), {result['cpu']}, {torch.get_num_threads()} threads, one chunk "
          f"of {args.n} elements on the CPU (a proxy for the device path), best of {args.repeats}, alternating; "
          f"load {load_before} -> {result['load_after']}")
    print(f"{'':12} {'ops before':>10} {'ops after':>10} {'ms before':>10} {'ms after':>10} {'speed-up':>9}")
    for name, r in rows.items():
        print(f"{name:12} {r['ops_before']:>10} {r['ops_after']:>10} {r['seconds_before'] * 1e3:>10.2f} "
              f"{r['seconds_after'] * 1e3:>10.2f} {r['seconds_before'] / r['seconds_after']:>8.2f}x")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
