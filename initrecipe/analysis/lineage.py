"""The live program of every tensor of a recipe, and when two tensors are the same.

A tensor's final contents depend on the instructions that wrote its storage since the last write
that covered all of it, and, through what those instructions read, on the live programs of other
storages at the time they were read.  Everything else the program does (``reset_parameters``
overwritten by ``_init_weights``, views, checks whose results are never used) is dead for it.
This module finds those instructions in one forward pass over the program, using the planner's
rules (:mod:`initrecipe.analysis.facts`: which arguments a call writes, which it reads, when a write
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
from typing import Any, Hashable, Iterator

import torch

from initrecipe.analysis.facts import ProgramFacts, TensorMeta, infer_facts
from initrecipe.program.generators import generator_of
from initrecipe.rng.portable.semantics import draws_from_generator, portable_key_of
from initrecipe.program.ir import Call, GenRef, Literal, PortableKey, Ref, RngRestore, RngSeed, RngSetState
from initrecipe.program.walk import arg_at, iter_leaves
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


def _canon(value: Any) -> Hashable:
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


def _ref_positions(ins: Call, arg_names: list[str]) -> list[tuple[int | str, int]]:
    """``(schema position, value id)`` of every tensor reference, keywords by their position."""
    out: list[tuple[int | str, int]] = []
    for pos, a in enumerate(ins.args):
        out.extend((pos, ref.id) for ref in iter_leaves(a, Ref))
    for name, a in ins.kwargs.items():
        position = arg_names.index(name) if name in arg_names else name
        out.extend((position, ref.id) for ref in iter_leaves(a, Ref))
    return out


def analyse(recipe: Recipe, *, interner: Interner | None = None, facts: ProgramFacts | None = None) -> Lineage:
    """Find every tensor's live program and its init and value identities.

    Args:
        recipe: a loaded recipe (its program is shape-propagated on the meta device first, which
            checks it, unless ``facts`` are given).
        interner: share one between analyses whose identities are to be compared.
        facts: :func:`initrecipe.analysis.facts.infer_facts` of the recipe's program, if already known.

    Example:
        >>> import initrecipe, torch
        >>> from initrecipe.analysis.lineage import analyse
        >>> lin = analyse(initrecipe.record(lambda: torch.nn.Linear(4, 4), seed=0))
        >>> sorted(lin["weight"].live_indices())   # the kaiming_uniform_ draw; the empty() is dead
        [7]
    """
    intern = interner if interner is not None else Interner()
    program = recipe.program
    if facts is None:
        facts = infer_facts(program, recipe.generators, rng=recipe.rng)
    portable_seed = recipe.seed if recipe.rng == "portable" else None
    current: dict[int, Step] = {}  # storage id -> its latest version
    storage_views: dict[int, View] = {}
    position: dict[int, int] = {}  # generator -> position id
    after: dict[tuple[int, int], int] = {}  # (generator, instruction) -> position id after it
    unseeded = intern(("fresh-generator",))

    def storage_view(sid: int, meta: TensorMeta) -> View:
        found = storage_views.get(sid)
        if found is None:
            # The storage's creator defines its layout; a storage first seen through a view
            # (never happens with a checked program) falls back to that view.
            found = storage_views[sid] = View.of(meta)
        return found

    def finish(step: Step, static: Hashable) -> Step:
        prev = step.prev
        ins_init = tuple((i.position, i.view, i.step.init_id if i.step else -1) for i in step.inputs)
        ins_value = tuple((i.position, i.view, i.step.value_id if i.step else -1) for i in step.inputs)
        draw_value: Hashable = None
        if isinstance(step.draw, PortableKey):
            draw_value = ("key", portable_seed, step.draw.stream, step.draw.position)
        elif step.draw is not None:
            draw_value = ("gen", step.draw)
        step.init_id = intern((static, step.out, step.view, prev.init_id if prev else -1, ins_init))
        step.value_id = intern((static, step.out, step.view, prev.value_id if prev else -1, ins_value, draw_value))
        return step

    for i, ins in enumerate(program):
        if isinstance(ins, Call):
            info = facts.infos[i]
            names = info.arg_names
            written = facts.written_storages(i, ins)
            written_positions = {pos for pos, _ in written}
            inputs: list[Input] = []
            for pos, ref in _ref_positions(ins, names):
                if pos in written_positions:
                    continue  # the written argument: its old contents enter as `prev`, or not at all
                meta = facts.values[ref]
                inputs.append(Input(pos, View.of(meta), current.get(meta.storage)))
            draw: int | PortableKey | None = None
            key = portable_key_of(ins, info)
            if key is not None:
                draw = key
            elif draws_from_generator(ins, info):
                gen = generator_of(ins, info)
                draw = position.get(gen, unseeded)
                shapes = tuple(View.of(facts.values[r]) for _, r in _ref_positions(ins, names))
                outs = tuple(View.of(facts.values[o]) for o in ins.outs if o is not None)
                consumed: Hashable = ()
                if info.value_dependent_random:
                    consumed = tuple(inp.step.value_id if inp.step else -1 for inp in inputs)
                position[gen] = intern(("draw", draw, _canon_call(ins), shapes, outs, consumed))
                after[(gen, i)] = position[gen]
            static = _canon_call(ins)
            inputs_t = tuple(inputs)
            for k, o in enumerate(ins.outs):
                if o is None:
                    continue
                meta = facts.values[o]
                sid = meta.storage
                if facts.storage_creator.get(sid) == i:
                    view = View.of(meta)
                    storage_views[sid] = view
                    current[sid] = finish(Step(i, ins, k, view, view, None, inputs_t, draw), static)
            for pos, sid in written:
                ref = arg_at(ins, names, pos)
                meta = facts.values[ref.id]
                overwrites = pos != 0 or info.overwrites_self  # out= arguments are written, not read
                whole = storage_view(sid, meta)
                view = View.of(meta)
                prev = None if overwrites and meta.covers(facts.storage_nbytes[sid]) else current.get(sid)
                current[sid] = finish(Step(i, ins, pos, view, whole, prev, inputs_t, draw), static)
        elif isinstance(ins, Literal):
            meta = facts.values[ins.out]
            view = View.of(meta)
            storage_views[meta.storage] = view
            static = ("literal", ins.dtype, tuple(ins.shape), hashlib.sha256(ins.data).digest())
            current[meta.storage] = finish(Step(i, ins, 0, view, view, None, (), None), static)
        elif isinstance(ins, RngSeed):
            position[ins.gen] = intern(("seed", ins.seed))
            after[(ins.gen, i)] = position[ins.gen]
        elif isinstance(ins, RngSetState):
            position[ins.gen] = intern(("state", hashlib.sha256(ins.state).digest()))
            after[(ins.gen, i)] = position[ins.gen]
        elif isinstance(ins, RngRestore):
            position[ins.gen] = after.get((ins.gen, ins.after), unseeded)
            after[(ins.gen, i)] = position[ins.gen]

    tensors: dict[str, TensorLineage] = {}
    for entry in recipe.tensors:
        meta = facts.values[entry.value]
        step = current.get(meta.storage)
        view = View.of(meta)
        whole = storage_views.get(meta.storage, view)
        init_id = intern(("tensor", step.init_id if step else -1, view))
        value_id = intern(("tensor", step.value_id if step else -1, view))
        tensors[entry.name] = TensorLineage(entry, step, view, whole, init_id, value_id)
    return Lineage(recipe, facts, tensors)
