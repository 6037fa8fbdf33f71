"""Benchmark the safety passes: every pass over the crafted 1 MB files, at 1x, 2x and 4x their size
(linear passes take twice and four times as long), the time to refuse each time bomb, and the work
estimate of real models against the default budget.

Usage: flock /tmp/initrecipe-heavy.lock python tools/bench_attacks.py [--quick] [--json OUT]

* Passes: load, check, show (summary, text and JSON), sliceable_names, planning (prepare_replay),
  sharded planning (iter_replay with a shard of every tensor) on tools/make_attacks.py's tie and
  view files (rng 'torch' and 'portable').  Each timing is the best of 3 runs.
* Refusals: seconds from bytes to the exception for every refused attack of tests/attacks/.
* Budgets: records Llama-1B and Llama-7B-sized configs (``transformers``, lazily: no weights are
  allocated), and plans their replay with the default ``max_work`` (``max_bytes`` raised so that the
  memory limit does not stop the planning first; nothing is allocated): the estimate must be far
  under the default budget.  ``--quick`` uses a tiny Llama instead, and 1x/2x sizes only.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import initrecipe  # noqa: E402
import make_attacks  # noqa: E402
from initrecipe import Shard  # noqa: E402
from initrecipe.runtime.replay import iter_replay, sliceable_names  # noqa: E402
from initrecipe.runtime.replay_plan import prepare_replay  # noqa: E402
from initrecipe.inspect.show import summarize  # noqa: E402
from initrecipe.inspect.check import check  # noqa: E402
from timing import best_seconds  # noqa: E402  (tools/ is the script's folder)

MAX_BYTES = 4 << 30
PASS_FILES = ["tied_entries", "views_of_one_storage", "tied_entries_portable", "views_of_one_storage_portable"]


def passes(data: bytes) -> dict[str, float]:
    recipe = initrecipe.load(data)
    shards = {e.name: Shard(0, 0, 1) for e in recipe.tensors if e.shape}

    def show() -> None:
        summary = summarize(recipe)
        summary.text()
        summary.to_json()

    timings = {
        "load": best_seconds(lambda: initrecipe.load(data)),
        "check": best_seconds(lambda: check(data, max_bytes=MAX_BYTES)),
        "show": best_seconds(show),
        "sliceable_names": best_seconds(lambda: sliceable_names(recipe)),
        "plan": best_seconds(lambda: prepare_replay(recipe, max_bytes=MAX_BYTES)),
    }
    if shards:
        timings["sharded plan"] = best_seconds(lambda: iter_replay(recipe, shards=shards, max_bytes=MAX_BYTES))
    return timings


def refusals() -> dict[str, float]:
    table = json.loads((Path(__file__).resolve().parent.parent / "tests" / "attacks" / "outcomes.json").read_text())
    out = {}
    for name, entry in table.items():
        case = entry["cases"][0]
        if "raises" not in case:
            continue
        data = make_attacks.build(name)
        kwargs = {"max_bytes": MAX_BYTES, **case.get("kwargs", {})}

        def refuse() -> None:
            try:
                initrecipe.replay(data, **kwargs)
            except initrecipe.RecipeError:
                return
            raise AssertionError(f"{name} replayed")

        out[name] = best_seconds(refuse, repeats=1)
    return out


def budgets(quick: bool) -> dict[str, dict[str, Any]]:
    from bench_record_replay import LLAMA_CONFIGS
    from transformers import LlamaConfig, LlamaForCausalLM

    out = {}
    for name in (["llama-tiny"] if quick else ["llama-1b", "llama-7b"]):
        config = LlamaConfig(**LLAMA_CONFIGS[name])
        for rng in ("torch", "portable"):
            start = time.perf_counter()
            recipe = initrecipe.record(lambda: LlamaForCausalLM(config), seed=0, rng=rng)
            recorded = time.perf_counter() - start
            start = time.perf_counter()
            plan = prepare_replay(recipe, max_bytes=1 << 50)  # default max_work
            planned = time.perf_counter() - start
            work = plan.work
            out[f"{name} rng={rng}"] = {
                "parameters": sum(e.numel for e in recipe.tensors), "instructions": len(recipe.program),
                "estimate_s": round(work.seconds, 1), "budget_s": round(work.budget, 1),
                "fraction": round(work.seconds / work.budget, 3), "record_s": round(recorded, 2),
                "plan_s": round(planned, 2),
            }
            print(f"  {name} rng={rng}: {out[f'{name} rng={rng}']}", flush=True)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    with open("/proc/loadavg") as f:
        load = f.read().strip()
    print(f"load before: {load}")
    result: dict[str, Any] = {"loadavg_before": load, "passes": {}, "refusals": {}, "budgets": {}}
    scales = (1, 2) if args.quick else (1, 2, 4)
    for name in PASS_FILES:
        default_n = make_attacks.ATTACKS[name].__defaults__[0]
        for scale in scales:
            data = make_attacks.ATTACKS[name](default_n * scale)
            timings = passes(data)
            key = f"{name} x{scale}"
            result["passes"][key] = {"bytes": len(data), **{k: round(v, 3) for k, v in timings.items()}}
            print(f"{key:36} {len(data) / 1e6:5.2f} MB  " + "  ".join(f"{k} {v:.3f}" for k, v in timings.items()),
                  flush=True)
    print("refusals (seconds from bytes to the exception):")
    result["refusals"] = {k: round(v, 3) for k, v in refusals().items()}
    for k, v in result["refusals"].items():
        print(f"  {k:36} {v:.3f}")
    print("default budget vs estimate:")
    result["budgets"] = budgets(args.quick)
    with open("/proc/loadavg") as f:
        result["loadavg_after"] = f.read().strip()
    print(f"load after: {result['loadavg_after']}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
