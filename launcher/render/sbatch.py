"""Render `job.sbatch`: the Slurm batch script of a run (one launcher per node)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import jinja2

from launcher.contract.errors import RecipeError, UsageError
from launcher.contract.plan import Plan
from launcher.contract.preflight import RENDEZVOUS_TIMEOUT_S
from launcher.recipe.schema import Recipe
from launcher.render.templates import environment

# `#SBATCH` lines are not shell, but sbatch splits them on whitespace, strips quotes and
# backslashes and cuts them at '#'; '%' starts a file-name pattern in paths. Values that reach
# such a line may hold none of these: they are checked here, never quoted.
SBATCH_VALUE = re.compile(r"[A-Za-z0-9_.,:+=@/-]+")
SBATCH_PATH_UNSAFE = re.compile(r"[\s\"'\\#%]|[\x00-\x1f\x7f]")


def render_job_script(env: jinja2.Environment, context: dict[str, Any]) -> str:
    """The batch script for `context` (run_folder's template context), after safety checks."""
    recipe: Recipe = context["recipe"]
    plan: Plan = context["plan"]
    _check_sbatch_values(recipe, plan)
    check_run_dir(context["run_dir"])
    slurm = recipe.slurm
    return env.get_template("job.sbatch.j2").render(
        context,
        slurm=slurm,
        job_name=job_name(plan.recipe_name),
        cpus_per_task=slurm.cpus_per_task or plan.procs_per_node * plan.threads_per_proc,
        deepspeed=plan.strategy.uses_deepspeed,
        preflight=slurm.preflight and plan.nodes > 1,
        rendezvous_timeout_s=RENDEZVOUS_TIMEOUT_S,
    )


def render_prepare_script(env: jinja2.Environment, context: dict[str, Any]) -> str:
    """The data preparation job of `context`'s run (one node's CPUs; slurm.prep_*); its values
    are checked by `render_job_script`, which renders first."""
    recipe: Recipe = context["recipe"]
    plan: Plan = context["plan"]
    slurm = recipe.slurm
    return env.get_template("prepare.sbatch.j2").render(
        context, slurm=slurm, job_name=job_name(plan.recipe_name),
        partition=slurm.prep_partition or slurm.partition, mem=slurm.prep_mem or slurm.mem,
        cpus=slurm.prep_cpus or slurm.cpus_per_task or plan.procs_per_node * plan.threads_per_proc,
    )


def job_name(recipe_name: str) -> str:
    """The recipe name cut down to characters that are safe in `#SBATCH` and comment lines."""
    return re.sub(r"[^A-Za-z0-9_.+-]", "_", recipe_name)[:64] or "sft-launch"


def _check_sbatch_values(recipe: Recipe, plan: Plan) -> None:
    for key in ("partition", "account", "qos", "time", "mem", "prep_partition", "prep_mem",
                "prep_time"):
        value = getattr(recipe.slurm, key)
        if value is not None and not SBATCH_VALUE.fullmatch(value):
            raise RecipeError(plan.recipe_file, f"slurm.{key}",
                              f"{value!r} cannot go into an #SBATCH line",
                              "use letters, digits and _ . , : + = @ / - only")


def check_run_dir(run_dir: str) -> None:
    """A UsageError for a run folder that #SBATCH lines cannot hold."""
    if SBATCH_PATH_UNSAFE.search(run_dir):
        raise UsageError(f"run folder {run_dir!r}: a Slurm job's folder cannot contain spaces, "
                         "quotes, backslashes, '#' or '%' (#SBATCH lines cannot hold them); "
                         "choose another --run-dir")


def render_sweep_script(recipe: Recipe, plan: Plan, sweep_dir: Path, count: int,
                        max_parallel: int, sweep_name: str) -> str:
    """A sweep's job array: the resources of its points (all the same), task N running
    point-N/job.sbatch."""
    _check_sbatch_values(recipe, plan)
    check_run_dir(str(sweep_dir))
    slurm = recipe.slurm
    return environment().get_template("sweep.sbatch.j2").render(
        plan=plan, slurm=slurm, sweep_dir=str(sweep_dir), sweep_name=sweep_name,
        job_name=job_name(sweep_name), count=count, max_parallel=max_parallel,
        cpus_per_task=slurm.cpus_per_task or plan.procs_per_node * plan.threads_per_proc,
    )
