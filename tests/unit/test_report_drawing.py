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


def test_a_row_of_eval_pictures_is_drawn_below_the_curves(tmp_path: Path) -> None:
    """The final eval's pictures (boxes or masks drawn, true beside predicted) in the run
    folder: named in report.json, drawn 2 to a row below the curves; without them, 2 rows."""
    import numpy as np
    from PIL import Image

    folder, events = logged_run(tmp_path)
    wait_drawn(start_drawing(folder, "demo"), events)
    with Image.open(folder.report) as plain:
        assert plain.size == (1000, 700)
    folder.eval_examples.mkdir()
    for number in (1, 0, 10):  # in their numbers' order, not their names'
        Image.new("RGB", (120, 60), (255, 0, 255)).save(folder.eval_examples / f"{number}.png")
    wait_drawn(start_drawing(folder, "demo"), events)
    assert ReportData.read(folder.report_data).examples == (
        "eval_examples/0.png", "eval_examples/1.png", "eval_examples/10.png")
    with Image.open(folder.report) as report:
        pixels = np.asarray(report.convert("RGB"))
    assert pixels.shape == (700 + 2 * 260, 1000, 3)  # 2 rows of pictures
    magenta = (pixels == (255, 0, 255)).all(-1)
    assert magenta[:700].sum() == 0
    assert magenta[700:960, :500].sum() > 5000 and magenta[700:960, 500:].sum() > 5000
    assert magenta[960:, :500].sum() > 5000 and magenta[960:, 500:].sum() == 0


def test_names_without_a_label_per_row_draw_no_confusion_matrix(tmp_path: Path) -> None:
    """Segmentation writes label names but no eval predictions (its pixels are summed): no
    matrix of zeros."""
    from launcher.contract.reports import LabelNames

    folder, events = logged_run(tmp_path)
    LabelNames(names=("background", "cat")).write(folder.label_names)
    wait_drawn(start_drawing(folder, "demo"), events)
    assert ReportData.read(folder.report_data).confusion is None
