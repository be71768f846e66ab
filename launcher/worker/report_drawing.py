"""report.png drawn by a process of its own while rank 0 saves the final model: matplotlib's
import and drawing (~1.5 s of CPU) run on another core instead of after the save.

`python -m launcher.worker.report_drawing RUN_DIR TITLE` draws it; a picture that fails to draw
is a message in the event log, never a failed run.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from launcher.contract.events import EventLog
from launcher.contract.run_folder import RunFolder


def start_drawing(folder: RunFolder, title: str) -> subprocess.Popen:
    """Begin drawing from what the run folder holds now (the event log up to the final eval and
    its predictions): the curves are complete once training has ended."""
    return subprocess.Popen([sys.executable, "-m", __name__, str(folder.path), title],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def wait_drawn(drawing: subprocess.Popen, events: EventLog) -> None:
    """Wait for the picture; a failure to draw it is said in the event log."""
    _, error = drawing.communicate()
    if drawing.returncode != 0:
        said = error.strip().splitlines()[-1] if error.strip() else f"exit {drawing.returncode}"
        events.message(f"report.png could not be drawn ({said})")


def main(argv: list[str]) -> int:
    from launcher.ui.pictures import write_report

    run_dir, title = argv
    try:
        write_report(RunFolder(Path(run_dir)), title)
    except Exception as err:  # matplotlib, fonts, a full disk: the run itself is done
        print(f"{type(err).__name__}: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
