"""Philox4x32-10, the counter-based generator of initrecipe's ``portable`` random-number mode.

Three things live here, all normative (schema/PORTABLE_RNG.md):

* :func:`philox4x32_10`, the block function (Salmon et al., "Parallel random numbers: as easy as
  1, 2, 3", SC11), written in plain Python as the specification;
* :func:`derive_key`, which turns (seed, stream name, position) into a 64-bit Philox key;
* the counter mapping: word ``w`` of a key's stream is output word ``w % 4`` of block
  ``w // 4``, whose counter is ``(b & 0xffffffff, b >> 32, 0, 0)``.

:func:`philox_words` computes a range of stream words with eager torch integer operations on any
device (CPU, CUDA, ...) without relying on integer overflow: every 32x32-bit product is split so
that all intermediates stay below 2**63 in int64.  It is the reference that the CPU C kernel
(``initrecipe.rng.portable._portable_kernel``) must match bit for bit.
"""

from __future__ import annotations

import hashlib

import torch

__all__ = [
    "PHILOX_M0",
    "PHILOX_M1",
    "PHILOX_W0",
    "PHILOX_W1",
    "KEY_DOMAIN",
    "philox4x32_10",
    "derive_key",
    "stream_word",
    "philox_blocks",
    "philox_words",
]

PHILOX_M0 = 0xD2511F53
PHILOX_M1 = 0xCD9E8D57
PHILOX_W0 = 0x9E3779B9
PHILOX_W1 = 0xBB67AE85
ROUNDS = 10
KEY_DOMAIN = b"initrecipe.philox4x32-10.key\x00"

_M32 = 0xFFFFFFFF


def philox4x32_10(counter: tuple[int, int, int, int], key: tuple[int, int]) -> tuple[int, int, int, int]:
    """The Philox4x32-10 block function: four 32-bit output words of a 128-bit counter under a key.

    Round r (r = 0..9) uses the key (k0 + r*W0, k1 + r*W1) mod 2**32 and maps
    (c0, c1, c2, c3) to (hi(M1*c2) ^ c1 ^ k0, lo(M1*c2), hi(M0*c0) ^ c3 ^ k1, lo(M0*c0)).
    """
    if len(counter) != 4 or len(key) != 2:
        raise ValueError("philox4x32_10 takes a 4-word counter and a 2-word key")
    for word in (*counter, *key):
        if not isinstance(word, int) or not 0 <= word <= _M32:
            raise ValueError(f"counter and key words must be 32-bit unsigned integers, got {word!r}")
    c0, c1, c2, c3 = counter
    k0, k1 = key
    for _ in range(ROUNDS):
        p0 = PHILOX_M0 * c0
        p1 = PHILOX_M1 * c2
        c0, c1, c2, c3 = (p1 >> 32) ^ c1 ^ k0, p1 & _M32, (p0 >> 32) ^ c3 ^ k1, p0 & _M32
        k0 = (k0 + PHILOX_W0) & _M32
        k1 = (k1 + PHILOX_W1) & _M32
    return c0, c1, c2, c3


def derive_key(seed: int, stream: str, position: int) -> tuple[int, int]:
    """The Philox key of draw ``position`` of the named ``stream`` under ``seed``.

    ``sha256(KEY_DOMAIN || seed as u64 LE || len(name) as u32 LE || name (UTF-8) || position as
    u32 LE)``; the key is the digest's first two little-endian 32-bit words.
    """
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 1 << 64:
        raise ValueError(f"seed must be an integer in [0, 2**64), got {seed!r}")
    if isinstance(position, bool) or not isinstance(position, int) or not 0 <= position < 1 << 32:
        raise ValueError(f"position must be an integer in [0, 2**32), got {position!r}")
    if not isinstance(stream, str):
        raise ValueError(f"stream must be a str, got {type(stream).__name__}")
    name = stream.encode("utf-8")
    if len(name) >= 1 << 32:
        raise ValueError("stream name too long")
    digest = hashlib.sha256(
        KEY_DOMAIN + seed.to_bytes(8, "little") + len(name).to_bytes(4, "little") + name + position.to_bytes(4, "little")
    ).digest()
    return int.from_bytes(digest[0:4], "little"), int.from_bytes(digest[4:8], "little")


def stream_word(key: tuple[int, int], index: int) -> int:
    """Word ``index`` of ``key``'s stream (pure Python, the counter mapping's definition)."""
    if not 0 <= index < 1 << 64:
        raise ValueError(f"word index must be in [0, 2**64), got {index!r}")
    block = index >> 2
    return philox4x32_10((block & _M32, block >> 32, 0, 0), key)[index & 3]


def _check_key(key: tuple[int, int]) -> tuple[int, int]:
    if len(key) != 2 or not all(isinstance(k, int) and not isinstance(k, bool) and 0 <= k <= _M32 for k in key):
        raise ValueError(f"key must be a pair of 32-bit unsigned integers, got {key!r}")
    return int(key[0]), int(key[1])


def _mulhilo(x: torch.Tensor, m: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(hi, lo) 32-bit halves of m * x for int64 tensors x in [0, 2**32) and a 32-bit constant m.

    m = mh * 2**16 + ml, so m * x = (mh * x) * 2**16 + ml * x with both partial products below
    2**48; no intermediate reaches 2**63.
    """
    a = torch.mul(x, m & 0xFFFF)
    c = torch.mul(x, m >> 16)
    t = torch.add(a, torch.bitwise_left_shift(torch.bitwise_and(c, 0xFFFF), 16))
    lo = torch.bitwise_and(t, _M32)
    hi = torch.add(torch.bitwise_right_shift(c, 16), torch.bitwise_right_shift(t, 32))
    return hi, lo


def philox_blocks(first_block: int, count: int, key: tuple[int, int], device: torch.device | str) -> torch.Tensor:
    """The four output words of blocks ``first_block .. first_block+count-1`` as an int64
    tensor of shape (count, 4), values in [0, 2**32), computed with eager torch ops on ``device``."""
    k0, k1 = _check_key(key)
    if count < 0 or first_block < 0 or first_block + count > 1 << 62:
        raise ValueError("block range must lie in [0, 2**62)")
    b = torch.arange(first_block, first_block + count, dtype=torch.int64, device=device)
    c0 = torch.bitwise_and(b, _M32)
    c1 = torch.bitwise_right_shift(b, 32)
    # Round 1: c2 = c3 = 0, so M1*c2 = 0.
    hi0, lo0 = _mulhilo(c0, PHILOX_M0)
    c0, c1, c2, c3 = torch.bitwise_xor(c1, k0), torch.zeros_like(b), torch.bitwise_xor(hi0, k1), lo0
    for _ in range(ROUNDS - 1):
        k0 = (k0 + PHILOX_W0) & _M32
        k1 = (k1 + PHILOX_W1) & _M32
        hi0, lo0 = _mulhilo(c0, PHILOX_M0)
        hi1, lo1 = _mulhilo(c2, PHILOX_M1)
        c0 = torch.bitwise_xor(torch.bitwise_xor(hi1, c1), k0)
        c2 = torch.bitwise_xor(torch.bitwise_xor(hi0, c3), k1)
        c1, c3 = lo1, lo0
    return torch.stack((c0, c1, c2, c3), dim=1)


def philox_words(key: tuple[int, int], first: int, count: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """Words ``first .. first+count-1`` of ``key``'s stream: int64 tensor of shape (count,), values in
    [0, 2**32), computed with eager torch ops on ``device`` (reference implementation)."""
    if isinstance(first, bool) or not isinstance(first, int) or isinstance(count, bool) or not isinstance(count, int):
        raise ValueError("first and count must be integers")
    if first < 0 or count < 0 or first + count > 1 << 64:
        raise ValueError(f"word range [{first}, {first}+{count}) must lie in [0, 2**64)")
    if count == 0:
        return torch.empty(0, dtype=torch.int64, device=device)
    first_block = first >> 2
    last_block = (first + count - 1) >> 2
    blocks = philox_blocks(first_block, last_block - first_block + 1, key, device)
    start = first - 4 * first_block
    return blocks.reshape(-1)[start : start + count]
