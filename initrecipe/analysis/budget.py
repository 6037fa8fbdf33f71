"""The memory budget of a program: the bytes of the storages it creates, added up instruction by
instruction while :func:`initrecipe.analysis.infer.infer_facts` checks it, and refused over
``max_bytes`` (:class:`MemoryLimitError`, naming the tensor responsible) before any of them exists.

(The work a replay may do is bounded after planning, from the costs in ``facts.costs``: see
:mod:`initrecipe.analysis.cost`.)
"""

from __future__ import annotations

import math

import torch

from initrecipe.analysis.facts import ProgramFacts
from initrecipe.errors import MemoryLimitError, RecipeError, ResourceLimitError
from initrecipe.program.ir import Call, Instruction, Ref
from initrecipe.program.operators import OpInfo, op_info
from initrecipe.program.walk import arg_at, iter_leaves
from initrecipe.support.display import format_bytes

__all__ = ["MemoryBudget"]


class MemoryBudget:
    """Adds up the bytes of the storages a program creates, and stops at ``max_bytes``."""

    __slots__ = ("program", "facts", "max_bytes", "names", "total")

    def __init__(self, program: list[Instruction], facts: ProgramFacts, max_bytes: int | None,
                 names: dict[int, str] | None) -> None:
        self.program = program
        self.facts = facts
        self.max_bytes = max_bytes
        self.names = names or {}
        self.total = 0

    def precheck(self, index: int, ins: Call, info: OpInfo, base: object = None) -> None:
        """Refuse a factory call whose requested size alone is over the limit, before running it on meta."""
        if self.max_bytes is None or any(a is not None for a in info.aliased_outputs):
            return
        if "size" not in info.arg_names:
            return
        size = arg_at(ins, info.arg_names, info.arg_names.index("size"))
        if not isinstance(size, (list, tuple)) or not all(type(d) is int for d in size):
            return
        dtype = arg_at(ins, info.arg_names, info.arg_names.index("dtype")) if "dtype" in info.arg_names else None
        if not isinstance(dtype, torch.dtype) and info.arg_names[0] == "self" and isinstance(base, torch.Tensor):
            dtype = base.dtype  # new_empty and friends
        numel = math.prod(max(d, 0) for d in size)
        nbytes = numel * (dtype.itemsize if isinstance(dtype, torch.dtype) else 1)
        if self.total + nbytes > self.max_bytes:
            value = next((o for o in ins.outs if o is not None), None)
            amount = format_bytes(nbytes) if isinstance(dtype, torch.dtype) else f"at least {format_bytes(nbytes)}"
            raise self._error(index, ins, value, nbytes, self.total + nbytes,
                              f"asks for {numel} elements ({amount})")

    def created(self, index: int, value: int | None, nbytes: int) -> None:
        """Instruction ``index`` creates (or grows a storage by) ``nbytes`` bytes, for ``value``."""
        self.total += nbytes
        if self.max_bytes is not None and self.total > self.max_bytes:
            raise self._error(index, self.program[index], value, nbytes, self.total)

    def _error(self, index: int, ins: Instruction, value: int | None, nbytes: int, total: int,
               verb: str | None = None) -> ResourceLimitError:
        what = f"`{ins.op}`" if isinstance(ins, Call) else "a literal"
        owner = ""
        if value is not None:
            tensor_names = _names_of_storage(self.program, self.facts, index, value, self.names)
            if tensor_names:
                more = f" and {len(tensor_names) - 1} more" if len(tensor_names) > 1 else ""
                owner = f" for tensor `{tensor_names[0]}`{more}"
            else:
                owner = f" for intermediate value {value}"
        err = MemoryLimitError(
            f"program[{index}]: {what} {verb or 'would allocate ' + format_bytes(nbytes)}{owner}; replaying this recipe "
            f"needs at least {format_bytes(total)}, more than the limit of {format_bytes(self.max_bytes)}"
        )
        err.index = index  # type: ignore[attr-defined]
        err.needed = total  # type: ignore[attr-defined]
        err.limit = self.max_bytes  # type: ignore[attr-defined]
        return err


def _names_of_storage(
    program: list[Instruction], facts: ProgramFacts, index: int, value: int, names: dict[int, str]
) -> list[str]:
    """Names of the tensor entries that view the storage ``value`` was created with, found statically."""
    if not names:
        return []
    sid = facts.values[value].storage if value in facts.values else value
    aliases = {v for v, meta in facts.values.items() if meta.storage == sid}
    aliases.add(value)
    for ins in program[index + 1:]:
        if not isinstance(ins, Call):
            continue
        try:
            info = op_info(ins.op)
        except RecipeError:
            break
        for k, out in enumerate(ins.outs):
            if out is None or not info.aliased_outputs:
                continue
            pos = info.aliased_outputs[min(k, len(info.aliased_outputs) - 1)]
            if pos is None:
                continue
            if any(ref.id in aliases for ref in iter_leaves(arg_at(ins, info.arg_names, pos), Ref)):
                aliases.add(out)
    return sorted({names[v] for v in aliases if v in names})
