"""report.png drawn by a process of its own: the picture from the event log, or one message."""

from __future__ import annotations

from pathlib import Path

from launcher.contract.events import EventLog, Message, TrainLogged, read_events
from launcher.contract.reports import ReportData
from launcher.contract.run_folder import RunFolder
from launcher.worker.report_drawing import start_drawing, wait_drawn


def logged_run(tmp_path: Path) -> tuple[RunFolder, EventLog]:
    folder = RunFolder(tmp_path)
    folder.logs.mkdir()
    events = EventLog(folder.events, True)
    for step, loss in enumerate((2.0, 1.5, 1.25), start=1):
        events.write(TrainLogged(step=step, loss=loss, lr=1e-3, grad_norm=1.0, epoch=0.1))
    return folder, events


def test_the_picture_is_drawn_from_the_event_log(tmp_path: Path) -> None:
    folder, events = logged_run(tmp_path)
    wait_drawn(start_drawing(folder, "demo"), events)
    assert folder.report.read_bytes().startswith(b"\x89PNG")
    assert ReportData.read(folder.report_data).train_loss.values == (2.0, 1.5, 1.25)
    assert not [e for e in read_events(folder.events) if isinstance(e, Message)]


def test_a_picture_that_cannot_be_drawn_is_one_message(tmp_path: Path) -> None:
    folder, events = logged_run(tmp_path)
    folder.report.mkdir()  # savefig cannot write a file there
    wait_drawn(start_drawing(folder, "demo"), events)
    (said,) = [e.text for e in read_events(folder.events) if isinstance(e, Message)]
    assert said.startswith("report.png could not be drawn (") and "report.png" in said[30:]
