"""Philox words from torch's own kernel (``initrecipe.rng.portable.torch_philox``) in the samplers' torch-op path.

Which path a torch takes is asserted, never assumed: torch >= 2.15 reads the words with
``torch.func._random.bits_``, torch 2.14 with ``split``, and torch 2.13 (no CPU kernel) falls back
to eager integer ops with the reason.  Under every torch the torch-op path (``sample_`` with the C
kernel switched off, as on a GPU) must give the C kernel's bits and the specification's test
vectors, for every sampler, odd lengths, unaligned offsets and slices; the self-check's fallbacks
(a wrong word, an exception then or later, no API) are exercised with stand-in methods.
"""

from __future__ import annotations

import logging

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from test_golden import PORTABLE, PORTABLE_EXPECTED, _portable_hashes
from test_portable import mixed_recipe, mixed_weights
from test_samplers import INDICES, KEY, PARAMS, VECTORS, bitwise_equal, tensor_params

import initrecipe
from initrecipe import Shard
from initrecipe.rng.portable import reference_samplers, samplers
from initrecipe.rng.portable import torch_philox
from initrecipe.rng.portable.philox import philox_words, stream_word
from initrecipe.rng.portable.samplers import SAMPLERS, TENSOR_SAMPLERS, reference_sample_, sample_

VERSION = torch.__version__
EXPECTED_METHOD = "bits" if VERSION >= (2, 15) else "split" if VERSION >= (2, 14) else ""
TWO_64 = 1 << 64


@pytest.fixture(autouse=True)
def fresh_status():
    """Every test checks the devices afresh and leaves no verdict behind."""
    torch_philox._forget()
    yield
    torch_philox._forget()


@pytest.fixture
def torch_ops(monkeypatch):
    """The samplers' torch-op path on the CPU (what a GPU runs): the C kernel switched off."""
    monkeypatch.setattr(samplers, "_kernel", None)


@pytest.fixture
def eager_calls(monkeypatch):
    """Counts the eager-integer fallback's calls from the torch-op path."""
    calls = []

    def spy(key, first, count, device="cpu"):
        calls.append((first, count))
        return philox_words(key, first, count, device)

    monkeypatch.setattr(torch_philox, "philox_words", spy)
    return calls


def params_for(kind: str, n: int) -> tuple:
    """``PARAMS[kind]``, or for a sampler with tensor parameters (format 1.2) one per element."""
    return tensor_params(kind, n) if kind in TENSOR_SAMPLERS else PARAMS[kind]


def c_kernel(n: int, dtype: torch.dtype, kind: str, key, params, segments=None) -> torch.Tensor:
    assert samplers._kernel is not None, "the C kernel was not built"
    return sample_(torch.empty(n, dtype=dtype), kind, key, params, segments)


# ---------------------------------------------------------------------------------------------
# Which path this torch takes
# ---------------------------------------------------------------------------------------------


def test_the_installed_torch_takes_the_expected_path():
    found = torch_philox.status("cpu")
    if EXPECTED_METHOD:
        assert found == torch_philox.KernelWords(True, EXPECTED_METHOD, "")
    else:  # torch 2.13: torch.func._random exists, its Philox ops have no CPU kernel
        assert found == torch_philox.KernelWords(
            False, "",
            f"torch {VERSION} on cpu: no torch.func._random.bits_; split raised NotImplementedError: "
            "Could not run 'aten::_philox_key_split' with arguments from the 'CPU' backend",
        )
    assert torch_philox.status(torch.device("cpu")) is found  # checked once per device


def test_the_torch_op_path_uses_the_kernel_words_where_usable(torch_ops, eager_calls):
    sample_(torch.empty(1001), "normal", KEY, (0.0, 1.0), [(3, 500), (2**40 + 1, 501)])
    assert eager_calls == ([] if EXPECTED_METHOD else [(3, 500), (2**40 + 1, 501)])


def test_reference_sample_never_uses_the_kernel_words(eager_calls, monkeypatch):
    used = []
    for name, fn in list(torch_philox.METHODS.items()):
        monkeypatch.setitem(torch_philox.METHODS, name, lambda *a, _fn=fn, _name=name: used.append(_name) or _fn(*a))
    monkeypatch.setattr(samplers, "_kernel", None)
    torch_philox.status("cpu")  # the self-check may use them
    used.clear()
    reference_sample_(torch.empty(999), "uniform", KEY, (0.0, 1.0))
    assert used == [] and eager_calls == []


@settings(max_examples=60, deadline=None)
@given(
    k0=st.integers(0, 2**32 - 1),
    k1=st.integers(0, 2**32 - 1),
    first=st.one_of(st.integers(0, 4096), st.integers(0, TWO_64 - 1)),
    count=st.integers(0, 3000),
)
def test_kernel_words_are_the_stream_words(k0, k1, first, count):
    first = min(first, TWO_64 - count)
    words = torch_philox.kernel_words((k0, k1), first, count, "cpu")
    if not EXPECTED_METHOD or count == 0:
        assert words is None
        return
    assert words.dtype == torch.int64 and words.shape == (count,)
    assert torch.equal(words, philox_words((k0, k1), first, count))
    for j in {0, count // 2, count - 1}:
        assert words[j].item() == stream_word((k0, k1), first + j)


def test_device_words_are_the_stream_words_on_every_torch():
    got = torch_philox.device_words((7, 8), TWO_64 - 11, 11, "cpu")
    assert got.tolist() == [stream_word((7, 8), TWO_64 - 11 + j) for j in range(11)]
    with pytest.raises(ValueError, match=r"must lie in \[0, 2\*\*64\)"):
        torch_philox.kernel_words((7, 8), TWO_64 - 3, 4, "cpu")


# ---------------------------------------------------------------------------------------------
# Bits of the torch-op path: the C kernel's and the specification's
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("case", sorted(VECTORS, key=str))
def test_spec_vectors_on_the_torch_op_path(case, torch_ops):
    kind, params = case
    dtype = torch.int64 if kind == "randint" else torch.float32
    out = sample_(torch.empty(len(INDICES), dtype=dtype), kind, KEY, params, [(i, 1) for i in INDICES])
    got = out.tolist() if kind == "randint" else [float(v).hex() for v in out.tolist()]
    want = list(VECTORS[case]) if kind == "randint" else [float.fromhex(h).hex() for h in VECTORS[case]]
    assert got == want


@pytest.mark.parametrize("kind", sorted(SAMPLERS))
def test_every_sampler_equals_the_c_kernel(kind, monkeypatch):
    dtypes = (torch.int64, torch.int32, torch.float32) if kind == "randint" else (
        (torch.float32, torch.bool, torch.uint8) if kind == "bernoulli" else
        (torch.float32, torch.float64, torch.bfloat16, torch.float16))
    # odd lengths, offsets off the 4-word blocks, the top of the counter range, a chunk boundary
    cases = [
        (1, None), (3, None), (4097, None),
        (2 + 5 + 7, [(1, 2), (6, 5), (2**33 + 3, 7)]),
        (2 * 999 + 13, [(TWO_64 - 13, 13), (5, 2 * 999)]),
    ]
    expected = {(d, n): c_kernel(n, d, kind, KEY, params_for(kind, n), segs) for d in dtypes for n, segs in cases}
    monkeypatch.setattr(samplers, "_kernel", None)
    monkeypatch.setattr(reference_samplers, "REF_CHUNK", 999)  # chunks start off the block boundaries
    for d in dtypes:
        for n, segs in cases:
            got = sample_(torch.empty(n, dtype=d), kind, KEY, params_for(kind, n), segs)
            assert bitwise_equal(got, expected[d, n]), (d, n, segs)


@settings(max_examples=40, deadline=None)
@given(
    kind=st.sampled_from(sorted(SAMPLERS)),
    key=st.tuples(st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1)),
    runs=st.lists(st.tuples(st.integers(0, TWO_64 - 1), st.integers(1, 700)), min_size=1, max_size=4),
)
def test_any_segments_equal_the_c_kernel(kind, key, runs):
    segments = [(min(first, TWO_64 - n), n) for first, n in runs]
    n = sum(length for _, length in segments)
    dtype = torch.int64 if kind == "randint" else torch.float32
    params = params_for(kind, n)
    expected = c_kernel(n, dtype, kind, key, params, segments)
    kernel, samplers._kernel = samplers._kernel, None
    try:
        got = sample_(torch.empty(n, dtype=dtype), kind, key, params, segments)
    finally:
        samplers._kernel = kernel
    assert bitwise_equal(got, expected)


def test_portable_golden_on_the_torch_op_path(torch_ops, eager_calls):
    got = _portable_hashes(initrecipe.replay(initrecipe.load(PORTABLE)))
    assert got == PORTABLE_EXPECTED["tensors"]
    assert bool(eager_calls) == (not EXPECTED_METHOD)


def test_slices_on_the_torch_op_path_equal_the_full_c_kernel_replay(monkeypatch):
    recipe, full = mixed_recipe(), mixed_weights()
    monkeypatch.setattr(samplers, "_kernel", None)
    for dim in (0, -1):
        for rank in range(3):
            part = initrecipe.replay(recipe, shards=lambda name, shape, r=rank: Shard.of(shape[dim], r, 3, dim))
            for name, tensor in full.items():
                index = [slice(None)] * tensor.dim()
                shard = Shard.of(tensor.shape[dim], rank, 3, dim)
                index[dim] = slice(shard.start, shard.stop)
                assert bitwise_equal(part[name].detach(), tensor[tuple(index)].contiguous()), (name, dim, rank)


# ---------------------------------------------------------------------------------------------
# Fallbacks: a wrong word, an exception (during the check or later), no API
# ---------------------------------------------------------------------------------------------


def _stand_in(monkeypatch, words_fn) -> None:
    """Make a stand-in method the only one (it 'needs' ``key``, which every torch.func._random has)."""
    monkeypatch.setattr(torch_philox, "METHODS", {"stand_in": words_fn})
    monkeypatch.setattr(torch_philox, "_NEEDS", {"stand_in": "key"})


def test_a_wrong_word_falls_back_with_a_logged_warning(monkeypatch, torch_ops, eager_calls, caplog):
    def off_by_one(api, key, first, count, device):
        words = philox_words(key, first, count, device)
        return torch.where(torch.eq(words, stream_word(key, first)), words ^ 1, words) if first == 0 else words

    _stand_in(monkeypatch, off_by_one)
    with caplog.at_level(logging.WARNING, logger="initrecipe.rng.portable.torch_philox"):
        found = torch_philox.status("cpu")
    bad = stream_word((0x243F6A88, 0x85A308D3), 0)
    reason = (f"stand_in gave word 0 of key (608135816, 2242054355) as {bad ^ 1:#010x}, "
              f"the specification says {bad:#010x}")
    assert found == torch_philox.KernelWords(False, "", f"torch {VERSION} on cpu: {reason}")
    assert [r.getMessage() for r in caplog.records] == [
        f"torch.func._random.stand_in is not the portable Philox on cpu ({reason}); using eager integer ops"]
    got = sample_(torch.empty(100), "normal", KEY, (0.0, 1.0))
    assert bitwise_equal(got, reference_sample_(torch.empty(100), "normal", KEY, (0.0, 1.0)))
    assert eager_calls == [(0, 100)]


def test_an_exception_in_the_self_check_falls_back(monkeypatch, torch_ops, caplog):
    def broken(api, key, first, count, device):
        raise RuntimeError("no kernel for this device.\nsecond line")

    _stand_in(monkeypatch, broken)
    with caplog.at_level(logging.DEBUG, logger="initrecipe.rng.portable.torch_philox"):
        found = torch_philox.status("cpu")
    reason = f"torch {VERSION} on cpu: stand_in raised RuntimeError: no kernel for this device."
    assert found == torch_philox.KernelWords(False, "", reason)
    assert [(r.levelname, r.getMessage()) for r in caplog.records] == [
        ("DEBUG", f"portable samplers on cpu use eager Philox: {reason}")]
    assert torch_philox.device_words(KEY, 5, 6, "cpu").tolist() == [stream_word(KEY, 5 + j) for j in range(6)]


def test_an_exception_after_the_self_check_falls_back_for_good(monkeypatch, torch_ops, eager_calls, caplog):
    calls = []

    def fails_later(api, key, first, count, device):
        calls.append(count)
        if count == 777:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return philox_words(key, first, count, device)

    _stand_in(monkeypatch, fails_later)
    assert torch_philox.status("cpu") == torch_philox.KernelWords(True, "stand_in", "")
    eager_calls.clear()
    with caplog.at_level(logging.WARNING, logger="initrecipe.rng.portable.torch_philox"):
        got = sample_(torch.empty(777), "exponential", KEY, (2.0,))
    assert bitwise_equal(got, c_kernel_free_reference(777, "exponential", (2.0,)))
    reason = "stand_in raised OutOfMemoryError: CUDA out of memory"
    assert torch_philox.status("cpu") == torch_philox.KernelWords(False, "", reason)
    assert [r.getMessage() for r in caplog.records] == [
        f"torch.func._random failed on cpu ({reason}); using eager integer ops from now on"]
    calls.clear()
    sample_(torch.empty(5), "uniform", KEY, (0.0, 1.0))
    assert calls == [] and eager_calls == [(0, 777), (0, 5)]


def c_kernel_free_reference(n: int, kind: str, params) -> torch.Tensor:
    return reference_sample_(torch.empty(n), kind, KEY, params)


def test_no_torch_func_random_falls_back(monkeypatch, torch_ops):
    def missing():
        raise ModuleNotFoundError("No module named 'torch.func._random'")

    monkeypatch.setattr(torch_philox, "_api", missing)
    assert torch_philox.status("cpu") == torch_philox.KernelWords(
        False, "", f"torch {VERSION} has no torch.func._random (ModuleNotFoundError: No module named "
                   "'torch.func._random')")
    got = sample_(torch.empty(9, dtype=torch.int64), "randint", KEY, (0, 2**32))
    assert got.tolist() == [stream_word(KEY, j) for j in range(9)]


def test_an_api_without_the_methods_falls_back(monkeypatch):
    monkeypatch.setattr(torch_philox, "_NEEDS", {"bits": "no_bits_here", "split": "no_split_here"})
    assert torch_philox.status("cpu") == torch_philox.KernelWords(
        False, "", f"torch {VERSION} on cpu: no torch.func._random.no_bits_here; no torch.func._random.no_split_here")


# ---------------------------------------------------------------------------------------------
# On a GPU (skipped where there is none)
# ---------------------------------------------------------------------------------------------


@pytest.mark.skipif(not torch.cuda.is_available(), reason="takes Philox words from torch's CUDA kernel; needs a GPU")
def test_cuda_torch_op_path_equals_the_c_kernel():  # pragma: no cover - runs where a GPU is present
    found = torch_philox.status("cuda:0")
    if VERSION >= (2, 14):
        assert found.usable, found.reason
    for kind in sorted(SAMPLERS):
        dtype = torch.int64 if kind == "randint" else torch.float32
        segments = [(1, 3), (2**33 + 3, 1 << 20), (TWO_64 - 13, 13)]
        n = sum(length for _, length in segments)
        params = params_for(kind, n)
        expected = c_kernel(n, dtype, kind, KEY, params, segments)
        on_gpu_params = tuple(p.cuda() if isinstance(p, torch.Tensor) else p for p in params)
        on_gpu = sample_(torch.empty(n, dtype=dtype, device="cuda"), kind, KEY, on_gpu_params, segments)
        eager_gpu = reference_sample_(torch.empty(n, dtype=dtype, device="cuda"), kind, KEY, on_gpu_params, segments)
        assert bitwise_equal(on_gpu.cpu(), expected), kind
        assert bitwise_equal(eager_gpu.cpu(), expected), kind
