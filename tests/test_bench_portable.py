"""The portable benchmarks under tools/ run and report what their docs say (tiny sizes: figures are not checked)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from initrecipe.rng.portable import samplers
from initrecipe.support import hugepages

TOOLS = Path(__file__).resolve().parent.parent / "tools"


def _run(tmp_path: Path, script: str, *args: str) -> tuple[str, dict]:
    out = tmp_path / "out.json"
    done = subprocess.run([sys.executable, str(TOOLS / script), *args, "--json", str(out)],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout, json.loads(out.read_text())


def test_kernel_benchmark_reports_every_path_with_its_philox_bound(tmp_path):
    stdout, result = _run(tmp_path, "bench_portable_kernel.py", "--n", str(1 << 16), "--repeats", "1",
                          "--variant", "all", "--threads", "1")
    paths = list(samplers._kernel.variants()) if samplers._kernel is not None else [samplers.kernel_path()]
    assert result["variants"] == paths
    assert result["cpu"] in stdout
    for path in paths:
        rows = result["results"][path]
        for name in ("warm_fill", "warm_normal", "warm_uniform", "fresh_fill", "fresh_hugepage_fill"):
            assert rows[name]["samples_per_s"] > 0, (path, name)
        assert rows["warm_fill"]["fraction_of_fill"] == 1.0
        assert ("warm_words" in rows) == (samplers._kernel is not None)
        assert f"{path}, 1 threads] normal (warm)" in stdout
        if samplers._kernel is not None:
            assert f"{path}, 1 threads] Philox words alone" in stdout
    if {"avx512f", "avx2"} <= set(paths):
        assert set(result["avx512f_over_avx2_per_core"]) == {"normal", "uniform", "words"}


def test_replay_benchmark_measures_its_floors_in_fresh_processes(tmp_path):
    stdout, result = _run(tmp_path, "bench_portable.py", "--model", "llama-tiny", "--repeats", "1")
    assert result["replays_identical"] is True
    fills = result["fill_runs"]
    assert [r["huge_pages"] for r in fills["4k"]] == [False]
    assert [r["huge_pages"] for r in fills["huge"]] == [hugepages.thp_mode() in ("always", "madvise")]
    (best, flipped) = result["paths"].values()
    for r in (best, flipped):
        floor = min(r["fresh_fill_seconds"], r["fresh_hugepage_fill_seconds"])
        assert r["speedup_bound"] == pytest.approx(r["eager_seconds"] / floor)
        assert r["replay_over_floor"] == pytest.approx(r["replay_seconds"] / floor)
        assert r["weights_gib"] * 2**30 == fills["4k"][0]["bytes"]
        assert r["replay_user_seconds"] >= 0 and r["replay_system_seconds"] >= 0
    assert best["huge_pages"] != flipped["huge_pages"] or hugepages.thp_mode() not in ("always", "madvise")
    assert f"path {best['kernel_path']}" in stdout and "no replay can beat" in stdout
