"""Write the run folder: the resolved recipe, plan.json and the rendered launch files."""

from __future__ import annotations

import sys
import zlib
from pathlib import Path

import tomli_w

from launcher.contract.plan import Plan
from launcher.contract.run_folder import RunFolder
from launcher.contract.vocabulary import BackendKind, Offload, Strategy
from launcher.planner.memory import deepspeed_buckets
from launcher.recipe.schema import Recipe
from launcher.render.sbatch import render_job_script, render_prepare_script
from launcher.render.templates import environment

ACCELERATE_TEMPLATE = {Strategy.DDP: "ddp.yaml.j2", Strategy.FSDP: "fsdp.yaml.j2",
                       Strategy.ZERO2: "zero.yaml.j2", Strategy.ZERO3: "zero.yaml.j2"}


def default_port(run_dir: Path) -> int:
    """A port derived from the run folder's name, so two local runs do not collide."""
    return 20000 + zlib.crc32(run_dir.resolve().name.encode()) % 20000


def recipe_toml(recipe: Recipe, source: str) -> str:
    """The fully resolved recipe (extends merged, --set applied, every default written out)."""
    data = recipe.model_dump(mode="json", exclude_none=True, exclude={"extends"})
    header = (f"# Resolved by sft-launch from {source}: extends merged, --set applied,\n"
              "# every default written out. The workers read this file.\n\n")
    return header + tomli_w.dumps(data)


def write_run_folder(run_dir: Path, recipe: Recipe, plan: Plan,
                     python: str = sys.executable) -> RunFolder:
    """Render every file of the run folder; returns its layout."""
    folder = RunFolder(run_dir)
    env = environment()
    zero_stage = plan.strategy.zero_stage
    context = {
        "plan": plan,
        "recipe": recipe,
        "run_dir": str(run_dir.resolve()),
        "python": python,
        "port": default_port(run_dir),
        "zero_stage": zero_stage,
        "single_process": plan.world_size == 1 and plan.strategy is Strategy.DDP,
        "offload_optimizer": Offload.OPTIMIZER in plan.offload and zero_stage == 3,
        "offload_params": Offload.PARAMS in plan.offload and zero_stage == 3,
        "buckets": (deepspeed_buckets(plan.memory.hidden_size, plan.memory.block_parameters)
                    if plan.memory else {}),
    }
    job_script = render_job_script(env, context) if plan.backend is BackendKind.SLURM else None
    for sub in (folder.path, folder.logs, folder.checkpoints):
        sub.mkdir(parents=True, exist_ok=True)
    folder.recipe.write_text(recipe_toml(recipe, plan.recipe_file))
    plan.write(folder.plan)
    folder.accelerate.write_text(env.get_template(ACCELERATE_TEMPLATE[plan.strategy])
                                 .render(context))
    if zero_stage:
        folder.deepspeed.write_text(env.get_template("deepspeed.json.j2").render(context))
    if plan.backend is BackendKind.LOCAL:
        folder.launch_script.write_text(env.get_template("launch.sh.j2").render(context))
        folder.launch_script.chmod(0o755)
    if job_script is not None:
        folder.job_script.write_text(job_script)
        folder.prepare_script.unlink(missing_ok=True)  # a resumed run's, if it no longer has one
        if recipe.slurm.prep_job:
            folder.prepare_script.write_text(render_prepare_script(env, context))
    return folder
