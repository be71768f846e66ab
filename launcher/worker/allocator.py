"""How glibc's malloc (Linux) treats the host memory a training process frees: handed back to
the OS at once (sharded strategies), or kept for the next step's tensors (the others, on CPU).

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
(FSDP, ZeRO-3), where the holes were measured.

DDP and one process on a CPU go the other way once the model is loaded: a step's activations and
gradients are blocks of up to tens of MB, which glibc's default maps afresh (or trims from the
heap's top and grows back) every step, the kernel zeroing each page on first touch. So there the
worker keeps every block of up to KEPT_BLOCK in the heap and never trims it: the next step reuses
them. Bigger blocks (EfficientNet-Lite0's widest activations at 16 images of 224 px: 77 MB) are
still mapped alone, so they leave no holes between the kept ones. Measured on that model, batch 16,
fp32, 2 threads (s/step over steps 5-20, peak RSS): glibc's default 1.10-1.13 s, 2,233-2,282 MiB;
blocks up to 24 MiB kept 0.76-0.91 s, 2,146-2,155 MiB; every block kept (no mmap at all)
0.71-0.72 s but 2,358-2,387 MiB, its heap fragmented by the big blocks. Not under ZeRO-2: its
flat buffers fragmented the kept heap (every block kept: Whisper's peak RSS at 1.39 times its plan).
"""

from __future__ import annotations

import ctypes
import ctypes.util

# mallopt's parameter numbers (malloc.h)
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
THRESHOLD = 1 << 20
KEPT_BLOCK = 24 << 20
NEVER_TRIM = (1 << 31) - 1  # mallopt takes an int


def return_freed_blocks() -> bool:
    """From now on every block of 1 MiB or more is mapped alone and unmapped when freed; False
    where the C library is not glibc (musl, macOS: nothing to tune)."""
    libc = _glibc()
    return libc is not None and bool(libc.mallopt(M_MMAP_THRESHOLD, THRESHOLD))


def keep_freed_blocks() -> bool:
    """From now on every block of up to KEPT_BLOCK comes from the heap, and what is freed stays
    there for the next allocation (never trimmed); bigger blocks are mapped alone. False where
    the C library is not glibc."""
    libc = _glibc()
    return (libc is not None and bool(libc.mallopt(M_MMAP_THRESHOLD, KEPT_BLOCK))
            and bool(libc.mallopt(M_TRIM_THRESHOLD, NEVER_TRIM)))


def _glibc() -> ctypes.CDLL | None:
    """The C library when it is one with `mallopt` (glibc)."""
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
    except OSError:
        return None
    return libc if libc is not None and hasattr(libc, "mallopt") else None
