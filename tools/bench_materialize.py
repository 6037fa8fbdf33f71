#!/usr/bin/env python
"""Benchmark ``initrecipe.materialize`` on FSDP2-sharded meta modules, per rank, at world sizes 1, 2, 4.

Model: the Llama-1B-sized config (hidden 2048, intermediate 5504, 16 layers, 16 heads, vocab
32000, untied; 3.50 GiB of float32 weights).  For each world size the parent starts that many CPU
processes (gloo, file rendezvous).  Every rank builds the model on the meta device, applies FSDP2
(``fully_shard`` per decoder layer and at the root) and then, timed:

* ``initrecipe``: ``initrecipe.materialize(model, recipe)`` from a portable recipe (and, with
  ``--torch``, from a torch recipe: every rank replays every tensor, see docs);
* ``baseline``: ``model.to_empty(device="cpu")`` then the model's own init on the sharded
  parameters, as users do without a recipe: ``reset_parameters()`` of every submodule that has
  one, then transformers' ``model._init_weights`` over all modules.

Each rank reports its wall time, CPU time (user + system) and peak RSS (``ru_maxrss``), plus its
RSS before the measurement (the interpreter with torch and transformers imported) and the bytes of
its local shards.  Each (world size, system) pair runs in fresh processes, each rank with
``cpu_count // world`` torch threads (the node's cores shared, as under torchrun).

    python tools/bench_materialize.py                 # full run (a few minutes)
    python tools/bench_materialize.py --quick         # a tiny Llama, seconds
    python tools/bench_materialize.py --json out.json
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import sys
import tempfile
import time
from typing import Any

CONFIGS = {
    "llama-1b": dict(hidden_size=2048, intermediate_size=5504, num_hidden_layers=16, num_attention_heads=16,
                     num_key_value_heads=16, vocab_size=32000, tie_word_embeddings=False),
    "llama-tiny": dict(hidden_size=128, intermediate_size=344, num_hidden_layers=2, num_attention_heads=4,
                       num_key_value_heads=4, vocab_size=1000, tie_word_embeddings=False),
}


def _rss_kib() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def rank_main(rank: int, world: int, folder: str, config: str, system: str) -> None:
    import torch
    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard
    from torch.distributed.tensor import DTensor
    from transformers import LlamaConfig, LlamaForCausalLM

    import initrecipe

    # As torchrun does for several processes per node (it sets OMP_NUM_THREADS): the ranks share the
    # node's cores instead of each starting a thread per core.
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // world))
    dist.init_process_group("gloo", init_method=f"file://{folder}/rendezvous-{system}-{world}", rank=rank,
                            world_size=world)
    mesh = init_device_mesh("cpu", (world,))
    with torch.device("meta"):
        model = LlamaForCausalLM(LlamaConfig(**CONFIGS[config]))
    for layer in model.model.layers:
        fully_shard(layer, mesh=mesh)
    fully_shard(model, mesh=mesh)
    recipe = initrecipe.load(f"{folder}/{system}.recipe") if system != "baseline" else None
    dist.barrier()
    rss_before = _rss_kib()
    cpu0 = resource.getrusage(resource.RUSAGE_SELF)
    start = time.perf_counter()
    if recipe is not None:
        initrecipe.materialize(model, recipe)
    else:
        model.to_empty(device="cpu")
        with torch.no_grad():
            for module in model.modules():
                if hasattr(module, "reset_parameters"):
                    module.reset_parameters()
            model.apply(model._init_weights)
    seconds = time.perf_counter() - start
    cpu1 = resource.getrusage(resource.RUSAGE_SELF)
    local = sum((t._local_tensor if isinstance(t, DTensor) else t).numel() * t.element_size()
                for t in list(model.parameters()) + list(model.buffers()))
    result = {
        "rank": rank,
        "seconds": seconds,
        "cpu_seconds": (cpu1.ru_utime - cpu0.ru_utime) + (cpu1.ru_stime - cpu0.ru_stime),
        "peak_rss_kib": cpu1.ru_maxrss,
        "rss_before_kib": rss_before,
        "local_bytes": local,
    }
    with open(f"{folder}/{system}-{world}-rank{rank}.json", "w") as f:
        json.dump(result, f)
    dist.barrier()
    dist.destroy_process_group()
    os._exit(0)  # skip finalization: gloo's threads can abort it ("terminate called without an active exception")


def run(world: int, folder: str, config: str, system: str) -> list[dict[str, Any]]:
    import torch.multiprocessing as mp

    mp.spawn(rank_main, args=(world, folder, config, system), nprocs=world)
    return [json.load(open(f"{folder}/{system}-{world}-rank{r}.json")) for r in range(world)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a tiny Llama")
    parser.add_argument("--torch", action="store_true", help="also materialize from an rng='torch' recipe")
    parser.add_argument("--worlds", default="1,2,4", help="world sizes (default 1,2,4)")
    parser.add_argument("--json", metavar="PATH")
    args = parser.parse_args(argv)
    config = "llama-tiny" if args.quick else "llama-1b"
    worlds = [int(w) for w in args.worlds.split(",")]

    from transformers import LlamaConfig, LlamaForCausalLM

    import initrecipe

    systems = ["portable", "baseline"] + (["torch"] if args.torch else [])
    results: dict[str, Any] = {"config": config, "config_kwargs": CONFIGS[config], "cpus": os.cpu_count(),
                               "loadavg_at_start": os.getloadavg(), "runs": {}}
    with tempfile.TemporaryDirectory(prefix="bench_materialize.") as folder:
        build = lambda: LlamaForCausalLM(LlamaConfig(**CONFIGS[config]))  # noqa: E731
        for rng in ("portable", "torch"):
            if rng in systems:
                recipe = initrecipe.record(build, seed=0, rng=rng)
                recipe.save(f"{folder}/{rng}.recipe")
                results["weights_bytes"] = recipe.total_bytes
        for world in worlds:
            for system in systems:
                print(f"world {world}, {system} ...", file=sys.stderr, flush=True)
                results["runs"][f"{system}-{world}"] = run(world, folder, config, system)
    results["loadavg_at_end"] = os.getloadavg()
    weights = results["weights_bytes"]
    print(f"{config}: {weights / 2**30:.2f} GiB of weights; {os.cpu_count()} CPUs; load "
          f"{results['loadavg_at_start'][0]:.2f} at start, {results['loadavg_at_end'][0]:.2f} at end")
    print("| world | system | wall s per rank (median, max) | CPU s per rank (median) | peak RSS per rank, MiB (max) "
          "| RSS before (interpreter), MiB | local shards, MiB | peak - before vs 1.2 x weights/world |")
    print("|---|---|---|---|---|---|---|---|")
    for world in worlds:
        for system in systems:
            rows = results["runs"][f"{system}-{world}"]
            wall = [r["seconds"] for r in rows]
            cpu = [r["cpu_seconds"] for r in rows]
            peak = max(r["peak_rss_kib"] for r in rows) / 1024
            before = max(r["rss_before_kib"] for r in rows) / 1024
            local = max(r["local_bytes"] for r in rows) / 2**20
            budget = 1.2 * weights / world / 2**20
            growth = max(r["peak_rss_kib"] - r["rss_before_kib"] for r in rows) / 1024
            print(f"| {world} | {system} | {statistics.median(wall):.2f} ({max(wall):.2f}) | {statistics.median(cpu):.2f} "
                  f"| {peak:.0f} | {before:.0f} | {local:.0f} | {growth:.0f} vs {budget:.0f} "
                  f"({'within' if growth <= budget else 'OVER'}) |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
