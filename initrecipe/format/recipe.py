"""The :class:`Recipe` object: a recipe's program and tensor table, and its file bytes (see
``schema/FORMAT.md``; :mod:`initrecipe.format.decode` reads them back)."""

from __future__ import annotations

import hashlib
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Protocol, Sequence

import torch

from initrecipe._version import __version__
from initrecipe.errors import RecipeFormatError
from initrecipe.format.encode import encode_program, pack
from initrecipe.format.spec import FORMAT_NAME, RNG_MODES, format_version_for
from initrecipe.program.ir import Instruction, dtype_name
from initrecipe.support.output_files import write_bytes_atomically

__all__ = ["Recipe", "TensorEntry", "UninitializedTensor", "set_uninitialized_finder", "encode_for_schema"]


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


class UninitializedTensor(Protocol):
    """One entry of :attr:`Recipe.uninitialized` (:class:`initrecipe.analysis.uninitialized.Uninitialized`
    is the one the analysis layer returns)."""

    @property
    def name(self) -> str: ...

    @property
    def shape(self) -> tuple[int, ...]: ...

    @property
    def dtype(self) -> torch.dtype: ...

    @property
    def numel(self) -> int: ...

    @property
    def elements(self) -> int | None: ...


UninitializedFinder = Callable[["Recipe"], Sequence[UninitializedTensor]]
"""Finds the tensors a recipe's replay leaves uninitialized (it needs the analysis layer, above this one)."""

_find_uninitialized: UninitializedFinder | None = None


def set_uninitialized_finder(finder: UninitializedFinder) -> None:
    """Register what :attr:`Recipe.uninitialized` calls: the layer that can analyse a program
    (:mod:`initrecipe.inspect.show`) does so when it is imported, which ``import initrecipe`` does."""
    global _find_uninitialized
    _find_uninitialized = finder


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
        self._uninitialized: list[UninitializedTensor] | None = None

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
    def uninitialized(self) -> list[UninitializedTensor]:
        """The tensors replay leaves fully or partly uninitialized (whatever memory holds, as in
        eager), in recipe order: name, shape, dtype and how many elements
        (:class:`initrecipe.analysis.uninitialized.Uninitialized`).  Computed from the program on the meta
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
            if _find_uninitialized is None:  # pragma: no cover - importing initrecipe sets it
                raise RuntimeError("no uninitialized-tensor finder is registered: import initrecipe first")
            self._uninitialized = list(_find_uninitialized(self))
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
            self._hash = "sha256:" + hashlib.sha256(pack(self._encoded_body())).hexdigest()
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
        return pack(body)

    def save(self, path: str | os.PathLike) -> Path:
        """Write the recipe to ``path`` atomically (a temporary file in the same folder, then a rename).

        Returns the path written.
        """
        return write_bytes_atomically(Path(path), self.to_bytes())

    def _encoded_body(self) -> dict[str, Any]:
        """The nine top-level fields the content hash covers, as stored (computed once)."""
        if self._body is None:
            ops, program = encode_program(self.program)
            tensors = [
                [t.name, t.value, t.kind, list(t.shape), dtype_name(t.dtype), t.requires_grad, t.persistent]
                for t in self.tensors
            ]
            self._body = {
                "format": FORMAT_NAME,
                "version": list(format_version_for(self.rng, self.program)),
                "rng": self.rng,
                "seed": self.seed,
                "generators": self.generators,
                "ops": ops,
                "program": program,
                "tensors": tensors,
                "producer": dict(self.producer),
            }
        return self._body


def with_stored_encoding(recipe: Recipe, body: dict[str, Any], content_hash: str | None) -> Recipe:
    """``recipe``, remembering the top-level fields it was decoded from and their verified content
    hash (``None``: not verified), so that encoding it again returns them as they were."""
    recipe._body = body
    recipe._hash = content_hash
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
