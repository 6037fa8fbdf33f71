"""Replace a seed checkpoint with a recipe: two ranks (gloo, CPU) fill an FSDP2-sharded Llama.

    python examples/seed_checkpoint.py            # records the recipe, then starts 2 ranks

Rank 0 records the initialization once (a few KB, in milliseconds, nothing allocated); every rank
builds the model on the meta device, shards it with FSDP2 and fills its own shards from the
recipe. The gathered weights are bitwise those of a single-process replay, whatever the number of
ranks or the layout: no multi-GB seed checkpoint is written or read.
"""

from __future__ import annotations

import os
import sys
import tempfile

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import fully_shard
from torch.distributed.tensor import DTensor
from transformers import LlamaConfig, LlamaForCausalLM

import initrecipe

CONFIG = LlamaConfig(hidden_size=64, intermediate_size=176, num_hidden_layers=2, num_attention_heads=4,
                     vocab_size=1000, tie_word_embeddings=False)


def rank_main(rank: int, world_size: int, folder: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{folder}/rendezvous", rank=rank, world_size=world_size)
    mesh = init_device_mesh("cpu", (world_size,))
    with torch.device("meta"):
        model = LlamaForCausalLM(CONFIG)
    for layer in model.model.layers:
        fully_shard(layer, mesh=mesh)
    fully_shard(model, mesh=mesh)

    initrecipe.materialize(model, f"{folder}/llama.recipe")  # this rank's shards only

    # Check: the gathered weights are the single-process replay's, bit for bit.
    reference = initrecipe.replay(f"{folder}/llama.recipe")
    for name, tensor in model.named_parameters():
        whole = tensor.full_tensor() if isinstance(tensor, DTensor) else tensor
        assert torch.equal(whole, reference[name]), name
    loss = model(torch.arange(8)[None], labels=torch.arange(8)[None]).loss
    loss.backward()
    if rank == 0:
        print(f"{world_size} ranks filled {sum(1 for _ in model.parameters())} sharded parameters from the recipe; "
              f"gathered weights equal the replay; loss {loss.item():.4f}", flush=True)
    dist.barrier()  # no rank tears down while another still talks to it
    dist.destroy_process_group()
    # The work is done: skip interpreter finalization, where gloo's worker threads now and then
    # abort the process ("terminate called without an active exception").
    os._exit(0)


def main() -> int:
    world_size = 2
    with tempfile.TemporaryDirectory() as folder:
        recipe = initrecipe.record(lambda: LlamaForCausalLM(CONFIG), seed=0, rng="portable")
        recipe.save(os.path.join(folder, "llama.recipe"))
        print(f"recipe: {os.path.getsize(os.path.join(folder, 'llama.recipe')):,} bytes for "
              f"{recipe.total_bytes / 2**20:.1f} MiB of weights", flush=True)
        mp.spawn(rank_main, args=(world_size, folder), nprocs=world_size)
    return 0


if __name__ == "__main__":
    sys.exit(main())
