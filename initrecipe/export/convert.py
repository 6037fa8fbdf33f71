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

from __future__ import annotations

import json
import os
import re
import sys
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence, Union

import torch

from initrecipe._version import __version__
from initrecipe.support import hugepages
from initrecipe.errors import OutputExistsError, RecipeError, ReplayError
from initrecipe.support.output_files import (
    deferred_signals,
    fsync_dir,
    output_error,
    refuse_folder_at,
    remove_quietly,
    write_temp,
)
from initrecipe.format.recipe import Recipe, TensorEntry, load
from initrecipe.runtime.replay import NameFilter, iter_replay, select_entries, shard_box
from initrecipe.export.safetensors_writer import SAFETENSORS_DTYPES, StreamingSafetensorsWriter, TensorSpec, plan_layout
from initrecipe.runtime.sharding import Box, ShardRequest

__all__ = [
    "to_safetensors",
    "replay_to_file",
    "file_metadata",
    "METADATA_HASH_KEY",
    "plan_shards",
    "parse_size",
    "parse_dtype",
    "WEIGHTS_NAME",
    "WEIGHTS_INDEX_NAME",
    "CONFIG_NAME",
]

WEIGHTS_NAME = "model.safetensors"
WEIGHTS_INDEX_NAME = "model.safetensors.index.json"
CONFIG_NAME = "config.json"
_SHARD_RE = re.compile(r"model-\d{5}-of-\d{5}\.safetensors")

RecipeSource = Union[Recipe, str, os.PathLike, bytes]

METADATA_HASH_KEY = "initrecipe.content_hash"
"""The safetensors metadata key holding the recipe's content hash (0.2.0's ``replay -o`` wrote
``initrecipe.hash``; initrecipe's readers ignore file metadata, so files with either key read alike)."""


def file_metadata(recipe: Recipe) -> dict[str, str]:
    """The ``__metadata__`` of every safetensors file initrecipe writes."""
    return {"format": "pt", METADATA_HASH_KEY: recipe.content_hash, "initrecipe.version": __version__}


# --------------------------------------------------------------------------- parsing helpers
_SIZE_UNITS = {
    "": 1, "B": 1,
    "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12,
    "KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40,
}
_SIZE_RE = re.compile(r"^\s*([0-9]+(?:\.[0-9]*)?|\.[0-9]+)\s*([A-Za-z]*)\s*$")


def parse_size(size: int | str) -> int:
    """Bytes in a size such as ``"5GB"`` (10**9 bytes), ``"2GiB"``, ``"500MB"`` or an integer.

    A lowercase final ``b`` after a multiplier means bits, as in ``transformers`` (``"5Gb"`` is
    625 MB).

    Example:
        >>> parse_size("5GB"), parse_size("1KiB"), parse_size(100)
        (5000000000, 1024, 100)
    """
    if isinstance(size, bool):
        raise ValueError(f"invalid size {size!r}")
    if isinstance(size, int):
        if size <= 0:
            raise ValueError(f"the shard size must be positive, got {size}")
        return size
    match = _SIZE_RE.match(str(size))
    unit = match.group(2).upper() if match else None
    if not match or unit not in _SIZE_UNITS:
        raise ValueError(f"invalid size `{size}`; write e.g. 5GB, 500MB or 2GiB")
    value = int(float(match.group(1)) * _SIZE_UNITS[unit])
    if len(match.group(2)) >= 2 and match.group(2).endswith("b"):
        value //= 8
    if value <= 0:
        raise ValueError(f"the shard size must be positive, got `{size}`")
    return value


_DTYPE_NAMES = {
    "bf16": torch.bfloat16, "bfloat16": torch.bfloat16,
    "fp16": torch.float16, "f16": torch.float16, "float16": torch.float16, "half": torch.float16,
    "fp32": torch.float32, "f32": torch.float32, "float32": torch.float32, "float": torch.float32,
    "fp64": torch.float64, "f64": torch.float64, "float64": torch.float64, "double": torch.float64,
}


def parse_dtype(dtype: torch.dtype | str | None) -> torch.dtype | None:
    """A floating torch dtype from ``torch.bfloat16`` or a name such as ``"bf16"``; ``None`` stays ``None``."""
    if dtype is None:
        return None
    if isinstance(dtype, str):
        key = dtype.strip().lower().removeprefix("torch.")
        if key not in _DTYPE_NAMES:
            raise ValueError(f"unknown dtype `{dtype}`; use one of bf16, fp16, fp32")
        dtype = _DTYPE_NAMES[key]
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise ValueError(f"can only cast to a floating dtype, not {dtype}")
    if dtype not in SAFETENSORS_DTYPES:
        raise ValueError(f"safetensors cannot store {dtype}")
    return dtype


# --------------------------------------------------------------------------- planning
@dataclass(frozen=True)
class _Stored:
    """One tensor as it goes to disk: the name kept, the value it replays, its output dtype."""

    name: str
    value: int
    spec: TensorSpec
    is_parameter: bool


@dataclass(frozen=True)
class ShardPlan:
    """Which file holds which tensor, computed from the recipe alone."""

    files: dict[str, list[str]]  # file name -> stored tensor names, in recipe order
    weight_map: dict[str, str]  # stored tensor name -> file name
    total_size: int
    total_parameters: int

    @property
    def is_sharded(self) -> bool:
        return len(self.files) > 1


def _stored_tensors(recipe: Recipe, dtype: torch.dtype | None) -> list[_Stored]:
    """Each distinct persistent tensor once, under its first persistent name in recipe order.

    This keeps the name ``transformers``' ``save_pretrained`` keeps for tied weights (the source,
    e.g. ``model.embed_tokens.weight``; ``lm_head.weight`` is dropped and re-tied on load), and
    leaves out non-persistent buffers, as ``state_dict()`` does.
    """
    first: dict[int, TensorEntry] = {}
    is_param: dict[int, bool] = {}
    for entry in recipe.tensors:
        if not entry.persistent:
            continue
        first.setdefault(entry.value, entry)
        is_param[entry.value] = is_param.get(entry.value, False) or entry.kind == "parameter"
    stored = []
    for value, entry in first.items():
        out = dtype if dtype is not None and entry.dtype.is_floating_point else entry.dtype
        if out not in SAFETENSORS_DTYPES:
            raise RecipeError(f"`{entry.name}` has dtype {entry.dtype}, which safetensors cannot store")
        stored.append(_Stored(entry.name, value, TensorSpec(entry.name, out, entry.shape), is_param[value]))
    return stored


def plan_shards(stored: Sequence[_Stored], max_shard_size: int) -> ShardPlan:
    """Greedy sharding in recipe order, exactly as ``huggingface_hub.split_torch_state_dict_into_shards``.

    A tensor bigger than ``max_shard_size`` gets a shard of its own; otherwise a new shard starts
    when the next tensor would overflow the current one.
    """
    shards: list[list[str]] = []
    current: list[str] = []
    current_size = 0
    total = 0
    for s in stored:
        size = s.spec.nbytes
        total += size
        if size > max_shard_size:
            shards.append([s.name])
            continue
        if current_size + size > max_shard_size:
            shards.append(current)
            current, current_size = [], 0
        current.append(s.name)
        current_size += size
    if current or not shards:
        shards.append(current)
    n = len(shards)
    files: dict[str, list[str]] = {}
    for i, names in enumerate(shards):
        fname = WEIGHTS_NAME if n == 1 else f"model-{i + 1:05d}-of-{n:05d}.safetensors"
        files[fname] = names
    weight_map = {name: fname for fname, names in files.items() for name in names}
    params = sum(s.spec.nbytes // s.spec.dtype.itemsize for s in stored if s.is_parameter)
    return ShardPlan(files=files, weight_map=weight_map, total_size=total, total_parameters=params)


def _existing_outputs(out_dir: Path, with_config: bool) -> list[str]:
    if not out_dir.is_dir():
        return []
    found = []
    for name in sorted(os.listdir(out_dir)):
        if name in (WEIGHTS_NAME, WEIGHTS_INDEX_NAME) or _SHARD_RE.fullmatch(name) or (with_config and name == CONFIG_NAME):
            found.append(name)
    return found


def _config_bytes(config: str | os.PathLike, dtype: torch.dtype | None) -> bytes:
    """The config.json to write: the file as is, or with its ``dtype`` set to the cast dtype."""
    path = Path(config)
    if path.is_dir():
        path = path / CONFIG_NAME
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise RecipeError(f"config file `{path}` does not exist") from None
    except OSError as exc:
        raise RecipeError(f"cannot read config file `{path}`: {exc.strerror or exc}") from None
    try:
        doc = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise RecipeError(f"config file `{path}` is not valid JSON ({exc})") from None
    if not isinstance(doc, dict):
        raise RecipeError(f"config file `{path}` is not a JSON object; expected a transformers config.json")
    if dtype is None:
        return data
    # What save_pretrained writes for a model in that dtype, so that dtype="auto" loads it as stored.
    name = str(dtype).removeprefix("torch.")
    doc["dtype"] = name
    if "torch_dtype" in doc:
        doc["torch_dtype"] = name
    return (json.dumps(doc, indent=2, sort_keys=True) + "\n").encode("utf-8")


def _progress_bar(enabled: bool | None, total_bytes: int, total_tensors: int) -> Any:
    if enabled is None:
        enabled = bool(getattr(sys.stderr, "isatty", lambda: False)())
    if not enabled:
        return None
    from tqdm import tqdm

    bar = tqdm(
        total=total_bytes,
        unit="B",
        unit_scale=True,
        unit_divisor=1024,
        desc="converting",
        file=sys.stderr,
        dynamic_ncols=True,
        leave=True,
    )
    bar.set_postfix_str(f"tensors 0/{total_tensors}", refresh=False)
    return bar


# --------------------------------------------------------------------------- the conversion
def _write_one(writer: StreamingSafetensorsWriter, name: str, tensor: torch.Tensor,
               on_bytes: Callable[[int], None] | None) -> None:
    writer.write(name, tensor, on_bytes)
    if writer.done:
        writer.close()


def _converted(tensor: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """``tensor.to(dtype)`` (the same rounding: both are torch's copy kernel), into fresh memory
    advised to use huge pages (:mod:`initrecipe.support.hugepages`) when ``tensor`` is a dense CPU one."""
    if tensor.device.type != "cpu" or not tensor.is_contiguous():
        return tensor.to(dtype)
    return hugepages.empty_strided(tensor.shape, tensor.stride(), dtype).copy_(tensor)


def _return_freed_memory_to_the_os() -> None:
    """Make glibc serve every allocation of 1 MiB or more with its own mapping.

    glibc raises its mmap threshold (up to 32 MiB) each time a large block is freed, after which
    tensors of a few MiB come from the heap, whose freed pages it keeps: streaming a model then
    looks like holding all of it.  Fixing the threshold returns each tensor's pages when it is
    dropped.  No-op where the C library is not glibc.
    """
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        m_mmap_threshold = -3
        libc.mallopt(m_mmap_threshold, 1 << 20)
    except (OSError, AttributeError):
        pass


def _stream(stream: Iterable[tuple[list[TensorEntry], torch.Tensor]],
            place: Callable[[list[TensorEntry]], tuple[StreamingSafetensorsWriter, TensorSpec]],
            writers: Iterable[StreamingSafetensorsWriter],
            on_bytes: Callable[[int], None] | None = None,
            on_tensor: Callable[[int], None] | None = None) -> int:
    """Write each replayed tensor where ``place`` says (cast to its planned dtype); the count written.

    One tensor is written on a background thread while the replay builds the next one: at most
    two tensors are held at a time, and disk writes overlap generation.  On any exception (a
    signal included) every writer is aborted, which stops the write in flight within one chunk.
    """
    done = 0
    io = ThreadPoolExecutor(max_workers=1, thread_name_prefix="initrecipe-write")
    try:
        writing: Future[None] | None = None
        for entries, tensor in stream:
            writer, spec = place(entries)
            if tensor.dtype != spec.dtype:
                tensor = _converted(tensor, spec.dtype)
            if writing is not None:
                writing.result()
            writing = io.submit(_write_one, writer, spec.name, tensor, on_bytes)
            del tensor
            done += 1
            if on_tensor is not None:
                on_tensor(done)
        if writing is not None:
            writing.result()
    except BaseException:
        # Stop the write in flight (within one chunk) before waiting for the thread.
        for writer in writers:
            writer.abort()
        raise
    finally:
        io.shutdown(wait=True)
    return done


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
    _return_freed_memory_to_the_os()
    writer: StreamingSafetensorsWriter | None = None
    try:
        writer = StreamingSafetensorsWriter(path, layout)
        out = writer

        def place(entries: list[TensorEntry]) -> tuple[StreamingSafetensorsWriter, TensorSpec]:
            spec = where.get(entries[0].name)
            if spec is None:  # pragma: no cover - iter_replay yields only what was asked for
                raise ReplayError(f"replay produced `{entries[0].name}`, which was not planned")
            return out, spec

        done = _stream(stream, place, [writer])
        if done != len(stored):
            raise ReplayError(f"replay produced {done} of the {len(stored)} tensors to write")
        with deferred_signals():
            writer.commit()
    except BaseException as exc:
        if writer is not None:
            writer.abort()
        if isinstance(exc, OSError) and not isinstance(exc, RecipeError):
            raise output_error(exc, path, layout.file_size) from None
        raise
    fsync_dir(path.parent)
    return path, len(stored)


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
    try:
        cast = parse_dtype(dtype)
        shard_limit = parse_size(max_shard_size)
    except ValueError as exc:
        raise RecipeError(str(exc)) from None
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise RecipeError(f"`{out_dir}` exists and is not a folder")
    config_data = _config_bytes(config, cast) if config is not None else None

    stored = _stored_tensors(recipe, cast)
    plan = plan_shards(stored, shard_limit)
    by_value = {s.value: s for s in stored}
    metadata = file_metadata(recipe)
    specs = {s.name: s.spec for s in stored}
    layouts = {fname: plan_layout([specs[n] for n in names], metadata) for fname, names in plan.files.items()}
    needed = sum(layout.file_size for layout in layouts.values())

    finals = [out_dir / fname for fname in layouts]
    finals += [out_dir / WEIGHTS_INDEX_NAME] if plan.is_sharded else []
    finals += [out_dir / CONFIG_NAME] if config_data is not None else []
    for final in finals:
        refuse_folder_at(final)
    existing = _existing_outputs(out_dir, config_data is not None)
    if existing and not force:
        more = f" (and {len(existing) - 1} more)" if len(existing) > 1 else ""
        raise OutputExistsError(
            f"`{out_dir}` already holds `{existing[0]}`{more}; pass --force (force=True) to overwrite"
        )

    # Check and plan the replay (memory, work) before anything is created on disk.
    persistent = {t.name for t in recipe.tensors if t.persistent}
    stream = iter_replay(recipe, device=device, names=lambda n: n in persistent, draw_in_place=False,
                         max_work=max_work)
    _return_freed_memory_to_the_os()
    writers: dict[str, StreamingSafetensorsWriter] = {}
    temps: list[Path] = []
    committed: list[Path] = []
    bar = None
    created_dir = not out_dir.exists()
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        for fname, layout in layouts.items():
            writers[fname] = StreamingSafetensorsWriter(out_dir / fname, layout)
        bar = _progress_bar(progress, plan.total_size, len(stored))

        def place(entries: list[TensorEntry]) -> tuple[StreamingSafetensorsWriter, TensorSpec]:
            target = by_value.get(entries[0].value)
            if target is None:  # pragma: no cover - iter_replay yields only what was asked for
                raise ReplayError(f"replay produced `{entries[0].name}`, which was not planned")
            return writers[plan.weight_map[target.name]], target.spec

        def counted(done: int) -> None:
            if bar is not None:
                bar.set_postfix_str(f"tensors {done}/{len(stored)}", refresh=False)

        done = _stream(stream, place, writers.values(), bar.update if bar is not None else None, counted)
        if done != len(stored):
            raise ReplayError(f"replay produced {done} of the {len(stored)} tensors to write")
        # Everything from here on is short; a signal waits until the folder is consistent:
        # all new files under their final names, the index last, then stale shards removed.
        with deferred_signals():
            extra: list[tuple[Path, Path]] = []
            if config_data is not None:
                temps.append(write_temp(out_dir / CONFIG_NAME, config_data))
                extra.append((temps[-1], out_dir / CONFIG_NAME))
            if plan.is_sharded:
                index = {
                    "metadata": {"total_parameters": plan.total_parameters, "total_size": plan.total_size},
                    "weight_map": plan.weight_map,
                }
                data = (json.dumps(index, indent=2, sort_keys=True) + "\n").encode("utf-8")
                temps.append(write_temp(out_dir / WEIGHTS_INDEX_NAME, data))
                extra.append((temps[-1], out_dir / WEIGHTS_INDEX_NAME))
            for writer in writers.values():
                committed.append(writer.commit())
            for tmp, final in extra:
                os.replace(tmp, final)
                committed.append(final)
            if force:
                keep = {p.name for p in committed}
                for name in _existing_outputs(out_dir, False):
                    if name not in keep:
                        remove_quietly(out_dir / name)  # a link is removed, never followed
        fsync_dir(out_dir)
    except BaseException as exc:
        with deferred_signals():
            for writer in writers.values():
                writer.abort()
            for tmp in temps:
                remove_quietly(tmp)
            if created_dir and not committed:
                try:
                    out_dir.rmdir()  # only if still empty
                except OSError:
                    pass
        if isinstance(exc, OSError) and not isinstance(exc, RecipeError):
            raise output_error(exc, out_dir, needed, folder=True) from None
        raise
    finally:
        if bar is not None:
            bar.close()
    return committed
