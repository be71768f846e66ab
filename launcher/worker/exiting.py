"""Leaving a worker or supervisor process once its work is written, without the interpreter's
teardown: freeing torch's, transformers' and the model's objects one by one takes 2-3 s of CPU
per rank, after the run is over (measured on 2 cores: rank 0 ended 2.1 s sooner)."""

from __future__ import annotations

import atexit
import os
import sys
import threading
from typing import NoReturn


def exit_now(code: int) -> NoReturn:
    """Exit with `code` as `sys.exit` would, less the teardown: threads that are not daemons are
    joined and exit handlers run (W&B's, `logging`'s, temporary folders'), output is flushed;
    the heap is left to the operating system."""
    for thread in threading.enumerate():
        if thread is not threading.current_thread() and not thread.daemon:
            thread.join()
    atexit._run_exitfuncs()  # what the interpreter's own exit runs first
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
