"""One path to safetensors: ``initrecipe replay -o`` streams through the writer ``convert`` uses,
writes the same metadata, and differs from ``convert`` only in the buffers it keeps."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from torch import nn

import initrecipe
from initrecipe.cli import main
from initrecipe.export.convert import METADATA_HASH_KEY, replay_to_file, to_safetensors

ROOT = str(Path(__file__).resolve().parent.parent)
MiB = 1 << 20


class Tied(nn.Module):
    """A tie, buffers of several dtypes and a non-persistent buffer."""

    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(50, 8)
        self.norm = nn.LayerNorm(8)
        self.head = nn.Linear(8, 50)
        self.head.weight = self.emb.weight
        self.register_buffer("counts", torch.randint(0, 10, (5,)))
        self.register_buffer("scales", torch.randn(3, 7, dtype=torch.float16))
        self.register_buffer("cache", torch.randn(4, 4), persistent=False)


def header(path: Path) -> dict:
    data = path.read_bytes()
    (n,) = struct.unpack("<Q", data[:8])
    return json.loads(data[8 : 8 + n])


def same_bits(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.dtype == b.dtype and a.shape == b.shape and torch.equal(a.contiguous().view(torch.uint8),
                                                                     b.contiguous().view(torch.uint8))


@pytest.fixture()
def workdir(tmp_path, monkeypatch) -> Path:
    monkeypatch.chdir(tmp_path)
    initrecipe.record(Tied, seed=0).save("m.recipe")
    return tmp_path


def test_replay_output_and_convert_agree_bitwise_where_they_overlap(workdir, capsys):
    assert main(["replay", "m.recipe", "-o", "w.safetensors"]) == 0
    assert main(["convert", "m.recipe", "out", "-q"]) == 0
    replayed = load_file("w.safetensors")
    converted = load_file("out/model.safetensors")
    # replay -o: what replay() returns, non-persistent buffers included, the tie once (first name).
    assert sorted(replayed) == ["cache", "counts", "emb.weight", "head.bias", "norm.bias", "norm.weight", "scales"]
    # convert: what state_dict() holds; the non-persistent buffer is left out.
    assert sorted(converted) == sorted(set(replayed) - {"cache"})
    for name, tensor in converted.items():
        assert same_bits(replayed[name], tensor), name
    expected = initrecipe.replay("m.recipe")
    for name, tensor in replayed.items():
        assert same_bits(tensor, expected[name].detach()), name
    assert "replayed 7 tensors into w.safetensors in " in capsys.readouterr().err


def test_without_non_persistent_buffers_the_two_files_are_the_same_bytes(tmp_path):
    recipe = initrecipe.record(lambda: nn.Sequential(nn.Linear(6, 5), nn.LayerNorm(5), nn.Linear(5, 3)), seed=2)
    path, count = replay_to_file(recipe, tmp_path / "w.safetensors")
    [converted] = to_safetensors(recipe, tmp_path / "out")
    assert count == 6
    assert path.read_bytes() == converted.read_bytes()


def test_one_metadata_key(workdir, capsys):
    assert main(["replay", "m.recipe", "-o", "w.safetensors"]) == 0
    assert main(["convert", "m.recipe", "out", "-q"]) == 0
    recipe = initrecipe.load("m.recipe")
    expected = {"format": "pt", "initrecipe.content_hash": recipe.content_hash,
                "initrecipe.version": initrecipe.__version__}
    assert METADATA_HASH_KEY == "initrecipe.content_hash"
    assert header(workdir / "w.safetensors")["__metadata__"] == expected
    assert header(workdir / "out" / "model.safetensors")["__metadata__"] == expected


def test_files_written_by_0_2_0_with_the_old_key_still_read(workdir, capsys):
    """0.2.0's `replay -o` wrote the hash under `initrecipe.hash`; diff and the reader take such files alike."""
    recipe = initrecipe.load("m.recipe")
    weights = initrecipe.replay(recipe)
    tensors, seen = {}, set()
    for name, tensor in weights.items():  # what 0.2.0 stored: ties once, under the first name
        if id(tensor) not in seen:
            seen.add(id(tensor))
            tensors[name] = tensor.detach()
    save_file(tensors, "old.safetensors", metadata={"format": "pt", "initrecipe.hash": recipe.content_hash})
    assert main(["diff", "m.recipe", "old.safetensors"]) == 0
    capsys.readouterr()
    assert initrecipe.diff(recipe, "old.safetensors").identical
    assert main(["replay", "m.recipe", "-o", "new.safetensors"]) == 0
    old, new = load_file("old.safetensors"), load_file("new.safetensors")
    assert old.keys() == new.keys() and all(same_bits(old[n], new[n]) for n in old)


def test_names_and_shards_write_what_replay_returns(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    initrecipe.record(Tied, seed=1, rng="portable").save("p.recipe")
    names = ["head.weight", "emb.weight", "cache", "counts"]  # a tie asked for under both names
    assert main(["replay", "p.recipe", "--shard", "1/2", "--names", ",".join(names), "-o", "s.safetensors"]) == 0
    stored = load_file("s.safetensors")
    full = initrecipe.replay("p.recipe")
    assert sorted(stored) == ["cache", "counts", "emb.weight"]  # the tie once, under its first name in the recipe
    for name, tensor in stored.items():
        whole = full[name].detach()
        assert same_bits(tensor, torch.chunk(whole, 2)[1]), name
    assert "replayed 3 tensors" in capsys.readouterr().err


def test_library_call_takes_names_as_any_iterable(tmp_path):
    recipe = initrecipe.record(Tied, seed=0)
    path, count = replay_to_file(recipe, tmp_path / "w.safetensors", names=iter(["norm.bias", "head.weight"]))
    assert count == 2 and sorted(load_file(path)) == ["head.weight", "norm.bias"]


def test_unknown_names_and_unstorable_dtypes_are_one_line_errors_before_writing(workdir, capsys):
    assert main(["replay", "m.recipe", "--names", "nope", "-o", "w.safetensors"]) == 1
    assert "`nope` is not a tensor of this recipe" in capsys.readouterr().err
    def complex_buffer() -> nn.Module:
        module = nn.Linear(2, 2)
        module.register_buffer("phase", torch.ones(3, dtype=torch.complex128))
        return module

    recipe = initrecipe.record(complex_buffer, seed=0)
    with pytest.raises(initrecipe.RecipeError, match="safetensors cannot store"):
        replay_to_file(recipe, workdir / "c.safetensors")
    assert sorted(os.listdir(workdir)) == ["m.recipe"]


def test_help_says_which_buffers_replay_writes(capsys):
    with pytest.raises(SystemExit):
        main(["replay", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "non-persistent buffers included" in text and "initrecipe.content_hash" in text


_PEAK = textwrap.dedent("""
    import gc, json, sys
    import initrecipe.cli, initrecipe.export.convert, initrecipe.runtime.replay  # imports outside the measurement

    def hwm_kib():
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))

    gc.collect()
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset the peak (VmHWM) to the current RSS
    before = hwm_kib()
    rc = initrecipe.cli.main(["replay", sys.argv[1], "-o", sys.argv[2]])
    print(json.dumps({"rc": rc, "before": before, "after": hwm_kib()}))
""")


@pytest.mark.skipif(not os.path.exists("/proc/self/clear_refs"), reason="needs Linux's /proc/self/clear_refs")
def test_replay_output_streams_instead_of_holding_every_tensor(tmp_path):
    count, rows, cols = 8, 4096, 2048  # 8 tensors of 32 MiB: 256 MiB of weights
    initrecipe.record(lambda: nn.Sequential(*[nn.Linear(cols, rows, bias=False) for _ in range(count)]),
                      seed=0).save(tmp_path / "big.recipe")
    env = {**os.environ, "PYTHONPATH": ROOT, "INITRECIPE_HUGE_PAGES": "0"}
    proc = subprocess.run([sys.executable, "-c", _PEAK, str(tmp_path / "big.recipe"), str(tmp_path / "w.safetensors")],
                          capture_output=True, text=True, env=env, check=True, timeout=600)
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["rc"] == 0, proc.stderr
    weights = count * rows * cols * 4 / MiB
    grown = (result["after"] - result["before"]) / 1024
    assert (tmp_path / "w.safetensors").stat().st_size > weights * MiB
    # Holding every tensor (0.2.0) grew the peak by at least the weights; streaming holds about two.
    assert grown < weights / 2, f"replay -o grew the peak RSS by {grown:.0f} MiB for {weights:.0f} MiB of weights"
