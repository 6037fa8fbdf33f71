"""The :class:`Recipe` object and its msgpack file format (see ``schema/FORMAT.md``)."""

from __future__ import annotations

import hashlib
import math
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Iterable, Union

import msgpack
import torch

from . import __version__
from .errors import RecipeError, RecipeFormatError, RecipeIntegrityError, UnsupportedVersionError
from .program import (
    Call,
    GenRef,
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
FORMAT_VERSION: tuple[int, int] = (1, 0)
RNG_MODES = ("torch", "portable")

# The initrecipe release that introduced each format version: what to tell a user whose reader is older.
_FIRST_READER = {(1, 0): "0.1.0"}

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
    path = Path(path)
    directory = path.parent if str(path.parent) else Path(".")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    return path


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
        "version": list(FORMAT_VERSION),
        "rng": recipe.rng,
        "seed": recipe.seed,
        "generators": recipe.generators,
        "ops": op_names,
        "program": program,
        "tensors": tensors,
        "producer": dict(recipe.producer),
    }


# --------------------------------------------------------------------------- decoding
def _read_source(source: Source) -> bytes:
    if isinstance(source, (bytes, bytearray, memoryview)):
        return bytes(source)
    if isinstance(source, (str, os.PathLike)):
        try:
            with open(source, "rb") as handle:
                return handle.read()
        except FileNotFoundError:
            raise RecipeError(f"recipe file `{os.fspath(source)}` does not exist") from None
        except IsADirectoryError:
            raise RecipeError(f"`{os.fspath(source)}` is a directory, not a recipe file") from None
    if hasattr(source, "read"):
        data = source.read()
        if not isinstance(data, (bytes, bytearray)):
            raise RecipeError("the file object passed to `initrecipe.load` must be opened in binary mode ('rb')")
        return bytes(data)
    raise TypeError(
        f"initrecipe.load expects a path, bytes or a binary file object, not {type(source).__name__}"
    )


def _sniff(data: bytes) -> str | None:
    """Name the kind of a file that is not a recipe, for a helpful message."""
    if data[:2] == b"PK":
        return "a zip archive (a `torch.save` checkpoint?)"
    if data[:1] == b"\x80":
        return "a pickle file (a `torch.save` checkpoint?)"
    if len(data) >= 9 and data[8:9] == b"{":
        return "a safetensors file (weights, not a recipe)"
    if data[:4] == b"GGUF":
        return "a GGUF file"
    if data.lstrip()[:1] in (b"{", b"["):
        return "a JSON file (a `config.json`? record it with `initrecipe record --hf-config`)"
    return None


def load(source: Source, *, verify_hash: bool = True) -> Recipe:
    """Read a recipe from a path, bytes, or a binary file object.

    Loading never executes code from the file: it decodes msgpack data, checks its structure, and
    resolves operator names only through initrecipe's allowlist.

    Args:
        source: a path, the file's bytes, or a file object opened in ``"rb"`` mode.
        verify_hash: check the stored content hash (turn off only to inspect a damaged file).

    Returns:
        The :class:`Recipe`.

    Raises:
        RecipeFormatError: the data is not a valid recipe (with the location of the first problem).
        UnsupportedVersionError: the recipe needs a newer initrecipe.
        RecipeIntegrityError: the content hash does not match.

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
        doc = msgpack.unpackb(
            data,
            raw=False,
            strict_map_key=True,
            use_list=True,
        )
    except msgpack.ExtraData:
        raise RecipeFormatError("the recipe has trailing bytes after its end: the file is corrupt") from None
    except (ValueError, msgpack.UnpackException, TypeError) as exc:
        kind = _sniff(data)
        if kind is not None:
            raise RecipeFormatError(f"this is {kind}, not an init recipe") from None
        if isinstance(exc, ValueError) and "incomplete" in str(exc).lower() or "Unpack failed" in str(exc):
            raise RecipeFormatError(
                "the recipe is truncated or not msgpack: download or copy it again"
            ) from None
        raise RecipeFormatError(f"the recipe is not valid msgpack ({exc}); it is corrupt or not a recipe") from None
    if not isinstance(doc, dict):
        kind = _sniff(data)
        what = kind or f"a msgpack {type(doc).__name__}"
        raise RecipeFormatError(f"this is {what}, not an init recipe (expected a msgpack map)")
    return decode_document(doc, verify_hash=verify_hash)


class _Where:
    """Builds locations such as ``program[12].args[0]`` for error messages."""

    __slots__ = ("path",)

    def __init__(self, path: str) -> None:
        self.path = path

    def fail(self, message: str) -> RecipeFormatError:
        return RecipeFormatError(f"{self.path}: {message}")


def _expect(value: Any, types: type | tuple[type, ...], where: str, what: str) -> Any:
    if isinstance(value, bool) and bool not in (types if isinstance(types, tuple) else (types,)):
        raise RecipeFormatError(f"{where}: expected {what}, found bool")
    if not isinstance(value, types):
        raise RecipeFormatError(f"{where}: expected {what}, found {type(value).__name__}")
    return value


def _expect_int(value: Any, where: str, *, lo: int = 0, hi: int | None = None) -> int:
    _expect(value, int, where, "an integer")
    if value < lo or (hi is not None and value > hi):
        bound = f"[{lo}, {hi}]" if hi is not None else f">= {lo}"
        raise RecipeFormatError(f"{where}: integer {value} out of range {bound}")
    return value


def _decode_arg(value: Any, where: str, depth: int = 0) -> Any:
    if depth > 8:
        raise RecipeFormatError(f"{where}: arguments nested deeper than 8 levels")
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, list):
        return [_decode_arg(v, f"{where}[{i}]", depth + 1) for i, v in enumerate(value)]
    if isinstance(value, dict):
        if len(value) != 1:
            raise RecipeFormatError(f"{where}: a tagged value must have exactly one key, found {len(value)}")
        ((tag, payload),) = value.items()
        if tag == "t":
            return Ref(_expect_int(payload, f"{where}.t"))
        if tag == "g":
            return GenRef(_expect_int(payload, f"{where}.g"))
        if tag == "dtype":
            try:
                return dtype_from_name(payload)
            except (KeyError, TypeError):
                raise RecipeFormatError(f"{where}: unknown dtype `{payload}`") from None
        if tag == "device":
            if not isinstance(payload, str) or payload.split(":")[0] not in ("cpu", "cuda", "meta"):
                raise RecipeFormatError(f"{where}: unknown device `{payload}`")
            try:
                return torch.device(payload)
            except RuntimeError:
                raise RecipeFormatError(f"{where}: malformed device `{payload}`") from None
        if tag == "layout":
            if payload not in _LAYOUTS:
                raise RecipeFormatError(f"{where}: unknown layout `{payload}`")
            return _LAYOUTS[payload]
        if tag == "memory_format":
            if payload not in _MEMORY_FORMATS:
                raise RecipeFormatError(f"{where}: unknown memory format `{payload}`")
            return _MEMORY_FORMATS[payload]
        if tag == "complex":
            if (
                not isinstance(payload, list)
                or len(payload) != 2
                or not all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in payload)
            ):
                raise RecipeFormatError(f"{where}: a complex value is a list of two numbers")
            return complex(payload[0], payload[1])
        raise RecipeFormatError(f"{where}: unknown tag `{tag}`")
    raise RecipeFormatError(f"{where}: values of type {type(value).__name__} are not allowed in arguments")


def _decode_shape(value: Any, where: str) -> tuple[int, ...]:
    _expect(value, list, where, "a shape (list of integers)")
    if len(value) > 64:
        raise RecipeFormatError(f"{where}: {len(value)} dimensions (at most 64)")
    return tuple(_expect_int(d, f"{where}[{i}]") for i, d in enumerate(value))


def _decode_instruction(item: Any, i: int, ops: list[str]) -> Instruction:
    where = f"program[{i}]"
    _expect(item, list, where, "an instruction (a list)")
    if not item:
        raise RecipeFormatError(f"{where}: empty instruction")
    code = item[0]
    expected_len = {_OP_CALL: (5, 6), _OP_LITERAL: (5,), _OP_SEED: (3,), _OP_SET_STATE: (3,), _OP_RESTORE: (3,)}
    if not isinstance(code, int) or isinstance(code, bool) or code not in expected_len:
        raise RecipeFormatError(f"{where}[0]: unknown instruction code {code!r}")
    if len(item) not in expected_len[code]:
        raise RecipeFormatError(
            f"{where}: instruction code {code} takes {' or '.join(map(str, expected_len[code]))} fields, found {len(item)}"
        )
    if code == _OP_CALL:
        op_idx = _expect_int(item[1], f"{where}[1]", hi=len(ops) - 1)
        outs_raw = _expect(item[2], list, f"{where}.outs", "a list of output ids")
        outs = tuple(
            None if o is None else _expect_int(o, f"{where}.outs[{j}]") for j, o in enumerate(outs_raw)
        )
        args = _expect(item[3], list, f"{where}.args", "a list of arguments")
        kwargs = _expect(item[4], dict, f"{where}.kwargs", "a map of keyword arguments")
        dec_args = tuple(_decode_arg(a, f"{where}.args[{j}]") for j, a in enumerate(args))
        dec_kwargs = {}
        for k, v in kwargs.items():
            _expect(k, str, f"{where}.kwargs", "string keys")
            dec_kwargs[k] = _decode_arg(v, f"{where}.kwargs.{k}")
        out_meta = None
        if len(item) == 6:
            metas = _expect(item[5], list, f"{where}.out_meta", "a list of [dtype, shape] pairs")
            decoded = []
            for j, m in enumerate(metas):
                w = f"{where}.out_meta[{j}]"
                if not isinstance(m, list) or len(m) != 2:
                    raise RecipeFormatError(f"{w}: expected a [dtype, shape] pair")
                try:
                    d = dtype_from_name(m[0])
                except (KeyError, TypeError):
                    raise RecipeFormatError(f"{w}: unknown dtype `{m[0]}`") from None
                decoded.append((d, _decode_shape(m[1], w)))
            out_meta = tuple(decoded)
        return Call(ops[op_idx], outs, dec_args, dec_kwargs, out_meta)
    if code == _OP_LITERAL:
        out = _expect_int(item[1], f"{where}.out")
        try:
            dtype = dtype_from_name(item[2])
        except (KeyError, TypeError):
            raise RecipeFormatError(f"{where}.dtype: unknown dtype `{item[2]}`") from None
        shape = _decode_shape(item[3], f"{where}.shape")
        data = _expect(item[4], bytes, f"{where}.data", "bytes")
        if len(data) != math.prod(shape) * dtype.itemsize:
            raise RecipeFormatError(
                f"{where}.data: {len(data)} bytes, but shape {list(shape)} of {dtype_name(dtype)} needs "
                f"{math.prod(shape) * dtype.itemsize}"
            )
        return Literal(out, dtype, shape, data)
    gen = _expect_int(item[1], f"{where}.gen")
    if code == _OP_SEED:
        return RngSeed(gen, _expect_int(item[2], f"{where}.seed", hi=2**64 - 1))
    if code == _OP_SET_STATE:
        return RngSetState(gen, _expect(item[2], bytes, f"{where}.state", "bytes"))
    return RngRestore(gen, _expect_int(item[2], f"{where}.after", hi=i - 1))


def decode_document(doc: dict[str, Any], *, verify_hash: bool = True) -> Recipe:
    """Turn a decoded msgpack map into a :class:`Recipe`, checking structure, version and hash."""
    fmt = doc.get("format")
    if fmt != FORMAT_NAME:
        raise RecipeFormatError(
            f"format: expected `{FORMAT_NAME}`, found {fmt!r}; this msgpack file is not an init recipe"
        )
    version = doc.get("version")
    if (
        not isinstance(version, list)
        or len(version) != 2
        or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in version)
    ):
        raise RecipeFormatError(f"version: expected [major, minor], found {version!r}")
    major, minor = version
    if (major, minor) > FORMAT_VERSION:
        needed = _FIRST_READER.get((major, minor))
        need = f"initrecipe >= {needed}" if needed else "a newer initrecipe"
        raise UnsupportedVersionError(
            f"recipe format {major}.{minor} needs {need}; this is initrecipe {__version__}, which reads "
            f"format versions up to {FORMAT_VERSION[0]}.{FORMAT_VERSION[1]}. "
            "Upgrade with `pip install -U initrecipe`"
        )
    if major < FORMAT_VERSION[0]:
        raise UnsupportedVersionError(f"recipe format {major}.{minor} predates format 1.0 and cannot be read")
    unknown = sorted(set(doc) - set(_TOP_LEVEL_KEYS) - {"hash"})
    if unknown:
        raise RecipeFormatError(f"unknown top-level field `{unknown[0]}` for format {major}.{minor}")
    for key in _TOP_LEVEL_KEYS:
        if key not in doc:
            raise RecipeFormatError(f"missing required field `{key}`")
    rng = doc["rng"]
    if rng not in RNG_MODES:
        raise RecipeFormatError(f"rng: expected one of {list(RNG_MODES)}, found {rng!r}")
    seed = doc["seed"]
    if seed is not None:
        _expect_int(seed, "seed", lo=-(2**63), hi=2**64 - 1)
    generators = _expect_int(doc["generators"], "generators", hi=1 << 20)
    ops = _expect(doc["ops"], list, "ops", "a list of operator names")
    for j, name in enumerate(ops):
        _expect(name, str, f"ops[{j}]", "an operator name")
    program_raw = _expect(doc["program"], list, "program", "a list of instructions")
    program = [_decode_instruction(item, i, ops) for i, item in enumerate(program_raw)]
    tensors_raw = _expect(doc["tensors"], list, "tensors", "a list of tensor entries")
    tensors = []
    for i, item in enumerate(tensors_raw):
        where = f"tensors[{i}]"
        _expect(item, list, where, "a tensor entry (a list)")
        if len(item) != 7:
            raise RecipeFormatError(f"{where}: a tensor entry has 7 fields, found {len(item)}")
        name = _expect(item[0], str, f"{where}.name", "a string")
        value = _expect_int(item[1], f"{where}.value")
        kind = item[2]
        if kind not in _KINDS:
            raise RecipeFormatError(f"{where}.kind: expected `parameter` or `buffer`, found {kind!r}")
        shape = _decode_shape(item[3], f"{where}.shape")
        try:
            dtype = dtype_from_name(item[4])
        except (KeyError, TypeError):
            raise RecipeFormatError(f"{where}.dtype: unknown dtype `{item[4]}`") from None
        requires_grad = _expect(item[5], bool, f"{where}.requires_grad", "a bool")
        persistent = _expect(item[6], bool, f"{where}.persistent", "a bool")
        tensors.append(TensorEntry(name, value, kind, shape, dtype, requires_grad, persistent))
    producer = _expect(doc["producer"], dict, "producer", "a map")
    for k, v in producer.items():
        _expect(k, str, "producer", "string keys")
        _expect(v, str, f"producer.{k}", "a string")
    recipe = Recipe(
        rng=rng, seed=seed, generators=generators, program=program, tensors=tensors, producer=producer
    )
    body = {k: doc[k] for k in _TOP_LEVEL_KEYS}
    recipe._body = body
    stored = doc.get("hash")
    if verify_hash:
        if not isinstance(stored, str):
            raise RecipeFormatError("hash: missing or not a string; the recipe is incomplete or corrupt")
        if stored != recipe.content_hash:
            raise RecipeIntegrityError(
                "the recipe's content hash does not match its content: the file is corrupt or was edited. "
                "Download or copy it again"
            )
    return recipe


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


def iter_instruction_refs(ins: Instruction) -> Iterable[int]:
    """Value ids an instruction reads."""
    if isinstance(ins, Call):
        for a in ins.args:
            for r in _refs(a):
                yield r
        for a in ins.kwargs.values():
            for r in _refs(a):
                yield r


def _refs(value: Any):
    if isinstance(value, Ref):
        yield value.id
    elif isinstance(value, list):
        for v in value:
            yield from _refs(v)
    elif isinstance(value, tuple) and not isinstance(value, GenRef):
        for v in value:
            yield from _refs(v)

