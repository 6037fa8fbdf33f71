"""The GPU checks of issue 24, Part 2, as one script (run by tools/gpu_check.sh on a machine with CUDA).

Usage: python tools/gpu_check.py [--skip-1b] [--json OUT] [--dry-run-on-cpu]

Each check prints one line ``PASS``/``FAIL <name>: <detail>`` and the script exits non-zero if any
failed.  NOT YET RUN: no GPU has been available to this project; nothing here is a measured result.

* ``words``: which Philox words the torch-op path uses on ``cuda:0`` (``initrecipe.rng.portable.torch_philox``):
  torch's own kernel must pass its self-check on torch >= 2.14;
* ``golden-portable``: every tensor of ``tests/golden/portable-v1.1.recipe`` replayed with
  ``device="cuda"`` has the pinned sha256 (the same as the CPU's);
* ``golden-torch``: the same for the torch-mode fixture ``tests/golden/linear-v1.0.recipe``;
* ``torch-recipe``: a torch-mode recipe of a small Llama replayed on ``cuda`` equals the CPU replay
  bit for bit;
* ``llama-1b``: a Llama-1B-sized portable recipe, sha256 of every tensor on CUDA and on the CPU;
* ``nccl``: ``initrecipe.materialize`` on an NCCL world of size 1 (FSDP2 on a one-GPU mesh):
  the gathered weights equal the CPU replay, for a portable and a torch-mode recipe.

``--dry-run-on-cpu`` runs the same code with ``cpu`` for ``cuda``, gloo for NCCL and a tiny Llama for
the 1B one: it checks the script itself on a machine without a GPU (it proves nothing about CUDA).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any, Callable

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tools"))
sys.path.insert(0, str(ROOT / "tests"))

import initrecipe  # noqa: E402
from initrecipe.rng.portable import torch_philox  # noqa: E402

GOLDEN = ROOT / "tests" / "golden"
DEVICE = "cuda"  # --dry-run-on-cpu: "cpu"
BACKEND = "nccl"  # --dry-run-on-cpu: "gloo"
BIG = "llama-1b"  # --dry-run-on-cpu: "llama-tiny"


def sha256(t: torch.Tensor) -> str:
    data = t.detach().to("cpu").contiguous().reshape(-1)
    return hashlib.sha256(data.view(torch.uint8).numpy().tobytes()).hexdigest()


def differing(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> list[str]:
    """Names whose dtype, shape or bits differ (or that only one side has)."""
    names = sorted(set(a) | set(b))
    return [n for n in names if n not in a or n not in b or a[n].dtype != b[n].dtype
            or a[n].shape != b[n].shape or sha256(a[n]) != sha256(b[n])]


def check_words() -> str:
    device = "cuda:0" if DEVICE == "cuda" else DEVICE
    found = torch_philox.status(device)
    if torch.__version__ >= (2, 14) and not found.usable:
        raise AssertionError(f"torch's Philox kernel is not used on {device}: {found.reason}")
    return f"usable={found.usable} method={found.method or '-'} {found.reason}".strip()


def check_golden(name: str) -> str:
    expected = json.loads((GOLDEN / f"{name}.sha256.json").read_text())["tensors"]
    weights = initrecipe.replay(initrecipe.load(GOLDEN / f"{name}.recipe"), device=DEVICE)
    assert all(t.device.type == DEVICE for t in weights.values()), f"replay did not build on {DEVICE}"
    bad = [n for n, t in weights.items() if sha256(t) != expected[n]["sha256"]]
    assert list(weights) == list(expected) and not bad, f"differ from the pinned sha256: {bad}"
    return f"{len(weights)} tensors match"


def small_llama() -> Callable[[], Any]:
    from bench_record_replay import model_fn

    return model_fn("llama-tiny")


def check_torch_recipe() -> str:
    recipe = initrecipe.record(small_llama(), seed=3, rng="torch")
    on_cpu = initrecipe.replay(recipe)
    on_gpu = initrecipe.replay(recipe, device=DEVICE)
    bad = differing(on_cpu, on_gpu)
    assert not bad, f"CUDA replay differs from the CPU replay: {bad}"
    return f"{len(on_cpu)} tensors bitwise equal"


def check_llama_1b() -> str:
    from bench_record_replay import model_fn

    recipe = initrecipe.record(model_fn(BIG), seed=0, rng="portable", sync_rng=False)
    on_gpu = {n: sha256(t) for n, t in initrecipe.replay(recipe, device=DEVICE).items()}
    if DEVICE == "cuda":
        torch.cuda.empty_cache()
    on_cpu = {n: sha256(t) for n, t in initrecipe.replay(recipe).items()}
    bad = sorted(n for n in on_cpu if on_cpu[n] != on_gpu.get(n))
    assert list(on_cpu) == list(on_gpu) and not bad, f"sha256 differ: {bad}"
    return f"{len(on_cpu)} tensors, {recipe.total_bytes / 2**30:.2f} GiB, sha256 equal"


def check_nccl() -> str:
    import torch.distributed as dist
    from dist_scenarios import build_meta, fsdp, gathered
    from torch.distributed.device_mesh import init_device_mesh

    folder = tempfile.mkdtemp(prefix="initrecipe-nccl-")
    dist.init_process_group(BACKEND, init_method=f"file://{folder}/rendezvous", rank=0, world_size=1)
    try:
        from dist_scenarios import BUILDERS

        mesh = init_device_mesh(DEVICE, (1,))
        report = []
        for rng in ("portable", "torch"):
            recipe = initrecipe.record(BUILDERS["llama"], seed=7, rng=rng)
            model = fsdp(build_meta("llama"), mesh)
            initrecipe.materialize(model, recipe)
            mine = gathered(model)
            devices = sorted({t.device.type for t in mine.values()})
            assert devices == [DEVICE], f"materialized on {devices}"
            bad = differing({n: t.cpu() for n, t in mine.items()}, initrecipe.replay(recipe))
            assert not bad, f"{rng}: gathered differs from replay: {bad}"
            report.append(f"{rng}: {len(mine)} tensors equal")
        return "; ".join(report)
    finally:
        dist.destroy_process_group()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--skip-1b", action="store_true", help="leave out the Llama-1B CPU/CUDA comparison")
    parser.add_argument("--json", metavar="OUT", help="also write the results as JSON")
    parser.add_argument("--dry-run-on-cpu", action="store_true", help="check the script itself without a GPU")
    args = parser.parse_args(argv)
    global DEVICE, BACKEND, BIG
    if args.dry_run_on_cpu:
        DEVICE, BACKEND, BIG = "cpu", "gloo", "llama-tiny"
        where = "DRY RUN on the CPU (nothing about CUDA is checked)"
    elif not torch.cuda.is_available():
        print("gpu_check: no CUDA device here; nothing checked", file=sys.stderr)
        return 2
    else:
        where = f"{torch.cuda.get_device_name()}, CUDA {torch.version.cuda}"
    print(f"torch {torch.__version__}, {where}", flush=True)
    checks: list[tuple[str, Callable[[], str]]] = [
        ("words", check_words),
        ("golden-portable", lambda: check_golden("portable-v1.1")),
        ("golden-torch", lambda: check_golden("linear-v1.0")),
        ("torch-recipe", check_torch_recipe),
        ("nccl", check_nccl),
    ]
    if not args.skip_1b:
        checks.append((BIG, check_llama_1b))
    results: dict[str, dict[str, Any]] = {}
    for name, fn in checks:
        start = time.perf_counter()
        try:
            detail, ok = fn(), True
        except Exception as error:  # noqa: BLE001 - every check reports, none stops the others
            detail, ok = f"{type(error).__name__}: {error}", False
            traceback.print_exc()
        seconds = time.perf_counter() - start
        results[name] = {"ok": ok, "detail": detail, "seconds": round(seconds, 2)}
        print(f"{'PASS' if ok else 'FAIL'} {name} ({seconds:.1f} s): {detail}", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps({"torch": torch.__version__, "device": where,
                                               "checks": results}, indent=2) + "\n")
    return 0 if all(r["ok"] for r in results.values()) else 1


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    sys.exit(main())
