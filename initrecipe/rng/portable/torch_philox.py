"""Philox stream words from torch's own Philox4x32-10 kernel, behind a self-check.

torch 2.14 and later ship ``torch.func._random`` (private, marked experimental) with CPU and CUDA
kernels of Philox4x32-10.  Their words are the portable stream's words (schema/PORTABLE_RNG.md
§2-§4): under the key tensor ``(seed, b)`` with ``seed = k0 + 2**32 * k1`` and the offset ``b``
counted in 128-bit blocks,

* torch >= 2.15: element ``e`` of ``bits(key, n, dtype=torch.uint32)`` is lane ``e mod 4`` of block
  ``b + e div 4``, i.e. stream word ``W(4b + e)``;
* torch 2.14: ``split(key, n)`` returns ``n`` keys of two uint64 each, key ``i`` holding block
  ``b + i`` (its four words, low half first).

(Their ``uniform``/``normal`` values are not the specification's and are not used.)  The
sampler's torch-op path (:func:`initrecipe.rng.portable.samplers.sample_` on a device other than the CPU, or
on the CPU when the C kernel is absent) takes its words from :func:`device_words`: torch's kernel
replaces about 216 eager integer operations per chunk by one kernel launch, and the spec's
transforms stay torch operations.

Because the API is private, it is trusted per device only after a self-check: on first use on a
device, words at a few positions (first and last blocks of the counter range, a high key, an
unaligned start, a draw long enough to span threads and CUDA blocks) must equal the pure-Python
:func:`initrecipe.rng.portable.philox.stream_word`.  A mismatch, an exception from the private API (then or
later), or a torch without it makes that device use :func:`initrecipe.rng.portable.philox.philox_words`
(eager integer ops, today's path) for the rest of the process; :func:`status` tells which path a
device takes and why.  Both paths give the same bits, so nothing is warned about: a mismatch is
logged at WARNING on the ``initrecipe.rng.portable.torch_philox`` logger (it means torch changed its kernel),
an unavailable API at DEBUG.
"""

from __future__ import annotations

import logging
import threading
from types import ModuleType
from typing import Callable, NamedTuple

import torch

from initrecipe.rng.portable.philox import philox_words, stream_word

__all__ = ["KernelWords", "device_words", "status", "kernel_words", "METHODS"]

_log = logging.getLogger(__name__)

WordsFn = Callable[[ModuleType, tuple[int, int], int, int, torch.device], torch.Tensor]


class KernelWords(NamedTuple):
    """Which words a device's torch-op sampler path uses."""

    usable: bool
    """True: torch's Philox kernel (checked); False: eager integer ops (:func:`philox_words`)."""
    method: str
    """``"bits"`` (torch >= 2.15) or ``"split"`` (torch 2.14) when usable, else ``""``."""
    reason: str
    """Why the kernel is not used (empty when it is)."""


def _key_tensor(key: tuple[int, int], block: int, device: torch.device) -> torch.Tensor:
    return torch.tensor([key[0] | key[1] << 32, block], dtype=torch.uint64, device=device)


def _words_by_bits(api: ModuleType, key: tuple[int, int], first: int, count: int, device: torch.device) -> torch.Tensor:
    """Words first .. first+count-1 with ``bits_`` (torch >= 2.15): one uint32 per word."""
    start = first & 3
    raw = torch.empty(start + count, dtype=torch.uint32, device=device)
    api.bits_(_key_tensor(key, first >> 2, device), raw)
    return raw[start:].to(torch.int64)


def _words_by_split(api: ModuleType, key: tuple[int, int], first: int, count: int, device: torch.device) -> torch.Tensor:
    """Words first .. first+count-1 with ``split`` (torch 2.14): one key (two uint64) per block."""
    start = first & 3
    blocks = (start + count + 3) >> 2
    keys = api.split(_key_tensor(key, first >> 2, device), blocks)
    if keys.dtype != torch.uint64 or tuple(keys.shape) != (blocks, 2):
        raise ValueError(f"split returned {keys.dtype} of shape {tuple(keys.shape)}, expected uint64 ({blocks}, 2)")
    # Little-endian: each uint64 is (low word, high word), so the uint32 view is the block's four words.
    return keys.view(torch.uint32).reshape(-1)[start : start + count].to(torch.int64)


METHODS: dict[str, WordsFn] = {"bits": _words_by_bits, "split": _words_by_split}
"""The ways to read words from ``torch.func._random``, in order of preference."""
_NEEDS = {"bits": "bits_", "split": "split"}  # the attribute of torch.func._random each method calls

# (key, first word, count, positions checked within the draw) of the self-check.
_CHECKS: tuple[tuple[tuple[int, int], int, int, tuple[int, ...]], ...] = (
    ((0x243F6A88, 0x85A308D3), 0, 9, tuple(range(9))),
    ((0xFFFFFFFF, 0xFFFFFFFF), (1 << 34) + 6, 7, tuple(range(7))),  # seed >= 2**63, high counter word
    ((0x00000000, 0x00000001), (1 << 64) - 5, 5, tuple(range(5))),  # the stream's last words
    ((0x9E3779B9, 0x7F4A7C15), 1_000_003, 100_001, (0, 1, 2, 3, 4, 4095, 4096, 32767, 32768, 65535, 65536,
                                                   65537, 99_999, 100_000)),
)

_lock = threading.Lock()
_status: dict[str, KernelWords] = {}


def _brief(error: BaseException) -> str:
    """``error``'s type and first sentence (torch's dispatcher errors run to many lines)."""
    text = str(error).strip().splitlines()[0] if str(error).strip() else ""
    sentence = text.split(". ", 1)[0]
    return f"{type(error).__name__}: {sentence[:200]}"


def _api() -> ModuleType:
    """torch's private, experimental stateless-random module (a fixed name: nothing read from a file)."""
    # Imported here, not at the top: any failure of this private import is a fallback reason that
    # `_probe` reports (it has no Philox ops on torch 2.13), never a failure to import initrecipe.
    import torch.func._random as api

    return api


def _self_check(api: ModuleType, method: str, device: torch.device) -> str:
    """'' when ``method`` gives the specification's words on ``device``, else what went wrong."""
    words_of = METHODS[method]
    for key, first, count, positions in _CHECKS:
        words = words_of(api, key, first, count, device)
        if words.dtype != torch.int64 or tuple(words.shape) != (count,):
            return f"{method} gave {words.dtype} of shape {tuple(words.shape)} for {count} words"
        got = words[list(positions)].cpu().tolist()
        for position, value in zip(positions, got):
            want = stream_word(key, first + position)
            if value != want:
                return (f"{method} gave word {first + position} of key {key} as {value:#010x}, "
                        f"the specification says {want:#010x}")
    return ""


def _probe(device: torch.device) -> KernelWords:
    """Find the first method of :data:`METHODS` that passes the self-check on ``device``."""
    version = f"torch {torch.__version__}"
    try:
        api = _api()
    except Exception as error:  # noqa: BLE001 - any failure of a private import means "not available"
        return KernelWords(False, "", f"{version} has no torch.func._random ({_brief(error)})")
    reasons = []
    for method in METHODS:
        if not hasattr(api, _NEEDS[method]):
            reasons.append(f"no torch.func._random.{_NEEDS[method]}")
            continue
        try:
            with torch.no_grad():
                mismatch = _self_check(api, method, device)
        except Exception as error:  # noqa: BLE001 - the private API may fail in any way
            reasons.append(f"{method} raised {_brief(error)}")
            continue
        if not mismatch:
            return KernelWords(True, method, "")
        _log.warning("torch.func._random.%s is not the portable Philox on %s (%s); using eager integer ops",
                     method, device, mismatch)
        reasons.append(mismatch)
    return KernelWords(False, "", f"{version} on {device}: " + "; ".join(reasons))


def status(device: torch.device | str) -> KernelWords:
    """Which words the torch-op sampler path uses on ``device`` (runs the self-check once per device)."""
    dev = torch.device(device)
    name = str(dev)
    with _lock:
        found = _status.get(name)
        if found is None:
            found = _probe(dev)
            _status[name] = found
            if not found.usable:
                _log.debug("portable samplers on %s use eager Philox: %s", name, found.reason)
        return found


def _disable(device: torch.device, reason: str) -> None:
    with _lock:
        _status[str(device)] = KernelWords(False, "", reason)
    _log.warning("torch.func._random failed on %s (%s); using eager integer ops from now on", device, reason)


def kernel_words(key: tuple[int, int], first: int, count: int, device: torch.device | str) -> torch.Tensor | None:
    """Words ``first .. first+count-1`` of ``key``'s stream from torch's Philox kernel, as an int64
    tensor on ``device``; None when the device's self-check did not pass (see :func:`status`)."""
    if first < 0 or count < 0 or first + count > 1 << 64:
        raise ValueError(f"word range [{first}, {first}+{count}) must lie in [0, 2**64)")
    dev = torch.device(device)
    found = status(dev)
    if not found.usable or count == 0:
        return None
    try:
        return METHODS[found.method](_api(), key, first, count, dev)
    except Exception as error:  # noqa: BLE001 - a failure of the private API falls back, never reaches the user
        _disable(dev, f"{found.method} raised {_brief(error)}")
        return None


def device_words(key: tuple[int, int], first: int, count: int, device: torch.device | str) -> torch.Tensor:
    """Words ``first .. first+count-1`` of ``key``'s stream on ``device`` (int64, values in
    [0, 2**32)): from torch's Philox kernel where :func:`status` says it is usable, else (and on
    any failure of it) from :func:`initrecipe.rng.portable.philox.philox_words`.  Same bits either way."""
    words = kernel_words(key, first, count, device)
    return philox_words(key, first, count, device) if words is None else words


def _forget() -> None:
    """Drop the per-device results, so that the next use checks again (for tests)."""
    with _lock:
        _status.clear()
