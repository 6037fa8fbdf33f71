"""The ``initrecipe`` command line: a thin layer over the library.

Results go to stdout, messages to stderr.  Exit codes: 0 success, 1 a failed check (with
``check --strict``, also a warning) or an initrecipe error, 2 usage errors (argparse's
convention); ``diff`` follows diff(1): 0 identical, 1 different, 2 trouble (an unreadable input
or bad arguments).
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import signal
import sys
import threading
import time
import warnings
from pathlib import Path
from typing import Callable, Sequence

from initrecipe._version import __version__
from initrecipe.analysis.uninitialized import Uninitialized
from initrecipe.errors import OutputWriteError, RecipeError, UninitializedWarning
from initrecipe.export.convert import replay_to_file, to_safetensors
from initrecipe.format.decode import load
from initrecipe.inspect.check import check_report
from initrecipe.inspect.diff import diff
from initrecipe.inspect.show import summarize
from initrecipe.runtime.regions import Shard
from initrecipe.support.display import dtype_text, safe
from initrecipe.support.output_files import refuse_folder_at

__all__ = ["main"]


def _load_callable(spec: str) -> Callable[[], object]:
    """Import ``PKG.MODULE:CALLABLE`` (the user's own code, named on the command line)."""
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise SystemExit(f"initrecipe: error: expected PKG.MODULE:CALLABLE, got `{spec}`")
    sys.path.insert(0, str(Path.cwd()))
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise SystemExit(f"initrecipe: error: cannot import `{module_name}`: {exc}") from None
    target: object = module
    for part in attr.split("."):
        try:
            target = getattr(target, part)
        except AttributeError:
            raise SystemExit(f"initrecipe: error: `{module_name}` has no attribute `{attr}`") from None
    if not callable(target):
        raise SystemExit(f"initrecipe: error: `{spec}` is not callable")
    return target  # type: ignore[return-value]


def _cmd_record(args: argparse.Namespace) -> int:
    # The recorder (and torch's fake-tensor machinery) loads only for `record`: start-up time.
    from initrecipe.capture.findings import uninitialized_message
    from initrecipe.capture.recorder import record

    if args.hf_config:
        from initrecipe.capture.hf import model_fn_from_config  # start-up time, as above

        model_fn = model_fn_from_config(args.hf_config, auto_class=args.auto_class)
    elif args.target:
        model_fn = _load_callable(args.target)
    else:
        raise SystemExit("initrecipe: error: give PKG.MODULE:CALLABLE or --hf-config CONFIG_JSON")
    _check_output_file(args.output)
    start = time.perf_counter()
    with warnings.catch_warnings():  # reported below as one line naming the saved file
        warnings.simplefilter("ignore", UninitializedWarning)
        recipe = record(model_fn, seed=args.seed, rng=args.rng)  # type: ignore[arg-type]
    path = recipe.save(args.output)
    size = path.stat().st_size
    print(
        f"recorded {len(recipe.tensors)} tensors ({recipe.total_bytes / 2**20:.1f} MiB of weights) "
        f"into {path} ({size} bytes, {recipe.num_ops} ops) in {time.perf_counter() - start:.2f} s",
        file=sys.stderr,
    )
    found = recipe.uninitialized
    if found:
        listed = f"`initrecipe check {safe(str(path))}` lists each"
        print(f"initrecipe: warning: {uninitialized_message(found, listed=listed)}", file=sys.stderr)
    return 0


def _cmd_replay(args: argparse.Namespace) -> int:
    recipe = load(args.recipe)
    _check_output_file(args.output)
    shards = None
    if args.shard:
        rank, world = _parse_shard(args.shard)
        shards = lambda name, shape: Shard.of(shape[0], rank, world) if shape else None  # noqa: E731
    start = time.perf_counter()
    path, count = replay_to_file(recipe, args.output, device=args.device,
                                 names=args.names.split(",") if args.names else None, shards=shards,
                                 max_work=args.max_work)
    print(f"replayed {count} tensors into {path} in {time.perf_counter() - start:.2f} s", file=sys.stderr)
    return 0


def _check_output_file(path: str) -> None:
    """Refuse, before any work, an output path that cannot be written: a folder, or in a missing folder."""
    target = Path(path)
    refuse_folder_at(target)
    parent = target.parent
    if not parent.is_dir():
        what = "does not exist; create it first" if not parent.exists() else "is not a folder; choose another path"
        raise OutputWriteError(f"cannot write `{target}`: `{parent}` {what}")


def _parse_shard(text: str) -> tuple[int, int]:
    rank, sep, world = text.partition("/")
    try:
        r, w = int(rank), int(world)
    except ValueError:
        raise SystemExit(f"initrecipe: error: --shard expects RANK/WORLD_SIZE (e.g. 0/8), got `{text}`") from None
    if not sep or w < 1 or not 0 <= r < w:
        raise SystemExit(f"initrecipe: error: --shard expects RANK/WORLD_SIZE with 0 <= RANK < WORLD_SIZE, got `{text}`")
    return r, w



def _cmd_show(args: argparse.Namespace) -> int:
    summary = summarize(load(args.recipe), label=args.recipe)
    if args.json:
        _write(json.dumps(summary.to_json(), indent=2) + "\n")
    elif args.textconv:
        _write(summary.textconv())
    else:
        _write(summary.text(tensors=not args.no_tensors))
    return 0


def _write(text: str) -> None:
    """Print a report; a reader that went away (``| head``) ends it quietly."""
    try:
        sys.stdout.write(text)
        sys.stdout.flush()
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


def _cmd_diff(args: argparse.Namespace) -> int:
    try:
        result = diff(args.a, args.b, values=args.values, tolerance=args.tolerance)
    except RecipeError as exc:
        print(f"initrecipe: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"initrecipe: error: {exc.strerror or exc}" + (f": `{exc.filename}`" if exc.filename else ""),
              file=sys.stderr)
        return 2
    _write(json.dumps(result.to_json(), indent=2) + "\n" if args.json else result.text(all=args.all))
    return 0 if result.identical else 1


def _tolerance(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got `{text}`") from None
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a finite number >= 0, got `{text}`")
    return value


def _one_line_usage_errors(parser: argparse.ArgumentParser) -> None:
    """Make ``parser`` report bad arguments as one ``initrecipe: error: ...`` line, exit status 2."""
    def error(message: str) -> None:  # type: ignore[override]
        parser.exit(2, f"initrecipe: error: {message} (see `{parser.prog} --help`)\n")

    parser.error = error  # type: ignore[method-assign]


def _cmd_convert(args: argparse.Namespace) -> int:
    recipe = load(args.recipe)
    start = time.perf_counter()
    paths = to_safetensors(
        recipe,
        args.out_dir,
        dtype=args.dtype,
        max_shard_size=args.max_shard_size,
        device=args.device,
        force=args.force,
        progress=False if args.quiet else None,
        config=args.config,
        max_work=args.max_work,
    )
    if not args.quiet:
        weights = [p for p in paths if p.name.endswith(".safetensors")]
        size = sum(p.stat().st_size for p in weights)
        print(
            f"wrote {len(weights)} safetensors file{'s' if len(weights) != 1 else ''} "
            f"({size / 2**20:.1f} MiB) into {args.out_dir} in {time.perf_counter() - start:.2f} s",
            file=sys.stderr,
        )
    return 0


def _cmd_check(args: argparse.Namespace) -> int:
    report = check_report(args.recipe, max_bytes=args.max_bytes, max_work=args.max_work)
    findings, warned = report.findings, report.warnings
    if args.json:
        doc = {"recipe": args.recipe, "valid": not findings, "findings": findings,
               "warnings": [_warning_json(u) for u in warned],
               "work": report.work.as_dict() if report.work is not None else None}
        json.dump(doc, sys.stdout, indent=2)
        sys.stdout.write("\n")
    elif findings:
        for finding in findings:
            print(f"{safe(args.recipe)}: {safe(finding)}")
    else:
        assert report.work is not None
        for u in warned:
            print(f"{safe(args.recipe)}: warning: {safe(u.text())}")
        status = "ok" if not warned else f"ok with {len(warned)} warning{'s' if len(warned) != 1 else ''}"
        if warned and args.strict:
            status = f"failed (--strict) on {len(warned)} warning{'s' if len(warned) != 1 else ''}"
        print(f"{safe(args.recipe)}: {status} ({report.work.describe()})")
    return 1 if findings or (warned and args.strict) else 0


def _warning_json(u: Uninitialized) -> dict[str, object]:
    """One ``check --json`` warning: an uninitialized tensor."""
    return {"kind": "uninitialized", "name": u.name, "shape": list(u.shape), "dtype": dtype_text(u.dtype),
            "numel": u.numel, "uninitialized_elements": u.elements, "message": u.why}


def _add_max_work(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--max-work", type=float, default=None, metavar="SECONDS",
        help="refuse a replay estimated at more than this many seconds of work on the reference CPU "
             "(default: 60 plus 1e-7 per element returned; inf: no limit)",
    )


def build_parser() -> argparse.ArgumentParser:
    """The ``initrecipe`` argument parser: one subcommand per ``_add_*_command``."""
    parser = argparse.ArgumentParser(
        prog="initrecipe", description="Record, replay and inspect model init recipes."
    )
    parser.add_argument("--version", action="version", version=f"initrecipe {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    _add_record_command(sub)
    _add_replay_command(sub)
    _add_show_command(sub)
    _add_diff_command(sub)
    _add_check_command(sub)
    _add_convert_command(sub)
    return parser


def _add_record_command(sub: argparse._SubParsersAction) -> None:
    """`initrecipe record`: a model constructor (or a transformers config) into a recipe file."""
    p = sub.add_parser("record", help="record a model constructor into a recipe file")
    p.add_argument("target", nargs="?", help="PKG.MODULE:CALLABLE returning an nn.Module")
    p.add_argument("--hf-config", metavar="CONFIG_JSON", help="record a transformers model from its config.json")
    p.add_argument("--auto-class", default="AutoModelForCausalLM", help="transformers auto class for --hf-config")
    p.add_argument("--seed", type=int, default=None,
                   help="seed torch's CPU generator first (default: current state; required with --rng portable)")
    p.add_argument("--rng", choices=["torch", "portable"], default="torch",
                   help="torch: bitwise eager CPU init; portable: identical on every device, order and shard")
    p.add_argument("-o", "--output", required=True, help="recipe file to write")
    p.set_defaults(run=_cmd_record)


def _add_replay_command(sub: argparse._SubParsersAction) -> None:
    """`initrecipe replay`: a recipe into one safetensors file."""
    p = sub.add_parser(
        "replay", help="replay a recipe into one safetensors file",
        description="Replay a recipe into one safetensors file, streaming (each tensor is written as soon as it "
                    "is final). The file holds what initrecipe.replay() returns: every parameter and buffer, "
                    "non-persistent buffers included, each tie once under its first name; `convert` writes a "
                    "state_dict-style checkpoint instead (no non-persistent buffers). Metadata: format=pt, "
                    "initrecipe.content_hash, initrecipe.version.",
    )
    p.add_argument("recipe")
    p.add_argument("--device", default="cpu")
    p.add_argument("--names", metavar="N1,N2,...", help="replay only these tensors (comma-separated names)")
    p.add_argument(
        "--shard", metavar="RANK/WORLD",
        help="replay only this rank's part of every tensor along dim 0, split as torch.chunk splits it "
             "(slice-only for elementwise programs of portable recipes)",
    )
    p.add_argument("-o", "--output", required=True, help="OUT.safetensors")
    _add_max_work(p)
    p.set_defaults(run=_cmd_replay)


def _add_show_command(sub: argparse._SubParsersAction) -> None:
    """`initrecipe show`: a recipe's settings and each tensor's init."""
    p = sub.add_parser("show", help="print a recipe's settings and how each tensor is initialized")
    p.add_argument("recipe")
    how = p.add_mutually_exclusive_group()
    how.add_argument("--json", action="store_true", help="print one JSON document (schema/SHOW_JSON.md)")
    how.add_argument("--textconv", action="store_true",
                     help="one stable line per tensor, for `git diff` (see the README)")
    p.add_argument("--no-tensors", action="store_true", help="omit the per-tensor listing")
    p.set_defaults(run=_cmd_show)


def _add_diff_command(sub: argparse._SubParsersAction) -> None:
    """`initrecipe diff`: two recipes, a recipe and a checkpoint, or two checkpoints."""
    p = sub.add_parser(
        "diff", help="compare two recipes, or a recipe and a checkpoint (exit 0 same, 1 different, 2 trouble)",
        description="Compare two recipes (from their programs; --values replays both), a recipe and a "
                    "safetensors checkpoint (a file or a save_pretrained folder, either order), or two "
                    "checkpoints. Exit status: 0 identical, 1 different, 2 trouble.",
    )
    p.add_argument("a", metavar="A", help="a recipe, a .safetensors file or a checkpoint folder")
    p.add_argument("b", metavar="B", help="a recipe, a .safetensors file or a checkpoint folder")
    p.add_argument("--json", action="store_true", help="print one JSON document (schema/DIFF_JSON.md)")
    p.add_argument("--all", action="store_true", help="also list the tensors that did not change")
    p.add_argument("--values", action="store_true",
                   help="two recipes: also replay both, one tensor at a time, and compare their values")
    p.add_argument("--tolerance", type=_tolerance, default=None, metavar="ATOL",
                   help="values within ATOL of each other count as equal (default: bitwise equality)")
    p.set_defaults(run=_cmd_diff)
    _one_line_usage_errors(p)


def _add_check_command(sub: argparse._SubParsersAction) -> None:
    """`initrecipe check`: a recipe checked completely without replaying it."""
    p = sub.add_parser("check", help="check a recipe completely without replaying it (exit 1 on findings; --strict: on warnings too)")
    p.add_argument("recipe")
    p.add_argument("--json", action="store_true", help="print one JSON document")
    p.add_argument("--strict", action="store_true",
                   help="also exit 1 on warnings (tensors replay leaves uninitialized, as eager does)")
    p.add_argument(
        "--max-bytes", type=int, default=None, metavar="N",
        help="memory a replay may allocate (default: the memory available now)",
    )
    _add_max_work(p)
    p.set_defaults(run=_cmd_check)


def _add_convert_command(sub: argparse._SubParsersAction) -> None:
    """`initrecipe convert`: a recipe into a Hugging Face safetensors checkpoint folder."""
    p = sub.add_parser("convert", help="replay a recipe into a Hugging Face safetensors checkpoint folder")
    p.add_argument("recipe")
    p.add_argument("out_dir", metavar="OUT_DIR")
    p.add_argument("--dtype", choices=["bf16", "fp16", "fp32"], default=None, help="cast floating tensors")
    p.add_argument("--max-shard-size", default="5GB", help="largest shard file (default 5GB)")
    p.add_argument("--config", metavar="CONFIG_JSON", help="copy this config.json beside the weights")
    p.add_argument("--device", default="cpu", help="replay on this device (default cpu)")
    p.add_argument("--force", action="store_true", help="overwrite an existing checkpoint in OUT_DIR")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar or summary")
    _add_max_work(p)
    p.set_defaults(run=_cmd_convert)

class _Terminated(KeyboardInterrupt):
    """SIGTERM or SIGHUP, raised where a KeyboardInterrupt would be, so the same cleanup runs."""
    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def _raise_terminated(signum: int, frame: object) -> None:
    raise _Terminated(signum)


def _terminate_like_interrupt() -> dict[int, object]:
    """Make SIGTERM and SIGHUP (where they would kill the process outright) raise :class:`_Terminated`.

    Returns the handlers replaced, for :func:`_restore_handlers`.  Signals the caller ignores
    (``nohup``) stay ignored; off the main thread nothing changes.
    """

    replaced: dict[int, object] = {}
    if threading.current_thread() is not threading.main_thread():
        return replaced
    for name in ("SIGTERM", "SIGHUP"):
        sig = getattr(signal, name, None)
        if sig is not None and signal.getsignal(sig) is signal.SIG_DFL:
            replaced[sig] = signal.signal(sig, _raise_terminated)
    return replaced


def _restore_handlers(replaced: dict[int, object]) -> None:
    for sig, handler in replaced.items():
        signal.signal(sig, handler)  # type: ignore[arg-type]


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code.

    SIGINT, SIGTERM and SIGHUP end a command with one line on stderr and exit status 128 plus the
    signal's number (130, 143, 129), after removing any partially written output.
    """
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv if argv else ["--help"])
    if not getattr(args, "run", None):
        parser.print_help()
        return 2
    replaced = _terminate_like_interrupt()
    try:
        return int(args.run(args))
    except RecipeError as exc:
        print(f"initrecipe: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt as exc:
        signum = getattr(exc, "signum", signal.SIGINT)
        print(f"initrecipe: interrupted by {signal.Signals(signum).name}", file=sys.stderr)
        return 128 + signum
    finally:
        _restore_handlers(replaced)


if __name__ == "__main__":
    sys.exit(main())
