"""Measure the rates behind initrecipe's replay work estimate (``initrecipe/analysis/cost.py``) on this machine.

Usage: flock /tmp/initrecipe-heavy.lock python tools/calibrate_work.py [--quick] [--json OUT]

Every replay is estimated, before it runs, in *reference seconds*: the time the operators it would
execute take on the machine the constants in ``initrecipe/analysis/cost.py`` were measured on.  This tool
measures those rates with torch's own CPU kernels, the way replay calls them (all threads torch
uses by default), and prints, per cost class, the measured rate next to the constant the package
uses, so that the constants can be re-derived and checked on another machine:

* memory traffic (``copy_``, ``add``, ``fill_``, ``sum``: bytes read plus bytes written per second);
* elementwise arithmetic and transcendental functions (elements per second, slowest dtype);
* random fills with a ``torch.Generator`` (``normal_``, ``uniform_``, ``bernoulli_``, ...: elements
  per second, slowest), ``randperm`` (elements per second) and the portable samplers;
* ``mm`` in each dtype (floating-point operations per second, 2·m·n·k per product);
* ``sort`` (n·log2(n) comparisons per second) and ``cumsum`` (elements per second);
* QR, SVD, eigh, Cholesky and triangular solves (textbook operation counts per second);
* the fixed cost of one executed instruction, and of checking one instruction on the meta device.

Finally it replays a few small time-bomb-like programs and compares the estimate with the measured
time (the ratio should be near 1; the estimate is a guard, not a profiler).  Numbers measured while
the machine is shared are noisy: run it under the heavy lock.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any, Callable

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from initrecipe.analysis import cost as work  # noqa: E402
from initrecipe.program.ir import Call, GenRef, Ref, RngSeed  # noqa: E402
from initrecipe.format.recipe import Recipe, TensorEntry  # noqa: E402
from initrecipe.runtime.replay import replay  # noqa: E402
from initrecipe.runtime.replay_plan import prepare_replay  # noqa: E402

MiB = 1 << 20


def best(fn: Callable[[], Any], repeats: int = 3) -> float:
    fn()  # warm up: thread pool, first-call costs, page faults
    out = math.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        out = min(out, time.perf_counter() - t0)
    return out


def rate(amount: float, seconds: float) -> float:
    return amount / seconds


def measure(quick: bool) -> dict[str, dict[str, float]]:
    scale = 4 if quick else 1
    g = torch.Generator().manual_seed(0)
    n = (64 * MiB) // scale  # elements
    out: dict[str, dict[str, float]] = {}

    a = torch.ones(n)
    b = torch.ones(n)
    out["memory (bytes/s)"] = {
        "fill_ f32": rate(4 * n, best(lambda: a.fill_(1.5))),
        "copy_ f32": rate(8 * n, best(lambda: a.copy_(b))),
        "add f32": rate(12 * n, best(lambda: torch.add(a, b))),
        "sum f32": rate(4 * n, best(lambda: a.sum())),
        "clone f32": rate(8 * n, best(lambda: a.clone())),
    }
    m = n // 4
    elementwise: dict[str, float] = {}
    transcendental: dict[str, float] = {}
    for dtype in (torch.float32, torch.float64, torch.bfloat16, torch.float16):
        x = torch.rand(m, generator=g).to(dtype)
        y = torch.rand(m, generator=g).to(dtype)
        name = str(dtype).removeprefix("torch.")
        elementwise[f"add {name}"] = rate(m, best(lambda: torch.add(x, y)))
        elementwise[f"mul_ {name}"] = rate(m, best(lambda: x.mul_(1.0)))
        elementwise[f"clamp_ {name}"] = rate(m, best(lambda: x.clamp_(-2.0, 2.0)))
        transcendental[f"exp {name}"] = rate(m, best(lambda: torch.exp(x)))
        transcendental[f"erfinv {name}"] = rate(m, best(lambda: torch.erfinv(x)))
        transcendental[f"pow {name}"] = rate(m, best(lambda: torch.pow(x, y)))
        transcendental[f"tanh {name}"] = rate(m, best(lambda: torch.tanh(x)))
        transcendental[f"div {name}"] = rate(m, best(lambda: torch.div(x, y)))
    out["elementwise (elements/s)"] = elementwise
    out["transcendental (elements/s)"] = transcendental

    random: dict[str, float] = {}
    for dtype in (torch.float32, torch.float64, torch.bfloat16):
        x = torch.empty(m, dtype=dtype)
        name = str(dtype).removeprefix("torch.")
        random[f"normal_ {name}"] = rate(m, best(lambda: x.normal_(0.0, 1.0, generator=g)))
        random[f"uniform_ {name}"] = rate(m, best(lambda: x.uniform_(-1.0, 1.0, generator=g)))
        random[f"bernoulli_ {name}"] = rate(m, best(lambda: x.bernoulli_(0.3, generator=g)))
        random[f"exponential_ {name}"] = rate(m, best(lambda: x.exponential_(1.0, generator=g)))
        random[f"cauchy_ {name}"] = rate(m, best(lambda: x.cauchy_(generator=g)))
        random[f"log_normal_ {name}"] = rate(m, best(lambda: x.log_normal_(generator=g)))
        random[f"geometric_ {name}"] = rate(m, best(lambda: x.geometric_(0.3, generator=g)))
        random[f"random_ {name}"] = rate(m, best(lambda: x.random_(0, 100, generator=g)))
    z = torch.empty(m)
    random["randn"] = rate(m, best(lambda: torch.randn(m, generator=g)))
    random["poisson (rate 50)"] = rate(m // 8, best(lambda: torch.poisson(torch.full((m // 8,), 50.0), generator=g)))
    from initrecipe.rng.portable.samplers import KERNEL_AVAILABLE, reference_sample_, sample_

    key = (1, 2)
    random["portable normal (kernel)" if KERNEL_AVAILABLE else "portable normal (torch ops)"] = rate(
        m, best(lambda: sample_(z, "normal", key, (0.0, 1.0))))
    small = torch.empty(m // 16)
    random["portable normal (torch ops)"] = rate(m // 16, best(lambda: reference_sample_(small, "normal", key, (0.0, 1.0)), 1))
    out["random fills (elements/s)"] = random
    k = (1 << 24) // scale
    out["randperm (elements/s)"] = {
        "randperm 2**24": rate(k, best(lambda: torch.randperm(k, generator=g), 1)),
        "randperm 2**20": rate(1 << 20, best(lambda: torch.randperm(1 << 20, generator=g))),
    }

    matmul: dict[str, float] = {}
    for dtype, size in ((torch.float32, 1024), (torch.float64, 1024), (torch.bfloat16, 512),
                        (torch.float16, 512), (torch.complex64, 512), (torch.int64, 256), (torch.int32, 256)):
        s = size // (2 if quick else 1)
        x = torch.ones(s, s, dtype=dtype)
        flops = 2 * s**3 * (4 if dtype.is_complex else 1)
        matmul[f"mm {str(dtype).removeprefix('torch.')}"] = rate(flops, best(lambda: torch.mm(x, x)))
    out["mm (FLOP/s)"] = matmul

    s = (1 << 22) // scale
    x = torch.rand(s, generator=g)
    xi = torch.randint(0, 1 << 40, (s,), generator=g)
    comparisons = s * math.log2(s)
    out["sort (comparisons/s)"] = {
        "sort f32": rate(comparisons, best(lambda: torch.sort(x))),
        "sort int64": rate(comparisons, best(lambda: torch.sort(xi))),
        "argsort f32": rate(comparisons, best(lambda: torch.argsort(x))),
        "topk f32 (k = n/2)": rate(comparisons, best(lambda: torch.topk(x, s // 2))),
    }
    out["cumsum (elements/s)"] = {
        "cumsum f32": rate(n, best(lambda: torch.cumsum(a, 0))),
        "cumsum f64": rate(n // 2, best(lambda: torch.cumsum(a[: n // 2].double(), 0))),
        "cumprod f32": rate(n, best(lambda: torch.cumprod(a, 0))),
    }

    linalg: dict[str, float] = {}
    for dtype in (torch.float32, torch.float64):
        q = 512 // (2 if quick else 1)
        name = str(dtype).removeprefix("torch.")
        x = torch.rand(q, q, generator=g, dtype=dtype)
        spd = x @ x.T + q * torch.eye(q, dtype=dtype)
        cube = q**3
        linalg[f"linalg_qr {name}"] = rate(cube, best(lambda: torch.linalg.qr(x)))
        linalg[f"linalg_svd {name}"] = rate(cube, best(lambda: torch.linalg.svd(x)))
        linalg[f"linalg_eigh {name}"] = rate(cube, best(lambda: torch.linalg.eigh(spd)))
        linalg[f"cholesky {name}"] = rate(cube, best(lambda: torch.linalg.cholesky_ex(spd)))
        linalg[f"solve_triangular {name}"] = rate(cube, best(lambda: torch.linalg.solve_triangular(spd, x, upper=False)))
        tall = torch.rand(4 * q, q // 2, generator=g, dtype=dtype)
        linalg[f"linalg_qr tall {name}"] = rate(4 * q * (q // 2) ** 2, best(lambda: torch.linalg.qr(tall)))
    out["linalg (m·n·min(m,n) per second)"] = linalg

    out["per instruction (instructions/s)"] = instruction_rates(2000 if quick else 20000)
    return out


def instruction_rates(count: int) -> dict[str, float]:
    """Execution and checking cost of one cheap instruction (a view), in instructions per second."""
    program = [Call("aten.zeros.default", (0,), ([4],), {})]
    program += [Call("aten.detach.default", (i,), (Ref(i - 1),), {}) for i in range(1, count)]
    recipe = Recipe(rng="torch", seed=None, generators=0, program=program,
                    tensors=[TensorEntry("t", count - 1, "buffer", (4,), torch.float32, False, True)])
    check_s = best(lambda: prepare_replay(recipe), 1)
    replay_s = best(lambda: replay(recipe), 1)
    adds = [Call("aten.zeros.default", (0,), ([4],), {})]
    adds += [Call("aten.add_.Tensor", (None,), (Ref(0), Ref(0)), {}) for _ in range(1, count)]
    add_recipe = Recipe(rng="torch", seed=None, generators=0, program=adds,
                        tensors=[TensorEntry("t", 0, "buffer", (4,), torch.float32, False, True)])
    add_check = best(lambda: prepare_replay(add_recipe), 1)
    add_replay = best(lambda: replay(add_recipe), 1)
    seeds = [Call("aten.empty.memory_format", (0,), ([4],), {})] + [RngSeed(0, i) for i in range(count)]
    seeds.append(Call("aten.normal_.default", (None,), (Ref(0),), {"generator": GenRef(0)}))
    seed_recipe = Recipe(rng="torch", seed=None, generators=1, program=seeds,
                         tensors=[TensorEntry("t", 0, "buffer", (4,), torch.float32, False, True)])
    seed_replay = best(lambda: replay(seed_recipe), 1)
    return {
        "check a view": count / check_s,
        "execute a view (replay minus check)": count / max(replay_s - check_s, 1e-9),
        "check add_": count / add_check,
        "execute add_ (replay minus check)": count / max(add_replay - add_check, 1e-9),
        "replay RNG_SEED (check included)": count / seed_replay,
    }


def constants() -> dict[str, float]:
    """The rates initrecipe/analysis/cost.py uses, for comparison."""
    return {name: getattr(work, name) for name in dir(work) if name.isupper() and isinstance(getattr(work, name), float)}


def compare_estimates(quick: bool) -> list[dict[str, Any]]:
    """Estimated against measured seconds for a few programs replayed for real."""
    size = 512 if quick else 1024
    cases = {
        f"8 chained mm of {size}x{size} f32": _chain("aten.mm.default", size, 8),
        f"4 chained linalg_qr of {size // 2}x{size // 2} f32": _chain("aten.linalg_qr.default", size // 2, 4),
        f"normal_ over {16 if quick else 64} MiB f32": _fill("aten.normal_.default", (16 if quick else 64) * MiB // 4),
        f"uniform_ over {16 if quick else 64} MiB f32": _fill("aten.uniform_.default", (16 if quick else 64) * MiB // 4),
    }
    rows = []
    for name, recipe in cases.items():
        estimate = prepare_replay(recipe).work.seconds
        measured = best(lambda: replay(recipe), 1)
        rows.append({"program": name, "estimated_s": estimate, "measured_s": measured, "ratio": estimate / measured})
    return rows


def _chain(op: str, size: int, count: int) -> Recipe:
    program: list[Any] = [Call("aten.ones.default", (0,), ([size, size],), {})]
    value = 0
    for _ in range(count):
        outs = (value + 1,) if op == "aten.mm.default" else (value + 1, None)
        args = (Ref(value), Ref(0)) if op == "aten.mm.default" else (Ref(value),)
        program.append(Call(op, outs, args, {}))
        value += 1
    return Recipe(rng="torch", seed=None, generators=0, program=program,
                  tensors=[TensorEntry("t", value, "buffer", (size, size), torch.float32, False, True)])


def _fill(op: str, numel: int) -> Recipe:
    program = [RngSeed(0, 0), Call("aten.empty.memory_format", (0,), ([numel],), {}),
               Call(op, (None,), (Ref(0),), {"generator": GenRef(0)})]
    return Recipe(rng="torch", seed=None, generators=1, program=program,
                  tensors=[TensorEntry("t", 0, "buffer", (numel,), torch.float32, False, True)])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes (a smoke test, not a calibration)")
    parser.add_argument("--json", metavar="OUT", help="also write the numbers to this file")
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, load {os.getloadavg()}", flush=True)
    measured = measure(args.quick)
    for group, values in measured.items():
        print(f"\n{group}")
        for name, value in values.items():
            print(f"  {name:<40} {value:12.4g}")
    print("\ninitrecipe.work constants")
    for name, value in constants().items():
        print(f"  {name:<40} {value:12.4g}")
    rows = compare_estimates(args.quick)
    print("\nestimate against a real replay")
    for row in rows:
        print(f"  {row['program']:<44} estimated {row['estimated_s']:8.3f} s  measured {row['measured_s']:8.3f} s  "
              f"ratio {row['ratio']:.2f}")
    if args.json:
        Path(args.json).write_text(json.dumps({"measured": measured, "constants": constants(), "estimates": rows},
                                              indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
