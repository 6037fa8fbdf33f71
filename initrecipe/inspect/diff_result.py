"""What :func:`initrecipe.diff` returns: a :class:`RecipeDiff` of per-tensor changes, and how it
renders as the CLI's text and as JSON (``schema/DIFF_JSON.md``)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch

from initrecipe.analysis.uninitialized import Uninitialized
from initrecipe.export.checkpoint import Checkpoint
from initrecipe.format.recipe import Recipe
from initrecipe.format.spec import format_version_for
from initrecipe.inspect.show import TensorInfo, group_tensors, uninitialized_line
from initrecipe.support.display import count_text, dtype_text, number, pack, safe, shape_text
from initrecipe.support.namegroups import collapse

__all__ = ["Change", "ValueDiff", "TensorChange", "TensorOnly", "Side", "RecipeDiff", "DIFF_SCHEMA", "recipe_side",
           "checkpoint_side", "tensor_only"]

DIFF_SCHEMA = "initrecipe.diff/2"
"""The ``schema`` value of ``diff --json`` documents (``schema/DIFF_JSON.md``)."""


# --------------------------------------------------------------------------- the result
@dataclass(frozen=True)
class Change:
    """One difference of one tensor (or of a setting): ``field`` went from ``a`` to ``b``;
    ``text`` is the line people read (``init: normal_(mean=0.0, std=0.02 -> 0.01)``)."""

    field: str
    a: Any
    b: Any
    text: str


@dataclass(frozen=True)
class ValueDiff:
    """How two tensors' values compare: ``differing`` of ``numel`` elements differ (bitwise, or
    by more than ``tolerance``), by at most ``max_abs_diff``."""

    numel: int
    differing: int
    max_abs_diff: float
    tolerance: float | None = None

    @property
    def equal(self) -> bool:
        return self.differing == 0

    def text(self) -> str:
        how = "differ" if self.tolerance is None else f"differ by more than {number(self.tolerance)}"
        return (f"values {how}: {self.differing:,} of {self.numel:,} elements, max abs diff "
                f"{number(self.max_abs_diff)}")


@dataclass(frozen=True)
class TensorChange:
    """A name both sides have, and what differs about it."""

    name: str
    shape: tuple[int, ...]
    dtype: torch.dtype
    changes: tuple[Change, ...]
    values: ValueDiff | None = None

    @property
    def values_only(self) -> bool:
        """Only the values differ (same init, metadata and ties)."""
        return all(c.field == "values" for c in self.changes)


@dataclass(frozen=True)
class TensorOnly:
    """A name only one side has."""

    name: str
    shape: tuple[int, ...]
    dtype: torch.dtype
    kind: str | None = None
    init: str | None = None
    flags: str = ""


@dataclass(frozen=True)
class Side:
    """One side of a diff: a recipe or a checkpoint."""

    label: str
    kind: str  # "recipe" or "checkpoint"
    tensors: int
    rng: str | None = None
    seed: int | None = None
    format_version: str | None = None
    content_hash: str | None = None
    files: int = 0

    def header(self) -> str:
        if self.kind == "recipe":
            seed = "none" if self.seed is None else self.seed
            return f"(recipe: rng {self.rng}, seed {seed}, {count_text(self.tensors, 'tensor')})"
        return f"(checkpoint: {count_text(self.tensors, 'tensor')} in {count_text(self.files, 'file')})"

    def to_json(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"label": self.label, "kind": self.kind, "tensors": self.tensors}
        if self.kind == "recipe":
            doc.update(rng=self.rng, seed=self.seed, format_version=self.format_version,
                       content_hash=self.content_hash)
        else:
            doc["files"] = self.files
        return doc


@dataclass
class RecipeDiff:
    """The differences between ``a`` and ``b`` (see :func:`diff`).

    ``added``: names only ``b`` has; ``removed``: only ``a``; ``changed``: names both have that
    differ; ``unchanged``: names with the same metadata and the same values.  ``settings``: seed,
    RNG mode, format version and producer changes.  ``uninitialized_a``/``_b``: the tensors each
    recipe side leaves fully or partly uninitialized (None for a checkpoint side); a name both
    sides have whose state differs also gets an ``initialized`` change.  ``str(d)`` is the CLI's
    text.
    """

    a: Side
    b: Side
    mode: str  # "recipes", "values" (recipes, replayed) or "checkpoint"
    settings: list[Change] = field(default_factory=list)
    added: list[TensorOnly] = field(default_factory=list)
    removed: list[TensorOnly] = field(default_factory=list)
    changed: list[TensorChange] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    tolerance: float | None = None
    not_stored: int = 0
    uninitialized_a: list[Uninitialized] | None = None
    uninitialized_b: list[Uninitialized] | None = None
    _unchanged_info: dict[str, TensorInfo] = field(default_factory=dict, repr=False)

    def add_unchanged(self, name: str, info: TensorInfo | None = None) -> None:
        """Record a name whose metadata and values are the same on both sides (``info``: how a
        recipe side initializes it, for the ``--all`` listing)."""
        self.unchanged.append(name)
        if info is not None:
            self._unchanged_info[name] = info

    @property
    def identical(self) -> bool:
        """Every tensor's values and metadata are the same (settings such as the seed may differ
        without changing any tensor)."""
        return not (self.added or self.removed or self.changed)

    def __str__(self) -> str:
        return self.text()

    # ----------------------------------------------------------------- text
    def text(self, *, all: bool = False) -> str:  # noqa: A002 - mirrors the CLI's --all
        """The report: headers, settings, then ``-`` (only in a), ``+`` (only in b), ``~`` (changed)
        and, with ``all``, ``=`` (unchanged) entries, repeated layers collapsed; a summary last."""
        lines = [*pack([f"--- {safe(self.a.label)}", self.a.header()]), *pack([f"+++ {safe(self.b.label)}", self.b.header()])]
        lines.extend(c.text for c in self.settings)
        if self.tolerance is not None:
            lines.append(f"tolerance: values within {number(self.tolerance)} of each other count as equal")
        lines.extend(self._only_lines(self.removed, "-"))
        lines.extend(self._only_lines(self.added, "+"))
        for group in collapse([(c.name, _change_key(c)) for c in self.changed]):
            first = next(c for c in self.changed if c.name == group.names[0])
            lines.extend(pack(["~ " + safe(group.pattern), f"{shape_text(first.shape)} {dtype_text(first.dtype)}"]))
            for change in first.changes:
                lines.extend(pack([change.text], indent="    "))
        if all:
            lines.extend(self._unchanged_lines())
        lines.extend(self._uninitialized_lines())
        if self.not_stored:
            lines.append(f"not expected in the checkpoint: {count_text(self.not_stored, 'tied or non-persistent name')}")
        lines.append(self.summary())
        return "\n".join(lines) + "\n"

    @property
    def newly_uninitialized(self) -> list[str]:
        """Names ``a`` initializes fully and ``b`` leaves fully or partly uninitialized: what a
        meta-device flow (``b``) misses compared with the eager constructor (``a``)."""
        return [c.name for c in self.changed for x in c.changes if x.field == "initialized" and x.a == 0]

    @property
    def newly_initialized(self) -> list[str]:
        """Names ``a`` leaves fully or partly uninitialized and ``b`` initializes fully."""
        return [c.name for c in self.changed for x in c.changes if x.field == "initialized" and x.b == 0]

    def _uninitialized_lines(self) -> list[str]:
        out = []
        for side, found in (("a", self.uninitialized_a), ("b", self.uninitialized_b)):
            if found:
                out.extend(pack([f"{side}: {uninitialized_line(found)}"]))
        return out

    def _only_lines(self, items: list[TensorOnly], sigil: str) -> list[str]:
        out = []
        by_name = {t.name: t for t in items}
        for group in collapse([(t.name, (t.shape, t.dtype, t.kind, t.init, t.flags)) for t in items]):
            t = by_name[group.names[0]]
            meta = f"{shape_text(t.shape)} {dtype_text(t.dtype)}" + (f" [{t.flags}]" if t.flags else "")
            out.extend(pack([f"{sigil} {safe(group.pattern)}", meta, safe(t.init or "")]))
        return out

    def _unchanged_lines(self) -> list[str]:
        if self._unchanged_info:
            infos = [self._unchanged_info[n] for n in self.unchanged]
            out = []
            for group in group_tensors(infos):
                lines = group.lines()
                out.extend(["= " + lines[0], *lines[1:]])
            return out
        return [line for group in collapse([(n, None) for n in self.unchanged])
                for line in pack([f"= {safe(group.pattern)}", "equal"])]

    def summary(self) -> str:
        """The last line of the report."""
        if self.identical:
            what = "values" if self.mode != "recipes" else "values (same live programs)"
            return f"identical: {count_text(len(self.unchanged), 'tensor')}, same metadata and {what}"
        if self.mode == "checkpoint":
            recipe_side, ckpt_side = (self.a, self.b) if self.a.kind == "recipe" else (self.b, self.a)
            only_recipe = self.removed if self.a is recipe_side else self.added
            only_ckpt = self.added if self.a is recipe_side else self.removed
            if recipe_side.kind == ckpt_side.kind:  # two checkpoints
                return (f"{len(self.unchanged)} equal, {len(self.changed)} different, "
                        f"{len(self.removed)} only in a, {len(self.added)} only in b")
            return (f"{len(self.unchanged)} equal, {len(self.changed)} different, {len(only_recipe)} missing "
                    f"from the checkpoint, {len(only_ckpt)} not in the recipe")
        values_only = sum(c.values_only for c in self.changed)
        details = [f"{values_only} only in values"] if values_only else []
        if self.newly_uninitialized:
            details.append(f"{len(self.newly_uninitialized)} newly uninitialized")
        if self.newly_initialized:
            details.append(f"{len(self.newly_initialized)} newly initialized")
        detail = f" ({', '.join(details)})" if details else ""
        return (f"{len(self.added)} added, {len(self.removed)} removed, {len(self.changed)} changed{detail}, "
                f"{len(self.unchanged)} keep their bits")

    # ----------------------------------------------------------------- JSON
    def to_json(self) -> dict[str, Any]:
        """One JSON document (``schema/DIFF_JSON.md``)."""

        def only(t: TensorOnly) -> dict[str, Any]:
            return {"name": t.name, "shape": list(t.shape), "dtype": dtype_text(t.dtype), "kind": t.kind,
                    "init": t.init}

        def change(c: Change) -> dict[str, Any]:
            return {"field": c.field, "a": jsonable(c.a), "b": jsonable(c.b), "text": c.text}

        return {
            "schema": DIFF_SCHEMA,
            "a": self.a.to_json(),
            "b": self.b.to_json(),
            "mode": self.mode,
            "tolerance": self.tolerance,
            "identical": self.identical,
            "settings": [change(c) for c in self.settings],
            "removed": [only(t) for t in self.removed],
            "added": [only(t) for t in self.added],
            "changed": [
                {
                    "name": c.name,
                    "shape": list(c.shape),
                    "dtype": dtype_text(c.dtype),
                    "changes": [change(x) for x in c.changes],
                    "values": None if c.values is None else {
                        "numel": c.values.numel,
                        "differing": c.values.differing,
                        "max_abs_diff": jsonable(c.values.max_abs_diff),
                    },
                }
                for c in self.changed
            ],
            "unchanged": list(self.unchanged),
            "uninitialized": {
                "a": None if self.uninitialized_a is None else [_uninitialized_json(u) for u in self.uninitialized_a],
                "b": None if self.uninitialized_b is None else [_uninitialized_json(u) for u in self.uninitialized_b],
            },
            "summary": {"added": len(self.added), "removed": len(self.removed), "changed": len(self.changed),
                        "unchanged": len(self.unchanged), "newly_uninitialized": len(self.newly_uninitialized),
                        "newly_initialized": len(self.newly_initialized)},
        }


def _uninitialized_json(u: Uninitialized) -> dict[str, Any]:
    return {"name": u.name, "numel": u.numel, "uninitialized_elements": u.elements}


def _state_text(u: Uninitialized | None) -> str:
    """``initialized``, ``uninitialized``, ``partly uninitialized (6 of 12 elements)``."""
    if u is None:
        return "initialized"
    if not u.partly:
        return "uninitialized"
    return "partly uninitialized" + ("" if u.elements is None else f" ({u.elements:,} of {u.numel:,} elements)")


def initialized_change(ua: Uninitialized | None, ub: Uninitialized | None) -> Change | None:
    """The ``initialized`` change of a name whose uninitialized elements differ between the sides
    (``a``/``b``: how many are uninitialized, 0 for none, None for some not counted)."""
    count_a = 0 if ua is None else ua.elements
    count_b = 0 if ub is None else ub.elements
    if (ua is None) == (ub is None) and count_a == count_b:
        return None
    text = f"{_state_text(ua)} -> {_state_text(ub)}"
    if ub is not None and (ua is None or ua.partly):
        text += ": b's program never writes " + ("them" if ub.partly else "it")
    return Change("initialized", count_a, count_b, text)


def jsonable(value: Any) -> Any:
    """A changed field's value as JSON stores it (non-finite floats and dtypes as text, tuples as lists)."""
    if isinstance(value, float) and not math.isfinite(value):
        return repr(value)
    if isinstance(value, torch.dtype):
        return dtype_text(value)
    if isinstance(value, tuple):
        return list(value)
    return value


def _change_key(c: TensorChange) -> tuple:
    return (c.shape, c.dtype, tuple((x.field, x.text) for x in c.changes))


def recipe_side(recipe: Recipe, label: str) -> Side:
    """A recipe as one side of a diff."""
    major, minor = format_version_for(recipe.rng, recipe.program)
    return Side(label, "recipe", len(recipe.tensors), recipe.rng, recipe.seed, f"{major}.{minor}", recipe.content_hash)


def checkpoint_side(ckpt: Checkpoint, label: str) -> Side:
    """A checkpoint as one side of a diff."""
    return Side(label, "checkpoint", len(ckpt.tensors), files=len(ckpt.files))



def tensor_only(info: TensorInfo) -> TensorOnly:
    """A recipe's tensor that the other side lacks."""
    e = info.entry
    return TensorOnly(e.name, e.shape, e.dtype, e.kind, info.init_text, info.flags)

