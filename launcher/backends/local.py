"""The local backend: run the rendered `launch.sh` on this machine and follow its progress."""

from __future__ import annotations

import os
import signal
import subprocess

from launcher.progress import follow
from launcher.render.run_folder import RunFolder


def run_local(folder: RunFolder, *, resume: bool, quiet: bool = False) -> int:
    """Run the job to its end; the workers' output goes to logs/launch.log. Returns exit code."""
    log_path = folder.logs / "launch.log"
    args = ["bash", str(folder.launch_script), *(["--resume"] if resume else [])]
    with log_path.open("ab") as log:
        proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)

        def stop(signum: int, _frame: object) -> None:
            os.killpg(proc.pid, signum)

        previous = signal.signal(signal.SIGTERM, stop)
        try:
            follow(folder, is_running=lambda: proc.poll() is None, quiet=quiet)
            return proc.wait()
        except KeyboardInterrupt:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=60)
            raise
        finally:
            signal.signal(signal.SIGTERM, previous)
