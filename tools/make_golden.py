#!/usr/bin/env python3
"""Make the golden recipe that tests/test_golden.py reads: the only way to (re)generate it.

    python tools/make_golden.py            # writes tests/golden/linear-v1.0.{recipe,sha256.json}
    python tools/make_golden.py --force    # overwrite existing files (a deliberate format change)
    python tools/make_golden.py --check    # compare a fresh recording with the files; write nothing

The golden file pins format 1.0: once committed it must keep loading, re-encoding to the same bytes
and replaying to the same tensors in every later initrecipe release.  Regenerate it only when the
format itself changes (then the file name's version changes too), never to make a test pass.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import initrecipe  # noqa: E402
from initrecipe.format.spec import format_version_for  # noqa: E402

GOLDEN = ROOT / "tests" / "golden"
STEM = "linear-v1.0"
SEED = 0


def build_module() -> torch.nn.Module:
    """The fixed module the golden recipe records (tests/test_golden.py builds it eagerly too)."""
    return torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.LayerNorm(4))


def tensor_sha256(tensor: torch.Tensor) -> str:
    """sha256 of a tensor's elements: row-major, each in the machine's (little-endian) byte order."""
    data = tensor.detach().to("cpu").contiguous().reshape(-1)
    return hashlib.sha256(data.view(torch.uint8).numpy().tobytes()).hexdigest()


def expected_hashes(weights: dict[str, torch.Tensor]) -> dict[str, dict[str, object]]:
    return {
        name: {"dtype": str(t.dtype).removeprefix("torch."), "shape": list(t.shape), "sha256": tensor_sha256(t)}
        for name, t in weights.items()
    }


def make() -> tuple[bytes, dict[str, object]]:
    recipe = initrecipe.record(build_module, seed=SEED)
    data = recipe.to_bytes()
    weights = initrecipe.replay(initrecipe.load(data))
    torch.manual_seed(SEED)
    eager = build_module().state_dict()
    for name, tensor in weights.items():
        if not torch.equal(tensor, eager[name]):
            raise SystemExit(f"make_golden: replayed `{name}` differs from eager initialization; not writing")
    meta = {
        "recipe": f"{STEM}.recipe",
        "format_version": list(format_version_for(recipe.rng, recipe.program)),
        "module": "torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.LayerNorm(4))",
        "seed": SEED,
        "content_hash": recipe.content_hash,
        "file_sha256": hashlib.sha256(data).hexdigest(),
        "tensors": expected_hashes(weights),
    }
    return data, meta


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--force", action="store_true", help="overwrite existing golden files")
    parser.add_argument("--check", action="store_true", help="compare with the existing files, write nothing")
    args = parser.parse_args(argv)
    data, meta = make()
    recipe_path = GOLDEN / f"{STEM}.recipe"
    meta_path = GOLDEN / f"{STEM}.sha256.json"
    if args.check:
        old = json.loads(meta_path.read_text())
        same_tensors = old["tensors"] == meta["tensors"]
        same_bytes = recipe_path.read_bytes() == data
        print(f"tensors {'match' if same_tensors else 'DIFFER'}; recipe bytes {'match' if same_bytes else 'differ'}"
              + ("" if same_bytes else " (expected when the recorder or producer versions changed)"))
        return 0 if same_tensors else 1
    if (recipe_path.exists() or meta_path.exists()) and not args.force:
        raise SystemExit(f"make_golden: {recipe_path.name} exists; pass --force to overwrite a committed golden file")
    GOLDEN.mkdir(parents=True, exist_ok=True)
    recipe_path.write_bytes(data)
    meta_path.write_text(json.dumps(meta, indent=2) + "\n")
    print(f"wrote {recipe_path} ({len(data)} bytes) and {meta_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
