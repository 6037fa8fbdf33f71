"""``initrecipe diff`` with a checkpoint: a recipe replayed one tensor at a time against a
safetensors checkpoint (either order), or two checkpoints tensor by tensor."""

from __future__ import annotations

import torch

from initrecipe.analysis.describe import Describer
from initrecipe.analysis.uninitialized import uninitialized_tensors
from initrecipe.export.checkpoint import Checkpoint
from initrecipe.format.recipe import Recipe, TensorEntry
from initrecipe.inspect.diff_result import (
    Change,
    RecipeDiff,
    TensorChange,
    TensorOnly,
    ValueDiff,
    checkpoint_side,
    recipe_side,
    tensor_only,
)
from initrecipe.inspect.show import TensorInfo, checked_lineage, tensor_infos
from initrecipe.inspect.value_compare import CHUNK, Tally, compare_with_stored, progress_bar
from initrecipe.runtime.replay import iter_replay
from initrecipe.support.display import dtype_text, shape_text
from initrecipe.support.malloc import return_freed_memory_to_the_os

__all__ = ["diff_checkpoint", "diff_checkpoints"]


def diff_checkpoint(recipe: Recipe, ckpt: Checkpoint, recipe_first: bool, label_r: str, label_c: str,
                    tolerance: float | None, progress: bool | None) -> RecipeDiff:
    """Replay ``recipe`` one tensor at a time, comparing each tensor with the one ``ckpt`` stores
    (``recipe_first``: the recipe is side ``a``); ``ckpt`` is closed when done."""
    return_freed_memory_to_the_os()  # each replayed tensor's pages go back when it is dropped
    side_r, side_c = recipe_side(recipe, label_r), checkpoint_side(ckpt, label_c)
    result = RecipeDiff(side_r if recipe_first else side_c, side_c if recipe_first else side_r, "checkpoint",
                        tolerance=tolerance)
    lineage = checked_lineage(recipe)
    describer = Describer()
    infos = {t.name: t for t in tensor_infos(lineage, describer)}
    if recipe_first:
        result.uninitialized_a = uninitialized_tensors(lineage, describer)
    else:
        result.uninitialized_b = uninitialized_tensors(lineage, describer)
    wanted = _sort_names(result, recipe, infos, ckpt, recipe_first)
    outcome = _compare_stored_tensors(recipe, ckpt, infos, wanted, recipe_first, tolerance, progress)
    stored = ckpt.tensors
    order = [n for n in infos if n in outcome]
    for name in order:
        changes, vd = outcome[name]
        entry = infos[name].entry
        if changes:
            result.changed.append(TensorChange(name, entry.shape, stored[name].dtype, tuple(changes), vd))
        else:
            result.unchanged.append(name)
    return result


def _sort_names(result: RecipeDiff, recipe: Recipe, infos: dict[str, TensorInfo], ckpt: Checkpoint,
                recipe_first: bool) -> set[str]:
    """Fill in ``result``'s tensors only the recipe or only the checkpoint has, and how many
    names the checkpoint need not store (ties stored once, non-persistent buffers); return the
    names both have."""
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
            only_recipe.append(tensor_only(infos[first]))
    only_ckpt = [TensorOnly(n, s.shape, s.dtype) for n, s in stored.items() if n not in infos]
    result.not_stored = sum(1 for names in groups.values() for n in names if n not in stored) - len(only_recipe)
    if recipe_first:
        result.removed, result.added = only_recipe, only_ckpt
    else:
        result.added, result.removed = only_recipe, only_ckpt
    return wanted


def _compare_stored_tensors(recipe: Recipe, ckpt: Checkpoint, infos: dict[str, TensorInfo], wanted: set[str],
                            recipe_first: bool, tolerance: float | None,
                            progress: bool | None) -> dict[str, tuple[list[Change], ValueDiff | None]]:
    """Each name of ``wanted``: its shape change, or its replayed values compared with the stored
    ones (and its dtype change); ``ckpt`` is closed when done."""
    stored = ckpt.tensors
    outcome: dict[str, tuple[list[Change], ValueDiff | None]] = {}
    comparable = set()
    for name in wanted:
        entry, s = infos[name].entry, stored[name]
        if entry.shape != s.shape:
            a, b = (shape_text(entry.shape), shape_text(s.shape)) if recipe_first else (shape_text(s.shape), shape_text(entry.shape))
            outcome[name] = ([Change("shape", a, b, f"shape: {a} -> {b}")], None)
        else:
            comparable.add(name)
    bar = progress_bar(progress, sum(stored[n].nbytes for n in comparable), "comparing")
    try:
        for entries, tensor in iter_replay(recipe, names=comparable.__contains__, draw_in_place=False):
            for entry in entries:
                if entry.name not in comparable:
                    continue
                outcome[entry.name] = _stored_changes(tensor, entry, ckpt, recipe_first, tolerance)
                if bar is not None:
                    bar.update(stored[entry.name].nbytes)
            del tensor, entries
    finally:
        if bar is not None:
            bar.close()
        ckpt.close()
    return outcome


def _stored_changes(tensor: torch.Tensor, entry: TensorEntry, ckpt: Checkpoint, recipe_first: bool,
                    tolerance: float | None) -> tuple[list[Change], ValueDiff]:
    """The dtype and values changes between a replayed tensor and the one ``ckpt`` stores under its name."""
    s = ckpt.tensors[entry.name]
    changes: list[Change] = []
    vd = compare_with_stored(tensor, ckpt, entry.name, tolerance)
    if s.dtype != entry.dtype:
        a, b = (entry.dtype, s.dtype) if recipe_first else (s.dtype, entry.dtype)
        note = (f" (values equal to the recipe's, cast to {dtype_text(s.dtype)})" if vd.equal
                else f" (compared with the recipe's values cast to {dtype_text(s.dtype)})")
        changes.append(Change("dtype", dtype_text(a), dtype_text(b),
                              f"dtype: {dtype_text(a)} -> {dtype_text(b)}{note}"))
    if not vd.equal:
        changes.append(Change("values", None, None, vd.text()))
    return changes, vd


def diff_checkpoints(ca: Checkpoint, cb: Checkpoint, label_a: str, label_b: str, tolerance: float | None,
                     progress: bool | None) -> RecipeDiff:
    """Compare two checkpoints tensor by tensor, chunk by chunk; both are closed when done."""
    result = RecipeDiff(checkpoint_side(ca, label_a), checkpoint_side(cb, label_b), "checkpoint",
                        tolerance=tolerance)
    result.removed = [TensorOnly(n, s.shape, s.dtype) for n, s in ca.tensors.items() if n not in cb.tensors]
    result.added = [TensorOnly(n, s.shape, s.dtype) for n, s in cb.tensors.items() if n not in ca.tensors]
    common = [n for n in ca.tensors if n in cb.tensors]
    bar = progress_bar(progress, sum(cb.tensors[n].nbytes for n in common), "comparing")
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
                tally = Tally(tolerance)
                for a_chunk, b_chunk in zip(ca.read_chunks(name, CHUNK), cb.read_chunks(name, CHUNK)):
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

