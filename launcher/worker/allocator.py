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

DDP and one process on a CPU go the other way once the model is loaded: the activations of a
step are blocks above any mmap threshold (EfficientNet-Lite0 at 16 images of 224 px: 77 MB
ones), so by default every step maps them afresh and the kernel zeroes every page on first
touch. Kept in the heap and never trimmed, the next step reuses them: the image peer bench's
step went from 11.9-14.3 to 16.9-17.5 images/s (interleaved, same machine), its peak RSS
3-7% higher (the heap's holes). Not under ZeRO-2: its flat buffers left the kept heap so
fragmented that Whisper's peak RSS rose from 0.95 to 1.39 times its plan.
"""

from __future__ import annotations

import ctypes
import ctypes.util

# mallopt's parameter numbers (malloc.h)
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD, M_MMAP_MAX = -1, -3, -4
THRESHOLD = 1 << 20
NEVER_TRIM = (1 << 31) - 1  # mallopt takes an int


def return_freed_blocks() -> bool:
    """From now on every block of 1 MiB or more is mapped alone and unmapped when freed; False
    where the C library is not glibc (musl, macOS: nothing to tune)."""
    libc = _glibc()
    return libc is not None and bool(libc.mallopt(M_MMAP_THRESHOLD, THRESHOLD))


def keep_freed_blocks() -> bool:
    """From now on every block comes from the heap, and what is freed stays there for the next
    allocation (no mmap, no trim); False where the C library is not glibc."""
    libc = _glibc()
    return (libc is not None and bool(libc.mallopt(M_MMAP_MAX, 0))
            and bool(libc.mallopt(M_TRIM_THRESHOLD, NEVER_TRIM)))


def _glibc() -> ctypes.CDLL | None:
    """The C library when it is one with `mallopt` (glibc)."""
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
    except OSError:
        return None
    return libc if libc is not None and hasattr(libc, "mallopt") else None
