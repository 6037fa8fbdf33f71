"""Decoding a recipe's ``tensors`` table: names, values, kinds, shapes, dtypes and flags checked,
tied names checked against each other (``schema/FORMAT.md`` section 6)."""

from __future__ import annotations

from typing import Any

from initrecipe.errors import RecipeFormatError
from initrecipe.format.instructions import ArgDecoder
from initrecipe.format.recipe import TensorEntry
from initrecipe.format.spec import MAX_BYTES_PER_TENSOR, MAX_DIMS, MAX_STRING_CHARS, MAX_TENSORS, TENSOR_KINDS
from initrecipe.format.validate import decode_dtype, decode_shape, expect, expect_int, expect_str, short
from initrecipe.program.ir import DTYPES, dtype_name


def decode_tensors(raw: Any, dec: ArgDecoder) -> list[TensorEntry]:
    """The ``tensors`` table; ``dec`` knows the values the program defines."""
    tensors_raw = expect(raw, list, "tensors", "a list of tensor entries")
    if len(tensors_raw) > MAX_TENSORS:
        raise RecipeFormatError(f"tensors: {len(tensors_raw)} entries (at most {MAX_TENSORS})")
    tensors: list[TensorEntry] = []
    by_name: dict[str, int] = {}
    by_value: dict[int, int] = {}
    for i, item in enumerate(tensors_raw):
        entry = _fast_entry(item, dec, by_name, by_value, tensors)
        if entry is not None:
            by_name[entry.name] = i
            by_value.setdefault(entry.value, i)
        else:
            entry = _checked_entry(item, i, dec, by_name, by_value, tensors)
        tensors.append(entry)
    return tensors


def _checked_entry(item: Any, i: int, dec: ArgDecoder, by_name: dict[str, int], by_value: dict[int, int],
                   tensors: list[TensorEntry]) -> TensorEntry:
    """Tensor entry ``i``, checked field by field (and against the entry it is tied to), reporting
    the first problem; ``by_name`` and ``by_value`` index the entries decoded so far."""
    where = f"tensors[{i}]"
    expect(item, list, where, "a tensor entry (a list)")
    if len(item) != 7:
        raise RecipeFormatError(f"{where}: a tensor entry has 7 fields, found {len(item)}")
    name = expect_str(item[0], f"{where}.name")
    if not name:
        raise RecipeFormatError(f"{where}.name: empty tensor name")
    if name in by_name:
        raise RecipeFormatError(f"{where}.name: `{name}` is listed twice (also tensors[{by_name[name]}])")
    by_name[name] = i
    where = f"tensors[{i}] (`{name}`)"
    value = expect_int(item[1], f"{where}.value")
    if value not in dec.defined:
        raise RecipeFormatError(f"{where}.value: value {value} is never defined by the program")
    kind = item[2]
    if not isinstance(kind, str) or kind not in TENSOR_KINDS:
        raise RecipeFormatError(f"{where}.kind: expected `parameter` or `buffer`, found {short(kind)}")
    dtype = decode_dtype(item[4], f"{where}.dtype")
    shape = decode_shape(item[3], f"{where}.shape", dtype)
    requires_grad = expect(item[5], bool, f"{where}.requires_grad", "a bool")
    persistent = expect(item[6], bool, f"{where}.persistent", "a bool")
    if kind == "buffer" and requires_grad:
        raise RecipeFormatError(f"{where}.requires_grad: a buffer never requires gradients")
    if kind == "parameter" and not persistent:
        raise RecipeFormatError(f"{where}.persistent: a parameter is always persistent")
    if kind == "parameter" and requires_grad and not (dtype.is_floating_point or dtype.is_complex):
        raise RecipeFormatError(
            f"{where}.requires_grad: a {dtype_name(dtype)} parameter cannot require gradients "
            "(only floating point and complex ones can)"
        )
    entry = TensorEntry(name, value, kind, shape, dtype, requires_grad, persistent)
    first = by_value.get(value)
    if first is not None:
        _check_tie(entry, tensors[first], where)
    else:
        by_value[value] = i
    return entry


def _check_tie(entry: TensorEntry, other: TensorEntry, where: str) -> None:
    """An entry tied to an earlier one (the same value) must agree with it on kind, shape, dtype
    and, for parameters, ``requires_grad``."""
    for field_name, mine, theirs in (
        ("kind", entry.kind, other.kind),
        ("shape", list(entry.shape), list(other.shape)),
        ("dtype", dtype_name(entry.dtype), dtype_name(other.dtype)),
    ) + ((("requires_grad", entry.requires_grad, other.requires_grad),) if entry.kind == "parameter" else ()):
        if mine != theirs:
            raise RecipeFormatError(
                f"{where}.{field_name}: tied to `{other.name}` (both are value {entry.value}), which has "
                f"{field_name} {theirs}, but this entry has {mine}"
            )


def _fast_entry(item: Any, dec: ArgDecoder, by_name: dict[str, int], by_value: dict[int, int],
                tensors: list[TensorEntry]) -> TensorEntry | None:
    """A tensor entry that is plainly valid, decoded without building location strings; None for
    anything else, which :func:`decode_tensors` then checks field by field and reports."""
    if type(item) is not list or len(item) != 7:
        return None
    name, value, kind, shape, dtype_name_, requires_grad, persistent = item
    if (type(name) is not str or not name or len(name) > MAX_STRING_CHARS or name in by_name
            or type(value) is not int or value not in dec.defined or type(shape) is not list
            or len(shape) > MAX_DIMS or type(requires_grad) is not bool or type(persistent) is not bool
            or type(dtype_name_) is not str or dtype_name_ not in DTYPES):
        return None
    if kind == "parameter":
        dtype = DTYPES[dtype_name_]
        if not persistent or (requires_grad and not (dtype.is_floating_point or dtype.is_complex)):
            return None
    elif kind == "buffer":
        if requires_grad:
            return None
        dtype = DTYPES[dtype_name_]
    else:
        return None
    numel = 1
    for d in shape:
        if type(d) is not int or d < 0:
            return None
        numel *= d
    if numel * dtype.itemsize > MAX_BYTES_PER_TENSOR:
        return None
    entry = TensorEntry(name, value, kind, tuple(shape), dtype, requires_grad, persistent)
    first = by_value.get(value)
    if first is not None:
        other = tensors[first]
        if (other.kind != kind or other.shape != entry.shape or other.dtype != dtype
                or (kind == "parameter" and other.requires_grad != requires_grad)):
            return None
    return entry
