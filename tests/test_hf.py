"""initrecipe.capture.hf: a model constructor from a local transformers config.json, never the network."""

from __future__ import annotations

import json
import sys

import pytest
import torch

import initrecipe
from initrecipe.capture.hf import INSTALL_HINT, model_fn_from_config

transformers = pytest.importorskip("transformers")


@pytest.fixture
def config_dir(tmp_path):
    cfg = transformers.LlamaConfig(
        vocab_size=64,
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=32,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
    )
    cfg.save_pretrained(tmp_path)
    return tmp_path


def test_builds_the_model_the_config_describes(config_dir):
    fn = model_fn_from_config(config_dir / "config.json")
    model = fn()
    assert type(model).__name__ == "LlamaForCausalLM"
    assert model.config.hidden_size == 16
    assert fn().config.hidden_size == 16  # callable again


def test_a_folder_works_too(config_dir):
    assert type(model_fn_from_config(config_dir)()).__name__ == "LlamaForCausalLM"


@pytest.mark.parametrize("auto_class, expected", [("AutoModel", "LlamaModel"), ("LlamaForCausalLM", "LlamaForCausalLM")])
def test_auto_class(config_dir, auto_class, expected):
    assert type(model_fn_from_config(config_dir, auto_class=auto_class)()).__name__ == expected


def test_recording_matches_eager(config_dir):
    recipe = initrecipe.record(model_fn_from_config(config_dir), seed=0)
    weights = initrecipe.replay(recipe)
    torch.manual_seed(0)
    eager = transformers.AutoModelForCausalLM.from_config(transformers.AutoConfig.from_pretrained(config_dir))
    for name, tensor in eager.state_dict().items():
        assert torch.equal(weights[name], tensor), name


def test_missing_file_is_an_error_not_a_download(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for path in ("gpt2", tmp_path / "nope.json", tmp_path):
        with pytest.raises(initrecipe.RecipeError, match="does not exist"):
            model_fn_from_config(path)


def test_unknown_auto_class(config_dir):
    with pytest.raises(initrecipe.RecipeError, match="no class `AutoNothing`"):
        model_fn_from_config(config_dir, auto_class="AutoNothing")
    with pytest.raises(initrecipe.RecipeError, match="cannot build a model"):
        model_fn_from_config(config_dir, auto_class="LlamaConfig")


def test_bad_config(tmp_path):
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(initrecipe.RecipeError, match="cannot read"):
        model_fn_from_config(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "no-such-model"}))
    with pytest.raises(initrecipe.RecipeError, match="cannot read"):
        model_fn_from_config(tmp_path)


def test_transformers_missing_names_the_pip_line(config_dir, monkeypatch):
    monkeypatch.setitem(sys.modules, "transformers", None)
    with pytest.raises(initrecipe.RecipeError) as info:
        model_fn_from_config(config_dir)
    assert INSTALL_HINT in str(info.value)
    assert "pip install 'transformers>=5.0,<6'" in str(info.value)


def test_cli_record_with_hf_config(config_dir, monkeypatch, capsys):
    from initrecipe.cli import main

    monkeypatch.chdir(config_dir)
    assert main(["record", "--hf-config", "config.json", "--seed", "1", "-o", "m.recipe"]) == 0
    assert "recorded" in capsys.readouterr().err
    assert "lm_head.weight" in initrecipe.load(config_dir / "m.recipe").names
    assert main(["record", "--hf-config", "missing.json", "-o", "n.recipe"]) == 1
    assert "does not exist" in capsys.readouterr().err
