"""tools/bench.py, the comparison benchmark: its --quick run, resuming, and the KS test it counts with.

No timing is asserted: the quick run checks the result file's structure and that the fidelity
counts say what is true (initrecipe's rng="torch" replay and checkpoint are bitwise eager's, the
portable replay has eager's distributions, recipe size follows layers, not width).
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))

import bench  # noqa: E402
import bench_fidelity  # noqa: E402
import bench_report  # noqa: E402


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "tools" / "bench.py"), *args], capture_output=True,
                          text=True, cwd=ROOT, timeout=600)


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    proc = _run("--quick", "--out-dir", str(out))
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out, json.loads((out / "results.json").read_text()), proc


def test_quick_run_writes_every_system_for_both_tiny_models(quick):
    out, data, proc = quick
    assert data["quick"] is True and data["repeats"] == 1
    assert data["models"] == bench.QUICK_MODELS and data["systems"] == bench.SYSTEMS
    for model in bench.QUICK_MODELS:
        per = data["summary"][model]
        assert set(per) == set(bench.SYSTEMS)
        for system, entry in per.items():
            # Every system either ran (a time and a peak RSS), or says exactly why not.
            assert ("seconds" in entry and "peak_rss_mib" in entry) or "skipped" in entry or "failed" in entry, system
            if "failed" in entry:
                assert entry["failed"]["stage"] and entry["failed"]["error"]
            fid = entry.get("fidelity")
            if fid:
                assert 0 <= fid["bitwise"] <= fid["distribution"] <= fid["tensors"]
                assert fid["bitwise"] + len(fid["not_bitwise"]) + len(fid["missing"]) == fid["tensors"]
    md = (out / "results.md").read_text()
    assert md == proc.stdout
    for model in bench.QUICK_MODELS:
        assert bench_report.MODEL_TITLES[model] in md
    assert "| Model | safetensors checkpoint |" in md and "Replay plan (`prepare_replay`)" in md


def test_quick_run_initrecipe_torch_replay_and_checkpoint_are_bitwise_eager(quick):
    _, data, _ = quick
    for model in bench.QUICK_MODELS:
        per = data["summary"][model]
        eager = per["eager"]["fidelity"]
        assert eager["bitwise"] == eager["tensors"] > 20
        replay = per["replay-torch"]["fidelity"]
        assert replay["bitwise"] == replay["tensors"] == eager["tensors"]
        assert replay["ties_kept"] is True
        convert = per["convert"]["fidelity"]
        assert convert["bitwise"] == convert["tensors"] > 0
        assert convert["tensors"] < eager["tensors"]  # non-persistent buffers / the tied head are not stored
        for rng in ("torch", "portable"):
            assert per[f"record-{rng}"]["deterministic"] is True
            assert 1000 < per[f"record-{rng}"]["recipe_bytes"] < 64 * 1024
        assert data["sizes"][model]["checkpoint_bytes"] > 1000 * data["sizes"][model]["recipe_bytes_torch"]
    assert data["summary"]["gpt2-tiny"]["eager"]["fidelity"]["eager_tie_groups"] == 1


def test_quick_run_portable_replay_has_eager_distributions_not_eager_bits(quick):
    _, data, _ = quick
    for model in bench.QUICK_MODELS:
        fid = data["summary"][model]["replay-portable"]["fidelity"]
        assert fid["distribution"] == fid["tensors"]
        assert 0 < fid["bitwise"] < fid["tensors"]  # constants agree; random draws come from Philox
        assert "lm_head.weight" in fid["not_bitwise"]


def test_quick_run_reports_missing_optional_tools_as_skipped_with_the_reason(quick):
    _, data, _ = quick
    for system, package in (("accelerate", "accelerate"), ("accelerate-apply", "accelerate"), ("colossalai", "colossalai")):
        for model in bench.QUICK_MODELS:
            entry = data["summary"][model][system]
            if importlib.util.find_spec(package) is None:
                assert entry["skipped"].startswith(f"`{package}` does not import here")
                assert "install:" in entry["skipped"]
            else:
                assert "skipped" not in entry
    if importlib.util.find_spec("colossalai") is not None:
        # transformers 5's Llama sends ColossalAI's materialize into infinite recursion (HARD_CASES.md).
        assert data["summary"]["llama-tiny"]["colossalai"]["failed"]["error"].startswith("RecursionError")


def test_quick_run_recipe_size_grows_with_layers_not_width(quick):
    _, data, _ = quick
    rows = {r["config"]: r for r in data["scaling"]["rows"]}
    assert set(rows) == set(bench.QUICK_SCALING)
    size = {name: r["recipe_bytes"] for name, r in rows.items()}
    assert size["llama-tiny-2l"] < size["llama-tiny-4l"] < size["llama-tiny-8l"]
    assert size["llama-tiny-8l"] > 1.5 * size["llama-tiny-4l"]
    assert rows["llama-tiny-4l-wide"]["params"] > 8 * rows["llama-tiny-4l"]["params"]
    assert abs(size["llama-tiny-4l-wide"] - size["llama-tiny-4l"]) < 0.05 * size["llama-tiny-4l"]
    for r in rows.values():
        assert r["plan_needed_bytes"] >= r["total_bytes"] > 0
        assert r["record"]["n"] == 1 and r["plan"]["n"] == 1


def test_quick_run_plot(quick):
    out, data, _ = quick
    if importlib.util.find_spec("matplotlib") is None:
        assert data["plot"]["skipped"].startswith("matplotlib is not installed")
        assert not (out / "bench.png").exists()
    else:
        assert data["plot"] == {"path": "bench.png"}
        assert (out / "bench.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_resume_reruns_only_the_missing_children(quick, tmp_path):
    out, data, _ = quick
    copy = tmp_path / "bench"
    subprocess.run(["cp", "-r", str(out), str(copy)], check=True)
    results = json.loads((copy / "results.json").read_text())
    del results["runs"]["llama-tiny"]["replay-portable"]
    (copy / "results.json").write_text(json.dumps(results))
    proc = _run("--quick", "--out-dir", str(copy), "--resume", "--systems", "eager,record-portable,replay-portable",
                "--no-scaling")
    assert proc.returncode == 0, proc.stderr[-3000:]
    started = [line for line in proc.stderr.splitlines() if line.startswith("[")]
    assert len(started) == 1 and "replay-portable on llama-tiny" in started[0]
    again = json.loads((copy / "results.json").read_text())
    assert again["systems"] == bench.SYSTEMS  # the resumed run keeps every system it had
    assert again["summary"]["llama-tiny"]["replay-portable"]["fidelity"] == \
        data["summary"]["llama-tiny"]["replay-portable"]["fidelity"]


def test_resume_refuses_results_of_another_configuration(quick, tmp_path):
    out, _, _ = quick
    proc = _run("--quick", "--out-dir", str(out), "--resume", "--repeats", "2")
    assert proc.returncode == 2
    assert "is from another configuration or commit" in proc.stderr and "Run without --resume" in proc.stderr


def test_ks_statistic_and_p_value_match_scipy_asymptotic_values():
    # Reference values from scipy 1.17: ks_2samp(a, b).statistic and kstwobign.sf(sqrt(nm/(n+m)) * D).
    assert bench_fidelity.kolmogorov_sf(0.5) == pytest.approx(0.9639452436648751, rel=1e-12)
    assert bench_fidelity.kolmogorov_sf(1.0) == pytest.approx(0.26999967167735456, rel=1e-12)
    assert bench_fidelity.kolmogorov_sf(2.5) == pytest.approx(7.453306344157342e-06, rel=1e-9)
    assert bench_fidelity.kolmogorov_sf(0.0) == 1.0
    a = torch.tensor([1.0, 2.0, 2.0, 3.0, 7.0])
    b = torch.tensor([2.0, 4.0, 5.0, 6.0])
    d, p = bench_fidelity.ks_2samp(a, b)
    assert d == pytest.approx(0.55)  # at x = 3: F_a = 4/5, F_b = 1/4
    assert p == pytest.approx(bench_fidelity.kolmogorov_sf((20 / 9) ** 0.5 * 0.55))


def test_ks_separates_distributions_and_accepts_equal_ones():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(16384, generator=g) * 0.02
    same = torch.randn(16384, generator=g) * 0.02
    uniform = (torch.rand(16384, generator=g) * 2 - 1) * 0.02 * 3**0.5  # same mean and std
    assert bench_fidelity.ks_2samp(x, x) == (0.0, 1.0)
    assert bench_fidelity.ks_2samp(x, same)[1] > 0.01
    assert bench_fidelity.ks_2samp(x, uniform)[1] < 1e-15
    assert bench_fidelity.ks_2samp(torch.zeros(100), torch.ones(100))[0] == 1.0
    assert bench_fidelity.ks_2samp(x, torch.full((100,), float("nan"))) == (1.0, 0.0)
    with pytest.raises(ValueError, match="two non-empty samples"):
        bench_fidelity.ks_2samp(x, torch.empty(0))


def test_compare_counts_bits_distributions_missing_names_and_ties(tmp_path):
    g = torch.Generator().manual_seed(0)
    w = torch.randn(64, 64, generator=g)
    eager = {"a": w, "b": torch.ones(64), "tied": w, "c": torch.randn(64, 64, generator=g)}
    got = {"a": w.clone(), "b": torch.zeros(64), "tied": torch.randn(64, 64, generator=g)}
    e = bench_fidelity.snapshot(eager, tmp_path / "e")
    s = bench_fidelity.snapshot(got, tmp_path / "s")
    assert bench_fidelity.load_snapshot(tmp_path / "s")["digests"] == s["digests"]
    fid = bench_fidelity.compare(e, s)
    assert (fid["tensors"], fid["bitwise"], fid["distribution"]) == (4, 1, 2)
    assert fid["missing"] == ["c"] and fid["not_bitwise"] == ["b", "tied"] and fid["not_distribution"] == ["b"]
    assert fid["ties_kept"] is False and (fid["tie_groups"], fid["eager_tie_groups"]) == (0, 1)
    only_got = bench_fidelity.compare(e, s, names="got")
    assert only_got["tensors"] == 3 and "ties_kept" not in bench_fidelity.compare(e, {**s, "ties": None})


def test_replace_block_rewrites_only_between_the_markers(tmp_path):
    doc = tmp_path / "doc.md"
    doc.write_text(f"before\n{bench_report.MARK_START}\nold\n{bench_report.MARK_END}\nafter\n")
    assert bench_report.replace_block(doc, "new table\n")
    assert doc.read_text() == f"before\n{bench_report.MARK_START}\nnew table\n{bench_report.MARK_END}\nafter\n"
    plain = tmp_path / "plain.md"
    plain.write_text("no markers\n")
    assert not bench_report.replace_block(plain, "x") and plain.read_text() == "no markers\n"
