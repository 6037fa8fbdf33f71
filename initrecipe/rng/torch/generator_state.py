"""torch's CPU generator state as data: decode it, encode it, and move it ahead by arithmetic.

torch's CPU generator is mt19937 plus two one-value caches of the scalar Box–Muller normal sampler
(``torch.Generator.get_state()`` is the 5056-byte ``CPUGeneratorImplState``; layout in
``schema/TORCH_RNG.md``).  :func:`advance` computes the state ``n`` 32-bit outputs later without
producing them, by a jump-ahead in the C extension ``initrecipe.rng.torch._mt19937`` (about a millisecond for
any ``n``); :func:`available` says whether that extension is present.  Without it, callers draw, as
eager does.

Example:
    >>> import torch
    >>> from initrecipe.rng.torch.generator_state import GeneratorState, advance
    >>> g = torch.Generator().manual_seed(0)
    >>> start = GeneratorState.of(g)
    >>> _ = torch.empty(1000, dtype=torch.int32).random_(generator=g)  # 1000 outputs
    >>> advance(start, 1000) == GeneratorState.of(g)
    True
"""

from __future__ import annotations

import struct
import threading
from dataclasses import dataclass, replace

import torch

from initrecipe.errors import ReplayError
from initrecipe.program.ir import tensor_bytes

__all__ = ["GeneratorState", "STATE_BYTES", "advance", "available", "state_tensor", "set_generator_state"]

try:
    from initrecipe.rng.torch import _mt19937 as _kernel
except ImportError:  # pragma: no cover - the extension is optional (no C compiler at install time)
    _kernel = None

STATE_BYTES = 5056
_N = 624
_HEAD = struct.Struct("<QiiQ")  # the_initial_seed, left, seeded, next
_WORDS = struct.Struct("<624Q")  # state[624], each uint32 word stored in a uint64
_DOUBLE_CACHE = struct.Struct("<dddi")  # normal_x, normal_y (the cached sample), normal_rho, normal_is_valid
_FLOAT_CACHE = struct.Struct("<f?")  # next_float_normal_sample, is_next_float_normal_sample_valid
_WORDS_AT, _DOUBLE_AT, _FLOAT_AT = 24, 5016, 5048
_STEPPED_TWISTS = 4  # fewer regenerations than this are run one by one (about a microsecond each)


def available() -> bool:
    """Whether states can be moved ahead by arithmetic (the C extension is built)."""
    return _kernel is not None


@dataclass(frozen=True, slots=True)
class GeneratorState:
    """One state of torch's CPU generator.

    ``words`` is the mt19937 window (624 little-endian uint32), of which ``used`` words have been
    output (1 … 624; a freshly seeded state has used 624 of its seeding words, and ``fresh`` keeps
    the way torch writes that state).  ``double_normal``/``float_normal`` are the cached second
    Box–Muller samples, or None.
    """

    seed: int
    seeded: int
    words: bytes
    used: int
    fresh: bool
    double_normal: float | None
    float_normal: float | None

    @classmethod
    def decode(cls, state: bytes | torch.Tensor) -> GeneratorState | None:
        """The state ``torch.Generator.get_state()`` returned; None when it is not one torch
        itself produces (crafted fields), which :func:`advance` cannot model."""
        raw = tensor_bytes(state) if isinstance(state, torch.Tensor) else bytes(state)
        if len(raw) != STATE_BYTES:
            return None
        seed, left, seeded, next_ = _HEAD.unpack_from(raw, 0)
        words = _WORDS.unpack_from(raw, _WORDS_AT)
        if any(w >> 32 for w in words):
            return None
        fresh = left == 1 and next_ == 0
        if not fresh and not (1 <= next_ <= _N and left == _N + 1 - next_):
            return None
        x, y, rho, valid = _DOUBLE_CACHE.unpack_from(raw, _DOUBLE_AT)
        value, float_valid = _FLOAT_CACHE.unpack_from(raw, _FLOAT_AT)
        if x != 0.0 or rho != 0.0 or valid not in (0, 1):
            return None
        state_ = cls(seed, seeded, struct.pack("<624I", *words), _N if fresh else next_, fresh,
                     y if valid else None, value if float_valid else None)
        return state_ if state_.encode() == raw else None

    @classmethod
    def of(cls, generator: torch.Generator) -> GeneratorState:
        """The current state of ``generator`` (a CPU generator)."""
        decoded = cls.decode(generator.get_state())
        if decoded is None:  # pragma: no cover - torch only produces states it can describe
            raise ValueError("torch.Generator.get_state() returned a state initrecipe cannot read")
        return decoded

    def encode(self) -> bytes:
        """The bytes ``torch.Generator.get_state()`` would return for this state."""
        out = bytearray(STATE_BYTES)
        left, next_ = (1, 0) if self.fresh else (_N + 1 - self.used, self.used)
        _HEAD.pack_into(out, 0, self.seed, left, self.seeded, next_)
        _WORDS.pack_into(out, _WORDS_AT, *struct.unpack("<624I", self.words))
        double = self.double_normal
        _DOUBLE_CACHE.pack_into(out, _DOUBLE_AT, 0.0, 0.0 if double is None else double, 0.0, int(double is not None))
        single = self.float_normal
        _FLOAT_CACHE.pack_into(out, _FLOAT_AT, 0.0 if single is None else single, single is not None)
        return bytes(out)

    def tensor(self) -> torch.Tensor:
        """The state as the uint8 tensor ``torch.Generator.set_state`` takes."""
        return torch.frombuffer(bytearray(self.encode()), dtype=torch.uint8)

    def generator(self) -> torch.Generator:
        """A new CPU generator in this state."""
        generator = torch.Generator(device="cpu")
        generator.set_state(self.tensor())
        return generator

    def with_double_normal(self, value: float | None) -> GeneratorState:
        return replace(self, double_normal=value)


_polynomials: dict[int, bytes] = {}
_polynomials_lock = threading.Lock()
_POLYNOMIAL_CACHE = 256


def _jump_polynomial(words: int) -> bytes:
    with _polynomials_lock:
        cached = _polynomials.get(words)
    if cached is not None:
        return cached
    polynomial = _kernel.jump_polynomial(words)  # releases the GIL
    with _polynomials_lock:
        if len(_polynomials) >= _POLYNOMIAL_CACHE:
            _polynomials.pop(next(iter(_polynomials)))
        _polynomials[words] = polynomial
    return polynomial


def advance(state: GeneratorState, outputs: int) -> GeneratorState:
    """The state after ``outputs`` more 32-bit outputs of mt19937 (the Box–Muller caches unchanged).

    Raises RuntimeError when the C extension is not built (check :func:`available`).
    """
    if outputs < 0:
        raise ValueError(f"cannot move a generator back ({outputs} outputs)")
    if outputs == 0:
        return state
    if _kernel is None:
        raise RuntimeError("initrecipe.rng.torch._mt19937 is not built; generators can only be advanced by drawing")
    total = state.used + outputs
    twists = (total - 1) // _N
    used = total - _N * twists
    words = state.words
    if twists:
        polynomial = None if twists < _STEPPED_TWISTS else _jump_polynomial(_N * twists - 1)
        words = _kernel.advance_window(words, twists, polynomial)
    return replace(state, words=words, used=used, fresh=False)


def state_tensor(state: bytes) -> torch.Tensor:
    """A generator state as the uint8 tensor ``torch.Generator.set_state`` takes."""
    return torch.frombuffer(bytearray(state), dtype=torch.uint8)


def set_generator_state(gen: torch.Generator, state: bytes | torch.Tensor, where: str) -> None:
    """``gen.set_state(state)``; :class:`~initrecipe.errors.ReplayError` naming ``where`` when torch refuses the state."""
    try:
        gen.set_state(state if isinstance(state, torch.Tensor) else state_tensor(state))
    except RuntimeError as exc:
        raise ReplayError(f"{where}: invalid generator state ({str(exc).splitlines()[0]})") from None
