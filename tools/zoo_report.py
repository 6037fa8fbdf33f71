"""Run a model zoo through the zoo checks and report the outcome per model and RNG mode.

Used by ``tools/zoo_vision.py`` (timm, torchvision) and ``tools/zoo_llm.py`` (torchtune,
torchtitan), whose libraries cannot be installed beside the pinned torch of the test suite.  The
checks themselves are ``tests/zoo_check.py``'s, the same ones the ``transformers`` and
``diffusers`` zoos run in CI.

Each model gets one outcome per mode:

* ``bitwise`` (torch mode): every tensor equal to eager's, names, dtypes, shapes, bytes,
  ``requires_grad`` and ties; ``ok`` (portable mode): every portable invariant holds;
* ``refused``: ``record`` raised :class:`initrecipe.RecordError` (a clear refusal; its message
  is reported);
* ``FAILED``: anything else (a wrong tensor, another exception): a bug to fix.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
import traceback
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

import initrecipe  # noqa: E402
from zoo_check import check_portable, check_portable_shards, check_torch_mode, record_portable  # noqa: E402

ModelFn = Callable[[], torch.nn.Module]
_MESSAGE = 400  # characters of an error message kept in the report


@dataclass
class Outcome:
    """What one mode gave for one model."""

    status: str  # "bitwise" / "ok" / "refused" / "FAILED"
    detail: str = ""
    seconds: float = 0.0


@dataclass
class ModelResult:
    library: str
    model: str
    tensors: int
    numel: int
    torch: Outcome
    portable: Outcome | None


def _short(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}".replace("\n", " ")
    return text if len(text) <= _MESSAGE else text[: _MESSAGE - 3] + "..."


def _run(mode_ok: str, check: Callable[[], object]) -> Outcome:
    start = time.perf_counter()
    try:
        check()
    except initrecipe.RecordError as exc:
        return Outcome("refused", _short(exc), time.perf_counter() - start)
    except Exception as exc:  # noqa: BLE001 - every other failure is reported, not raised
        detail = _short(exc)
        if os.environ.get("ZOO_TRACEBACK"):
            detail += "\n" + traceback.format_exc()
        return Outcome("FAILED", detail, time.perf_counter() - start)
    return Outcome(mode_ok, "", time.perf_counter() - start)


def check_model(library: str, name: str, model_fn: ModelFn, portable: bool = True) -> ModelResult:
    """Both modes' outcomes for one model (an eager build first, to count its tensors)."""
    torch.manual_seed(0)
    try:
        model = model_fn()
    except Exception as exc:  # noqa: BLE001 - a builder that fails eagerly is the zoo's bug
        failed = Outcome("FAILED", "eager build failed: " + _short(exc))
        return ModelResult(library, name, 0, 0, failed, failed if portable else None)
    tensors = list(model.state_dict(keep_vars=True).values())
    numel = sum(t.numel() for t in tensors)
    del model
    torch_outcome = _run("bitwise", lambda: check_torch_mode(name, model_fn))

    def portable_check() -> None:
        recipe = record_portable(model_fn)
        check_portable(name, model_fn, recipe=recipe)
        check_portable_shards(name, recipe)

    portable_outcome = _run("ok", portable_check) if portable else None
    return ModelResult(library, name, len(tensors), numel, torch_outcome, portable_outcome)


def counts(results: list[ModelResult], mode: str) -> dict[str, int]:
    """How many models of ``results`` got each outcome in ``mode`` ("torch" or "portable")."""
    out = {"bitwise" if mode == "torch" else "ok": 0, "refused": 0, "FAILED": 0}
    for r in results:
        outcome = getattr(r, mode)
        if outcome is not None:
            out[outcome.status] = out.get(outcome.status, 0) + 1
    return out


def markdown(results: list[ModelResult]) -> str:
    """One table per library: model, size, torch-mode and portable outcome, and the counts."""
    lines: list[str] = []
    for library in dict.fromkeys(r.library for r in results):
        rows = [r for r in results if r.library == library]
        lines += [f"### {library}", "", "| model | tensors | parameters+buffers | rng=\"torch\" | rng=\"portable\" |",
                  "|---|---:|---:|---|---|"]
        for r in rows:
            cells = []
            for outcome in (r.torch, r.portable):
                if outcome is None:
                    cells.append("not run")
                else:
                    text = outcome.status
                    if outcome.detail:
                        text += f": {outcome.detail}".replace("|", "\\|")
                    cells.append(text)
            lines.append(f"| `{r.model}` | {r.tensors} | {r.numel:,} | {cells[0]} | {cells[1]} |")
        t, p = counts(rows, "torch"), counts(rows, "portable")
        lines += ["", f"{library}: {len(rows)} models; rng=\"torch\": {t['bitwise']} bitwise, {t['refused']} refused "
                  f"clearly, {t['FAILED']} other; rng=\"portable\": {p['ok']} ok, {p['refused']} refused clearly, "
                  f"{p['FAILED']} other.", ""]
    return "\n".join(lines)


def environment() -> str:
    """The versions a report was made with."""
    import importlib.metadata as md

    parts = [f"Python {platform.python_version()}", f"torch {torch.__version__}"]
    for dist in ("torchvision", "timm", "torchtune", "torchtitan", "torchao"):
        try:
            parts.append(f"{dist} {md.version(dist)}")
        except md.PackageNotFoundError:
            pass
    return ", ".join(parts)


def main(library_zoos: dict[str, Callable[[], dict[str, ModelFn]]], description: str,
         argv: list[str] | None = None) -> int:
    """Command line shared by the zoo tools: run, print the table, optionally write it.

    ``library_zoos`` maps a library name to a function returning its registry (name -> builder);
    a library that cannot be imported is reported as such and counts as failed.
    """
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--library", action="append", choices=sorted(library_zoos),
                        help="run only this library (repeatable)")
    parser.add_argument("--only", action="append", metavar="MODEL", help="run only this model (repeatable)")
    parser.add_argument("--no-portable", action="store_true", help="check rng='torch' only")
    parser.add_argument("--markdown", type=Path, help="also write the tables to this file")
    parser.add_argument("--json", type=Path, help="also write the results as JSON")
    args = parser.parse_args(argv)

    results: list[ModelResult] = []
    import_errors: list[str] = []
    for library in args.library or list(library_zoos):
        try:
            zoo = library_zoos[library]()
        except Exception as exc:  # noqa: BLE001 - an uninstallable library is part of the report
            import_errors.append(f"{library}: cannot be imported: {_short(exc)}")
            print(import_errors[-1], flush=True)
            continue
        for name, fn in zoo.items():
            if args.only and name not in args.only:
                continue
            result = check_model(library, name, fn, portable=not args.no_portable)
            results.append(result)
            p = result.portable
            print(f"{library:12s} {name:36s} torch={result.torch.status:8s} {result.torch.seconds:6.2f}s  "
                  f"portable={(p.status if p else '-'):8s} {(p.seconds if p else 0):6.2f}s  "
                  f"{result.torch.detail or (p.detail if p else '')}"[:300], flush=True)
    report = f"Environment: {environment()}.\n\n" + markdown(results)
    if import_errors:
        report += "\n" + "\n".join(f"* {e}" for e in import_errors) + "\n"
    print()
    print(report)
    if args.markdown:
        args.markdown.write_text(report)
    if args.json:
        args.json.write_text(json.dumps([asdict(r) for r in results], indent=1))
    failed = import_errors or any(
        o is not None and o.status == "FAILED" for r in results for o in (r.torch, r.portable)
    )
    return 1 if failed else 0
