"""Freed host memory handed back to the OS at once (glibc's malloc, Linux).

glibc serves blocks below its mmap threshold from its heap, and its default threshold is dynamic:
each freed mapped block raises it, up to 32 MiB. A training process allocates and frees blocks of
1-32 MiB all the time (a tensor loaded whole and kept as a slice, a layer gathered for one
forward, a gradient bucket, the optimizer's flat copies); from the heap, the holes they leave are
not returned, and the process's resident memory climbs far above what it holds. Measured on a
303M-parameter Llama over 2 CPU ranks: ZeRO-3's peak RSS 7,663 MiB with the default, 5,198 MiB
with the threshold fixed at 1 MiB (FSDP2's shard-by-shard load kept 0.9 GiB of holes). Fixed,
every block of 1 MiB or more is its own mapping, unmapped when freed.

It costs time: every such block is mapped afresh and its pages zeroed by the kernel on first
touch. On the 34M-parameter Llama of `bench/peer_bench.py` (1 process, 3 packed rows of 512
tokens per step) the raw step ran at 400-439 tokens/s with the threshold fixed against 528-529
with glibc's default. So the worker fixes it only for the strategies that shard parameters
(FSDP, ZeRO-3), where the holes were measured; DDP and one process keep the default.
"""

from __future__ import annotations

import ctypes
import ctypes.util

M_MMAP_THRESHOLD = -3  # mallopt's parameter number (malloc.h)
THRESHOLD = 1 << 20


def return_freed_blocks() -> bool:
    """From now on every block of 1 MiB or more is mapped alone and unmapped when freed; False
    where the C library is not glibc (musl, macOS: nothing to tune)."""
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
    except OSError:
        return False
    if libc is None or not hasattr(libc, "mallopt"):
        return False
    return bool(libc.mallopt(M_MMAP_THRESHOLD, THRESHOLD))
