"""Static facts about a program: every value's shape, dtype and storage, and what each instruction is.

:func:`initrecipe.analysis.infer.infer_facts` computes them on the meta device (checking the program
as it goes); :func:`initrecipe.analysis.plan.plan_execution` decides from them what the
interpreter does with each instruction (one :class:`Action` each).
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass

import torch

from initrecipe.analysis.cost import Cost
from initrecipe.errors import RecipeFormatError
from initrecipe.program.ir import Call, Instruction, Ref, RngRestore, RngSeed, RngSetState
from initrecipe.program.operators import OpInfo
from initrecipe.program.walk import arg_at, call_leaves, iter_leaves

__all__ = ["TensorMeta", "ProgramFacts", "Action", "is_rng_instruction", "call_refs", "ref_positions"]


@dataclass(frozen=True, slots=True)
class TensorMeta:
    """Metadata of one tensor value: which storage it views, and how."""

    storage: int
    shape: tuple[int, ...]
    stride: tuple[int, ...]
    offset: int
    dtype: torch.dtype

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    def covers(self, storage_nbytes: int) -> bool:
        """Whether writing every element of this view writes every byte of its storage."""
        return self.numel * self.dtype.itemsize == storage_nbytes and _non_overlapping_dense(
            self.shape, self.stride
        )

    def scratch(self) -> torch.Tensor:
        """An uninitialized CPU tensor with this shape, stride and dtype."""
        return torch.empty_strided(self.shape, self.stride, dtype=self.dtype)


def _non_overlapping_dense(shape: tuple[int, ...], stride: tuple[int, ...]) -> bool:
    dims = sorted((st, sz) for sz, st in zip(shape, stride) if sz != 1)
    expected = 1
    for st, sz in dims:
        if st != expected:
            return False
        expected *= sz
    return True


class Action(enum.IntEnum):
    """What the interpreter does with one instruction."""

    SKIP = 0  # not needed
    RUN = 1  # execute for real
    ALLOC = 2  # outputs needed as tensors, contents dead: allocate uninitialized storage
    ADVANCE = 3  # dead random draw: run on scratch memory only to advance the generator


def is_rng_instruction(ins: Instruction) -> bool:
    """Whether ``ins`` positions a generator (``RNG_SEED``, ``RNG_SET_STATE``, ``RNG_RESTORE``)."""
    return isinstance(ins, (RngSeed, RngSetState, RngRestore))


class ProgramFacts:
    """Per-instruction operator info and per-value metadata of a program."""

    def __init__(self) -> None:
        self.infos: list[OpInfo | None] = []
        self.values: dict[int, TensorMeta] = {}
        self.storage_nbytes: dict[int, int] = {}
        self.storage_creator: dict[int, int] = {}  # storage id -> index of the instruction creating it
        self.value_def: dict[int, int] = {}  # value id -> index of the instruction defining it
        self.storage_grown: dict[int, int] = {}  # storage id -> bytes after a resize_ or out= call grew it
        self.costs: list[Cost] = []  # per instruction: what executing it costs (initrecipe.analysis.cost), from infer_facts

    def define(self, index: int, value: int, meta: TensorMeta, storage_nbytes: int | None) -> None:
        """Record that instruction ``index`` binds ``value`` (a new storage when ``storage_nbytes`` is given)."""
        if value in self.values:
            raise RecipeFormatError(f"program[{index}]: value {value} is defined twice")
        self.values[value] = meta
        self.value_def[value] = index
        if storage_nbytes is not None:
            self.storage_nbytes[meta.storage] = storage_nbytes
            self.storage_creator[meta.storage] = index

    def storage(self, value: int) -> int:
        return self.values[value].storage

    def written_storages(self, index: int, ins: Call) -> list[tuple[int, int]]:
        """``(arg position, storage)`` for each argument instruction ``index`` writes to."""
        info = self.infos[index]
        out = []
        for pos in info.written_args:
            ref = arg_at(ins, info.arg_names, pos)
            if isinstance(ref, Ref):
                out.append((pos, self.values[ref.id].storage))
        return out


def call_refs(ins: Call) -> list[int]:
    """Value ids a call reads or writes, in argument order."""
    return [ref.id for ref in call_leaves(ins, Ref)]


def ref_positions(ins: Call, arg_names: list[str]) -> list[tuple[int | str, int]]:
    """``(schema position, value id)`` of every tensor reference of a call, keywords by their
    position (a keyword the schema does not name: by its name)."""
    out: list[tuple[int | str, int]] = []
    for pos, a in enumerate(ins.args):
        out.extend((pos, ref.id) for ref in iter_leaves(a, Ref))
    for name, a in ins.kwargs.items():
        position = arg_names.index(name) if name in arg_names else name
        out.extend((position, ref.id) for ref in iter_leaves(a, Ref))
    return out
