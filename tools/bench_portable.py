"""Portable replay of a Llama-1B-sized model against eager init and against ``fill_`` bandwidth, per kernel path.

Usage: python tools/bench_portable.py [--repeats N] [--model llama-1b|llama-tiny] [--paths P,Q|all] [--json OUT]

Every measurement runs in a fresh process, and each repeat runs every kind once, interleaved, so
each one pays for its own page faults, as a user's process does, and load from other processes
spreads over all of them:

* eager: ``torch.manual_seed(0); LlamaForCausalLM(cfg)`` (wall time, peak RSS);
* portable replay: ``initrecipe.replay(recipe)`` of a recipe recorded with ``rng="portable"``
  (wall time including loading the recipe, peak RSS, user and system CPU time).  The same process
  then measures, on the same (already touched) bytes, ``fill_`` and the portable ``normal``
  sampler: generation throughput without page faults;
* per kernel path (``--paths``: avx512f, avx2, generic, or all the CPU runs), the replay runs with
  ``INITRECIPE_KERNEL_PATH`` set and huge pages as the default decides; one more replay per
  repeat runs with the opposite ``INITRECIPE_HUGE_PAGES`` (the first path), to show what huge
  pages change;
* the floors: ``fill_(1.0)`` into fresh tensors of the replay's shapes and dtypes, each in its own
  fresh process, once with 4 KiB pages and once advised to use huge pages
  (:mod:`initrecipe.support.hugepages`, forced on).  No replay, which must write the same bytes
  into fresh memory, can beat the faster of the two; ``eager time / floor`` is the most any replay
  can gain over eager on this machine.  (Measured in the replay's process after freeing its
  tensors, ``fill_`` would reuse memory the process has just handed back, which on a virtual
  machine whose hypervisor reclaims free memory costs much less than what a fresh process meets.)

Prints the CPU model, the kernel path, the load average and a table per path, with the ratios:
eager time / replay time (target >= 8), replay peak RSS below eager's, replay throughput as a
fraction of the huge-page ``fill_`` into fresh memory (target >= 50%), and the replay against the
floor.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import bench_record_replay as base  # noqa: E402
from timing import cpu_model, load_average  # noqa: E402

TARGET_SPEEDUP = 8.0
TARGET_FILL_FRACTION = 0.50


def _cpu_seconds() -> tuple[float, float, int]:
    """User and system CPU seconds and minor page faults of this process so far."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime, usage.ru_stime, usage.ru_minflt


def _cpu_since(start: tuple[float, float, int]) -> dict[str, float]:
    user, system, faults = _cpu_seconds()
    return {"user_seconds": user - start[0], "system_seconds": system - start[1], "minor_faults": faults - start[2]}


def child_portable(path: str) -> dict[str, Any]:
    import torch

    import initrecipe
    from initrecipe.support import hugepages
    from initrecipe.rng.portable.samplers import KERNEL_AVAILABLE, kernel_path, sample_

    rss_after_imports = base.proc_status_kib("VmRSS")
    cpu0 = _cpu_seconds()
    t0 = time.perf_counter()
    tensors = initrecipe.replay(path)
    seconds = time.perf_counter() - t0
    cpu = _cpu_since(cpu0)
    peak = base.maxrss_kib()
    unique = {id(t): t.detach() for t in tensors.values()}
    shapes = [[list(t.shape), str(t.dtype).removeprefix("torch.")] for t in unique.values()]
    nbytes = sum(t.numel() * t.element_size() for t in unique.values())
    digest = base.hash_tensors(tensors)

    floats = [t for t in unique.values() if t.dtype == torch.float32]
    t0 = time.perf_counter()
    for t in floats:
        t.fill_(1.0)
    warm_fill = time.perf_counter() - t0
    t0 = time.perf_counter()
    for t in floats:
        sample_(t, "normal", (1, 2), (0.0, 0.02))
    warm_normal = time.perf_counter() - t0
    warm_bytes = sum(t.numel() * 4 for t in floats)
    return {
        "kernel_path": kernel_path(),
        "huge_pages": hugepages.enabled(),  # what the replay above did
        "seconds": seconds,
        **cpu,
        "peak_rss_kib": peak,
        "rss_after_imports_kib": rss_after_imports,
        "bytes": nbytes,
        "shapes": shapes,
        "sha256": digest,
        "warm_fill_seconds": warm_fill,
        "warm_normal_seconds": warm_normal,
        "warm_bytes": warm_bytes,
        "kernel": KERNEL_AVAILABLE,
        "threads": torch.get_num_threads(),
    }


def child_fill(shapes_path: str) -> dict[str, Any]:
    """``fill_(1.0)`` into fresh tensors of the shapes in ``shapes_path``, allocated as replay allocates
    them (huge pages as ``INITRECIPE_HUGE_PAGES`` decides): the floor for a replay into fresh memory."""
    import torch

    from initrecipe.support import hugepages

    layouts = [(shape, torch.empty(shape, device="meta").stride(), getattr(torch, dtype_name))
               for shape, dtype_name in json.loads(Path(shapes_path).read_text())]
    cpu0 = _cpu_seconds()
    t0 = time.perf_counter()
    tensors = [hugepages.empty_strided(shape, stride, dtype).fill_(1) for shape, stride, dtype in layouts]
    seconds = time.perf_counter() - t0
    return {"seconds": seconds, **_cpu_since(cpu0), "huge_pages": hugepages.enabled(),
            "bytes": sum(t.numel() * t.element_size() for t in tensors)}


def run_child(args: list[str]) -> dict[str, Any]:
    """This script in ``--child`` mode in a fresh process (see ``bench_record_replay.run_child``)."""
    return base.run_child(args, script=__file__)


def _child_with(env: dict[str, str], args: list[str]) -> dict[str, Any]:
    """run_child with extra environment variables (the child inherits os.environ)."""
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        return run_child(args)
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def bench(model: str, repeats: int, workdir: str, paths: list[str]) -> dict[str, Any]:
    import initrecipe
    from initrecipe.support import hugepages

    path = os.path.join(workdir, f"{model}-portable.recipe")
    shapes_path = os.path.join(workdir, "shapes.json")
    model_fn = base.model_fn(model)  # imports transformers: not part of recording
    t0 = time.perf_counter()
    recipe = initrecipe.record(model_fn, seed=0, rng="portable", sync_rng=False)
    record_seconds = time.perf_counter() - t0
    recipe.save(path)
    eager: list[dict[str, Any]] = []
    runs: dict[str, list[dict[str, Any]]] = {p: [] for p in paths}
    other: list[dict[str, Any]] = []
    fills: dict[str, list[dict[str, Any]]] = {"4k": [], "huge": []}
    flipped = "0" if hugepages.enabled() else "1"  # the default's opposite, for comparison
    loads = [load_average()]
    for _ in range(repeats):  # interleaved: load from other processes spreads over all of them
        eager.append(run_child(["eager", model]))
        for p in paths:
            runs[p].append(_child_with({"INITRECIPE_KERNEL_PATH": p}, ["portable", path]))
        other.append(_child_with({"INITRECIPE_KERNEL_PATH": paths[0], "INITRECIPE_HUGE_PAGES": flipped},
                                 ["portable", path]))
        Path(shapes_path).write_text(json.dumps(runs[paths[0]][0]["shapes"]))
        fills["4k"].append(_child_with({"INITRECIPE_HUGE_PAGES": "0"}, ["fill", shapes_path]))
        fills["huge"].append(_child_with({"INITRECIPE_HUGE_PAGES": "1"}, ["fill", shapes_path]))
        loads.append(load_average())
    digests = {r["sha256"] for rows in [*runs.values(), other] for r in rows}
    floors = {kind: statistics.median(r["seconds"] for r in rows) for kind, rows in fills.items()}
    results = {p: summarize(model, repeats, record_seconds, path, eager, rows, floors) for p, rows in runs.items()}
    results[f"{paths[0]}, INITRECIPE_HUGE_PAGES={flipped}"] = summarize(model, repeats, record_seconds, path, eager,
                                                                         other, floors)
    return {"cpu": cpu_model(), "loads": loads, "replays_identical": len(digests) == 1, "paths": results,
            "fill_runs": fills}


def summarize(model: str, repeats: int, record_seconds: float, path: str, eager: list[dict[str, Any]],
              portable: list[dict[str, Any]], floors: dict[str, float]) -> dict[str, Any]:
    """Medians and ratios of one path's runs against the eager and ``fill_`` runs of the same session."""

    def med(rows: list[dict[str, Any]], key: str) -> float:
        return statistics.median(r[key] for r in rows)

    gib = portable[0]["bytes"] / 2**30
    warm_gib = portable[0]["warm_bytes"] / 2**30
    result = {
        "model": model,
        "repeats": repeats,
        "record_seconds": record_seconds,
        "recipe_bytes": os.path.getsize(path),
        "weights_gib": gib,
        "eager_seconds": med(eager, "seconds"),
        "replay_seconds": med(portable, "seconds"),
        "replay_user_seconds": med(portable, "user_seconds"),
        "replay_system_seconds": med(portable, "system_seconds"),
        "replay_minor_faults": med(portable, "minor_faults"),
        "eager_peak_rss_mib": med(eager, "peak_rss_kib") / 1024,
        "replay_peak_rss_mib": med(portable, "peak_rss_kib") / 1024,
        "fresh_fill_seconds": floors["4k"],
        "fresh_hugepage_fill_seconds": floors["huge"],
        "warm_fill_seconds": med(portable, "warm_fill_seconds"),
        "warm_normal_seconds": med(portable, "warm_normal_seconds"),
        "kernel": portable[0]["kernel"],
        "kernel_path": portable[0]["kernel_path"],
        "huge_pages": portable[0]["huge_pages"],
        "threads": portable[0]["threads"],
        "eager_runs": [r["seconds"] for r in eager],
        "replay_runs": [r["seconds"] for r in portable],
    }
    floor = min(floors.values())
    result["speedup"] = result["eager_seconds"] / result["replay_seconds"]
    result["speedup_bound"] = result["eager_seconds"] / floor
    result["replay_over_floor"] = result["replay_seconds"] / floor
    result["replay_gib_per_s"] = gib / result["replay_seconds"]
    result["fresh_fill_gib_per_s"] = gib / result["fresh_fill_seconds"]
    result["replay_fraction_of_fresh_fill"] = result["replay_gib_per_s"] / result["fresh_fill_gib_per_s"]
    result["fresh_hugepage_fill_gib_per_s"] = gib / result["fresh_hugepage_fill_seconds"]
    result["replay_fraction_of_hugepage_fill"] = result["replay_gib_per_s"] / result["fresh_hugepage_fill_gib_per_s"]
    result["warm_fill_gib_per_s"] = warm_gib / result["warm_fill_seconds"]
    result["warm_normal_gib_per_s"] = warm_gib / result["warm_normal_seconds"]
    result["warm_normal_fraction_of_warm_fill"] = result["warm_normal_gib_per_s"] / result["warm_fill_gib_per_s"]
    return result


def table(r: dict[str, Any], cpu: str) -> str:
    ok = lambda good: "ok" if good else "MISSED"  # noqa: E731
    tag = f"[{cpu}, path {r['kernel_path']}, huge pages {'on' if r['huge_pages'] else 'off'}, {r['threads']} threads]"
    lines = [
        f"{tag} model {r['model']}: {r['weights_gib']:.2f} GiB of weights, recipe {r['recipe_bytes']} bytes, "
        f"recorded in {r['record_seconds']:.2f} s",
        f"  eager build            {r['eager_seconds']:8.2f} s   peak RSS {r['eager_peak_rss_mib']:8.0f} MiB",
        f"  portable replay        {r['replay_seconds']:8.2f} s   peak RSS {r['replay_peak_rss_mib']:8.0f} MiB; "
        f"CPU {r['replay_user_seconds']:.2f} s user + {r['replay_system_seconds']:.2f} s system, "
        f"{r['replay_minor_faults']:,.0f} page faults",
        f"  speedup                {r['speedup']:8.2f} x   (target >= {TARGET_SPEEDUP:g}: "
        f"{ok(r['speedup'] >= TARGET_SPEEDUP)}); RSS lower: {ok(r['replay_peak_rss_mib'] < r['eager_peak_rss_mib'])}",
        f"  fill_ into fresh memory, own process: 4 KiB pages {r['fresh_fill_seconds']:.2f} s "
        f"({r['fresh_fill_gib_per_s']:.2f} GiB/s), huge pages {r['fresh_hugepage_fill_seconds']:.2f} s "
        f"({r['fresh_hugepage_fill_gib_per_s']:.2f} GiB/s)",
        f"  replay throughput      {r['replay_gib_per_s']:8.2f} GiB/s: {100 * r['replay_fraction_of_hugepage_fill']:.0f}% "
        f"of huge-page fill_ (target >= {100 * TARGET_FILL_FRACTION:.0f}%: "
        f"{ok(r['replay_fraction_of_hugepage_fill'] >= TARGET_FILL_FRACTION)}), "
        f"{100 * r['replay_fraction_of_fresh_fill']:.0f}% of 4 KiB-page fill_",
        f"  floor                  replay takes {r['replay_over_floor']:.2f}x the faster fill_; no replay can beat "
        f"{r['speedup_bound']:.2f}x eager here",
        f"  normal sampler, warm   {r['warm_normal_gib_per_s']:8.2f} GiB/s vs fill_ into touched memory "
        f"{r['warm_fill_gib_per_s']:.2f} GiB/s: {100 * r['warm_normal_fraction_of_warm_fill']:.0f}%",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="llama-1b", choices=["llama-1b", "llama-tiny"])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--paths", default="best",
                        help="kernel paths, comma-separated (avx512f, avx2, generic), 'all' (every one the CPU "
                             "runs) or 'best' (default)")
    parser.add_argument("--json", metavar="OUT", help="also write the results as JSON")
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        kind, arg = args.child
        children = {"eager": base.child_eager, "portable": child_portable, "fill": child_fill}
        out = children[kind](arg)
        print(json.dumps(out))
        return 0
    from initrecipe.rng.portable import samplers

    if args.paths == "all":
        paths = list(samplers._kernel.variants()) if samplers._kernel is not None else ["best"]
    elif args.paths == "best":
        paths = [samplers._kernel.variants()[0] if samplers._kernel is not None else "best"]
    else:
        paths = args.paths.split(",")
    with tempfile.TemporaryDirectory() as workdir:
        result = bench(args.model, args.repeats, workdir, paths)
    print(f"CPU {result['cpu']}; load average before, after each repeat: {' | '.join(result['loads'])}")
    for r in result["paths"].values():
        print(table(r, result["cpu"]))
    print(f"replays bitwise identical across runs and paths: {result['replays_identical']}")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
