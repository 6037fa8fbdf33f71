"""The live program of every tensor of a recipe, and when two tensors are the same.

A tensor's final contents depend on the instructions that wrote its storage since the last write
that covered all of it, and, through what those instructions read, on the live programs of other
storages at the time they were read.  Everything else the program does (``reset_parameters``
overwritten by ``_init_weights``, views, checks whose results are never used) is dead for it.
This module finds those instructions in one forward pass over the program, using the planner's
rules (:mod:`initrecipe.analysis.plan`: which arguments a call writes, which it reads, when a write
covers its storage), and gives every live program two identities:

* an **init** identity: the operators, their arguments and what they read, but not where their
  random numbers come from (two tensors initialized by the same ``normal_(0, 0.02)`` share it);
* a **value** identity: the init identity plus, for each random draw, its source: in ``torch``
  mode the generator's position, i.e. how it was seeded and every draw (live or dead) it made
  before; in ``portable`` mode the recipe's seed and the draw's stream key.  Two tensors with the
  same value identity have the same bits.  (The converse does not hold: two different draw
  sequences may leave a generator in the same state; the test is sufficient, not necessary.)

Identities are small integers handed out by an :class:`Interner`; analyses that share one
interner (the two sides of a diff) compare identities directly.  Each instruction costs time
proportional to its own size, so a program with many ties or many views of one storage is
analysed in linear time.
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass
from typing import Hashable, Iterator

import torch

from initrecipe.analysis.facts import ProgramFacts, TensorMeta, ref_positions
from initrecipe.analysis.infer import infer_facts
from initrecipe.program.generators import generator_of
from initrecipe.rng.portable.semantics import draws_from_generator, portable_key_of
from initrecipe.program.ir import Call, GenRef, Literal, PortableKey, Ref, RngRestore, RngSeed, RngSetState
from initrecipe.program.walk import arg_at
from initrecipe.format.recipe import Recipe, TensorEntry

__all__ = ["Interner", "View", "Step", "Input", "TensorLineage", "Lineage", "analyse"]


class Interner:
    """Hands out one integer per distinct hashable key (hash-consing)."""

    __slots__ = ("_ids",)

    def __init__(self) -> None:
        self._ids: dict[Hashable, int] = {}

    def __call__(self, key: Hashable) -> int:
        ids = self._ids
        found = ids.get(key)
        if found is None:
            found = ids[key] = len(ids)
        return found


@dataclass(frozen=True, slots=True)
class View:
    """Which elements of a storage a tensor value shows: shape, strides and offset (in elements)."""

    shape: tuple[int, ...]
    stride: tuple[int, ...]
    offset: int
    dtype: torch.dtype

    @staticmethod
    def of(meta: TensorMeta) -> "View":
        return View(meta.shape, meta.stride, meta.offset, meta.dtype)

    @property
    def numel(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n


@dataclass(frozen=True, slots=True)
class Input:
    """A tensor an instruction reads: ``view`` of the storage version ``step`` (None: never written)."""

    position: int | str  # schema position, or keyword name
    view: View
    step: "Step | None"


class Step:
    """One instruction's effect on one storage: a version of that storage's contents.

    ``prev`` is the version this step modifies (None when the step writes every byte, or creates
    the storage).  ``draw`` is where a random step's numbers come from: a generator position id
    (``torch`` draws and pinned draws) or the :class:`PortableKey`.
    """

    __slots__ = ("index", "ins", "out", "view", "storage_view", "prev", "inputs", "draw", "init_id", "value_id")

    def __init__(self, index: int, ins: Call | Literal, out: int, view: View, storage_view: View,
                 prev: "Step | None", inputs: tuple[Input, ...], draw: int | PortableKey | None) -> None:
        self.index = index
        self.ins = ins
        self.out = out
        self.view = view
        self.storage_view = storage_view
        self.prev = prev
        self.inputs = inputs
        self.draw = draw
        self.init_id = -1
        self.value_id = -1

    @property
    def op(self) -> str:
        return self.ins.op if isinstance(self.ins, Call) else "literal"

    @property
    def packet(self) -> str:
        """The operator's name without namespace and overload (``normal_``)."""
        return self.ins.op.split(".")[1] if isinstance(self.ins, Call) else "literal"

    @property
    def covers(self) -> bool:
        """Whether this step's view is its whole storage (shape and layout of its creation)."""
        return self.view == self.storage_view

    def __repr__(self) -> str:
        return f"Step(#{self.index} {self.op} init={self.init_id} value={self.value_id})"


@dataclass(frozen=True, slots=True)
class TensorLineage:
    """One tensor entry's live program: ``view`` of the storage version ``step``."""

    entry: TensorEntry
    step: Step | None
    view: View
    storage_view: View
    init_id: int
    value_id: int

    def live_indices(self) -> set[int]:
        """Indices of the instructions the tensor's contents depend on (views excluded)."""
        out: set[int] = set()
        seen: set[int] = set()
        stack = [self.step]
        while stack:
            step = stack.pop()
            if step is None or id(step) in seen:
                continue
            seen.add(id(step))
            out.add(step.index)
            stack.append(step.prev)
            stack.extend(i.step for i in step.inputs)
        return out


class Lineage:
    """The live program of every tensor of one recipe (see :func:`analyse`)."""

    def __init__(self, recipe: Recipe, facts: ProgramFacts, tensors: dict[str, TensorLineage]) -> None:
        self.recipe = recipe
        self.facts = facts
        self.tensors = tensors

    def __iter__(self) -> Iterator[TensorLineage]:
        return iter(self.tensors.values())

    def __getitem__(self, name: str) -> TensorLineage:
        return self.tensors[name]


_SKIPPED_KWARGS = frozenset({"generator"})


def _canon(value: object) -> Hashable:
    """A hashable form of an argument that tells apart everything replay tells apart (``1`` from
    ``1.0`` and ``True``, ``0.0`` from ``-0.0``, NaN payloads); tensors and generators become
    placeholders (what they contribute is described separately)."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, bool):
        return ("b", value)
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return ("f", struct.pack("<d", value))
    if isinstance(value, Ref):
        return ("t",)
    if isinstance(value, (GenRef, PortableKey)):
        return ("g",)
    if isinstance(value, (list, tuple)):
        return tuple(_canon(v) for v in value)
    if isinstance(value, complex):
        return ("c", struct.pack("<dd", value.real, value.imag))
    if isinstance(value, torch.device):
        return ("d", value.type)
    return value  # dtype, layout, memory_format: hashable singletons


def _canon_call(ins: Call) -> Hashable:
    kwargs = tuple(sorted((k, _canon(v)) for k, v in ins.kwargs.items() if k not in _SKIPPED_KWARGS))
    return (ins.op, tuple(_canon(a) for a in ins.args), kwargs)


def analyse(recipe: Recipe, *, interner: Interner | None = None, facts: ProgramFacts | None = None) -> Lineage:
    """Find every tensor's live program and its init and value identities.

    Args:
        recipe: a loaded recipe (its program is shape-propagated on the meta device first, which
            checks it, unless ``facts`` are given).
        interner: share one between analyses whose identities are to be compared.
        facts: :func:`initrecipe.analysis.infer.infer_facts` of the recipe's program, if already known.

    Example:
        >>> import initrecipe, torch
        >>> from initrecipe.analysis.lineage import analyse
        >>> lin = analyse(initrecipe.record(lambda: torch.nn.Linear(4, 4), seed=0))
        >>> sorted(lin["weight"].live_indices())   # the kaiming_uniform_ draw; the empty() is dead
        [7]
    """
    if facts is None:
        facts = infer_facts(recipe.program, recipe.generators, rng=recipe.rng)
    analysis = _Analysis(facts, interner if interner is not None else Interner(),
                         recipe.seed if recipe.rng == "portable" else None)
    for i, ins in enumerate(recipe.program):
        if isinstance(ins, Call):
            analysis.call(i, ins)
        elif isinstance(ins, Literal):
            analysis.literal(i, ins)
        elif isinstance(ins, (RngSeed, RngSetState, RngRestore)):
            analysis.position(i, ins)
    return Lineage(recipe, facts, {entry.name: analysis.tensor(entry) for entry in recipe.tensors})


class _Analysis:
    """The state of one forward pass of :func:`analyse`: each storage's latest version and each
    generator's position."""

    __slots__ = ("facts", "intern", "portable_seed", "current", "storage_views", "positions", "after", "unseeded")

    def __init__(self, facts: ProgramFacts, intern: Interner, portable_seed: int | None) -> None:
        self.facts = facts
        self.intern = intern
        self.portable_seed = portable_seed
        self.current: dict[int, Step] = {}  # storage id -> its latest version
        self.storage_views: dict[int, View] = {}
        self.positions: dict[int, int] = {}  # generator -> position id
        self.after: dict[tuple[int, int], int] = {}  # (generator, instruction) -> position id after it
        self.unseeded = intern(("fresh-generator",))

    def call(self, i: int, ins: Call) -> None:
        """The new versions of the storages call ``i`` creates or writes."""
        facts = self.facts
        info = facts.infos[i]
        written = facts.written_storages(i, ins)
        written_positions = {pos for pos, _ in written}
        inputs: list[Input] = []
        for pos, ref in ref_positions(ins, info.arg_names):
            if pos in written_positions:
                continue  # the written argument: its old contents enter as `prev`, or not at all
            meta = facts.values[ref]
            inputs.append(Input(pos, View.of(meta), self.current.get(meta.storage)))
        draw = self._draw(i, ins, inputs)
        static = _canon_call(ins)
        inputs_t = tuple(inputs)
        for k, o in enumerate(ins.outs):
            if o is None:
                continue
            meta = facts.values[o]
            sid = meta.storage
            if facts.storage_creator.get(sid) == i:
                view = View.of(meta)
                self.storage_views[sid] = view
                self.current[sid] = self._finish(Step(i, ins, k, view, view, None, inputs_t, draw), static)
        for pos, sid in written:
            meta = facts.values[arg_at(ins, info.arg_names, pos).id]
            overwrites = pos != 0 or info.overwrites_self  # out= arguments are written, not read
            prev = None if overwrites and meta.covers(facts.storage_nbytes[sid]) else self.current.get(sid)
            step = Step(i, ins, pos, View.of(meta), self._storage_view(sid, meta), prev, inputs_t, draw)
            self.current[sid] = self._finish(step, static)

    def _draw(self, i: int, ins: Call, inputs: list[Input]) -> int | PortableKey | None:
        """Where call ``i``'s random numbers come from (its generator's position, which it then
        advances, or its portable stream key); None for a call that draws nothing."""
        info = self.facts.infos[i]
        key = portable_key_of(ins, info)
        if key is not None:
            return key
        if not draws_from_generator(ins, info):
            return None
        values = self.facts.values
        gen = generator_of(ins, info)
        draw = self.positions.get(gen, self.unseeded)
        shapes = tuple(View.of(values[r]) for _, r in ref_positions(ins, info.arg_names))
        outs = tuple(View.of(values[o]) for o in ins.outs if o is not None)
        consumed: Hashable = ()
        if info.value_dependent_random:
            consumed = tuple(inp.step.value_id if inp.step else -1 for inp in inputs)
        self._advance(gen, i, self.intern(("draw", draw, _canon_call(ins), shapes, outs, consumed)))
        return draw

    def literal(self, i: int, ins: Literal) -> None:
        meta = self.facts.values[ins.out]
        view = View.of(meta)
        self.storage_views[meta.storage] = view
        static = ("literal", ins.dtype, tuple(ins.shape), hashlib.sha256(ins.data).digest())
        self.current[meta.storage] = self._finish(Step(i, ins, 0, view, view, None, (), None), static)

    def position(self, i: int, ins: RngSeed | RngSetState | RngRestore) -> None:
        """A generator's new position after an RNG instruction."""
        if isinstance(ins, RngSeed):
            self._advance(ins.gen, i, self.intern(("seed", ins.seed)))
        elif isinstance(ins, RngSetState):
            self._advance(ins.gen, i, self.intern(("state", hashlib.sha256(ins.state).digest())))
        else:
            self._advance(ins.gen, i, self.after.get((ins.gen, ins.after), self.unseeded))

    def _advance(self, gen: int, i: int, position: int) -> None:
        self.positions[gen] = position
        self.after[(gen, i)] = position

    def _storage_view(self, sid: int, meta: TensorMeta) -> View:
        found = self.storage_views.get(sid)
        if found is None:
            # The storage's creator defines its layout; a storage first seen through a view
            # (never happens with a checked program) falls back to that view.
            found = self.storage_views[sid] = View.of(meta)
        return found

    def _finish(self, step: Step, static: Hashable) -> Step:
        """Give ``step`` its init and value identities."""
        prev = step.prev
        ins_init = tuple((i.position, i.view, i.step.init_id if i.step else -1) for i in step.inputs)
        ins_value = tuple((i.position, i.view, i.step.value_id if i.step else -1) for i in step.inputs)
        draw_value: Hashable = None
        if isinstance(step.draw, PortableKey):
            draw_value = ("key", self.portable_seed, step.draw.stream, step.draw.position)
        elif step.draw is not None:
            draw_value = ("gen", step.draw)
        step.init_id = self.intern((static, step.out, step.view, prev.init_id if prev else -1, ins_init))
        step.value_id = self.intern((static, step.out, step.view, prev.value_id if prev else -1, ins_value,
                                     draw_value))
        return step

    def tensor(self, entry: TensorEntry) -> TensorLineage:
        """The lineage of one tensor entry: the latest version of its storage, as it views it."""
        meta = self.facts.values[entry.value]
        step = self.current.get(meta.storage)
        view = View.of(meta)
        whole = self.storage_views.get(meta.storage, view)
        init_id = self.intern(("tensor", step.init_id if step else -1, view))
        value_id = self.intern(("tensor", step.value_id if step else -1, view))
        return TensorLineage(entry, step, view, whole, init_id, value_id)
