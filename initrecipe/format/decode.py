"""Reading a recipe: :func:`load` (a path, bytes or a file object) and :func:`decode_document` (a
decoded msgpack map), each problem reported as a :class:`~initrecipe.RecipeError` naming its location."""

from __future__ import annotations

import io
import os
import stat
from typing import IO, Any, Union

from initrecipe.errors import RecipeError, RecipeFormatError
from initrecipe.format.entries import decode_tensors
from initrecipe.format.envelope import check_envelope, verified_content_hash
from initrecipe.format.instructions import ArgDecoder, decode_instruction
from initrecipe.format.recipe import Recipe, with_stored_encoding
from initrecipe.format.sniff import sniff
from initrecipe.format.spec import (
    MAX_FILE_BYTES,
    MAX_GENERATORS,
    MAX_INSTRUCTIONS,
    MAX_OPERATOR_NAMES,
    NEW_DRAWS_SINCE,
    PORTABLE_SINCE,
    RNG_MODES,
    TOP_LEVEL_KEYS,
    first_new_draw,
)
from initrecipe.format.unpack import check_map_keys, unpack_map
from initrecipe.format.validate import expect, expect_int, expect_str, short
from initrecipe.program.ir import Instruction
from initrecipe.program.operators import ALLOWED_OPERATORS
from initrecipe.support.gcpause import pausing_gc

__all__ = ["Source", "load", "decode_document"]

Source = Union[str, os.PathLike, bytes, bytearray, memoryview, IO[bytes]]
"""What :func:`load` reads: a path, the file's bytes, or a file object opened in ``"rb"`` mode."""

_SNIFF_BYTES = 4096


def _read_source(source: Source) -> bytes:
    """The bytes of ``source`` (a file is refused before it is read whole when it is too large or
    another kind of file)."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        return bytes(source)
    if isinstance(source, (str, os.PathLike)):
        path = os.fspath(source)
        if isinstance(path, bytes):
            path = os.fsdecode(path)
        try:
            info = os.stat(path)
        except FileNotFoundError:
            raise RecipeError(f"recipe file `{path}` does not exist") from None
        except (NotADirectoryError, ValueError, OSError) as exc:
            raise RecipeError(f"cannot read recipe file `{path}`: {exc.strerror or exc}") from None
        if stat.S_ISDIR(info.st_mode):
            raise RecipeError(f"`{path}` is a directory, not a recipe file")
        if not stat.S_ISREG(info.st_mode):
            # A FIFO or a device such as /dev/zero could block forever or never end.
            raise RecipeError(f"`{path}` is not a regular file (a device, FIFO or socket), not a recipe file")
        try:
            with open(path, "rb") as handle:
                # Name another kind of file (a multi-gigabyte checkpoint) from its first bytes,
                # before reading all of it.
                head = handle.read(_SNIFF_BYTES)
                kind = sniff(head, total=info.st_size)
                if kind is not None:
                    raise RecipeFormatError(f"this is {kind}, not an init recipe")
                if info.st_size > MAX_FILE_BYTES:
                    raise RecipeFormatError(
                        f"`{path}` holds {info.st_size} bytes, more than the {MAX_FILE_BYTES} a recipe may: "
                        "it is not a recipe"
                    )
                return head + handle.read(MAX_FILE_BYTES + 1 - len(head))
        except FileNotFoundError:
            raise RecipeError(f"recipe file `{path}` does not exist") from None
        except IsADirectoryError:
            raise RecipeError(f"`{path}` is a directory, not a recipe file") from None
        except OSError as exc:
            raise RecipeError(f"cannot read recipe file `{path}`: {exc.strerror or exc}") from None
    if hasattr(source, "read"):
        if isinstance(source, io.TextIOBase):
            raise RecipeError("the file object passed to `initrecipe.load` must be opened in binary mode ('rb')")
        try:
            data = source.read()
        except UnicodeDecodeError:
            raise RecipeError(
                "the file object passed to `initrecipe.load` must be opened in binary mode ('rb')"
            ) from None
        if not isinstance(data, (bytes, bytearray)):
            raise RecipeError("the file object passed to `initrecipe.load` must be opened in binary mode ('rb')")
        return bytes(data)
    raise TypeError(
        f"initrecipe.load expects a path, bytes or a binary file object, not {type(source).__name__}"
    )


@pausing_gc
def load(source: Source, *, verify_hash: bool = True) -> Recipe:
    """Read a recipe from a path, bytes, or a binary file object.

    Loading never executes code from the file: it decodes msgpack data, checks its structure, and
    resolves operator names only through initrecipe's allowlist.  Every problem is reported as a
    :class:`~initrecipe.RecipeError` naming its location (``program[12].args[0]: ...``); the sizes
    of everything read are bounded (see ``MAX_*`` in :mod:`initrecipe.format.spec`), so no file can make loading hang,
    crash, or exhaust memory.

    Args:
        source: a path, the file's bytes, or a file object opened in ``"rb"`` mode.
        verify_hash: check the stored content hash (turn off only to inspect a damaged file).

    Returns:
        The :class:`Recipe`.

    Raises:
        RecipeFormatError: the data is not a valid recipe (with the location of the first problem).
        UnsupportedVersionError: the recipe needs a newer initrecipe.
        RecipeIntegrityError: the content hash does not match (the file is corrupt).
        RecipeError: the path does not exist, is a directory, or cannot be read.

    Example:
        >>> import initrecipe, torch
        >>> data = initrecipe.record(lambda: torch.nn.Linear(4, 2), seed=0).to_bytes()
        >>> initrecipe.load(data).names
        ['weight', 'bias']
    """
    data = _read_source(source)
    return decode_document(unpack_map(data), verify_hash=verify_hash, encoded=data)


def decode_document(doc: dict[str, Any], *, verify_hash: bool = True, encoded: bytes | None = None) -> Recipe:
    """Turn a decoded msgpack map into a :class:`Recipe`, checking structure, version and hash.

    The order of the checks makes every message point at the real problem: the envelope (format,
    version, fields), then the content hash (so a damaged file is reported as corrupt, never as a
    strange instruction), then the structure of every field, instruction and tensor entry.
    ``encoded``: the bytes ``doc`` was decoded from, to refuse maps that repeat a key (which the
    decoded map no longer shows).
    """
    check_envelope(doc, verify_hash)
    content_hash = None
    if verify_hash:
        content_hash = verified_content_hash(doc, encoded)
    elif encoded is not None:
        check_map_keys(encoded)
    rng, seed = _decode_settings(doc)
    generators = expect_int(doc["generators"], "generators", hi=MAX_GENERATORS)
    ops = _decode_ops(doc["ops"])
    program_raw = expect(doc["program"], list, "program", "a list of instructions")
    if len(program_raw) > MAX_INSTRUCTIONS:
        raise RecipeFormatError(f"program: {len(program_raw)} instructions (at most {MAX_INSTRUCTIONS})")
    dec = ArgDecoder(generators, portable=rng == "portable")
    program = [decode_instruction(item, i, ops, dec) for i, item in enumerate(program_raw)]
    if rng == "portable" and tuple(doc["version"]) < NEW_DRAWS_SINCE:
        _refuse_new_draws(program, doc["version"])
    tensors = decode_tensors(doc["tensors"], dec)
    producer = _decode_producer(doc["producer"])
    recipe = Recipe(
        rng=rng, seed=seed, generators=generators, program=program, tensors=tensors, producer=producer
    )
    return with_stored_encoding(recipe, {k: doc[k] for k in TOP_LEVEL_KEYS}, content_hash)


def _decode_settings(doc: dict[str, Any]) -> tuple[str, int | None]:
    """The ``rng`` mode and the ``seed``, checked against each other and the version."""
    rng = doc["rng"]
    if not isinstance(rng, str) or rng not in RNG_MODES:
        raise RecipeFormatError(f"rng: expected one of {list(RNG_MODES)}, found {short(rng)}")
    seed = doc["seed"]
    if seed is not None:
        expect_int(seed, "seed", lo=-(2**63), hi=2**64 - 1)
    if rng == "portable":
        if tuple(doc["version"]) < PORTABLE_SINCE:
            raise RecipeFormatError(
                f"rng: `portable` recipes are format {PORTABLE_SINCE[0]}.{PORTABLE_SINCE[1]} or newer, "
                f"but this file says {doc['version'][0]}.{doc['version'][1]}: the file is corrupt"
            )
        if seed is None or seed < 0:
            raise RecipeFormatError(
                f"seed: a `portable` recipe needs a seed in 0 … 2**64-1 (its streams' keys derive from it), "
                f"found {short(seed)}"
            )
    return rng, seed


def _decode_ops(raw: object) -> list[str]:
    """The ``ops`` table: distinct operator names, each on the allowlist."""
    ops = expect(raw, list, "ops", "a list of operator names")
    if len(ops) > MAX_OPERATOR_NAMES:
        raise RecipeFormatError(f"ops: {len(ops)} operator names (at most {MAX_OPERATOR_NAMES})")
    seen_ops: dict[str, int] = {}
    for j, name in enumerate(ops):
        expect_str(name, f"ops[{j}]", "an operator name")
        parts = name.split(".")
        if len(parts) != 3 or parts[0] != "aten" or parts[1] not in ALLOWED_OPERATORS or not parts[2]:
            raise RecipeFormatError(
                f"ops[{j}]: unknown operator `{name[:120]}`: it is not on initrecipe's allowlist; "
                "the recipe was written by a newer or a modified initrecipe, or is corrupt"
            )
        if name in seen_ops:
            raise RecipeFormatError(f"ops[{j}]: `{name}` is listed twice (also ops[{seen_ops[name]}])")
        seen_ops[name] = j
    return ops


def _refuse_new_draws(program: list[Instruction], version: list[int]) -> None:
    """Refuse a draw format 1.2 added in a file that says it is older (it is then corrupt)."""
    new_draw = first_new_draw(program)
    if new_draw is not None:
        raise RecipeFormatError(
            f"program[{new_draw[0]}]: `{new_draw[1]}` draws from a stream key, which format "
            f"{NEW_DRAWS_SINCE[0]}.{NEW_DRAWS_SINCE[1]} added, but this file says "
            f"{version[0]}.{version[1]}: the file is corrupt"
        )


def _decode_producer(raw: object) -> dict[str, str]:
    """The ``producer`` map: at most 256 string entries."""
    producer = expect(raw, dict, "producer", "a map")
    if len(producer) > 256:
        raise RecipeFormatError(f"producer: {len(producer)} entries (at most 256)")
    for k, v in producer.items():
        expect_str(k, "producer", "string keys")
        expect_str(v, f"producer.{k}")
    return producer
