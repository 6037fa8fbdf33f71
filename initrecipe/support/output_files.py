"""Create output files so that a final name holds a complete file or nothing new.

Every file initrecipe writes (recipes, safetensors files, the shard index, ``config.json``) is
written under a fresh hidden name in the destination folder, ``.NAME.<16 hex digits>.tmp``,
opened with ``O_CREAT | O_EXCL | O_NOFOLLOW``: whatever already sits at that name, a file or a
symbolic link, is never opened, followed or truncated.  Only a complete, fsynced file is renamed
over the final name; ``rename(2)`` replaces a symbolic link found there instead of writing
through it, so a link planted in the output folder cannot redirect a write elsewhere.

Signals: the few steps that must not be cut in half (creating a temporary file and remembering
it; renaming a set of files into place; removing temporaries) run inside
:func:`deferred_signals`, which holds SIGINT, SIGTERM and SIGHUP until the step is done and then
delivers them as if they had just arrived.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import signal
import threading
from pathlib import Path
from typing import Iterator

from initrecipe.errors import OutputWriteError

__all__ = [
    "deferred_signals",
    "temp_path_for",
    "create_temp",
    "write_temp",
    "write_bytes_atomically",
    "refuse_folder_at",
    "remove_quietly",
    "fsync_dir",
    "output_error",
]


_DEFERRED = tuple(getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name))


@contextlib.contextmanager
def deferred_signals() -> Iterator[None]:
    """Hold SIGINT, SIGTERM and SIGHUP while the block runs; deliver any that came, afterwards.

    Only the main thread runs Python signal handlers, so elsewhere this does nothing (a signal
    then interrupts the main thread, not this block).  Signals that are ignored, or whose handler
    was not installed from Python, are left alone.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    arrived: list[int] = []

    def hold(signum: int, frame: object) -> None:
        arrived.append(signum)

    previous = {}
    for sig in _DEFERRED:
        handler = signal.getsignal(sig)
        if handler is None or handler is signal.SIG_IGN:
            continue
        previous[sig] = handler
        signal.signal(sig, hold)
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        for sig in dict.fromkeys(arrived):
            signal.raise_signal(sig)  # runs the restored handler now (KeyboardInterrupt, exit, ...)


def temp_path_for(final: Path) -> Path:
    """A fresh, unguessable hidden name beside ``final`` (64 random bits)."""
    return final.with_name(f".{final.name}.{secrets.token_hex(8)}.tmp")


_CREATE_FLAGS = (
    os.O_RDWR | os.O_CREAT | os.O_EXCL
    | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0)
)


def create_temp(final: Path) -> tuple[Path, int]:
    """Create a new empty temporary file beside ``final``; returns its path and an open descriptor.

    The file is new (``O_EXCL``): a file or symbolic link already at the chosen name is an error
    (and another name is tried), never opened.  Call it inside :func:`deferred_signals` and record
    the path before leaving the block, so that an interrupt cannot leave the file unaccounted for.
    """
    for _ in range(8):
        tmp = temp_path_for(final)
        try:
            return tmp, os.open(tmp, _CREATE_FLAGS, 0o666)
        except FileExistsError:
            continue  # someone placed something at a random name: pick another
    raise _error(f"cannot create a temporary file in `{final.parent}`: every name tried exists", errno.EEXIST)


def remove_quietly(path: Path | None) -> None:
    """Unlink ``path`` (a link is removed, not followed); a missing file is fine."""
    if path is None:
        return
    try:
        os.unlink(path)
    except OSError:
        pass


def write_temp(final: Path, data: bytes) -> Path:
    """Write ``data`` to a new temporary file beside ``final``, fsynced and closed; returns its path.

    On any failure (an interrupt included) the temporary file is removed.
    """
    tmp: Path | None = None
    try:
        with deferred_signals():
            tmp, fd = create_temp(final)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
    except BaseException:
        with deferred_signals():
            remove_quietly(tmp)
        raise
    return tmp


def refuse_folder_at(final: Path) -> None:
    """Raise :class:`OutputWriteError` if ``final`` is a folder (a file cannot be renamed over it)."""
    if os.path.isdir(final) and not os.path.islink(final):
        raise _error(f"`{final}` is a folder; remove it or write to another name", errno.EISDIR)


def write_bytes_atomically(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` so that ``path`` holds either its old content or all of ``data``.

    A symbolic link at ``path`` is replaced by the new file, not written through.

    Raises:
        OutputWriteError: the folder does not exist, the disk is full, permission was denied, ...
    """
    path = Path(path)
    try:
        refuse_folder_at(path)
        tmp = write_temp(path, data)
        try:
            with deferred_signals():
                os.replace(tmp, path)
        except BaseException:
            remove_quietly(tmp)
            raise
    except OutputWriteError:
        raise
    except OSError as exc:
        raise output_error(exc, path) from None
    fsync_dir(path.parent)
    return path


def fsync_dir(directory: Path) -> None:
    """Make renames in ``directory`` durable (best effort where directories cannot be opened)."""
    try:
        fd = os.open(directory if str(directory) else ".", os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def output_error(exc: OSError, target: Path, needed: int | None = None, *, folder: bool = False) -> OutputWriteError:
    """One line saying why writing ``target`` (a file, or with ``folder`` the output folder) failed."""
    code = exc.errno
    where = f"`{target}`"
    if code in (errno.ENOSPC, getattr(errno, "EDQUOT", -1)):
        what = "no space left on the device" if code == errno.ENOSPC else "disk quota exceeded"
        size = f" (the checkpoint needs {needed / 2**20:.1f} MiB)" if needed is not None else ""
        msg = f"{what} while writing to {where}{size}; free some space or choose another " + (
            "OUT_DIR" if folder else "path")
    elif code in (errno.EACCES, errno.EPERM) or isinstance(exc, PermissionError):
        msg = f"permission denied writing to {where}; choose a folder you can write to"
    elif code == errno.EROFS:
        msg = f"{where} is on a read-only file system; choose another " + ("OUT_DIR" if folder else "path")
    elif code == errno.ENOENT and not folder:
        msg = f"cannot write {where}: the folder `{target.parent}` does not exist; create it first"
    elif code == errno.EISDIR and not folder:
        msg = f"{where} is a folder; remove it or write to another name"
    else:
        name = f" `{exc.filename}`" if exc.filename else f" to {where}"
        msg = f"cannot write{name}: {exc.strerror or exc}"
    return _error(msg, code)


def _error(message: str, code: int | None) -> OutputWriteError:
    err = OutputWriteError(message)
    err.errno = code  # type: ignore[misc]
    return err
