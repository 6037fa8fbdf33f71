"""Read safetensors checkpoints one tensor at a time: a ``.safetensors`` file, or a
``save_pretrained`` folder (``model.safetensors``, or shards listed in
``model.safetensors.index.json``, or just its ``*.safetensors`` files).

Only headers are read when a checkpoint is opened; :meth:`Checkpoint.read` then reads one tensor's
bytes with ordinary file reads into a fresh tensor (no memory map, so what a process holds is the
tensor it asked for, not the pages of the whole file).  Every header is checked before it is
trusted: its size, its JSON, each entry's dtype, shape and byte range; a file that fails is
refused with :class:`CheckpointError`, naming the file and what is wrong with it.
"""

from __future__ import annotations

import ctypes
import json
import math
import os
import stat
import struct
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Iterator

import torch

from initrecipe.errors import CheckpointError
from initrecipe.export.safetensors_writer import SAFETENSORS_DTYPES

__all__ = ["StoredTensor", "Checkpoint", "open_checkpoint", "looks_like_checkpoint"]

WEIGHTS_NAME = "model.safetensors"
INDEX_NAME = "model.safetensors.index.json"
MAX_HEADER_BYTES = 100 << 20
"""Largest safetensors header read (the safetensors library's own limit)."""
MAX_INDEX_BYTES = 100 << 20
_MAX_DIMS = 64

_DTYPES = {name: dtype for dtype, name in SAFETENSORS_DTYPES.items()}


@dataclass(frozen=True)
class StoredTensor:
    """Where one tensor's bytes lie: ``file``, bytes ``[start, stop)``, as ``dtype`` and ``shape``."""

    name: str
    dtype: torch.dtype
    shape: tuple[int, ...]
    file: Path
    start: int
    stop: int

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    @property
    def nbytes(self) -> int:
        return self.stop - self.start


def looks_like_checkpoint(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a folder, a ``*.safetensors`` file, or a file that starts like one."""
    p = Path(path)
    if p.is_dir() or p.name.endswith(".safetensors"):
        return True
    try:
        with open(p, "rb") as handle:
            head = handle.read(16)
            size = os.fstat(handle.fileno()).st_size
    except OSError:
        return False
    if len(head) < 10 or head[8:9] != b"{":
        return False
    (n,) = struct.unpack("<Q", head[:8])
    return 2 <= n <= size - 8


def _fail(path: Path, detail: str) -> CheckpointError:
    return CheckpointError(f"`{path}` is not a readable safetensors file: {detail}")


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"the name `{key}` appears twice")
        out[key] = value
    return out


def read_header(path: Path) -> dict[str, StoredTensor]:
    """The tensors a safetensors file declares, each checked against the file's size."""
    try:
        info = os.stat(path)
    except FileNotFoundError:
        raise CheckpointError(f"checkpoint file `{path}` does not exist") from None
    except OSError as exc:
        raise CheckpointError(f"cannot read checkpoint file `{path}`: {exc.strerror or exc}") from None
    if not stat.S_ISREG(info.st_mode):
        raise CheckpointError(f"`{path}` is not a regular file")
    try:
        with open(path, "rb") as handle:
            head = handle.read(8)
            if len(head) < 8:
                raise _fail(path, f"it holds {len(head)} bytes, fewer than the 8 of a header size")
            (n,) = struct.unpack("<Q", head)
            if n > MAX_HEADER_BYTES or n > info.st_size - 8:
                raise _fail(path, f"its header claims {n} bytes, but the file holds {info.st_size} "
                            f"(and headers hold at most {MAX_HEADER_BYTES})")
            raw = handle.read(n)
    except OSError as exc:
        raise CheckpointError(f"cannot read checkpoint file `{path}`: {exc.strerror or exc}") from None
    try:
        doc = json.loads(raw.decode("utf-8"), object_pairs_hook=_no_duplicates)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise _fail(path, f"its header is not valid JSON ({str(exc).splitlines()[0][:120]})") from None
    if not isinstance(doc, dict):
        raise _fail(path, "its header is not a JSON object")
    data_start = 8 + n
    data_len = info.st_size - data_start
    tensors: dict[str, StoredTensor] = {}
    for name, entry in doc.items():
        if name == "__metadata__":
            if not isinstance(entry, dict):
                raise _fail(path, "`__metadata__` is not a JSON object")
            continue
        where = f"tensor `{name[:200]}`"
        if not isinstance(entry, dict) or set(entry) != {"dtype", "shape", "data_offsets"}:
            raise _fail(path, f"{where} is not an object with `dtype`, `shape` and `data_offsets`")
        dtype = _DTYPES.get(entry["dtype"]) if isinstance(entry["dtype"], str) else None
        if dtype is None:
            raise _fail(path, f"{where} has dtype {str(entry['dtype'])[:40]!r}, which this torch cannot read")
        shape = entry["shape"]
        if (not isinstance(shape, list) or len(shape) > _MAX_DIMS
                or not all(type(d) is int and 0 <= d < 2**62 for d in shape)):
            raise _fail(path, f"{where} has an invalid shape")
        offsets = entry["data_offsets"]
        if (not isinstance(offsets, list) or len(offsets) != 2
                or not all(type(o) is int for o in offsets) or not 0 <= offsets[0] <= offsets[1] <= data_len):
            raise _fail(path, f"{where} has data offsets {str(offsets)[:60]} outside the file's "
                        f"{data_len} data bytes")
        expected = math.prod(shape) * dtype.itemsize
        if offsets[1] - offsets[0] != expected:
            raise _fail(path, f"{where} holds {offsets[1] - offsets[0]} bytes, but shape {shape} of {dtype} "
                        f"needs {expected}")
        tensors[name] = StoredTensor(name, dtype, tuple(shape), path, data_start + offsets[0], data_start + offsets[1])
    return tensors


class Checkpoint:
    """An opened checkpoint: its tensors' names, dtypes and shapes, and :meth:`read` for their values."""

    def __init__(self, path: Path, files: list[Path], tensors: dict[str, StoredTensor]) -> None:
        self.path = path
        self.files = files
        self.tensors = tensors
        self._handles: dict[Path, IO[bytes]] = {}

    @property
    def label(self) -> str:
        if self.path.is_dir():
            return f"{self.path}{os.sep}"
        return str(self.path)

    @property
    def total_bytes(self) -> int:
        return sum(t.nbytes for t in self.tensors.values())

    def read(self, name: str) -> torch.Tensor:
        """The tensor stored under ``name``, read from disk into a new CPU tensor."""
        stored = self.tensors[name]
        out = torch.empty(stored.nbytes, dtype=torch.uint8)
        self._read_into(stored, stored.start, out)
        return out.view(stored.dtype).reshape(stored.shape)

    def read_chunks(self, name: str, elements: int = 1 << 22) -> Iterator[torch.Tensor]:
        """The elements of ``name`` in row-major order, as 1-D tensors of at most ``elements``
        elements, read one after another into one reused buffer (each chunk is valid until the
        next is requested): a tensor of any size costs one chunk of memory."""
        stored = self.tensors[name]
        step = max(1, elements) * stored.dtype.itemsize
        buffer = torch.empty(min(step, stored.nbytes), dtype=torch.uint8)
        position = stored.start
        while position < stored.stop:
            n = min(step, stored.stop - position)
            self._read_into(stored, position, buffer[:n])
            yield buffer[:n].view(stored.dtype)
            position += n

    def _read_into(self, stored: StoredTensor, offset: int, out: torch.Tensor) -> None:
        if sys.byteorder != "little" and stored.dtype.itemsize > 1:  # pragma: no cover - little-endian hosts
            raise CheckpointError("reading safetensors files needs a little-endian machine")
        nbytes = out.numel()
        if not nbytes:
            return
        handle = self._handles.get(stored.file)
        if handle is None:
            try:
                handle = self._handles[stored.file] = open(stored.file, "rb", buffering=0)
            except OSError as exc:
                raise CheckpointError(f"cannot read `{stored.file}`: {exc.strerror or exc}") from None
        view = memoryview((ctypes.c_char * nbytes).from_address(out.data_ptr())).cast("B")
        done = 0
        try:
            handle.seek(offset)
            while done < nbytes:
                got = handle.readinto(view[done:])
                if not got:
                    raise CheckpointError(f"`{stored.file}` ended inside tensor `{stored.name}`: the file was truncated")
                done += got
        except OSError as exc:
            raise CheckpointError(f"cannot read `{stored.file}`: {exc.strerror or exc}") from None
        finally:
            view.release()

    def close(self) -> None:
        for handle in self._handles.values():
            handle.close()
        self._handles.clear()

    def __enter__(self) -> "Checkpoint":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _read_index(directory: Path) -> dict[str, str]:
    path = directory / INDEX_NAME
    try:
        if path.stat().st_size > MAX_INDEX_BYTES:
            raise CheckpointError(f"`{path}` is larger than {MAX_INDEX_BYTES} bytes: not an index")
        doc = json.loads(path.read_bytes().decode("utf-8"), object_pairs_hook=_no_duplicates)
    except OSError as exc:
        raise CheckpointError(f"cannot read `{path}`: {exc.strerror or exc}") from None
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise CheckpointError(f"`{path}` is not valid JSON ({str(exc).splitlines()[0][:120]})") from None
    weight_map = doc.get("weight_map") if isinstance(doc, dict) else None
    if not isinstance(weight_map, dict) or not all(isinstance(v, str) for v in weight_map.values()):
        raise CheckpointError(f"`{path}` has no `weight_map` object of tensor name -> file name")
    for file in set(weight_map.values()):
        if not file or "/" in file or "\\" in file or file in (".", ".."):
            raise CheckpointError(f"`{path}` names the file {file[:80]!r}; shards must lie in the index's folder")
    return weight_map


def open_checkpoint(path: str | os.PathLike) -> Checkpoint:
    """Open a safetensors file or ``save_pretrained`` folder, reading and checking only headers.

    Example:
        >>> import initrecipe, tempfile, torch
        >>> from initrecipe.export.checkpoint import open_checkpoint
        >>> out = tempfile.mkdtemp()
        >>> _ = initrecipe.to_safetensors(initrecipe.record(lambda: torch.nn.Linear(4, 2), seed=0), out)
        >>> with open_checkpoint(out) as ckpt:
        ...     sorted(ckpt.tensors), ckpt.read("bias").shape
        (['bias', 'weight'], torch.Size([2]))
    """
    p = Path(path)
    if not p.exists():
        raise CheckpointError(f"checkpoint `{p}` does not exist")
    if not p.is_dir():
        return Checkpoint(p, [p], read_header(p))
    if (p / INDEX_NAME).is_file():
        weight_map = _read_index(p)
        headers = {file: read_header(p / file) for file in sorted(set(weight_map.values()))}
        tensors = {}
        for name, file in weight_map.items():
            stored = headers[file].get(name)
            if stored is None:
                raise CheckpointError(f"`{p / INDEX_NAME}` puts `{name}` in `{file}`, which does not hold it")
            tensors[name] = stored
        return Checkpoint(p, [p / f for f in headers], tensors)
    if (p / WEIGHTS_NAME).is_file():
        files = [p / WEIGHTS_NAME]
    else:
        files = sorted(f for f in p.iterdir() if f.name.endswith(".safetensors") and f.is_file())
        if not files:
            raise CheckpointError(f"`{p}` holds no `{WEIGHTS_NAME}`, no `{INDEX_NAME}` and no `*.safetensors` file")
    tensors = {}
    for file in files:
        for name, stored in read_header(file).items():
            if name in tensors:
                raise CheckpointError(f"`{name}` is stored twice, in `{tensors[name].file.name}` and `{file.name}`")
            tensors[name] = stored
    return Checkpoint(p, files, tensors)
