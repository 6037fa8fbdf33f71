"""The meta outputs of one call: the tensors it returns, on the meta device, without running it.

:func:`meta_arguments` turns a call's arguments into meta tensors (a factory's ``device`` forced to
meta); :func:`meta_outputs` computes what the call returns: for the common cases without torch's
Python meta kernels (whose first use imports ``torch._dynamo``: ~0.8 s), otherwise by running the
operator on meta, or, for a shape that depends on data, from the recorded ``out_meta`` (checked
against the meta kernel where that can compute it).
"""

from __future__ import annotations

import math
from typing import Any, Callable

import torch

from initrecipe.analysis.verify import check_scalar_arguments
from initrecipe.errors import RecipeFormatError
from initrecipe.program.ir import Call, GenRef, PortableKey, Ref
from initrecipe.program.operators import POINTWISE_OPERATORS, OpInfo
from initrecipe.program.walk import arg_at, map_arg
from initrecipe.rng.portable.semantics import check_draw
from initrecipe.support.display import failure_detail

__all__ = ["META", "meta_arguments", "meta_outputs", "flatten_outputs", "repeat_interleave_output_size"]

META = torch.device("meta")
_MAX_SIZE = 2**63 - 1


def meta_arguments(i: int, ins: Call, info: OpInfo, env: dict[int, torch.Tensor]) -> tuple[list[Any], dict[str, Any]]:
    """Call ``i``'s arguments with every tensor reference replaced by its meta tensor in ``env``,
    every device by meta and every generator by None (the meta run draws nothing); a factory
    call's ``device`` is forced to meta even when the recipe names none (CPU by default)."""
    args = [_to_meta_arg(a, env, lambda: f"program[{i}].args") for a in ins.args]
    kwargs = {k: _to_meta_arg(v, env, lambda k=k: f"program[{i}].kwargs.{k}") for k, v in ins.kwargs.items()}
    if "device" in info.arg_names:
        pos = info.arg_names.index("device")
        if pos < len(args):
            args[pos] = META
        else:
            kwargs["device"] = META
    return args, kwargs


def _to_meta_arg(value: object, env: dict[int, torch.Tensor], where: Callable[[], str]) -> object:
    """``where``: returns the location for messages (called only on error)."""

    def to_meta(leaf: Ref | GenRef | PortableKey | torch.device) -> torch.Tensor | torch.device | None:
        if isinstance(leaf, torch.device):
            return META
        if not isinstance(leaf, Ref):
            return None  # a generator: the meta run draws nothing
        try:
            return env[leaf.id]
        except KeyError:
            raise RecipeFormatError(f"{where()}: reference to undefined tensor {leaf.id}") from None

    return map_arg(value, (Ref, GenRef, PortableKey, torch.device), to_meta)


def flatten_outputs(result: object) -> list[Any]:
    """An operator's returns as a flat list (lists of tensors flattened in place)."""
    if isinstance(result, (list, tuple)):
        flat: list[Any] = []
        for r in result:
            if isinstance(r, (list, tuple)):
                flat.extend(r)
            else:
                flat.append(r)
        return flat
    return [result]


def meta_outputs(i: int, ins: Call, info: OpInfo, args: list[Any], kwargs: dict[str, Any],
                 key: PortableKey | None) -> list[Any]:
    """What call ``i`` returns, on meta, from its meta arguments (``key``: its portable stream key)."""
    if ins.out_meta is not None:
        return _recorded_outputs(i, ins, info, args, kwargs)
    if info.is_random and info.overwrites_self and args and isinstance(args[0], torch.Tensor):
        # An in-place random fill returns its argument unchanged in shape.  (Running it on meta
        # would go through torch._refs, whose first use imports torch._dynamo: ~0.8 s.)
        check_scalar_arguments(i, ins, info, args, kwargs)
        if key is not None:
            check_draw(f"program[{i}]", ins, info, args, kwargs, args[0].dtype)
        return [args[0]]
    arange = _arange_on_meta(i, ins, info, args, kwargs)
    if arange is not None:
        return [arange]
    if info.name == "aten.geqrf.default":
        return _geqrf_on_meta(i, ins, args, kwargs)
    pointwise = _pointwise_on_meta(info, args, kwargs)
    if pointwise is not None:
        return pointwise
    try:
        result = info.op(*args, **kwargs)
    except Exception as exc:  # the op rejected its arguments
        raise RecipeFormatError(f"program[{i}]: `{ins.op}` rejects its arguments: {failure_detail(exc)}") from None
    return flatten_outputs(result)


def _recorded_outputs(i: int, ins: Call, info: OpInfo, args: list[Any], kwargs: dict[str, Any]) -> list[Any]:
    """The outputs of a call with a recorded ``out_meta``: computed on meta and checked against the
    record where the shape is computable (given the recorded size), the record's otherwise."""
    if len(ins.out_meta) != len(ins.outs):
        raise RecipeFormatError(
            f"program[{i}]: `out_meta` has {len(ins.out_meta)} entries for {len(ins.outs)} outputs"
        )
    output_size = repeat_interleave_output_size(ins, info)
    if output_size is not None or not info.data_dependent_shape:
        call_kwargs = dict(kwargs, output_size=output_size) if output_size is not None else kwargs
        try:
            computed = flatten_outputs(info.op(*args, **call_kwargs))
        except Exception:
            computed = None
        if computed is not None:
            tensors = [t for t in computed if isinstance(t, torch.Tensor)]
            for j, ((dtype, shape), t) in enumerate(zip(ins.out_meta, tensors)):
                if tuple(t.shape) != tuple(shape) or t.dtype != dtype:
                    raise RecipeFormatError(
                        f"program[{i}].out_meta[{j}]: records {list(shape)} {dtype}, but `{ins.op}` "
                        f"gives {list(t.shape)} {t.dtype}"
                    )
            return computed
    # Shapes that depend on data were recorded; replay checks them.
    return [torch.empty(shape, dtype=dtype, device=META) for dtype, shape in ins.out_meta]


def repeat_interleave_output_size(ins: Call, info: OpInfo) -> int | None:
    """For ``repeat_interleave`` with a recorded output shape, the ``output_size`` that bounds its output.

    Without it the operator allocates as much as the sum of its (data) repeats says; with it, torch
    checks the sum against the recorded size before allocating.
    """
    if ins.out_meta is None or "output_size" not in info.arg_names or not ins.out_meta:
        return None
    if arg_at(ins, info.arg_names, info.arg_names.index("output_size")) is not None:
        return None
    shape = ins.out_meta[0][1]
    if not shape:
        return None
    dim = None
    if "dim" in info.arg_names:
        dim = arg_at(ins, info.arg_names, info.arg_names.index("dim"))
    if dim is None:
        return shape[0] if len(shape) == 1 else None
    if type(dim) is not int or not -len(shape) <= dim < len(shape):
        return None
    return shape[dim]


_ARANGE_DTYPES = frozenset({torch.float64, torch.float32, torch.float16, torch.bfloat16, torch.int64, torch.int32,
                            torch.int16, torch.int8, torch.uint8})


def _arange_on_meta(i: int, ins: Call, info: OpInfo, args: list[Any], kwargs: dict[str, Any]) -> torch.Tensor | None:
    """The meta output of an ``arange`` with plain number arguments, computed without torch's meta
    kernel (its first use imports torch._dynamo: ~0.8 s); None for anything else."""
    if info.name not in ("aten.arange.default", "aten.arange.start", "aten.arange.start_step"):
        return None
    numbers = [a for a in args if not isinstance(a, torch.device)]
    if len(numbers) != len(args) or not all(isinstance(a, (int, float)) and not isinstance(a, bool) for a in args):
        return None
    if set(kwargs) - {"dtype", "layout", "device", "pin_memory"} or kwargs.get("layout") not in (None, torch.strided):
        return None
    start, end, step = (0, args[0], 1) if len(args) == 1 else (args[0], args[1], args[2] if len(args) > 2 else 1)
    dtype = kwargs.get("dtype")
    if dtype is None:
        dtype = torch.int64 if all(isinstance(a, int) for a in args) else torch.get_default_dtype()
    if dtype not in _ARANGE_DTYPES or not all(math.isfinite(x) for x in (start, end, step)):
        return None  # let torch's meta kernel decide
    if not dtype.is_floating_point and not all(isinstance(a, int) for a in args):
        return None  # integer aranges of float bounds truncate them first
    if step == 0 or (step > 0 and end < start) or (step < 0 and end > start):
        raise RecipeFormatError(
            f"program[{i}]: `{ins.op}` rejects its arguments: upper bound and lower bound inconsistent with step sign"
        )
    if isinstance(start + end + step, float):
        span = (end - start) / step
        if not math.isfinite(span) or span > _MAX_SIZE:
            return None
        size = math.ceil(span)
    else:
        size = -((start - end) // step)
    if not 0 <= size <= _MAX_SIZE:
        return None
    return torch.empty(size, dtype=dtype, device=META)


def _geqrf_on_meta(i: int, ins: Call, args: list[Any], kwargs: dict[str, Any]) -> list[torch.Tensor]:
    """``geqrf``'s outputs, which torch has no meta kernel for: ``a`` as LAPACK leaves it (each
    matrix column-major, batches contiguous) and ``tau`` (one scalar per reflector)."""
    a = args[0] if args else kwargs.get("self")
    if len(args) + len(kwargs) != 1 or not isinstance(a, torch.Tensor):
        raise RecipeFormatError(f"program[{i}]: `{ins.op}` takes one tensor")
    if a.dim() < 2 or not (a.dtype.is_floating_point or a.dtype.is_complex) or a.dtype in (torch.float16, torch.bfloat16):
        raise RecipeFormatError(
            f"program[{i}]: `{ins.op}` rejects its arguments: it needs a float32/float64/complex tensor of 2 or "
            f"more dimensions, got {list(a.shape)} {a.dtype}"
        )
    *batch, m, n = a.shape
    matrix = m * n
    stride = [1, max(m, 1)]
    for size in reversed(batch):
        stride.insert(0, matrix)
        matrix *= size
    tau_shape = (*batch, min(m, n))
    return [torch.empty_strided(tuple(a.shape), tuple(stride[-len(a.shape):]), dtype=a.dtype, device=META),
            torch.empty(tau_shape, dtype=a.dtype, device=META)]


_POINTWISE_PACKETS = POINTWISE_OPERATORS - {"fill", "fill_", "zero", "zero_", "copy_"}


def _pointwise_on_meta(info: OpInfo, args: list[Any], kwargs: dict[str, Any]) -> list[torch.Tensor] | None:
    """The meta outputs of a pointwise operator whose tensor arguments all have one contiguous
    shape (or none), computed without torch's Python meta kernels (their first use imports
    torch._dynamo: ~0.8 s).  The dtypes come from running the operator on one-element CPU
    probes of the same dtypes and dimensionality; None when the shortcut does not apply."""
    if info.name.split(".")[1] not in _POINTWISE_PACKETS or info.written_args not in ((), (0,)):
        return None
    tensors = [a for a in list(args) + list(kwargs.values()) if isinstance(a, torch.Tensor)]
    if not tensors or any(isinstance(a, (list, tuple)) for a in list(args) + list(kwargs.values())):
        return None
    shapes = {tuple(t.shape) for t in tensors if t.dim()}
    if len(shapes) > 1 or not all(t.dim() == 0 or t.is_contiguous() for t in tensors):
        return None
    shape = shapes.pop() if shapes else ()

    def probe(value: object) -> object:
        if isinstance(value, torch.Tensor):
            return torch.ones((1,) * value.dim(), dtype=value.dtype)
        if isinstance(value, torch.device):
            return torch.device("cpu")
        return value

    try:
        with torch.no_grad():
            result = info.op(*[probe(a) for a in args], **{k: probe(v) for k, v in kwargs.items()})
    except Exception:
        return None  # let the meta kernel give its own verdict
    outs = flatten_outputs(result)
    if not all(isinstance(o, torch.Tensor) and o.dim() == len(shape) for o in outs):
        return None
    if info.written_args:
        if len(outs) != 1 or tuple(args[0].shape) != shape or outs[0].dtype != args[0].dtype:
            return None
        return [args[0]]
    return [torch.empty(shape, dtype=o.dtype, device=META) for o in outs]
