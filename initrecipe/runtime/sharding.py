"""Slice planning: which tensors a shard of is generated without the rest, and the plan that does it.

A :class:`~initrecipe.runtime.regions.Shard` asks for ``tensor.narrow(dim, start, stop - start)``
(a :class:`~initrecipe.runtime.regions.Box`, for a block).  In a ``portable`` recipe a
tensor whose program is *elementwise* is generated slice-only: each element of such a tensor is a
function of its own index, so the replayer computes exactly the requested elements.  A program is
elementwise when every value it builds has the tensor's element order (a contiguous tensor of the
same number of elements, or a single-element tensor) and every operator is

* a factory (``empty``, ``zeros``, ``ones``, ``full``, their ``_like``/``new_`` forms) or an
  integer ``arange``;
* a portable random draw (``normal_``, ``uniform_``, ``randn``, ... — see
  :data:`initrecipe.program.operators.DRAW_OPERATORS`);
* an elementwise operator (arithmetic, ``clamp``, ``erfinv``, ``copy_``, dtype conversion, ...);
* a view that keeps the element order (``view``, ``reshape``, ``unsqueeze``, ``detach``, ...);
* a constant written through any other view (``weight[padding_idx].zero_()``).

Anything else — ``orthogonal_``'s QR, ``sparse_``'s random permutations, reductions, computing
through transposes or slices, draws from a pinned ``torch.Generator``, and every ``torch``-mode
recipe — generates the whole tensor and slices it.  :func:`plan_slice` tells which case a tensor is
(:func:`initrecipe.sliceable` asks it); :mod:`initrecipe.runtime.slice_run` runs its plan.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from initrecipe.analysis.facts import ProgramFacts, TensorMeta, call_refs
from initrecipe.analysis.plan import read_storages
from initrecipe.program.ir import Call, Instruction, Literal, Ref
from initrecipe.program.operators import (CONSTANT_RESULTS, ELEMENTWISE_DRAWS, ELEMENTWISE_OPERATORS, REGISTRY,
                                          SUBSTITUTED_OPERATORS, Kind, OpInfo)
from initrecipe.rng.portable.semantics import portable_key_of

__all__ = ["SlicePlan", "Dependencies", "plan_slice", "is_view_op", "factory_constant"]

_FACTORIES = {  # factory -> the constant it fills its result with (`empty`, `zeros`, `ones`, `full`)
    name: constant.value for name, constant in CONSTANT_RESULTS.items() if REGISTRY[name].kind is Kind.FACTORY
}


@dataclass
class SlicePlan:
    """The instructions that build one tensor, when they are elementwise (see the module doc)."""

    value: int
    shape: tuple[int, ...]
    numel: int
    indices: list[int]  # the instructions to run, in order
    full_storages: set[int]  # storages holding the tensor's element order: generated slice-only
    views: set[int] = field(default_factory=set)  # values viewing those storages otherwise (never materialized)
    fills: set[int] = field(default_factory=set)  # instructions writing a constant through such a view


def _full(meta: TensorMeta, numel: int, facts: ProgramFacts) -> bool:
    """Whether a value is a whole storage of ``numel`` elements laid out in row-major order."""
    if meta.numel != numel or meta.offset != 0:
        return False
    expected = 1
    for size, stride in zip(reversed(meta.shape), reversed(meta.stride)):
        if size != 1 and stride != expected:
            return False
        expected *= size
    return facts.storage_nbytes.get(meta.storage) == numel * meta.dtype.itemsize


class Dependencies:
    """Which instructions one output's contents depend on, for every output of one program.

    An index of each storage's writers is built once; each query then walks back from the output
    through the writers of what it reads, stopping at writes that replace a whole storage, so it
    costs the size of that output's own program rather than the whole program's.
    """

    def __init__(self, program: list[Instruction], facts: ProgramFacts) -> None:
        self.program = program
        self.facts = facts
        self.writers: dict[int, list[int]] = {}  # storage -> instructions creating or writing it, ascending
        for i, ins in enumerate(program):
            touched: list[int] = []
            if isinstance(ins, Literal):
                touched.append(facts.values[ins.out].storage)
            elif isinstance(ins, Call):
                for o in ins.outs:
                    if o is not None and facts.storage_creator.get(facts.values[o].storage) == i:
                        touched.append(facts.values[o].storage)
                touched.extend(s for _, s in facts.written_storages(i, ins))
            for storage in dict.fromkeys(touched):
                self.writers.setdefault(storage, []).append(i)

    def of(self, value: int) -> list[int]:
        """The instructions (ascending) that build ``value``'s contents."""
        facts = self.facts
        included: set[int] = set()
        pending: list[tuple[int, int]] = [(facts.values[value].storage, len(self.program))]  # (storage, before)
        defining = [facts.value_def[value]]
        while pending or defining:
            if defining:
                i = defining.pop()
                if i in included:
                    continue
                included.add(i)
                self._expand(i, pending, defining)
                continue
            storage, before = pending.pop()
            for i in reversed(self.writers.get(storage, ())):
                if i >= before:
                    continue
                if i not in included:
                    included.add(i)
                    self._expand(i, pending, defining)
                if self._replaces(i, storage):
                    break
        return sorted(included)

    def _expand(self, i: int, pending: list[tuple[int, int]], defining: list[int]) -> None:
        ins = self.program[i]
        if not isinstance(ins, Call):
            return
        facts = self.facts
        for ref in call_refs(ins):
            defining.append(facts.value_def[ref])
        written = facts.written_storages(i, ins)
        for storage in read_storages(i, ins, facts.infos[i], facts, written):
            pending.append((storage, i))

    def _replaces(self, i: int, storage: int) -> bool:
        """Whether instruction ``i`` creates ``storage`` or overwrites all of it without reading it."""
        facts = self.facts
        if facts.storage_creator.get(storage) == i:
            return True
        ins = self.program[i]
        if not isinstance(ins, Call):
            return False
        info = facts.infos[i]
        target = ins.args[0] if ins.args else None
        return (
            info.overwrites_self and isinstance(target, Ref) and facts.values[target.id].storage == storage
            and facts.values[target.id].covers(facts.storage_nbytes[storage])
        )


def plan_slice(program: list[Instruction], facts: ProgramFacts, value: int,
               dependencies: Dependencies | None = None) -> SlicePlan | None:
    """The elementwise program of one output value of a portable recipe, or None if it is not one.

    Pass one :class:`Dependencies` for many values of the same program to share its index."""
    target = facts.values[value]
    numel = target.numel
    if not _full(target, numel, facts):
        return None
    dependencies = dependencies if dependencies is not None else Dependencies(program, facts)
    indices = dependencies.of(value)
    layouts = _Layouts(facts, numel)
    if not all(layouts.admit(i, program[i]) for i in indices):
        return None
    return SlicePlan(value, target.shape, numel, indices, layouts.full, layouts.views, layouts.fills)


_WHOLE = ("full", "view")  # layouts of values on a storage holding the tensor's element order


class _Layouts:
    """How the values of one output's program are laid out, learnt instruction by instruction:
    ``"full"`` (a whole storage in the output's element order), ``"view"`` (another view of such a
    storage), ``"small"`` (a single element, computed whole), or None (none of these: not elementwise)."""

    def __init__(self, facts: ProgramFacts, numel: int) -> None:
        self.facts = facts
        self.numel = numel
        self.full: set[int] = set()  # storages in the output's element order
        self.small: set[int] = set()  # single-element values, computed whole
        self.views: set[int] = set()  # other views into full storages: only filled with constants
        self.fills: set[int] = set()  # instructions filling such a view

    def of(self, v: int) -> str | None:
        """The layout of value ``v``."""
        meta = self.facts.values[v]
        if meta.storage in self.full:
            if _full(meta, self.numel, self.facts):
                return "full"
            base = self.facts.values.get(meta.storage)
            return "view" if base is not None and base.dtype == meta.dtype else None
        if v in self.small:
            return "small"
        return None

    def admit(self, i: int, ins: Instruction) -> bool:
        """Learn the layouts of instruction ``i``'s outputs; False if it is not elementwise."""
        if isinstance(ins, Literal):
            return self._literal(ins)
        if not isinstance(ins, Call):
            return False
        info = self.facts.infos[i]
        kinds = [self.of(r) for r in call_refs(ins)]
        if any(k is None for k in kinds):
            return False
        outs = [o for o in ins.outs if o is not None]
        if is_view_op(info) and kinds and kinds[0] in _WHOLE:
            return self._views(outs)
        if "view" in kinds:
            return self._fill_through_view(i, ins, kinds)
        return _elementwise(ins, info, self.facts, outs) and self._outputs(i, info, outs, kinds)

    def _literal(self, ins: Literal) -> bool:
        meta = self.facts.values[ins.out]
        if _full(meta, self.numel, self.facts):
            self.full.add(meta.storage)
        elif meta.numel == 1:
            self.small.add(ins.out)
        else:
            return False
        return True

    def _views(self, outs: list[int]) -> bool:
        """The outputs of a view of a full storage: each full, or a view (never materialized)."""
        for o in outs:
            layout = self.of(o)
            if layout not in _WHOLE:
                return False
            if layout == "view":
                self.views.add(o)
        return True

    def _fill_through_view(self, i: int, ins: Call, kinds: list[str | None]) -> bool:
        """A constant written through a view (`weight[padding_idx].zero_()`) is elementwise; nothing
        else that reads such a view is."""
        packet = ins.op.split(".")[1]
        if packet in ("fill_", "zero_") and kinds[0] == "view" and all(k == "small" for k in kinds[1:]):
            self.fills.add(i)
            return True
        return False

    def _outputs(self, i: int, info: OpInfo, outs: list[int], kinds: list[str | None]) -> bool:
        """The outputs of an elementwise call: each full, or a single element of single-element
        inputs; False for any other."""
        facts = self.facts
        for o in outs:
            meta = facts.values[o]
            if _full(meta, self.numel, facts) and (facts.storage_creator.get(meta.storage) == i or meta.storage in self.full):
                self.full.add(meta.storage)
            elif meta.numel == 1 and all(k == "small" for k in kinds) and not info.is_random:
                self.small.add(o)
            else:
                return False
        return True


def _elementwise(ins: Call, info: OpInfo, facts: ProgramFacts, outs: list[int]) -> bool:
    """Whether an operator computes each output element from the same element of its inputs: a
    factory, an integer ``arange``, a keyed portable draw, or an elementwise operator."""
    packet = ins.op.split(".")[1]
    if packet in _FACTORIES or (packet == "arange" and _integer_arange(facts, outs)):
        return True
    if info.is_random:
        return portable_key_of(ins, info) is not None and ins.op in ELEMENTWISE_DRAWS
    if packet in ELEMENTWISE_OPERATORS:
        return packet not in ("erfinv", "erfinv_") or ins.op in SUBSTITUTED_OPERATORS
    return False


def is_view_op(info: OpInfo) -> bool:
    """Whether an operator only makes views of its first argument (no data written or read)."""
    return (not info.written_args and not info.is_random and bool(info.aliased_outputs)
            and all(a == 0 for a in info.aliased_outputs))


def _integer_arange(facts: ProgramFacts, outs: list[int]) -> bool:
    """Whether the one output of an ``arange`` is of an integer dtype."""
    return len(outs) == 1 and not facts.values[outs[0]].dtype.is_floating_point and not facts.values[outs[0]].dtype.is_complex


def factory_constant(packet: str) -> str | None:
    """The constant a factory fills its result with (``empty``, ``zeros``, ``ones``, ``full``), or
    None for an operator that is not such a factory."""
    return _FACTORIES.get(packet)
