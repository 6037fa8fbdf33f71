"""Fresh CPU tensors backed by transparent huge pages, where the system allows it.

Replay writes every weight into newly allocated memory, and on Linux the first write to each 4 KiB
page of it takes a page fault: for a 1 GiB model that is 262,144 faults, often more time than the
drawing itself.  A 2 MiB transparent huge page takes one fault for 512 such pages.  Where the
kernel's THP mode is ``madvise`` (a common default) a mapping gets huge pages only after
``madvise(MADV_HUGEPAGE)``, and only for pages not yet touched.

torch has its own switch (the environment variable ``THP_MEM_ALLOC_ENABLE=1``), but it reads it
once, at the process's first CPU allocation, so a library cannot turn it on from inside a running
process.  This module instead advises the untouched interior of a freshly allocated tensor, right
after torch's own allocator returns it and before anything writes to it.  The tensor stays a
plain torch tensor (same allocator, same lifetime, resizable); its values are whatever the
caller writes, so nothing about replay's results changes; and since only bytes the tensor spans
are advised, and replay writes all of them anyway, the resident memory does not grow either.

Every allocation of replay's outputs that is large enough goes through :func:`empty_strided`
(or is advised with :func:`advise` right after a recorded ``empty`` factory made it).  Elsewhere
(not Linux, THP mode ``never``, no ``madvise`` in the C library) the functions do nothing.

Huge pages are not faster everywhere.  This project's test machine is a Firecracker VM whose
balloon device reports free pages to the hypervisor (virtio ``VIRTIO_BALLOON_F_REPORTING``): the
guest reports free blocks of 2 MiB and more (``page_reporting_order`` 9) and the host takes their
memory back.  A huge page can only come from such a block, so presumably every fresh huge page
there has to be backed by the host again, while 4 KiB pages come first from the smaller free
fragments the guest kept (not verified on the host side).  Measured there, each in a fresh process: ``fill_`` of 3.5 GiB of fresh tensors in a
Llama-1B's shapes took 0.7-1.1 s with 4 KiB pages and 2.9-5.7 s with huge pages (1,680 huge-page
faults, no compaction in ``/proc/vmstat``), and a Llama-1B-sized replay 1.3 s against 5.7 s
(docs/BENCHMARKS.md); huge pages that a process reused right after freeing them, by contrast,
took writes at 32 GB/s against 4 GB/s for 4 KiB pages.  torch's own ``THP_MEM_ALLOC_ENABLE=1`` did
the same.  So ``INITRECIPE_HUGE_PAGES`` (read at each call) decides:
``auto`` (the default, also when unset or empty) advises unless such free-page reporting is
active; ``1`` always advises where the system allows it; ``0`` never does.
"""

from __future__ import annotations

import ctypes
import functools
import glob
import os
import sys
from typing import Sequence

import torch

from initrecipe.errors import SettingError

__all__ = ["HUGE_PAGE", "MIN_BYTES", "thp_mode", "free_page_reporting", "enabled", "advise", "aligned_interior",
           "empty_strided"]

HUGE_PAGE = 2 << 20
"""The x86-64 and aarch64 (4 KiB base pages) transparent huge page size, in bytes."""

MIN_BYTES = 2 * HUGE_PAGE
"""Smallest tensor advised: it then spans at least one whole aligned huge page."""

_MADV_HUGEPAGE = 14  # Linux, every architecture
_THP_ENABLED = "/sys/kernel/mm/transparent_hugepage/enabled"
_BALLOON_FEATURES = "/sys/bus/virtio/drivers/virtio_balloon/virtio*/features"
_BALLOON_F_REPORTING = 5  # virtio balloon feature bit: free page reporting


@functools.lru_cache(maxsize=None)
def thp_mode() -> str:
    """The kernel's transparent-huge-page mode: ``"always"``, ``"madvise"``, ``"never"``, or
    ``"unavailable"`` (not Linux, or no THP support)."""
    if not sys.platform.startswith("linux"):
        return "unavailable"
    try:
        with open(_THP_ENABLED, encoding="ascii") as f:
            text = f.read()
    except OSError:
        return "unavailable"
    for word in text.split():
        if word.startswith("[") and word.endswith("]"):
            return word[1:-1]
    return "unavailable"


@functools.lru_cache(maxsize=None)
def free_page_reporting() -> bool:
    """Whether a virtio balloon device reports this guest's free pages to the hypervisor (Linux
    sysfs: the device's feature bits, one character per bit)."""
    for path in glob.glob(_BALLOON_FEATURES):
        try:
            with open(path, encoding="ascii") as f:
                bits = f.read().strip()
        except OSError:
            continue
        if len(bits) > _BALLOON_F_REPORTING and bits[_BALLOON_F_REPORTING] == "1":
            return True
    return False


@functools.lru_cache(maxsize=None)
def _madvise() -> object | None:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        fn = libc.madvise
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    fn.restype = ctypes.c_int
    return fn


def enabled() -> bool:
    """Whether :func:`advise` asks for huge pages now: Linux with THP ``always`` or ``madvise``
    and ``madvise`` available, and ``INITRECIPE_HUGE_PAGES`` ``1``, or ``auto`` (the default)
    without free-page reporting to a hypervisor (:func:`free_page_reporting`).

    Raises :class:`~initrecipe.errors.SettingError` when ``INITRECIPE_HUGE_PAGES`` is set to
    anything but ``0``, ``1``, ``auto`` or the empty string.
    """
    setting = os.environ.get("INITRECIPE_HUGE_PAGES", "").strip()
    if setting not in ("", "auto", "0", "1"):
        raise SettingError(f"INITRECIPE_HUGE_PAGES={setting}: use 1 (huge pages for replay's fresh outputs), "
                           "0 (none) or auto (the default: huge pages unless the hypervisor takes freed memory back)")
    if setting == "0" or thp_mode() not in ("always", "madvise") or _madvise() is None:
        return False
    return setting == "1" or not free_page_reporting()


def advise(tensor: torch.Tensor) -> bool:
    """Ask for huge pages for the whole 2 MiB-aligned pages inside ``tensor``'s storage.

    Call it before anything writes to the tensor (pages already touched stay small).  Returns
    whether the advice was given; it is skipped for non-CPU tensors, tensors under
    :data:`MIN_BYTES` and where :func:`enabled` is false, and a refusal by the kernel is ignored:
    huge pages are an optimisation, never a requirement.
    """
    if tensor.device.type != "cpu":
        return False
    storage = tensor.untyped_storage()
    nbytes = storage.nbytes()
    if nbytes < MIN_BYTES or not enabled():
        return False
    lo, hi = aligned_interior(storage.data_ptr(), nbytes)
    if hi <= lo:
        return False
    fn = _madvise()
    return fn is not None and fn(lo, hi - lo, _MADV_HUGEPAGE) == 0  # type: ignore[operator]


def aligned_interior(start: int, nbytes: int) -> tuple[int, int]:
    """The whole huge pages inside ``[start, start + nbytes)``, as ``(lo, hi)`` addresses (2 MiB
    aligned; ``hi <= lo`` when there is none).  Only these are advised: a huge page that reached
    outside the tensor could fault in memory nobody asked for."""
    lo = (start + HUGE_PAGE - 1) & ~(HUGE_PAGE - 1)
    hi = (start + nbytes) & ~(HUGE_PAGE - 1)
    return lo, hi


def empty_strided(shape: Sequence[int], stride: Sequence[int], dtype: torch.dtype,
                  device: torch.device | str = "cpu") -> torch.Tensor:
    """``torch.empty_strided``, with a large CPU result advised to use huge pages (:func:`advise`)."""
    out = torch.empty_strided(tuple(shape), tuple(stride), dtype=dtype, device=device)
    advise(out)
    return out
