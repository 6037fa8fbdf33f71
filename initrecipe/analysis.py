"""Static facts about a program (every value's shape, dtype and storage) and execution plans.

The interpreter executes a program according to a *plan*: one :class:`Action` per instruction.
Planning is a backward liveness pass over storages: an instruction runs only when a later
instruction, or a requested output, reads what it writes.  Random draws whose results are dead
still run on scratch memory in ``torch`` mode, because they advance the generator that later live
draws read.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass
from typing import Any, Iterable

import torch
from torch.multiprocessing.reductions import StorageWeakRef

from .errors import RecipeFormatError
from .ops import OpInfo, op_info
from .program import Call, GenRef, Instruction, Literal, Ref, RngRestore, RngSeed, RngSetState

__all__ = ["TensorMeta", "ProgramFacts", "Action", "infer_facts", "plan_execution", "is_rng_instruction"]


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
    return isinstance(ins, (RngSeed, RngSetState, RngRestore))


class ProgramFacts:
    """Per-instruction operator info and per-value metadata of a program."""

    def __init__(self) -> None:
        self.infos: list[OpInfo | None] = []
        self.values: dict[int, TensorMeta] = {}
        self.storage_nbytes: dict[int, int] = {}
        self.storage_creator: dict[int, int] = {}  # storage id -> index of the instruction creating it
        self.value_def: dict[int, int] = {}  # value id -> index of the instruction defining it

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
            ref = _arg_at(ins, info, pos)
            if isinstance(ref, Ref):
                out.append((pos, self.values[ref.id].storage))
        return out

    @property
    def total_storage_bytes(self) -> int:
        return sum(self.storage_nbytes.values())


def _arg_at(ins: Call, info: OpInfo, pos: int) -> Any:
    if pos < len(ins.args):
        return ins.args[pos]
    return ins.kwargs.get(info.arg_names[pos])


def _walk_refs(value: Any, out: list[int]) -> None:
    if isinstance(value, Ref):
        out.append(value.id)
    elif isinstance(value, (list, tuple)) and not isinstance(value, GenRef):
        for v in value:
            _walk_refs(v, out)


def call_refs(ins: Call) -> list[int]:
    """Value ids a call reads or writes, in argument order."""
    out: list[int] = []
    for a in ins.args:
        _walk_refs(a, out)
    for a in ins.kwargs.values():
        _walk_refs(a, out)
    return out


# --------------------------------------------------------------------------- meta inference
_META = torch.device("meta")


def _to_meta_arg(value: Any, env: dict[int, torch.Tensor], where: str) -> Any:
    if isinstance(value, Ref):
        try:
            return env[value.id]
        except KeyError:
            raise RecipeFormatError(f"{where}: reference to undefined tensor {value.id}") from None
    if isinstance(value, GenRef):
        return None
    if isinstance(value, torch.device):
        return _META
    if isinstance(value, (list, tuple)):
        return [_to_meta_arg(v, env, where) for v in value]
    return value


def infer_facts(program: list[Instruction], generators: int) -> ProgramFacts:
    """Shape-propagate ``program`` on the meta device, checking every reference and argument.

    Raises:
        RecipeFormatError: naming the first instruction that is inconsistent.
    """
    facts = ProgramFacts()
    env: dict[int, torch.Tensor] = {}
    storages: dict[StorageWeakRef, int] = {}
    rng_indices: dict[int, set[int]] = {}
    for i, ins in enumerate(program):
        if isinstance(ins, Call):
            info = op_info(ins.op)
            facts.infos.append(info)
            for pos_value in list(ins.args) + list(ins.kwargs.values()):
                _check_generators(pos_value, generators, f"program[{i}]")
            args = [_to_meta_arg(a, env, f"program[{i}].args") for a in ins.args]
            kwargs = {k: _to_meta_arg(v, env, f"program[{i}].kwargs.{k}") for k, v in ins.kwargs.items()}
            if info.data_dependent_shape and ins.out_meta is None:
                raise RecipeFormatError(
                    f"program[{i}]: `{ins.op}` has a data-dependent output shape and needs `out_meta`"
                )
            if ins.out_meta is not None:
                # Shapes that depend on data were recorded; replay checks them.
                if len(ins.out_meta) != len(ins.outs):
                    raise RecipeFormatError(f"program[{i}]: `out_meta` has {len(ins.out_meta)} entries for {len(ins.outs)} outputs")
                outs = [torch.empty(shape, dtype=dtype, device=_META) for dtype, shape in ins.out_meta]
            else:
                try:
                    result = info.op(*args, **kwargs)
                except Exception as exc:  # the op rejected its arguments
                    raise RecipeFormatError(
                        f"program[{i}]: `{ins.op}` rejects its arguments: {str(exc).splitlines()[0]}"
                    ) from None
                outs = _flatten_outputs(result)
            if len(outs) != len(ins.outs):
                raise RecipeFormatError(
                    f"program[{i}]: `{ins.op}` returns {len(outs)} values, the program binds {len(ins.outs)}"
                )
            for value, out in zip(ins.outs, outs):
                if value is None:
                    continue
                if not isinstance(out, torch.Tensor):
                    raise RecipeFormatError(f"program[{i}]: output bound to tensor {value} is not a tensor")
                _bind(facts, storages, env, i, value, out)
        elif isinstance(ins, Literal):
            facts.infos.append(None)
            _bind(facts, storages, env, i, ins.out, torch.empty(ins.shape, dtype=ins.dtype, device=_META))
        else:
            facts.infos.append(None)
            if ins.gen >= generators:
                raise RecipeFormatError(
                    f"program[{i}]: generator {ins.gen} is not declared (the recipe declares {generators})"
                )
            if isinstance(ins, RngRestore):
                if ins.after not in rng_indices.get(ins.gen, ()):
                    raise RecipeFormatError(
                        f"program[{i}].after: instruction {ins.after} does not position generator {ins.gen}"
                    )
            rng_indices.setdefault(ins.gen, set()).add(i)
        if isinstance(ins, Call) and facts.infos[i].is_random:
            gen = _generator_of(ins, facts.infos[i])
            rng_indices.setdefault(gen, set()).add(i)
    return facts


def _check_generators(value: Any, generators: int, where: str) -> None:
    if isinstance(value, GenRef):
        if value.id >= generators:
            raise RecipeFormatError(f"{where}: generator {value.id} is not declared")
    elif isinstance(value, (list, tuple)) and not isinstance(value, Ref):
        for v in value:
            _check_generators(v, generators, where)


def _generator_of(ins: Call, info: OpInfo) -> int:
    value = ins.kwargs.get(info.generator_arg)
    if value is None:
        pos = info.arg_names.index(info.generator_arg)
        value = ins.args[pos] if pos < len(ins.args) else None
    return value.id if isinstance(value, GenRef) else 0


def generator_of(ins: Call, info: OpInfo) -> int:
    """The generator id a random call draws from (0, torch's default generator, when none is named)."""
    return _generator_of(ins, info)


def _flatten_outputs(result: Any) -> list[Any]:
    if isinstance(result, (list, tuple)):
        flat: list[Any] = []
        for r in result:
            if isinstance(r, (list, tuple)):
                flat.extend(r)
            else:
                flat.append(r)
        return flat
    return [result]


def flatten_outputs(result: Any) -> list[Any]:
    """An operator's returns as a flat list (lists of tensors flattened in place)."""
    return _flatten_outputs(result)


def _bind(
    facts: ProgramFacts,
    storages: dict[StorageWeakRef, int],
    env: dict[int, torch.Tensor],
    index: int,
    value: int,
    tensor: torch.Tensor,
) -> None:
    storage = tensor.untyped_storage()
    key = StorageWeakRef(storage)
    sid = storages.get(key)
    nbytes = None
    if sid is None:
        sid = storages[key] = value
        nbytes = storage.nbytes()
    meta = TensorMeta(sid, tuple(tensor.shape), tuple(tensor.stride()), tensor.storage_offset(), tensor.dtype)
    facts.define(index, value, meta, nbytes)
    env[value] = tensor


# --------------------------------------------------------------------------- planning
def plan_execution(
    program: list[Instruction],
    facts: ProgramFacts,
    targets: Iterable[int],
    *,
    end: int | None = None,
    advance_dead_draws: bool = True,
    available: dict[int, int] | None = None,
    draw_in_place: bool = True,
) -> list[Action]:
    """Decide, for each instruction before ``end``, what the interpreter must do.

    Args:
        targets: value ids whose tensors and contents are wanted after instruction ``end - 1``.
        advance_dead_draws: run dead random draws (``torch`` mode), or skip them.
        draw_in_place: run a dead in-place draw on its own tensor when the plan builds that
            tensor's storage anyway (fast, like eager); otherwise dead draws use scratch memory.
        available: storage id -> index of the instruction after which the caller holds that storage
            (its base tensor, bound to the value id equal to the storage id) with its contents as of
            that instruction.  Entries whose contents are needed as of an earlier point are removed
            from the dict, so the caller knows which of its tensors the plan relies on.
    """
    targets = list(targets)
    available = available if available is not None else {}
    while True:
        stale: set[int] = set()
        actions = _plan(program, facts, targets, len(program) if end is None else end,
                        advance_dead_draws, available, stale, draw_in_place)
        if not stale:
            return actions
        for storage in stale:
            available.pop(storage, None)


def _plan(
    program: list[Instruction],
    facts: ProgramFacts,
    targets: list[int],
    n: int,
    advance_dead_draws: bool,
    available: dict[int, int],
    stale: set[int],
    draw_in_place: bool,
) -> list[Action]:
    actions = [Action.SKIP] * n
    touched: set[int] = set()  # storages that instructions after the current one build or use
    needed_values = set(targets)
    needed_storages = {facts.values[v].storage for v in needed_values}

    def need(storage: int, index: int) -> None:
        if available.get(storage, -1) >= index:
            stale.add(storage)
        needed_storages.add(storage)

    for i in range(n - 1, -1, -1):
        ins = program[i]
        if isinstance(ins, Call):
            info = facts.infos[i]
            outs = [o for o in ins.outs if o is not None]
            fresh = [o for o in outs if facts.storage_creator.get(facts.values[o].storage) == i]
            written = facts.written_storages(i, ins)
            contents = any(
                s in needed_storages and available.get(s, -1) < i for _, s in written
            ) or any(
                facts.values[o].storage in needed_storages and available.get(facts.values[o].storage, -1) < i
                for o in fresh
            )
            wanted = any(o in needed_values for o in outs)
            if contents:
                action = Action.RUN
            elif wanted:
                if fresh and len(fresh) == len(outs) and all(facts.values[o].storage in available for o in fresh):
                    action = Action.SKIP  # the caller provides these tensors
                elif len(fresh) == len(outs) and not info.is_random:
                    action = Action.ALLOC
                else:
                    action = Action.RUN
            elif info.is_random and advance_dead_draws:
                action = Action.RUN if info.value_dependent_random else Action.ADVANCE
                if action == Action.ADVANCE and draw_in_place and info.overwrites_self:
                    target = _arg_at(ins, info, 0)
                    if isinstance(target, Ref) and facts.values[target.id].storage in touched:
                        # The storage is built later anyway: draw into it, as eager does, instead
                        # of faulting in scratch pages.  Its old contents are not read.
                        actions[i] = Action.RUN
                        needed_values.update(call_refs(ins))
                        continue
            else:
                action = Action.SKIP
            actions[i] = action
            if action == Action.ALLOC:
                touched.update(facts.values[o].storage for o in outs)
            if action != Action.RUN:
                continue
            touched.update(facts.values[o].storage for o in outs)
            touched.update(facts.values[r].storage for r in call_refs(ins))
            for pos, storage in written:
                if pos == 0 and info.overwrites_self:
                    ref = _arg_at(ins, info, 0)
                    if facts.values[ref.id].covers(facts.storage_nbytes[storage]):
                        needed_storages.discard(storage)
            for o in fresh:
                needed_storages.discard(facts.values[o].storage)
            needed_values.update(call_refs(ins))
            view_only = not written and not fresh
            if view_only:
                continue
            written_positions = {pos for pos, _ in written}
            for pos, ref in _positional_refs(ins, info):
                if pos == 0 and info.overwrites_self:
                    continue
                if pos in written_positions and pos != 0:
                    continue  # out= arguments are written, not read
                need(facts.values[ref].storage, i)
        elif isinstance(ins, Literal):
            if ins.out in needed_values:
                if facts.values[ins.out].storage in available:
                    continue
                actions[i] = Action.RUN
                needed_storages.discard(facts.values[ins.out].storage)
        else:
            actions[i] = Action.RUN
    return actions


def _positional_refs(ins: Call, info: OpInfo) -> list[tuple[int, int]]:
    """``(schema position, value id)`` for every tensor reference in a call."""
    out: list[tuple[int, int]] = []
    for pos, a in enumerate(ins.args):
        refs: list[int] = []
        _walk_refs(a, refs)
        out.extend((pos, r) for r in refs)
    for name, a in ins.kwargs.items():
        refs = []
        _walk_refs(a, refs)
        pos = info.arg_names.index(name) if name in info.arg_names else -1
        out.extend((pos, r) for r in refs)
    return out
