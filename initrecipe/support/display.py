"""Text for people: numbers, shapes, sizes, names from files, and lines that fit a terminal.

Shared by ``show``, ``diff`` and the error messages; nothing here knows about recipes.
"""

from __future__ import annotations

import math
import struct
import textwrap

import torch

__all__ = [
    "failure_detail",
    "WIDTH",
    "safe",
    "number",
    "exact_number",
    "shape_text",
    "dtype_text",
    "size_text",
    "format_bytes",
    "SIZE_UNITS",
    "count_text",
    "pack",
    "shortest_in",
]

WIDTH = 80
"""Columns the human output of ``show`` and ``diff`` fits in."""


def safe(text: str) -> str:
    """Escape control characters (and other unprintable ones) in names read from a file."""
    if text.isprintable():
        return text
    return "".join(ch if ch.isprintable() else f"\\x{ord(ch):02x}" if ord(ch) < 256 else f"\\u{ord(ch):04x}"
                   for ch in text)


def number(value: object) -> str:
    """A number as people read it: ``0.02``, ``1.0``, ``0.00816497``, ``-inf``; short but not lossy
    for the values inits use (shortest round-trip form when it has at most 10 characters)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, int):
        return str(value)
    if math.isnan(value):
        return "nan"
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    text = repr(value)
    if len(text) <= 10:
        return text
    short = f"{value:.6g}"
    if "e" not in short and "." not in short:
        short += ".0"
    return short


def exact_number(value: object) -> str:
    """A number with every digit (for telling apart two values that :func:`number` shows alike)."""
    if isinstance(value, float) and math.isfinite(value):
        return repr(value)
    return number(value)


def shortest_in(value: float, dtype: torch.dtype) -> str:
    """The shortest decimal that rounds to the same ``dtype`` value as ``value`` (``-0.04`` for the
    float32 ``-0.03999999910593033``)."""
    if not math.isfinite(value) or dtype == torch.float64 or not dtype.is_floating_point:
        return number(value)
    if dtype == torch.float32:
        target = struct.pack("<f", value)
        for digits in range(1, 10):
            text = f"{value:.{digits}g}"
            if struct.pack("<f", float(text)) == target:
                return number(float(text))
        return number(value)
    target_value = torch.tensor(value, dtype=dtype)
    for digits in range(1, 10):
        text = f"{value:.{digits}g}"
        if torch.tensor(float(text), dtype=dtype) == target_value:
            return number(float(text))
    return number(value)


def shape_text(shape: tuple[int, ...] | list[int]) -> str:
    """``(5504, 2048)``; ``(768,)``; ``()`` for a 0-dimensional tensor."""
    shape = tuple(shape)
    if len(shape) == 1:
        return f"({shape[0]},)"
    return "(" + ", ".join(str(d) for d in shape) + ")"


def dtype_text(dtype: torch.dtype) -> str:
    """``float32`` rather than ``torch.float32``."""
    return str(dtype).removeprefix("torch.")


SIZE_UNITS = ("bytes", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB", "ZiB", "YiB")


def size_text(nbytes: int, *, largest_unit: str = "PiB") -> str:
    """``1.5 GiB`` style sizes, in units up to ``largest_unit`` (one of :data:`SIZE_UNITS`).

    ``show`` counts in units up to PiB (``4096.0 PiB``); error messages go up to YiB
    (:func:`format_bytes`).  Both spellings are observable, so both stay.
    """
    units = SIZE_UNITS[: SIZE_UNITS.index(largest_unit) + 1]
    value = float(nbytes)
    for unit in units[:-1]:
        if value < 1024:
            break
        value /= 1024
    else:
        unit = units[-1]
    return f"{nbytes} bytes" if unit == "bytes" else f"{value:.1f} {unit}"


def format_bytes(nbytes: int | None) -> str:
    """``1.5 GiB`` style sizes for messages, in units up to YiB; ``?`` for an unknown size."""
    return "?" if nbytes is None else size_text(nbytes, largest_unit="YiB")


def count_text(n: int, noun: str, plural: str | None = None) -> str:
    """``1 tensor``, ``3 tensors``."""
    return f"{n} {noun if n == 1 else (plural or noun + 's')}"


def pack(pieces: list[str], *, indent: str = "", width: int = WIDTH) -> list[str]:
    """Lay ``pieces`` out on lines of at most ``width`` columns, two spaces apart: as many as fit
    on the first line, the rest on lines indented four columns deeper (a piece longer than a
    line is wrapped at spaces).  A piece that cannot be broken may still overflow."""
    lines: list[str] = []
    current = indent
    deeper = indent + "    "
    for piece in pieces:
        if not piece:
            continue
        start = current.strip() == ""
        candidate = current + piece if start else f"{current}  {piece}"
        if len(candidate) <= width:
            current = candidate
            continue
        if not start:
            lines.append(current)
        current = deeper if lines or not start else current
        if len(current) + len(piece) <= width:
            current += piece
            continue
        wrapped = textwrap.wrap(piece, width=width, initial_indent=current, subsequent_indent=deeper + "  ",
                                break_long_words=False, break_on_hyphens=False) or [current + piece]
        lines.extend(wrapped[:-1])
        current = wrapped[-1]
    if current.strip():
        lines.append(current)
    return lines


def failure_detail(exc: BaseException) -> str:
    """What an exception says, for a message: the first line of its text, else its class name."""
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__
