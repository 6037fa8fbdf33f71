"""What a refactor must not change, and what it costs: a fingerprint of the package in one JSON line.

    PYTHONPATH=/path/to/old/tree python tools/fingerprint.py > old.json
    python tools/fingerprint.py > new.json
    python tools/fingerprint.py --compare old.json new.json

The fingerprint holds the public names (``initrecipe.__all__``), a hash of every subcommand's
``--help``, and, for a small GPT-2 and a small Llama in both RNG modes, a hash of the recipe's bytes
and of every replayed tensor: these must be equal between the trees.  It also holds timings (best of
``--repeats``) of ``record``, ``load``, ``prepare_replay`` and ``replay`` of a 6-layer GPT-2 recipe,
to compare on one machine (run the two trees alternately, several times: a shared VM is noisy).
``--compare`` prints what differs and the timing ratios.  It reads the package through its public
API, so it runs on trees from before the stage subpackages too (``prepare_replay`` was then in
``initrecipe.replay``).
"""

from __future__ import annotations

import argparse
import hashlib
import importlib
import json
import sys
import warnings
from typing import Callable

import torch

import initrecipe
from timing import best_seconds  # tools/, the script's folder


def _models() -> dict[str, Callable[[], torch.nn.Module]]:
    from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

    return {
        "gpt2-2": lambda: GPT2LMHeadModel(GPT2Config(n_layer=2, n_embd=64, n_head=4)),
        "llama-2": lambda: LlamaForCausalLM(LlamaConfig(num_hidden_layers=2, hidden_size=64, intermediate_size=128,
                                                        num_attention_heads=4, num_key_value_heads=2, vocab_size=256)),
        "gpt2-6": lambda: GPT2LMHeadModel(GPT2Config(n_layer=6, n_embd=384, n_head=6)),
    }


def _prepare_replay() -> Callable[..., object]:
    for module in ("initrecipe.runtime.replay_plan", "initrecipe.replay"):
        try:
            return importlib.import_module(module).prepare_replay
        except (ImportError, AttributeError):
            continue
    raise SystemExit("no prepare_replay in this tree")


def fingerprint(repeats: int) -> dict[str, object]:
    """The fingerprint of the package that ``import initrecipe`` finds."""
    from initrecipe.cli import build_parser

    warnings.simplefilter("ignore")
    torch.set_num_threads(2)
    parser = build_parser()
    helps = {"": parser.format_help()}
    for action in parser._subparsers._group_actions:  # argparse has no public way to list subparsers
        for name, sub in action.choices.items():
            helps[name] = sub.format_help()
    out: dict[str, object] = {
        "package": initrecipe.__file__,
        "all": sorted(initrecipe.__all__),
        "help": {name: hashlib.sha256(text.encode()).hexdigest()[:16] for name, text in helps.items()},
        "bits": {},
        "seconds": {},
    }
    models = _models()
    prepare = _prepare_replay()
    for rng in ("torch", "portable"):
        for name in ("gpt2-2", "llama-2"):
            recipe = initrecipe.record(models[name], seed=3, rng=rng)
            digest = hashlib.sha256(recipe.to_bytes())
            for key, tensor in sorted(initrecipe.replay(recipe).items()):
                digest.update(key.encode() + tensor.contiguous().view(torch.uint8).numpy().tobytes())
            out["bits"][f"{name}/{rng}"] = digest.hexdigest()[:16]
        recipe = initrecipe.record(models["gpt2-6"], seed=0, rng=rng)
        data = recipe.to_bytes()
        out["seconds"][f"gpt2-6/{rng}"] = {
            "instructions": len(recipe.program),
            "record": best_seconds(lambda: initrecipe.record(models["gpt2-6"], seed=0, rng=rng), max(repeats // 4, 1)),
            "load": best_seconds(lambda: initrecipe.load(data), repeats),
            "prepare_replay": best_seconds(lambda: prepare(recipe), repeats),
            "replay": best_seconds(lambda: initrecipe.replay(recipe), repeats),
        }
    return out


def compare(old: dict, new: dict) -> int:
    """Print what differs between two fingerprints and the timing ratios; 1 when a must-be-equal part differs."""
    differs = [key for key in ("all", "help", "bits") if old[key] != new[key]]
    for key in differs:
        print(f"DIFFERENT {key}: {old[key]} != {new[key]}")
    if not differs:
        print("same public names, --help texts, recipe bytes and replayed tensors")
    for case, before in old["seconds"].items():
        after = new["seconds"][case]
        for step in ("record", "load", "prepare_replay", "replay"):
            print(f"{case:16} {step:15} {before[step] * 1e3:8.2f} ms -> {after[step] * 1e3:8.2f} ms "
                  f"({after[step] / before[step]:.2f}x)")
    return 1 if differs else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=20, help="timings: best of this many runs (default 20)")
    parser.add_argument("--compare", nargs=2, metavar=("OLD_JSON", "NEW_JSON"), help="compare two fingerprints")
    args = parser.parse_args()
    if args.compare:
        old, new = (json.loads(open(path).read()) for path in args.compare)
        return compare(old, new)
    json.dump(fingerprint(args.repeats), sys.stdout)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
