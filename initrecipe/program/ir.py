"""The instructions of an init program and the values their arguments can hold.

A recipe's program is a straight-line list of instructions over numbered tensor values:

* :class:`Call` runs one allowlisted ATen operator;
* :class:`Literal` creates a small constant tensor from bytes the program itself contains;
* :class:`RngSeed`, :class:`RngSetState` and :class:`RngRestore` position a random generator.

Arguments are plain Python scalars, lists, ``None``, strings, the torch enums (``torch.dtype``,
``torch.device``, ``torch.layout``, ``torch.memory_format``), :class:`Ref` (a tensor value),
:class:`GenRef` (a generator) and, in ``portable`` recipes, :class:`PortableKey` (the counter-based
stream a random call draws from instead of a generator).  :mod:`initrecipe.program.walk` traverses
them; :class:`Ref` and :class:`GenRef` are ``NamedTuple`` classes, but values to it, not containers.
"""

from __future__ import annotations

import ctypes
import sys
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Union

import torch

__all__ = [
    "Ref",
    "GenRef",
    "PortableKey",
    "Call",
    "Literal",
    "RngSeed",
    "RngSetState",
    "RngRestore",
    "Instruction",
    "DTYPES",
    "dtype_name",
    "dtype_from_name",
    "tensor_bytes",
    "little_endian_view",
]


class Ref(NamedTuple):
    """A reference to tensor value number ``id``."""

    id: int


class GenRef(NamedTuple):
    """A reference to random generator number ``id`` (0 is torch's default CPU generator)."""

    id: int


@dataclass(frozen=True, slots=True)
class PortableKey:
    """The portable stream a random call draws from: position ``position`` of tensor ``stream``.

    Replay derives the Philox key from the recipe's seed, ``stream`` (the fully qualified name of
    the tensor the draw flows into) and ``position`` (the draw's ordinal among that tensor's
    draws); see ``schema/PORTABLE_RNG.md``.
    """

    stream: str
    position: int


@dataclass(slots=True)
class Call:
    """Run ``op`` (an ``aten.<name>.<overload>`` string) and bind its tensor outputs to ``outs``.

    ``outs[i]`` is the value id bound to the operator's i-th returned tensor (flattened when the
    operator returns a list), or ``None`` for a non-tensor return.  ``out_meta`` is present only
    for operators whose output shape depends on data (``nonzero``): each tensor output's dtype and
    shape as seen at record time, which replay checks.
    """

    op: str
    outs: tuple[int | None, ...]
    args: tuple[Any, ...]
    kwargs: dict[str, Any] = field(default_factory=dict)
    out_meta: tuple[tuple[torch.dtype, tuple[int, ...]], ...] | None = None


@dataclass(slots=True)
class Literal:
    """Bind value ``out`` to a constant tensor: ``dtype``, ``shape`` and little-endian row-major ``data``."""

    out: int
    dtype: torch.dtype
    shape: tuple[int, ...]
    data: bytes


@dataclass(slots=True)
class RngSeed:
    """Seed generator ``gen`` as ``torch.Generator.manual_seed(seed)`` does."""

    gen: int
    seed: int


@dataclass(slots=True)
class RngSetState:
    """Set generator ``gen`` to a full state, as ``torch.Generator.set_state(state)`` does."""

    gen: int
    state: bytes


@dataclass(slots=True)
class RngRestore:
    """Set generator ``gen`` back to its state right after instruction number ``after`` ran."""

    gen: int
    after: int


Instruction = Union[Call, Literal, RngSeed, RngSetState, RngRestore]

DTYPES: dict[str, torch.dtype] = {
    "float64": torch.float64,
    "float32": torch.float32,
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
    "complex128": torch.complex128,
    "complex64": torch.complex64,
    "int64": torch.int64,
    "int32": torch.int32,
    "int16": torch.int16,
    "int8": torch.int8,
    "uint8": torch.uint8,
    "bool": torch.bool,
}
_DTYPE_NAMES = {v: k for k, v in DTYPES.items()}


def dtype_name(dtype: torch.dtype) -> str:
    """The recipe name of a dtype (``"float32"``); ``ValueError`` for a dtype recipes cannot hold."""
    try:
        return _DTYPE_NAMES[dtype]
    except KeyError:
        raise ValueError(f"dtype `{dtype}` is not supported in recipes") from None


def dtype_from_name(name: str) -> torch.dtype:
    """The dtype a recipe name stands for; ``KeyError`` for an unknown name."""
    return DTYPES[name]


def tensor_bytes(tensor: torch.Tensor) -> bytes:
    """The bytes of a CPU tensor's elements, row-major, little-endian (no numpy needed)."""
    view, _owner = little_endian_view(tensor.detach().contiguous())
    return view.tobytes()


def little_endian_view(tensor: torch.Tensor) -> tuple[memoryview, torch.Tensor]:
    """A zero-copy byte view of a contiguous CPU tensor's elements, little-endian (a byte-swapped
    copy's on a big-endian machine), and the tensor that owns those bytes: keep it while the view lives."""
    if sys.byteorder != "little" and tensor.element_size() > 1:
        tensor = tensor.view(torch.uint8).view(-1, tensor.element_size()).flip(1).contiguous()
    n = tensor.numel() * tensor.element_size()
    raw = (ctypes.c_ubyte * n).from_address(tensor.data_ptr())
    return memoryview(raw).cast("B"), tensor
