"""The ``initrecipe`` command line: a thin layer over the library.

Results go to stdout, messages to stderr.  Exit codes: 0 success, 1 a failed check or a
difference found, 2 usage errors (argparse's convention).
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import time
from pathlib import Path
from typing import Callable, Sequence

from . import __version__
from .errors import RecipeError

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
    from .recorder import record

    if args.hf_config:
        from .hf import model_fn_from_config

        model_fn = model_fn_from_config(args.hf_config, auto_class=args.auto_class)
    elif args.target:
        model_fn = _load_callable(args.target)
    else:
        raise SystemExit("initrecipe: error: give PKG.MODULE:CALLABLE or --hf-config CONFIG_JSON")
    start = time.perf_counter()
    recipe = record(model_fn, seed=args.seed, rng=args.rng)  # type: ignore[arg-type]
    path = recipe.save(args.output)
    size = path.stat().st_size
    print(
        f"recorded {len(recipe.tensors)} tensors ({recipe.total_bytes / 2**20:.1f} MiB of weights) "
        f"into {path} ({size} bytes, {recipe.num_ops} ops) in {time.perf_counter() - start:.2f} s",
        file=sys.stderr,
    )
    return 0


def _cmd_replay(args: argparse.Namespace) -> int:
    from .recipe import load
    from .replay import replay
    import torch

    from .safetensors_stream import save_file

    recipe = load(args.recipe)
    shards = None
    if args.shard:
        from .sharding import Shard

        rank, world = _parse_shard(args.shard)
        shards = lambda name, shape: Shard.of(shape[0], rank, world) if shape else None  # noqa: E731
    start = time.perf_counter()
    weights = replay(recipe, device=args.device, names=args.names.split(",") if args.names else None, shards=shards,
                     max_work=args.max_work)
    elapsed = time.perf_counter() - start
    tensors: dict[str, torch.Tensor] = {}
    seen: set[int] = set()
    for name, tensor in weights.items():
        if id(tensor) not in seen:  # tied names: stored once, under the first name
            seen.add(id(tensor))
            tensors[name] = tensor.detach()
    path = save_file(args.output, tensors, {"format": "pt", "initrecipe.hash": recipe.content_hash})
    print(f"replayed {len(tensors)} tensors in {elapsed:.2f} s into {path}", file=sys.stderr)
    return 0


def _parse_shard(text: str) -> tuple[int, int]:
    rank, sep, world = text.partition("/")
    try:
        r, w = int(rank), int(world)
    except ValueError:
        raise SystemExit(f"initrecipe: error: --shard expects RANK/WORLD_SIZE (e.g. 0/8), got `{text}`") from None
    if not sep or w < 1 or not 0 <= r < w:
        raise SystemExit(f"initrecipe: error: --shard expects RANK/WORLD_SIZE with 0 <= RANK < WORLD_SIZE, got `{text}`")
    return r, w


def _describe(recipe: object) -> dict[str, object]:
    from .recipe import Recipe, format_version_for

    assert isinstance(recipe, Recipe)
    major, minor = format_version_for(recipe.rng)
    extra: dict[str, object] = {}
    if recipe.rng == "portable":
        from .program import Call, GenRef, PortableKey
        from .replay import sliceable_names

        args = [a for ins in recipe.program if isinstance(ins, Call) for a in [*ins.args, *ins.kwargs.values()]]
        sliced = sliceable_names(recipe)
        extra = {
            "portable_draws": sum(isinstance(a, PortableKey) for a in args),
            "pinned_draws": sum(isinstance(a, GenRef) for a in args),
            "sliceable": [t.name for t in recipe.tensors if t.name in sliced],
        }
    return {
        "format_version": f"{major}.{minor}",
        "rng": recipe.rng,
        "seed": recipe.seed,
        "content_hash": recipe.content_hash,
        "num_ops": recipe.num_ops,
        "total_bytes": recipe.total_bytes,
        "producer": recipe.producer,
        "tie_groups": recipe.tie_groups,
        **extra,
        "tensors": [
            {
                "name": t.name,
                "kind": t.kind,
                "shape": list(t.shape),
                "dtype": str(t.dtype).removeprefix("torch."),
                "requires_grad": t.requires_grad,
                "persistent": t.persistent,
            }
            for t in recipe.tensors
        ],
    }


def _safe(text: str) -> str:
    """Escape control characters in names read from a file before printing them."""
    return "".join(ch if ch.isprintable() else f"\\x{ord(ch):02x}" for ch in text)


def _cmd_show(args: argparse.Namespace) -> int:
    from .recipe import load

    recipe = load(args.recipe)
    info = _describe(recipe)
    if args.json:
        json.dump(info, sys.stdout, indent=2)
        sys.stdout.write("\n")
        return 0
    print(f"rng: {recipe.rng}   seed: {recipe.seed}   ops: {recipe.num_ops}   hash: {recipe.content_hash}")
    print(f"tensors: {len(recipe.tensors)}   weights: {recipe.total_bytes / 2**20:.2f} MiB")
    sliced = set(info.get("sliceable", ()))  # type: ignore[call-overload]
    if recipe.rng == "portable":
        print(f"portable draws: {info['portable_draws']}   pinned draws (torch's stream): {info['pinned_draws']}   "
              f"sliceable tensors: {len(sliced)}/{len(recipe.tensors)}")
    if not args.no_tensors:
        width = max((len(_safe(t.name)) for t in recipe.tensors), default=4)
        for t in recipe.tensors:
            flags = t.kind if t.kind == "parameter" else ("buffer" if t.persistent else "buffer (non-persistent)")
            if t.name in sliced:
                flags += ", slice-only shards"
            print(f"  {_safe(t.name):<{width}}  {str(list(t.shape)):<18} {str(t.dtype).removeprefix('torch.'):<9} {flags}")
    for group in recipe.tie_groups:
        print("tied: " + " = ".join(_safe(n) for n in group))
    return 0


def _cmd_convert(args: argparse.Namespace) -> int:
    from .convert import to_safetensors
    from .recipe import load

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
    from .validate import check_report

    report = check_report(args.recipe, max_bytes=args.max_bytes, max_work=args.max_work)
    findings = report.findings
    if args.json:
        doc = {"recipe": args.recipe, "valid": not findings, "findings": findings,
               "work": report.work.as_dict() if report.work is not None else None}
        json.dump(doc, sys.stdout, indent=2)
        sys.stdout.write("\n")
    elif findings:
        for finding in findings:
            print(f"{_safe(args.recipe)}: {_safe(finding)}")
    else:
        assert report.work is not None
        print(f"{_safe(args.recipe)}: ok ({report.work.describe()})")
    return 1 if findings else 0


def _add_max_work(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--max-work", type=float, default=None, metavar="SECONDS",
        help="refuse a replay estimated at more than this many seconds of work on the reference CPU "
             "(default: 60 plus 1e-7 per element returned; inf: no limit)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="initrecipe", description="Record, replay and inspect model init recipes."
    )
    parser.add_argument("--version", action="version", version=f"initrecipe {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

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

    p = sub.add_parser("replay", help="replay a recipe into one safetensors file")
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

    p = sub.add_parser("show", help="print a recipe's tensors, ties and settings")
    p.add_argument("recipe")
    p.add_argument("--json", action="store_true", help="print one JSON document")
    p.add_argument("--no-tensors", action="store_true", help="omit the per-tensor listing")
    p.set_defaults(run=_cmd_show)

    p = sub.add_parser("check", help="check a recipe completely without replaying it (exit 1 on findings)")
    p.add_argument("recipe")
    p.add_argument("--json", action="store_true", help="print one JSON document")
    p.add_argument(
        "--max-bytes", type=int, default=None, metavar="N",
        help="memory a replay may allocate (default: the memory available now)",
    )
    _add_max_work(p)
    p.set_defaults(run=_cmd_check)

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
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code."""
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv if argv else ["--help"])
    if not getattr(args, "run", None):
        parser.print_help()
        return 2
    try:
        return int(args.run(args))
    except RecipeError as exc:
        print(f"initrecipe: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("initrecipe: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
