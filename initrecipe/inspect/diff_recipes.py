"""``initrecipe diff`` of two recipes: statically, from their programs (names, metadata, ties, each
tensor's initialization in ``nn.init`` terms and whether its values change), and with ``values=True``
by replaying both side by side."""

from __future__ import annotations

import torch

from initrecipe.analysis.describe import Describer
from initrecipe.analysis.initializers import Init
from initrecipe.analysis.uninitialized import uninitialized_tensors
from initrecipe.analysis.lineage import Interner, Step, TensorLineage
from initrecipe.format.recipe import Recipe, TensorEntry
from initrecipe.inspect.diff_result import (
    Change,
    RecipeDiff,
    TensorChange,
    ValueDiff,
    initialized_change,
    jsonable,
    recipe_side,
    tensor_only,
)
from initrecipe.inspect.show import TensorInfo, checked_lineage, tensor_infos
from initrecipe.inspect.value_compare import compare_values, progress_bar
from initrecipe.program.ir import PortableKey, RngSeed, RngSetState
from initrecipe.runtime.replay import iter_replay
from initrecipe.support.display import dtype_text, exact_number, safe, shape_text
from initrecipe.support.malloc import return_freed_memory_to_the_os

__all__ = ["diff_recipes"]


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


def _start(recipe: Recipe) -> tuple[str, int | bytes] | None:
    """How the default generator is first positioned (a seed, or a full state)."""
    for ins in recipe.program:
        if isinstance(ins, RngSeed) and ins.gen == 0:
            return ("seed", ins.seed)
        if isinstance(ins, RngSetState) and ins.gen == 0:
            return ("state", ins.state)
    return None


def _settings(ra: Recipe, rb: Recipe) -> list[Change]:
    out = []
    va, vb = recipe_side(ra, "").format_version, recipe_side(rb, "").format_version
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



def diff_recipes(ra: Recipe, rb: Recipe, label_a: str, label_b: str, values: bool, tolerance: float | None,
                 progress: bool | None) -> RecipeDiff:
    """Compare two recipes from their programs (and, with ``values``, their replayed values)."""
    interner = Interner()
    describer = Describer()
    lin_a, lin_b = checked_lineage(ra, interner), checked_lineage(rb, interner)
    infos_a = {t.name: t for t in tensor_infos(lin_a, describer)}
    infos_b = {t.name: t for t in tensor_infos(lin_b, describer)}
    result = RecipeDiff(recipe_side(ra, label_a), recipe_side(rb, label_b), "values" if values else "recipes",
                        settings=_settings(ra, rb), tolerance=tolerance)
    result.uninitialized_a = uninitialized_tensors(lin_a, describer)
    result.uninitialized_b = uninitialized_tensors(lin_b, describer)
    unset_a = {u.name: u for u in result.uninitialized_a}
    unset_b = {u.name: u for u in result.uninitialized_b}
    result.removed = [tensor_only(infos_a[n]) for n in infos_a if n not in infos_b]
    result.added = [tensor_only(infos_b[n]) for n in infos_b if n not in infos_a]
    ids: dict[frozenset[str], int] = {}
    ties_a, ties_b = _Ties(ids).add(ra), _Ties(ids).add(rb)
    pending: dict[str, list[Change]] = {}
    for name, ib in infos_b.items():
        ia = infos_a.get(name)
        if ia is None:
            continue
        changes = _metadata_changes(ia.entry, ib.entry)
        if ties_a.group_of.get(name) != ties_b.group_of.get(name):
            pa, pb = ties_a.partners(name), ties_b.partners(name)
            shown = f"tie: {_tie_text(pa, ties_a.size(name) - 1)} -> {_tie_text(pb, ties_b.size(name) - 1)}"
            changes.append(Change("tie", pa, pb, safe(shown)))
        la, lb = lin_a[name], lin_b[name]
        initialized = initialized_change(unset_a.get(name), unset_b.get(name))
        if initialized is not None:
            changes.append(initialized)
        if ia.init.key != ib.init.key:
            changes.append(Change("init", ia.init.text, ib.init.text, safe("init: " + _init_change(ia.init, ib.init))))
        elif la.value_id != lb.value_id and ia.entry.shape == ib.entry.shape and ia.entry.dtype == ib.entry.dtype:
            changes.append(Change("values", None, None, _values_reason(ra, rb, la, lb)))
        pending[name] = changes
    measured: dict[str, ValueDiff] = {}
    if values:
        comparable = {n for n in pending if infos_a[n].entry.shape == infos_b[n].entry.shape
                      and infos_a[n].entry.dtype == infos_b[n].entry.dtype}
        measured = _compare_replays(ra, rb, comparable, tolerance, progress)
    for name, changes in pending.items():
        _record(result, infos_b[name], changes, measured.get(name))
    return result


def _metadata_changes(ea: TensorEntry, eb: TensorEntry) -> list[Change]:
    """The kind, shape, dtype, ``requires_grad`` and ``persistent`` changes of a name both recipes have."""
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
            changes.append(Change(fld, jsonable(va), jsonable(vb), f"{fld}: {sa} -> {sb}"))
    return changes


def _record(result: RecipeDiff, info_b: TensorInfo, changes: list[Change], vd: ValueDiff | None) -> None:
    """Add a name's static changes to ``result``, its ``init``/``values`` changes replaced by the
    measured difference when its values were compared."""
    if vd is not None:
        static = [c for c in changes if c.field not in ("init", "values")]
        if vd.equal:
            changes = static
        else:
            kept = [c for c in changes if c.field == "init"]
            changes = static + kept + [Change("values", None, None, vd.text())]
    if changes:
        e = info_b.entry
        result.changed.append(TensorChange(e.name, e.shape, e.dtype, tuple(changes), vd))
    else:
        result.add_unchanged(info_b.name, info_b)


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


def _compare_replays(ra: Recipe, rb: Recipe, names: set[str], tolerance: float | None,
                     progress: bool | None) -> dict[str, ValueDiff]:
    """Replay both recipes side by side, one tensor at a time, comparing each name both yield.
    A tensor waits only until the other replay yields it (both orders alike: one at a time)."""
    return_freed_memory_to_the_os()
    total = sum(t.nbytes for t in rb.tensors if t.name in names)
    bar = progress_bar(progress, total, "comparing")
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

