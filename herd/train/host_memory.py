"""Keep freed host memory inside the process (Linux, glibc), so CPU training steps stop page-faulting.

A training step allocates and frees the same activation and gradient buffers every step. glibc's malloc serves
blocks above its mmap threshold (128 KB, rising to at most 32 MB as such blocks are freed) with fresh mappings and
returns a freed heap top to the OS, so each step faults those pages in again and the kernel zero-fills them:
5,500 to 8,300 minor faults per step for herd's CPU benchmark step, 38,000 for the HF loop it is compared with. Two
`mallopt` settings keep the memory for reuse instead, as CUDA's caching allocator does on GPUs and Intel's CPU
launcher does by preloading jemalloc or tcmalloc. Hand-written because torch exposes no host allocator setting.
The cost: the process keeps its peak heap until it exits.
"""

from __future__ import annotations

import ctypes
import sys

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
"""glibc's mallopt parameters (malloc.h)."""
MMAP_THRESHOLDS = (1 << 30, 32 << 20)
"""Blocks up to this size come from the heap: 1 GiB where glibc accepts it, else its 64-bit ceiling of 32 MiB."""


def retain_freed_memory() -> bool:
    """Serve large blocks from the heap and never trim it; whether it applied (False off Linux/glibc)."""
    if not sys.platform.startswith("linux"):
        return False
    libc = ctypes.CDLL(None)
    if not hasattr(libc, "gnu_get_libc_version"):  # glibc only (musl has no mallopt tuning)
        return False
    mallopt = libc.mallopt
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    if not any(mallopt(M_MMAP_THRESHOLD, size) for size in MMAP_THRESHOLDS):
        return False
    return bool(mallopt(M_TRIM_THRESHOLD, 2**31 - 1))
