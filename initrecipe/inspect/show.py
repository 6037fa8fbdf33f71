"""``initrecipe show``: what a recipe holds and how each tensor is initialized.

:func:`summarize` reads a recipe without replaying it and returns a :class:`RecipeSummary`:
settings, counts, sizes by dtype, and one :class:`TensorGroup` per set of tensors with the same
initialization, shape, dtype and kind, repeated layers collapsed
(``model.layers.{0..15}.mlp.up_proj.weight``).  The summary renders as text for a terminal
(:meth:`RecipeSummary.text`, 80 columns), as stable one-line-per-tensor text for ``git diff``
(:meth:`RecipeSummary.textconv`) and as one JSON document (:meth:`RecipeSummary.to_json`,
``schema/SHOW_JSON.md``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from initrecipe.analysis.describe import Describer
from initrecipe.analysis.initializers import Init
from initrecipe.analysis.uninitialized import Uninitialized, uninitialized_tensors
from initrecipe.support.display import count_text, dtype_text, pack, safe, shape_text, size_text
from initrecipe.support.gcpause import pausing_gc
from initrecipe.analysis.lineage import Interner, Lineage, analyse
from initrecipe.support.namegroups import collapse
from initrecipe.program.ir import Call, GenRef, PortableKey
from initrecipe.format.recipe import Recipe, TensorEntry, set_uninitialized_finder
from initrecipe.format.spec import format_version_for
from initrecipe.analysis.infer import infer_facts
from initrecipe.runtime.replay import sliceable_names
from initrecipe.runtime.replay_plan import check_entries

__all__ = ["TensorInfo", "TensorGroup", "RecipeSummary", "summarize", "tensor_infos", "find_uninitialized",
           "uninitialized_line", "SHOW_SCHEMA"]

SHOW_SCHEMA = "initrecipe.show/1"
"""The ``schema`` value of ``show --json`` documents (``schema/SHOW_JSON.md``)."""


@dataclass(frozen=True)
class TensorInfo:
    """One tensor name: its table entry, its initialization, and the name it is tied to (the first
    name of its tie group, for the others)."""

    entry: TensorEntry
    init: Init
    tied_to: str | None

    @property
    def name(self) -> str:
        return self.entry.name

    @property
    def flags(self) -> str:
        """``buffer``, ``buffer, non-persistent``, ``requires_grad=False``; empty for a trainable parameter."""
        e = self.entry
        if e.kind == "buffer":
            return "buffer" if e.persistent else "buffer, non-persistent"
        return "" if e.requires_grad else "requires_grad=False"

    @property
    def init_text(self) -> str:
        return f"= {self.tied_to} (tied)" if self.tied_to is not None else self.init.text

    @property
    def group_key(self) -> tuple:
        e = self.entry
        how = ("tied", self.tied_to) if self.tied_to is not None else self.init.key
        return (how, e.shape, e.dtype, e.kind, e.persistent, e.requires_grad)


@dataclass(frozen=True)
class TensorGroup:
    """Tensors alike in all but their layer index: ``pattern`` names them all."""

    pattern: str
    members: tuple[TensorInfo, ...]

    @property
    def first(self) -> TensorInfo:
        return self.members[0]

    def lines(self, indent: str = "") -> list[str]:
        t = self.first
        meta = f"{shape_text(t.entry.shape)} {dtype_text(t.entry.dtype)}"
        if t.flags:
            meta += f" [{t.flags}]"
        return pack([safe(self.pattern), meta, safe(t.init_text)], indent=indent)


def tensor_infos(lineage: Lineage, describer: Describer) -> list[TensorInfo]:
    """A :class:`TensorInfo` for every name of the recipe, in recipe order."""
    first_of: dict[int, str] = {}
    out = []
    for t in lineage:
        source = first_of.setdefault(t.entry.value, t.entry.name)
        out.append(TensorInfo(t.entry, describer.tensor(t), None if source == t.entry.name else source))
    return out


def group_tensors(infos: list[TensorInfo]) -> list[TensorGroup]:
    """Collapse tensors with equal :attr:`TensorInfo.group_key` and names that differ in layer indices."""
    by_name = {t.name: t for t in infos}
    return [TensorGroup(g.pattern, tuple(by_name[n] for n in g.names))
            for g in collapse([(t.name, t.group_key) for t in infos])]


class RecipeSummary:
    """What ``initrecipe show`` reports about one recipe (see :func:`summarize`)."""

    def __init__(self, recipe: Recipe, label: str, infos: list[TensorInfo], portable: dict[str, Any] | None,
                 uninitialized: list[Uninitialized] | None = None) -> None:
        self.recipe = recipe
        self.label = label
        self.tensors = infos
        self.groups = group_tensors(infos)
        self.portable = portable
        self.uninitialized = uninitialized if uninitialized is not None else []

    # ----------------------------------------------------------------- figures
    @property
    def format_version(self) -> str:
        major, minor = format_version_for(self.recipe.rng, self.recipe.program)
        return f"{major}.{minor}"

    def by_dtype(self) -> dict[str, dict[str, int]]:
        """dtype name -> tensors, elements and bytes (tied names counted once)."""
        out: dict[str, dict[str, int]] = {}
        seen: set[int] = set()
        for t in self.recipe.tensors:
            if t.value in seen:
                continue
            seen.add(t.value)
            row = out.setdefault(dtype_text(t.dtype), {"tensors": 0, "elements": 0, "bytes": 0})
            row["tensors"] += 1
            row["elements"] += t.numel
            row["bytes"] += t.nbytes
        return out

    def counts(self) -> dict[str, int]:
        entries = self.recipe.tensors
        return {
            "names": len(entries),
            "distinct": len({t.value for t in entries}),
            "parameters": sum(t.kind == "parameter" for t in entries),
            "buffers": sum(t.kind == "buffer" for t in entries),
            "non_persistent_buffers": sum(t.kind == "buffer" and not t.persistent for t in entries),
            "tie_groups": len(self.tie_groups()),
        }

    def tie_groups(self) -> list[list[str]]:
        groups: dict[int, list[str]] = {}
        for t in self.recipe.tensors:
            groups.setdefault(t.value, []).append(t.name)
        return [names for names in groups.values() if len(names) > 1]

    # ----------------------------------------------------------------- renderings
    def header_lines(self) -> list[str]:
        r = self.recipe
        c = self.counts()
        seed = "none" if r.seed is None else str(r.seed)
        lines = [
            f"recipe: {safe(self.label)}",
            f"format {self.format_version}   rng {r.rng}   seed {seed}   {count_text(r.num_ops, 'op')}   "
            f"{count_text(r.generators, 'generator')}",
            f"hash: {r.content_hash}",
        ]
        buffers = count_text(c["buffers"], "buffer")
        if c["non_persistent_buffers"]:
            buffers += f" ({c['non_persistent_buffers']} non-persistent)"
        ties = count_text(c["tie_groups"], "tie group")
        lines.append(f"tensors: {c['names']} names, {c['distinct']} distinct, {ties}")
        lines.append(f"  {count_text(c['parameters'], 'parameter')}, {buffers}")
        rows = self.by_dtype()
        elements = sum(row["elements"] for row in rows.values())
        lines.append(f"size: {elements:,} elements, {size_text(r.total_bytes)}")
        for dtype, row in rows.items():
            lines.append(f"  {dtype}: {count_text(row['tensors'], 'tensor')}, {row['elements']:,} elements, "
                         f"{size_text(row['bytes'])}")
        if self.uninitialized:
            lines.extend(pack([uninitialized_line(self.uninitialized), "(`initrecipe check` lists them)"]))
        if self.portable is not None:
            p = self.portable
            lines.append(f"portable draws: {p['portable_draws']}   pinned draws (torch's stream): "
                         f"{p['pinned_draws']}   sliceable: {len(p['sliceable'])}/{c['names']}")
        return lines

    def text(self, *, tensors: bool = True) -> str:
        """The terminal report: the header, then one entry per group (each line fits 80 columns
        unless a single name is longer)."""
        lines = self.header_lines()
        if tensors:
            lines.append("")
            for group in self.groups:
                lines.extend(group.lines())
        return "\n".join(lines) + "\n"

    def textconv(self) -> str:
        """Stable, line-oriented text for ``git diff``: settings, then one line per tensor name."""
        r = self.recipe
        lines = [
            f"format {self.format_version}",
            f"rng {r.rng}",
            f"seed {'none' if r.seed is None else r.seed}",
            f"generators {r.generators}",
            f"hash {r.content_hash}",
        ]
        for t in self.tensors:
            meta = f"{shape_text(t.entry.shape)} {dtype_text(t.entry.dtype)}"
            if t.flags:
                meta += f" [{t.flags}]"
            lines.append(f"{safe(t.name)}  {meta}  {safe(t.init_text)}")
        return "\n".join(lines) + "\n"

    def to_json(self) -> dict[str, Any]:
        """One JSON document (``schema/SHOW_JSON.md``)."""
        r = self.recipe
        group_of = {t.name: i for i, g in enumerate(self.groups) for t in g.members}
        doc: dict[str, Any] = {
            "schema": SHOW_SCHEMA,
            "recipe": self.label,
            "format_version": self.format_version,
            "rng": r.rng,
            "seed": r.seed,
            "content_hash": r.content_hash,
            "producer": dict(r.producer),
            "num_ops": r.num_ops,
            "generators": r.generators,
            "counts": self.counts(),
            "by_dtype": self.by_dtype(),
            "total_elements": sum(row["elements"] for row in self.by_dtype().values()),
            "total_bytes": r.total_bytes,
            "tie_groups": self.tie_groups(),
        }
        if self.portable is not None:
            doc["portable"] = self.portable
        doc["groups"] = [
            {
                "pattern": g.pattern,
                "names": [t.name for t in g.members],
                "shape": list(g.first.entry.shape),
                "dtype": dtype_text(g.first.entry.dtype),
                "kind": g.first.entry.kind,
                "persistent": g.first.entry.persistent,
                "requires_grad": g.first.entry.requires_grad,
                "tied_to": g.first.tied_to,
                "init": init_json(g.first.init),
            }
            for g in self.groups
        ]
        doc["tensors"] = [
            {
                "name": t.name,
                "kind": t.entry.kind,
                "shape": list(t.entry.shape),
                "dtype": dtype_text(t.entry.dtype),
                "requires_grad": t.entry.requires_grad,
                "persistent": t.entry.persistent,
                "tied_to": t.tied_to,
                "init": t.init.text,
                "group": group_of[t.name],
            }
            for t in self.tensors
        ]
        return doc


def init_json(init: Init) -> dict[str, Any]:
    """An :class:`Init` as JSON: ``{"function", "params", "text"}`` (params as shown)."""
    return {"function": init.function, "params": {p.name or "value": p.shown for p in init.params}, "text": init.text}


def _portable_figures(recipe: Recipe) -> dict[str, Any]:
    portable = pinned = 0
    for ins in recipe.program:
        if isinstance(ins, Call):
            for a in ins.kwargs.values():
                portable += isinstance(a, PortableKey)
                pinned += isinstance(a, GenRef)
            for a in ins.args:
                portable += isinstance(a, PortableKey)
                pinned += isinstance(a, GenRef)
    sliced = sliceable_names(recipe)
    return {
        "portable_draws": portable,
        "pinned_draws": pinned,
        "sliceable": [t.name for t in recipe.tensors if t.name in sliced],
    }


def checked_lineage(recipe: Recipe, interner: Interner | None = None) -> Lineage:
    """Shape-propagate and check a recipe (as a replay would, allocating nothing), then analyse it."""
    facts = infer_facts(recipe.program, recipe.generators, rng=recipe.rng)
    check_entries(recipe, facts)
    return analyse(recipe, interner=interner, facts=facts)


@pausing_gc
def find_uninitialized(recipe: Recipe) -> list[Uninitialized]:
    """The tensors replay would leave fully or partly uninitialized (checked as :func:`summarize`
    checks; :func:`initrecipe.analysis.uninitialized.uninitialized_tensors` decides).  ``recipe.uninitialized``
    caches it."""
    return uninitialized_tensors(checked_lineage(recipe))


set_uninitialized_finder(find_uninitialized)


@pausing_gc
def summarize(recipe: Recipe, *, label: str | None = None, interner: Interner | None = None,
              describer: Describer | None = None) -> RecipeSummary:
    """Describe a recipe for ``show``: settings, counts, and how every tensor is initialized.

    Args:
        recipe: a loaded recipe (its program is checked on the meta device; nothing is replayed).
        label: how to name the recipe in the report (a path).

    Example:
        >>> import initrecipe, torch
        >>> from initrecipe.inspect.show import summarize
        >>> s = summarize(initrecipe.record(lambda: torch.nn.Linear(4, 2), seed=0))
        >>> [g.lines()[0] for g in s.groups]
        ['weight  (2, 4) float32  kaiming_uniform_(a=sqrt(5))', 'bias  (2,) float32  uniform_(a=-1/sqrt(4), b=1/sqrt(4))']
    """
    lineage = checked_lineage(recipe, interner)
    describer = describer if describer is not None else Describer()
    infos = tensor_infos(lineage, describer)
    portable = _portable_figures(recipe) if recipe.rng == "portable" else None
    uninitialized = uninitialized_tensors(lineage, describer)
    return RecipeSummary(recipe, label if label is not None else "<recipe>", infos, portable, uninitialized)


def uninitialized_line(found: list[Uninitialized], limit: int = 3) -> str:
    """``uninitialized: 2 tensors, `w`, `b` (partly)``: the first ``limit`` names and a count of the
    rest (names escaped for printing)."""
    shown = [f"`{safe(u.name)}`" + (" (partly)" if u.partly else "") for u in found[:limit]]
    more = f" and {len(found) - limit} more" if len(found) > limit else ""
    return f"uninitialized: {count_text(len(found), 'tensor')}, {', '.join(shown)}{more}"

