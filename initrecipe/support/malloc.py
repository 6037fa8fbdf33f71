"""The C library's allocator, tuned so that streaming tensors gives their memory back."""

from __future__ import annotations

import ctypes

__all__ = ["return_freed_memory_to_the_os"]


def return_freed_memory_to_the_os() -> None:
    """Make glibc serve every allocation of 1 MiB or more with its own mapping.

    glibc raises its mmap threshold (up to 32 MiB) each time a large block is freed, after which
    tensors of a few MiB come from the heap, whose freed pages it keeps: streaming a model then
    looks like holding all of it.  Fixing the threshold returns each tensor's pages when it is
    dropped.  No-op where the C library is not glibc.
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
        m_mmap_threshold = -3
        libc.mallopt(m_mmap_threshold, 1 << 20)
    except (OSError, AttributeError):
        pass
