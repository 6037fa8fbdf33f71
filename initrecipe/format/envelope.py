"""What must hold before a recipe's fields mean anything: the format name, the version this reader
can read, the set of top-level fields, and the content hash (``schema/FORMAT.md`` sections 3 and 8)."""

from __future__ import annotations

import hashlib
from typing import Any

from initrecipe._version import __version__
from initrecipe.errors import RecipeFormatError, RecipeIntegrityError, UnsupportedVersionError
from initrecipe.format.encode import pack
from initrecipe.format.spec import FIRST_READER, FORMAT_NAME, FORMAT_VERSION, TOP_LEVEL_KEYS
from initrecipe.format.unpack import check_map_keys
from initrecipe.format.validate import short


def compute_hash(doc: dict[str, Any]) -> str:
    """The content hash of a decoded recipe document (``sha256:<hex>`` of its body's canonical msgpack)."""
    return "sha256:" + hashlib.sha256(packed_body(doc)).hexdigest()


def packed_body(doc: dict[str, Any]) -> bytes:
    """The canonical msgpack of the nine fields the content hash covers."""
    try:
        return pack({k: doc[k] for k in TOP_LEVEL_KEYS})
    except (ValueError, TypeError, OverflowError, RecursionError) as exc:
        raise RecipeFormatError(f"the recipe cannot be re-encoded ({exc}): the file is corrupt or hostile") from None


def _is_canonical(encoded: bytes, body: bytes, stored_hash: str) -> bool:
    """Whether ``encoded`` is the canonical encoding of the document whose body packs to ``body``:
    its bytes are then exactly those (``schema/FORMAT.md`` section 8), so no map in it repeats a key."""
    tail = pack("hash") + pack(stored_hash)
    return (len(encoded) == len(body) + len(tail) and encoded[:1] == b"\x8a" and body[:1] == b"\x89"
            and encoded[1:len(body)] == body[1:] and encoded[len(body):] == tail)


def _looks_like_recipe(doc: dict[str, Any]) -> bool:
    """Whether a map that fails the envelope checks is more likely a damaged recipe than another file."""
    return "hash" in doc or sum(k in doc for k in TOP_LEVEL_KEYS) >= len(TOP_LEVEL_KEYS) // 2


def _version_hint(doc: dict[str, Any], verify_hash: bool) -> str:
    """For a version this reader refuses: a note when the content hash does not match either, which
    makes a damaged version field more likely than a real newer (or older) recipe."""
    if not verify_hash or not all(k in doc for k in TOP_LEVEL_KEYS):
        return ""
    try:
        if doc.get("hash") == compute_hash(doc):
            return ""
    except RecipeFormatError:
        pass
    return " (its content hash does not match either: if no such initrecipe exists, the file is corrupt)"


def check_envelope(doc: dict[str, Any], verify_hash: bool) -> None:
    """Format name, version and the set of top-level fields: what must hold before the hash means anything."""
    damaged = _looks_like_recipe(doc)
    corrupt = ": the file is corrupt" if damaged else ""
    fmt = doc.get("format")
    if fmt != FORMAT_NAME:
        if damaged:
            raise RecipeFormatError(
                f"format: expected `{FORMAT_NAME}`, found {short(fmt)}: the file looks like a damaged "
                "recipe (it is corrupt); download or copy it again"
            )
        raise RecipeFormatError(
            f"format: expected `{FORMAT_NAME}`, found {short(fmt)}; this msgpack file is not an init recipe"
        )
    version = doc.get("version")
    if not (
        isinstance(version, list)
        and len(version) == 2
        and all(type(v) is int and 0 <= v < 2**32 for v in version)
    ):
        raise RecipeFormatError(f"version: expected [major, minor], found {short(version)}{corrupt}")
    major, minor = version
    if (major, minor) > FORMAT_VERSION:
        needed = FIRST_READER.get((major, minor))
        need = f"initrecipe >= {needed}" if needed else "a newer initrecipe"
        raise UnsupportedVersionError(
            f"recipe format {major}.{minor} needs {need}; this is initrecipe {__version__}, which reads "
            f"format versions up to {FORMAT_VERSION[0]}.{FORMAT_VERSION[1]}. "
            f"Upgrade with `pip install -U initrecipe`{_version_hint(doc, verify_hash)}"
        )
    if major < FORMAT_VERSION[0]:
        raise UnsupportedVersionError(
            f"recipe format {major}.{minor} predates format 1.0 and cannot be read{_version_hint(doc, verify_hash)}"
        )
    unknown = sorted((str(k) for k in set(doc) - set(TOP_LEVEL_KEYS) - {"hash"}))
    if unknown:
        raise RecipeFormatError(
            f"unknown top-level field {short(unknown[0])} for format {major}.{minor}: the file is corrupt "
            "or was not written by initrecipe"
        )
    for key in TOP_LEVEL_KEYS:
        if key not in doc:
            raise RecipeFormatError(f"missing required field `{key}`: the recipe is incomplete or corrupt")


def verified_content_hash(doc: dict[str, Any], encoded: bytes | None) -> str:
    """The content hash of ``doc``, which must equal the one it stores (else
    :class:`~initrecipe.RecipeIntegrityError`).  ``encoded``: the bytes ``doc`` was decoded from,
    checked for repeated map keys unless they are the canonical encoding (which repeats none)."""
    stored = doc.get("hash")
    if not isinstance(stored, str):
        raise RecipeFormatError("hash: missing or not a string; the recipe is incomplete or corrupt")
    body = packed_body(doc)
    content_hash = "sha256:" + hashlib.sha256(body).hexdigest()
    if encoded is not None and not _is_canonical(encoded, body, stored):
        check_map_keys(encoded)  # a canonical file repeats no key; another may
    if stored != content_hash:
        raise RecipeIntegrityError(
            "the recipe's content hash does not match its content: the file is corrupt or was edited. "
            "Download or copy it again"
        )
    return content_hash
