#!/usr/bin/env python3
"""The torchtune and torchtitan zoo: record, replay and compare model builders in both RNG modes.

Both libraries run with the test suite's torch 2.13.0 once their imports are satisfied by hand
(``--no-deps``, so nothing pulls a second torch), but what they import is too heavy for CI
(torchtitan imports ``triton``, about 1 GB installed; torchtune imports ``datasets`` and so
``pyarrow`` and ``pandas``), so this zoo runs from its own virtual environment:

    python3 -m venv .venv-llm
    .venv-llm/bin/pip install torch==2.13.0 -e .
    .venv-llm/bin/pip install --no-deps torchtune==0.6.1 torchao==0.13.0 torchtitan==0.3.0 spmd_types==0.2.3
    .venv-llm/bin/pip install --no-deps torchdata==0.11.0
    .venv-llm/bin/pip install numpy datasets omegaconf tokenizers sentencepiece tiktoken tyro triton Pillow \\
        "transformers>=5.0,<6" einops
    flock /tmp/initrecipe-heavy.lock .venv-llm/bin/python tools/zoo_llm.py

torchtune 0.6.1 needs torchao 0.13.0 (0.14+ moved ``torchao.dtypes.nf4tensor``; 0.12 does not
import under torch 2.13: ``No module named 'torch._inductor.kernel.flex_attention'``).
torchtune models are its component builders with tiny dimensions; torchtitan models are each
family's ``model_registry("debugmodel").model`` config cut to two layers and a 256-token RoPE table, built with
``config.build()`` and initialized with ``model.init_weights()`` under ``torch.no_grad()``, as
torchtitan's trainer does.  Output and exit status as in ``tools/zoo_vision.py``; the results are
in ``docs/ZOO.md``.
"""

from __future__ import annotations

import dataclasses
import importlib
import sys
from functools import partial
from pathlib import Path
from typing import Any, Callable

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from zoo_report import main  # noqa: E402

ModelFn = Callable[[], torch.nn.Module]

_DECODER = dict(vocab_size=128, num_layers=2, num_heads=4, num_kv_heads=2, embed_dim=32, max_seq_len=64)


def torchtune_zoo() -> dict[str, ModelFn]:
    def component(module: str, builder: str, **kwargs: Any) -> ModelFn:
        def build() -> torch.nn.Module:
            return getattr(importlib.import_module(f"torchtune.models.{module}"), builder)(**kwargs)

        return build

    def dora(module: str, builder: str, **kwargs: Any) -> ModelFn:
        build_model = component(module, builder, **kwargs, use_dora=True)

        def build() -> torch.nn.Module:
            # DoRA's `magnitude` is `torch.empty` until `initialize_dora_magnitude()`, which
            # torchtune's recipes call once the base and LoRA weights are initialized.
            model = build_model()
            with torch.no_grad():
                for m in model.modules():
                    if hasattr(m, "initialize_dora_magnitude"):
                        m.initialize_dora_magnitude()
            return model

        return build

    lora = dict(lora_attn_modules=["q_proj", "v_proj", "output_proj"], apply_lora_to_mlp=True, lora_rank=4,
                lora_alpha=8.0)
    return {
        "llama2": component("llama2", "llama2", **_DECODER, intermediate_dim=64),
        "llama3": component("llama3", "llama3", **_DECODER, intermediate_dim=64),
        "llama3_1": component("llama3_1", "llama3_1", **_DECODER, intermediate_dim=64),
        "llama3_2": component("llama3_2", "llama3_2", **_DECODER, intermediate_dim=64),
        "lora_llama3_2": component("llama3_2", "lora_llama3_2", **_DECODER, intermediate_dim=64, **lora),
        "dora_llama3": dora("llama3", "lora_llama3", **_DECODER, intermediate_dim=64, **lora),
        "llama2_classifier": component("llama2", "llama2_classifier", num_classes=3, **_DECODER, intermediate_dim=64),
        "mistral": component("mistral", "mistral", **_DECODER, intermediate_dim=64),
        "gemma": component("gemma", "gemma", **_DECODER, head_dim=8, intermediate_dim=64),
        "gemma2": component("gemma2", "gemma2", **_DECODER, head_dim=8, intermediate_dim=64, sliding_window_size=16),
        "qwen2": component("qwen2", "qwen2", **_DECODER, intermediate_dim=64, tie_word_embeddings=True),
        "phi3": component("phi3", "phi3", **_DECODER, intermediate_dim=64),
        "t5_encoder": component("t5", "t5_encoder", embed_dim=32, mlp_dim=64, num_heads=4, head_dim=8, num_layers=2,
                                rel_pos_num_buckets=8, rel_pos_max_dist=16, vocab_size=128, norm_eps=1e-6,
                                max_seq_len=64),
        "flux_1_autoencoder": component("flux", "flux_1_autoencoder", resolution=32, ch_base=32, ch_mults=[1, 1],
                                        ch_z=4, n_layers_per_resample_block=1),
    }


def _shrink(config: Any, layers: int, max_seq_len: int) -> Any:
    """A torchtitan model config with at most ``layers`` blocks per layer list and short RoPE tables."""
    if isinstance(config, list):
        return [_shrink(c, layers, max_seq_len) for c in config]
    if isinstance(config, dict):
        return {k: _shrink(v, layers, max_seq_len) for k, v in config.items()}
    if not dataclasses.is_dataclass(config) or isinstance(config, type):
        return config
    changes = {}
    for field in dataclasses.fields(config):
        value = getattr(config, field.name)
        if field.name == "max_seq_len" and isinstance(value, int):
            changes[field.name] = min(value, max_seq_len)
        elif field.name in ("layers", "double_blocks", "single_blocks") and isinstance(value, list):
            changes[field.name] = _shrink(value[:layers], layers, max_seq_len)
        elif dataclasses.is_dataclass(value) or isinstance(value, (list, dict)):
            changes[field.name] = _shrink(value, layers, max_seq_len)
    return dataclasses.replace(config, **changes) if changes else config


def torchtitan_zoo() -> dict[str, ModelFn]:
    def family(module: str, flavor: str) -> ModelFn:
        def build() -> torch.nn.Module:
            spec = importlib.import_module(f"torchtitan.models.{module}").model_registry(flavor)
            model = _shrink(spec.model, layers=2, max_seq_len=256).build()
            with torch.no_grad():
                model.init_weights(buffer_device=None)
            return model

        return build

    importlib.import_module("torchtitan.models.llama3")  # fail here, once, when torchtitan does not import
    return {
        "llama3 (debugmodel)": family("llama3", "debugmodel"),
        "qwen3 (debugmodel)": family("qwen3", "debugmodel"),
        "deepseek_v3 (debugmodel, MoE)": family("deepseek_v3", "debugmodel"),
        "gpt_oss (debugmodel, MoE)": family("gpt_oss", "debugmodel"),
        "kimi_k2_7 (debugmodel, MoE)": family("kimi_k2_7", "debugmodel"),
        "flux (flux-debug)": family("flux", "flux-debug"),
    }


if __name__ == "__main__":
    sys.exit(main({"torchtune": torchtune_zoo, "torchtitan": torchtitan_zoo}, __doc__.splitlines()[0]))
