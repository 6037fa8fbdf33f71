"""Which generator a random call of the program draws from."""

from __future__ import annotations

from initrecipe.program.ir import Call, GenRef
from initrecipe.program.operators import OpInfo

__all__ = ["generator_of"]


def generator_of(ins: Call, info: OpInfo) -> int:
    """The generator id a random call draws from (0, torch's default generator, when none is named)."""
    value = ins.kwargs.get(info.generator_arg)
    if value is None:
        pos = info.arg_names.index(info.generator_arg)
        value = ins.args[pos] if pos < len(ins.args) else None
    return value.id if isinstance(value, GenRef) else 0
