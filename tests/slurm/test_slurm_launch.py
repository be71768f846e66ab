"""`sft-launch` against the real test cluster: multi-node runs, equality with a local run, two
jobs at once, status/logs/cancel, refused submissions, hostile values, DeepSpeed across nodes.

Every job uses the shortened quickstart (~6 optimizer steps); `sft-launch` always runs as a
subprocess with the cluster's environment.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest

from launcher.contract.events import TrainLogged
from tests.helpers.run_folder import events, job, rank_reports, summary
from tests.slurm.jobs import (
    HOSTILE,
    NO_PREFLIGHT,
    NO_TRACKING,
    QUICKSTART,
    REPO,
    SHORT,
    TWO_NODES,
    assert_completed_run,
    assert_ok,
    ended,
    job_log,
    sft,
    sft_popen,
    signal_batch,
    status,
    wait_for,
)

pytestmark = pytest.mark.slurm

@pytest.fixture(scope="module")
def two_node(env: dict[str, str], tmp_path_factory: pytest.TempPathFactory,
             ) -> tuple[Path, subprocess.CompletedProcess]:
    run_dir = tmp_path_factory.mktemp("slurm-2") / "run"
    result = sft(env, QUICKSTART, *TWO_NODES, "--run-dir", run_dir, "--wait", *SHORT)
    assert_ok(result)
    return run_dir, result


def test_two_nodes_wait_completes(two_node) -> None:
    run_dir, result = two_node
    assert_completed_run(run_dir, world=2)
    job_id = job(run_dir).job_id
    for needle in (str(run_dir), f"submitted Slurm job {job_id}", "sft-launch status",
                   "sft-launch logs", "final metrics"):
        assert needle in result.stderr, needle


def test_status_and_logs_of_a_finished_job(env, two_node) -> None:
    run_dir, _ = two_node
    shown = status(env, run_dir)
    assert shown.state.startswith("COMPLETED")
    assert shown.nodes.startswith("n[1-2]")
    assert shown.step.startswith("6/6, loss ")
    assert "accuracy" in shown.eval
    # bytes, split at "\n" only: progress bars print "\r" inside a line
    everything = sft(env, "logs", run_dir, text=False)
    assert everything.returncode == 0, everything.stderr
    assert b"sft-launch: job" in everything.stdout  # the batch shell's own line
    node1 = sft(env, "logs", run_dir, "--node", "1", text=False)
    assert node1.returncode == 0, node1.stderr
    lines = node1.stdout.split(b"\n")[:-1]
    expected = [line[3:] for line in everything.stdout.split(b"\n") if line.startswith(b"1: ")]
    assert lines and lines == expected
    assert sft(env, "logs", run_dir, "--node", "2").returncode == 2


def test_two_node_slurm_run_equals_a_local_two_process_run(env, two_node, tmp_path) -> None:
    run_dir, _ = two_node
    local = tmp_path / "local"
    assert_ok(sft(env, QUICKSTART, "--backend", "local", "--run-dir", local, *SHORT))
    slurm_loss = summary(run_dir).eval["loss"]
    local_loss = summary(local).eval["loss"]
    assert summary(local).world_size == 2
    assert slurm_loss == pytest.approx(local_loss, abs=1e-4)


def test_four_nodes(env, tmp_path) -> None:
    run_dir = tmp_path / "run"
    assert_ok(sft(env, QUICKSTART, "--nodes", 4, "--procs-per-node", 1, "--run-dir", run_dir,
                  "--wait", *SHORT))
    assert_completed_run(run_dir, world=4)


def test_two_jobs_on_the_same_nodes_at_once(env, tmp_path) -> None:
    smaller = ["--set", "data.max_train_samples=96", "--set", "data.max_eval_samples=32",
               *NO_TRACKING]
    dirs = [tmp_path / "a", tmp_path / "b"]
    procs = [sft_popen(env, QUICKSTART, *TWO_NODES, "--run-dir", d, "--wait", *SHORT, *smaller)
             for d in dirs]
    for proc in procs:
        out, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, out + err
    ports = [re.search(r"rendezvous n1:(\d+)", job_log(d)).group(1) for d in dirs]
    assert ports[0] != ports[1]
    spans = [(events(d)[0].time, events(d)[-1].time) for d in dirs]
    assert max(s for s, _ in spans) < min(e for _, e in spans), f"jobs did not overlap: {spans}"
    assert [status(env, d).nodes.split()[0] for d in dirs] == ["n[1-2]", "n[1-2]"]


def test_status_logs_and_cancel_of_a_running_job(env, tmp_path) -> None:
    run_dir = tmp_path / "run"
    assert_ok(sft(env, QUICKSTART, *TWO_NODES, "--run-dir", run_dir, *SHORT, *NO_PREFLIGHT,
                  "--set", "data.max_train_samples=4000"))
    follower = sft_popen(env, "logs", run_dir, "--follow")
    try:
        wait_for(lambda: any(isinstance(e, TrainLogged) for e in events(run_dir)), 300,
                 "the first training step")
        shown = status(env, run_dir)
        assert shown.state == "RUNNING" and shown.nodes.startswith("n[1-2]")
        assert re.fullmatch(r"\d+/125, loss \d\.\d{4}", shown.step), shown
        cancelled = sft(env, "cancel", run_dir, timeout=120)
        assert_ok(cancelled)
        assert "CANCELLED" in cancelled.stderr
        out, err = follower.communicate(timeout=60)  # --follow stops when the job ends
    finally:
        follower.kill()
    assert follower.returncode == 0, err
    assert "sft-launch: job" in out and "\n0: " in out and "\n1: " in out
    assert status(env, run_dir).state.startswith("CANCELLED")
    for name in ("recipe.toml", "plan.json", "accelerate.yaml", "job.sbatch", "job.json",
                 "logs/events.jsonl"):
        assert (run_dir / name).is_file(), name
    again = sft(env, "cancel", run_dir)
    assert again.returncode == 2 and "already ended" in again.stderr


def test_failed_job_fails_the_wait(env, tmp_path) -> None:
    run_dir = tmp_path / "run"
    setup = json.dumps(["echo setup-broke >&2", "exit 3"])  # the job fails before training
    result = sft(env, QUICKSTART, "--nodes", 1, "--procs-per-node", 1, "--run-dir", run_dir,
                 "--wait", *SHORT, "--set", f"slurm.setup={setup}")
    job_id = job(run_dir).job_id
    assert result.returncode == 1, result.stdout + result.stderr
    assert f"error: job {job_id} ended FAILED (exit code 3:0), no summary.json" in result.stderr
    assert "setup-broke" in result.stderr  # the log's tail is shown
    assert status(env, run_dir).state == "FAILED (exit code 3:0)"


@pytest.mark.parametrize(("args", "slurm_says"), [
    (["--set", "slurm.partition=nope"], "Invalid partition name specified"),
    (["--nodes", "8", "--procs-per-node", "1"], "requested 8 node(s)"),
    (["--set", 'slurm.time="00:45:00"'], "PartitionTimeLimit"),
], ids=["unknown-partition", "too-many-nodes", "time-above-max"])
def test_refused_submission(env, tmp_path, args: list[str], slurm_says: str) -> None:
    run_dir = tmp_path / "run"
    result = sft(env, QUICKSTART, "--run-dir", run_dir, *SHORT, *args, timeout=120)
    output = result.stdout + result.stderr
    assert result.returncode == 2, output
    assert "Traceback" not in output and output.count("error:") == 1, output
    assert slurm_says in output and str(run_dir) in output
    record = job(run_dir)
    assert record.submitted is False and slurm_says in record.error
    assert (run_dir / "job.sbatch").is_file() and (run_dir / "plan.json").is_file()
    assert status(env, run_dir).state.startswith("NOT SUBMITTED")
    if job_id := record.cancelled_job_id:  # accepted, then cancelled: never runs
        state = subprocess.run(["scontrol", "show", "job", "-o", job_id], env=env,
                               capture_output=True, text=True).stdout
        assert "JobState=CANCELLED" in state


def test_hostile_values_never_run_as_shell_deepspeed_across_nodes(env, tmp_path) -> None:
    """Hostile recipe values never run as shell; the same 2-node job runs ZeRO-2 with
    DeepSpeed's standard launcher (no pdsh/ssh, no .deepspeed_env holding the environment)."""
    marker = tmp_path / "pwned"
    words = f"$(touch {marker}-1)`touch {marker}-2`';touch {marker}-3;'\"\\"
    run_dir = tmp_path / f"run{HOSTILE}"
    refused = sft(env, QUICKSTART, "--run-dir", tmp_path / "other", *SHORT,
                  "--set", f"slurm.partition={json.dumps(words)}")
    assert refused.returncode == 2 and "slurm.partition" in refused.stderr, refused.stderr
    assert not (tmp_path / "other").exists()
    refused = sft(env, QUICKSTART, "--run-dir", tmp_path / "other", *SHORT,
                  "--set", f"name={json.dumps(words)}")
    assert refused.returncode == 2 and "name" in refused.stderr, refused.stderr
    assert not (tmp_path / "other").exists()
    result = sft(env, QUICKSTART, *TWO_NODES, "--run-dir", run_dir, "--wait", *SHORT,
                 "--set", "data.max_train_samples=64", "--set", "data.max_eval_samples=32",
                 "--set", "distributed.strategy=zero2",
                 "--set", f"tracking.run_name={json.dumps(words)}",
                 "--set", f"slurm.extra_sbatch={json.dumps([f'--comment={HOSTILE}'])}")
    assert_ok(result)
    assert (run_dir / "summary.json").is_file()
    ran = list(tmp_path.rglob("pwned*")) + list(REPO.glob("pwned*"))
    assert not ran, f"a recipe value ran as shell: {ran}"
    assert_completed_run(run_dir, world=2)  # no .deepspeed_env: no pdsh/ssh launcher
    assert "--deepspeed_multinode_launcher standard" in (run_dir / "job.sbatch").read_text()
    assert {r.strategy for r in rank_reports(run_dir)} == {"zero2"}


def test_image_classification_on_two_nodes_requeued_midway(env, slurm_cluster,
                                                          tmp_path) -> None:
    """The decoded-file pipeline on Slurm: images decoded and augmented by DataLoader workers on
    each node, the tiny EfficientNet's ranks in one process group across the nodes, the plan's
    memory measured by the probe before submission; Slurm's time-limit warning midway: the job
    checkpoints, requeues itself, resumes and trains as a local run that was never interrupted
    (augmentation is a pure function of the step, dropout's RNG restored): the same loss at
    every step, weights equal but for denormal noise in batch-norm statistics (<1e-15)."""
    from safetensors.torch import load_file

    from launcher.contract.events import Started, Stopped
    from launcher.contract.plan import Plan
    from launcher.contract.run_folder import RunFolder
    from tests.helpers.image_folders import HYMENOPTERA, copy_images
    from tests.helpers.processes import wait_for_event
    from tests.helpers.run_folder import events, of_kind
    from tests.helpers.tiny_models import build_tiny_efficientnet

    model = build_tiny_efficientnet(tmp_path / "model")
    images = copy_images(HYMENOPTERA, tmp_path / "images", 0, 12)
    settings = ["--set", f"model.path='{model}'", "--set", f"data.train=['{images}']",
                "--set", "data.eval_fraction=0.25", "--set", "train.max_steps=40",
                "--set", "train.global_batch_size=8", "--set", "train.log_every=1",
                "--set", "data.loader_workers=1", "--quiet"]
    recipe = REPO / "recipes" / "image-ants-bees.toml"
    run_dir, reference = tmp_path / "run", tmp_path / "reference"
    assert_ok(sft(env, recipe, *TWO_NODES, "--run-dir", run_dir, *settings,
                  "--set", "tracking.mode=offline", "--set", 'slurm.time="00:10:00"',
                  "--set", "slurm.cpus_per_task=1"))
    wait_for_event(run_dir, lambda e: isinstance(e, TrainLogged) and e.step >= 2, timeout=300)
    signal_batch(slurm_cluster, run_dir, "USR1")
    assert ended(env, run_dir).startswith("COMPLETED")
    assert_ok(sft(env, recipe, "--backend", "local", "--procs-per-node", "2", "--run-dir",
                  reference, *settings, "--set", "tracking.mode=disabled"))
    assert_completed_run(run_dir, world=2, launches=2)
    stop = of_kind(events(run_dir), Stopped)[0]
    assert len(job(run_dir).requeues) == 1 and stop.step < 40
    assert [s.step for s in of_kind(events(run_dir), Started)] == [0, stop.step]
    assert summary(run_dir).steps == 40 and "accuracy" in summary(run_dir).eval
    losses = [[(e.step, e.loss) for e in of_kind(events(folder), TrainLogged)]
              for folder in (run_dir, reference)]
    assert losses[0] == losses[1] and len(losses[0]) == 40
    ours, theirs = (load_file(folder / "final" / "model.safetensors")
                    for folder in (run_dir, reference))
    assert max((ours[k] - theirs[k]).abs().max().item() for k in theirs) < 1e-12
    memory = Plan.read(RunFolder(run_dir).plan).memory
    assert memory is not None and memory.estimates[0].activations_bytes > 0
