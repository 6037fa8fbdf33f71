"""Reading ``to_safetensors``' options as users write them: shard sizes (``"5GB"``) and dtypes (``"bf16"``)."""

from __future__ import annotations

import re

import torch

from initrecipe.export.safetensors_writer import SAFETENSORS_DTYPES

__all__ = ["parse_size", "parse_dtype"]

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

