"""`sft-launch doctor`: run only the preflight of a planned run folder, here or on Slurm.

Here: the process layout of launch.sh (`accelerate launch` with the run's accelerate.yaml, or one
plain process), output in logs/preflight.log. On Slurm: a
`preflight.sbatch` that starts the preflight under srun like job.sbatch starts the workers,
submitted with `sbatch --wait`. Either way the answer is logs/preflight.json.
"""

from __future__ import annotations

import os
import subprocess
import sys

from launcher.contract.errors import LaunchError
from launcher.contract.plan import Plan
from launcher.contract.preflight import RENDEZVOUS_TIMEOUT_S, PreflightResult
from launcher.contract.records import ContractError
from launcher.contract.run_folder import RunFolder
from launcher.contract.vocabulary import BackendKind
from launcher.recipe.schema import Recipe
from launcher.render.run_folder import default_port
from launcher.render.sbatch import check_run_dir, job_name
from launcher.render.templates import environment

# The preflight gives up after 60 s without a complete process group; measuring takes seconds.
LOCAL_TIMEOUT_S = 240
SLURM_TIMEOUT_S = 3600  # queueing included


def preflight_command(plan: Plan, folder: RunFolder) -> list[str]:
    """What launch.sh would run, with the preflight in place of the worker."""
    worker = ["-m", "launcher.worker.preflight", "."]
    if plan.world_size == 1:
        return [sys.executable, *worker]
    port = os.environ.get("SFT_LAUNCH_PORT") or str(default_port(folder.path))
    return [sys.executable, "-m", "accelerate.commands.launch", "--config_file",
            "accelerate.yaml", "--main_process_port", port, "--rdzv_conf",
            f"timeout={RENDEZVOUS_TIMEOUT_S}", *worker]


def run_local(plan: Plan, folder: RunFolder) -> int:
    """Run the preflight's processes on this machine; their exit code."""
    env = {**os.environ, "OMP_NUM_THREADS": str(plan.threads_per_proc),
           "PYTHONUNBUFFERED": "1", "TOKENIZERS_PARALLELISM": "false"}
    folder.preflight.unlink(missing_ok=True)
    with folder.preflight_log.open("ab") as log:
        try:
            done = subprocess.run(preflight_command(plan, folder), cwd=folder.path, env=env,
                                  stdout=log, stderr=subprocess.STDOUT,
                                  stdin=subprocess.DEVNULL, timeout=LOCAL_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            raise LaunchError(f"the preflight did not end within {LOCAL_TIMEOUT_S} s; see "
                              f"{folder.preflight_log}") from None
    return done.returncode


def write_slurm_script(recipe: Recipe, plan: Plan, folder: RunFolder) -> None:
    """preflight.sbatch: the preflight on every node of the plan, as job.sbatch's srun."""
    run_dir = str(folder.path.resolve())
    check_run_dir(run_dir)
    slurm = recipe.slurm
    text = environment().get_template("preflight.sbatch.j2").render(
        plan=plan, slurm=slurm, run_dir=run_dir, python=sys.executable,
        job_name=job_name(plan.recipe_name), deepspeed=plan.strategy.uses_deepspeed,
        rendezvous_timeout_s=RENDEZVOUS_TIMEOUT_S,
        cpus_per_task=slurm.cpus_per_task or plan.procs_per_node * plan.threads_per_proc)
    folder.preflight_script.write_text(text, encoding="utf-8")


def run_slurm(recipe: Recipe, plan: Plan, folder: RunFolder) -> int:
    """Submit preflight.sbatch and wait for its end."""
    write_slurm_script(recipe, plan, folder)
    folder.preflight.unlink(missing_ok=True)
    try:
        done = subprocess.run(["sbatch", "--wait", folder.preflight_script.name],
                              cwd=folder.path, capture_output=True, text=True,
                              stdin=subprocess.DEVNULL, timeout=SLURM_TIMEOUT_S)
    except FileNotFoundError:
        raise LaunchError("`sbatch` not found: is Slurm installed on this machine?") from None
    except subprocess.TimeoutExpired:
        raise LaunchError(f"the preflight job did not end within {SLURM_TIMEOUT_S} s") from None
    return done.returncode


def doctor(recipe: Recipe, plan: Plan, folder: RunFolder) -> tuple[PreflightResult | None, int]:
    """Run the preflight; its result (None when it wrote none) and its exit code."""
    if plan.backend is BackendKind.SLURM:
        code = run_slurm(recipe, plan, folder)
    else:
        code = run_local(plan, folder)
    try:
        return PreflightResult.read_if_exists(folder.preflight), code
    except ContractError:
        return None, code
