"""A built-in example: record a GPT-2-sized model, save the recipe, replay it, check it against eager.

Then the same model in portable mode: replayed whole, and as four dim-0 shards that stitch back
into exactly the whole.

Run it with ``python -m initrecipe.example`` (``--small`` for a tiny model).  The model is written
here in plain PyTorch, so the example needs nothing but initrecipe and torch.
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch import nn

import initrecipe

__all__ = ["TinyGPT", "main"]


class Block(nn.Module):
    def __init__(self, width: int, heads: int, context: int, layers: int) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(width)
        self.attn = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)
        self.ln_2 = nn.LayerNorm(width)
        self.fc = nn.Linear(width, 4 * width)
        self.fc_proj = nn.Linear(4 * width, width)
        self.register_buffer("causal", torch.ones(context, context, dtype=torch.bool).tril(), persistent=False)
        for linear in (self.attn, self.proj, self.fc, self.fc_proj):
            nn.init.normal_(linear.weight, std=0.02)
            nn.init.zeros_(linear.bias)
        # GPT-2 scales the residual projections by 1/sqrt(2 * layers).
        for linear in (self.proj, self.fc_proj):
            nn.init.normal_(linear.weight, std=0.02 / math.sqrt(2 * layers))


class TinyGPT(nn.Module):
    """A GPT-2-shaped language model (124M parameters at the default sizes)."""

    def __init__(
        self, vocab: int = 50257, context: int = 1024, width: int = 768, layers: int = 12, heads: int = 12
    ) -> None:
        super().__init__()
        self.wte = nn.Embedding(vocab, width)
        self.wpe = nn.Embedding(context, width)
        nn.init.normal_(self.wte.weight, std=0.02)
        nn.init.normal_(self.wpe.weight, std=0.01)
        self.blocks = nn.ModuleList(Block(width, heads, context, layers) for _ in range(layers))
        self.ln_f = nn.LayerNorm(width)
        self.lm_head = nn.Linear(width, vocab, bias=False)
        self.lm_head.weight = self.wte.weight  # tied, as in GPT-2


def main(argv: list[str] | None = None) -> int:
    """Record, save, load, replay, and compare with eager; print sizes and times."""
    parser = argparse.ArgumentParser(prog="python -m initrecipe.example", description=__doc__.splitlines()[0])
    parser.add_argument("--small", action="store_true", help="a tiny model instead of GPT-2 size")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None, help="where to keep the recipe (default: a temp dir)")
    args = parser.parse_args(argv)
    sizes = dict(vocab=512, context=64, width=64, layers=2, heads=4) if args.small else {}

    def build() -> nn.Module:
        return TinyGPT(**sizes)

    with tempfile.TemporaryDirectory() as tmp:
        path = args.out or Path(tmp) / "tinygpt.recipe"
        t0 = time.perf_counter()
        recipe = initrecipe.record(build, seed=args.seed)
        t_record = time.perf_counter() - t0
        recipe.save(path)
        size = path.stat().st_size

        t0 = time.perf_counter()
        weights = initrecipe.replay(path)
        t_replay = time.perf_counter() - t0

        torch.manual_seed(args.seed)
        t0 = time.perf_counter()
        eager = build()
        t_eager = time.perf_counter() - t0
        expected = dict(eager.named_parameters(remove_duplicate=False))
        expected.update(eager.named_buffers(remove_duplicate=False))
        mismatched = [n for n, t in expected.items() if not torch.equal(weights[n], t)]

    print(f"model:          TinyGPT, {recipe.total_bytes / 2**20:.1f} MiB of weights in {len(recipe.tensors)} tensors")
    print(f"recipe:         {size:,} bytes ({recipe.num_ops} ops), {recipe.total_bytes / size:,.0f}x smaller than the weights")
    print(f"record:         {t_record:.3f} s")
    print(f"replay (cpu):   {t_replay:.3f} s")
    print(f"eager build:    {t_eager:.3f} s")
    if mismatched:
        print(f"MISMATCH: {len(mismatched)} tensors differ from eager, first `{mismatched[0]}`")
        return 1
    print(f"bitwise equal to eager `torch.manual_seed({args.seed}); TinyGPT()`: all {len(expected)} tensors")
    return _portable(build, args.seed)


def _portable(build: "type[nn.Module] | object", seed: int, world_size: int = 4) -> int:
    """Portable mode: replay whole, then as ``world_size`` shards; the shards must stitch back exactly."""
    recipe = initrecipe.record(build, seed=seed, rng="portable")  # type: ignore[arg-type]
    t0 = time.perf_counter()
    whole = initrecipe.replay(recipe)
    t_whole = time.perf_counter() - t0
    t0 = time.perf_counter()
    shards = [
        initrecipe.replay(recipe, shards=lambda name, shape, r=rank: initrecipe.Shard.of(shape[0], r, world_size))
        for rank in range(world_size)
    ]
    t_shards = time.perf_counter() - t0
    sliced = len(initrecipe.sliceable_names(recipe))
    bad = [n for n, t in whole.items() if not torch.equal(torch.cat([s[n] for s in shards]), t)]
    print(f"portable:       {len(recipe.to_bytes()):,} bytes; replay {t_whole:.3f} s; {world_size} shards "
          f"{t_shards:.3f} s in all ({sliced}/{len(recipe.names)} tensors generated slice-only)")
    if bad:
        print(f"MISMATCH: the shards of `{bad[0]}` do not stitch back into the whole tensor")
        return 1
    print(f"portable shards stitch back into the whole replay, bit for bit: all {len(whole)} tensors")
    return 0


if __name__ == "__main__":
    sys.exit(main())
