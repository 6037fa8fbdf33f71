#!/usr/bin/env python
"""Benchmark initrecipe's record and replay against the baselines they replace.

Every number is a ratio against a baseline measured in the same run of this script:

1. Recording GPT-2 124M (``GPT2LMHeadModel(GPT2Config())``): building it under
   ``with torch.device("meta")`` vs ``initrecipe.record(fn, seed=0)`` with default arguments
   (``sync_rng=True``: torch's generator is left where ``fn()`` would leave it) and with
   ``sync_rng=False``; median of N interleaved runs in this process after a warm-up.  Also the
   recipe's size in bytes.
2. Replay vs eager on CPU (GPT-2 124M and a Llama-1B-sized config): wall time and peak RSS, each
   run in a fresh subprocess.  The recipe is recorded and saved to a temporary file beforehand,
   so the replay child only loads and replays (with default arguments: one thread per core).
   Each child hashes every tensor's bytes (sha256, in name order, after its peak RSS is read) and
   the parent compares the hashes.
3. Recording a Llama-7B-sized config with default arguments, in a fresh subprocess: the record
   time, and RSS after imports vs the high-water mark after ``record``.

Usage::

    python tools/bench_record_replay.py                 # full run (several minutes)
    python tools/bench_record_replay.py --quick         # small, fast sanity run
    python tools/bench_record_replay.py --json out.json # also write the results as JSON
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import resource
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any, Callable

KIB = 1024
MIB = 1024 * 1024

# Targets (see docs/BENCHMARKS.md).
TARGET_RECORD_OVER_META = 3.0
TARGET_RECIPE_BYTES = 64 * KIB
TARGET_7B_RECORD_GROWTH_MIB = 100.0
TARGET_7B_RECORD_SECONDS = 2.0
TARGET_REPLAY_SPEEDUP = {"gpt2": 1.0, "llama-1b": 2.0}  # eager time / replay time, at least


# --------------------------------------------------------------------------- model configs
def _llama(hidden: int, intermediate: int, layers: int, heads: int, kv_heads: int, vocab: int) -> dict[str, Any]:
    return dict(
        hidden_size=hidden,
        intermediate_size=intermediate,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        vocab_size=vocab,
        tie_word_embeddings=False,
    )


# LlamaConfig keyword arguments of the benchmarked sizes (untied embeddings).  70B is Llama-2-70B's
# shape, 405B Llama-3.1-405B's; those two are only recorded, never materialized.
LLAMA_CONFIGS: dict[str, dict[str, Any]] = {
    "llama-1b": _llama(2048, 5504, 16, 16, 16, 32000),
    "llama-7b": _llama(4096, 11008, 32, 32, 32, 32000),
    "llama-70b": _llama(8192, 28672, 80, 64, 8, 32000),
    "llama-405b": _llama(16384, 53248, 126, 128, 8, 128256),
    "llama-tiny": _llama(256, 688, 2, 4, 4, 8000),  # --quick stand-in
}


def model_fn(name: str) -> Callable[[], Any]:
    """A zero-argument constructor for one of the benchmarked models."""
    if name == "gpt2":
        from transformers import GPT2Config, GPT2LMHeadModel

        cfg = GPT2Config()
        return lambda: GPT2LMHeadModel(cfg)
    if name == "gpt2-tiny":  # --quick stand-in for the Llama runs
        from transformers import GPT2Config, GPT2LMHeadModel

        cfg = GPT2Config(n_layer=2, n_embd=256, n_head=4, vocab_size=8000)
        return lambda: GPT2LMHeadModel(cfg)
    if name in LLAMA_CONFIGS:
        from transformers import LlamaConfig, LlamaForCausalLM

        cfg = LlamaConfig(**LLAMA_CONFIGS[name])
        return lambda: LlamaForCausalLM(cfg)
    raise ValueError(f"unknown model {name!r}")


# --------------------------------------------------------------------------- memory helpers
def proc_status_kib(field: str) -> int:
    """A ``/proc/self/status`` field (VmRSS, VmHWM) in KiB."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


def maxrss_kib() -> int:
    """Peak RSS of this process in KiB (``ru_maxrss`` is KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def _update_tensor_hash(h: Any, name: str, tensor: Any) -> None:
    import torch

    t = tensor.detach()
    h.update(f"{name}|{t.dtype}|{tuple(t.shape)}\n".encode())
    if t.numel() == 0:
        return
    if not t.is_contiguous():
        t = t.contiguous()
    h.update(memoryview(t.reshape(-1).view(torch.uint8).numpy()))


def hash_tensors(tensors: dict[str, Any]) -> str:
    """sha256 over (name, dtype, shape, bytes) of every tensor in name order, without copying storage."""
    h = hashlib.sha256()
    for name in sorted(tensors):
        _update_tensor_hash(h, name, tensors[name])
    return h.hexdigest()


def tensor_sha256(name: str, tensor: Any) -> str:
    """sha256 over one tensor's (name, dtype, shape, bytes), as :func:`hash_tensors` hashes each tensor."""
    h = hashlib.sha256()
    _update_tensor_hash(h, name, tensor)
    return h.hexdigest()


# --------------------------------------------------------------------------- child processes
def child_eager(model: str) -> dict[str, Any]:
    import torch

    fn = model_fn(model)
    rss_after_imports = proc_status_kib("VmRSS")
    t0 = time.perf_counter()
    torch.manual_seed(0)
    module = fn()
    seconds = time.perf_counter() - t0
    peak = maxrss_kib()
    hwm = proc_status_kib("VmHWM")
    tensors = dict(module.named_parameters(remove_duplicate=False))
    tensors.update(module.named_buffers(remove_duplicate=False))
    return {
        "seconds": seconds,
        "rss_after_imports_kib": rss_after_imports,
        "peak_rss_kib": peak,
        "vmhwm_kib": hwm,
        "sha256": hash_tensors(tensors),
        "tensors": len(tensors),
    }


def child_replay(path: str) -> dict[str, Any]:
    import initrecipe

    rss_after_imports = proc_status_kib("VmRSS")
    t0 = time.perf_counter()
    recipe = initrecipe.load(path)
    t_load = time.perf_counter() - t0
    tensors = initrecipe.replay(recipe)
    seconds = time.perf_counter() - t0
    peak = maxrss_kib()
    hwm = proc_status_kib("VmHWM")
    return {
        "seconds": seconds,
        "load_seconds": t_load,
        "rss_after_imports_kib": rss_after_imports,
        "peak_rss_kib": peak,
        "vmhwm_kib": hwm,
        "sha256": hash_tensors(tensors),
        "tensors": len(tensors),
    }


def child_record_memory(model: str) -> dict[str, Any]:
    import torch  # noqa: F401
    import transformers.models.llama.modeling_llama  # noqa: F401
    import initrecipe

    fn = model_fn(model)
    rss_before = proc_status_kib("VmRSS")
    hwm_before = proc_status_kib("VmHWM")
    t0 = time.perf_counter()
    recipe = initrecipe.record(fn, seed=0)  # default arguments: sync_rng=True
    seconds = time.perf_counter() - t0
    t1 = time.perf_counter()
    initrecipe.record(fn, seed=0, sync_rng=False)
    seconds_sync_false = time.perf_counter() - t1
    hwm_after = proc_status_kib("VmHWM")
    rss_after = proc_status_kib("VmRSS")
    return {
        "seconds": seconds,
        "seconds_sync_false_warm": seconds_sync_false,
        "rss_after_imports_kib": rss_before,
        "hwm_after_imports_kib": hwm_before,
        "hwm_after_record_kib": hwm_after,
        "rss_after_record_kib": rss_after,
        "growth_kib": hwm_after - rss_before,
        "recipe_bytes": len(recipe.to_bytes()),
        "tensors": len(recipe.tensors),
    }


class ChildTimeout(RuntimeError):
    """A benchmark child ran past its time limit and was killed."""


def run_child(args: list[str], script: str | None = None, timeout: float | None = None) -> dict[str, Any]:
    """Run ``script`` (default: this one) in ``--child`` mode in a fresh process and return the JSON it prints.

    The child is started through ``/bin/sh``, which forks it (the trailing ``exit`` keeps sh from
    exec'ing it in place).  Without that trampoline the child's ``ru_maxrss`` would start at this
    (large) parent's peak RSS: Linux copies the parent's RSS high-water mark into the child on
    fork and keeps it across exec, so every child would report at least the parent's peak.

    With ``timeout`` (seconds), a child still running then is killed, with its process group,
    and :class:`ChildTimeout` is raised.
    """
    py = [sys.executable, os.path.abspath(script or __file__), "--child", *args]
    cmd = ["/bin/sh", "-c", '"$@"; exit $?', "sh", *py]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise ChildTimeout(f"child {args} ran past {timeout:.0f} s and was killed") from None
    if proc.returncode != 0:
        raise RuntimeError(f"child {args} failed ({proc.returncode}):\n{stderr[-4000:]}")
    return json.loads(stdout.strip().splitlines()[-1])


# --------------------------------------------------------------------------- benchmarks
def bench_record_gpt2(runs: int) -> dict[str, Any]:
    import torch
    import initrecipe

    fn = model_fn("gpt2")

    def meta() -> None:
        with torch.device("meta"):
            fn()

    def rec_nosync() -> None:
        initrecipe.record(fn, seed=0, sync_rng=False)

    def rec_sync() -> None:
        initrecipe.record(fn, seed=0, sync_rng=True)

    cases = {"meta": meta, "record_sync_false": rec_nosync, "record_sync_true": rec_sync}
    for f in cases.values():  # warm-up
        f()
    times: dict[str, list[float]] = {k: [] for k in cases}
    for _ in range(runs):  # interleaved, so drift in machine load hits every case alike
        for k, f in cases.items():
            t0 = time.perf_counter()
            f()
            times[k].append(time.perf_counter() - t0)
    med = {k: statistics.median(v) for k, v in times.items()}
    size = len(initrecipe.record(fn, seed=0, sync_rng=False).to_bytes())
    return {
        "runs": runs,
        "times": times,
        "median_seconds": med,
        "ratio_record_sync_false_over_meta": med["record_sync_false"] / med["meta"],
        "ratio_record_sync_true_over_meta": med["record_sync_true"] / med["meta"],
        "recipe_bytes": size,
    }


def bench_replay_vs_eager(model: str, repeats: int, workdir: str) -> dict[str, Any]:
    import initrecipe

    t0 = time.perf_counter()
    recipe = initrecipe.record(model_fn(model), seed=0)
    record_seconds = time.perf_counter() - t0
    path = os.path.join(workdir, f"{model}.recipe")
    recipe.save(path)
    del recipe
    eager, replay = [], []
    for _ in range(repeats):  # alternate, each in a fresh process
        eager.append(run_child(["eager", model]))
        replay.append(run_child(["replay", path]))

    def med(rows: list[dict[str, Any]], key: str) -> float:
        return statistics.median(r[key] for r in rows)

    hashes_e = {r["sha256"] for r in eager}
    hashes_r = {r["sha256"] for r in replay}
    return {
        "model": model,
        "repeats": repeats,
        "record_seconds": record_seconds,
        "recipe_bytes": os.path.getsize(path),
        "eager": eager,
        "replay": replay,
        "speedup_eager_over_replay": med(eager, "seconds") / med(replay, "seconds"),
        "eager_vmhwm_kib": med(eager, "vmhwm_kib"),
        "replay_vmhwm_kib": med(replay, "vmhwm_kib"),
        "eager_seconds": med(eager, "seconds"),
        "replay_seconds": med(replay, "seconds"),
        "replay_load_seconds": med(replay, "load_seconds"),
        "eager_peak_rss_kib": med(eager, "peak_rss_kib"),
        "replay_peak_rss_kib": med(replay, "peak_rss_kib"),
        "eager_rss_after_imports_kib": med(eager, "rss_after_imports_kib"),
        "replay_rss_after_imports_kib": med(replay, "rss_after_imports_kib"),
        "ratio_time_replay_over_eager": med(replay, "seconds") / med(eager, "seconds"),
        "ratio_peak_rss_replay_over_eager": med(replay, "peak_rss_kib") / med(eager, "peak_rss_kib"),
        "ratio_growth_replay_over_eager": (med(replay, "peak_rss_kib") - med(replay, "rss_after_imports_kib"))
        / (med(eager, "peak_rss_kib") - med(eager, "rss_after_imports_kib")),
        "bitwise_equal": len(hashes_e) == 1 and hashes_e == hashes_r,
        "sha256_eager": sorted(hashes_e),
        "sha256_replay": sorted(hashes_r),
    }


def bench_record_memory(model: str) -> dict[str, Any]:
    return {"model": model, **run_child(["record-memory", model])}


# --------------------------------------------------------------------------- reporting
def mark(ok: bool) -> str:
    return "met" if ok else "MISSED"


def fmt_s(s: float) -> str:
    return f"{s * 1000:.1f} ms" if s < 1 else f"{s:.2f} s"


def fmt_mib(kib: float) -> str:
    return f"{kib / KIB:.0f} MiB"


def table(res: dict[str, Any]) -> str:
    rows = ["| Measurement | Baseline | initrecipe | Ratio | Target | Status |", "|---|---|---|---|---|---|"]
    r = res["record_gpt2"]
    m = r["median_seconds"]
    rows.append(
        f"| GPT-2 124M **record, default arguments** (sync_rng=True, median of {r['runs']}) | meta build "
        f"{fmt_s(m['meta'])} | {fmt_s(m['record_sync_true'])} | {r['ratio_record_sync_true_over_meta']:.2f}x | ≤ 3x | "
        f"{mark(r['ratio_record_sync_true_over_meta'] <= TARGET_RECORD_OVER_META)} |"
    )
    rows.append(
        f"| GPT-2 124M record, sync_rng=False (median of {r['runs']}) | meta build {fmt_s(m['meta'])} | "
        f"{fmt_s(m['record_sync_false'])} | {r['ratio_record_sync_false_over_meta']:.2f}x | (info) | – |"
    )
    rows.append(
        f"| GPT-2 124M recipe size | – | {r['recipe_bytes']:,} B ({r['recipe_bytes'] / KIB:.1f} KiB) | – | < 64 KiB | "
        f"{mark(r['recipe_bytes'] < TARGET_RECIPE_BYTES)} |"
    )
    for key, label in (("replay_gpt2", "GPT-2 124M"), ("replay_llama1b", "Llama-1B-sized")):
        if key not in res:
            continue
        p = res[key]
        n = p["repeats"]
        if key == "replay_llama1b" and p["model"] != "llama-1b":
            label = "--quick stand-in for Llama-1B"
        target = TARGET_REPLAY_SPEEDUP.get(p["model"], 1.0)
        rows.append(
            f"| {label} ({p['model']}) **replay vs eager, wall time** (median of {n} fresh processes) | "
            f"eager {fmt_s(p['eager_seconds'])} | replay {fmt_s(p['replay_seconds'])} "
            f"(load {fmt_s(p['replay_load_seconds'])}) | {p['speedup_eager_over_replay']:.2f}x faster | ≥ {target:g}x | "
            f"{mark(p['speedup_eager_over_replay'] >= target)} |"
        )
        rows.append(
            f"| {label} ({p['model']}) replay vs eager, peak RSS (ru_maxrss) | eager {fmt_mib(p['eager_peak_rss_kib'])} | "
            f"replay {fmt_mib(p['replay_peak_rss_kib'])} | {p['ratio_peak_rss_replay_over_eager']:.2f}x | ≤ 1x | "
            f"{mark(p['ratio_peak_rss_replay_over_eager'] <= 1.0)} |"
        )
        eg = p["eager_peak_rss_kib"] - p["eager_rss_after_imports_kib"]
        rg = p["replay_peak_rss_kib"] - p["replay_rss_after_imports_kib"]
        rows.append(
            f"| {label} ({p['model']}) peak RSS growth above post-import RSS | eager {fmt_mib(eg)} | "
            f"replay {fmt_mib(rg)} | {p['ratio_growth_replay_over_eager']:.2f}x | (info) | – |"
        )
        rows.append(
            f"| {label} ({p['model']}) replay bitwise equal to eager (sha256) | – | "
            f"{'yes' if p['bitwise_equal'] else 'NO'} | – | equal | {mark(p['bitwise_equal'])} |"
        )
    if "record_memory_7b" in res:
        q = res["record_memory_7b"]
        g = q["growth_kib"] / KIB
        big = "Llama-7B-sized" if q["model"] == "llama-7b" else "--quick stand-in for Llama-7B"
        rows.append(
            f"| {big} ({q['model']}) **record time, default arguments** (single cold run) | – | "
            f"{fmt_s(q['seconds'])} (sync_rng=False, warm: {fmt_s(q['seconds_sync_false_warm'])}) | – | < 2 s | "
            f"{mark(q['seconds'] < TARGET_7B_RECORD_SECONDS)} |"
        )
        rows.append(
            f"| {big} ({q['model']}) **record, default arguments: peak RSS growth** | "
            f"post-import RSS {fmt_mib(q['rss_after_imports_kib'])} | peak {fmt_mib(q['hwm_after_record_kib'])} "
            f"(+{g:.0f} MiB) | – | < 100 MiB | {mark(g < TARGET_7B_RECORD_GROWTH_MIB)} |"
        )
        rows.append(
            f"| {big} ({q['model']}) recipe size | – | {q['recipe_bytes']:,} B "
            f"({q['recipe_bytes'] / KIB:.1f} KiB) | – | (info) | – |"
        )
    return "\n".join(rows)


def git_describe() -> str | None:
    """The checkout's commit, with "+dirty" when initrecipe/ has uncommitted changes."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True)
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "initrecipe"], cwd=root, capture_output=True, text=True, check=True
        )
    except (OSError, subprocess.CalledProcessError):
        return None
    return head.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="few runs, tiny stand-ins for the Llama configs")
    parser.add_argument("--runs", type=int, default=None, help="timed record runs for GPT-2 (default 7, quick 5)")
    parser.add_argument("--repeats", type=int, default=None, help="fresh-process repeats for replay vs eager (default 5, quick 1)")
    parser.add_argument("--json", metavar="PATH", help="write the full results as JSON")
    parser.add_argument(
        "--source-note", metavar="TEXT", help="what initrecipe source was measured, when it is not this checkout's git state"
    )
    parser.add_argument("--child", nargs=2, metavar=("MODE", "ARG"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.child:
        mode, arg = args.child
        out = {
            "eager": child_eager,
            "replay": child_replay,
            "record-memory": child_record_memory,
        }[mode](arg)
        print(json.dumps(out))
        return 0

    import torch
    import transformers

    import initrecipe

    runs = args.runs or (5 if args.quick else 7)
    repeats = args.repeats or (1 if args.quick else 5)
    large_1b = "llama-tiny" if args.quick else "llama-1b"
    large_7b = "llama-tiny" if args.quick else "llama-7b"
    res: dict[str, Any] = {
        "command": " ".join([os.path.basename(sys.executable), *sys.argv]),
        "quick": args.quick,
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor(),
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "torch": torch.__version__,
            "torch_threads": torch.get_num_threads(),
            "transformers": transformers.__version__,
            "initrecipe": initrecipe.__version__,
            "initrecipe_commit": args.source_note or git_describe(),
            "loadavg_at_start": os.getloadavg(),
        },
    }
    t_start = time.perf_counter()
    print(f"[1/4] recording GPT-2 124M ({runs} runs each) ...", file=sys.stderr, flush=True)
    res["record_gpt2"] = bench_record_gpt2(runs)
    with tempfile.TemporaryDirectory(prefix="initrecipe-bench-") as workdir:
        print(f"[2/4] replay vs eager, gpt2 ({repeats} x 2 processes) ...", file=sys.stderr, flush=True)
        res["replay_gpt2"] = bench_replay_vs_eager("gpt2", repeats, workdir)
        print(f"[3/4] replay vs eager, {large_1b} ({repeats} x 2 processes) ...", file=sys.stderr, flush=True)
        res["replay_llama1b"] = bench_replay_vs_eager(large_1b, repeats, workdir)
    print(f"[4/4] recording memory, {large_7b} ...", file=sys.stderr, flush=True)
    res["record_memory_7b"] = bench_record_memory(large_7b)
    res["total_seconds"] = time.perf_counter() - t_start
    res["machine"]["loadavg_at_end"] = os.getloadavg()

    m = res["machine"]
    print(
        f"Machine: {m['cpus']} CPUs ({m['processor'] or 'unknown'}), {m['platform']}, Python {m['python']}, "
        f"torch {m['torch']} ({m['torch_threads']} threads), transformers {m['transformers']}, "
        f"initrecipe {m['initrecipe']} at {m['initrecipe_commit']}; load average "
        f"{m['loadavg_at_start'][0]:.2f} at start, {m['loadavg_at_end'][0]:.2f} at end"
    )
    print()
    print(table(res))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(res, f, indent=2)
            f.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
