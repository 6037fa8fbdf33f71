#!/usr/bin/env python
"""Benchmark ``initrecipe convert`` (streaming recipe -> safetensors) against eager init + save_file.

Model: a Llama-1B-sized config (hidden 2048, intermediate 5504, 16 layers, 16 heads, vocab 32000,
untied embeddings; about 0.94 B parameters, 3.8 GB in float32).  Each measurement runs in a
fresh subprocess, so its peak RSS (``getrusage(RUSAGE_SELF).ru_maxrss``) is its own:

a. ``record``: ``initrecipe.record(LlamaForCausalLM(cfg), seed=0)``, save the recipe, then
   ``to_safetensors`` into a temporary folder;
b. ``convert``: a fresh process that only loads the recipe file saved by (a) and converts it
   (what a machine receiving a recipe does; ``transformers`` is never imported);
b'. ``convert-drawing``: the same with initrecipe's jump-ahead turned off, so every dead draw is
   drawn and the generator advances as eager's does (initrecipe 0.2's only path): the same-run
   baseline of the speed-up from skipping dead draws and splitting live ones across threads;
c. ``eager``: ``torch.manual_seed(0); LlamaForCausalLM(cfg)`` then
   ``safetensors.torch.save_file(model.state_dict())``.

The streaming bound is checked for (a) and (b): peak RSS < 2 x largest tensor + 300 MiB.  The
parent then compares the data sections of (a)'s and (c)'s files byte for byte (streamed in
chunks): both lay tensors out the way ``save_file`` does, so they must be identical.

Usage::

    python tools/bench_convert.py                   # Llama-1B-sized (a few minutes on 2 cores)
    python tools/bench_convert.py --quick           # a tiny Llama, seconds
    python tools/bench_convert.py --json out.json   # also write the results as JSON
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

MIB = 1024 * 1024
OVERHEAD_MIB = 300

CONFIGS: dict[str, dict[str, Any]] = {
    "llama-1b": dict(
        vocab_size=32000,
        hidden_size=2048,
        intermediate_size=5504,
        num_hidden_layers=16,
        num_attention_heads=16,
        num_key_value_heads=16,
        max_position_embeddings=2048,
        tie_word_embeddings=False,
    ),
    "llama-tiny": dict(
        vocab_size=1000,
        hidden_size=128,
        intermediate_size=344,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=128,
        tie_word_embeddings=False,
    ),
}


def _rss_now_mib() -> float:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def _peak_rss_mib() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / MIB if sys.platform == "darwin" else peak / 1024  # bytes on macOS, KiB on Linux


# --------------------------------------------------------------------------- children
def child(mode: str, config: str, workdir: Path) -> dict[str, Any]:
    t0 = time.perf_counter()
    import torch  # noqa: F401

    result: dict[str, Any] = {"mode": mode}
    if mode == "disk":
        # The disk's own floor: write as many bytes as the checkpoint holds, in 64 MiB pwrites with
        # the same writeback hint, then fsync: what no converter can beat on this machine.
        import initrecipe
        from initrecipe.export.safetensors_writer import _start_writeback

        total = initrecipe.load(workdir / "model.recipe").total_bytes
        chunk = bytearray(64 * MIB)
        start = time.perf_counter()
        fd = os.open(workdir / "disk.bin", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            offset = 0
            while offset < total:
                n = os.pwrite(fd, memoryview(chunk)[: min(len(chunk), total - offset)], offset)
                _start_writeback(fd, offset, n)
                offset += n
            os.fsync(fd)
        finally:
            os.close(fd)
            os.unlink(workdir / "disk.bin")
        result["disk_s"] = time.perf_counter() - start
        result["disk_bytes"] = total
    elif mode in ("convert", "convert-drawing"):
        import initrecipe
        from initrecipe.export.convert import to_safetensors

        if mode == "convert-drawing":
            # The baseline: generators advanced by drawing, every dead draw run, one thread (what
            # initrecipe 0.2 did, and what it still does without its C extension).
            initrecipe.rng.torch.generator_state.available = lambda: False

        result["rss_after_imports_mib"] = _rss_now_mib()
        start = time.perf_counter()
        recipe = initrecipe.load(workdir / "model.recipe")
        to_safetensors(recipe, workdir / mode, progress=False)
        result["convert_s"] = time.perf_counter() - start
        result["transformers_imported"] = "transformers" in sys.modules
    else:
        import transformers

        cfg = transformers.LlamaConfig(**CONFIGS[config])
        if mode == "record":
            import initrecipe
            from initrecipe.export.convert import to_safetensors

            result["rss_after_imports_mib"] = _rss_now_mib()
            start = time.perf_counter()
            recipe = initrecipe.record(lambda: transformers.LlamaForCausalLM(cfg), seed=0)
            result["record_s"] = time.perf_counter() - start
            result["peak_after_record_mib"] = _peak_rss_mib()
            recipe.save(workdir / "model.recipe")
            result["recipe_bytes"] = (workdir / "model.recipe").stat().st_size
            largest = max(t.nbytes for t in recipe.tensors)
            result["largest_tensor_bytes"] = largest
            result["largest_tensor"] = next(t.name for t in recipe.tensors if t.nbytes == largest)
            result["total_bytes"] = recipe.total_bytes
            start = time.perf_counter()
            to_safetensors(recipe, workdir / "record", progress=False)
            result["convert_s"] = time.perf_counter() - start
        elif mode == "eager":
            from safetensors.torch import save_file

            result["rss_after_imports_mib"] = _rss_now_mib()
            start = time.perf_counter()
            torch.manual_seed(0)
            model = transformers.LlamaForCausalLM(cfg)
            result["init_s"] = time.perf_counter() - start
            start = time.perf_counter()
            (workdir / "eager").mkdir(exist_ok=True)
            save_file(model.state_dict(), str(workdir / "eager" / "model.safetensors"), metadata={"format": "pt"})
            result["save_s"] = time.perf_counter() - start
        else:
            raise SystemExit(f"unknown mode {mode}")
    result["wall_s"] = time.perf_counter() - t0
    result["peak_rss_mib"] = _peak_rss_mib()
    return result


def run_child(mode: str, config: str, workdir: Path) -> dict[str, Any]:
    # Each child writes gigabytes: flush the previous child's writes first, so that the kernel's
    # writeback of one measurement does not slow down the next.
    if hasattr(os, "sync"):
        os.sync()
    cmd = [sys.executable, os.path.abspath(__file__), "--child", mode, "--config", config, "--workdir", str(workdir)]
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr)
        raise SystemExit(f"child `{mode}` failed with exit code {proc.returncode}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    result["process_wall_s"] = elapsed
    return result


# --------------------------------------------------------------------------- comparison
def _data_section(path: Path) -> tuple[int, dict[str, Any]]:
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
    header.pop("__metadata__", None)
    return 8 + n, header


def same_data(a: Path, b: Path, chunk: int = 64 * MIB) -> bool:
    """Whether two safetensors files hold the same tensors at the same relative offsets, byte for byte."""
    start_a, header_a = _data_section(a)
    start_b, header_b = _data_section(b)
    if header_a != header_b:
        return False
    if a.stat().st_size - start_a != b.stat().st_size - start_b:
        return False
    with open(a, "rb") as fa, open(b, "rb") as fb:
        fa.seek(start_a)
        fb.seek(start_b)
        while True:
            x, y = fa.read(chunk), fb.read(chunk)
            if x != y:
                return False
            if not x:
                return True


def _files(folder: Path) -> list[Path]:
    return sorted(folder.glob("*.safetensors"))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a tiny Llama instead of the 1B-sized one")
    parser.add_argument("--json", metavar="PATH", help="also write the results here")
    parser.add_argument("--workdir", help=argparse.SUPPRESS)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--config", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    config = args.config or ("llama-tiny" if args.quick else "llama-1b")

    if args.child:
        print(json.dumps(child(args.child, config, Path(args.workdir))))
        return 0

    workdir = Path(tempfile.mkdtemp(prefix="bench_convert."))
    try:
        record = run_child("record", config, workdir)
        disk_before = run_child("disk", config, workdir)
        convert = run_child("convert", config, workdir)
        drawing = run_child("convert-drawing", config, workdir)
        disk_after = run_child("disk", config, workdir)
        eager = run_child("eager", config, workdir)
        identical = all(
            same_data(x, y) for x, y in zip(_files(workdir / "record"), _files(workdir / "eager"))
        ) and len(_files(workdir / "record")) == len(_files(workdir / "eager"))
        identical_convert = len(_files(workdir / "convert")) == len(_files(workdir / "record")) and all(
            same_data(x, y) for x, y in zip(_files(workdir / "convert"), _files(workdir / "record"))
        )
        identical_drawing = len(_files(workdir / "convert-drawing")) == len(_files(workdir / "record")) and all(
            same_data(x, y) for x, y in zip(_files(workdir / "convert-drawing"), _files(workdir / "record"))
        )
        file_bytes = sum(p.stat().st_size for p in _files(workdir / "record"))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    largest = record["largest_tensor_bytes"]
    bound_mib = 2 * largest / MIB + OVERHEAD_MIB
    rows = [
        ("a. record + convert", record["wall_s"], record["peak_rss_mib"], record["rss_after_imports_mib"]),
        ("b. convert (load recipe)", convert["wall_s"], convert["peak_rss_mib"], convert["rss_after_imports_mib"]),
        ("b'. convert, drawing (0.2)", drawing["wall_s"], drawing["peak_rss_mib"], drawing["rss_after_imports_mib"]),
        ("c. eager init + save_file", eager["wall_s"], eager["peak_rss_mib"], eager["rss_after_imports_mib"]),
    ]
    print(f"config: {config}  ({record['total_bytes'] / 2**30:.2f} GiB of float32 weights, "
          f"largest tensor `{record['largest_tensor']}` {largest / MIB:.1f} MiB, recipe {record['recipe_bytes']} bytes)")
    print(f"machine: {platform.machine()} {os.cpu_count()} cpus, python {platform.python_version()}")
    print(f"{'':28} {'wall s':>8} {'peak RSS MiB':>13} {'RSS after imports':>18}")
    for name, wall, peak, base in rows:
        print(f"{name:28} {wall:8.1f} {peak:13.0f} {base:18.0f}")
    print(f"  record {record['record_s']:.1f} s + convert {record['convert_s']:.1f} s;  "
          f"eager init {eager['init_s']:.1f} s + save {eager['save_s']:.1f} s;  convert alone {convert['convert_s']:.1f} s")
    ok_a = record["peak_rss_mib"] < bound_mib
    ok_b = convert["peak_rss_mib"] < bound_mib
    print(f"bound 2 x largest + {OVERHEAD_MIB} MiB = {bound_mib:.0f} MiB:  "
          f"record+convert {'PASS' if ok_a else 'FAIL'}, convert {'PASS' if ok_b else 'FAIL'}")
    print(f"convert alone {convert['convert_s']:.2f} s vs drawing every dead draw {drawing['convert_s']:.2f} s: "
          f"{drawing['convert_s'] / convert['convert_s']:.2f}x faster (target >= 1.5x); vs eager init + save "
          f"{eager['init_s'] + eager['save_s']:.2f} s: {(eager['init_s'] + eager['save_s']) / convert['convert_s']:.2f}x")
    disk = [disk_before["disk_s"], disk_after["disk_s"]]
    print(f"disk floor (write {disk_before['disk_bytes'] / 2**30:.2f} GiB + fsync, before and after): "
          f"{disk[0]:.2f} s, {disk[1]:.2f} s ({disk_before['disk_bytes'] / min(disk) / 1e6:.0f} MB/s at best); "
          f"convert alone = {convert['convert_s'] / min(disk):.2f}x the faster floor")
    print(f"data sections identical to eager save_file: {identical}; convert == record+convert: {identical_convert}; "
          f"drawing == record+convert: {identical_drawing}")
    results = {
        "config": config,
        "config_kwargs": CONFIGS[config],
        "file_bytes": file_bytes,
        "bound_mib": bound_mib,
        "bound_ok": {"record_convert": ok_a, "convert": ok_b},
        "identical_to_eager": identical,
        "identical_convert_vs_record": identical_convert,
        "identical_drawing_vs_record": identical_drawing,
        "speedup_convert_over_drawing": drawing["convert_s"] / convert["convert_s"],
        "speedup_convert_over_eager_save": (eager["init_s"] + eager["save_s"]) / convert["convert_s"],
        "convert_drawing": drawing,
        "disk_floor_s": [disk_before["disk_s"], disk_after["disk_s"]],
        "record_convert": record,
        "convert": convert,
        "eager": eager,
        "machine": {"arch": platform.machine(), "cpus": os.cpu_count(), "python": platform.python_version()},
    }
    print(json.dumps(results, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    return 0 if ok_a and ok_b and identical and identical_convert and identical_drawing else 1


if __name__ == "__main__":
    sys.exit(main())
