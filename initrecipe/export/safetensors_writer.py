"""Write a safetensors file one tensor at a time, in any order, without holding the whole file.

A safetensors file is an 8-byte little-endian header length, a JSON header (padded with spaces
to a multiple of 8 bytes), then the tensors' bytes back to back.  Offsets depend only on each
tensor's dtype and shape, so the header can be written first and each tensor's bytes written at
its offset as soon as the tensor exists, in whatever order the tensors arrive.

The layout matches ``safetensors.torch.save_file``: tensors sorted by dtype (widest first, so
every tensor is aligned to its element size) and then by name.  The data section is therefore
byte-for-byte what ``save_file`` would write; only the order of the ``__metadata__`` keys, which
``save_file`` leaves to a hash map, may differ.

Files are written under a temporary name in the destination folder (see
:mod:`initrecipe.support.output_files`) and renamed into place by :meth:`StreamingSafetensorsWriter.commit`,
so a final name never holds a partial file.  Writes may run on another thread than the one that
aborts: :meth:`StreamingSafetensorsWriter.abort` stops a write in flight within one chunk.
"""

from __future__ import annotations

import errno
import json
import math
import os
import struct
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Mapping

import torch

from initrecipe.errors import OutputWriteError, RecipeError
from initrecipe.program.ir import little_endian_view
from initrecipe.support.output_files import (
    create_temp,
    deferred_signals,
    fsync_dir,
    remove_quietly,
    temp_path_for,
)

__all__ = [
    "SAFETENSORS_DTYPES",
    "TensorSpec",
    "Layout",
    "plan_layout",
    "StreamingSafetensorsWriter",
    "temp_path_for",
    "fsync_dir",
]

# torch dtype -> safetensors dtype name.
SAFETENSORS_DTYPES: dict[torch.dtype, str] = {
    torch.float64: "F64",
    torch.float32: "F32",
    torch.float16: "F16",
    torch.bfloat16: "BF16",
    torch.int64: "I64",
    torch.int32: "I32",
    torch.int16: "I16",
    torch.int8: "I8",
    torch.uint8: "U8",
    torch.bool: "BOOL",
    torch.complex64: "C64",
}
for _name, _attr in (
    ("U16", "uint16"),
    ("U32", "uint32"),
    ("U64", "uint64"),
    ("F8_E4M3", "float8_e4m3fn"),
    ("F8_E5M2", "float8_e5m2"),
    ("F8_E4M3FNUZ", "float8_e4m3fnuz"),
    ("F8_E5M2FNUZ", "float8_e5m2fnuz"),
):
    if hasattr(torch, _attr):
        SAFETENSORS_DTYPES[getattr(torch, _attr)] = _name

# The order in which safetensors (Rust) lays out dtypes: its ``Dtype`` enum, descending.
_DTYPE_RANK = {
    name: rank
    for rank, name in enumerate(
        [
            "U64", "I64", "F64", "C64", "F32", "U32", "I32", "BF16", "F16", "U16", "I16",
            "F8_E5M2FNUZ", "F8_E4M3FNUZ", "F8_E4M3", "F8_E5M2", "I8", "U8", "BOOL",
        ]
    )
}

_CHUNK = 64 << 20  # bytes per pwrite call: bounds progress granularity, never copies


@dataclass(frozen=True)
class TensorSpec:
    """What the header needs to know about one tensor."""

    name: str
    dtype: torch.dtype
    shape: tuple[int, ...]

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * self.dtype.itemsize


@dataclass(frozen=True)
class Layout:
    """A file's header bytes and where each tensor's data goes."""

    header: bytes  # the 8-byte length prefix and the padded JSON header
    offsets: dict[str, tuple[int, int]]  # name -> absolute [start, end) byte range in the file
    specs: dict[str, TensorSpec]
    file_size: int

    @property
    def data_size(self) -> int:
        return self.file_size - len(self.header)


def dtype_code(dtype: torch.dtype) -> str:
    """The safetensors name of a torch dtype (``ValueError`` if safetensors has none)."""
    try:
        return SAFETENSORS_DTYPES[dtype]
    except KeyError:
        raise ValueError(f"safetensors cannot store tensors of dtype {dtype}") from None


def plan_layout(specs: Iterable[TensorSpec], metadata: Mapping[str, str] | None = None) -> Layout:
    """Lay out a safetensors file the way ``safetensors.torch.save_file`` does."""
    specs = list(specs)
    names = [s.name for s in specs]
    if "__metadata__" in names:
        raise RecipeError(
            "a tensor named `__metadata__` cannot be stored in a safetensors file (the format reserves "
            "that header key); rename the tensor in the model and record it again"
        )
    if len(set(names)) != len(names):
        raise ValueError("tensor names in one safetensors file must be unique")
    ordered = sorted(specs, key=lambda s: (_DTYPE_RANK[dtype_code(s.dtype)], s.name.encode("utf-8")))
    header: dict[str, object] = {}
    if metadata:
        for k, v in metadata.items():
            if not isinstance(k, str) or not isinstance(v, str):
                raise TypeError("safetensors metadata must map strings to strings")
        header["__metadata__"] = dict(metadata)
    relative: dict[str, tuple[int, int]] = {}
    pos = 0
    for s in ordered:
        relative[s.name] = (pos, pos + s.nbytes)
        header[s.name] = {"dtype": dtype_code(s.dtype), "shape": list(s.shape), "data_offsets": [pos, pos + s.nbytes]}
        pos += s.nbytes
    text = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    text += b" " * (-len(text) % 8)
    prefix = struct.pack("<Q", len(text)) + text
    base = len(prefix)
    offsets = {name: (base + a, base + b) for name, (a, b) in relative.items()}
    return Layout(header=prefix, offsets=offsets, specs={s.name: s for s in specs}, file_size=base + pos)


def _pwrite(fd: int, data: memoryview, offset: int) -> int:
    """``os.pwrite``, or seek-and-write where the platform has no ``pwrite`` (Windows)."""
    if hasattr(os, "pwrite"):
        return os.pwrite(fd, data, offset)
    os.lseek(fd, offset, os.SEEK_SET)  # pragma: no cover - Windows
    return os.write(fd, data)  # pragma: no cover - Windows


def _start_writeback(fd: int, offset: int, length: int) -> None:
    """Ask the kernel to write these bytes to disk now (and drop them from the page cache once
    written), so the disk works while the next tensor is built and the final fsync finds little
    left to do; without it, writeback starts only when dirty pages pile up to the kernel's
    threshold, gigabytes later.  A hint: no-op where the platform has no ``posix_fadvise``."""
    advise = getattr(os, "posix_fadvise", None)
    if advise is not None and length > 0:
        try:
            advise(fd, offset, length, os.POSIX_FADV_DONTNEED)
        except OSError:  # pragma: no cover - a file system that refuses the hint
            pass


class StreamingSafetensorsWriter:
    """One safetensors file being written: header first, then tensors at their offsets, any order.

    Example:
        >>> import tempfile, torch, safetensors.torch
        >>> from pathlib import Path
        >>> d = Path(tempfile.mkdtemp())
        >>> t = {"b": torch.arange(3.0), "a": torch.ones(2, dtype=torch.int64)}
        >>> layout = plan_layout([TensorSpec(k, v.dtype, tuple(v.shape)) for k, v in t.items()])
        >>> w = StreamingSafetensorsWriter(d / "x.safetensors", layout)
        >>> w.write("b", t["b"]); w.write("a", t["a"])
        >>> w.commit().name
        'x.safetensors'
        >>> safetensors.torch.load_file(d / "x.safetensors")["b"]
        tensor([0., 1., 2.])
    """

    def __init__(self, final: str | os.PathLike, layout: Layout, *, preallocate: bool = True) -> None:
        self.final = Path(final)
        self.layout = layout
        self._remaining = set(layout.offsets)
        # Held around every use of the descriptor, so that abort() on one thread never closes it
        # under a pwrite on another (nor lets a later open reuse its number mid-write).
        self._lock = threading.Lock()
        self._fd: int | None = None
        self.tmp: Path | None = None
        with deferred_signals():
            self.tmp, self._fd = create_temp(self.final)
        try:
            self._allocate(preallocate)
            self._pwrite_all(memoryview(layout.header), 0)
        except BaseException:
            self.abort()
            raise

    def _allocate(self, preallocate: bool) -> None:
        assert self._fd is not None
        size = self.layout.file_size
        if preallocate and size > 0 and hasattr(os, "posix_fallocate"):
            try:
                os.posix_fallocate(self._fd, 0, size)  # reserves the space: a full disk fails now
                return
            except OSError as exc:
                if exc.errno not in (errno.EOPNOTSUPP, errno.EINVAL, getattr(errno, "ENOTSUP", errno.EOPNOTSUPP)):
                    raise
        os.ftruncate(self._fd, size)

    def _pwrite_all(self, view: memoryview, offset: int, on_bytes: Callable[[int], None] | None = None) -> None:
        pos, n = 0, view.nbytes
        while pos < n:
            with self._lock:
                if self._fd is None:
                    raise OutputWriteError(f"the writer of `{self.final.name}` was aborted")
                written = _pwrite(self._fd, view[pos : pos + _CHUNK], offset + pos)
                if written <= 0:  # pragma: no cover - the kernel reports errors as exceptions
                    raise OSError(errno.EIO, "short write")
                _start_writeback(self._fd, offset + pos, written)
            pos += written
            if on_bytes is not None:
                on_bytes(written)

    @property
    def done(self) -> bool:
        """Whether every tensor of the layout has been written."""
        return not self._remaining

    def write(self, name: str, tensor: torch.Tensor, on_bytes: Callable[[int], None] | None = None) -> None:
        """Write one tensor's bytes at its offset; ``tensor`` must match the planned dtype and shape."""
        if self._fd is None:
            raise ValueError(f"the writer of `{self.final.name}` is closed")
        spec = self.layout.specs.get(name)
        if spec is None:
            raise KeyError(f"`{name}` is not a tensor of `{self.final.name}`")
        if name not in self._remaining:
            raise ValueError(f"`{name}` was already written to `{self.final.name}`")
        if tensor.dtype != spec.dtype or tuple(tensor.shape) != spec.shape:
            raise ValueError(
                f"`{name}`: planned {list(spec.shape)} {spec.dtype}, got {list(tensor.shape)} {tensor.dtype}"
            )
        start, _ = self.layout.offsets[name]
        if spec.nbytes:
            if tensor.device.type != "cpu":
                tensor = tensor.to("cpu")
            tensor = tensor.contiguous()
            view, owner = little_endian_view(tensor)
            try:
                self._pwrite_all(view, start, on_bytes)
            finally:
                view.release()
                del owner
        self._remaining.discard(name)

    def close(self) -> None:
        """Flush the file to disk and close it (it keeps its temporary name)."""
        if self._remaining and self._fd is not None:
            missing = sorted(self._remaining)
            raise ValueError(f"`{self.final.name}` is missing `{missing[0]}` ({len(missing)} tensors unwritten)")
        with self._lock:
            fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def commit(self) -> Path:
        """Close the file and rename it to its final name (a symbolic link there is replaced)."""
        self.close()
        assert self.tmp is not None
        os.replace(self.tmp, self.final)
        self.tmp = None
        return self.final

    def abort(self) -> None:
        """Close and delete the temporary file (safe to call more than once, from any thread).

        A write in flight on another thread finishes its current chunk first; its next one fails.
        """
        with deferred_signals():
            with self._lock:
                fd, self._fd = self._fd, None
            if fd is not None:
                try:
                    os.close(fd)
                except OSError:
                    pass
            remove_quietly(self.tmp)
            self.tmp = None

