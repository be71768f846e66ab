"""MLflow and TensorBoard beside W&B, against a real MLflow server on this machine: the same
metrics at the same steps in all three, one MLflow run per run folder across a kill -9 and
--resume, a server that dies mid-run, and no credential in any file or output."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from launcher.contract.events import Evaluated, TrackingOffline, TrainLogged
from launcher.contract.run_folder import RunFolder
from launcher.contract.tracking import MlflowRuns
from launcher.trackers.mlflow_sync import local_client
from tests.conftest import REPO, SFT_LAUNCH, cli_env
from tests.e2e.conftest import QUICKSTART
from tests.helpers.mlflow_server import MlflowServer, free_port
from tests.helpers.processes import kill_everything, wait_for_event
from tests.helpers.run_folder import events, of_kind
from tests.helpers.wandb_file import find_run_files, read_history

pytestmark = pytest.mark.slow
TOKEN, PASSWORD = "mlflow-token-" + "7" * 24, "pass-" + "9" * 20
ALL = ["--set", 'tracking.to=["wandb","mlflow","tensorboard"]']


def settings(steps: int, *extra: str) -> list[str]:
    return ["--backend", "local", "--quiet", "--set", "data.max_train_samples=512",
            "--set", "data.max_eval_samples=32", "--set", f"train.max_steps={steps}",
            "--set", "train.log_every=1", "--set", "train.eval_every=4", *extra]


def launch(run_dir: Path, server: str, *args: str) -> subprocess.Popen:
    env = cli_env(MLFLOW_TRACKING_URI=server, MLFLOW_TRACKING_TOKEN=TOKEN,
                  MLFLOW_TRACKING_PASSWORD=PASSWORD)
    return subprocess.Popen([*SFT_LAUNCH, QUICKSTART, "--run-dir", run_dir, *args], cwd=REPO,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)


def finish(proc: subprocess.Popen) -> str:
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, out
    return out


def history(client, run_id: str, key: str) -> dict[int, float]:
    """step -> value of one metric; fails on a step logged twice."""
    steps = [(m.step, m.value) for m in client.get_metric_history(run_id, key)]
    assert len({s for s, _ in steps}) == len(steps), f"{key} logged twice at a step: {steps}"
    return dict(steps)


def tensorboard_scalars(run_dir: Path) -> dict[str, dict[int, float]]:
    """tag -> step -> value, read by TensorBoard's own reader; fails on a step shown twice."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    reader = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"scalars": 0})
    reader.Reload()
    scalars = {}
    for tag in reader.Tags()["scalars"]:
        steps = [e.step for e in reader.Scalars(tag)]
        assert len(set(steps)) == len(steps), f"{tag} shown twice at a step: {steps}"
        scalars[tag] = {e.step: e.value for e in reader.Scalars(tag)}
    return scalars


def assert_no_secret(run_dir: Path, output: str) -> None:
    for secret in (TOKEN, PASSWORD):
        assert secret not in output
        for path in run_dir.rglob("*"):
            assert not path.is_file() or secret.encode() not in path.read_bytes(), path


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    running = MlflowServer(tmp_path_factory.mktemp("mlflow")).start()
    yield running
    running.stop()


def test_every_tracker_gets_the_same_metrics_from_a_two_process_run(server: MlflowServer,
                                                                     tmp_path: Path) -> None:
    run_dir = tmp_path / "run"  # credentials in the URI too (the test server ignores them)
    with_user = server.uri.replace("//", f"//someone:{PASSWORD}@")
    out = finish(launch(run_dir, with_user, *settings(8, *ALL)))
    found = events(run_dir)
    losses = {e.step: e.loss for e in of_kind(found, TrainLogged)}
    assert sorted(losses) == list(range(1, 9))
    runs = MlflowRuns.read(run_dir / "logs" / "mlflow-run.json")
    client = server.client()
    run = client.get_run(runs.server_run_id)
    assert run.info.status == "FINISHED" and runs.server_uri == server.uri
    assert history(client, runs.server_run_id, "train/loss") == pytest.approx(losses, rel=1e-6)
    for evaluated in of_kind(found, Evaluated):
        for name, value in evaluated.metrics.items():
            got = history(client, runs.server_run_id, f"eval/{name}")
            assert got[evaluated.step] == pytest.approx(value, rel=1e-6)
    assert run.data.params["plan.world_size"] == "2"
    assert run.data.params["recipe.train.max_steps"] == "8"
    assert {a.path for a in client.list_artifacts(runs.server_run_id)} >= {"report.png",
                                                                            "summary.json"}
    # TensorBoard holds what the W&B offline run holds, key for key and step for step.
    wandb_rows = [flat(row) for path in find_run_files(run_dir / "wandb")
                  for row in read_history(path)]
    logged: dict[str, dict[int, float]] = {}
    for row in wandb_rows:
        for key, value in row.items():
            if not key.startswith("_") and isinstance(value, int | float):
                logged.setdefault(key, {})[int(row["_step"])] = value
    board = tensorboard_scalars(run_dir)
    assert set(board) == set(logged) >= {"train/loss", "train/lr", "eval/accuracy"}
    for key, steps in logged.items():
        assert board[key] == pytest.approx(steps, rel=1e-6), key
    saved = {p.name for p in (run_dir / "wandb").rglob("offline-run-*/files/*")}
    assert {"report.png", "summary.json"} <= saved
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    reader = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"images": 0})
    reader.Reload()
    assert reader.Tags()["images"] == ["report"]
    assert {"recipe/text_summary", "plan/text_summary", "summary/text_summary"} <= set(
        reader.Tags()["tensors"])
    assert_no_secret(run_dir, out)


def flat(row: dict, prefix: str = "") -> dict:
    """A W&B history row with its nested keys (`train` -> `loss`) as `train/loss`."""
    out = {}
    for key, value in row.items():
        if isinstance(value, dict):
            out.update(flat(value, f"{prefix}{key}/"))
        else:
            out[f"{prefix}{key}"] = value
    return out


def test_a_run_killed_and_resumed_continues_its_mlflow_run(server: MlflowServer,
                                                           tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    args = settings(12, "--set", "train.save_every=5", "--set",
                    'tracking.to=["mlflow","tensorboard"]')
    first = launch(run_dir, server.uri, *args)
    wait_for_event(run_dir, lambda e: isinstance(e, TrainLogged) and e.step >= 7, first)
    kill_everything(run_dir, first)
    before = MlflowRuns.read(run_dir / "logs" / "mlflow-run.json")
    logged_before = history(server.client(), before.server_run_id, "train/loss")
    assert max(logged_before) >= 7  # steps 6 and 7 come again after the checkpoint of step 5
    out = finish(launch(run_dir, server.uri, *args, "--resume"))
    after = MlflowRuns.read(run_dir / "logs" / "mlflow-run.json")
    assert after == before
    client = server.client()
    runs = client.search_runs([client.get_experiment_by_name("quickstart").experiment_id],
                              f"tags.sft_launch.run_folder = '{run_dir.resolve()}'")
    assert [r.info.run_id for r in runs] == [before.server_run_id]
    losses = {e.step: e.loss for e in of_kind(events(run_dir), TrainLogged)}
    assert sorted(history(client, before.server_run_id, "train/loss")) == list(range(1, 13))
    assert sorted(tensorboard_scalars(run_dir)["train/loss"]) == list(range(1, 13))
    assert history(client, before.server_run_id, "train/loss") == pytest.approx(losses, rel=1e-6)
    assert_no_secret(run_dir, out)


def test_a_run_that_crashes_ends_failed_in_mlflow(server: MlflowServer, tmp_path: Path) -> None:
    """A worker that crashes (its checkpoint folder replaced by a file: the save raises, and
    torch's CheckpointException is not an Exception) leaves its MLflow run FAILED, on the server
    and in the local store, not RUNNING for ever."""
    run_dir = tmp_path / "run"
    proc = launch(run_dir, server.uri, *settings(12, "--set", "train.save_every=10", "--set",
                                                 'tracking.to=["mlflow"]'))
    wait_for_event(run_dir, lambda e: isinstance(e, TrainLogged) and e.step >= 2, proc)
    shutil.rmtree(run_dir / "checkpoints", ignore_errors=True)
    (run_dir / "checkpoints").write_text("not a folder\n")
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 1, out
    runs = MlflowRuns.read(RunFolder(run_dir).mlflow_run)
    assert server.client().get_run(runs.server_run_id).info.status == "FAILED"
    assert local_client(RunFolder(run_dir)).get_run(runs.local_run_id).info.status == "FAILED"


def test_a_server_that_dies_mid_run_gets_everything_from_sync(tmp_path: Path) -> None:
    server = MlflowServer(tmp_path / "mlflow").start()
    run_dir = tmp_path / "run"
    try:
        proc = launch(run_dir, server.uri, *settings(12, "--set", 'tracking.to=["mlflow"]'))
        wait_for_event(run_dir, lambda e: isinstance(e, TrainLogged) and e.step >= 3, proc)
        server.stop()
        out = finish(proc)
        offline = of_kind(events(run_dir), TrackingOffline)
        assert len(offline) == 1 and offline[0].tracker == "MLflow", out
        assert f"sft-launch sync {run_dir}" in out
        local = MlflowRuns.read(run_dir / "logs" / "mlflow-run.json")
        store = local_client(RunFolder(run_dir))
        assert sorted(history(store, local.local_run_id, "train/loss")) == list(range(1, 13))
        server.start()
        missing = len(range(1, 13)) - len(history(server.client(), local.server_run_id,
                                                  "train/loss"))
        assert missing > 0
        synced = subprocess.run([*SFT_LAUNCH, *offline[0].sync_command.split()[1:]], cwd=REPO,
                                env=cli_env(), capture_output=True, text=True, timeout=300)
        assert synced.returncode == 0, synced.stderr
        assert "MLflow: 0 metric" not in synced.stderr, synced.stderr
        client = server.client()
        assert sorted(history(client, local.server_run_id, "train/loss")) == list(range(1, 13))
        assert client.get_run(local.server_run_id).info.status == "FINISHED"
        again = subprocess.run([*SFT_LAUNCH, "sync", str(run_dir)], cwd=REPO, env=cli_env(),
                               capture_output=True, text=True, timeout=300)
        assert again.returncode == 0 and "MLflow: 0 metric value(s) sent" in again.stderr
        assert sorted(history(client, local.server_run_id, "train/loss")) == list(range(1, 13))
        assert_no_secret(run_dir, out + synced.stdout + synced.stderr)
    finally:
        server.stop()


def test_a_sweep_is_one_parent_run_with_a_child_per_point(server: MlflowServer, run_cli,
                                                          tmp_path: Path) -> None:
    sweep_dir = tmp_path / "sweep"
    done = run_cli("sweep", QUICKSTART, "--backend", "local", "--procs-per-node", "1",
                   "--sweep-dir", sweep_dir, "--grid", "train.lr=1e-4,5e-4",
                   *settings(3, "--set", 'tracking.to=["mlflow"]')[3:],
                   env=cli_env(MLFLOW_TRACKING_URI=server.uri))
    assert done.returncode == 0, done.stderr
    client = server.client()
    experiment = client.get_experiment_by_name("quickstart").experiment_id
    parents = client.search_runs([experiment], f"tags.sft_launch.sweep = '{sweep_dir.name}'")
    assert len(parents) == 1
    children = client.search_runs([experiment],
                                  f"tags.mlflow.parentRunId = '{parents[0].info.run_id}'")
    assert sorted(c.data.params["recipe.train.lr"] for c in children) == ["0.0001", "0.0005"]
    for child in children:
        assert sorted(history(client, child.info.run_id, "train/loss")) == [1, 2, 3]


def test_a_server_never_reached_gets_the_whole_run_from_sync(server: MlflowServer, run_cli,
                                                             tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    closed = f"http://127.0.0.1:{free_port()}"
    out = finish(launch(run_dir, closed, *settings(4, "--set", 'tracking.to=["mlflow"]')))
    offline = of_kind(events(run_dir), TrackingOffline)
    assert len(offline) == 1 and "could not use the MLflow server" in offline[0].reason, out
    runs = MlflowRuns.read(run_dir / "logs" / "mlflow-run.json")
    assert runs.server_uri == closed and runs.server_run_id is None
    refused = run_cli("sync", run_dir)  # the run's own server is still down: one clear error
    assert refused.returncode == 1 and "Traceback" not in refused.stderr
    assert f"error: MLflow at {closed}" in refused.stderr
    synced = run_cli("sync", run_dir, "--mlflow-uri", server.uri)
    assert synced.returncode == 0, synced.stderr
    runs = MlflowRuns.read(run_dir / "logs" / "mlflow-run.json")
    client = server.client()
    run = client.get_run(runs.server_run_id)
    assert run.info.status == "FINISHED" and run.data.params["recipe.train.max_steps"] == "4"
    assert sorted(history(client, runs.server_run_id, "train/loss")) == [1, 2, 3, 4]
    assert {a.path for a in client.list_artifacts(runs.server_run_id)} >= {"report.png",
                                                                            "summary.json"}
