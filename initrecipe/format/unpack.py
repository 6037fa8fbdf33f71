"""From a recipe file's bytes to its top-level msgpack map, within bounded memory, every msgpack-level
problem (truncation, trailing bytes, oversized values, extension types, repeated or non-string map
keys) reported as a :class:`~initrecipe.RecipeFormatError`."""

from __future__ import annotations

from typing import Any

import msgpack

from initrecipe.errors import RecipeFormatError
from initrecipe.format.sniff import not_a_recipe, sniff
from initrecipe.format.spec import MAX_INSTRUCTIONS, MAX_STRING_CHARS
from initrecipe.format.validate import short

MSGPACK_LIMITS = dict(
    max_str_len=4 * MAX_STRING_CHARS,  # UTF-8 bytes
    max_array_len=MAX_INSTRUCTIONS,
    max_map_len=MAX_STRING_CHARS,
    max_ext_len=0,  # recipes hold no msgpack extension types
)



def unpack_map(data: bytes) -> dict[str, Any]:
    """The msgpack map that ``data`` encodes (its keys are checked later, by :func:`check_map_keys`)."""
    if not data:
        raise RecipeFormatError("the recipe is empty (0 bytes): the download or copy did not complete")
    try:
        doc = msgpack.unpackb(data, raw=False, strict_map_key=True, use_list=True, **MSGPACK_LIMITS)
    except msgpack.ExtraData:
        raise not_a_recipe(data, "the recipe has trailing bytes after its end: the file is corrupt") from None
    except msgpack.StackError:
        raise not_a_recipe(
            data, "the recipe nests values thousands of levels deep: the file is corrupt or hostile"
        ) from None
    except (ValueError, msgpack.UnpackException, TypeError, OverflowError) as exc:
        message = str(exc)
        if "incomplete input" in message:
            raise not_a_recipe(
                data, "the recipe is truncated (its data ends early): download or copy it again"
            ) from None
        if "max_ext_len" in message:
            raise not_a_recipe(
                data, "the recipe holds a msgpack extension type (an ext or timestamp value), which recipes never "
                "contain: the file is corrupt or hostile",
            ) from None
        if "exceeds max_" in message:
            raise not_a_recipe(
                data,
                f"the recipe declares an oversized value ({message}): the file is corrupt or hostile",
            ) from None
        if "is not allowed for map key" in message:
            kind = message.split(" is not allowed", 1)[0]
            raise not_a_recipe(data, _MapKeyError.non_string(_KEY_TYPE_NAMES.get(kind, kind))) from None
        raise not_a_recipe(
            data, f"the recipe is not valid msgpack ({message or type(exc).__name__}): the file is corrupt"
        ) from None
    except RecursionError:  # pragma: no cover - the C unpacker has its own depth limit
        raise RecipeFormatError("the recipe nests values too deeply: the file is corrupt or hostile") from None
    if not isinstance(doc, dict):
        kind = sniff(data)
        what = kind or f"a msgpack {type(doc).__name__}"
        raise RecipeFormatError(f"this is {what}, not an init recipe (expected a msgpack map)")
    return doc


def check_map_keys(data: bytes) -> None:
    """Decode ``data`` again, refusing maps with a repeated key or a key that is not a string."""
    try:
        msgpack.unpackb(data, raw=False, strict_map_key=True, use_list=True, object_pairs_hook=_map_from_pairs,
                        **MSGPACK_LIMITS)
    except _MapKeyError as exc:
        raise not_a_recipe(data, str(exc)) from None


class _MapKeyError(Exception):
    """A map with a repeated or non-string key, found while decoding (becomes a RecipeFormatError)."""

    @staticmethod
    def non_string(kind: str) -> str:
        return (f"the recipe has a map key of type {kind}; recipe maps have string keys only: the file is "
                "corrupt or was not written by initrecipe")


_KEY_TYPE_NAMES = {"int": "integer", "NoneType": "nil", "float": "float", "bool": "bool", "list": "array",
                   "dict": "map", "bytes": "bytes"}


def _map_from_pairs(pairs: list[tuple[Any, Any]]) -> dict[Any, Any]:
    """A decoded msgpack map, refusing repeated keys (msgpack would silently keep the last value,
    while another reader may keep the first: one file, two meanings) and keys that are bytes."""
    result = dict(pairs)
    if len(result) != len(pairs):
        seen: set[Any] = set()
        for key, _ in pairs:
            if key in seen:
                raise _MapKeyError(
                    f"the recipe has a map with the key {short(key)} twice; keys must be unique (readers could "
                    "disagree on which value counts): the file is corrupt or hostile"
                )
            seen.add(key)
    for key in result:
        if type(key) is not str:
            raise _MapKeyError(_MapKeyError.non_string(_KEY_TYPE_NAMES.get(type(key).__name__, type(key).__name__)))
    return result
