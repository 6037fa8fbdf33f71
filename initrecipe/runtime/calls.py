"""One call of a program run on real tensors: its arguments resolved, its operator invoked, a
failure reported against its instruction; and the constant tensor of a :class:`Literal`."""

from __future__ import annotations

from typing import Any

import torch

from initrecipe.analysis.infer import recipe_defaults
from initrecipe.errors import ReplayError
from initrecipe.program.ir import Call, GenRef, Literal, Ref
from initrecipe.program.operators import OpInfo
from initrecipe.program.walk import map_arg
from initrecipe.support.display import failure_detail

__all__ = ["literal_tensor", "resolve_arg", "call_op"]


def literal_tensor(ins: Literal) -> torch.Tensor:
    """The constant tensor a :class:`Literal` instruction holds."""
    if not ins.data:
        return torch.empty(ins.shape, dtype=ins.dtype)
    flat = torch.frombuffer(bytearray(ins.data), dtype=ins.dtype)
    return flat.reshape(ins.shape)


def resolve_arg(value: object, env: dict[int, torch.Tensor], generator: torch.Generator | None) -> Any:
    """An argument with its tensor references replaced by their tensors and generators by ``generator``."""
    return map_arg(value, (Ref, GenRef), lambda leaf: env[leaf.id] if isinstance(leaf, Ref) else generator)


def call_op(ins: Call, info: OpInfo, args: list[Any], kwargs: dict[str, Any], generator: torch.Generator | None,
            where: str) -> Any:
    """Invoke a call's operator, passing ``generator`` to a random operator."""
    if info.is_random and info.generator_arg not in kwargs:
        if info.arg_names.index(info.generator_arg) >= len(args):
            kwargs[info.generator_arg] = generator
    try:
        if torch.get_default_dtype() is not torch.float32:
            with recipe_defaults():
                return info.op(*args, **kwargs)
        return info.op(*args, **kwargs)
    except Exception as exc:
        raise ReplayError(f"{where}: `{ins.op}` failed: {failure_detail(exc)}") from None
