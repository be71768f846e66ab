"""Trackers without a training run: `tracking.to` and its checks, credentials kept out of every
message, the fan-out to several trackers, TensorBoard's purge on resume."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from launcher.contract.events import TrackingOffline
from launcher.contract.run_folder import RunFolder
from launcher.contract.vocabulary import JobState, TrackerKind
from launcher.trackers.base import Trackers, flat_params
from launcher.trackers.mlflow_run import _reason
from launcher.trackers.mlflow_sync import bare_uri, server_uri
from launcher.trackers.tensorboard_run import start_tensorboard
from tests.conftest import assert_one_error
from tests.helpers.plans import QUICKSTART, quickstart_plan


def test_trackers_in_the_plan() -> None:
    assert quickstart_plan()[1].trackers == (TrackerKind.WANDB,)
    both = quickstart_plan('tracking.to=["tensorboard","mlflow"]')[1]
    assert both.trackers == (TrackerKind.TENSORBOARD, TrackerKind.MLFLOW)
    assert quickstart_plan('tracking.to=["mlflow"]', "tracking.mode=disabled")[1].trackers == ()
    assert quickstart_plan("tracking.to=[]")[1].trackers == ()


@pytest.mark.parametrize(("setting", "needle"), [
    ('tracking.to=["wandb","wandb"]', "name each tracker once"),
    ('tracking.to=["neptune"]', "'wandb', 'mlflow' or 'tensorboard'"),
    ("tracking.mlflow_uri='https://bob:hunter2@mlflow.site'", "credentials never go in a recipe"),
])
def test_bad_tracking_settings_are_one_error(run_cli, setting: str, needle: str) -> None:
    result = run_cli(QUICKSTART, "--dry-run", "--backend", "local", "--set", setting)
    assert_one_error(result, "tracking.", needle)
    assert "hunter2" not in result.stdout + result.stderr


def test_credentials_never_shown() -> None:
    assert bare_uri("https://bob:hunter2@mlflow.site:5000/x") == "https://mlflow.site:5000/x"
    assert bare_uri("http://127.0.0.1:5000") == "http://127.0.0.1:5000"
    os.environ["MLFLOW_TRACKING_TOKEN"] = "tok-secret-1"
    try:
        err = ConnectionError("API request to https://bob:pw@site/api failed, token tok-secret-1")
        assert _reason(err) == ("could not use the MLflow server (ConnectionError: API request "
                                "to https://site/api failed, token ***)")
    finally:
        del os.environ["MLFLOW_TRACKING_TOKEN"]
    for name in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):
        os.environ.pop(name, None)
    try:
        assert server_uri("https://bob:p%40ss@mlflow.site/x") == "https://mlflow.site/x"
        assert (os.environ["MLFLOW_TRACKING_USERNAME"], os.environ["MLFLOW_TRACKING_PASSWORD"]
                ) == ("bob", "p@ss")
    finally:
        for name in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):
            os.environ.pop(name, None)
    offline = TrackingOffline(reason="down", sync_command="sft-launch sync RUN", tracker="MLflow")
    assert offline.describe().startswith("MLflow: down; logging locally")


class Recorded:
    """A tracker that keeps what it is given."""

    def __init__(self) -> None:
        self.logged: list[tuple[dict[str, float], int]] = []
        self.finished: list[tuple[list[Path], JobState]] = []

    def log(self, metrics: dict[str, float], step: int) -> None:
        self.logged.append((metrics, step))

    def table(self, key: str, columns: list[str], rows: list[list[object]], step: int) -> None:
        raise AssertionError("no table here")

    def finish(self, files: list[Path], ended: JobState) -> None:
        self.finished.append((list(files), ended))


def test_every_tracker_gets_the_same_numbers_and_one_finish(tmp_path: Path) -> None:
    first, second = Recorded(), Recorded()
    trackers = Trackers([first, second])
    trackers.log({"train/loss": 0.5, "train/token_efficiency": None, "eval/confusion": [[1]],
                  "eval/steps": 3, "flag": True}, step=4)
    present = tmp_path / "summary.json"
    present.write_text("{}")
    trackers.finish((present, tmp_path / "report.png"))
    trackers.finish(())
    for tracker in (first, second):
        assert tracker.logged == [({"train/loss": 0.5, "eval/steps": 3.0}, 4)]
        assert tracker.finished == [([present], JobState.COMPLETED)]


def test_params_are_the_flat_recipe_and_plan() -> None:
    recipe, plan = quickstart_plan("train.lr=3e-4")
    params = flat_params(recipe, plan)
    assert params["recipe.train.lr"] == "0.0003"
    assert params["plan.world_size"] == str(plan.world_size)
    assert params["recipe.tracking.to"] == "['wandb']"
    assert all(isinstance(value, str) for value in params.values())


def test_tensorboard_shows_each_step_once_after_a_resume(tmp_path: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    recipe, plan = quickstart_plan()
    folder = RunFolder(tmp_path)
    first = start_tensorboard(recipe, plan, folder, resumed_step=0)
    for step in range(1, 8):  # a checkpoint at 5, then killed after 7
        first.log({"train/loss": float(step)}, step)
    first.writer.close()
    again = start_tensorboard(recipe, plan, folder, resumed_step=5)
    for step in range(6, 10):
        again.log({"train/loss": 10.0 + step}, step)
    again.finish([], JobState.COMPLETED)
    reader = EventAccumulator(str(folder.tensorboard))
    reader.Reload()
    shown = [(e.step, e.value) for e in reader.Scalars("train/loss")]
    assert shown == [(1, 1.0), (2, 2.0), (3, 3.0), (4, 4.0), (5, 5.0), (6, 16.0), (7, 17.0),
                     (8, 18.0), (9, 19.0)]


def test_pictures_and_sounds_reach_tensorboard_and_mlflow_as_media(tmp_path: Path) -> None:
    import numpy as np
    import soundfile
    from PIL import Image
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from launcher.contract.events import EventLog, Message
    from launcher.data.encode.media import Picture, Sound
    from launcher.trackers.mlflow_run import start_mlflow
    from tests.helpers.run_folder import events, of_kind

    recipe, plan = quickstart_plan()
    folder = RunFolder(tmp_path)
    folder.logs.mkdir()
    log = EventLog(folder.events, True)
    pixels = np.zeros((20, 30, 3), dtype=np.uint8)
    pixels[:, :15] = 255
    sound = np.sin(np.linspace(0, 2000, 8000)).astype(np.float32) * 0.5
    rows = [[Picture(pixels), "ants", "bees"], [Sound(sound, 16000), "one", "won"]]
    trackers = Trackers([start_tensorboard(recipe, plan, folder, 0),
                         start_mlflow(recipe, plan, folder, log)])
    trackers.table("eval/examples", ["input", "reference", "prediction"], rows, step=3)
    trackers.finish(())
    assert "no tracking server" in of_kind(events(tmp_path), Message)[0].text
    board = EventAccumulator(str(folder.tensorboard), size_guidance={"images": 0, "audio": 0})
    board.Reload()
    assert board.Tags()["images"] == ["eval/examples/0"]
    assert board.Tags()["audio"] == ["eval/examples/1"]
    shown = next(folder.mlflow_store.rglob("eval-examples-step-3"))
    table = json.loads((shown / "table.json").read_text())
    assert table["rows"] == [["0.png", "ants", "bees"], ["1.wav", "one", "won"]]
    assert np.array_equal(np.asarray(Image.open(shown / "0.png")), pixels)
    heard, rate = soundfile.read(shown / "1.wav", dtype="float32")
    assert rate == 16000 and np.abs(heard - sound).max() < 1e-4


@pytest.mark.parametrize(("ended", "status"), [(JobState.COMPLETED, "FINISHED"),
                                               (JobState.STOPPED, "KILLED"),
                                               (JobState.FAILED, "FAILED")])
def test_mlflow_shows_how_the_run_ended(tmp_path: Path, ended: JobState, status: str) -> None:
    """A crashed run is FAILED in MLflow, not left RUNNING; a stopped one KILLED (resumable)."""
    from launcher.contract.events import EventLog
    from launcher.contract.tracking import MlflowRuns
    from launcher.trackers.mlflow_run import start_mlflow
    from launcher.trackers.mlflow_sync import local_client

    recipe, plan = quickstart_plan()
    folder = RunFolder(tmp_path)
    folder.logs.mkdir()
    trackers = Trackers([start_mlflow(recipe, plan, folder, EventLog(folder.events, True))])
    run_id = MlflowRuns.read(folder.mlflow_run).local_run_id
    assert local_client(folder).get_run(run_id).info.status == "RUNNING"
    trackers.finish((), ended)
    assert local_client(folder).get_run(run_id).info.status == status
