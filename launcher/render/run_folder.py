"""Write the run folder: the only hand-over between the control plane and the workers."""

from __future__ import annotations

import shlex
import sys
import zlib
from dataclasses import dataclass
from pathlib import Path

import jinja2
import tomli_w

from launcher.plan.plan import Plan
from launcher.recipe.schema import Recipe
from launcher.render.sbatch import render_job_script

REPO_ROOT = Path(__file__).resolve().parents[2]
TEMPLATE_DIRS = [REPO_ROOT / "accelerate_configs", REPO_ROOT / "slurm", Path(__file__).parent]
ACCELERATE_TEMPLATE = {"ddp": "ddp.yaml.j2", "fsdp": "fsdp2.yaml.j2", "zero2": "zero.yaml.j2",
                       "zero3": "zero.yaml.j2"}
MIXED_PRECISION = {"fp32": "'no'", "bf16": "bf16", "fp16": "fp16"}


@dataclass(frozen=True)
class RunFolder:
    """Names of the files in a run folder, in one place."""

    path: Path

    @property
    def recipe(self) -> Path:
        return self.path / "recipe.toml"

    @property
    def plan(self) -> Path:
        return self.path / "plan.json"

    @property
    def accelerate(self) -> Path:
        return self.path / "accelerate.yaml"

    @property
    def deepspeed(self) -> Path:
        return self.path / "deepspeed.json"

    @property
    def launch_script(self) -> Path:
        return self.path / "launch.sh"

    @property
    def job_script(self) -> Path:
        return self.path / "job.sbatch"

    @property
    def logs(self) -> Path:
        return self.path / "logs"

    @property
    def events(self) -> Path:
        return self.path / "logs" / "events.jsonl"

    @property
    def checkpoints(self) -> Path:
        return self.path / "checkpoints"

    @property
    def final(self) -> Path:
        return self.path / "final"

    @property
    def summary(self) -> Path:
        return self.path / "summary.json"

    @property
    def predictions(self) -> Path:
        return self.path / "eval_predictions.jsonl"


def environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader([str(d) for d in TEMPLATE_DIRS]),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        autoescape=False,
    )
    env.filters["shquote"] = lambda value: shlex.quote(str(value))
    return env


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
    context = {
        "plan": plan,
        "recipe": recipe,
        "run_dir": str(run_dir.resolve()),
        "python": python,
        "port": default_port(run_dir),
        "mixed_precision": MIXED_PRECISION[plan.precision],
    }
    job_script = render_job_script(env, context) if plan.backend == "slurm" else None
    for sub in (folder.path, folder.logs, folder.checkpoints):
        sub.mkdir(parents=True, exist_ok=True)
    folder.recipe.write_text(recipe_toml(recipe, plan.recipe_file))
    folder.plan.write_text(plan.to_json())
    zero_stage = {"zero2": 2, "zero3": 3}.get(plan.strategy, 0)
    offload_optimizer = "optimizer" in plan.offload and zero_stage == 3
    offload_params = "params" in plan.offload and zero_stage == 3
    context.update(zero_stage=zero_stage, offload_optimizer=offload_optimizer,
                   offload_params=offload_params, offload=offload_optimizer or offload_params)
    folder.accelerate.write_text(env.get_template(ACCELERATE_TEMPLATE[plan.strategy])
                                 .render(context))
    if zero_stage:
        folder.deepspeed.write_text(env.get_template("deepspeed.json.j2").render(context))
    if plan.backend == "local":
        folder.launch_script.write_text(env.get_template("launch.sh.j2").render(context))
        folder.launch_script.chmod(0o755)
    if job_script is not None:
        folder.job_script.write_text(job_script)
    return folder
