"""Elastic resume: a 2-process run stopped by a signal continues on 1 and on 4 processes, for
DDP, FSDP2 and ZeRO-3, with the same global batch: the same examples in the same steps, and the
eval loss of the 2-process run that was never interrupted (one DDP run: every strategy computes
the same steps, within float noise, as test_strategies.py shows)."""

from __future__ import annotations

import collections
import shutil
import signal
import subprocess
from pathlib import Path

import pytest

from launcher.contract.events import Stopped, TrainLogged
from launcher.contract.plan import WorldSpan
from launcher.contract.reports import SampleIds
from launcher.contract.run_folder import RunFolder
from launcher.contract.vocabulary import ExitCode
from tests.conftest import REPO, SFT_LAUNCH, cli_env
from tests.e2e.conftest import ALPACA
from tests.helpers.processes import wait_for_event
from tests.helpers.run_folder import events, of_kind, plan, summary

pytestmark = pytest.mark.slow
STEPS, GLOBAL_BATCH = 24, 8


def launch(run_dir: Path, model: Path, strategy: str, procs: int,
           *extra: str) -> subprocess.Popen:
    settings = [f"model.path='{model}'", f"distributed.strategy={strategy}",
                "data.max_train_samples=480", "data.max_length=128", "data.eval_fraction=0.1",
                f"train.max_steps={STEPS}", f"train.global_batch_size={GLOBAL_BATCH}",
                "train.log_every=1", "train.log_sample_ids=true", "tracking.mode=disabled",
                "train.generation_max_tokens=8"]  # samples generated on every rank, ZeRO-3 too
    return subprocess.Popen(
        [*SFT_LAUNCH, ALPACA, "--backend", "local", "--run-dir", run_dir, "--quiet",
         "--procs-per-node", str(procs), *(a for s in settings for a in ("--set", s)), *extra],
        cwd=REPO, env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def finish(proc: subprocess.Popen, code: int = 0) -> None:
    out, _ = proc.communicate(timeout=900)
    assert proc.returncode == code, out


def ids_by_step(run_dir: Path) -> dict[int, collections.Counter]:
    """The example ids every rank trained on, by step, over every launch of the folder."""
    folder, steps = RunFolder(run_dir), collections.defaultdict(collections.Counter)
    for rank in range(4):
        for line in SampleIds.read_lines(folder.sample_ids(rank)):
            steps[line.step].update(line.ids)
    return dict(steps)


@pytest.fixture(scope="module")
def reference(tiny_llama: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    run_dir = tmp_path_factory.mktemp("reference") / "run"
    finish(launch(run_dir, tiny_llama, "ddp", 2))
    return run_dir


@pytest.mark.parametrize("strategy", ["ddp", "fsdp", "zero3"])
def test_resume_on_another_number_of_processes(strategy: str, reference: Path,
                                               tiny_llama: Path, tmp_path: Path) -> None:
    stopped = tmp_path / "stopped"
    proc = launch(stopped, tiny_llama, strategy, 2)
    wait_for_event(stopped, lambda e: isinstance(e, TrainLogged) and e.step >= 3, proc)
    proc.send_signal(signal.SIGTERM)
    finish(proc, ExitCode.INTERRUPTED)
    stop = of_kind(events(stopped), Stopped)[0]
    assert 3 <= stop.step < STEPS and stop.checkpoint is not None
    expected_ids = ids_by_step(reference)
    assert sorted(expected_ids) == list(range(1, STEPS + 1))
    for procs in (1, 4):
        run_dir = tmp_path / f"resumed-on-{procs}"
        shutil.copytree(stopped, run_dir)
        finish(launch(run_dir, tiny_llama, strategy, procs, "--resume"))
        done = summary(run_dir)
        assert (done.steps, done.world_size) == (STEPS, procs)
        assert done.eval["loss"] == pytest.approx(summary(reference).eval["loss"], abs=1e-3)
        assert ids_by_step(run_dir) == expected_ids, "a step saw other examples"
        assert plan(run_dir).world_history == (WorldSpan(0, 1, 2), WorldSpan(stop.step, 1, procs))
        resumed = [e.step for e in of_kind(events(run_dir), TrainLogged)]
        assert resumed.count(stop.step + 1) == 1, "a step was redone"
