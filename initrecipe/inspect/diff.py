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


import os
from pathlib import Path
from typing import Union

from initrecipe.errors import RecipeError
from initrecipe.export.checkpoint import Checkpoint, looks_like_checkpoint, open_checkpoint
from initrecipe.format.decode import load
from initrecipe.format.recipe import Recipe
from initrecipe.inspect.diff_checkpoint import diff_checkpoint, diff_checkpoints
from initrecipe.inspect.diff_recipes import diff_recipes
from initrecipe.inspect.diff_result import RecipeDiff

__all__ = ["diff", "Source"]

Source = Union[Recipe, str, os.PathLike, bytes]


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
        return diff_recipes(left, right, label_a, label_b, values, tolerance, progress)
    if isinstance(left, Recipe):
        assert isinstance(right, Checkpoint)
        return diff_checkpoint(left, right, True, label_a, label_b, tolerance, progress)
    if isinstance(right, Recipe):
        return diff_checkpoint(right, left, False, label_b, label_a, tolerance, progress)
    return diff_checkpoints(left, right, label_a, label_b, tolerance, progress)

