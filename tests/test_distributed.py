"""initrecipe.materialize / distribute on real torch.distributed worlds (gloo, CPU processes).

Each test records the models once in this process, then starts a world of 2 or 4 processes
(tests/dist_worlds.py) that build the models on the meta device, shard them with FSDP2, tensor
parallelism or both, fill them from the recipes, gather every tensor and compare it with the
single-process replay, and run one training step.
"""

from __future__ import annotations

import pytest
import torch

import initrecipe

import dist_scenarios
from dist_worlds import run_world

pytestmark = pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed is not built")


@pytest.fixture(scope="module")
def recipes(tmp_path_factory) -> dict[str, str]:
    folder = tmp_path_factory.mktemp("recipes")
    out = {}
    for kind in ("llama", "gpt2", "titan"):
        for rng in ("torch", "portable"):
            recipe = initrecipe.record(dist_scenarios.BUILDERS[kind], seed=7, rng=rng)
            path = folder / f"{kind}-{rng}.recipe"
            recipe.save(path)
            out[f"{kind}-{rng}"] = str(path)
    return out


def test_fsdp2_on_two_ranks_gives_the_replay_bits_and_trains(recipes):
    results = run_world(dist_scenarios.fsdp_world, 2, recipes)
    for rank, report in enumerate(results):
        for label, entry in report.items():
            assert entry["differ"] == [], (rank, label, entry["differ"])
        assert report["gpt2-torch"]["tied"] and report["gpt2-portable"]["tied"]
    # The ranks trained one model: after the step, its loss is the same everywhere.
    assert results[0]["llama-portable"]["loss"] == results[1]["llama-portable"]["loss"]


def test_fsdp2_with_tensor_parallel_on_a_2x2_mesh_matches_fsdp2_alone(recipes):
    wanted = {k: v for k, v in recipes.items() if not k.startswith("gpt2")}
    results = run_world(dist_scenarios.two_d_world, 4, wanted)
    for rank, report in enumerate(results):
        for label, entry in report.items():
            assert entry["differ"] == [], (rank, label, entry["differ"])
            assert entry["layouts_differ"] == [], (rank, label, entry["layouts_differ"])
    placements = set(results[0]["llama-portable"]["placements"])
    # FSDP2 over tensor parallelism: Shard(1) (row-wise) and strided Shard(0) (column-wise) layouts.
    assert any("Shard(dim=1)" in p for p in placements) and any("_StridedShard" in p for p in placements), placements


def test_distribute_returns_dtensors_for_any_placement(recipes):
    wanted = {k: v for k, v in recipes.items() if k.startswith("llama")}
    results = run_world(dist_scenarios.distribute_world, 2, wanted)
    for report in results:
        for label, entry in report.items():
            assert entry["differ"] == [], (label, entry["differ"])
            assert set(entry["placements"]) == {"(Shard(dim=0),)", "(Shard(dim=1),)", "(Replicate(),)"}, entry


def test_materialize_names_what_does_not_fit(recipes):
    messages = run_world(dist_scenarios.errors_world, 2, recipes)[0]
    assert messages == [
        "`model.embed_tokens.weight` and 22 more tensors are already materialized; materialize fills a module "
        "built under `torch.device('meta')`",
        "cannot materialize the module: the module has 28 tensors the recipe lacks: `transformer.h.0.attn.c_attn.bias`, "
        "`transformer.h.0.attn.c_attn.weight`, `transformer.h.0.attn.c_proj.bias`, `transformer.h.0.attn.c_proj.weight` "
        "and 24 more; the recipe has 22 tensors the module lacks: `model.embed_tokens.weight`, "
        "`model.layers.0.input_layernorm.weight`, `model.layers.0.mlp.down_proj.weight`, "
        "`model.layers.0.mlp.gate_proj.weight` and 18 more. Build the module from the same config the recipe was "
        "recorded from",
    ]


def test_the_readme_seed_checkpoint_example_runs():
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parent.parent / "examples" / "seed_checkpoint.py"
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "2 ranks filled 21 sharded parameters from the recipe; gathered weights equal the replay" in done.stdout
