#!/usr/bin/env python
"""Benchmark ``initrecipe diff``: two recipes, and a recipe against its checkpoint.

1. **Recipe against recipe** (static): two Llama-7B-sized recipes (hidden 4096, intermediate
   11008, 32 layers, 32 heads, vocab 32000), ``initializer_range`` 0.02 and 0.01, in both RNG
   modes.  A fresh process runs ``initrecipe.diff(a, b)`` on the files and renders the report;
   the baseline, in the same process, is loading both files (``initrecipe.load``, which decodes
   and checks the hash).  Target: under 1 s.
2. **Recipe against checkpoint**: the Llama-1B-sized config of ``tools/bench_convert.py`` (hidden
   2048, intermediate 5504, 16 layers, 16 heads, vocab 32000, untied).  Fresh processes run
   ``to_safetensors`` (``convert``) and then ``initrecipe.diff(recipe, checkpoint_dir)`` on what it
   wrote, twice each, alternating; the best time of each is kept.  Targets: diff within 1.5x of
   convert, and diff's peak RSS (``ru_maxrss`` of its process) under 2x the largest tensor +
   300 MiB.

Recipes are recorded with ``sync_rng=False`` (recording then draws nothing).

Usage::

    flock /tmp/initrecipe-heavy.lock python tools/bench_diff.py         # a few minutes on 2 cores
    python tools/bench_diff.py --quick                                  # tiny models, seconds
    python tools/bench_diff.py --json out.json                          # also write the results
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

MIB = 1024 * 1024
OVERHEAD_MIB = 300

CONFIGS: dict[str, dict[str, Any]] = {
    "llama-7b": dict(vocab_size=32000, hidden_size=4096, intermediate_size=11008, num_hidden_layers=32,
                     num_attention_heads=32, num_key_value_heads=32, max_position_embeddings=2048),
    "llama-1b": dict(vocab_size=32000, hidden_size=2048, intermediate_size=5504, num_hidden_layers=16,
                     num_attention_heads=16, num_key_value_heads=16, max_position_embeddings=2048,
                     tie_word_embeddings=False),
    "llama-tiny": dict(vocab_size=1000, hidden_size=128, intermediate_size=344, num_hidden_layers=2,
                       num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=128,
                       tie_word_embeddings=False),
}


def _peak_rss_mib() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / MIB if sys.platform == "darwin" else peak / 1024


# --------------------------------------------------------------------------- children
def child(mode: str, workdir: Path) -> dict[str, Any]:
    import initrecipe

    result: dict[str, Any] = {"mode": mode}
    if mode == "recipes":
        for rng in ("torch", "portable"):
            a, b = workdir / f"{rng}-0.02.recipe", workdir / f"{rng}-0.01.recipe"
            start = time.perf_counter()
            initrecipe.load(a), initrecipe.load(b)
            load_s = time.perf_counter() - start
            start = time.perf_counter()
            report = str(initrecipe.diff(a, b))
            diff_s = time.perf_counter() - start
            result[rng] = {"load_s": load_s, "diff_s": diff_s, "report_lines": len(report.splitlines()),
                           "fits_80_columns": all(len(line) <= 80 for line in report.splitlines())}
        return result
    recipe = workdir / "model.recipe"
    start = time.perf_counter()
    if mode == "convert":
        shutil.rmtree(workdir / "ckpt", ignore_errors=True)
        initrecipe.to_safetensors(recipe, workdir / "ckpt", progress=False)
    else:
        d = initrecipe.diff(recipe, workdir / "ckpt", progress=False)
        result["identical"] = d.identical
        result["summary"] = d.summary()
    result["seconds"] = time.perf_counter() - start
    result["peak_rss_mib"] = _peak_rss_mib()
    return result


def run_child(mode: str, workdir: Path) -> dict[str, Any]:
    out = subprocess.run([sys.executable, __file__, "--child", mode, "--workdir", str(workdir)],
                         capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"child {mode} failed:\n{out.stderr}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def record(config: str, path: Path, rng: str = "torch", **overrides: Any) -> Any:
    import initrecipe
    import transformers

    cfg = transformers.LlamaConfig(**CONFIGS[config], **overrides)
    recipe = initrecipe.record(lambda: transformers.LlamaForCausalLM(cfg), seed=0, rng=rng, sync_rng=False)
    recipe.save(path)
    return recipe


# --------------------------------------------------------------------------- parent
def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny models (seconds)")
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--workdir", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, Path(args.workdir))))
        return 0

    big, ckpt_config = ("llama-tiny", "llama-tiny") if args.quick else ("llama-7b", "llama-1b")
    results: dict[str, Any] = {
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "loadavg_before": os.getloadavg(),
    }
    with tempfile.TemporaryDirectory(prefix="bench_diff.") as tmp:
        workdir = Path(tmp)
        for rng in ("torch", "portable"):
            for scale in (0.02, 0.01):
                record(big, workdir / f"{rng}-{scale}.recipe", rng=rng, initializer_range=scale)
        recipes = run_child("recipes", workdir)
        results["recipes"] = {"config": big, **{k: v for k, v in recipes.items() if k != "mode"}}
        for rng in ("torch", "portable"):
            r = recipes[rng]
            print(f"diff of two {big} recipes (rng {rng}): {r['diff_s']:.3f} s "
                  f"(loading both: {r['load_s']:.3f} s; {r['report_lines']} report lines)")

        recipe = record(ckpt_config, workdir / "model.recipe")
        largest = max(t.nbytes for t in recipe.tensors)
        limit = 2 * largest / MIB + OVERHEAD_MIB
        runs: dict[str, list[dict[str, Any]]] = {"convert": [], "diff": []}
        for _ in range(2):
            for mode in ("convert", "diff"):
                runs[mode].append(run_child(mode, workdir))
        best = {mode: min(rs, key=lambda r: r["seconds"]) for mode, rs in runs.items()}
        peak = max(r["peak_rss_mib"] for r in runs["diff"])
        ratio = best["diff"]["seconds"] / best["convert"]["seconds"]
        results["checkpoint"] = {
            "config": ckpt_config,
            "total_bytes": recipe.total_bytes,
            "largest_tensor_bytes": largest,
            "runs": runs,
            "convert_s": best["convert"]["seconds"],
            "diff_s": best["diff"]["seconds"],
            "diff_over_convert": ratio,
            "diff_peak_rss_mib": peak,
            "convert_peak_rss_mib": max(r["peak_rss_mib"] for r in runs["convert"]),
            "rss_limit_mib": limit,
            "identical": all(r["identical"] for r in runs["diff"]),
        }
    results["loadavg_after"] = os.getloadavg()
    c = results["checkpoint"]
    print(f"{ckpt_config}: {c['total_bytes'] / MIB:.0f} MiB of weights, largest tensor {largest / MIB:.0f} MiB")
    print(f"  convert: {c['convert_s']:.2f} s, peak RSS {c['convert_peak_rss_mib']:.0f} MiB")
    print(f"  diff RECIPE CHECKPOINT: {c['diff_s']:.2f} s ({ratio:.2f}x convert; target <= 1.5x), "
          f"peak RSS {peak:.0f} MiB (limit 2 x largest + {OVERHEAD_MIB} MiB = {limit:.0f} MiB), "
          f"identical: {c['identical']}")
    print(f"load average before/after: {results['loadavg_before']} / {results['loadavg_after']}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    ok = (c["identical"] and ratio <= 1.5 and (peak < limit or args.quick)  # tiny models: the interpreter dominates
          and all(results["recipes"][rng]["diff_s"] < 1.0 for rng in ("torch", "portable")))
    print("targets met" if ok else "TARGETS MISSED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
