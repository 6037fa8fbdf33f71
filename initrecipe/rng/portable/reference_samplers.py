"""The reference samplers: a draw's values from its stream words with eager torch operations, on any
device (``schema/PORTABLE_RNG.md`` §6), chunk by chunk to bound temporary memory."""

from __future__ import annotations

from typing import Callable

import torch

from initrecipe.rng.portable.binary32 import (
    NORMAL_CENTER,
    NORMAL_CENTRAL,
    NORMAL_SPLIT,
    NORMAL_TAIL,
    TAN_PI,
    TWO_M24,
    TWO_M32,
    erfinv_core,
    horner,
    log_parts,
    pexp,
    saturate,
    unit24,
)
from initrecipe.rng.portable.philox import philox_words
from initrecipe.rng.portable.sampler_params import M32, Draw, Segment

__all__ = ["REF_CHUNK", "reference_values", "standard_normal", "reference_fill", "reference_unary"]

REF_CHUNK = 1 << 20  # elements per reference-path step (bounds temporary memory)


def reference_values(draw: Draw, words: torch.Tensor) -> torch.Tensor:
    """The draw's values of int64 ``words`` (in [0, 2**32)): float32, or int64 for randint."""
    kind = draw.kind
    if kind == "randint":
        # (w * range) >> 32 with range = rh * 2**16 + rl: partial products stay below 2**49.
        rng = int(draw.b)
        a = torch.mul(words, rng & 0xFFFF)
        c = torch.mul(words, rng >> 16)
        k = torch.bitwise_right_shift(torch.add(c, torch.bitwise_right_shift(a, 16)), 16)
        return torch.add(k, int(draw.a))
    if kind == "uniform":
        return torch.add(torch.mul(unit24(words), draw.b), draw.a)
    if kind == "bernoulli":
        return torch.lt(unit24(words), draw.a).to(torch.float32)
    if kind == "exponential":
        v = torch.rsub(unit24(words), 1.0)
        return torch.mul(torch.rsub(log_parts(v, None), 0.0), draw.a)
    if kind != "normal":
        return reference_new_values(draw, words)
    return torch.add(torch.mul(standard_normal(words), draw.b), draw.a)


def standard_normal(words: torch.Tensor) -> torch.Tensor:
    """z of the normal sampler (schema §6.2), before scaling: float32."""
    m2 = torch.bitwise_left_shift(torch.bitwise_and(words, 0x7FFFFFFF), 1)
    one_minus = torch.mul(torch.add(m2, 1).to(torch.float32), TWO_M32)
    x = torch.mul(torch.rsub(m2, M32).to(torch.float32), TWO_M32)
    one_plus = torch.add(x, 1.0)
    t = erfinv_core(x, one_minus, one_plus, NORMAL_CENTRAL, NORMAL_CENTER, NORMAL_TAIL, NORMAL_SPLIT)
    negative = torch.bitwise_right_shift(words, 31).to(torch.bool)
    return torch.where(negative, torch.neg(t), t)


def cauchy_values(words: torch.Tensor) -> torch.Tensor:
    """The standard Cauchy value of each word (schema §6.6), float32."""
    q = torch.bitwise_right_shift(torch.bitwise_and(words, 0x7FFFFFFF), 8)
    s = torch.mul(torch.add(torch.bitwise_left_shift(q, 1), 1).to(torch.float32), 2.0**-25)
    near = torch.le(s, 0.25)
    r = torch.where(near, s, torch.rsub(s, 0.5))
    t = torch.mul(r, horner(TAN_PI, torch.mul(r, r)))
    c = torch.where(near, torch.div(torch.ones_like(t), t), t)
    negative = torch.bitwise_right_shift(words, 31).to(torch.bool)
    return torch.where(negative, torch.neg(c), c)


def reference_new_values(draw: Draw, words: torch.Tensor, params: tuple = ()) -> torch.Tensor:
    """The values of the format 1.2 samplers: float32.  ``params``: the tensor parameters' values
    for these words (float32, one per word)."""
    kind = draw.kind
    if kind == "cauchy":
        v = torch.add(torch.mul(cauchy_values(words), draw.b), draw.a)
    elif kind == "log_normal":
        v = pexp(torch.add(torch.mul(standard_normal(words), draw.b), draw.a))
    elif kind == "geometric":
        u = torch.mul(torch.add(torch.bitwise_left_shift(torch.bitwise_right_shift(words, 9), 1), 1).to(torch.float32),
                      TWO_M24)
        v = torch.ceil(torch.div(log_parts(u, None), torch.full_like(u, draw.a)))
    elif kind == "bernoulli_tensor":
        return torch.lt(unit24(words), params[0]).to(torch.float32)
    else:  # normal_tensor
        v = torch.add(torch.mul(standard_normal(words), params[1]), params[0])
    return saturate(v, draw.c)


def store(dst: torch.Tensor, values: torch.Tensor, draw: Draw) -> None:
    """Cast ``values`` (float32, or int64 for randint) into ``dst`` as the spec says."""
    if values.dtype == torch.int64 and dst.dtype.is_floating_point and dst.dtype != torch.float64:
        values = values.to(torch.float32)
    dst.copy_(values)


def reference_fill(out: torch.Tensor, draw: Draw, key: tuple[int, int], segments: list[Segment],
                    tensor_params: tuple[torch.Tensor, ...] = (),
                    words_of: Callable[..., torch.Tensor] = philox_words) -> None:
    """Fill ``out`` (flat, in memory order) with the draw's values of the words ``words_of`` gives
    for each segment."""
    flat = out.view(-1)
    offset = 0
    with torch.no_grad():
        for first, length in segments:
            done = 0
            while done < length:
                n = min(REF_CHUNK, length - done)
                words = words_of(key, first + done, n, out.device)
                lo = offset + done
                if tensor_params:
                    values = reference_new_values(draw, words, tuple(t[lo : lo + n] for t in tensor_params))
                else:
                    values = reference_values(draw, words)
                store(flat[lo : lo + n], values, draw)
                done += n
            offset += length




def reference_unary(x32: torch.Tensor, reference: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
    """``reference`` applied to a float32 tensor chunk by chunk (bounded temporary memory)."""
    flat = x32.reshape(-1)
    result = torch.empty_like(flat)
    for start in range(0, flat.numel(), REF_CHUNK):
        result[start : start + REF_CHUNK] = reference(flat[start : start + REF_CHUNK])
    return result.reshape(x32.shape)
