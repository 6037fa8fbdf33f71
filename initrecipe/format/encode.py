"""Encoding a recipe's program as msgpack values (the inverse of :mod:`initrecipe.format.instructions`)."""

from __future__ import annotations

from typing import Any, Sequence

import msgpack
import torch

from initrecipe.format.spec import OP_CALL, OP_LITERAL, OP_RESTORE, OP_SEED, OP_SET_STATE
from initrecipe.program.ir import (
    Call,
    GenRef,
    Instruction,
    Literal,
    PortableKey,
    Ref,
    RngRestore,
    RngSeed,
    RngSetState,
    dtype_name,
)


def pack(obj: Any) -> bytes:
    """The canonical msgpack encoding of ``obj`` (``schema/FORMAT.md`` section 8)."""
    return msgpack.packb(obj, use_bin_type=True, use_single_float=False, strict_types=False)


def encode_arg(value: Any) -> Any:
    """An instruction argument as the msgpack value that stores it (tagged maps for references,
    generators, stream keys, dtypes, devices, layouts, memory formats and complex numbers)."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, Ref):
        return {"t": value.id}
    if isinstance(value, GenRef):
        return {"g": value.id}
    if isinstance(value, PortableKey):
        return {"key": [value.stream, value.position]}
    if isinstance(value, (list, tuple)):
        return [encode_arg(v) for v in value]
    if isinstance(value, torch.dtype):
        return {"dtype": dtype_name(value)}
    if isinstance(value, torch.device):
        return {"device": str(value)}
    if isinstance(value, torch.layout):
        return {"layout": str(value).removeprefix("torch.")}
    if isinstance(value, torch.memory_format):
        return {"memory_format": str(value).removeprefix("torch.")}
    if isinstance(value, complex):
        return {"complex": [value.real, value.imag]}
    raise TypeError(f"cannot encode argument of type {type(value).__name__}")


def encode_program(instructions: Sequence[Instruction]) -> tuple[list[str], list[list[Any]]]:
    """The ``ops`` table (operator names in order of first use) and the ``program`` list that indexes it."""
    op_names: list[str] = []
    op_index: dict[str, int] = {}
    program: list[list[Any]] = []
    for ins in instructions:
        if isinstance(ins, Call):
            idx = op_index.get(ins.op)
            if idx is None:
                idx = op_index[ins.op] = len(op_names)
                op_names.append(ins.op)
            item: list[Any] = [
                OP_CALL,
                idx,
                list(ins.outs),
                [encode_arg(a) for a in ins.args],
                {k: encode_arg(v) for k, v in ins.kwargs.items()},
            ]
            if ins.out_meta is not None:
                item.append([[dtype_name(d), list(s)] for d, s in ins.out_meta])
            program.append(item)
        elif isinstance(ins, Literal):
            program.append([OP_LITERAL, ins.out, dtype_name(ins.dtype), list(ins.shape), bytes(ins.data)])
        elif isinstance(ins, RngSeed):
            program.append([OP_SEED, ins.gen, ins.seed])
        elif isinstance(ins, RngSetState):
            program.append([OP_SET_STATE, ins.gen, bytes(ins.state)])
        elif isinstance(ins, RngRestore):
            program.append([OP_RESTORE, ins.gen, ins.after])
        else:  # pragma: no cover - programming error
            raise TypeError(f"unknown instruction {ins!r}")
    return op_names, program
