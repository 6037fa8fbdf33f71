"""Philox4x32-10, key derivation and the counter mapping (schema/PORTABLE_RNG.md §2-§4)."""

from __future__ import annotations

import hashlib

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from initrecipe.rng.portable import samplers
from initrecipe.rng.portable.philox import KEY_DOMAIN, derive_key, philox4x32_10, philox_blocks, philox_words, stream_word

# Random123 kat_vectors, "philox4x32 10" lines: counter, key -> output.
KAT = [
    ((0x00000000, 0x00000000, 0x00000000, 0x00000000), (0x00000000, 0x00000000),
     (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
    ((0xFFFFFFFF, 0xFFFFFFFF, 0xFFFFFFFF, 0xFFFFFFFF), (0xFFFFFFFF, 0xFFFFFFFF),
     (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)),
    ((0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344), (0xA4093822, 0x299F31D0),
     (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1)),
]

# schema/PORTABLE_RNG.md §11.
KEYS = [
    (0, "", 0, (0xAE6C167B, 0x1D09F1B2)),
    (42, "model.layers.0.weight", 0, (0xCA695683, 0xFF055CB7)),
    (2**64 - 1, "emb", 2**32 - 1, (0x26CC23FF, 0xE43AA1A9)),
    (1234, "\u00fc/weight", 7, (0x9D421423, 0x070AC019)),
]


def kernel_words(key: tuple[int, int], first: int, n: int) -> torch.Tensor:
    """Words from the C kernel (as int64), or from the reference where it was not built."""
    if samplers._kernel is None:
        return philox_words(key, first, n)
    out = torch.empty(n, dtype=torch.int32)
    samplers._kernel.words(out.data_ptr(), n, key[0], key[1], first)
    return out.to(torch.int64) & 0xFFFFFFFF


@pytest.mark.parametrize("counter,key,expected", KAT)
def test_known_answers(counter, key, expected):
    assert philox4x32_10(counter, key) == expected


@pytest.mark.parametrize("counter,key,expected", KAT)
def test_vectorised_blocks_match_known_answers(counter, key, expected):
    # philox_blocks only takes counters of the form (b mod 2**32, b >> 32, 0, 0).
    if counter[2] == counter[3] == 0:
        b = counter[0] | counter[1] << 32
        assert tuple(philox_blocks(b, 1, key, "cpu")[0].tolist()) == expected


def test_block_function_rejects_bad_words():
    with pytest.raises(ValueError):
        philox4x32_10((0, 0, 0, 1 << 32), (0, 0))
    with pytest.raises(ValueError):
        philox4x32_10((0, 0, 0), (0, 0))
    with pytest.raises(ValueError):
        philox4x32_10((0, 0, 0, 0), (-1, 0))


@pytest.mark.parametrize("seed,stream,position,expected", KEYS)
def test_derive_key_vectors(seed, stream, position, expected):
    assert derive_key(seed, stream, position) == expected


def test_derive_key_is_the_documented_hash():
    name = "blocks.3.attn.qkv.weight".encode()
    digest = hashlib.sha256(
        b"initrecipe.philox4x32-10.key\x00" + (7).to_bytes(8, "little") + len(name).to_bytes(4, "little")
        + name + (5).to_bytes(4, "little")
    ).digest()
    assert KEY_DOMAIN == b"initrecipe.philox4x32-10.key\x00"
    assert derive_key(7, "blocks.3.attn.qkv.weight", 5) == (
        int.from_bytes(digest[:4], "little"),
        int.from_bytes(digest[4:8], "little"),
    )


@pytest.mark.parametrize(
    "seed,stream,position",
    [(-1, "a", 0), (2**64, "a", 0), (0, "a", -1), (0, "a", 2**32), (True, "a", 0), (0, "a", False),
     (1.0, "a", 0), (0, b"a", 0)],
)
def test_derive_key_rejects_out_of_range(seed, stream, position):
    with pytest.raises(ValueError):
        derive_key(seed, stream, position)


def test_counter_mapping_small():
    key = (0, 0)
    assert stream_word(key, 0) == 0x6627E8D5
    assert stream_word(key, 5) == 0x5CB200DB
    assert stream_word(key, 5) == philox4x32_10((1, 0, 0, 0), key)[1]
    big = (1 << 40) + 9
    assert stream_word(key, big) == philox4x32_10(((big >> 2) & 0xFFFFFFFF, big >> 34, 0, 0), key)[1]


@pytest.mark.parametrize(
    "first,count",
    [(0, 1), (0, 257), (3, 130), (4 * (2**32 - 3) + 1, 40), (2**64 - 70, 70), (12345, 0)],
)
def test_reference_words_match_the_spec(first, count):
    key = derive_key(1, "w", 2)
    ref = philox_words(key, first, count)
    assert ref.dtype == torch.int64 and ref.shape == (count,)
    assert ref.tolist() == [stream_word(key, first + j) for j in range(count)]
    assert torch.equal(kernel_words(key, first, count), ref)


@settings(max_examples=40, deadline=None)
@given(
    k0=st.integers(0, 2**32 - 1),
    k1=st.integers(0, 2**32 - 1),
    first=st.one_of(st.integers(0, 5000), st.integers(0, 2**64 - 400)),
    count=st.integers(0, 300),
)
def test_kernel_words_match_reference(k0, k1, first, count):
    ref = philox_words((k0, k1), first, count)
    assert torch.equal(kernel_words((k0, k1), first, count), ref)
    if count:
        j = count // 2
        assert ref[j].item() == stream_word((k0, k1), first + j)


def test_every_kernel_variant_gives_the_same_words():
    if samplers._kernel is None:
        return
    K = samplers._kernel
    key = derive_key(3, "v", 0)
    # Odd offsets and lengths, whole groups, and a range that crosses the 2**32 block-counter carry.
    ranges = [(61, 5000), (0, 64 * 17), (3, 1), (4 * (2**32 - 5) + 3, 301), (2**64 - 131, 131)]
    refs = [philox_words(key, first, count) for first, count in ranges]
    for (first, count), ref in zip(ranges, refs):  # the pure-Python spec, at both ends and inside
        for j in sorted({0, count // 2, count - 1}):
            assert ref[j].item() == stream_word(key, first + j)
    previous = K.variant()
    try:
        for name in K.variants():
            K.set_variant(name)
            for (first, count), ref in zip(ranges, refs):
                assert torch.equal(kernel_words(key, first, count), ref), (name, first, count)
    finally:
        K.set_variant(previous)


def test_philox_words_rejects_bad_ranges():
    with pytest.raises(ValueError):
        philox_words((0, 0), -1, 3)
    with pytest.raises(ValueError):
        philox_words((0, 0), 2**64 - 2, 3)
    with pytest.raises(ValueError):
        philox_words((0, 1 << 32), 0, 3)
