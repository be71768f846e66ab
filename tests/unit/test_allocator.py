"""glibc's malloc as the worker sets it: freed blocks kept for the next step (DDP, one process on
a CPU), counted in the page faults a process takes when it allocates the same tensor again."""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import REPO

# A step's activation-sized blocks (EfficientNet-Lite0's at 16 images: up to 77 MB): allocated,
# written and freed, once to warm up, then five times over; page faults per page written.
SCRIPT = """
import resource, sys, torch
from launcher.worker.allocator import keep_freed_blocks
if sys.argv[1] == "keep":
    assert keep_freed_blocks()
SIZES = [48 << 20, 64 << 20, 128 << 20]
def step():
    for size in SIZES:
        block = torch.empty(size, dtype=torch.uint8)
        block.fill_(1)
        del block
step()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(5):
    step()
print((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / (5 * sum(SIZES) / 4096))
"""


def page_faults(mode: str) -> float:
    done = subprocess.run([sys.executable, "-c", SCRIPT, mode], cwd=REPO, capture_output=True,
                          text=True, timeout=120, check=True)
    return float(done.stdout.strip().splitlines()[-1])


def test_kept_blocks_are_reused_without_faulting_their_pages_again() -> None:
    default, kept = page_faults("default"), page_faults("keep")
    assert default > 0.9, default  # mapped afresh each time: every page faulted in again
    # Mostly the heap's pages, already there: 0.0-0.32 measured (a block glibc serves from a
    # thread arena's heap is unmapped once that heap is empty, whatever the settings).
    assert kept < 0.6, kept
