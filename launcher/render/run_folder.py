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

REPO_ROOT = Path(__file__).resolve().parents[2]
TEMPLATE_DIRS = [REPO_ROOT / "accelerate_configs", REPO_ROOT / "slurm", Path(__file__).parent]
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
    def launch_script(self) -> Path:
        return self.path / "launch.sh"

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
    for sub in (folder.path, folder.logs, folder.checkpoints):
        sub.mkdir(parents=True, exist_ok=True)
    env = environment()
    context = {
        "plan": plan,
        "recipe": recipe,
        "run_dir": str(run_dir.resolve()),
        "python": python,
        "port": default_port(run_dir),
        "mixed_precision": MIXED_PRECISION[plan.precision],
    }
    folder.recipe.write_text(recipe_toml(recipe, plan.recipe_file))
    folder.plan.write_text(plan.to_json())
    folder.accelerate.write_text(env.get_template("ddp.yaml.j2").render(context))
    if plan.backend == "local":
        folder.launch_script.write_text(env.get_template("launch.sh.j2").render(context))
        folder.launch_script.chmod(0o755)
    return folder
