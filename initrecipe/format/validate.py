"""Structural checks on decoded msgpack values: each returns the value when it has the expected
type and range, and raises a :class:`~initrecipe.RecipeFormatError` naming its location otherwise."""

from __future__ import annotations

import math
from typing import Any

import torch

from initrecipe.errors import RecipeFormatError
from initrecipe.format.spec import MAX_BYTES_PER_TENSOR, MAX_DIMS, MAX_ID, MAX_STRING_CHARS
from initrecipe.program.ir import dtype_from_name


def type_name(value: object) -> str:
    """The msgpack type of a decoded value, as messages name it (``nil``, ``integer``, ``map``, ...)."""
    if value is None:
        return "nil"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        return "string"
    if isinstance(value, (bytes, bytearray)):
        return "bytes"
    if isinstance(value, list):
        return "list"
    if isinstance(value, dict):
        return "map"
    return type(value).__name__


def expect(value: object, types: type | tuple[type, ...], where: str, what: str) -> Any:
    """``value`` if it is of ``types`` (a bool counts only where ``types`` names bool); else a
    :class:`RecipeFormatError` saying that ``where`` expected ``what``."""
    if isinstance(value, bool) and bool not in (types if isinstance(types, tuple) else (types,)):
        raise RecipeFormatError(f"{where}: expected {what}, found bool")
    if not isinstance(value, types):
        raise RecipeFormatError(f"{where}: expected {what}, found {type_name(value)}")
    return value


def expect_int(value: object, where: str, *, lo: int = 0, hi: int | None = MAX_ID) -> int:
    """``value`` if it is an integer in ``[lo, hi]`` (``hi`` None: no upper bound)."""
    expect(value, int, where, "an integer")
    if value < lo or (hi is not None and value > hi):
        bound = f"[{lo}, {hi}]" if hi is not None else f">= {lo}"
        raise RecipeFormatError(f"{where}: integer {value} out of range {bound}")
    return value


def expect_str(value: object, where: str, what: str = "a string") -> str:
    """``value`` if it is a string of at most :data:`MAX_STRING_CHARS` characters."""
    expect(value, str, where, what)
    if len(value) > MAX_STRING_CHARS:
        raise RecipeFormatError(f"{where}: a string of {len(value)} characters (at most {MAX_STRING_CHARS})")
    return value


def short(value: object) -> str:
    """``repr(value)``, cut to 60 characters for a message."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def decode_dtype(value: object, where: str) -> torch.dtype:
    """The dtype a recipe names ``value``."""
    try:
        return dtype_from_name(value)
    except (KeyError, TypeError):
        raise RecipeFormatError(f"{where}: unknown dtype {short(value)}") from None


def decode_shape(value: object, where: str, dtype: torch.dtype | None = None) -> tuple[int, ...]:
    """A shape (a list of at most :data:`MAX_DIMS` sizes) whose data, of ``dtype``, a machine can address."""
    expect(value, list, where, "a shape (list of integers)")
    if len(value) > MAX_DIMS:
        raise RecipeFormatError(f"{where}: {len(value)} dimensions (at most {MAX_DIMS})")
    shape = tuple(expect_int(d, f"{where}[{i}]") for i, d in enumerate(value))
    nbytes = math.prod(shape) * (dtype.itemsize if dtype is not None else 1)
    if nbytes > MAX_BYTES_PER_TENSOR:
        raise RecipeFormatError(
            f"{where}: shape {short(list(shape))} holds {math.prod(shape)} elements, more than any machine can address"
        )
    return shape
