"""Naming the kind of file that was given where a recipe was expected (a checkpoint, an archive, a web page...)."""

from __future__ import annotations

from initrecipe.errors import RecipeFormatError


def sniff(data: bytes, total: int | None = None) -> str | None:
    """Name the kind of a file that is not a recipe, for a helpful message.

    ``data`` is the file's bytes, or its first bytes when ``total`` gives its full length.
    """
    total = len(data) if total is None else total
    if data[:4] == b"PK\x03\x04" or data[:4] == b"PK\x05\x06":
        return "a zip archive (a `torch.save` checkpoint?)"
    if len(data) >= 2 and data[0] == 0x80 and 2 <= data[1] <= 5:
        return "a pickle file (a `torch.save` checkpoint?)"
    if len(data) >= 10 and data[8:9] == b"{":
        header = int.from_bytes(data[:8], "little")
        if 2 <= header <= total - 8:
            return "a safetensors file (weights, not a recipe)"
    if data[:4] == b"GGUF":
        return "a GGUF file (weights, not a recipe)"
    if data[:6] == b"\x93NUMPY":
        return "a NumPy .npy file"
    if data[:2] == b"\x1f\x8b":
        return "a gzip-compressed file (decompress it first)"
    if data[:4] == b"\x28\xb5\x2f\xfd":
        return "a zstd-compressed file (decompress it first)"
    if data.startswith(b"version https://git-lfs"):
        return "a Git LFS pointer, not the file it points to (run `git lfs pull`)"
    head = data.lstrip()[:64].lower()
    if head[:1] in (b"{", b"["):
        return "a JSON file (a `config.json`? record it with `initrecipe record --hf-config`)"
    if head.startswith((b"<!doctype html", b"<html", b"<?xml", b"<")):
        return "an HTML or XML page (an error page saved instead of the download?)"
    return None


def not_a_recipe(data: bytes, detail: str) -> RecipeFormatError:
    """The error for bytes that fail to decode: naming the kind of file they are when :func:`sniff`
    can tell, else ``detail``."""
    kind = sniff(data)
    if kind is not None:
        return RecipeFormatError(f"this is {kind}, not an init recipe")
    return RecipeFormatError(detail)
