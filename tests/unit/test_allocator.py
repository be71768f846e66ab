"""glibc's malloc as the worker sets it for DDP and one process on a CPU: blocks of up to
KEPT_BLOCK served from the heap and kept there when freed, bigger ones mapped alone; read back
from glibc's own accounting (mallinfo2) in a fresh process, against glibc's default."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.conftest import REPO

# One 20 MiB block, then one of 48 MiB, each allocated, written and freed; glibc's counts after
# each: the bytes in mapped blocks while it is held, and how much the heap grew and kept once it
# was freed.
SCRIPT = """
import ctypes, json, sys, torch
from launcher.worker.allocator import keep_freed_blocks
class Info(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in ("arena ordblks smblks hblks hblkhd usmblks "
                                                     "fsmblks uordblks fordblks keepcost").split()]
libc = ctypes.CDLL("libc.so.6")
libc.mallinfo2.restype = Info
if sys.argv[1] == "keep":
    assert keep_freed_blocks()
seen = {}
for mib in (20, 48):
    before = libc.mallinfo2()
    block = torch.empty(mib << 20, dtype=torch.uint8)
    block.fill_(1)
    held = libc.mallinfo2()
    del block
    freed = libc.mallinfo2()
    seen[mib] = {"mapped_held": held.hblkhd >> 20, "heap_kept": (freed.arena - before.arena) >> 20}
print(json.dumps(seen))
"""


def malloc_counts(mode: str) -> dict[str, dict[str, int]]:
    done = subprocess.run([sys.executable, "-c", SCRIPT, mode], cwd=REPO, capture_output=True,
                          text=True, timeout=120, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_blocks_up_to_the_kept_size_stay_in_the_heap_when_freed() -> None:
    default, kept = malloc_counts("default"), malloc_counts("keep")
    assert default["20"]["mapped_held"] >= 20  # the default: mapped, unmapped, zeroed anew
    assert kept["20"]["mapped_held"] < 20  # kept: from the heap ...
    assert kept["20"]["heap_kept"] >= 20  # ... and still there once freed, for the next step
    assert default["20"]["heap_kept"] < 20


def test_blocks_bigger_than_the_kept_size_are_still_mapped_alone() -> None:
    kept = malloc_counts("keep")
    assert kept["48"]["mapped_held"] >= 48  # no hole of its size left between the kept blocks
    assert kept["48"]["heap_kept"] < 48
