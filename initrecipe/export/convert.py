"""Turn a recipe into safetensors files, streaming: a Hugging Face style checkpoint folder
(:func:`to_safetensors`, ``initrecipe convert``) or one file of what :func:`initrecipe.replay`
returns (:func:`replay_to_file`, ``initrecipe replay -o``).  Both go through the same writer.

The folder looks like what ``transformers``' ``save_pretrained`` writes: ``model.safetensors``,
or ``model-00001-of-0000N.safetensors`` shards and ``model.safetensors.index.json`` when the
weights exceed ``max_shard_size``; with ``config=`` the model's ``config.json`` goes beside them,
so ``AutoModelForCausalLM.from_pretrained(out_dir)`` loads the replayed weights.

Shapes and dtypes are known before any tensor exists, so every file's header, and every
tensor's place in it, is fixed up front; tensors are replayed one at a time and written straight
to their offsets.  Peak memory stays near the largest tensor (twice it with a dtype cast), not
the model.

Which tensors each writes: :func:`to_safetensors` what ``model.state_dict()`` holds (non-persistent
buffers left out, each tie once under its first persistent name), so ``from_pretrained`` loads it;
:func:`replay_to_file` every tensor :func:`initrecipe.replay` returns for the same ``names`` and
``shards`` (non-persistent buffers included, each tie once under its first name).  Both write the
metadata ``format: pt``, ``initrecipe.content_hash`` (the recipe's content hash) and
``initrecipe.version``.
"""


import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Union

import torch
from tqdm import tqdm

from initrecipe._version import __version__
from initrecipe.errors import OutputExistsError, RecipeError, ReplayError
from initrecipe.export.options import parse_dtype, parse_size
from initrecipe.export.safetensors_writer import SAFETENSORS_DTYPES, Layout, StreamingSafetensorsWriter, TensorSpec, plan_layout
from initrecipe.export.shard_plan import (
    CONFIG_NAME,
    WEIGHTS_INDEX_NAME,
    ShardPlan,
    StoredTensor,
    config_bytes,
    existing_outputs,
    index_bytes,
    plan_shards,
    stored_tensors,
)
from initrecipe.export.streaming import progress_bar, stream_tensors
from initrecipe.format.decode import load
from initrecipe.format.recipe import Recipe, TensorEntry
from initrecipe.runtime.replay import iter_replay
from initrecipe.runtime.replay_plan import NameFilter, select_entries
from initrecipe.runtime.replay_shards import shard_box
from initrecipe.runtime.regions import Box, ShardRequest
from initrecipe.support.malloc import return_freed_memory_to_the_os
from initrecipe.support.output_files import (
    deferred_signals,
    fsync_dir,
    output_error,
    refuse_folder_at,
    remove_quietly,
    write_temp,
)

__all__ = ["to_safetensors", "replay_to_file", "file_metadata", "METADATA_HASH_KEY"]

RecipeSource = Union[Recipe, str, os.PathLike, bytes]

METADATA_HASH_KEY = "initrecipe.content_hash"
"""The safetensors metadata key holding the recipe's content hash (0.2.0's ``replay -o`` wrote
``initrecipe.hash``; initrecipe's readers ignore file metadata, so files with either key read alike)."""


def file_metadata(recipe: Recipe) -> dict[str, str]:
    """The ``__metadata__`` of every safetensors file initrecipe writes."""
    return {"format": "pt", METADATA_HASH_KEY: recipe.content_hash, "initrecipe.version": __version__}


def _replayed_tensors(recipe: Recipe, names: NameFilter, shards: ShardRequest) -> dict[str, TensorSpec]:
    """What :func:`initrecipe.replay` returns for ``names`` and ``shards``, as files store it: each
    distinct tensor (a value, or a value's block) once, under its first name in recipe order.
    Maps every selected name to the spec of the tensor stored for it."""
    where: dict[str, TensorSpec] = {}
    first: dict[tuple[int, Box | None], TensorSpec] = {}
    for entry in select_entries(recipe, names):
        box = shard_box(shards, entry) if shards is not None else None
        if entry.dtype not in SAFETENSORS_DTYPES:
            raise RecipeError(f"`{entry.name}` has dtype {entry.dtype}, which safetensors cannot store")
        shape = box.shape(entry.shape) if box is not None else entry.shape
        where[entry.name] = first.setdefault((entry.value, box), TensorSpec(entry.name, entry.dtype, shape))
    return where


def replay_to_file(
    recipe: RecipeSource,
    path: str | os.PathLike,
    *,
    names: NameFilter = None,
    shards: ShardRequest = None,
    device: str | torch.device = "cpu",
    max_work: float | None = None,
) -> tuple[Path, int]:
    """Replay a recipe straight into one safetensors file, one tensor at a time (``initrecipe replay -o``).

    The file holds what :func:`initrecipe.replay` returns for the same ``names`` and ``shards``,
    non-persistent buffers included (use :func:`to_safetensors` for a ``state_dict``-style
    checkpoint); tied names are stored once, under the first.  Tensors are written as soon as
    each is final, so peak memory stays near the largest tensor, not the file.  ``path`` keeps
    its old content (or nothing) until the new file is complete; a symbolic link there is
    replaced, not written through.

    Returns:
        The path written and the number of tensors stored in it.

    Raises:
        OutputWriteError: ``path`` is a folder, its folder does not exist, the disk is full, ...
            (nothing is left under ``path``'s name; the temporary file is removed).
    """
    if not isinstance(recipe, Recipe):
        recipe = load(recipe)
    path = Path(path)
    if names is not None and not callable(names) and not isinstance(names, str):
        names = list(names)  # read twice below: by the replay and by the file's plan
    # Check and plan the replay (names, shards, memory, work) before anything is created on disk.
    stream = iter_replay(recipe, device=device, names=names, shards=shards, draw_in_place=False, max_work=max_work)
    where = _replayed_tensors(recipe, names, shards)
    stored = list({id(spec): spec for spec in where.values()}.values())
    layout = plan_layout(stored, file_metadata(recipe))
    refuse_folder_at(path)
    return_freed_memory_to_the_os()
    _write_file(path, layout, stream, where, len(stored))
    return path, len(stored)


def _write_file(path: Path, layout: Layout, stream: Iterator[tuple[list[TensorEntry], torch.Tensor]],
                where: dict[str, TensorSpec], count: int) -> None:
    """Stream the replayed tensors into one new file at ``path`` (each name stored as ``where``
    says) and commit it; on any failure (a signal included) remove it, leaving ``path`` as it was."""
    writer: StreamingSafetensorsWriter | None = None
    try:
        writer = StreamingSafetensorsWriter(path, layout)
        out = writer

        def place(entries: list[TensorEntry]) -> tuple[StreamingSafetensorsWriter, TensorSpec]:
            spec = where.get(entries[0].name)
            if spec is None:  # pragma: no cover - iter_replay yields only what was asked for
                raise ReplayError(f"replay produced `{entries[0].name}`, which was not planned")
            return out, spec

        done = stream_tensors(stream, place, [writer])
        if done != count:
            raise ReplayError(f"replay produced {done} of the {count} tensors to write")
        with deferred_signals():
            writer.commit()
    except BaseException as exc:
        if writer is not None:
            writer.abort()
        if isinstance(exc, OSError) and not isinstance(exc, RecipeError):
            raise output_error(exc, path, layout.file_size) from None
        raise
    fsync_dir(path.parent)



def to_safetensors(
    recipe: RecipeSource,
    out_dir: str | os.PathLike,
    *,
    dtype: torch.dtype | str | None = None,
    max_shard_size: int | str = "5GB",
    device: str | torch.device = "cpu",
    force: bool = False,
    progress: bool | None = None,
    config: str | os.PathLike | None = None,
    max_work: float | None = None,
) -> list[Path]:
    """Replay a recipe straight into a safetensors checkpoint folder, one tensor at a time.

    Args:
        recipe: a :class:`Recipe`, or a path or bytes to :func:`initrecipe.load`.
        out_dir: the folder to write (created if missing).
        dtype: cast floating tensors to this dtype (``torch.bfloat16`` or ``"bf16"``, ...);
            integer and bool tensors keep theirs.
        max_shard_size: split into shards of at most this size (``"5GB"``, ``"500MB"``, bytes);
            a single tensor larger than this gets a shard of its own.
        device: where tensors are replayed before being written (see :func:`initrecipe.iter_replay`).
        force: overwrite an existing checkpoint in ``out_dir`` (and remove its stale shards).
        progress: show a progress bar on stderr; ``None`` shows one when stderr is a terminal.
        config: a ``transformers`` ``config.json`` (or a folder holding one) to copy beside the
            weights, so that ``from_pretrained(out_dir)`` works.  With ``dtype`` its ``dtype``
            field is set to the cast dtype.
        max_work: refuse a replay estimated at more than this many seconds of work on the
            reference CPU (default: a minute plus an allowance for the tensors written; see
            :func:`initrecipe.replay`).

    Returns:
        The files written: the weight files, then the index (if sharded), then ``config.json``.

    Raises:
        OutputExistsError: ``out_dir`` already holds a checkpoint and ``force`` is false.
        OutputWriteError: the disk is full, permission was denied, ... (nothing is left under a
            final name; temporary files are removed).

    Example:
        >>> import initrecipe, tempfile, torch, safetensors.torch
        >>> from initrecipe.export.convert import to_safetensors
        >>> recipe = initrecipe.record(lambda: torch.nn.Linear(4, 2), seed=0)
        >>> [p.name for p in to_safetensors(recipe, tempfile.mkdtemp())]
        ['model.safetensors']
    """
    if not isinstance(recipe, Recipe):
        recipe = load(recipe)
    folder = _plan_folder(recipe, Path(out_dir), dtype, max_shard_size, config)
    _refuse_existing_outputs(folder, force)
    # Check and plan the replay (memory, work) before anything is created on disk.
    persistent = {t.name for t in recipe.tensors if t.persistent}
    stream = iter_replay(recipe, device=device, names=lambda n: n in persistent, draw_in_place=False,
                         max_work=max_work)
    return_freed_memory_to_the_os()
    return _write_folder(folder, stream, progress, force)


@dataclass(frozen=True)
class _FolderPlan:
    """Everything :func:`to_safetensors` writes, decided from the recipe before anything is on disk."""

    out_dir: Path
    stored: list[StoredTensor]
    shards: ShardPlan
    layouts: dict[str, Layout]  # weight file name -> its layout
    config_data: bytes | None

    @property
    def needed(self) -> int:
        """Bytes of the weight files."""
        return sum(layout.file_size for layout in self.layouts.values())

    @property
    def finals(self) -> list[Path]:
        """The final paths of every file written: weights, then the index (if sharded), then the config."""
        finals = [self.out_dir / fname for fname in self.layouts]
        finals += [self.out_dir / WEIGHTS_INDEX_NAME] if self.shards.is_sharded else []
        finals += [self.out_dir / CONFIG_NAME] if self.config_data is not None else []
        return finals


def _plan_folder(recipe: Recipe, out_dir: Path, dtype: torch.dtype | str | None, max_shard_size: int | str,
                 config: str | os.PathLike | None) -> _FolderPlan:
    """The options read, then the tensors stored (cast to ``dtype``), their shards, each shard
    file's layout and the config file's bytes (:func:`to_safetensors` documents the arguments)."""
    try:
        cast = parse_dtype(dtype)
        shard_limit = parse_size(max_shard_size)
    except ValueError as exc:
        raise RecipeError(str(exc)) from None
    if out_dir.exists() and not out_dir.is_dir():
        raise RecipeError(f"`{out_dir}` exists and is not a folder")
    config_data = config_bytes(config, cast) if config is not None else None
    stored = stored_tensors(recipe, cast)
    plan = plan_shards(stored, shard_limit)
    metadata = file_metadata(recipe)
    specs = {s.name: s.spec for s in stored}
    layouts = {fname: plan_layout([specs[n] for n in names], metadata) for fname, names in plan.files.items()}
    return _FolderPlan(out_dir, stored, plan, layouts, config_data)


def _refuse_existing_outputs(folder: _FolderPlan, force: bool) -> None:
    """Refuse a folder where a final name is taken by a folder, or that holds a checkpoint already
    (unless ``force``)."""
    for final in folder.finals:
        refuse_folder_at(final)
    existing = existing_outputs(folder.out_dir, folder.config_data is not None)
    if existing and not force:
        more = f" (and {len(existing) - 1} more)" if len(existing) > 1 else ""
        raise OutputExistsError(
            f"`{folder.out_dir}` already holds `{existing[0]}`{more}; pass --force (force=True) to overwrite"
        )


def _write_folder(folder: _FolderPlan, stream: Iterator[tuple[list[TensorEntry], torch.Tensor]],
                  progress: bool | None, force: bool) -> list[Path]:
    """Stream the replayed tensors into the planned files, then commit them all; on any failure
    (a signal included) roll back, leaving the folder as it was."""
    out_dir = folder.out_dir
    writers: dict[str, StreamingSafetensorsWriter] = {}
    temps: list[Path] = []
    committed: list[Path] = []
    bar = None
    created_dir = not out_dir.exists()
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        for fname, layout in folder.layouts.items():
            writers[fname] = StreamingSafetensorsWriter(out_dir / fname, layout)
        bar = progress_bar(progress, folder.shards.total_size, len(folder.stored))
        _stream_folder(folder, stream, writers, bar)
        # Everything from here on is short; a signal waits until the folder is consistent:
        # all new files under their final names, the index last, then stale shards removed.
        with deferred_signals():
            _commit_folder(folder, writers, temps, committed, force)
        fsync_dir(out_dir)
    except BaseException as exc:
        _roll_back(writers, temps, out_dir if created_dir and not committed else None)
        if isinstance(exc, OSError) and not isinstance(exc, RecipeError):
            raise output_error(exc, out_dir, folder.needed, folder=True) from None
        raise
    finally:
        if bar is not None:
            bar.close()
    return committed


def _stream_folder(folder: _FolderPlan, stream: Iterator[tuple[list[TensorEntry], torch.Tensor]],
                   writers: dict[str, StreamingSafetensorsWriter], bar: tqdm | None) -> None:
    """Write every replayed tensor into the shard file the plan gives it."""
    by_value = {s.value: s for s in folder.stored}

    def place(entries: list[TensorEntry]) -> tuple[StreamingSafetensorsWriter, TensorSpec]:
        target = by_value.get(entries[0].value)
        if target is None:  # pragma: no cover - iter_replay yields only what was asked for
            raise ReplayError(f"replay produced `{entries[0].name}`, which was not planned")
        return writers[folder.shards.weight_map[target.name]], target.spec

    def counted(done: int) -> None:
        if bar is not None:
            bar.set_postfix_str(f"tensors {done}/{len(folder.stored)}", refresh=False)

    done = stream_tensors(stream, place, writers.values(), bar.update if bar is not None else None, counted)
    if done != len(folder.stored):
        raise ReplayError(f"replay produced {done} of the {len(folder.stored)} tensors to write")


def _commit_folder(folder: _FolderPlan, writers: dict[str, StreamingSafetensorsWriter], temps: list[Path],
                   committed: list[Path], force: bool) -> None:
    """Give every file its final name (the weights, then the config and index), then, with
    ``force``, remove an earlier checkpoint's files that are not part of the new one.  ``temps``
    and ``committed`` collect what was created, for a roll-back."""
    out_dir = folder.out_dir
    extra: list[tuple[Path, Path]] = []
    if folder.config_data is not None:
        temps.append(write_temp(out_dir / CONFIG_NAME, folder.config_data))
        extra.append((temps[-1], out_dir / CONFIG_NAME))
    if folder.shards.is_sharded:
        temps.append(write_temp(out_dir / WEIGHTS_INDEX_NAME, index_bytes(folder.shards)))
        extra.append((temps[-1], out_dir / WEIGHTS_INDEX_NAME))
    for writer in writers.values():
        committed.append(writer.commit())
    for tmp, final in extra:
        os.replace(tmp, final)
        committed.append(final)
    if force:
        keep = {p.name for p in committed}
        for name in existing_outputs(out_dir, False):
            if name not in keep:
                remove_quietly(out_dir / name)  # a link is removed, never followed


def _roll_back(writers: dict[str, StreamingSafetensorsWriter], temps: list[Path], created_dir: Path | None) -> None:
    """Abort every writer and remove every temporary file, and the folder if this call created it
    (and it is still empty)."""
    with deferred_signals():
        for writer in writers.values():
            writer.abort()
        for tmp in temps:
            remove_quietly(tmp)
        if created_dir is not None:
            try:
                created_dir.rmdir()  # only if still empty
            except OSError:
                pass
