"""The :class:`Recipe` object and its msgpack file format (see ``schema/FORMAT.md``)."""

from __future__ import annotations

import hashlib
import io
import math
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Sequence, Union

import msgpack
import torch

from initrecipe._version import __version__
from initrecipe.errors import RecipeError, RecipeFormatError, RecipeIntegrityError, UnsupportedVersionError
from initrecipe.support.gcpause import pausing_gc

TYPE_CHECKING = False
if TYPE_CHECKING:
    from initrecipe.analysis.describe import Uninitialized
from initrecipe.program.operators import ALLOWED_OPERATORS
from initrecipe.program.ir import (
    DTYPES,
    Call,
    GenRef,
    PortableKey,
    Instruction,
    Literal,
    Ref,
    RngRestore,
    RngSeed,
    RngSetState,
    dtype_from_name,
    dtype_name,
)

__all__ = ["Recipe", "TensorEntry", "load", "FORMAT_NAME", "FORMAT_VERSION", "RNG_MODES"]

FORMAT_NAME = "initrecipe"
FORMAT_VERSION: tuple[int, int] = (1, 2)
"""The newest format version this initrecipe reads and writes.  Writers use the lowest version
whose rules a recipe follows: 1.0 for ``torch`` recipes, 1.1 (which adds ``portable``) for portable
ones, 1.2 for portable ones that key a draw format 1.2 added (``cauchy_``, ``multinomial``, ...)."""
RNG_MODES = ("torch", "portable")
_PORTABLE_SINCE = (1, 1)
_NEW_DRAWS_SINCE = (1, 2)

# The initrecipe release that introduced each format version: what to tell a user whose reader is older.
_FIRST_READER = {(1, 0): "0.1.0", (1, 1): "0.2.0", (1, 2): "0.3.0"}

_OP_CALL, _OP_LITERAL, _OP_SEED, _OP_SET_STATE, _OP_RESTORE = range(5)
_KINDS = ("parameter", "buffer")
_LAYOUTS = {"strided": torch.strided}
_MEMORY_FORMATS = {
    "contiguous_format": torch.contiguous_format,
    "preserve_format": torch.preserve_format,
    "channels_last": torch.channels_last,
    "channels_last_3d": torch.channels_last_3d,
}
_TOP_LEVEL_KEYS = ("format", "version", "rng", "seed", "generators", "ops", "program", "tensors", "producer")

Source = Union[str, os.PathLike, bytes, bytearray, memoryview, IO[bytes]]


@dataclass(frozen=True)
class TensorEntry:
    """One fully qualified name of a model's parameter or buffer, and the value that holds it."""

    name: str
    value: int
    kind: str  # "parameter" or "buffer"
    shape: tuple[int, ...]
    dtype: torch.dtype
    requires_grad: bool
    persistent: bool

    @property
    def numel(self) -> int:
        """Number of elements."""
        return math.prod(self.shape)

    @property
    def nbytes(self) -> int:
        """Size of the tensor's data in bytes."""
        return self.numel * self.dtype.itemsize


class Recipe:
    """An init recipe: the program that builds a model's parameters and buffers, and their names.

    Build one with :func:`initrecipe.record`, read one with :func:`initrecipe.load`, turn it into
    tensors with :func:`initrecipe.replay`.

    Example:
        >>> import initrecipe, torch
        >>> recipe = initrecipe.record(lambda: torch.nn.Linear(4, 2), seed=0)
        >>> recipe.names
        ['weight', 'bias']
        >>> recipe.shapes["weight"]
        (2, 4)
    """

    def __init__(
        self,
        *,
        rng: str,
        seed: int | None,
        generators: int,
        program: list[Instruction],
        tensors: list[TensorEntry],
        producer: dict[str, str] | None = None,
    ) -> None:
        if rng not in RNG_MODES:
            raise RecipeFormatError(f"rng mode `{rng}` is unknown; expected one of {list(RNG_MODES)}")
        self.rng = rng
        self.seed = seed
        self.generators = generators
        self.program = program
        self.tensors = tensors
        self.producer = dict(producer) if producer is not None else {
            "initrecipe": __version__,
            "torch": torch.__version__.split("+")[0],
        }
        self._body: dict[str, Any] | None = None
        self._hash: str | None = None
        self._uninitialized: list[Uninitialized] | None = None

    # ----------------------------------------------------------------- introspection
    @property
    def names(self) -> list[str]:
        """Every fully qualified parameter and buffer name, parameters first, in module order."""
        return [t.name for t in self.tensors]

    @property
    def entries(self) -> dict[str, TensorEntry]:
        """Name to :class:`TensorEntry`."""
        return {t.name: t for t in self.tensors}

    @property
    def shapes(self) -> dict[str, tuple[int, ...]]:
        """Name to shape."""
        return {t.name: t.shape for t in self.tensors}

    @property
    def dtypes(self) -> dict[str, torch.dtype]:
        """Name to dtype."""
        return {t.name: t.dtype for t in self.tensors}

    @property
    def parameter_names(self) -> list[str]:
        """Names of parameters (tied names included)."""
        return [t.name for t in self.tensors if t.kind == "parameter"]

    @property
    def buffer_names(self) -> list[str]:
        """Names of buffers, persistent or not."""
        return [t.name for t in self.tensors if t.kind == "buffer"]

    @property
    def persistent(self) -> dict[str, bool]:
        """Name to whether it belongs in a ``state_dict`` (parameters and persistent buffers)."""
        return {t.name: t.persistent for t in self.tensors}

    @property
    def tie_groups(self) -> list[list[str]]:
        """Groups of two or more names that refer to one tensor object, e.g. tied embeddings."""
        groups: dict[int, list[str]] = {}
        for t in self.tensors:
            groups.setdefault(t.value, []).append(t.name)
        return [names for names in groups.values() if len(names) > 1]

    @property
    def uninitialized(self) -> list[Uninitialized]:
        """The tensors replay leaves fully or partly uninitialized (whatever memory holds, as in
        eager), in recipe order: name, shape, dtype and how many elements
        (:class:`initrecipe.analysis.describe.Uninitialized`).  Computed from the program on the meta
        device, once; ``initrecipe check`` lists them as warnings.

        Example:
            >>> import initrecipe, torch, warnings
            >>> with warnings.catch_warnings():
            ...     warnings.simplefilter("ignore", initrecipe.UninitializedWarning)
            ...     r = initrecipe.record(lambda: torch.nn.ParameterDict({"w": torch.nn.Parameter(torch.empty(3))}))
            >>> [(u.name, u.elements) for u in r.uninitialized]
            [('w', 3)]
        """
        if self._uninitialized is None:
            from initrecipe.inspect.show import find_uninitialized

            self._uninitialized = find_uninitialized(self)
        return list(self._uninitialized)

    @property
    def uninitialized_names(self) -> list[str]:
        """Names of the tensors replay leaves fully or partly uninitialized (see :attr:`uninitialized`)."""
        return [u.name for u in self.uninitialized]

    @property
    def num_ops(self) -> int:
        """Number of program instructions."""
        return len(self.program)

    @property
    def total_bytes(self) -> int:
        """Bytes of all distinct output tensors (tied names counted once)."""
        seen: dict[int, int] = {}
        for t in self.tensors:
            seen[t.value] = t.nbytes
        return sum(seen.values())

    @property
    def content_hash(self) -> str:
        """``sha256:<hex>`` of the canonical encoding of everything in the recipe but the hash itself."""
        if self._hash is None:
            self._hash = "sha256:" + hashlib.sha256(_pack(self._encoded_body())).hexdigest()
        return self._hash

    def __repr__(self) -> str:
        return (
            f"Recipe(rng={self.rng!r}, seed={self.seed!r}, tensors={len(self.tensors)}, "
            f"ops={len(self.program)}, hash={self.content_hash[:19]}...)"
        )

    # ----------------------------------------------------------------- serialization
    def to_bytes(self) -> bytes:
        """The recipe file's bytes."""
        body = dict(self._encoded_body())
        body["hash"] = self.content_hash
        return _pack(body)

    def save(self, path: str | os.PathLike) -> Path:
        """Write the recipe to ``path`` atomically (a temporary file in the same folder, then a rename).

        Returns the path written.
        """
        return atomic_write_bytes(Path(path), self.to_bytes())

    def _encoded_body(self) -> dict[str, Any]:
        if self._body is None:
            self._body = _encode_body(self)
        return self._body


def atomic_write_bytes(path: Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` so that ``path`` holds either its old content or all of ``data``."""
    from initrecipe.support.output_files import write_bytes_atomically

    return write_bytes_atomically(path, data)


# --------------------------------------------------------------------------- encoding
def _pack(obj: Any) -> bytes:
    return msgpack.packb(obj, use_bin_type=True, use_single_float=False, strict_types=False)


def _encode_arg(value: Any) -> Any:
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, Ref):
        return {"t": value.id}
    if isinstance(value, GenRef):
        return {"g": value.id}
    if isinstance(value, PortableKey):
        return {"key": [value.stream, value.position]}
    if isinstance(value, (list, tuple)):
        return [_encode_arg(v) for v in value]
    if isinstance(value, torch.dtype):
        return {"dtype": dtype_name(value)}
    if isinstance(value, torch.device):
        return {"device": str(value)}
    if isinstance(value, torch.layout):
        return {"layout": str(value).removeprefix("torch.")}
    if isinstance(value, torch.memory_format):
        return {"memory_format": str(value).removeprefix("torch.")}
    if isinstance(value, complex):
        return {"complex": [value.real, value.imag]}
    raise TypeError(f"cannot encode argument of type {type(value).__name__}")


def format_version_for(rng: str, program: Sequence[Instruction] = ()) -> tuple[int, int]:
    """The format version a writer records for a recipe in ``rng`` mode with ``program`` (the
    lowest that has what it uses): 1.0 for ``torch``, 1.1 for ``portable``, 1.2 for a portable
    program that keys a draw of :data:`initrecipe.rng.portable.semantics.FORMAT_1_2_DRAWS`."""
    if rng != "portable":
        return (1, 0)
    return _NEW_DRAWS_SINCE if _first_new_draw(program) is not None else _PORTABLE_SINCE


def _first_new_draw(program: Sequence[Instruction]) -> tuple[int, str] | None:
    """(index, operator) of the first portable draw that format 1.2 added, or None."""
    from initrecipe.rng.portable.semantics import FORMAT_1_2_DRAWS

    for i, ins in enumerate(program):
        if isinstance(ins, Call) and ins.op in FORMAT_1_2_DRAWS and any(
            isinstance(a, PortableKey) for a in (*ins.args, *ins.kwargs.values())
        ):
            return i, ins.op
    return None


def _encode_body(recipe: Recipe) -> dict[str, Any]:
    op_names: list[str] = []
    op_index: dict[str, int] = {}
    program: list[list[Any]] = []
    for ins in recipe.program:
        if isinstance(ins, Call):
            idx = op_index.get(ins.op)
            if idx is None:
                idx = op_index[ins.op] = len(op_names)
                op_names.append(ins.op)
            item: list[Any] = [
                _OP_CALL,
                idx,
                list(ins.outs),
                [_encode_arg(a) for a in ins.args],
                {k: _encode_arg(v) for k, v in ins.kwargs.items()},
            ]
            if ins.out_meta is not None:
                item.append([[dtype_name(d), list(s)] for d, s in ins.out_meta])
            program.append(item)
        elif isinstance(ins, Literal):
            program.append([_OP_LITERAL, ins.out, dtype_name(ins.dtype), list(ins.shape), bytes(ins.data)])
        elif isinstance(ins, RngSeed):
            program.append([_OP_SEED, ins.gen, ins.seed])
        elif isinstance(ins, RngSetState):
            program.append([_OP_SET_STATE, ins.gen, bytes(ins.state)])
        elif isinstance(ins, RngRestore):
            program.append([_OP_RESTORE, ins.gen, ins.after])
        else:  # pragma: no cover - programming error
            raise TypeError(f"unknown instruction {ins!r}")
    tensors = [
        [t.name, t.value, t.kind, list(t.shape), dtype_name(t.dtype), t.requires_grad, t.persistent]
        for t in recipe.tensors
    ]
    return {
        "format": FORMAT_NAME,
        "version": list(format_version_for(recipe.rng, recipe.program)),
        "rng": recipe.rng,
        "seed": recipe.seed,
        "generators": recipe.generators,
        "ops": op_names,
        "program": program,
        "tensors": tensors,
        "producer": dict(recipe.producer),
    }


# --------------------------------------------------------------------------- decoding
# Limits on what a recipe file may hold.  Each is far above what any real model needs; together
# they bound the memory and time that reading an arbitrary (corrupt or hostile) file can cost.
MAX_INSTRUCTIONS = 10_000_000
"""Most program instructions a recipe may hold."""
MAX_TENSORS = 1_000_000
"""Most tensor entries (names) a recipe may hold."""
MAX_OPERATOR_NAMES = 65_536
"""Most distinct operator names in the ``ops`` table."""
MAX_GENERATORS = 4_096
"""Most random generators a recipe may declare (replay creates each one)."""
MAX_STRING_CHARS = 65_536
"""Longest string (a tensor name, an operator name, a string argument)."""
MAX_LIST_ITEMS = 1_000_000
"""Longest list inside an instruction's arguments."""
MAX_ARG_DEPTH = 8
"""Deepest nesting of lists inside one argument."""
MAX_DIMS = 64
"""Most dimensions of one tensor."""
MAX_ID = 2**63 - 1
"""Largest tensor value id."""
RNG_STATE_BYTES = 5056
"""Size of a torch CPU generator state (``len(torch.Generator().get_state())``: mt19937 plus normal-sampling caches)."""

MAX_FILE_BYTES = 4 << 30
"""Largest recipe file (literals included); real recipes are kilobytes to megabytes."""

_SNIFF_BYTES = 4096
_MAX_BYTES_PER_TENSOR = 2**63 - 1  # torch sizes are int64
_MSGPACK_LIMITS = dict(
    max_str_len=4 * MAX_STRING_CHARS,  # UTF-8 bytes
    max_array_len=MAX_INSTRUCTIONS,
    max_map_len=MAX_STRING_CHARS,
    max_ext_len=0,  # recipes hold no msgpack extension types
)


def _read_source(source: Source) -> bytes:
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
                kind = _sniff(head, total=info.st_size)
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


def _sniff(data: bytes, total: int | None = None) -> str | None:
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


def _not_a_recipe(data: bytes, detail: str) -> RecipeFormatError:
    kind = _sniff(data)
    if kind is not None:
        return RecipeFormatError(f"this is {kind}, not an init recipe")
    return RecipeFormatError(detail)


@pausing_gc
def load(source: Source, *, verify_hash: bool = True) -> Recipe:
    """Read a recipe from a path, bytes, or a binary file object.

    Loading never executes code from the file: it decodes msgpack data, checks its structure, and
    resolves operator names only through initrecipe's allowlist.  Every problem is reported as a
    :class:`~initrecipe.RecipeError` naming its location (``program[12].args[0]: ...``); the sizes
    of everything read are bounded (see ``MAX_*`` in this module), so no file can make loading hang,
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
    if not data:
        raise RecipeFormatError("the recipe is empty (0 bytes): the download or copy did not complete")
    try:
        doc = msgpack.unpackb(data, raw=False, strict_map_key=True, use_list=True, **_MSGPACK_LIMITS)
    except msgpack.ExtraData:
        raise _not_a_recipe(data, "the recipe has trailing bytes after its end: the file is corrupt") from None
    except msgpack.StackError:
        raise _not_a_recipe(
            data, "the recipe nests values thousands of levels deep: the file is corrupt or hostile"
        ) from None
    except (ValueError, msgpack.UnpackException, TypeError, OverflowError) as exc:
        message = str(exc)
        if "incomplete input" in message:
            raise _not_a_recipe(
                data, "the recipe is truncated (its data ends early): download or copy it again"
            ) from None
        if "max_ext_len" in message:
            raise _not_a_recipe(
                data, "the recipe holds a msgpack extension type (an ext or timestamp value), which recipes never "
                "contain: the file is corrupt or hostile",
            ) from None
        if "exceeds max_" in message:
            raise _not_a_recipe(
                data,
                f"the recipe declares an oversized value ({message}): the file is corrupt or hostile",
            ) from None
        if "is not allowed for map key" in message:
            kind = message.split(" is not allowed", 1)[0]
            raise _not_a_recipe(data, _MapKeyError.non_string(_KEY_TYPE_NAMES.get(kind, kind))) from None
        raise _not_a_recipe(
            data, f"the recipe is not valid msgpack ({message or type(exc).__name__}): the file is corrupt"
        ) from None
    except RecursionError:  # pragma: no cover - the C unpacker has its own depth limit
        raise RecipeFormatError("the recipe nests values too deeply: the file is corrupt or hostile") from None
    if not isinstance(doc, dict):
        kind = _sniff(data)
        what = kind or f"a msgpack {type(doc).__name__}"
        raise RecipeFormatError(f"this is {what}, not an init recipe (expected a msgpack map)")
    return decode_document(doc, verify_hash=verify_hash, encoded=data)


def _check_map_keys(data: bytes) -> None:
    """Decode ``data`` again, refusing maps with a repeated key or a key that is not a string."""
    try:
        msgpack.unpackb(data, raw=False, strict_map_key=True, use_list=True, object_pairs_hook=_map_from_pairs,
                        **_MSGPACK_LIMITS)
    except _MapKeyError as exc:
        raise _not_a_recipe(data, str(exc)) from None


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
                    f"the recipe has a map with the key {_short(key)} twice; keys must be unique (readers could "
                    "disagree on which value counts): the file is corrupt or hostile"
                )
            seen.add(key)
    for key in result:
        if type(key) is not str:
            raise _MapKeyError(_MapKeyError.non_string(_KEY_TYPE_NAMES.get(type(key).__name__, type(key).__name__)))
    return result


def _type_name(value: Any) -> str:
    if value is None:
        return "nil"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        return "string"
    if isinstance(value, (bytes, bytearray)):
        return "bytes"
    if isinstance(value, list):
        return "list"
    if isinstance(value, dict):
        return "map"
    return type(value).__name__


def _expect(value: Any, types: type | tuple[type, ...], where: str, what: str) -> Any:
    if isinstance(value, bool) and bool not in (types if isinstance(types, tuple) else (types,)):
        raise RecipeFormatError(f"{where}: expected {what}, found bool")
    if not isinstance(value, types):
        raise RecipeFormatError(f"{where}: expected {what}, found {_type_name(value)}")
    return value


def _expect_int(value: Any, where: str, *, lo: int = 0, hi: int | None = MAX_ID) -> int:
    _expect(value, int, where, "an integer")
    if value < lo or (hi is not None and value > hi):
        bound = f"[{lo}, {hi}]" if hi is not None else f">= {lo}"
        raise RecipeFormatError(f"{where}: integer {value} out of range {bound}")
    return value


def _expect_str(value: Any, where: str, what: str = "a string") -> str:
    _expect(value, str, where, what)
    if len(value) > MAX_STRING_CHARS:
        raise RecipeFormatError(f"{where}: a string of {len(value)} characters (at most {MAX_STRING_CHARS})")
    return value


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _decode_dtype(value: Any, where: str) -> torch.dtype:
    try:
        return dtype_from_name(value)
    except (KeyError, TypeError):
        raise RecipeFormatError(f"{where}: unknown dtype {_short(value)}") from None


class _ArgDecoder:
    """Decodes instruction arguments, checking tensor references against the values defined so far."""

    __slots__ = ("generators", "portable", "defined")

    def __init__(self, generators: int, portable: bool = False) -> None:
        self.generators = generators
        self.portable = portable
        self.defined: dict[int, int] = {}  # value id -> index of the instruction defining it

    def ref(self, payload: Any, where: str) -> Ref:
        vid = _expect_int(payload, where)
        if vid not in self.defined:
            raise RecipeFormatError(
                f"{where}: reference to undefined tensor {vid} (a value must be defined by an earlier instruction)"
            )
        return Ref(vid)

    def arg(self, value: Any, where: str, depth: int = 0) -> Any:
        if value is None or isinstance(value, (bool, int, float)):
            return value
        if isinstance(value, str):
            return _expect_str(value, where)
        if isinstance(value, list):
            if depth >= MAX_ARG_DEPTH:
                raise RecipeFormatError(f"{where}: arguments nested deeper than {MAX_ARG_DEPTH} levels")
            if len(value) > MAX_LIST_ITEMS:
                raise RecipeFormatError(f"{where}: a list of {len(value)} items (at most {MAX_LIST_ITEMS})")
            if all(type(v) is int for v in value):  # the common case: a shape
                return value
            return [self.arg(v, f"{where}[{i}]", depth + 1) for i, v in enumerate(value)]
        if isinstance(value, dict):
            if len(value) != 1:
                raise RecipeFormatError(f"{where}: a tagged value must have exactly one key, found {len(value)}")
            ((tag, payload),) = value.items()
            if tag == "t":
                return self.ref(payload, f"{where}.t")
            if tag == "g":
                gid = _expect_int(payload, f"{where}.g")
                if gid >= self.generators:
                    raise RecipeFormatError(
                        f"{where}.g: generator {gid} is not declared (the recipe declares {self.generators})"
                    )
                return GenRef(gid)
            if tag == "key":
                return self.portable_key(payload, f"{where}.key")
            if tag == "dtype":
                return _decode_dtype(payload, where)
            if tag == "device":
                if not isinstance(payload, str) or payload.split(":")[0] not in ("cpu", "cuda", "meta"):
                    raise RecipeFormatError(f"{where}: unknown device {_short(payload)}")
                try:
                    return torch.device(payload)
                except (RuntimeError, ValueError):
                    raise RecipeFormatError(f"{where}: malformed device {_short(payload)}") from None
            if tag == "layout":
                if not isinstance(payload, str) or payload not in _LAYOUTS:
                    raise RecipeFormatError(f"{where}: unknown layout {_short(payload)}")
                return _LAYOUTS[payload]
            if tag == "memory_format":
                if not isinstance(payload, str) or payload not in _MEMORY_FORMATS:
                    raise RecipeFormatError(f"{where}: unknown memory format {_short(payload)}")
                return _MEMORY_FORMATS[payload]
            if tag == "complex":
                if (
                    not isinstance(payload, list)
                    or len(payload) != 2
                    or not all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in payload)
                ):
                    raise RecipeFormatError(f"{where}: a complex value is a list of two numbers")
                return complex(payload[0], payload[1])
            raise RecipeFormatError(f"{where}: unknown tag {_short(tag)}")
        raise RecipeFormatError(f"{where}: values of type {_type_name(value)} are not allowed in arguments")

    def portable_key(self, payload: Any, where: str) -> PortableKey:
        if not self.portable:
            raise RecipeFormatError(
                f"{where}: a portable stream key in an rng='torch' recipe (keys exist only in rng='portable' recipes)"
            )
        if not (isinstance(payload, list) and len(payload) == 2):
            raise RecipeFormatError(f"{where}: a stream key is [tensor name, position], found {_short(payload)}")
        stream = _expect_str(payload[0], f"{where}[0]", "a tensor name")
        position = _expect_int(payload[1], f"{where}[1]", hi=2**32 - 1)
        return PortableKey(stream, position)

    def define(self, vid: int, index: int, where: str) -> None:
        previous = self.defined.get(vid)
        if previous is not None:
            raise RecipeFormatError(
                f"{where}: value {vid} is defined twice (first by program[{previous}]); values are defined once"
            )
        self.defined[vid] = index


def _decode_shape(value: Any, where: str, dtype: torch.dtype | None = None) -> tuple[int, ...]:
    _expect(value, list, where, "a shape (list of integers)")
    if len(value) > MAX_DIMS:
        raise RecipeFormatError(f"{where}: {len(value)} dimensions (at most {MAX_DIMS})")
    shape = tuple(_expect_int(d, f"{where}[{i}]") for i, d in enumerate(value))
    nbytes = math.prod(shape) * (dtype.itemsize if dtype is not None else 1)
    if nbytes > _MAX_BYTES_PER_TENSOR:
        raise RecipeFormatError(
            f"{where}: shape {_short(list(shape))} holds {math.prod(shape)} elements, more than any machine can address"
        )
    return shape


_EXPECTED_LEN = {_OP_CALL: (5, 6), _OP_LITERAL: (5,), _OP_SEED: (3,), _OP_SET_STATE: (3,), _OP_RESTORE: (3,)}


def _check_gen(value: Any, where: str, generators: int) -> int:
    gid = _expect_int(value, where)
    if gid >= generators:
        raise RecipeFormatError(f"{where}: generator {gid} is not declared (the recipe declares {generators})")
    return gid


def _fast_call(item: list, i: int, ops: list[str], dec: _ArgDecoder) -> Call | None:
    """A CALL whose every field is of the common, plainly valid kinds (tensor references to
    defined values, numbers, shapes, short strings; keyword values of any kind), decoded without
    building location strings; None for anything else, which :func:`_decode_instruction` then
    decodes carefully and reports."""
    if len(item) != 5:
        return None
    _, op_idx, outs_raw, args, kwargs = item
    if (type(op_idx) is not int or not 0 <= op_idx < len(ops) or type(outs_raw) is not list
            or type(args) is not list or type(kwargs) is not dict or len(outs_raw) > MAX_LIST_ITEMS):
        return None
    defined = dec.defined
    decoded: list[Any] = []
    for a in args:
        kind = type(a)
        if kind is dict:
            ref = a.get("t") if len(a) == 1 else None
            if type(ref) is not int or ref not in defined:
                return None
            decoded.append(Ref(ref))
        elif a is None or kind is int or kind is float or kind is bool:
            decoded.append(a)
        elif kind is list:
            if len(a) > MAX_LIST_ITEMS or not all(type(v) is int for v in a):
                return None
            decoded.append(a)
        elif kind is str and len(a) <= MAX_STRING_CHARS:
            decoded.append(a)
        else:
            return None
    dec_kwargs = {}
    if kwargs:
        where = f"program[{i}]"
        for k, v in kwargs.items():
            if type(k) is not str or len(k) > MAX_STRING_CHARS:
                return None
            dec_kwargs[k] = dec.arg(v, f"{where}.kwargs.{k}")
    outs: list[int | None] = []
    for o in outs_raw:
        if o is None:
            outs.append(None)
        elif type(o) is int and 0 <= o <= MAX_ID and o not in defined:
            outs.append(o)
        else:
            return None
    fresh = [o for o in outs if o is not None]
    if len(set(fresh)) != len(fresh):
        return None
    for o in fresh:
        defined[o] = i
    return Call(ops[op_idx], tuple(outs), tuple(decoded), dec_kwargs, None)


def _decode_instruction(item: Any, i: int, ops: list[str], dec: _ArgDecoder) -> Instruction:
    if type(item) is list and item and item[0] == 0 and type(item[0]) is int:
        call = _fast_call(item, i, ops, dec)
        if call is not None:
            return call
    where = f"program[{i}]"
    _expect(item, list, where, "an instruction (a list)")
    if not item:
        raise RecipeFormatError(f"{where}: empty instruction")
    code = item[0]
    if type(code) is not int or code not in _EXPECTED_LEN:
        raise RecipeFormatError(f"{where}[0]: unknown instruction code {_short(code)}")
    if len(item) not in _EXPECTED_LEN[code]:
        raise RecipeFormatError(
            f"{where}: instruction code {code} takes {' or '.join(map(str, _EXPECTED_LEN[code]))} fields, "
            f"found {len(item)}"
        )
    if code == _OP_CALL:
        op_idx = _expect_int(item[1], f"{where}[1]", hi=len(ops) - 1)
        outs_raw = _expect(item[2], list, f"{where}.outs", "a list of output ids")
        if len(outs_raw) > MAX_LIST_ITEMS:
            raise RecipeFormatError(f"{where}.outs: {len(outs_raw)} outputs (at most {MAX_LIST_ITEMS})")
        args = _expect(item[3], list, f"{where}.args", "a list of arguments")
        kwargs = _expect(item[4], dict, f"{where}.kwargs", "a map of keyword arguments")
        dec_args = tuple(dec.arg(a, f"{where}.args[{j}]") for j, a in enumerate(args))
        dec_kwargs = {}
        for k, v in kwargs.items():
            _expect_str(k, f"{where}.kwargs", "string keys")
            dec_kwargs[k] = dec.arg(v, f"{where}.kwargs.{k}")
        out_meta = None
        if len(item) == 6:
            metas = _expect(item[5], list, f"{where}.out_meta", "a list of [dtype, shape] pairs")
            if len(metas) != len(outs_raw):
                raise RecipeFormatError(
                    f"{where}.out_meta: {len(metas)} entries for {len(outs_raw)} outputs"
                )
            decoded = []
            for j, m in enumerate(metas):
                w = f"{where}.out_meta[{j}]"
                if not isinstance(m, list) or len(m) != 2:
                    raise RecipeFormatError(f"{w}: expected a [dtype, shape] pair")
                d = _decode_dtype(m[0], w)
                decoded.append((d, _decode_shape(m[1], w, d)))
            out_meta = tuple(decoded)
        outs = []
        for j, o in enumerate(outs_raw):
            if o is None:
                outs.append(None)
                continue
            vid = _expect_int(o, f"{where}.outs[{j}]")
            dec.define(vid, i, f"{where}.outs[{j}]")
            outs.append(vid)
        return Call(ops[op_idx], tuple(outs), dec_args, dec_kwargs, out_meta)
    if code == _OP_LITERAL:
        out = _expect_int(item[1], f"{where}.out")
        dtype = _decode_dtype(item[2], f"{where}.dtype")
        shape = _decode_shape(item[3], f"{where}.shape", dtype)
        data = _expect(item[4], bytes, f"{where}.data", "bytes")
        if len(data) != math.prod(shape) * dtype.itemsize:
            raise RecipeFormatError(
                f"{where}.data: {len(data)} bytes, but shape {list(shape)} of {dtype_name(dtype)} needs "
                f"{math.prod(shape) * dtype.itemsize}"
            )
        if dtype == torch.bool and data.translate(None, b"\x00\x01"):
            raise RecipeFormatError(f"{where}.data: a bool literal holds bytes other than 0 and 1")
        dec.define(out, i, f"{where}.out")
        return Literal(out, dtype, shape, data)
    gen = _check_gen(item[1], f"{where}.gen", dec.generators)
    if code == _OP_SEED:
        return RngSeed(gen, _expect_int(item[2], f"{where}.seed", hi=2**64 - 1))
    if code == _OP_SET_STATE:
        state = _expect(item[2], bytes, f"{where}.state", "bytes")
        if len(state) != RNG_STATE_BYTES:
            raise RecipeFormatError(
                f"{where}.state: {len(state)} bytes, but a torch CPU generator state has {RNG_STATE_BYTES}"
            )
        return RngSetState(gen, state)
    return RngRestore(gen, _expect_int(item[2], f"{where}.after", hi=i - 1))


def compute_hash(doc: dict[str, Any]) -> str:
    """The content hash of a decoded recipe document (``sha256:<hex>`` of its body's canonical msgpack)."""
    return "sha256:" + hashlib.sha256(_packed_body(doc)).hexdigest()


def _packed_body(doc: dict[str, Any]) -> bytes:
    """The canonical msgpack of the nine fields the content hash covers."""
    try:
        return _pack({k: doc[k] for k in _TOP_LEVEL_KEYS})
    except (ValueError, TypeError, OverflowError, RecursionError) as exc:
        raise RecipeFormatError(f"the recipe cannot be re-encoded ({exc}): the file is corrupt or hostile") from None


def _is_canonical(encoded: bytes, body: bytes, stored_hash: str) -> bool:
    """Whether ``encoded`` is the canonical encoding of the document whose body packs to ``body``:
    its bytes are then exactly those (``schema/FORMAT.md`` section 8), so no map in it repeats a key."""
    tail = _pack("hash") + _pack(stored_hash)
    return (len(encoded) == len(body) + len(tail) and encoded[:1] == b"\x8a" and body[:1] == b"\x89"
            and encoded[1:len(body)] == body[1:] and encoded[len(body):] == tail)


def _looks_like_recipe(doc: dict[str, Any]) -> bool:
    """Whether a map that fails the envelope checks is more likely a damaged recipe than another file."""
    return "hash" in doc or sum(k in doc for k in _TOP_LEVEL_KEYS) >= len(_TOP_LEVEL_KEYS) // 2


def _version_hint(doc: dict[str, Any], verify_hash: bool) -> str:
    """For a version this reader refuses: a note when the content hash does not match either, which
    makes a damaged version field more likely than a real newer (or older) recipe."""
    if not verify_hash or not all(k in doc for k in _TOP_LEVEL_KEYS):
        return ""
    try:
        if doc.get("hash") == compute_hash(doc):
            return ""
    except RecipeFormatError:
        pass
    return " (its content hash does not match either: if no such initrecipe exists, the file is corrupt)"


def _check_envelope(doc: dict[str, Any], verify_hash: bool) -> None:
    """Format name, version and the set of top-level fields: what must hold before the hash means anything."""
    damaged = _looks_like_recipe(doc)
    corrupt = ": the file is corrupt" if damaged else ""
    fmt = doc.get("format")
    if fmt != FORMAT_NAME:
        if damaged:
            raise RecipeFormatError(
                f"format: expected `{FORMAT_NAME}`, found {_short(fmt)}: the file looks like a damaged "
                "recipe (it is corrupt); download or copy it again"
            )
        raise RecipeFormatError(
            f"format: expected `{FORMAT_NAME}`, found {_short(fmt)}; this msgpack file is not an init recipe"
        )
    version = doc.get("version")
    if not (
        isinstance(version, list)
        and len(version) == 2
        and all(type(v) is int and 0 <= v < 2**32 for v in version)
    ):
        raise RecipeFormatError(f"version: expected [major, minor], found {_short(version)}{corrupt}")
    major, minor = version
    if (major, minor) > FORMAT_VERSION:
        needed = _FIRST_READER.get((major, minor))
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
    unknown = sorted((str(k) for k in set(doc) - set(_TOP_LEVEL_KEYS) - {"hash"}))
    if unknown:
        raise RecipeFormatError(
            f"unknown top-level field {_short(unknown[0])} for format {major}.{minor}: the file is corrupt "
            "or was not written by initrecipe"
        )
    for key in _TOP_LEVEL_KEYS:
        if key not in doc:
            raise RecipeFormatError(f"missing required field `{key}`: the recipe is incomplete or corrupt")


def decode_document(doc: dict[str, Any], *, verify_hash: bool = True, encoded: bytes | None = None) -> Recipe:
    """Turn a decoded msgpack map into a :class:`Recipe`, checking structure, version and hash.

    The order of the checks makes every message point at the real problem: the envelope (format,
    version, fields), then the content hash (so a damaged file is reported as corrupt, never as a
    strange instruction), then the structure of every field, instruction and tensor entry.
    ``encoded``: the bytes ``doc`` was decoded from, to refuse maps that repeat a key (which the
    decoded map no longer shows).
    """
    _check_envelope(doc, verify_hash)
    content_hash = None
    if verify_hash:
        stored = doc.get("hash")
        if not isinstance(stored, str):
            raise RecipeFormatError("hash: missing or not a string; the recipe is incomplete or corrupt")
        body = _packed_body(doc)
        content_hash = "sha256:" + hashlib.sha256(body).hexdigest()
        if encoded is not None and not _is_canonical(encoded, body, stored):
            _check_map_keys(encoded)  # a canonical file repeats no key; another may
        if stored != content_hash:
            raise RecipeIntegrityError(
                "the recipe's content hash does not match its content: the file is corrupt or was edited. "
                "Download or copy it again"
            )
    elif encoded is not None:
        _check_map_keys(encoded)
    rng = doc["rng"]
    if not isinstance(rng, str) or rng not in RNG_MODES:
        raise RecipeFormatError(f"rng: expected one of {list(RNG_MODES)}, found {_short(rng)}")
    seed = doc["seed"]
    if seed is not None:
        _expect_int(seed, "seed", lo=-(2**63), hi=2**64 - 1)
    if rng == "portable":
        if tuple(doc["version"]) < _PORTABLE_SINCE:
            raise RecipeFormatError(
                f"rng: `portable` recipes are format {_PORTABLE_SINCE[0]}.{_PORTABLE_SINCE[1]} or newer, "
                f"but this file says {doc['version'][0]}.{doc['version'][1]}: the file is corrupt"
            )
        if seed is None or seed < 0:
            raise RecipeFormatError(
                f"seed: a `portable` recipe needs a seed in 0 … 2**64-1 (its streams' keys derive from it), "
                f"found {_short(seed)}"
            )
    generators = _expect_int(doc["generators"], "generators", hi=MAX_GENERATORS)
    ops = _expect(doc["ops"], list, "ops", "a list of operator names")
    if len(ops) > MAX_OPERATOR_NAMES:
        raise RecipeFormatError(f"ops: {len(ops)} operator names (at most {MAX_OPERATOR_NAMES})")
    seen_ops: dict[str, int] = {}
    for j, name in enumerate(ops):
        _expect_str(name, f"ops[{j}]", "an operator name")
        parts = name.split(".")
        if len(parts) != 3 or parts[0] != "aten" or parts[1] not in ALLOWED_OPERATORS or not parts[2]:
            raise RecipeFormatError(
                f"ops[{j}]: unknown operator `{name[:120]}`: it is not on initrecipe's allowlist; "
                "the recipe was written by a newer or a modified initrecipe, or is corrupt"
            )
        if name in seen_ops:
            raise RecipeFormatError(f"ops[{j}]: `{name}` is listed twice (also ops[{seen_ops[name]}])")
        seen_ops[name] = j
    program_raw = _expect(doc["program"], list, "program", "a list of instructions")
    if len(program_raw) > MAX_INSTRUCTIONS:
        raise RecipeFormatError(f"program: {len(program_raw)} instructions (at most {MAX_INSTRUCTIONS})")
    dec = _ArgDecoder(generators, portable=rng == "portable")
    program = [_decode_instruction(item, i, ops, dec) for i, item in enumerate(program_raw)]
    if rng == "portable" and tuple(doc["version"]) < _NEW_DRAWS_SINCE:
        new_draw = _first_new_draw(program)
        if new_draw is not None:
            raise RecipeFormatError(
                f"program[{new_draw[0]}]: `{new_draw[1]}` draws from a stream key, which format "
                f"{_NEW_DRAWS_SINCE[0]}.{_NEW_DRAWS_SINCE[1]} added, but this file says "
                f"{doc['version'][0]}.{doc['version'][1]}: the file is corrupt"
            )
    tensors = _decode_tensors(doc["tensors"], dec)
    producer = _expect(doc["producer"], dict, "producer", "a map")
    if len(producer) > 256:
        raise RecipeFormatError(f"producer: {len(producer)} entries (at most 256)")
    for k, v in producer.items():
        _expect_str(k, "producer", "string keys")
        _expect_str(v, f"producer.{k}")
    recipe = Recipe(
        rng=rng, seed=seed, generators=generators, program=program, tensors=tensors, producer=producer
    )
    recipe._body = {k: doc[k] for k in _TOP_LEVEL_KEYS}
    recipe._hash = content_hash
    return recipe


def _decode_tensors(raw: Any, dec: _ArgDecoder) -> list[TensorEntry]:
    tensors_raw = _expect(raw, list, "tensors", "a list of tensor entries")
    if len(tensors_raw) > MAX_TENSORS:
        raise RecipeFormatError(f"tensors: {len(tensors_raw)} entries (at most {MAX_TENSORS})")
    tensors: list[TensorEntry] = []
    by_name: dict[str, int] = {}
    by_value: dict[int, int] = {}
    for i, item in enumerate(tensors_raw):
        entry = _fast_entry(item, dec, by_name, by_value, tensors)
        if entry is not None:
            by_name[entry.name] = i
            by_value.setdefault(entry.value, i)
            tensors.append(entry)
            continue
        where = f"tensors[{i}]"
        _expect(item, list, where, "a tensor entry (a list)")
        if len(item) != 7:
            raise RecipeFormatError(f"{where}: a tensor entry has 7 fields, found {len(item)}")
        name = _expect_str(item[0], f"{where}.name")
        if not name:
            raise RecipeFormatError(f"{where}.name: empty tensor name")
        if name in by_name:
            raise RecipeFormatError(f"{where}.name: `{name}` is listed twice (also tensors[{by_name[name]}])")
        by_name[name] = i
        where = f"tensors[{i}] (`{name}`)"
        value = _expect_int(item[1], f"{where}.value")
        if value not in dec.defined:
            raise RecipeFormatError(f"{where}.value: value {value} is never defined by the program")
        kind = item[2]
        if not isinstance(kind, str) or kind not in _KINDS:
            raise RecipeFormatError(f"{where}.kind: expected `parameter` or `buffer`, found {_short(kind)}")
        dtype = _decode_dtype(item[4], f"{where}.dtype")
        shape = _decode_shape(item[3], f"{where}.shape", dtype)
        requires_grad = _expect(item[5], bool, f"{where}.requires_grad", "a bool")
        persistent = _expect(item[6], bool, f"{where}.persistent", "a bool")
        if kind == "buffer" and requires_grad:
            raise RecipeFormatError(f"{where}.requires_grad: a buffer never requires gradients")
        if kind == "parameter" and not persistent:
            raise RecipeFormatError(f"{where}.persistent: a parameter is always persistent")
        if kind == "parameter" and requires_grad and not (dtype.is_floating_point or dtype.is_complex):
            raise RecipeFormatError(
                f"{where}.requires_grad: a {dtype_name(dtype)} parameter cannot require gradients "
                "(only floating point and complex ones can)"
            )
        entry = TensorEntry(name, value, kind, shape, dtype, requires_grad, persistent)
        first = by_value.get(value)
        if first is not None:
            other = tensors[first]
            for field_name, mine, theirs in (
                ("kind", entry.kind, other.kind),
                ("shape", list(entry.shape), list(other.shape)),
                ("dtype", dtype_name(entry.dtype), dtype_name(other.dtype)),
            ) + ((("requires_grad", entry.requires_grad, other.requires_grad),) if kind == "parameter" else ()):
                if mine != theirs:
                    raise RecipeFormatError(
                        f"{where}.{field_name}: tied to `{other.name}` (both are value {value}), which has "
                        f"{field_name} {theirs}, but this entry has {mine}"
                    )
        else:
            by_value[value] = i
        tensors.append(entry)
    return tensors


def _fast_entry(item: Any, dec: _ArgDecoder, by_name: dict[str, int], by_value: dict[int, int],
                tensors: list[TensorEntry]) -> TensorEntry | None:
    """A tensor entry that is plainly valid, decoded without building location strings; None for
    anything else, which :func:`_decode_tensors` then checks field by field and reports."""
    if type(item) is not list or len(item) != 7:
        return None
    name, value, kind, shape, dtype_name_, requires_grad, persistent = item
    if (type(name) is not str or not name or len(name) > MAX_STRING_CHARS or name in by_name
            or type(value) is not int or value not in dec.defined or type(shape) is not list
            or len(shape) > MAX_DIMS or type(requires_grad) is not bool or type(persistent) is not bool
            or type(dtype_name_) is not str or dtype_name_ not in DTYPES):
        return None
    if kind == "parameter":
        dtype = DTYPES[dtype_name_]
        if not persistent or (requires_grad and not (dtype.is_floating_point or dtype.is_complex)):
            return None
    elif kind == "buffer":
        if requires_grad:
            return None
        dtype = DTYPES[dtype_name_]
    else:
        return None
    numel = 1
    for d in shape:
        if type(d) is not int or d < 0:
            return None
        numel *= d
    if numel * dtype.itemsize > _MAX_BYTES_PER_TENSOR:
        return None
    entry = TensorEntry(name, value, kind, tuple(shape), dtype, requires_grad, persistent)
    first = by_value.get(value)
    if first is not None:
        other = tensors[first]
        if (other.kind != kind or other.shape != entry.shape or other.dtype != dtype
                or (kind == "parameter" and other.requires_grad != requires_grad)):
            return None
    return entry


def encode_for_schema(recipe: Recipe) -> dict[str, Any]:
    """The recipe as the JSON-compatible document that ``schema/recipe.schema.json`` describes.

    Byte strings become ``{"bytes": "<hex>"}``; everything else is as stored.
    """

    def convert(value: Any) -> Any:
        if isinstance(value, (bytes, bytearray)):
            return {"bytes": bytes(value).hex()}
        if isinstance(value, list):
            return [convert(v) for v in value]
        if isinstance(value, dict):
            return {k: convert(v) for k, v in value.items()}
        if isinstance(value, float) and not math.isfinite(value):
            return {"float": repr(value)}
        return value

    body = dict(recipe._encoded_body())
    body["hash"] = recipe.content_hash
    return convert(body)
