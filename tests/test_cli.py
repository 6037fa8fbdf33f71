"""The command line is a thin layer over the library: results on stdout, errors as one line, exit codes."""

from __future__ import annotations

import json
import sys

import pytest
import torch
from safetensors.torch import load_file

import initrecipe
from initrecipe.cli import main

MODULE = """
import torch
from torch import nn

def build():
    torch.nn.init  # noqa
    m = nn.Sequential(nn.Linear(4, 3), nn.LayerNorm(3))
    m.register_buffer("steps", torch.zeros((), dtype=torch.int64), persistent=False)
    return m
"""


@pytest.fixture
def user_module(tmp_path, monkeypatch):
    (tmp_path / "my_models.py").write_text(MODULE)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield tmp_path
    sys.modules.pop("my_models", None)


def test_record_then_replay_to_safetensors_matches_eager(user_module, capsys):
    assert main(["record", "my_models:build", "--seed", "3", "-o", "m.recipe"]) == 0
    assert main(["replay", "m.recipe", "-o", "w.safetensors"]) == 0
    import my_models

    torch.manual_seed(3)
    eager = my_models.build()
    saved = load_file("w.safetensors")
    assert set(saved) == {"0.weight", "0.bias", "1.weight", "1.bias", "steps"}
    for name, tensor in list(eager.named_parameters()) + list(eager.named_buffers()):
        assert torch.equal(saved[name], tensor), name
    assert sorted(p.name for p in user_module.iterdir() if p.name.startswith(".")) == []


def test_show_json_is_one_document(user_module, capsys):
    main(["record", "my_models:build", "--seed", "0", "-o", "m.recipe"])
    capsys.readouterr()
    assert main(["show", "m.recipe", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert [t["name"] for t in doc["tensors"]] == ["0.weight", "0.bias", "1.weight", "1.bias", "steps"]
    assert doc["schema"] == "initrecipe.show/1"
    assert doc["tensors"][4] == {
        "name": "steps", "kind": "buffer", "shape": [], "dtype": "int64",
        "requires_grad": False, "persistent": False, "tied_to": None, "init": "zeros", "group": 4,
    }
    assert doc["tensors"][0]["init"] == "kaiming_uniform_(a=sqrt(5))"
    assert doc["content_hash"] == initrecipe.load("m.recipe").content_hash


def test_show_text_lists_tensors(user_module, capsys):
    main(["record", "my_models:build", "-o", "m.recipe"])
    capsys.readouterr()
    assert main(["show", "m.recipe"]) == 0
    out = capsys.readouterr().out
    assert "0.weight  (3, 4) float32  kaiming_uniform_(a=sqrt(5))\n" in out
    assert "steps  () int64 [buffer, non-persistent]  zeros\n" in out


def test_errors_are_one_line_and_exit_1(tmp_path, capsys):
    bad = tmp_path / "empty.recipe"
    bad.write_bytes(b"")
    assert main(["show", str(bad)]) == 1
    err = capsys.readouterr().err
    assert err == "initrecipe: error: the recipe is empty (0 bytes): the download or copy did not complete\n"


def test_bad_target_is_a_usage_error(user_module):
    with pytest.raises(SystemExit, match="expected PKG.MODULE:CALLABLE"):
        main(["record", "my_models", "-o", "x.recipe"])
    with pytest.raises(SystemExit, match="has no attribute `nope`"):
        main(["record", "my_models:nope", "-o", "x.recipe"])


def test_no_arguments_shows_help(capsys):
    with pytest.raises(SystemExit) as exc:
        main([])
    assert exc.value.code == 0
    assert "usage: initrecipe" in capsys.readouterr().out


def test_portable_record_and_sharded_replay(user_module, capsys):
    assert main(["record", "my_models:build", "--seed", "3", "--rng", "portable", "-o", "p.recipe"]) == 0
    assert main(["show", "p.recipe", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["rng"] == "portable" and info["format_version"] == "1.1"
    assert main(["replay", "p.recipe", "-o", "full.safetensors"]) == 0
    assert main(["replay", "p.recipe", "--shard", "1/2", "--names", "0.weight,steps", "-o", "half.safetensors"]) == 0
    full, half = load_file("full.safetensors"), load_file("half.safetensors")
    assert set(half) == {"0.weight", "steps"}
    assert torch.equal(half["0.weight"], full["0.weight"][2:])  # rows 2..3 of 3: torch.chunk gives [0:2], [2:3]
    assert torch.equal(half["steps"], full["steps"])  # 0-d tensors are not split


def test_bad_shard_argument_is_a_usage_error(user_module, capsys):
    assert main(["record", "my_models:build", "--seed", "3", "--rng", "portable", "-o", "p.recipe"]) == 0
    with pytest.raises(SystemExit, match=r"--shard expects RANK/WORLD_SIZE with 0 <= RANK < WORLD_SIZE, got `2/2`"):
        main(["replay", "p.recipe", "--shard", "2/2", "-o", "x.safetensors"])
    with pytest.raises(SystemExit, match="--shard expects RANK/WORLD_SIZE"):
        main(["replay", "p.recipe", "--shard", "half", "-o", "x.safetensors"])


def test_show_portable_recipe_reports_draws_and_sliceable_tensors(capsys):
    from pathlib import Path

    golden = str(Path(__file__).resolve().parent / "golden" / "portable-v1.1.recipe")
    assert main(["show", golden, "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    portable = info["portable"]
    assert (portable["portable_draws"], portable["pinned_draws"]) == (14, 1)
    assert set(portable["sliceable"]) == {t["name"] for t in info["tensors"]} - {"orthogonal", "sparse", "pinned"}
    assert main(["show", golden]) == 0
    out = capsys.readouterr().out
    assert "portable draws: 14   pinned draws (torch's stream): 1   sliceable: 12/15" in out
    assert "trunc  (12, 10) float32  trunc_normal_(mean=0.0, std=0.02, a=-2.0, b=2.0)\n" in out
