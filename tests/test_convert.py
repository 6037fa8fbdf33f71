"""`initrecipe convert`: a recipe streamed into a Hugging Face safetensors checkpoint folder."""

from __future__ import annotations

import errno
import json
import os
import struct
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save
from torch import nn

import initrecipe
from initrecipe import OutputExistsError, OutputWriteError
from initrecipe.export import safetensors_writer as safetensors_stream
from initrecipe.cli import main
from initrecipe.export.convert import to_safetensors
from initrecipe.export.options import parse_size


class Small(nn.Module):
    """Parameters, a tie, persistent buffers of several dtypes, and a non-persistent buffer."""

    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(50, 8)
        self.norm = nn.LayerNorm(8)
        self.head = nn.Linear(8, 50)
        self.head.weight = self.emb.weight
        self.register_buffer("counts", torch.randint(0, 10, (5,)))
        self.register_buffer("scales", torch.randn(3, 7, dtype=torch.float16))
        self.register_buffer("flags", torch.rand(6) > 0.5)
        self.register_buffer("cache", torch.randn(4, 4), persistent=False)


KEPT = ["emb.weight", "norm.weight", "norm.bias", "head.bias", "counts", "scales", "flags"]


@pytest.fixture(scope="module")
def recipe() -> initrecipe.Recipe:
    return initrecipe.record(Small, seed=0)


@pytest.fixture(scope="module")
def replayed(recipe) -> dict[str, torch.Tensor]:
    return {k: v.detach() for k, v in initrecipe.replay(recipe).items()}


def bitwise_equal(a: torch.Tensor, b: torch.Tensor) -> bool:
    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    return torch.equal(a.contiguous().view(torch.uint8), b.contiguous().view(torch.uint8))


def header(path: Path) -> tuple[int, dict]:
    data = path.read_bytes()
    (n,) = struct.unpack("<Q", data[:8])
    return n, json.loads(data[8 : 8 + n])


def test_single_file_is_bitwise_equal_to_replay(recipe, replayed, tmp_path):
    paths = to_safetensors(recipe, tmp_path / "out")
    assert paths == [tmp_path / "out" / "model.safetensors"]
    assert sorted(os.listdir(tmp_path / "out")) == ["model.safetensors"]
    loaded = load_file(paths[0])
    assert sorted(loaded) == sorted(KEPT)
    for name, tensor in loaded.items():
        assert bitwise_equal(tensor, replayed[name]), name


def test_layout_is_what_save_file_writes(recipe, replayed, tmp_path):
    (path,) = to_safetensors(recipe, tmp_path)
    reference = save({k: replayed[k] for k in KEPT}, metadata={"format": "pt"})
    (n_ref,) = struct.unpack("<Q", reference[:8])
    n, doc = header(path)
    data = path.read_bytes()
    assert n % 8 == 0
    assert data[8 + n :] == reference[8 + n_ref :]  # the data section, byte for byte
    ref_doc = json.loads(reference[8 : 8 + n_ref])
    assert {k: v for k, v in doc.items() if k != "__metadata__"} == {
        k: v for k, v in ref_doc.items() if k != "__metadata__"
    }


def test_metadata(recipe, tmp_path):
    (path,) = to_safetensors(recipe, tmp_path)
    with safe_open(str(path), "pt") as f:
        meta = f.metadata()
    assert meta == {
        "format": "pt",
        "initrecipe.content_hash": recipe.content_hash,
        "initrecipe.version": initrecipe.__version__,
    }


def test_ties_stored_once_and_non_persistent_buffers_left_out(recipe, tmp_path):
    (path,) = to_safetensors(recipe, tmp_path)
    _, doc = header(path)
    assert "emb.weight" in doc and "head.weight" not in doc  # the first name in recipe order is kept
    assert "cache" not in doc
    assert path.stat().st_size == 8 + header(path)[0] + sum(
        t.nbytes for t in recipe.tensors if t.name in KEPT
    )


def test_matches_what_transformers_keeps_for_ties(tmp_path):
    transformers = pytest.importorskip("transformers")
    cfg = transformers.GPT2Config(n_embd=16, n_layer=1, n_head=2, vocab_size=64, n_positions=16, bos_token_id=0, eos_token_id=0)
    rec = initrecipe.record(lambda: transformers.GPT2LMHeadModel(cfg), seed=0)
    to_safetensors(rec, tmp_path / "ours")
    torch.manual_seed(0)
    transformers.GPT2LMHeadModel(cfg).save_pretrained(tmp_path / "theirs")
    ours = load_file(tmp_path / "ours" / "model.safetensors")
    theirs = load_file(tmp_path / "theirs" / "model.safetensors")
    assert sorted(ours) == sorted(theirs)
    for name in theirs:
        assert bitwise_equal(ours[name], theirs[name]), name


def test_sharding_writes_index_and_each_tensor_once(recipe, replayed, tmp_path):
    limit = 700
    paths = to_safetensors(recipe, tmp_path, max_shard_size=limit)
    names = sorted(os.listdir(tmp_path))
    shards = [n for n in names if n.endswith(".safetensors")]
    assert "model.safetensors" not in names
    assert "model.safetensors.index.json" in names
    n = len(shards)
    assert n > 1
    assert shards == [f"model-{i:05d}-of-{n:05d}.safetensors" for i in range(1, n + 1)]
    assert [p.name for p in paths] == shards + ["model.safetensors.index.json"]
    index = json.loads((tmp_path / "model.safetensors.index.json").read_text())
    assert sorted(index["weight_map"]) == sorted(KEPT)
    sizes = {t.name: t.nbytes for t in recipe.tensors}
    assert index["metadata"]["total_size"] == sum(sizes[k] for k in KEPT)
    seen: dict[str, str] = {}
    for shard in shards:
        loaded = load_file(tmp_path / shard)
        data_size = sum(sizes[k] for k in loaded)
        assert data_size <= limit or len(loaded) == 1
        for name, tensor in loaded.items():
            assert name not in seen
            seen[name] = shard
            assert bitwise_equal(tensor, replayed[name])
    assert seen == index["weight_map"]


def test_sharding_matches_huggingface_hub(recipe, replayed, tmp_path):
    hub = pytest.importorskip("huggingface_hub")
    for limit in (100, 256, 700, 2000, "1KB"):
        out = tmp_path / str(limit)
        to_safetensors(recipe, out, max_shard_size=limit)
        state = {k: replayed[k] for k in [t.name for t in recipe.tensors] if k in KEPT}
        split = hub.split_torch_state_dict_into_shards(state, max_shard_size=limit)
        if split.is_sharded:
            index = json.loads((out / "model.safetensors.index.json").read_text())
            assert index["weight_map"] == split.tensor_to_filename
            assert index["metadata"]["total_size"] == split.metadata["total_size"]
        else:
            assert sorted(os.listdir(out)) == ["model.safetensors"]


def test_dtype_cast_floating_only(recipe, replayed, tmp_path):
    (path,) = to_safetensors(recipe, tmp_path, dtype=torch.bfloat16)
    loaded = load_file(path)
    for name, tensor in loaded.items():
        ref = replayed[name]
        expected = ref.to(torch.bfloat16) if ref.is_floating_point() else ref
        assert bitwise_equal(tensor, expected), name
    assert loaded["counts"].dtype == torch.int64 and loaded["flags"].dtype == torch.bool


def test_refuses_to_overwrite_without_force(recipe, tmp_path):
    to_safetensors(recipe, tmp_path)
    before = (tmp_path / "model.safetensors").read_bytes()
    with pytest.raises(OutputExistsError, match="--force") as info:
        to_safetensors(recipe, tmp_path, dtype="fp16")
    assert isinstance(info.value, initrecipe.RecipeError)
    assert (tmp_path / "model.safetensors").read_bytes() == before
    to_safetensors(recipe, tmp_path, dtype="fp16", force=True)
    assert load_file(tmp_path / "model.safetensors")["emb.weight"].dtype == torch.float16


def test_force_replaces_a_sharded_checkpoint_and_removes_stale_shards(recipe, tmp_path):
    to_safetensors(recipe, tmp_path, max_shard_size=300)
    (tmp_path / "README.md").write_text("keep me")
    with pytest.raises(OutputExistsError):
        to_safetensors(recipe, tmp_path)
    to_safetensors(recipe, tmp_path, force=True)
    assert sorted(os.listdir(tmp_path)) == ["README.md", "model.safetensors"]


class Boom(Exception):
    pass


@pytest.mark.parametrize("exc", [Boom, KeyboardInterrupt])
def test_no_partial_files_after_a_failure_mid_write(recipe, tmp_path, monkeypatch, exc):
    real_write = safetensors_stream.StreamingSafetensorsWriter.write
    calls = []

    def failing_write(self, name, tensor, on_bytes=None):
        calls.append(name)
        if len(calls) == 3:
            raise exc()
        return real_write(self, name, tensor, on_bytes)

    monkeypatch.setattr(safetensors_stream.StreamingSafetensorsWriter, "write", failing_write)
    with pytest.raises(exc):
        to_safetensors(recipe, tmp_path / "out", max_shard_size=300, config=_write_config(tmp_path))
    assert not (tmp_path / "out").exists()


def test_failed_overwrite_keeps_the_old_checkpoint(recipe, tmp_path, monkeypatch):
    to_safetensors(recipe, tmp_path)
    before = (tmp_path / "model.safetensors").read_bytes()

    def failing_write(self, name, tensor, on_bytes=None):
        raise Boom()

    monkeypatch.setattr(safetensors_stream.StreamingSafetensorsWriter, "write", failing_write)
    with pytest.raises(Boom):
        to_safetensors(recipe, tmp_path, force=True, dtype="bf16")
    assert os.listdir(tmp_path) == ["model.safetensors"]
    assert (tmp_path / "model.safetensors").read_bytes() == before


def _raise(code: int, cls: type[OSError] = OSError):
    def fail(*args, **kwargs):
        raise cls(code, os.strerror(code))

    return fail


@pytest.mark.parametrize(
    "target, code, cls, message",
    [
        ("pwrite", errno.ENOSPC, OSError, "no space left on the device"),
        ("posix_fallocate", errno.ENOSPC, OSError, "no space left on the device"),
        ("open", errno.EACCES, PermissionError, "permission denied"),
        ("pwrite", errno.EROFS, OSError, "read-only file system"),
        ("fsync", errno.EIO, OSError, "cannot write"),
    ],
)
def test_os_errors_become_one_line_recipe_errors(recipe, tmp_path, monkeypatch, target, code, cls, message):
    monkeypatch.setattr(safetensors_stream.os, target, _raise(code, cls))
    with pytest.raises(OutputWriteError) as info:
        to_safetensors(recipe, tmp_path / "out")
    monkeypatch.undo()
    assert isinstance(info.value, initrecipe.RecipeError)
    text = str(info.value)
    assert message in text and "\n" not in text
    assert info.value.errno == code
    assert not (tmp_path / "out").exists()


def test_cli_reports_disk_full_as_one_line_and_exit_1(recipe, tmp_path, monkeypatch, capsys):
    src = tmp_path / "m.recipe"
    recipe.save(src)
    monkeypatch.setattr(safetensors_stream.os, "pwrite", _raise(errno.ENOSPC))
    assert main(["convert", str(src), str(tmp_path / "out")]) == 1
    monkeypatch.undo()
    err = capsys.readouterr().err
    assert err.startswith("initrecipe: error: no space left on the device") and err.count("\n") == 1
    assert not (tmp_path / "out").exists()


def test_cli_refuses_overwrite_then_force(recipe, tmp_path, capsys):
    src = tmp_path / "m.recipe"
    recipe.save(src)
    out = tmp_path / "out"
    assert main(["convert", str(src), str(out), "--quiet"]) == 0
    assert capsys.readouterr().err == ""
    assert main(["convert", str(src), str(out)]) == 1
    assert "--force" in capsys.readouterr().err
    assert main(["convert", str(src), str(out), "--force", "--dtype", "bf16", "--max-shard-size", "300"]) == 0
    err = capsys.readouterr().err
    assert "wrote" in err and "into" in err
    index = json.loads((out / "model.safetensors.index.json").read_text())
    assert sorted(index["weight_map"]) == sorted(KEPT)


def test_progress_bar_only_when_asked_or_on_a_terminal(recipe, tmp_path, capsys):
    to_safetensors(recipe, tmp_path / "a")  # stderr is not a terminal under pytest
    assert capsys.readouterr().err == ""
    to_safetensors(recipe, tmp_path / "b", progress=True)
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "tensors 7/7" in captured.err and "100%" in captured.err


def test_accepts_a_path_or_bytes(recipe, replayed, tmp_path):
    recipe.save(tmp_path / "m.recipe")
    (a,) = to_safetensors(tmp_path / "m.recipe", tmp_path / "a")
    (b,) = to_safetensors(recipe.to_bytes(), tmp_path / "b")
    assert a.read_bytes() == b.read_bytes()


def test_bad_arguments(recipe, tmp_path):
    with pytest.raises(initrecipe.RecipeError, match="size"):
        to_safetensors(recipe, tmp_path, max_shard_size="lots")
    with pytest.raises(initrecipe.RecipeError, match="dtype"):
        to_safetensors(recipe, tmp_path, dtype="int8")
    (tmp_path / "file").write_text("x")
    with pytest.raises(initrecipe.RecipeError, match="not a folder"):
        to_safetensors(recipe, tmp_path / "file")
    with pytest.raises(initrecipe.RecipeError, match="does not exist"):
        to_safetensors(recipe, tmp_path / "o", config=tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("{nope")
    with pytest.raises(initrecipe.RecipeError, match="not valid JSON"):
        to_safetensors(recipe, tmp_path / "o", config=tmp_path / "bad.json")
    assert not (tmp_path / "o").exists()


def test_parse_size():
    assert parse_size("5GB") == 5 * 10**9
    assert parse_size("2GiB") == 2 * 2**30
    assert parse_size(" 500 MB ") == 500 * 10**6
    assert parse_size("1.5KB") == 1500
    assert parse_size("8Mb") == 10**6
    assert parse_size(1234) == 1234
    for bad in ("", "GB", "5XB", 0, -1, "0MB"):
        with pytest.raises(ValueError):
            parse_size(bad)


def test_empty_model(tmp_path):
    rec = initrecipe.record(nn.Module, seed=0)
    (path,) = to_safetensors(rec, tmp_path)
    assert load_file(path) == {}


# --------------------------------------------------------------------------- real consumers
def _write_config(tmp_path: Path) -> Path:
    path = tmp_path / "cfg" / "config.json"
    path.parent.mkdir(exist_ok=True)
    path.write_text(json.dumps({"model_type": "gpt2"}))
    return path


def _tiny_configs():
    transformers = pytest.importorskip("transformers")
    return {
        "gpt2": transformers.GPT2Config(
            n_embd=32, n_layer=2, n_head=4, vocab_size=128, n_positions=64, bos_token_id=1, eos_token_id=2
        ),
        "llama": transformers.LlamaConfig(
            vocab_size=128,
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=64,
            pad_token_id=0,
            bos_token_id=1,
            eos_token_id=2,
            tie_word_embeddings=True,
        ),
        "llama_untied": transformers.LlamaConfig(
            vocab_size=128,
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=1,
            num_attention_heads=4,
            num_key_value_heads=4,
            max_position_embeddings=64,
            pad_token_id=0,
            bos_token_id=1,
            eos_token_id=2,
            tie_word_embeddings=False,
        ),
    }


def _assert_module_matches(model: nn.Module, weights: dict[str, torch.Tensor], dtype=None):
    got = dict(model.named_parameters(remove_duplicate=False))
    got.update(model.named_buffers(remove_duplicate=False))
    assert sorted(got) == sorted(weights)
    for name, tensor in got.items():
        ref = weights[name].detach()
        if dtype is not None and ref.is_floating_point():
            ref = ref.to(dtype)
        assert bitwise_equal(tensor.detach(), ref), name


@pytest.mark.parametrize("arch", ["gpt2", "llama", "llama_untied"])
def test_from_pretrained_loads_exactly_the_replayed_weights(arch, tmp_path):
    transformers = pytest.importorskip("transformers")
    from initrecipe.capture.hf import model_fn_from_config

    cfg = _tiny_configs()[arch]
    cfg.save_pretrained(tmp_path / "cfg")
    rec = initrecipe.record(model_fn_from_config(tmp_path / "cfg" / "config.json"), seed=0)
    weights = initrecipe.replay(rec)
    out = tmp_path / "ckpt"
    to_safetensors(rec, out, config=tmp_path / "cfg" / "config.json", max_shard_size="20KB")
    assert (out / "config.json").read_bytes() == (tmp_path / "cfg" / "config.json").read_bytes()
    assert (out / "model.safetensors.index.json").exists()
    model = transformers.AutoModelForCausalLM.from_pretrained(out)
    _assert_module_matches(model, weights)


def test_from_pretrained_after_a_bf16_cast(tmp_path):
    transformers = pytest.importorskip("transformers")
    cfg = _tiny_configs()["llama"]
    cfg.save_pretrained(tmp_path / "cfg")
    rec = initrecipe.record(lambda: transformers.LlamaForCausalLM(cfg), seed=0)
    weights = initrecipe.replay(rec)
    to_safetensors(rec, tmp_path / "ckpt", dtype=torch.bfloat16, config=tmp_path / "cfg")
    saved = json.loads((tmp_path / "ckpt" / "config.json").read_text())
    assert saved["dtype"] == "bfloat16"
    model = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "ckpt")
    assert model.model.embed_tokens.weight.dtype == torch.bfloat16
    persistent = {t.name for t in rec.tensors if t.persistent}
    for name, tensor in model.state_dict().items():
        if name in persistent:
            assert bitwise_equal(tensor, weights[name].detach().to(torch.bfloat16)), name


def test_cli_record_from_hf_config_then_convert(tmp_path, monkeypatch, capsys):
    transformers = pytest.importorskip("transformers")
    cfg = _tiny_configs()["llama"]
    cfg.save_pretrained(tmp_path)
    monkeypatch.chdir(tmp_path)
    assert main(["record", "--hf-config", "config.json", "--seed", "0", "-o", "x.recipe"]) == 0
    assert main(["convert", "x.recipe", "out", "--config", "config.json"]) == 0
    assert sorted(os.listdir("out")) == ["config.json", "model.safetensors"]
    capsys.readouterr()
    model = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "out")
    _assert_module_matches(model, initrecipe.replay(tmp_path / "x.recipe"))
    torch.manual_seed(0)
    eager = transformers.AutoModelForCausalLM.from_config(transformers.AutoConfig.from_pretrained(tmp_path))
    _assert_module_matches(model, dict(eager.named_parameters(remove_duplicate=False)) | dict(eager.named_buffers()))
