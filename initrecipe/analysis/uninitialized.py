"""Which tensors replay leaves (fully or partly) uninitialized, as eager does: the one decision
behind ``show``'s ``uninitialized``, ``check``'s warnings, ``record``'s
:class:`~initrecipe.errors.UninitializedWarning` and ``diff``'s ``initialized`` changes
(:func:`uninitialized_tensors`)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from initrecipe.analysis.describe import Describer
from initrecipe.analysis.lineage import Lineage, Step, TensorLineage, View
from initrecipe.program.ir import Call
from initrecipe.program.operators import op_info
from initrecipe.support.display import dtype_text, shape_text

__all__ = ["Uninitialized", "uninitialized_tensors", "uninitialized_elements"]


@dataclass(frozen=True, slots=True)
class Uninitialized:
    """A tensor replay leaves (fully or partly) uninitialized, as eager does: ``elements`` of its
    ``numel`` elements hold whatever memory held, because no instruction wrote them (``None``:
    some of them, not counted; a storage over the counting limit)."""

    name: str
    shape: tuple[int, ...]
    dtype: torch.dtype
    numel: int
    elements: int | None

    @property
    def partly(self) -> bool:
        return self.elements != self.numel

    @property
    def why(self) -> str:
        """Why, and what to do, in one sentence."""
        if not self.partly:
            return ("uninitialized: written by no instruction; eager gives whatever memory holds: "
                    "initialize it in the constructor or with init_weights")
        count = "some" if self.elements is None else f"{self.elements:,} of {self.numel:,}"
        return (f"partly uninitialized: {count} elements written by no instruction; eager gives whatever "
                "memory holds there: initialize all of it in the constructor or with init_weights")

    def text(self) -> str:
        """``name (shape) dtype: why`` (the name as stored: escape it before printing)."""
        return f"`{self.name}` {shape_text(self.shape)} {dtype_text(self.dtype)} {self.why}"


def uninitialized_tensors(lineage: Lineage, describer: Describer | None = None) -> list[Uninitialized]:
    """Every tensor name of a recipe whose values replay would leave (fully or partly)
    uninitialized, in recipe order; tied names are listed each.

    The one decision behind ``show``'s ``uninitialized``, ``check``'s warnings, ``record``'s
    :class:`~initrecipe.errors.UninitializedWarning` and ``diff``'s ``initialized`` changes.
    Partial writes are counted element by element (a mask of the storage, built only for a
    storage that is partly written; at most :data:`_MASK_LIMIT` bytes, above which the count is
    ``None``).  Writes through index tensors (``index_put_``, ``scatter_``, ``masked_fill_``:
    their reach depends on data) count as writing nothing.  Not traced: values computed *from*
    partly uninitialized tensors (a ``copy_`` of a half-written buffer counts as written),
    read-modify-write ops on uninitialized inputs (``add_(torch.empty(...))``) and the bytes a
    ``resize_`` adds to a storage.

    Example:
        >>> import initrecipe, torch, warnings
        >>> from initrecipe.analysis.lineage import analyse
        >>> fn = lambda: torch.nn.ParameterDict({"w": torch.nn.Parameter(torch.empty(3, 4))})
        >>> with warnings.catch_warnings():
        ...     warnings.simplefilter("ignore", initrecipe.UninitializedWarning)
        ...     recipe = initrecipe.record(fn, seed=0)
        >>> [(u.name, u.elements, u.numel) for u in uninitialized_tensors(analyse(recipe))]
        [('w', 12, 12)]
    """
    describer = describer if describer is not None else Describer()
    by_version: dict[int, list[TensorLineage]] = {}  # the tensors of one storage share its last version
    for t in lineage:
        by_version.setdefault(id(t.step), []).append(t)
    counts: dict[str, int | None] = {}
    for tensors in by_version.values():
        found = uninitialized_elements(describer, tensors[0].step, [t.view for t in tensors])
        counts.update((t.entry.name, n) for t, n in zip(tensors, found))
    out = []
    for t in lineage:
        count = counts[t.entry.name]
        if count != 0:
            e = t.entry
            out.append(Uninitialized(e.name, e.shape, e.dtype, t.view.numel, count))
    return out


def uninitialized_elements(describer: Describer, step: Step | None, views: list[View]) -> list[int | None]:
    """For tensors showing ``views`` of one storage version ``step`` (None: never written), how
    many of each one's elements hold values no instruction wrote: 0 when none, its ``numel``
    when all; ``None`` for "some, not counted" (see :func:`uninitialized_tensors`).

    The version's history since its creation or last full write is replayed, once for all
    the views, on a mask of the storage: the first step sets it (uninitialized when
    :meth:`Describer.version` describes that step alone as ``uninitialized``), each later write that
    overwrites a view (``fill_``, ``copy_``, ``normal_``, out= arguments...) marks that view
    written, or unwritten when it copies values no instruction wrote; read-modify-write steps
    (``add_``, ``index_put_``...) leave the marks as they are.  Time: linear in the history,
    plus the mask when the history both writes and leaves unwritten.
    """
    if step is None:
        return [v.numel for v in views]
    chain: list[Step] = []
    s: Step | None = step
    while s is not None:
        chain.append(s)
        s = s.prev
    chain.reverse()
    base = chain[0]
    marks: list[tuple[View, bool]] = []
    for s in chain[1:]:
        written = _overwrite_mark(describer, s)
        if written is not None:
            marks.append((s.view, written))
    start = not describer.version(base).uninitialized
    if all(written == start for _, written in marks):
        return [0 if start else v.numel for v in views]
    return _count_unwritten(views, base.storage_view, start, marks)


def _overwrite_mark(describer: Describer, step: Step) -> bool | None:
    """For a write to part of a storage: True when it overwrites its view with values some
    instruction wrote, False when with values none wrote, None when it reads what it writes."""
    if not isinstance(step.ins, Call):
        return True
    if step.out == 0 and not op_info(step.ins.op).overwrites_self:
        return None
    as_init = describer.full_write(step)
    return not (as_init is not None and as_init.uninitialized)


_MASK_LIMIT = 1 << 27
"""Largest mask (bytes, one per storage element or byte) :func:`uninitialized_elements`
builds to count the unwritten elements of a partly written storage; larger ones are not counted."""


def _count_unwritten(tensors: list[View], storage: View, start: bool,
                     marks: list[tuple[View, bool]]) -> list[int | None]:
    """Replay ``marks`` (view, written) on a mask of the storage (initially ``start``) and count
    each tensor view's unwritten elements; None each when the mask would exceed :data:`_MASK_LIMIT`."""
    views = [storage] + [v for v, _ in marks] + tensors
    itemsize = storage.dtype.itemsize
    by_byte = any(v.dtype.itemsize != itemsize for v in views)
    size = max(_extent(*_mask_geometry(v, by_byte)) for v in views)
    if size > _MASK_LIMIT:
        return [None] * len(tensors)
    mask = torch.full((size,), start, dtype=torch.bool)
    for view, written in marks:
        shape, stride, offset = _mask_geometry(view, by_byte)
        if 0 in shape:
            continue
        # Expanded (stride-0) dimensions write the same elements again: write them once.
        shape = tuple(1 if st == 0 else n for n, st in zip(shape, stride))
        try:
            mask.as_strided(shape, stride, offset).fill_(written)
        except RuntimeError:  # a view whose elements overlap (unfold): write through their offsets
            where = torch.arange(size).as_strided(shape, stride, offset).reshape(-1)
            mask[where] = written
    counts: list[int | None] = []
    for view in tensors:
        shape, stride, offset = _mask_geometry(view, by_byte)
        if 0 in shape:
            counts.append(0)
            continue
        unwritten = ~mask.as_strided(shape, stride, offset)
        if by_byte:  # an element is unwritten when any of its bytes is
            unwritten = unwritten.reshape(-1, view.dtype.itemsize).any(dim=1)
        counts.append(int(unwritten.sum()))
    return counts


def _mask_geometry(view: View, by_byte: bool) -> tuple[tuple[int, ...], tuple[int, ...], int]:
    if not by_byte:
        return view.shape, view.stride, view.offset
    size = view.dtype.itemsize
    return (*view.shape, size), (*(st * size for st in view.stride), 1), view.offset * size


def _extent(shape: tuple[int, ...], stride: tuple[int, ...], offset: int) -> int:
    """One past the last element (or byte) a view reaches."""
    if 0 in shape:
        return offset
    return offset + sum((n - 1) * st for n, st in zip(shape, stride)) + 1
