"""The structural checks of one call, before and around its run on the meta device.

* :func:`verify_call`: the operator overload is a tensor operator recipes may call, its arguments
  are of the kinds its schema names (torch takes an integer where an enum is expected on trust),
  and its generators and portable stream keys agree with the recipe;
* :func:`verify_meta_arguments`: on the meta arguments, what torch's meta kernels do not check
  (an ``as_strided`` view reaching outside its storage, a list of outputs of the wrong length,
  the operators' preconditions: :mod:`initrecipe.analysis.preconditions`);
* :func:`check_view_bounds` (every view the call makes lies inside its storage) and
  :func:`check_scalar_arguments` (the number arguments of an operator not run on meta).
"""

from __future__ import annotations

from typing import Any

import torch

from initrecipe.analysis.preconditions import PRECONDITION_CHECKS
from initrecipe.errors import RecipeFormatError
from initrecipe.program.generators import generator_of
from initrecipe.program.ir import Call, GenRef, PortableKey
from initrecipe.program.operators import PRECONDITIONS, RANDOM_OPERATORS, OpInfo
from initrecipe.program.walk import arg_at, call_leaves
from initrecipe.rng.portable.semantics import portable_key_of

__all__ = ["verify_call", "verify_meta_arguments", "check_view_bounds", "check_scalar_arguments"]

_TENSOR_RETURNS = frozenset({"Tensor", "List[Tensor]", "Optional[Tensor]"})
_ENUM_ARGS: dict[str, tuple[type, ...]] = {
    "ScalarType": (torch.dtype,),
    "Layout": (torch.layout,),
    "MemoryFormat": (torch.memory_format,),
    "Device": (torch.device,),
    "Generator": (GenRef, PortableKey),
}
_UNSAFE_ARG_TYPES = ("t", "List[t]", "AnyEnumType", "Dict[")
_ENUM_KINDS = frozenset(k for name in _ENUM_ARGS for k in (name, f"Optional[{name}]"))
_ENUM_VALUES = (torch.dtype, torch.layout, torch.memory_format, torch.device, GenRef, PortableKey)


_SIGNATURES: dict[str, tuple[str | None, tuple[tuple[str, str], ...]]] = {}
_PACKETS: dict[str, str] = {}


def _packet(op: str) -> str:
    """The operator name of an ``aten.<name>.<overload>`` string (cached)."""
    found = _PACKETS.get(op)
    if found is None:
        found = _PACKETS[op] = op.split(".")[1]
    return found


def _signature(info: OpInfo) -> tuple[str | None, tuple[tuple[str, str], ...]]:
    """(why the overload cannot be called, or None; (name, type) of each argument), computed once."""
    cached = _SIGNATURES.get(info.name)
    if cached is None:
        schema = info.schema
        problem = None
        if not schema.returns or any(str(r.real_type) not in _TENSOR_RETURNS for r in schema.returns):
            problem = "does not return tensors; recipes call only tensor operators"
        elif "Dimname" in str(schema) or any(
            str(a.real_type).startswith(_UNSAFE_ARG_TYPES) for a in schema.arguments
        ):
            problem = "is an overload recipes cannot call"
        cached = _SIGNATURES[info.name] = (problem, tuple((a.name, str(a.real_type)) for a in schema.arguments))
    return cached


_CALL_SHAPES: dict[str, tuple[int, dict[str, str]]] = {}


def verify_call(i: int, ins: Call, info: OpInfo, generators: int, portable: bool) -> PortableKey | None:
    """Check call ``i`` before anything runs: its overload and argument kinds, the generators it
    names, and how it draws (a random call names a declared generator, or, in a portable recipe,
    a stream key).  Returns its portable stream key, if it has one."""
    _check_call_types(i, ins, info)
    _check_generators(ins, generators, f"program[{i}]")
    if not info.is_random and _packet(ins.op) in RANDOM_OPERATORS:
        raise RecipeFormatError(
            f"program[{i}]: `{ins.op}` draws from the process-wide generator; recipes use the overload "
            "that takes a `generator` argument"
        )
    key = portable_key_of(ins, info)
    if key is not None and not portable:
        raise RecipeFormatError(
            f"program[{i}]: `{ins.op}` draws from a portable stream, but the recipe's rng mode is `torch`"
        )
    if info.is_random and key is None:
        if not isinstance(arg_at(ins, info.arg_names, info.arg_names.index(info.generator_arg)), GenRef):
            raise RecipeFormatError(
                f"program[{i}]: `{ins.op}` is a random operator and needs its `{info.generator_arg}` argument "
                "(a {\"g\": id} value naming the generator it draws from)"
            )
        gen = generator_of(ins, info)
        if not 0 <= gen < generators:
            raise RecipeFormatError(
                f"program[{i}]: `{ins.op}` draws from generator {gen}, which is not declared "
                f"(the recipe declares {generators})"
            )
    return key


def _check_call_types(i: int, ins: Call, info: OpInfo) -> None:
    """Refuse overloads that are not tensor operators, and arguments of the wrong kind where torch
    would take them on trust (an integer where an enum is expected reaches C++ unchecked)."""
    problem, arguments = _signature(info)
    if problem is not None:
        raise RecipeFormatError(f"program[{i}]: `{ins.op}` {problem}")
    if len(ins.args) > len(arguments):
        raise RecipeFormatError(
            f"program[{i}]: `{ins.op}` takes at most {len(arguments)} arguments, the recipe passes {len(ins.args)}"
        )
    shape = _CALL_SHAPES.get(info.name)
    if shape is None:
        shape = _CALL_SHAPES[info.name] = (sum(1 for a in info.schema.arguments if not a.kwarg_only), dict(arguments))
    positional, by_name = shape
    if len(ins.args) > positional:
        name = arguments[positional][0]
        raise RecipeFormatError(
            f"program[{i}]: `{ins.op}` takes {positional} positional arguments, the recipe passes "
            f"{len(ins.args)}; `{name}` is keyword-only and belongs in kwargs"
        )
    for name in ins.kwargs:
        if name not in by_name:
            raise RecipeFormatError(f"program[{i}].kwargs.{name}: `{ins.op}` has no argument `{name}`")
    for pos, value in enumerate(ins.args):
        arg_name, kind = arguments[pos]
        _check_argument_kind(i, ins, pos, arg_name, kind, value)
    for name, value in ins.kwargs.items():
        _check_argument_kind(i, ins, name, name, by_name[name], value)


def _check_argument_kind(i: int, ins: Call, where: int | str, arg_name: str, kind: str, value: object) -> None:
    if kind not in _ENUM_KINDS:
        if isinstance(value, _ENUM_VALUES):
            raise RecipeFormatError(
                f"program[{i}].{_where(where)}: `{ins.op}` expects a {kind} for `{arg_name}`, found "
                f"{type(value).__name__}"
            )
        return
    optional = kind.startswith("Optional[")
    if value is None and optional:
        return
    base = kind[len("Optional["):-1] if optional else kind
    if not isinstance(value, _ENUM_ARGS[base]):
        raise RecipeFormatError(
            f"program[{i}].{_where(where)}: `{ins.op}` expects a {base} for `{arg_name}`, found "
            f"{type(value).__name__} {value!r:.40}"
        )


def _where(key: int | str) -> str:
    return f"args[{key}]" if isinstance(key, int) else f"kwargs.{key}"


def _check_generators(ins: Call, generators: int, where: str) -> None:
    for gen in call_leaves(ins, GenRef):
        if gen.id >= generators:
            raise RecipeFormatError(f"{where}: generator {gen.id} is not declared")


def verify_meta_arguments(i: int, ins: Call, info: OpInfo, args: list[Any], kwargs: dict[str, Any]) -> None:
    """Check call ``i`` on its meta arguments, before its meta outputs are computed: what torch's
    meta kernels leave unchecked or would take too long to find."""
    if info.data_dependent_shape and ins.out_meta is None:
        raise RecipeFormatError(
            f"program[{i}]: `{ins.op}` has a data-dependent output shape and needs `out_meta`"
        )
    name = _packet(ins.op)
    if name.startswith("as_strided") and args and isinstance(args[0], torch.Tensor):
        _check_as_strided(i, ins, info, args, kwargs)
    count = _list_output_count(name, info, args, kwargs)
    if count is not None and count != len(ins.outs):
        raise RecipeFormatError(
            f"program[{i}]: `{ins.op}` returns {count} values, the program binds {len(ins.outs)}"
        )
    precondition = PRECONDITIONS.get(name)
    if precondition is not None:
        problem = PRECONDITION_CHECKS[precondition](args, kwargs)
        if problem is not None:
            raise RecipeFormatError(f"program[{i}]: `{ins.op}` rejects its arguments: {problem}")


def _list_output_count(name: str, info: OpInfo, args: list[Any], kwargs: dict[str, Any]) -> int | None:
    """How many tensors a list-returning view operator returns, computed without running it (a
    zero-byte tensor of shape [2**40, 0] unbinds into 2**40 tensors, even on meta)."""
    if name not in ("unbind", "unbind_copy", "chunk", "split", "split_copy"):
        return None

    def get(argument: str, default: object) -> object:
        if argument not in info.arg_names:
            return default
        pos = info.arg_names.index(argument)
        return args[pos] if pos < len(args) else kwargs.get(argument, default)

    base, dim = get("self", None), get("dim", 0)
    if not isinstance(base, torch.Tensor) or type(dim) is not int or not -base.dim() <= dim < max(base.dim(), 1):
        return None
    n = base.shape[dim] if base.dim() else 1
    if name in ("unbind", "unbind_copy"):
        return n
    if name == "chunk":
        chunks = get("chunks", None)
        if type(chunks) is not int or chunks <= 0:
            return None
        if n == 0:
            return chunks
        step = -(-n // chunks)
        return -(-n // step)
    size = get("split_size", None)
    if type(size) is not int or size <= 0:
        return None
    return -(-n // size) if n else 1


def _strided_extent(shape: object, stride: object, offset: object) -> int | None:
    """Elements of storage a strided view needs (0 for an empty view); None when not computable."""
    if not isinstance(shape, (list, tuple)) or not isinstance(stride, (list, tuple)) or len(shape) != len(stride):
        return None
    if not all(type(v) is int for v in list(shape) + list(stride)) or type(offset) is not int:
        return None
    if any(s == 0 for s in shape):
        return 0
    return offset + sum((s - 1) * st for s, st in zip(shape, stride)) + 1


def check_view_bounds(i: int, ins: Call, value: int, out: torch.Tensor) -> None:
    """A view must lie inside its storage: torch does not check every view operator on every device."""
    offset = out.storage_offset()
    dense_end = (offset + out.numel()) * out.dtype.itemsize
    if out.is_contiguous() and offset >= 0 and dense_end <= out.untyped_storage().nbytes():
        return  # the common case: a dense view inside its storage
    extent = _strided_extent(tuple(out.shape), tuple(out.stride()), out.storage_offset())
    if extent is None or extent == 0:
        return
    if out.storage_offset() < 0 or any(st < 0 for st in out.stride()):
        raise RecipeFormatError(f"program[{i}]: `{ins.op}` makes view {value} with a negative stride or offset")
    need = extent * out.dtype.itemsize
    have = out.untyped_storage().nbytes()
    if need > have:
        raise RecipeFormatError(
            f"program[{i}]: `{ins.op}` makes view {value} (shape {list(out.shape)}, stride {list(out.stride())}, "
            f"offset {out.storage_offset()}) reach byte {need} of a storage of {have} bytes: "
            "views must lie inside their base's storage"
        )


def _check_as_strided(i: int, ins: Call, info: OpInfo, args: list[Any], kwargs: dict[str, Any]) -> None:
    base = args[0]
    names = info.arg_names
    values = {}
    for key in ("size", "stride", "storage_offset"):
        if key in names:
            pos = names.index(key)
            values[key] = args[pos] if pos < len(args) else kwargs.get(key)
    offset = values.get("storage_offset")
    if offset is None:
        offset = base.storage_offset()
    extent = _strided_extent(values.get("size"), values.get("stride"), offset)
    if extent is None or extent == 0:
        return
    have = base.untyped_storage().nbytes()
    if type(offset) is int and offset < 0 or any(type(st) is int and st < 0 for st in values.get("stride") or ()):
        raise RecipeFormatError(f"program[{i}]: `{ins.op}` asks for a negative stride or storage offset")
    if extent * base.dtype.itemsize > have:
        raise RecipeFormatError(
            f"program[{i}]: `{ins.op}` asks for a view (size {list(values.get('size'))}, stride "
            f"{list(values.get('stride'))}, offset {offset}) reaching byte {extent * base.dtype.itemsize} of a "
            f"storage of {have} bytes: views must lie inside their base's storage"
        )


def check_scalar_arguments(i: int, ins: Call, info: OpInfo, args: list[Any], kwargs: dict[str, Any]) -> None:
    """Check the number arguments of an operator that is not executed on meta."""
    for pos, argument in enumerate(info.schema.arguments[1:], start=1):
        if pos < len(args) and argument.name in kwargs:
            raise RecipeFormatError(
                f"program[{i}]: `{ins.op}` rejects its arguments: `{argument.name}` is given twice"
            )
        if pos < len(args):
            value = args[pos]
        elif argument.name in kwargs:
            value = kwargs[argument.name]
        else:
            continue
        kind = str(argument.type)
        if kind in ("float", "int") and (isinstance(value, bool) or not isinstance(value, (int, float))):
            raise RecipeFormatError(
                f"program[{i}]: `{ins.op}` rejects its arguments: `{argument.name}` must be a number, "
                f"found {type(value).__name__}"
            )
        if kind == "int" and not isinstance(value, int):
            raise RecipeFormatError(
                f"program[{i}]: `{ins.op}` rejects its arguments: `{argument.name}` must be an integer"
            )
