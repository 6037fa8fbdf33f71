#!/usr/bin/env python
"""initrecipe beside the ways people initialize models today, measured in one run.

For GPT-2 (124M config) and a Llama-1B-sized config, every system below runs in a fresh process
(started through ``bench_record_replay.run_child``, so its ``ru_maxrss`` is its own), repeated
``--repeats`` times with the systems interleaved; the tables give medians with min-max.  Each
model is built with ``torch.manual_seed(0)`` first.

* ``eager``: ``model_fn()``;
* ``meta``: ``with torch.device("meta"): model_fn()``, ``to_empty(device="cpu")``,
  ``reset_parameters()`` on every module that has one, then the model's own init,
  ``model.init_weights()`` (transformers' public API, which also re-ties tied weights);
* ``accelerate``: ``with accelerate.init_empty_weights(): model_fn()``, then the same three steps;
* ``accelerate-apply``: the same, but ``model.apply(model._init_weights)`` instead of
  ``init_weights()`` (it bypasses the ``_is_hf_initialized`` flags that make ``init_weights()``
  skip every module of a model built under ``init_empty_weights``);
* ``colossalai``: ``with LazyInitContext(): model_fn()``, then ``LazyInitContext.materialize``;
* ``record-torch`` / ``record-portable``: ``initrecipe.record(model_fn, seed=0, rng=...)`` with
  the default ``sync_rng=True``, the recipe saved; then, in the same process, once more with
  ``sync_rng=False`` (warm);
* ``replay-torch`` / ``replay-portable``: ``initrecipe.load(path)`` + ``initrecipe.replay(recipe)``
  in a process that never imports transformers;
* ``convert``: ``initrecipe.to_safetensors(initrecipe.load(path), out_dir)`` from the rng="torch"
  recipe: the checkpoint a recipe replaces.

Fidelity (first repetition): each child hashes every tensor and keeps a fixed subsample of its
values (``bench_fidelity.snapshot``); the parent counts the tensors bitwise equal to eager's and
those whose values pass a two-sample KS test against eager's at the same name and shape.

Scaling: one process records Llama configs of 1B, 7B, 70B and 405B sizes (``sync_rng=False``:
nothing is materialized or drawn) and plans their replay with ``initrecipe.runtime.replay_plan.prepare_replay``
(shape propagation on the meta device, no allocation).

Outputs, in ``--out-dir`` (default ``docs/bench``; ``--quick`` writes to a temporary folder):
``results.json``, ``results.md`` and ``bench.png`` (needs matplotlib: ``pip install -e '.[bench]'``).
A full run into the default folder also rewrites the marked result blocks of README.md and
docs/BENCHMARKS.md.  Progress is saved after every child; ``--resume`` continues an interrupted run.

Usage::

    flock /tmp/initrecipe-heavy.lock python tools/bench.py   # full run, ~15 minutes on 2 cores
    python tools/bench.py --quick                            # tiny models, well under a minute
    python tools/bench.py --resume                           # continue where a full run stopped
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import gc
import json
import os
import platform
import resource
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Iterator

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_fidelity as fidelity  # noqa: E402
import bench_record_replay as base  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = ROOT / "docs" / "bench"
SCHEMA = 1

MODELS = ["gpt2", "llama-1b"]
QUICK_MODELS = ["gpt2-tiny", "llama-tiny"]
SYSTEMS = [
    "eager",
    "meta",
    "accelerate",
    "accelerate-apply",
    "colossalai",
    "record-torch",
    "record-portable",
    "replay-torch",
    "replay-portable",
    "convert",
]
RECIPE_OF = {"replay-torch": "torch", "replay-portable": "portable", "convert": "torch"}
COLOSSALAI_INSTALL = "pip install --no-deps colossalai==0.5.0 peft==0.21.2 (after torch==2.13.0)"

SCALING = ["llama-1b", "llama-7b", "llama-70b", "llama-405b"]
# --quick: the same shape of question on tiny Llamas: layers vary, and one config is 4x wider.
QUICK_SCALING = {
    "llama-tiny-2l": dict(num_hidden_layers=2),
    "llama-tiny-4l": dict(num_hidden_layers=4),
    "llama-tiny-8l": dict(num_hidden_layers=8),
    "llama-tiny-4l-wide": dict(num_hidden_layers=4, hidden_size=1024, intermediate_size=2752, num_attention_heads=16,
                               num_key_value_heads=16),
}
UNBOUNDED = 2**62  # max_bytes for planning replays far larger than this machine's memory


def scaling_configs(quick: bool) -> dict[str, dict[str, Any]]:
    if not quick:
        return {name: base.LLAMA_CONFIGS[name] for name in SCALING}
    return {name: {**base.LLAMA_CONFIGS["llama-tiny"], **kw} for name, kw in QUICK_SCALING.items()}


# =========================================================================== children
class Stages:
    """Wall time per named step; remembers the step an exception escaped from."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self.current: str | None = None

    @contextlib.contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        self.current = name
        t0 = time.perf_counter()
        yield
        self.seconds[name] = time.perf_counter() - t0
        self.current = None

    @property
    def total(self) -> float:
        return sum(self.seconds.values())


class Skipped(Exception):
    """A system cannot run here at all (its package is missing or does not import)."""


def _cpu_seconds() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _module_tensors(module: Any) -> dict[str, Any]:
    tensors = dict(module.named_parameters(remove_duplicate=False))
    tensors.update(module.named_buffers(remove_duplicate=False))
    return tensors


def _reset_parameters(module: Any) -> None:
    for m in module.modules():
        reset = getattr(m, "reset_parameters", None)
        if callable(reset):
            reset()


def _import_optional(what: str) -> Any:
    try:
        if what == "accelerate":
            import accelerate

            return accelerate.init_empty_weights
        from colossalai.lazy import LazyInitContext

        return LazyInitContext
    except Exception as exc:  # ImportError, or anything the package raises while importing
        hint = "pip install -e '.[bench]'" if what == "accelerate" else COLOSSALAI_INSTALL
        raise Skipped(f"`{what}` does not import here ({type(exc).__name__}: {exc}); install: {hint}") from None


def _build(system: str, fn: Callable[[], Any], context: Any, stages: Stages) -> Any:
    """Run one model-building system (``context``: the tool's lazy-init context); returns the module."""
    import torch

    torch.manual_seed(0)
    if system == "eager":
        with stages("construct"):
            return fn()
    if system == "colossalai":
        with stages("construct"):
            with context():
                module = fn()
        with stages("materialize"):
            context.materialize(module)
        return module
    with stages("construct"):
        with context():
            module = fn()
    with stages("to_empty"):
        module.to_empty(device="cpu")
    with stages("reset_parameters"):
        _reset_parameters(module)
    if system == "accelerate-apply":
        with stages("apply(_init_weights)"):
            module.apply(module._init_weights)
    else:
        with stages("init_weights"):
            module.init_weights()
    return module


def _context(system: str) -> Any:
    import torch

    if system in ("accelerate", "accelerate-apply"):
        return _import_optional("accelerate")
    if system == "colossalai":
        return _import_optional("colossalai")
    if system == "meta":
        return lambda: torch.device("meta")
    return None


def _job(job: dict[str, Any]) -> dict[str, Any]:
    """One system on one model in this process: timings, peak RSS and (optionally) a fidelity snapshot."""
    import torch

    system, model, work = job["system"], job["model"], Path(job["work"])
    stages = Stages()
    out: dict[str, Any] = {"loadavg_1min": os.getloadavg()[0]}
    snap_path = work / f"{system}.snapshot"
    tensors: dict[str, Any] | None = None
    from_file = False
    try:
        if system.startswith("record-"):
            import transformers  # noqa: F401  (as the model-building children: before the timer)
            import initrecipe
            import initrecipe.capture.recorder  # noqa: F401

            rng = system.split("-", 1)[1]
            fn = base.model_fn(model)
            out["rss_after_imports_kib"] = base.proc_status_kib("VmRSS")
            cpu0 = _cpu_seconds()
            with stages("record"):
                recipe = initrecipe.record(fn, seed=0, rng=rng)
            out["cpu_seconds"] = _cpu_seconds() - cpu0
            out["peak_rss_kib"] = base.maxrss_kib()
            path = recipe.save(work / f"{rng}.recipe")
            out["recipe_bytes"] = path.stat().st_size
            out["content_hash"] = recipe.content_hash
            out["num_ops"] = recipe.num_ops
            out["total_bytes"] = recipe.total_bytes
            t0 = time.perf_counter()
            initrecipe.record(fn, seed=0, rng=rng, sync_rng=False)
            out["warm_seconds_sync_rng_false"] = time.perf_counter() - t0
        else:
            if system.startswith("replay-") or system == "convert":
                import initrecipe

                path = work / f"{RECIPE_OF[system]}.recipe"
                out["rss_after_imports_kib"] = base.proc_status_kib("VmRSS")
                cpu0 = _cpu_seconds()
                if system == "convert":
                    ckpt = work / "checkpoint"
                    shutil.rmtree(ckpt, ignore_errors=True)
                    with stages("load"):
                        recipe = initrecipe.load(path)
                    with stages("to_safetensors"):
                        files = initrecipe.to_safetensors(recipe, ckpt, progress=False)
                else:
                    with stages("load"):
                        recipe = initrecipe.load(path)
                    with stages("replay"):
                        tensors = initrecipe.replay(recipe)
            else:
                context = _context(system)
                fn = base.model_fn(model)
                out["rss_after_imports_kib"] = base.proc_status_kib("VmRSS")
                cpu0 = _cpu_seconds()
                module = _build(system, fn, context, stages)
                tensors = _module_tensors(module)
            out["cpu_seconds"] = _cpu_seconds() - cpu0
            out["peak_rss_kib"] = base.maxrss_kib()
            if system == "convert":
                out["checkpoint_bytes"] = sum(f.stat().st_size for f in files if f.suffix == ".safetensors")
                out["checkpoint_files"] = [f.name for f in files]
                if job["fidelity"]:
                    from safetensors import safe_open

                    tensors = {}
                    for f in files:
                        if f.suffix == ".safetensors":
                            with safe_open(str(f), framework="pt") as fh:
                                tensors.update({k: fh.get_tensor(k) for k in fh.keys()})
                    from_file = True
                shutil.rmtree(ckpt, ignore_errors=True)
    except Skipped as exc:
        return {"skipped": str(exc)}
    except Exception as exc:  # a system that cannot produce a model: report where and why
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        return {"failed": {"stage": stages.current or "setup", "error": f"{type(exc).__name__}: {msg}"[:300]},
                "loadavg_1min": out["loadavg_1min"]}
    out["seconds"] = stages.total
    out["stages"] = stages.seconds
    out["vmhwm_kib"] = base.proc_status_kib("VmHWM")
    out["threads"] = torch.get_num_threads()
    if job["fidelity"] and tensors is not None:
        fidelity.snapshot(tensors, snap_path, ties=not from_file)
        out["snapshot"] = snap_path.name
    del tensors
    gc.collect()
    return out


def child_jobs(spec: str) -> dict[str, Any]:
    return {"results": [_job(job) for job in json.loads(spec)]}


def child_scaling(spec: str) -> dict[str, Any]:
    """Record each config ``reps`` times and plan its replay, smallest first, in this one process."""
    import torch  # noqa: F401
    from transformers import LlamaConfig, LlamaForCausalLM

    import initrecipe
    import initrecipe.capture.recorder  # noqa: F401
    from initrecipe.runtime.replay_plan import prepare_replay

    args = json.loads(spec)
    reps = args["reps"]
    rss0 = base.proc_status_kib("VmRSS")
    rows = []
    for name, kwargs in args["configs"].items():
        cfg = LlamaConfig(**kwargs)
        fn = lambda: LlamaForCausalLM(cfg)  # noqa: E731
        record_s, plan_s = [], []
        for _ in range(reps):
            t0 = time.perf_counter()
            recipe = initrecipe.record(fn, seed=0, sync_rng=False)
            record_s.append(time.perf_counter() - t0)
        data = recipe.to_bytes()
        for _ in range(reps):
            t0 = time.perf_counter()
            plan = prepare_replay(initrecipe.load(data), max_bytes=UNBOUNDED)
            plan_s.append(time.perf_counter() - t0)
        seen: dict[int, int] = {}
        for t in recipe.tensors:
            seen[t.value] = t.numel
        rows.append({
            "config": name,
            "config_kwargs": kwargs,
            "layers": kwargs["num_hidden_layers"],
            "hidden": kwargs["hidden_size"],
            "params": sum(seen.values()),
            "tensors": len(recipe.tensors),
            "total_bytes": recipe.total_bytes,
            "plan_needed_bytes": plan.needed_bytes,
            "recipe_bytes": len(data),
            "num_ops": recipe.num_ops,
            "record_seconds": record_s,
            "plan_seconds": plan_s,
            "vmhwm_growth_kib": base.proc_status_kib("VmHWM") - rss0,
        })
        del recipe, plan, data
    return {"rss_after_imports_kib": rss0, "rows": rows}


# =========================================================================== parent
def source_tree() -> str | None:
    """The git tree of ``initrecipe/`` (what is measured), with "+dirty" for uncommitted changes there.

    ``--resume`` accepts results of the same tree, so commits that touch only tools/ or docs/
    (e.g. the results themselves) do not invalidate a run.
    """
    try:
        tree = subprocess.run(["git", "rev-parse", "HEAD:initrecipe"], cwd=ROOT, capture_output=True, text=True,
                              check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "initrecipe"], cwd=ROOT, capture_output=True,
                               text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return tree + ("+dirty" if dirty else "")


def machine_info() -> dict[str, Any]:
    import torch
    import transformers

    import initrecipe

    cpu = platform.processor() or "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem_gib = None
    with contextlib.suppress(OSError, ValueError, IndexError):
        mem_gib = int(Path("/proc/meminfo").read_text().split()[1]) / 2**20
    versions = {}
    for pkg in ("accelerate", "colossalai", "matplotlib"):
        try:
            from importlib.metadata import version

            versions[pkg] = version(pkg)
        except Exception:
            versions[pkg] = None
    return {
        "cpu": cpu,
        "cpus": os.cpu_count(),
        "memory_gib": mem_gib,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "transformers": transformers.__version__,
        "initrecipe": initrecipe.__version__,
        "initrecipe_commit": base.git_describe(),
        "initrecipe_tree": source_tree(),
        **{f"{k}_version": v for k, v in versions.items()},
    }


class Run:
    """The state of one benchmark run, saved to ``results.json`` after every child."""

    def __init__(self, out_dir: Path, work_dir: Path, data: dict[str, Any]) -> None:
        self.out_dir, self.work_dir, self.data = out_dir, work_dir, data

    @property
    def path(self) -> Path:
        return self.out_dir / "results.json"

    def save(self) -> None:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(self.data, indent=1) + "\n")
        os.replace(tmp, self.path)

    def result(self, model: str, system: str, rep: int) -> dict[str, Any] | None:
        return self.data["runs"].get(model, {}).get(system, {}).get(str(rep))

    def put(self, model: str, system: str, rep: int, result: dict[str, Any]) -> None:
        self.data["runs"].setdefault(model, {}).setdefault(system, {})[str(rep)] = result
        self.save()


def _work_files_present(run: Run, model: str, system: str, result: dict[str, Any]) -> bool:
    work = run.work_dir / model
    if "snapshot" in result and not (work / result["snapshot"]).exists():
        return False
    if system.startswith("record-") and "failed" not in result and "skipped" not in result:
        return (work / f"{system.split('-', 1)[1]}.recipe").exists()
    return True


def run_systems(run: Run, models: list[str], systems: list[str], repeats: int, quick: bool,
                timeout: float) -> int:
    """Every (repetition, system) pair, interleaved, each in a fresh process (both models in one for --quick)."""
    for model in models:
        (run.work_dir / model).mkdir(parents=True, exist_ok=True)
    groups = [[m] for m in models] if not quick else [models]
    total = len(models) * repeats * len(systems)
    done = children = 0
    for group in groups:
        for rep in range(repeats):
            for system in systems:
                jobs = []
                for model in group:
                    done += 1
                    prev = run.result(model, system, rep)
                    if prev is not None and _work_files_present(run, model, system, prev):
                        continue
                    first = run.result(model, system, 0)
                    if rep > 0 and first is not None and ("skipped" in first or "failed" in first):
                        # Skips and failures are reported once; a system that cannot build the
                        # model at repetition 0 is not retried.
                        run.put(model, system, rep, {"not_repeated": True})
                        continue
                    jobs.append({"system": system, "model": model, "rep": rep, "fidelity": rep == 0,
                                 "work": str(run.work_dir / model)})
                if not jobs:
                    continue
                label = ", ".join(j["model"] for j in jobs)
                print(f"[{done}/{total}] {system} on {label}, repetition {rep + 1}/{repeats} "
                      f"(load {os.getloadavg()[0]:.2f}) ...", file=sys.stderr, flush=True)
                started = time.perf_counter()
                children += 1
                try:
                    results = base.run_child(["jobs", json.dumps(jobs)], script=__file__, timeout=timeout)["results"]
                except (RuntimeError, ValueError, IndexError) as exc:  # crashed, killed, or printed no JSON
                    error = str(exc).strip().splitlines()
                    tail = [line for line in error if line.strip()][-1:] or ["?"]
                    results = [{"failed": {"stage": "process", "error": f"{error[0]} ... {tail[0]}"[:400]}}] * len(jobs)
                elapsed = time.perf_counter() - started
                for job, result in zip(jobs, results):
                    result["process_seconds"] = elapsed
                    run.put(job["model"], system, rep, result)
                    if "failed" in result:
                        print(f"    {system} on {job['model']} FAILED at {result['failed']['stage']}: "
                              f"{result['failed']['error']}", file=sys.stderr, flush=True)
                    elif "skipped" in result:
                        print(f"    {system} SKIPPED: {result['skipped']}", file=sys.stderr, flush=True)
    return children


def _stats(values: list[float]) -> dict[str, float] | None:
    if not values:
        return None
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "n": len(values)}


def summarize(run: Run, models: list[str], systems: list[str]) -> None:
    """Medians and min-max per (model, system), fidelity against eager, and recipe vs checkpoint sizes."""
    summary: dict[str, Any] = {}
    sizes: dict[str, Any] = {}
    for model in models:
        work = run.work_dir / model
        reps = run.data["runs"].get(model, {})
        eager0 = reps.get("eager", {}).get("0", {})
        eager_snap = fidelity.load_snapshot(work / eager0["snapshot"]) if "snapshot" in eager0 else None
        per: dict[str, Any] = {}
        for system in systems:
            results = [r for _, r in sorted(reps.get(system, {}).items(), key=lambda kv: int(kv[0]))]
            first = results[0] if results else {}
            entry: dict[str, Any] = {}
            if "skipped" in first:
                entry["skipped"] = first["skipped"]
            elif "failed" in first:
                entry["failed"] = first["failed"]
            ok = [r for r in results if "seconds" in r]
            if ok:
                entry["seconds"] = _stats([r["seconds"] for r in ok])
                entry["peak_rss_mib"] = _stats([r["peak_rss_kib"] / 1024 for r in ok])
                entry["rss_after_imports_mib"] = _stats([r["rss_after_imports_kib"] / 1024 for r in ok])
                entry["cpu_seconds"] = _stats([r["cpu_seconds"] for r in ok])
                stage_names = list(ok[0]["stages"])
                entry["stages"] = {s: statistics.median(r["stages"][s] for r in ok) for s in stage_names}
                entry["loadavg_1min"] = _stats([r["loadavg_1min"] for r in ok])
            failed_later = [r["failed"] for r in results[1:] if "failed" in r]
            if failed_later:
                entry["failed_repetitions"] = failed_later
            if system.startswith("record-") and ok:
                entry["recipe_bytes"] = ok[0]["recipe_bytes"]
                entry["num_ops"] = ok[0]["num_ops"]
                entry["deterministic"] = len({r["content_hash"] for r in ok}) == 1
                entry["warm_seconds_sync_rng_false"] = _stats([r["warm_seconds_sync_rng_false"] for r in ok])
            if system == "convert" and ok:
                entry["checkpoint_bytes"] = ok[0]["checkpoint_bytes"]
            if "snapshot" in first and eager_snap is not None:
                snap = fidelity.load_snapshot(work / first["snapshot"])
                entry["fidelity"] = fidelity.compare(eager_snap, snap, names="got" if system == "convert" else "eager")
            per[system] = entry
        summary[model] = per
        ckpt = per.get("convert", {}).get("checkpoint_bytes")
        sz = {"checkpoint_bytes": ckpt}
        for rng in ("torch", "portable"):
            rb = per.get(f"record-{rng}", {}).get("recipe_bytes")
            sz[f"recipe_bytes_{rng}"] = rb
            sz[f"checkpoint_over_recipe_{rng}"] = ckpt / rb if ckpt and rb else None
        sizes[model] = sz
    run.data["summary"] = summary
    run.data["sizes"] = sizes
    run.save()


def run_scaling(run: Run, quick: bool, reps: int, timeout: float) -> int:
    """The scaling child, unless a resumed run has its rows already; returns the children run (0 or 1)."""
    if run.data.get("scaling") and "rows" in run.data["scaling"]:
        return 0
    configs = scaling_configs(quick)
    print(f"[scaling] recording {', '.join(configs)} ({reps} times each) and planning their replays ...",
          file=sys.stderr, flush=True)
    try:
        res = base.run_child(["scaling", json.dumps({"configs": configs, "reps": reps})], script=__file__,
                             timeout=timeout)
    except (RuntimeError, ValueError, IndexError) as exc:
        run.data["scaling"] = {"failed": str(exc)[:2000]}
        run.save()
        return 1
    for row in res["rows"]:
        row["record"] = _stats(row["record_seconds"])
        row["plan"] = _stats(row["plan_seconds"])
        row["recipe_bytes_per_layer"] = row["recipe_bytes"] / row["layers"]
    run.data["scaling"] = res
    run.save()
    return 1


def new_run_data(args: argparse.Namespace, models: list[str], systems: list[str], repeats: int) -> dict[str, Any]:
    return {
        "schema": SCHEMA,
        "command": shlex.join(["python", "tools/bench.py", *(args.argv or [])]),
        "quick": args.quick,
        "models": models,
        "systems": systems,
        "repeats": repeats,
        "note": args.note,
        "started": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": machine_info(),
        "loadavg_at_start": os.getloadavg(),
        "runs": {},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="\n\n".join(__doc__.split("\n\n")[1:]))
    parser.add_argument("--quick", action="store_true", help="tiny models, one repetition: checks the script, not speed")
    parser.add_argument("--repeats", type=int, default=None, help="fresh-process repetitions per system (default 3; --quick 1)")
    parser.add_argument("--scaling-repeats", type=int, default=3, help="records per scaling config (default 3)")
    parser.add_argument("--systems", default=",".join(SYSTEMS), help=f"comma-separated subset of {','.join(SYSTEMS)}")
    parser.add_argument("--models", default=None, help=f"comma-separated subset of {','.join(MODELS)}")
    parser.add_argument("--no-scaling", action="store_true", help="skip the 1B-405B record/plan scaling run")
    parser.add_argument("--out-dir", type=Path, default=None, help="where results.json/.md and bench.png go (default docs/bench)")
    parser.add_argument("--resume", action="store_true", help="keep the finished children of the run in --out-dir")
    parser.add_argument("--no-update-docs", action="store_true", help="do not rewrite the result blocks of README.md and docs/BENCHMARKS.md")
    parser.add_argument("--child-timeout", type=float, default=900.0, help="seconds before a child is killed (default 900)")
    parser.add_argument("--note", default=None, help="a remark printed with the results (e.g. 'provisional: machine shared')")
    parser.add_argument("--child", nargs=2, metavar=("KIND", "SPEC"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)

    if args.child:
        kind, spec = args.child
        print(json.dumps({"jobs": child_jobs, "scaling": child_scaling}[kind](spec)))
        return 0

    import bench_report as report  # matplotlib only when plotting

    systems = [s.strip() for s in args.systems.split(",") if s.strip()]
    unknown = [s for s in systems if s not in SYSTEMS]
    if unknown:
        parser.error(f"unknown system(s) {unknown}; choose from {SYSTEMS}")
    if "eager" not in systems:
        systems.insert(0, "eager")  # every fidelity column is measured against it
    for system, rng in RECIPE_OF.items():
        if system in systems and f"record-{rng}" not in systems:
            parser.error(f"`{system}` replays the recipe `record-{rng}` writes: add `record-{rng}` to --systems")
    systems = [s for s in SYSTEMS if s in systems]
    all_models = QUICK_MODELS if args.quick else MODELS
    models = all_models if args.models is None else [m.strip() for m in args.models.split(",") if m.strip()]
    if any(m not in all_models for m in models):
        parser.error(f"--models: choose from {all_models}")
    repeats = args.repeats if args.repeats is not None else (1 if args.quick else 3)
    if repeats < 1:
        parser.error("--repeats must be at least 1")
    out_dir = args.out_dir or (Path(tempfile.gettempdir()) / "initrecipe-bench-quick" if args.quick else DEFAULT_OUT)
    out_dir = out_dir.resolve()
    work_dir = out_dir / ".work"  # recipes and fidelity snapshots; kept for --resume, never committed
    data = None
    if args.resume and (out_dir / "results.json").exists():
        data = json.loads((out_dir / "results.json").read_text())
        tree = source_tree()
        had = data.get("machine", {}).get("initrecipe_tree")
        same = (data.get("schema") == SCHEMA and data.get("quick") == args.quick and data.get("repeats") == repeats
                and had == tree and tree is not None and not tree.endswith("+dirty"))
        if not same:
            print(f"error: {out_dir / 'results.json'} is from another configuration or commit "
                  f"(initrecipe/ tree {had}, repeats {data.get('repeats')}, quick {data.get('quick')}); "
                  f"this run is tree {tree}, repeats {repeats}, quick {args.quick}. "
                  "Run without --resume to start over.", file=sys.stderr)
            return 2
        data["models"] = list(dict.fromkeys([*data["models"], *models]))
        data["systems"] = [s for s in SYSTEMS if s in set(data["systems"]) | set(systems)]
        print(f"resuming {out_dir / 'results.json'}", file=sys.stderr)
    else:
        shutil.rmtree(work_dir, ignore_errors=True)
        data = new_run_data(args, models, systems, repeats)
    work_dir.mkdir(parents=True, exist_ok=True)
    (work_dir / ".gitignore").write_text("*\n")
    run = Run(out_dir, work_dir, data)
    run.save()

    t0 = time.perf_counter()
    ran = run_systems(run, models, systems, repeats, args.quick, args.child_timeout)
    if not args.no_scaling:
        ran += run_scaling(run, args.quick, 1 if args.quick else args.scaling_repeats, args.child_timeout)
    summarize(run, run.data["models"], run.data["systems"])
    if ran or "seconds" not in run.data:  # a resume with nothing left to run only re-renders
        run.data["loadavg_at_end"] = os.getloadavg()
        run.data["seconds"] = run.data.get("seconds", 0.0) + time.perf_counter() - t0
        run.data["finished"] = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    run.data["plot"] = report.plot(run.data, out_dir / "bench.png")
    markdown = report.markdown(run.data)
    (out_dir / "results.md").write_text(markdown)
    run.save()
    if not args.quick and out_dir == DEFAULT_OUT.resolve() and not args.no_update_docs:
        for path, block in ((ROOT / "README.md", report.readme_block(run.data)),
                            (ROOT / "docs" / "BENCHMARKS.md", report.benchmarks_block(run.data, markdown))):
            if not report.replace_block(path, block):
                print(f"warning: no bench markers in {path}; not updated", file=sys.stderr)
    print(markdown, end="")
    plot = run.data["plot"]
    print(f"results: {out_dir / 'results.json'}, {out_dir / 'results.md'}, "
          + (str(out_dir / plot["path"]) if "path" in plot else f"no plot ({plot['skipped']})"), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
