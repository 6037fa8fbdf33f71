"""``initrecipe diff``: what changed between two recipes, or between a recipe and a checkpoint.

:func:`diff` compares

* two recipes **statically** (nothing is replayed): names, metadata, ties, and each tensor's live
  program (:mod:`initrecipe.analysis.lineage`) in ``nn.init`` terms (:mod:`initrecipe.analysis.describe`), plus
  whether its values change: in ``torch`` mode a tensor whose init is unchanged still gets new
  values when the draws of torch's generator before it changed (an added layer, one more
  overwritten ``reset_parameters``), in ``portable`` mode only when its seed, stream key or
  program changed.  Unchanged tensors keep their bits.  With ``values=True`` both recipes are
  replayed one tensor at a time and the values compared;
* a recipe with a safetensors checkpoint (a file or a ``save_pretrained`` folder): the recipe is
  replayed one tensor at a time, each tensor compared with the stored one (bitwise, or within
  ``tolerance``) and dropped, so memory stays near the largest tensor.  Ties count as
  ``save_pretrained`` stores them (any one name of a tie group will do); non-persistent buffers
  need not be stored;
* two checkpoints, tensor by tensor.

The result, a :class:`RecipeDiff`, renders as the CLI's text (``str()``, 80 columns, repeated
layers collapsed) and as one JSON document (:meth:`RecipeDiff.to_json`, ``schema/DIFF_JSON.md``).
"""

from __future__ import annotations

import math
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

import torch

from initrecipe.export.checkpoint import Checkpoint, looks_like_checkpoint, open_checkpoint
from initrecipe.analysis.describe import Describer, Init, Uninitialized, uninitialized_tensors
from initrecipe.support.display import count_text, dtype_text, exact_number, number, pack, safe, shape_text
from initrecipe.errors import RecipeError
from initrecipe.analysis.lineage import Interner, Step, TensorLineage
from initrecipe.support.namegroups import collapse
from initrecipe.program.ir import PortableKey, RngSeed, RngSetState
from initrecipe.format.recipe import Recipe, format_version_for, load
from initrecipe.inspect.show import TensorInfo, checked_lineage, group_tensors, tensor_infos, uninitialized_line

__all__ = ["Change", "ValueDiff", "TensorChange", "TensorOnly", "Side", "RecipeDiff", "diff", "compare_values",
           "DIFF_SCHEMA"]

DIFF_SCHEMA = "initrecipe.diff/2"
"""The ``schema`` value of ``diff --json`` documents (``schema/DIFF_JSON.md``)."""

Source = Union[Recipe, str, os.PathLike, bytes]


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
            return {"field": c.field, "a": _jsonable(c.a), "b": _jsonable(c.b), "text": c.text}

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
                        "max_abs_diff": _jsonable(c.values.max_abs_diff),
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


def _initialized_change(ua: Uninitialized | None, ub: Uninitialized | None) -> Change | None:
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


def _jsonable(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return repr(value)
    if isinstance(value, torch.dtype):
        return dtype_text(value)
    if isinstance(value, tuple):
        return list(value)
    return value


def _change_key(c: TensorChange) -> tuple:
    return (c.shape, c.dtype, tuple((x.field, x.text) for x in c.changes))


# --------------------------------------------------------------------------- comparing values
_CHUNK = 1 << 22  # elements per step of a value comparison (bounds its temporary memory)
_BITS = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}


def _bits(t: torch.Tensor) -> torch.Tensor:
    if t.dtype == torch.bool:
        return t.view(torch.uint8)
    if t.dtype.is_complex:
        return torch.view_as_real(t).flatten().view(_BITS[t.dtype.itemsize // 2])
    return t.view(_BITS[t.dtype.itemsize]) if t.dtype.itemsize in _BITS else t


class _Tally:
    """Counts differing elements and the largest difference, chunk by chunk."""

    def __init__(self, tolerance: float | None) -> None:
        self.tolerance = tolerance
        self.numel = 0
        self.differing = 0
        self.worst = 0.0

    def add(self, a: torch.Tensor, b: torch.Tensor) -> None:
        """Compare two 1-D chunks of one dtype and length."""
        self.numel += a.numel()
        if self.tolerance is None and torch.equal(_bits(a), _bits(b)):
            return
        ne = _bits(a) != _bits(b)
        if a.dtype.is_complex:
            ne = ne.view(-1, 2).any(dim=1)
        if not bool(ne.any()):
            return
        if a.dtype.is_floating_point or a.dtype.is_complex:
            wide = torch.complex128 if a.dtype.is_complex else torch.float64
            d = (a.to(wide) - b.to(wide)).abs()
            both_nan = (torch.isnan(a) & torch.isnan(b)) if not a.dtype.is_complex else torch.zeros_like(ne)
            d = torch.where(torch.isnan(d) & ~both_nan, torch.full_like(d, math.inf), d)
            d = torch.where(both_nan, torch.zeros_like(d), d)
        else:
            d = (a.to(torch.float64) - b.to(torch.float64)).abs()
        if self.tolerance is not None:
            ne = ne & (d > self.tolerance)
        count = int(ne.sum())
        if count:
            self.differing += count
            self.worst = max(self.worst, float(d[ne].max()))

    def result(self) -> ValueDiff:
        return ValueDiff(self.numel, self.differing, self.worst, self.tolerance)


def compare_values(x: torch.Tensor, y: torch.Tensor, tolerance: float | None = None) -> ValueDiff:
    """Compare two tensors of one shape and dtype, chunk by chunk (little extra memory).

    Without ``tolerance`` elements are equal when their bits are (``-0.0`` differs from ``0.0``,
    NaNs with the same payload are equal); with it, when ``|x - y| <= tolerance`` or both are NaN.
    """
    if x.shape != y.shape or x.dtype != y.dtype:
        raise ValueError(f"cannot compare {x.dtype} {tuple(x.shape)} with {y.dtype} {tuple(y.shape)}")
    xf, yf = x.detach().reshape(-1), y.detach().reshape(-1)
    tally = _Tally(tolerance)
    if tolerance is None and torch.equal(_bits(xf), _bits(yf)):
        return ValueDiff(xf.numel(), 0, 0.0, tolerance)
    for start in range(0, xf.numel(), _CHUNK):
        tally.add(xf[start:start + _CHUNK], yf[start:start + _CHUNK])
    return tally.result()


def _compare_with_stored(x: torch.Tensor, ckpt: Checkpoint, name: str, tolerance: float | None) -> ValueDiff:
    """Compare a tensor with a stored one read chunk by chunk (``x`` is cast chunk by chunk to
    the stored dtype): memory for one chunk, not a second tensor."""
    dtype = ckpt.tensors[name].dtype
    xf = x.detach().reshape(-1)
    tally = _Tally(tolerance)
    start = 0
    for chunk in ckpt.read_chunks(name, _CHUNK):
        mine = xf[start:start + chunk.numel()]
        tally.add(mine if mine.dtype == dtype else mine.to(dtype), chunk)
        start += chunk.numel()
    return tally.result()


# --------------------------------------------------------------------------- opening inputs
def _open(source: Source, label: str) -> Recipe | Checkpoint:
    if isinstance(source, Recipe):
        return source
    if isinstance(source, (bytes, bytearray, memoryview)):
        return load(source)
    path = Path(os.fspath(source))
    if not path.exists():
        raise RecipeError(f"`{path}` does not exist")
    if looks_like_checkpoint(path):
        return open_checkpoint(path)
    return load(path)


def _label(source: Source, default: str) -> str:
    if isinstance(source, (str, os.PathLike)):
        return os.fspath(source)
    return default


def _recipe_side(recipe: Recipe, label: str) -> Side:
    major, minor = format_version_for(recipe.rng, recipe.program)
    return Side(label, "recipe", len(recipe.tensors), recipe.rng, recipe.seed, f"{major}.{minor}", recipe.content_hash)


def _checkpoint_side(ckpt: Checkpoint, label: str) -> Side:
    return Side(label, "checkpoint", len(ckpt.tensors), files=len(ckpt.files))


# --------------------------------------------------------------------------- recipe against recipe
def _tie_text(names: list[str], total: int) -> str:
    if not names:
        return "not tied"
    shown = ", ".join(f"`{n}`" for n in names[:3])
    return f"tied to {shown}" + (f" and {total - 3} more" if total > 3 else "")


def _init_change(a: Init, b: Init) -> str:
    """``normal_(mean=0.0, std=0.02 -> 0.01)`` when one initializer's parameters changed, else
    ``a -> b``."""
    if a.function == b.function and a.params and [p.name for p in a.params] == [p.name for p in b.params]:
        parts = []
        for pa, pb in zip(a.params, b.params):
            prefix = f"{pa.name}=" if pa.name else ""
            if pa.value == pb.value:
                parts.append(prefix + pa.shown)
            else:
                sa, sb = pa.shown, pb.shown
                if sa == sb:
                    sa, sb = exact_number(pa.value), exact_number(pb.value)
                parts.append(f"{prefix}{sa} -> {sb}")
        if a.text.startswith(f"{a.function}(") and a.text.endswith(")") and b.text.endswith(")"):
            return f"{a.function}({', '.join(parts)})"
    return f"{a.text} -> {b.text}"


def _streams(t: TensorLineage, limit: int = 10_000) -> set[str]:
    """The portable streams a tensor's live program draws from."""
    out: set[str] = set()
    seen: set[int] = set()
    stack: list[Step | None] = [t.step]
    while stack and len(seen) < limit:
        step = stack.pop()
        if step is None or id(step) in seen:
            continue
        seen.add(id(step))
        if isinstance(step.draw, PortableKey):
            out.add(step.draw.stream)
        stack.append(step.prev)
        stack.extend(i.step for i in step.inputs)
    return out


def _values_reason(ra: Recipe, rb: Recipe, ta: TensorLineage, tb: TensorLineage) -> str:
    if ra.rng != rb.rng:
        return f"values differ: same init, rng {ra.rng} -> {rb.rng}"
    if ra.seed != rb.seed:
        return f"values differ: same init, seed {ra.seed} -> {rb.seed}"
    if ra.rng == "torch" and _start(ra) != _start(rb):
        return "values differ: same init, torch's generator starts from another state"
    if ra.rng == "portable":
        sa, sb = _streams(ta), _streams(tb)
        if sa != sb:
            before = ", ".join(f"`{s}`" for s in sorted(sa)) or "none"
            after = ", ".join(f"`{s}`" for s in sorted(sb)) or "none"
            return f"values differ: same init, drawn from stream {before} -> {after}"
        return "values differ: same init, its pinned draws come at another position of torch's random stream"
    return "values differ: same init, drawn at another position of torch's random stream"


def _start(recipe: Recipe) -> Any:
    """How the default generator is first positioned (a seed, or a full state)."""
    for ins in recipe.program:
        if isinstance(ins, RngSeed) and ins.gen == 0:
            return ("seed", ins.seed)
        if isinstance(ins, RngSetState) and ins.gen == 0:
            return ("state", ins.state)
    return None


def _settings(ra: Recipe, rb: Recipe) -> list[Change]:
    out = []
    va, vb = _recipe_side(ra, "").format_version, _recipe_side(rb, "").format_version
    if va != vb:
        out.append(Change("format_version", va, vb, f"format: {va} -> {vb}"))
    if ra.rng != rb.rng:
        out.append(Change("rng", ra.rng, rb.rng, f"rng: {ra.rng} -> {rb.rng}"))
    if ra.seed != rb.seed:
        out.append(Change("seed", ra.seed, rb.seed, f"seed: {ra.seed} -> {rb.seed}"))
    for key in sorted(set(ra.producer) | set(rb.producer)):
        pa, pb = ra.producer.get(key), rb.producer.get(key)
        if pa != pb:
            out.append(Change(f"producer.{key}", pa, pb, safe(f"recorded with {key}: {pa} -> {pb}")))
    return out


def _only(info: TensorInfo) -> TensorOnly:
    e = info.entry
    return TensorOnly(e.name, e.shape, e.dtype, e.kind, info.init_text, info.flags)


def _diff_recipes(ra: Recipe, rb: Recipe, label_a: str, label_b: str, values: bool, tolerance: float | None,
                  progress: bool | None) -> RecipeDiff:
    interner = Interner()
    describer = Describer()
    lin_a, lin_b = checked_lineage(ra, interner), checked_lineage(rb, interner)
    infos_a = {t.name: t for t in tensor_infos(lin_a, describer)}
    infos_b = {t.name: t for t in tensor_infos(lin_b, describer)}
    result = RecipeDiff(_recipe_side(ra, label_a), _recipe_side(rb, label_b), "values" if values else "recipes",
                        settings=_settings(ra, rb), tolerance=tolerance)
    result.uninitialized_a = uninitialized_tensors(lin_a, describer)
    result.uninitialized_b = uninitialized_tensors(lin_b, describer)
    unset_a = {u.name: u for u in result.uninitialized_a}
    unset_b = {u.name: u for u in result.uninitialized_b}
    result.removed = [_only(infos_a[n]) for n in infos_a if n not in infos_b]
    result.added = [_only(infos_b[n]) for n in infos_b if n not in infos_a]
    ids: dict[frozenset[str], int] = {}
    ties_a, ties_b = _Ties(ids).add(ra), _Ties(ids).add(rb)
    pending: dict[str, list[Change]] = {}
    for name, ib in infos_b.items():
        ia = infos_a.get(name)
        if ia is None:
            continue
        ea, eb = ia.entry, ib.entry
        changes = []
        for fld, va, vb, shown in (
            ("kind", ea.kind, eb.kind, None),
            ("shape", ea.shape, eb.shape, (shape_text(ea.shape), shape_text(eb.shape))),
            ("dtype", ea.dtype, eb.dtype, (dtype_text(ea.dtype), dtype_text(eb.dtype))),
            ("requires_grad", ea.requires_grad, eb.requires_grad, None),
            ("persistent", ea.persistent, eb.persistent, None),
        ):
            if va != vb:
                sa, sb = shown if shown is not None else (str(va), str(vb))
                changes.append(Change(fld, _jsonable(va), _jsonable(vb), f"{fld}: {sa} -> {sb}"))
        if ties_a.group_of.get(name) != ties_b.group_of.get(name):
            pa, pb = ties_a.partners(name), ties_b.partners(name)
            shown = f"tie: {_tie_text(pa, ties_a.size(name) - 1)} -> {_tie_text(pb, ties_b.size(name) - 1)}"
            changes.append(Change("tie", pa, pb, safe(shown)))
        la, lb = lin_a[name], lin_b[name]
        initialized = _initialized_change(unset_a.get(name), unset_b.get(name))
        if initialized is not None:
            changes.append(initialized)
        if ia.init.key != ib.init.key:
            changes.append(Change("init", ia.init.text, ib.init.text, safe("init: " + _init_change(ia.init, ib.init))))
        elif la.value_id != lb.value_id and ea.shape == eb.shape and ea.dtype == eb.dtype:
            changes.append(Change("values", None, None, _values_reason(ra, rb, la, lb)))
        pending[name] = changes
    measured: dict[str, ValueDiff] = {}
    if values:
        comparable = {n for n in pending if infos_a[n].entry.shape == infos_b[n].entry.shape
                      and infos_a[n].entry.dtype == infos_b[n].entry.dtype}
        measured = _compare_replays(ra, rb, comparable, tolerance, progress)
    for name, changes in pending.items():
        vd = measured.get(name)
        if vd is not None:
            static = [c for c in changes if c.field not in ("init", "values")]
            if vd.equal:
                changes = static
            else:
                kept = [c for c in changes if c.field == "init"]
                changes = static + kept + [Change("values", None, None, vd.text())]
        if changes:
            e = infos_b[name].entry
            result.changed.append(TensorChange(name, e.shape, e.dtype, tuple(changes), vd))
        else:
            result.unchanged.append(name)
            result._unchanged_info[name] = infos_b[name]
    return result


class _Ties:
    """Each name's tie group, as an id comparable across recipes (computed in time linear in the
    number of names, however large a group is)."""

    def __init__(self, ids: dict[frozenset[str], int]) -> None:
        self._ids = ids
        self.group_of: dict[str, int] = {}
        self.members: dict[int, list[str]] = {}

    def add(self, recipe: Recipe) -> "_Ties":
        groups: dict[int, list[str]] = {}
        for t in recipe.tensors:
            groups.setdefault(t.value, []).append(t.name)
        for names in groups.values():
            if len(names) > 1:
                gid = self._ids.setdefault(frozenset(names), len(self._ids))
                self.members[gid] = names
                for n in names:
                    self.group_of[n] = gid
        return self

    def partners(self, name: str, limit: int = 4) -> list[str]:
        gid = self.group_of.get(name)
        if gid is None:
            return []
        out = []
        for n in self.members[gid]:
            if n != name:
                out.append(n)
                if len(out) == limit:
                    break
        return out

    def size(self, name: str) -> int:
        gid = self.group_of.get(name)
        return len(self.members[gid]) if gid is not None else 1


def _progress(enabled: bool | None, total: int, desc: str) -> Any:
    if enabled is None:
        enabled = bool(getattr(sys.stderr, "isatty", lambda: False)())
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=desc, file=sys.stderr,
                dynamic_ncols=True, leave=False)


def _compare_replays(ra: Recipe, rb: Recipe, names: set[str], tolerance: float | None,
                     progress: bool | None) -> dict[str, ValueDiff]:
    """Replay both recipes side by side, one tensor at a time, comparing each name both yield.
    A tensor waits only until the other replay yields it (both orders alike: one at a time)."""
    from initrecipe.export.convert import _return_freed_memory_to_the_os
    from initrecipe.runtime.replay import iter_replay

    _return_freed_memory_to_the_os()
    total = sum(t.nbytes for t in rb.tensors if t.name in names)
    bar = _progress(progress, total, "comparing")
    results: dict[str, ValueDiff] = {}
    iters = [iter_replay(ra, names=names.__contains__, draw_in_place=False),
             iter_replay(rb, names=names.__contains__, draw_in_place=False)]
    pending: list[dict[str, torch.Tensor]] = [{}, {}]
    done = [False, False]
    try:
        while not all(done):
            side = 0 if not done[0] and (done[1] or len(pending[0]) <= len(pending[1])) else 1
            try:
                entries, tensor = next(iters[side])
            except StopIteration:
                done[side] = True
                continue
            other = pending[1 - side]
            for entry in entries:
                if entry.name not in names:
                    continue
                match = other.pop(entry.name, None)
                if match is None:
                    pending[side][entry.name] = tensor
                    continue
                x, y = (match, tensor) if side == 1 else (tensor, match)
                results[entry.name] = compare_values(x, y, tolerance)
                if bar is not None:
                    bar.update(entry.nbytes)
            del tensor, entries
    finally:
        if bar is not None:
            bar.close()
    return results


# --------------------------------------------------------------------------- against a checkpoint
def _diff_checkpoint(recipe: Recipe, ckpt: Checkpoint, recipe_first: bool, label_r: str, label_c: str,
                     tolerance: float | None, progress: bool | None) -> RecipeDiff:
    from initrecipe.export.convert import _return_freed_memory_to_the_os
    from initrecipe.runtime.replay import iter_replay

    _return_freed_memory_to_the_os()  # each replayed tensor's pages go back when it is dropped
    side_r, side_c = _recipe_side(recipe, label_r), _checkpoint_side(ckpt, label_c)
    result = RecipeDiff(side_r if recipe_first else side_c, side_c if recipe_first else side_r, "checkpoint",
                        tolerance=tolerance)
    lineage = checked_lineage(recipe)
    describer = Describer()
    infos = {t.name: t for t in tensor_infos(lineage, describer)}
    if recipe_first:
        result.uninitialized_a = uninitialized_tensors(lineage, describer)
    else:
        result.uninitialized_b = uninitialized_tensors(lineage, describer)
    groups: dict[int, list[str]] = {}
    for t in recipe.tensors:
        groups.setdefault(t.value, []).append(t.name)
    stored = ckpt.tensors
    only_recipe = []
    wanted: set[str] = set()
    for names in groups.values():
        present = [n for n in names if n in stored]
        wanted.update(present)
        if not present and any(infos[n].entry.persistent for n in names):
            first = next(n for n in names if infos[n].entry.persistent)
            only_recipe.append(_only(infos[first]))
    only_ckpt = [TensorOnly(n, s.shape, s.dtype) for n, s in stored.items() if n not in infos]
    result.not_stored = sum(1 for names in groups.values() for n in names if n not in stored) - len(only_recipe)
    if recipe_first:
        result.removed, result.added = only_recipe, only_ckpt
    else:
        result.added, result.removed = only_recipe, only_ckpt

    outcome: dict[str, tuple[list[Change], ValueDiff | None]] = {}
    comparable = set()
    for name in wanted:
        entry, s = infos[name].entry, stored[name]
        if entry.shape != s.shape:
            a, b = (shape_text(entry.shape), shape_text(s.shape)) if recipe_first else (shape_text(s.shape), shape_text(entry.shape))
            outcome[name] = ([Change("shape", a, b, f"shape: {a} -> {b}")], None)
        else:
            comparable.add(name)
    bar = _progress(progress, sum(stored[n].nbytes for n in comparable), "comparing")
    try:
        for entries, tensor in iter_replay(recipe, names=comparable.__contains__, draw_in_place=False):
            for entry in entries:
                if entry.name not in comparable:
                    continue
                s = stored[entry.name]
                changes: list[Change] = []
                vd = _compare_with_stored(tensor, ckpt, entry.name, tolerance)
                if s.dtype != entry.dtype:
                    a, b = (entry.dtype, s.dtype) if recipe_first else (s.dtype, entry.dtype)
                    note = (f" (values equal to the recipe's, cast to {dtype_text(s.dtype)})" if vd.equal
                            else f" (compared with the recipe's values cast to {dtype_text(s.dtype)})")
                    changes.append(Change("dtype", dtype_text(a), dtype_text(b),
                                          f"dtype: {dtype_text(a)} -> {dtype_text(b)}{note}"))
                if not vd.equal:
                    changes.append(Change("values", None, None, vd.text()))
                outcome[entry.name] = (changes, vd)
                if bar is not None:
                    bar.update(s.nbytes)
            del tensor, entries
    finally:
        if bar is not None:
            bar.close()
        ckpt.close()
    order = [n for n in infos if n in outcome]
    for name in order:
        changes, vd = outcome[name]
        entry = infos[name].entry
        if changes:
            result.changed.append(TensorChange(name, entry.shape, stored[name].dtype, tuple(changes), vd))
        else:
            result.unchanged.append(name)
    return result


def _diff_checkpoints(ca: Checkpoint, cb: Checkpoint, label_a: str, label_b: str, tolerance: float | None,
                      progress: bool | None) -> RecipeDiff:
    result = RecipeDiff(_checkpoint_side(ca, label_a), _checkpoint_side(cb, label_b), "checkpoint",
                        tolerance=tolerance)
    result.removed = [TensorOnly(n, s.shape, s.dtype) for n, s in ca.tensors.items() if n not in cb.tensors]
    result.added = [TensorOnly(n, s.shape, s.dtype) for n, s in cb.tensors.items() if n not in ca.tensors]
    common = [n for n in ca.tensors if n in cb.tensors]
    bar = _progress(progress, sum(cb.tensors[n].nbytes for n in common), "comparing")
    try:
        for name in common:
            sa, sb = ca.tensors[name], cb.tensors[name]
            changes = []
            vd = None
            if sa.shape != sb.shape:
                changes.append(Change("shape", shape_text(sa.shape), shape_text(sb.shape),
                                      f"shape: {shape_text(sa.shape)} -> {shape_text(sb.shape)}"))
            elif sa.dtype != sb.dtype:
                changes.append(Change("dtype", dtype_text(sa.dtype), dtype_text(sb.dtype),
                                      f"dtype: {dtype_text(sa.dtype)} -> {dtype_text(sb.dtype)}"))
            else:
                tally = _Tally(tolerance)
                for a_chunk, b_chunk in zip(ca.read_chunks(name, _CHUNK), cb.read_chunks(name, _CHUNK)):
                    tally.add(a_chunk, b_chunk)
                vd = tally.result()
                if not vd.equal:
                    changes.append(Change("values", None, None, vd.text()))
            if changes:
                result.changed.append(TensorChange(name, sb.shape, sb.dtype, tuple(changes), vd))
            else:
                result.unchanged.append(name)
            if bar is not None:
                bar.update(sb.nbytes)
    finally:
        if bar is not None:
            bar.close()
        ca.close()
        cb.close()
    return result


# --------------------------------------------------------------------------- entry point
def diff(
    a: Source,
    b: Source,
    *,
    values: bool = False,
    tolerance: float | None = None,
    progress: bool | None = None,
) -> RecipeDiff:
    """Compare two recipes, a recipe and a checkpoint (either order), or two checkpoints.

    Args:
        a, b: a :class:`Recipe`, recipe bytes, or a path: a recipe file, a ``.safetensors`` file
            or a ``save_pretrained`` folder (with or without ``model.safetensors.index.json``).
        values: for two recipes, also replay both (one tensor at a time) and compare the values
            (without it, recipes are compared from their programs alone).
        tolerance: values within this absolute difference count as equal (default: bitwise).
        progress: a progress bar on stderr while values are compared; ``None``: when stderr is a
            terminal.

    Returns:
        A :class:`RecipeDiff`; ``.identical`` when every tensor's metadata and values match.

    Raises:
        RecipeError: an input cannot be read (missing, damaged, hostile, not a recipe or
            checkpoint); :class:`~initrecipe.CheckpointError` for checkpoints.

    Example:
        >>> import initrecipe, torch
        >>> a = initrecipe.record(lambda: torch.nn.Linear(4, 2), seed=0)
        >>> b = initrecipe.record(lambda: torch.nn.Linear(4, 3), seed=0)
        >>> d = initrecipe.diff(a, b)
        >>> d.identical, [c.name for c in d.changed]
        (False, ['weight', 'bias'])
        >>> print(d.changed[0].changes[0].text)
        shape: (2, 4) -> (3, 4)
    """
    if tolerance is not None and (isinstance(tolerance, bool) or not isinstance(tolerance, (int, float))
                                  or not tolerance >= 0):
        raise RecipeError(f"the tolerance must be a number >= 0, not {tolerance!r}")
    tolerance = None if tolerance is None else float(tolerance)
    label_a, label_b = _label(a, "a"), _label(b, "b")
    left = _open(a, label_a)
    try:
        right = _open(b, label_b)
    except BaseException:
        if isinstance(left, Checkpoint):
            left.close()
        raise
    if isinstance(left, Recipe) and isinstance(right, Recipe):
        return _diff_recipes(left, right, label_a, label_b, values, tolerance, progress)
    if isinstance(left, Recipe):
        assert isinstance(right, Checkpoint)
        return _diff_checkpoint(left, right, True, label_a, label_b, tolerance, progress)
    if isinstance(right, Recipe):
        return _diff_checkpoint(right, left, False, label_b, label_a, tolerance, progress)
    return _diff_checkpoints(left, right, label_a, label_b, tolerance, progress)

