"""Planning a Hugging Face style checkpoint folder from a recipe alone: which tensors are stored
under which names, which shard file holds each, the index, the ``config.json`` beside them, and
which files of an earlier checkpoint are there."""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch

from initrecipe.errors import RecipeError
from initrecipe.export.safetensors_writer import SAFETENSORS_DTYPES, TensorSpec
from initrecipe.format.recipe import Recipe, TensorEntry

__all__ = ["WEIGHTS_NAME", "WEIGHTS_INDEX_NAME", "CONFIG_NAME", "StoredTensor", "ShardPlan", "stored_tensors",
           "plan_shards", "index_bytes", "existing_outputs", "config_bytes"]

WEIGHTS_NAME = "model.safetensors"
WEIGHTS_INDEX_NAME = "model.safetensors.index.json"
CONFIG_NAME = "config.json"
_SHARD_RE = re.compile(r"model-\d{5}-of-\d{5}\.safetensors")


@dataclass(frozen=True)
class StoredTensor:
    """One tensor as it goes to disk: the name kept, the value it replays, its output dtype."""

    name: str
    value: int
    spec: TensorSpec
    is_parameter: bool


@dataclass(frozen=True)
class ShardPlan:
    """Which file holds which tensor, computed from the recipe alone."""

    files: dict[str, list[str]]  # file name -> stored tensor names, in recipe order
    weight_map: dict[str, str]  # stored tensor name -> file name
    total_size: int
    total_parameters: int

    @property
    def is_sharded(self) -> bool:
        return len(self.files) > 1


def stored_tensors(recipe: Recipe, dtype: torch.dtype | None) -> list[StoredTensor]:
    """Each distinct persistent tensor once, under its first persistent name in recipe order.

    This keeps the name ``transformers``' ``save_pretrained`` keeps for tied weights (the source,
    e.g. ``model.embed_tokens.weight``; ``lm_head.weight`` is dropped and re-tied on load), and
    leaves out non-persistent buffers, as ``state_dict()`` does.
    """
    first: dict[int, TensorEntry] = {}
    is_param: dict[int, bool] = {}
    for entry in recipe.tensors:
        if not entry.persistent:
            continue
        first.setdefault(entry.value, entry)
        is_param[entry.value] = is_param.get(entry.value, False) or entry.kind == "parameter"
    stored = []
    for value, entry in first.items():
        out = dtype if dtype is not None and entry.dtype.is_floating_point else entry.dtype
        if out not in SAFETENSORS_DTYPES:
            raise RecipeError(f"`{entry.name}` has dtype {entry.dtype}, which safetensors cannot store")
        stored.append(StoredTensor(entry.name, value, TensorSpec(entry.name, out, entry.shape), is_param[value]))
    return stored


def plan_shards(stored: Sequence[StoredTensor], max_shard_size: int) -> ShardPlan:
    """Greedy sharding in recipe order, exactly as ``huggingface_hub.split_torch_state_dict_into_shards``.

    A tensor bigger than ``max_shard_size`` gets a shard of its own; otherwise a new shard starts
    when the next tensor would overflow the current one.
    """
    shards: list[list[str]] = []
    current: list[str] = []
    current_size = 0
    total = 0
    for s in stored:
        size = s.spec.nbytes
        total += size
        if size > max_shard_size:
            shards.append([s.name])
            continue
        if current_size + size > max_shard_size:
            shards.append(current)
            current, current_size = [], 0
        current.append(s.name)
        current_size += size
    if current or not shards:
        shards.append(current)
    n = len(shards)
    files: dict[str, list[str]] = {}
    for i, names in enumerate(shards):
        fname = WEIGHTS_NAME if n == 1 else f"model-{i + 1:05d}-of-{n:05d}.safetensors"
        files[fname] = names
    weight_map = {name: fname for fname, names in files.items() for name in names}
    params = sum(s.spec.nbytes // s.spec.dtype.itemsize for s in stored if s.is_parameter)
    return ShardPlan(files=files, weight_map=weight_map, total_size=total, total_parameters=params)


def existing_outputs(out_dir: Path, with_config: bool) -> list[str]:
    """The checkpoint files (weights, shards, index; ``config.json`` too ``with_config``) in ``out_dir``."""
    if not out_dir.is_dir():
        return []
    found = []
    for name in sorted(os.listdir(out_dir)):
        if name in (WEIGHTS_NAME, WEIGHTS_INDEX_NAME) or _SHARD_RE.fullmatch(name) or (with_config and name == CONFIG_NAME):
            found.append(name)
    return found


def config_bytes(config: str | os.PathLike, dtype: torch.dtype | None) -> bytes:
    """The config.json to write: the file as is, or with its ``dtype`` set to the cast dtype."""
    path = Path(config)
    if path.is_dir():
        path = path / CONFIG_NAME
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise RecipeError(f"config file `{path}` does not exist") from None
    except OSError as exc:
        raise RecipeError(f"cannot read config file `{path}`: {exc.strerror or exc}") from None
    try:
        doc = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise RecipeError(f"config file `{path}` is not valid JSON ({exc})") from None
    if not isinstance(doc, dict):
        raise RecipeError(f"config file `{path}` is not a JSON object; expected a transformers config.json")
    if dtype is None:
        return data
    # What save_pretrained writes for a model in that dtype, so that dtype="auto" loads it as stored.
    name = str(dtype).removeprefix("torch.")
    doc["dtype"] = name
    if "torch_dtype" in doc:
        doc["torch_dtype"] = name
    return (json.dumps(doc, indent=2, sort_keys=True) + "\n").encode("utf-8")



def index_bytes(plan: ShardPlan) -> bytes:
    """The ``model.safetensors.index.json`` of a sharded checkpoint."""
    index = {
        "metadata": {"total_parameters": plan.total_parameters, "total_size": plan.total_size},
        "weight_map": plan.weight_map,
    }
    return (json.dumps(index, indent=2, sort_keys=True) + "\n").encode("utf-8")
