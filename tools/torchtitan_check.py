#!/usr/bin/env python
"""torchtitan's Llama-3 filled from a recipe under two parallelism layouts: identical weights.

torchtitan is not a test dependency of initrecipe: its release on PyPI (0.3.0) pins
``spmd_types==0.2.3``, targets nightly PyTorch, and imports ``triton`` (about 1 GB installed) at
import time, so CI cannot install it next to the pinned CPU torch.  This script runs the check in
an environment that has it:

    python3 -m venv /tmp/ttv && . /tmp/ttv/bin/activate
    pip install torch==2.13.0 numpy msgpack safetensors tqdm tyro triton
    pip install --no-deps torchtitan==0.3.0 spmd_types==0.2.3
    pip install --no-deps -e .            # initrecipe, from this checkout
    python tools/torchtitan_check.py

It records torchtitan's ``debugmodel`` flavour (``Llama3Model`` built from its config, then
``init_states()``, torchtitan's own initialization) in both RNG modes; checks the torch-mode
recipe against eager construction bitwise; then starts 4 CPU processes (gloo) that build the model
on the meta device and shard it two ways — FSDP2 over 4 ranks, and tensor parallelism (feed-forward
``w1``/``w3`` column-wise, ``w2`` row-wise) on a 2 x 2 mesh with FSDP2 on the other dimension —,
fill both with ``initrecipe.materialize``, gather every tensor and compare the layouts with each
other and with the single-process replay.  Exit status 0 when everything is equal.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time

import torch


def build(meta: bool = False) -> torch.nn.Module:
    import torchtitan.models.llama3 as llama3

    config = llama3.llama3_configs["debugmodel"](attn_backend="flex")
    if meta:
        with torch.device("meta"):
            return config.build()
    model = config.build()
    model.init_states()
    return model


def gathered(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    from torch.distributed.tensor import DTensor

    out = {}
    for name, t in list(model.named_parameters(remove_duplicate=False)) + list(model.named_buffers(remove_duplicate=False)):
        out[name] = (t.full_tensor() if isinstance(t, DTensor) else t).detach().clone()
    return out


def rank_main(rank: int, world: int, folder: str) -> None:
    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard
    from torch.distributed.tensor.parallel import ColwiseParallel, RowwiseParallel, parallelize_module

    import initrecipe

    dist.init_process_group("gloo", init_method=f"file://{folder}/rendezvous", rank=rank, world_size=world)
    report = {}
    for rng in ("torch", "portable"):
        recipe = initrecipe.load(f"{folder}/titan-{rng}.recipe")
        reference = initrecipe.replay(recipe)
        flat = init_device_mesh("cpu", (world,))
        a = build(meta=True)
        for block in a.layers.values():
            fully_shard(block, mesh=flat)
        fully_shard(a, mesh=flat)
        start = time.perf_counter()
        initrecipe.materialize(a, recipe)
        seconds_a = time.perf_counter() - start
        mesh = init_device_mesh("cpu", (2, 2), mesh_dim_names=("dp", "tp"))
        b = build(meta=True)
        for block in b.layers.values():
            parallelize_module(block, mesh["tp"], {"feed_forward.w1": ColwiseParallel(), "feed_forward.w3": ColwiseParallel(),
                                                  "feed_forward.w2": RowwiseParallel()})
            fully_shard(block, mesh=mesh["dp"])
        fully_shard(b, mesh=mesh["dp"])
        initrecipe.materialize(b, recipe)
        ga, gb = gathered(a), gathered(b)
        report[rng] = {
            "tensors": len(ga),
            "fsdp_vs_replay": sorted(n for n in ga if not torch.equal(ga[n], reference[n])),
            "fsdp_tp_vs_fsdp": sorted(n for n in ga if not torch.equal(ga[n], gb[n])),
            "materialize_seconds_fsdp": seconds_a,
        }
    with open(f"{folder}/rank{rank}.json", "w") as f:
        json.dump(report, f)
    dist.barrier()
    dist.destroy_process_group()
    os._exit(0)  # skip finalization: gloo's threads can abort it ("terminate called without an active exception")


def main() -> int:
    import torch.multiprocessing as mp

    import initrecipe
    import torchtitan

    world = 4
    with tempfile.TemporaryDirectory() as folder:
        for rng in ("torch", "portable"):
            start = time.perf_counter()
            recipe = initrecipe.record(build, seed=0, rng=rng)
            print(f"torchtitan {getattr(torchtitan, '__version__', '?')} llama3 debugmodel, rng={rng}: recorded "
                  f"{len(recipe.names)} tensors in {time.perf_counter() - start:.2f} s, "
                  f"{len(recipe.to_bytes()):,} bytes")
            recipe.save(f"{folder}/titan-{rng}.recipe")
        torch.manual_seed(0)
        eager = build()
        replayed = initrecipe.replay(initrecipe.load(f"{folder}/titan-torch.recipe"))
        expected = dict(eager.named_parameters(remove_duplicate=False))
        expected.update(eager.named_buffers(remove_duplicate=False))
        differ = sorted(n for n in expected if not torch.equal(expected[n], replayed[n]))
        print(f"rng=torch replay vs eager `Llama3Model` + `init_states()`: {len(expected) - len(differ)} of "
              f"{len(expected)} tensors bitwise equal")
        mp.spawn(rank_main, args=(world, folder), nprocs=world)
        reports = [json.load(open(f"{folder}/rank{r}.json")) for r in range(world)]
    ok = not differ
    for rng in ("torch", "portable"):
        r = reports[0][rng]
        bad = [rep[rng]["fsdp_vs_replay"] + rep[rng]["fsdp_tp_vs_fsdp"] for rep in reports]
        ok = ok and not any(bad)
        print(f"rng={rng}: {r['tensors']} tensors; FSDP2 over {world} ranks vs replay: "
              f"{'equal' if not r['fsdp_vs_replay'] else r['fsdp_vs_replay']}; FSDP2 + TP on 2x2 vs FSDP2: "
              f"{'equal' if not r['fsdp_tp_vs_fsdp'] else r['fsdp_tp_vs_fsdp']} (on every rank: {not any(bad)})")
    print("all equal" if ok else "DIFFERENCES FOUND")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
