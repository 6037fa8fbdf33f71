"""What the operators of an ``rng="portable"`` recipe mean: random draws keyed by tensor name.

In a portable recipe a random call names no generator; its generator argument holds a
:class:`~initrecipe.program.ir.PortableKey` instead, and the call fills its tensor from the
counter-based generator of :mod:`initrecipe.rng.portable.samplers` (``schema/PORTABLE_RNG.md``).  Element ``i``
of the drawn tensor, in row-major order of its logical shape, is a function of the recipe's seed,
the key, ``i`` and the call's parameters only, so any part of a tensor can be drawn alone, on any
device, in any order.

Two deterministic operators also change meaning in portable recipes, because torch's kernels
for them differ between devices, thread counts or versions: ``erfinv`` (in ``trunc_normal_``) is
:func:`initrecipe.rng.portable.samplers.erfinv`, and ``linalg_qr`` (in ``orthogonal_``) is the fixed-order
Householder QR of :func:`initrecipe.rng.portable.fixed_qr.qr`.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import torch

from initrecipe.support import hugepages
from initrecipe.errors import RecipeFormatError
from initrecipe.program.operators import DRAW_OPERATORS, SUBSTITUTED_OPERATORS, OpInfo, Substitute
from initrecipe.program.ir import Call, PortableKey
from initrecipe.rng.portable.fixed_qr import geqrf, householder_product, qr
from initrecipe.rng.portable.philox import derive_key
from initrecipe.rng.portable.samplers import TENSOR_SAMPLERS, check_params, erfinv, multinomial, sample_

__all__ = [
    "PortableDraw",
    "portable_key_of",
    "draws_from_generator",
    "describe_draw",
    "check_draw",
    "run_draw",
    "stream_key",
    "run_substitute",
    "SUBSTITUTES",
    "check_substitute",
]


@dataclass(frozen=True, slots=True)
class PortableDraw:
    """A portable random call, decoded: the sampler ``kind`` and its ``params``."""

    kind: str
    params: tuple[Any, ...]
    in_place: bool


def _get(args: Sequence[Any], kwargs: dict[str, Any], info: OpInfo, name: str) -> Any:
    """An argument by schema name: positional, keyword, or the schema's default."""
    pos = info.arg_names.index(name)
    if pos < len(args):
        return args[pos]
    if name in kwargs:
        return kwargs[name]
    return info.schema.arguments[pos].default_value


_INTEGER_DTYPES = (torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8)
_FLOAT_DTYPES = (torch.float64, torch.float32, torch.float16, torch.bfloat16)


def portable_key_of(ins: Call, info: OpInfo | None) -> PortableKey | None:
    """The stream key of a portable random call, or None (not random, or drawing from a generator)."""
    if info is None or not info.is_random:
        return None
    value = ins.kwargs.get(info.generator_arg)
    if value is None:
        pos = info.arg_names.index(info.generator_arg)
        value = ins.args[pos] if pos < len(ins.args) else None
    return value if isinstance(value, PortableKey) else None


def draws_from_generator(ins: Call, info: OpInfo | None) -> bool:
    """Whether a call draws from a torch generator (as opposed to a portable stream, or no draw)."""
    return info is not None and info.is_random and portable_key_of(ins, info) is None


def describe_draw(ins: Call, info: OpInfo, args: Sequence[Any], kwargs: dict[str, Any]) -> PortableDraw:
    """Decode a portable call's sampler and parameters; :class:`RecipeFormatError` if unsupported."""
    sampler = DRAW_OPERATORS.get(ins.op)
    if sampler is None:
        raise RecipeFormatError(
            f"`{ins.op}` has no portable sampler; portable recipes draw only with "
            + ", ".join(f"`{name}`" for name in sorted(DRAW_OPERATORS))
        )
    params = tuple(_get(args, kwargs, info, p) if isinstance(p, str) else p for p in sampler.params)
    return PortableDraw(sampler.kind, params, info.overwrites_self)


def _problem(draw: PortableDraw, dtype: torch.dtype) -> str | None:
    """Why a portable draw's parameters or dtype are invalid, or None (the samplers' own rules)."""
    kind, params = draw.kind, draw.params
    if kind == "multinomial":
        probs, n, _ = params
        if isinstance(probs, torch.Tensor) and not probs.dtype.is_floating_point:
            return f"multinomial needs floating-point probabilities, found {probs.dtype}"
        if type(n) is not int or n < 1:
            return f"multinomial needs num_samples >= 1, found {n!r}"
        if dtype != torch.int64:
            return f"multinomial fills int64 tensors, not {dtype}"
        return None
    if kind == "permutation":
        if type(params[0]) is not int or not 0 <= params[0] <= 2**32:
            return f"randperm needs 0 <= n <= 2**32, found {params[0]!r}"
        if dtype not in _INTEGER_DTYPES + _FLOAT_DTYPES:
            return f"randperm cannot fill a {dtype} tensor"
        return None
    try:
        check_params(kind, params, dtype)
    except ValueError as exc:
        return str(exc)
    return None


def check_draw(where: str, ins: Call, info: OpInfo, args: Sequence[Any], kwargs: dict[str, Any],
               out_dtype: torch.dtype) -> PortableDraw:
    """Validate a portable call against the sampler's rules (``out_dtype``: the tensor it fills)."""
    draw = describe_draw(ins, info, args, kwargs)
    problem = _problem(draw, out_dtype)
    if problem is not None:
        raise RecipeFormatError(f"{where}: `{ins.op}` rejects its arguments: {problem}")
    return draw


@functools.lru_cache(maxsize=65536)
def stream_key(seed: int, stream: str, position: int) -> tuple[int, int]:
    """The Philox key of one portable stream (``schema/PORTABLE_RNG.md``, key derivation)."""
    return derive_key(seed, stream, position)


def run_draw(
    ins: Call,
    info: OpInfo,
    args: list[Any],
    kwargs: dict[str, Any],
    seed: int,
    out_meta: tuple[tuple[int, ...], tuple[int, ...], torch.dtype],
    device: torch.device,
) -> torch.Tensor:
    """Execute a portable random call on resolved arguments; returns its result tensor.

    ``out_meta`` is the (shape, stride, dtype) of the tensor the call creates, as shape
    propagation computed it (``randn_like`` of a transposed tensor keeps its layout); factories
    create it on ``device``.
    """
    key = portable_key_of(ins, info)
    assert key is not None
    draw = describe_draw(ins, info, args, kwargs)
    keys = stream_key(seed, key.stream, key.position)
    if draw.kind == "multinomial":
        probs, n, replacement = draw.params
        return multinomial(probs, n, bool(replacement), keys).to(device)
    if draw.in_place:
        target: torch.Tensor = args[0]
        params = _broadcast(draw, target.shape)
        if target.is_contiguous():
            sample_(target, draw.kind, keys, params)
        else:
            target.copy_(sample_(torch.empty(target.shape, dtype=target.dtype, device=target.device),
                                 draw.kind, keys, params))
        return target
    shape, stride, dtype = out_meta
    params = _broadcast(draw, shape)
    if draw.kind == "permutation":
        # The stable order of one 32-bit word per index: ties (rare) keep index order.
        words = sample_(torch.empty(draw.params[0], dtype=torch.int64, device=device), "randint", keys, (0, 2**32))
        return torch.sort(words, stable=True).indices.to(dtype)
    out = hugepages.empty_strided(shape, stride, dtype, device)
    if out.is_contiguous():
        return sample_(out, draw.kind, keys, params)
    return out.copy_(sample_(torch.empty(shape, dtype=dtype, device=device), draw.kind, keys, params))


def _broadcast(draw: PortableDraw, shape: Sequence[int]) -> tuple[Any, ...]:
    """A draw's parameters with its tensor parameters broadcast to the drawn tensor's ``shape`` (element
    ``i`` of the draw uses element ``i``, in row-major order, of each broadcast parameter)."""
    if draw.kind not in TENSOR_SAMPLERS:
        return draw.params
    return tuple(torch.broadcast_to(p, tuple(shape)) if isinstance(p, torch.Tensor) else p for p in draw.params)


# Deterministic operators with portable meanings ------------------------------------------------
def _erfinv(args: list[Any], kwargs: dict[str, Any]) -> torch.Tensor:
    return erfinv(args[0])


def _erfinv_(args: list[Any], kwargs: dict[str, Any]) -> torch.Tensor:
    target: torch.Tensor = args[0]
    return target.copy_(erfinv(target))


def _linalg_qr(args: list[Any], kwargs: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
    mode = args[1] if len(args) > 1 else kwargs.get("mode", "reduced")
    return qr(args[0], mode=mode)


def _geqrf(args: list[Any], kwargs: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
    return geqrf(args[0] if args else kwargs["self"])


def _householder_product(args: list[Any], kwargs: dict[str, Any]) -> torch.Tensor:
    names = ("input", "tau")
    values = [args[i] if i < len(args) else kwargs.get(n, kwargs.get("self")) for i, n in enumerate(names)]
    return householder_product(values[0], values[1])


SUBSTITUTES: dict[Substitute, Callable[[list[Any], dict[str, Any]], Any]] = {
    Substitute.ERFINV: _erfinv,
    Substitute.ERFINV_INPLACE: _erfinv_,
    Substitute.QR: _linalg_qr,
    Substitute.GEQRF: _geqrf,
    Substitute.HOUSEHOLDER_PRODUCT: _householder_product,
}
"""The implementation of each substitute rule
(:data:`~initrecipe.program.operators.SUBSTITUTED_OPERATORS` names each operator's)."""


def check_substitute(ins: Call, args: list[Any], kwargs: dict[str, Any]) -> str | None:
    """Why a substituted operator cannot run on these (meta) arguments, or None."""
    if ins.op in ("aten.geqrf.default", "aten.linalg_householder_product.default", "aten.orgqr.default"):
        tensors = [a for a in [*args, *kwargs.values()] if isinstance(a, torch.Tensor)]
        if not tensors or tensors[0].dim() < 2 or tensors[0].dtype not in (torch.float32, torch.float64):
            return "the portable QR factors float32 or float64 matrices"
        if ins.op != "aten.geqrf.default":
            a, tau = tensors[0], tensors[1] if len(tensors) > 1 else None
            *batch, m, n = a.shape
            if tau is None or tau.dtype != a.dtype or tuple(tau.shape[:-1]) != tuple(batch) or not tau.shape[-1] <= n <= m:
                return "tau must have shape (..., k) with k <= n <= m and the matrices' dtype"
        return None
    if ins.op != "aten.linalg_qr.default":
        return None
    a = args[0] if args else kwargs.get("A")
    mode = args[1] if len(args) > 1 else kwargs.get("mode", "reduced")
    if not isinstance(a, torch.Tensor) or a.dim() != 2 or a.dtype not in (torch.float32, torch.float64):
        return "the portable QR takes one 2-D float32 or float64 matrix"
    if mode not in ("reduced", "complete", "r"):
        return f"unknown QR mode {mode!r}"
    return None


def run_substitute(ins: Call, args: list[Any], kwargs: dict[str, Any]) -> Any:
    """Execute a substituted operator (see :data:`~initrecipe.program.operators.SUBSTITUTED_OPERATORS`)."""
    return SUBSTITUTES[SUBSTITUTED_OPERATORS[ins.op]](args, kwargs)
