"""Hugging Face ``transformers`` glue: build a model constructor from a local ``config.json``.

Nothing here touches the network: the config is read from a local file or folder only.
"""

from __future__ import annotations

import os
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Callable

import torch

from initrecipe.errors import RecipeError

if TYPE_CHECKING:
    from transformers import PretrainedConfig

__all__ = ["model_fn_from_config", "load_config", "INSTALL_HINT"]

INSTALL_HINT = "pip install 'transformers>=5.0,<6'"


def _transformers() -> ModuleType:
    # Imported on use, not with this module: transformers is optional, and a missing one is a
    # RecipeError naming the pip line when a config is read.
    try:
        import transformers
    except ImportError:
        raise RecipeError(
            f"recording from a config.json needs the `transformers` package; install it with: {INSTALL_HINT}"
        ) from None
    return transformers


def load_config(path: str | os.PathLike) -> PretrainedConfig:
    """Read a ``transformers`` config from a local ``config.json`` (or a folder holding one).

    Never downloads: a path that does not exist is an error, not a Hub repository id.
    """
    transformers = _transformers()
    p = Path(path)
    if p.is_dir():
        p = p / "config.json"
    if not p.is_file():
        raise RecipeError(f"config file `{p}` does not exist")
    try:
        # A file path is read as is; local_files_only keeps transformers off the network.
        return transformers.AutoConfig.from_pretrained(str(p), local_files_only=True)
    except (ValueError, OSError, KeyError, TypeError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise RecipeError(f"cannot read `{p}` as a transformers config: {first}") from None


def model_fn_from_config(
    path: str | os.PathLike, auto_class: str = "AutoModelForCausalLM"
) -> Callable[[], torch.nn.Module]:
    """A zero-argument constructor for the model a local ``config.json`` describes.

    Args:
        path: a ``config.json`` file, or a folder holding one.
        auto_class: the ``transformers`` class whose ``from_config`` builds the model
            (``AutoModelForCausalLM``, ``AutoModel``, ``LlamaForCausalLM``, ...).

    Returns:
        ``lambda: getattr(transformers, auto_class).from_config(config)``, for
        :func:`initrecipe.record`.

    Example:
        >>> import initrecipe, json, tempfile, os                     # doctest: +SKIP
        >>> fn = model_fn_from_config("config.json")                  # doctest: +SKIP
        >>> recipe = initrecipe.record(fn, seed=0)                    # doctest: +SKIP
    """
    transformers = _transformers()
    try:
        cls = getattr(transformers, auto_class)
    except AttributeError:
        raise RecipeError(
            f"transformers {transformers.__version__} has no class `{auto_class}`; "
            "pass e.g. --auto-class AutoModelForCausalLM or AutoModel"
        ) from None
    # Auto classes have `from_config`; model classes (LlamaForCausalLM, ...) its twin `_from_config`.
    factory = getattr(cls, "from_config", None) or getattr(cls, "_from_config", None)
    if not callable(factory):
        raise RecipeError(f"`transformers.{auto_class}` cannot build a model from a config; pass an Auto class")
    config = load_config(path)

    def build() -> torch.nn.Module:
        return factory(config)

    build.__name__ = f"{auto_class}.from_config"
    build.__qualname__ = build.__name__
    return build
