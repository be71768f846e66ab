"""The Slurm batch script: golden files, hostile recipe values, and the script run with stub
`srun`/`scontrol` (no cluster needed). Golden files: tests/helpers/golden.py."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from launcher.contract.errors import RecipeError, UsageError
from launcher.contract.run_folder import RunFolder
from launcher.contract.vocabulary import BackendKind
from launcher.planner.make import make_plan
from launcher.recipe.load import load_recipe
from launcher.recipe.schema import Recipe
from launcher.render.run_folder import write_run_folder
from tests.helpers.golden import CPU_RECIPE, GOLDEN, PYTHON, SLURM_CASES, job_script

JOB_ID = 4242
HOSTILE = "$(touch${IFS}pwned-a);`touch${IFS}pwned-b`&&touch${IFS}pwned-c"

def recipe_from(tmp_path: Path, text: str) -> Recipe:
    path = tmp_path / "recipe.toml"
    path.write_text(text)
    return load_recipe(path)


def render(tmp_path: Path, recipe: Recipe, run_dir: Path | None = None,
           python: str = PYTHON) -> RunFolder:
    plan = make_plan(recipe, recipe_file=str(tmp_path / "recipe.toml"), backend=BackendKind.SLURM,
                     gpus_here=0)
    return write_run_folder(run_dir or tmp_path / "run", recipe, plan, python=python)


@pytest.mark.parametrize("golden", SLURM_CASES)
def test_job_script_matches_golden(golden: str, tmp_path: Path) -> None:
    script, path = job_script(golden, tmp_path)
    assert script == (GOLDEN / golden).read_text(), (
        f"{golden} differs from its golden file: `make golden`, then review the diff")
    assert ("--deepspeed_multinode_launcher standard" in script) == ("zero3" in
                                                                     SLURM_CASES[golden][0])
    subprocess.run(["bash", "-n", path], check=True)


def test_local_runs_get_no_job_script(tmp_path: Path) -> None:
    recipe = recipe_from(tmp_path, CPU_RECIPE)
    plan = make_plan(recipe, recipe_file=str(tmp_path / "recipe.toml"), backend=BackendKind.LOCAL,
                     gpus_here=0)
    folder = write_run_folder(tmp_path / "run", recipe, plan, python=PYTHON)
    assert not folder.job_script.exists()


@pytest.mark.parametrize("key", ["partition", "account", "qos", "time", "mem"])
@pytest.mark.parametrize("value", ["$(touch /tmp/pwned)", "a b", "a\nb", "a#b", 'a"b', "a'b"])
def test_unsafe_sbatch_values_are_refused_before_anything_is_written(
        key: str, value: str, tmp_path: Path) -> None:
    recipe = recipe_from(tmp_path, CPU_RECIPE)
    setattr(recipe.slurm, key, value)
    with pytest.raises(RecipeError) as err:
        render(tmp_path, recipe)
    assert err.value.key == f"slurm.{key}"
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("name", ["run with space", "run#1", "run%j", "run'q", 'run"q'])
def test_run_dir_that_sbatch_cannot_hold_is_refused(name: str, tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="--run-dir"):
        render(tmp_path, recipe_from(tmp_path, CPU_RECIPE), run_dir=tmp_path / name)
    assert not (tmp_path / name).exists()


def test_hostile_name_is_cut_down_to_a_safe_job_name(tmp_path: Path) -> None:
    recipe = recipe_from(tmp_path, CPU_RECIPE)
    # The schema refuses such a name; the renderer must be safe on its own too.
    recipe = recipe.model_copy(update={"name": 'x$(touch /tmp/pwned)`id`"\'\nrm -rf /'})
    script = render(tmp_path, recipe).job_script.read_text()
    assert "#SBATCH --job-name=x__touch__tmp_pwned__id____rm_-rf__\n" in script
    assert "touch /tmp/pwned" not in script and "`id`" not in script


# --- the rendered script, run by bash with stub Slurm commands -------------------------------

STUB_SCONTROL = """\
#!/usr/bin/env bash
case "$1 $2" in
  "show hostnames") printf 'n1\\nn2\\n' ;;
  *) echo "$*" >> "$STUB_DIR/scontrol.calls" ;;
esac
"""
# Runs the srun command line's `bash -c ...` once per node, as Slurm would on each node.
STUB_SRUN = """\
#!/usr/bin/env bash
printf '%s\\n' "$@" > "$STUB_DIR/srun.args"
while [ "$1" != bash ]; do shift; done
touch "$STUB_DIR/srun.started"
[ -z "${STUB_SLEEP:-}" ] || sleep "$STUB_SLEEP"
for node in 0 1; do SLURM_NODEID=$node "$@" || exit $?; done
exit "${STUB_EXIT:-0}"
"""
# Stands in for the venv's python: records its arguments and environment per node; as the
# requeue decider (`-m launcher.backends.requeue`) it answers $STUB_DECISION.
STUB_PYTHON = """\
#!/usr/bin/env bash
if [ "$2" = launcher.backends.requeue ]; then
  printf '%s\\n' "$@" > "$STUB_DIR/decider.args"; exit "${STUB_DECISION:-0}"
fi
printf '%s\\n' "$@" > "$STUB_DIR/node-$SLURM_NODEID.args"
env > "$STUB_DIR/node-$SLURM_NODEID.env"
"""
STUB_SCANCEL = """\
#!/usr/bin/env bash
echo "$*" >> "$STUB_DIR/scancel.calls"
"""


@pytest.fixture
def stubbed(tmp_path: Path) -> dict[str, Path]:
    """Stub srun/scontrol on PATH and a stub python in a folder with a hostile name."""
    bin_dir, stub_dir = tmp_path / "bin", tmp_path / "calls"
    python = tmp_path / f"py {HOSTILE}" / "python"
    for path, text in ((bin_dir / "scontrol", STUB_SCONTROL), (bin_dir / "srun", STUB_SRUN),
                       (bin_dir / "scancel", STUB_SCANCEL), (python, STUB_PYTHON)):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        path.chmod(0o755)
    stub_dir.mkdir()
    return {"bin": bin_dir, "calls": stub_dir, "python": python}


def two_node_folder(tmp_path: Path, python: Path) -> RunFolder:
    recipe = recipe_from(tmp_path, CPU_RECIPE.replace("procs_per_node = 2", "nodes = 2"))
    recipe = recipe.model_copy(update={"name": f"name{HOSTILE}\n{HOSTILE}"})  # past the schema
    return render(tmp_path, recipe, run_dir=tmp_path / f"run{HOSTILE}", python=str(python))


def job_env(stubbed: dict[str, Path], **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "WANDB_"))}
    env.update(PATH=f"{stubbed['bin']}:{env['PATH']}", STUB_DIR=str(stubbed["calls"]),
               SLURM_JOB_ID=str(JOB_ID), SLURM_JOB_NODELIST="n[1-2]",
               WANDB_API_KEY="secret-key-never-in-files", **extra)
    return env


def assert_nothing_executed(tmp_path: Path) -> None:
    found = [p for p in tmp_path.rglob("pwned*")] + list(Path.cwd().glob("pwned*"))
    assert not found, f"a recipe value ran as shell: {found}"


def node_args(stubbed: dict[str, Path], node: int) -> list[str]:
    return (stubbed["calls"] / f"node-{node}.args").read_text().splitlines()


def test_script_starts_one_launcher_per_node_with_its_own_rank(tmp_path: Path,
                                                               stubbed: dict[str, Path]) -> None:
    folder = two_node_folder(tmp_path, stubbed["python"])
    subprocess.run(["bash", folder.job_script], env=job_env(stubbed), check=True,
                   cwd=tmp_path, timeout=30)
    port = str(20000 + JOB_ID % 20000)
    for node in (0, 1):
        assert node_args(stubbed, node) == [
            "-m", "launcher.worker.supervisor", ".", "--", "--config_file", "accelerate.yaml",
            "--machine_rank", str(node), "--main_process_ip", "n1", "--main_process_port", port]
        env = dict(line.split("=", 1) for line in
                   (stubbed["calls"] / f"node-{node}.env").read_text().splitlines() if "=" in line)
        assert env["WANDB_MODE"] == "offline"
        assert Path(env["WANDB_DIR"]) == folder.path.resolve()
        assert env["OMP_NUM_THREADS"].isdigit()
    srun = (stubbed["calls"] / "srun.args").read_text().splitlines()
    assert "--kill-on-bad-exit=1" in srun and "--ntasks-per-node=1" in srun
    assert_nothing_executed(tmp_path)
    for path in folder.path.rglob("*"):
        assert not path.is_file() or b"secret-key" not in path.read_bytes(), path


def test_rerun_after_requeue_resumes(tmp_path: Path, stubbed: dict[str, Path]) -> None:
    folder = two_node_folder(tmp_path, stubbed["python"])
    subprocess.run(["bash", folder.job_script], env=job_env(stubbed, SLURM_RESTART_COUNT="1"),
                   check=True, cwd=tmp_path, timeout=30)
    for node in (0, 1):
        assert node_args(stubbed, node)[:4] == ["-m", "launcher.worker.supervisor", ".",
                                                "--resume"]


def usr1_during_srun(tmp_path: Path, stubbed: dict[str, Path],
                     decision: str) -> subprocess.CompletedProcess:
    """USR1 to the batch shell while srun (2 s, then exit 7) runs; the decider answers."""
    folder = two_node_folder(tmp_path, stubbed["python"])
    env = job_env(stubbed, STUB_SLEEP="2", STUB_EXIT="7", STUB_DECISION=decision)
    proc = subprocess.Popen(["bash", folder.job_script], env=env, cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 20
    while not (stubbed["calls"] / "srun.started").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGUSR1)
    output, _ = proc.communicate(timeout=30)
    assert "USR1 received: every worker checkpoints and stops" in output
    # forwarded to every process of the job's steps (the launchers ignore it), srun awaited
    assert (stubbed["calls"] / "scancel.calls").read_text() == f"--signal=USR1 {JOB_ID}\n"
    assert (stubbed["calls"] / "node-1.args").exists()
    assert (stubbed["calls"] / "decider.args").read_text().split() == [
        "-m", "launcher.backends.requeue", ".", "--signal", "USR1"]
    return subprocess.CompletedProcess(proc.args, proc.returncode, output)


def test_usr1_checkpoints_then_requeues_when_the_decider_says_so(
        tmp_path: Path, stubbed: dict[str, Path]) -> None:
    done = usr1_during_srun(tmp_path, stubbed, decision="0")
    assert (stubbed["calls"] / "scontrol.calls").read_text() == f"requeue {JOB_ID}\n"
    assert done.returncode == 0, done.stdout


def test_usr1_ends_the_job_when_the_decider_says_so(tmp_path: Path,
                                                    stubbed: dict[str, Path]) -> None:
    done = usr1_during_srun(tmp_path, stubbed, decision="1")
    assert not (stubbed["calls"] / "scontrol.calls").exists()  # never requeued
    assert done.returncode == 1, done.stdout


def test_the_launchers_start_ignoring_usr1(tmp_path: Path,
                                                      stubbed: dict[str, Path]) -> None:
    folder = two_node_folder(tmp_path, stubbed["python"])
    subprocess.run(["bash", folder.job_script], env=job_env(stubbed), check=True, cwd=tmp_path,
                   timeout=30)
    command = (stubbed["calls"] / "srun.args").read_text()
    assert "trap \"\" USR1; exec \"$SFT_PYTHON\" -m launcher.worker.supervisor" in command


def test_setup_lines_run_before_the_launch(tmp_path: Path, stubbed: dict[str, Path]) -> None:
    recipe = recipe_from(tmp_path, CPU_RECIPE)
    recipe.slurm.setup = [f"echo setup-ran > {tmp_path}/setup.txt"]
    folder = render(tmp_path, recipe, python=str(stubbed["python"]))
    subprocess.run(["bash", folder.job_script], env=job_env(stubbed), check=True, timeout=30)
    assert (tmp_path / "setup.txt").read_text() == "setup-ran\n"
