#!/usr/bin/env python3
"""Make the portable golden recipe that tests/test_golden.py reads: the only way to (re)generate it.

    python tools/make_portable_golden.py                  # writes tests/golden/portable-v1.1.{recipe,sha256.json}
    python tools/make_portable_golden.py --format 1.2     # writes tests/golden/portable-v1.2.{recipe,sha256.json}
    python tools/make_portable_golden.py --check [--format 1.2]   # replay the committed file, compare, write nothing

The file pins the portable mode's bits across torch versions and machines: the committed recipe
must replay to the committed tensor hashes under every torch version initrecipe supports (2.13
and 2.14 are checked), every thread count and every device.  Its module uses every portable
sampler, both substituted operators (erfinv through ``trunc_normal_``, QR through
``orthogonal_``), a bfloat16 cast, an integer ``arange`` and a pinned ``torch.Generator`` draw.
Regenerate it only when the portable format itself changes, never to make a test pass.

The 1.2 file (``PortableGolden12``) pins the samplers that format 1.2 added (``cauchy_``,
``log_normal_``, ``geometric_``, ``bernoulli`` with a tensor or a float ``p``, ``bernoulli_`` with
a tensor, ``normal`` with tensor parameters, ``multinomial`` with and without replacement) and the
corrected ``trunc_normal_`` program in bfloat16 and float16.  The 1.1 file stays as it was written:
it also pins that recipes recorded before the correction replay to their own bits.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

import msgpack
import torch
from torch import nn

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tools"))

import initrecipe  # noqa: E402
from make_golden import expected_hashes as hashes  # noqa: E402

GOLDEN = ROOT / "tests" / "golden"
STEMS = {"1.1": "portable-v1.1", "1.2": "portable-v1.2"}
SEED = 20261125


class PortableGolden(nn.Module):
    """Every kind of portable program, small."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(24, 16)
        self.embedding = nn.Embedding(32, 8, padding_idx=1)
        self.norm = nn.LayerNorm(16)
        self.trunc = nn.Parameter(nn.init.trunc_normal_(torch.empty(12, 10), std=0.02))
        self.orthogonal = nn.Parameter(nn.init.orthogonal_(torch.empty(9, 6)))
        self.sparse = nn.Parameter(nn.init.sparse_(torch.empty(8, 3), 0.25))
        self.scaled = nn.Parameter(torch.randn(5, 7) * 0.5)
        self.brain = nn.Parameter(torch.empty(4, 6, dtype=torch.bfloat16).normal_(0.0, 0.1))
        self.register_buffer("positions", torch.arange(16).unsqueeze(0))
        self.register_buffer("mask", torch.empty(6, 6).bernoulli_(0.25))
        self.register_buffer("tokens", torch.randint(0, 1000, (3, 5)))
        self.register_buffer("waits", torch.empty(20).exponential_(3.0))
        pinned = torch.Generator().manual_seed(7)
        self.pinned = nn.Parameter(torch.randn(3, 4, generator=pinned))


class PortableGolden12(nn.Module):
    """The portable draws of format 1.2, and trunc_normal_ in 16-bit dtypes, small."""

    def __init__(self) -> None:
        super().__init__()
        self.cauchy = nn.Parameter(torch.empty(7, 5).cauchy_(0.5, 2.0))
        self.log_normal = nn.Parameter(torch.empty(6, 4, dtype=torch.float64).log_normal_(0.0, 0.5))
        self.geometric = nn.Parameter(torch.empty(30, dtype=torch.float16).geometric_(0.001))
        self.register_buffer("mask", torch.bernoulli(torch.full((16,), 0.5)))
        self.register_buffer("mask_p", torch.bernoulli(torch.zeros(4, 4, dtype=torch.bfloat16), p=0.3))
        gates = torch.empty(5, 6, dtype=torch.bool)
        gates.bernoulli_(torch.linspace(0.0, 1.0, 6))
        self.register_buffer("gates", gates)
        self.shifted = nn.Parameter(torch.normal(torch.arange(12.0).reshape(3, 4), torch.full((3, 4), 0.5)))
        self.centered = nn.Parameter(torch.normal(torch.zeros(2, 5, dtype=torch.bfloat16), 2.0))
        self.spread = nn.Parameter(torch.normal(1.0, torch.linspace(0.1, 1.0, 9)))
        self.register_buffer("picks", torch.multinomial(torch.tensor([[0.1, 0.0, 0.9], [1.0, 1.0, 1.0]]), 6, True))
        self.register_buffer("order", torch.multinomial(torch.tensor([0.5, 0.1, 0.0, 2.0, 1.0]), 3))
        self.vit = nn.Parameter(nn.init.trunc_normal_(torch.empty(20, 10, dtype=torch.bfloat16), std=0.02))
        self.narrow_half = nn.Parameter(nn.init.trunc_normal_(torch.empty(8, 8, dtype=torch.float16), std=0.5, a=-0.3, b=0.7))
        self.single = nn.Parameter(nn.init.trunc_normal_(torch.empty(50), std=0.1))


MODULES = {"1.1": PortableGolden, "1.2": PortableGolden12}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--force", action="store_true", help="overwrite existing golden files")
    parser.add_argument("--check", action="store_true", help="replay the committed file and compare; write nothing")
    parser.add_argument("--format", choices=sorted(STEMS), default="1.1", help="which golden file (default 1.1)")
    args = parser.parse_args(argv)
    STEM = STEMS[args.format]
    recipe_path = GOLDEN / f"{STEM}.recipe"
    meta_path = GOLDEN / f"{STEM}.sha256.json"
    if args.check:
        expected = json.loads(meta_path.read_text())["tensors"]
        got = hashes(initrecipe.replay(initrecipe.load(recipe_path)))
        bad = [name for name in expected if got.get(name) != expected[name]]
        print(f"torch {torch.__version__}: " + ("all tensors match" if not bad else f"DIFFER: {bad}"))
        return 1 if bad else 0
    if (recipe_path.exists() or meta_path.exists()) and not args.force:
        raise SystemExit(f"make_portable_golden: {recipe_path.name} exists; pass --force to overwrite it")
    recipe = initrecipe.record(MODULES[args.format], seed=SEED, rng="portable", sync_rng=False)
    version = msgpack.unpackb(recipe.to_bytes(), raw=False)["version"]
    if version != [int(v) for v in args.format.split(".")]:
        raise SystemExit(f"make_portable_golden: the recipe is format {version}, not {args.format}; not writing")
    data = recipe.to_bytes()
    weights = initrecipe.replay(initrecipe.load(data))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        again = initrecipe.replay(initrecipe.load(data))
    finally:
        torch.set_num_threads(threads)
    if hashes(weights) != hashes(again):
        raise SystemExit("make_portable_golden: replays with 1 and 2 threads differ; not writing")
    meta = {
        "recipe": recipe_path.name,
        "module": f"tools/make_portable_golden.py:{MODULES[args.format].__name__}",
        "seed": SEED,
        "recorded_with_torch": torch.__version__.split("+")[0],
        "content_hash": recipe.content_hash,
        "file_sha256": hashlib.sha256(data).hexdigest(),
        "tensors": hashes(weights),
    }
    GOLDEN.mkdir(parents=True, exist_ok=True)
    recipe_path.write_bytes(data)
    meta_path.write_text(json.dumps(meta, indent=2) + "\n")
    print(f"wrote {recipe_path} ({len(data)} bytes) and {meta_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
