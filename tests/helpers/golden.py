"""Golden files (tests/golden/): exactly what a user gets in a run folder.

The tests compare the files rendered now with the golden ones, always; only `make golden`
(`python -m tests.helpers.golden`) rewrites them, to be reviewed in the diff like code.
"""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from unittest import mock

from launcher.contract.vocabulary import BackendKind
from launcher.planner import memory_plan
from launcher.planner.make import make_plan
from launcher.recipe.load import load_recipe
from launcher.render.run_folder import write_run_folder
from launcher.render.sbatch import render_sweep_script

REPO = Path(__file__).resolve().parents[2]
GOLDEN = REPO / "tests" / "golden"
TINY_LLAMA = REPO / "tests" / "fixtures" / "tiny-llama"
PYTHON = "/opt/venv/bin/python"
RUN_FOLDER_FILES = ("recipe.toml", "plan.json", "accelerate.yaml", "launch.sh")

GPU_RECIPE = """\
name = "llama-8b-sft"
[model]
path = "/models/llama-3-8b"
[task]
kind = "causal_lm"
[data]
train = "data/train.jsonl"
[train]
global_batch_size = 256
[distributed]
strategy = "zero3"
nodes = 4
procs_per_node = 4
[tracking]
mode = "online"
[slurm]
partition = "gpu"
account = "proj-42"
qos = "high"
time = "1-12:00:00"
gpus_per_node = 4
cpus_per_task = 32
mem = "480G"
signal_grace_s = 300
extra_sbatch = ["--constraint=a100", "--exclusive"]
setup = ["module load cuda/12.4", "source /opt/venv/bin/activate"]
"""
CPU_RECIPE = """\
[model]
path = "/models/minilm"
[task]
kind = "sequence_classification"
[data]
train = "data/train.tsv"
[distributed]
procs_per_node = 2
[tracking]
mode = "offline"
"""


SLURM_CASES = {"job-1node-cpu.sbatch": (CPU_RECIPE, 2), "job-4node-gpu.sbatch": (GPU_RECIPE, 32)}


@contextmanager
def this_machine(cpus: int) -> Iterator[None]:
    """Plan as on a machine with `cpus` cores, 24 GiB and no W&B key."""
    env = {k: v for k, v in os.environ.items() if k != "WANDB_API_KEY"}
    with mock.patch.object(os, "cpu_count", lambda: cpus), \
            mock.patch.object(memory_plan, "_host_memory", lambda: 24 * 2**30), \
            mock.patch.dict(os.environ, env, clear=True):
        yield


def local_run_folder(recipe_name: str, tmp: Path, *settings: str) -> dict[str, str]:
    """The golden files of a shipped recipe's local run folder (paths replaced by <...>)."""
    recipe_file = REPO / "recipes" / f"{recipe_name}.toml"
    # The tiny Llama is built by `make-tiny-model`; its config alone is a fixture.
    overrides = [f"model.path='{TINY_LLAMA}'"] if recipe_name == "alpaca-tiny-llama" else []
    overrides += settings
    with this_machine(cpus=2):
        recipe = load_recipe(recipe_file, overrides)
        plan = make_plan(recipe, recipe_file=str(recipe_file), backend=BackendKind.LOCAL,
                         gpus_here=0)
        folder = write_run_folder(tmp / "golden-run", recipe, plan, python=PYTHON)
    return {f"{recipe_name}/{name}": (folder.path / name).read_text()
            .replace(plan.model_path, "<MODEL>").replace(str(tmp), "<RUNS>")
            .replace(str(REPO), "<REPO>") for name in RUN_FOLDER_FILES}


def job_script(golden: str, tmp: Path, script: str = "job.sbatch") -> tuple[str, Path]:
    """A golden job.sbatch, or another `script` of the run folder (prepare.sbatch), its run
    folder path replaced by <RUN_DIR>, and the script itself."""
    text, cpus = SLURM_CASES[golden]
    (tmp / "recipe.toml").write_text(text)
    with this_machine(cpus):
        recipe = load_recipe(tmp / "recipe.toml")
        plan = make_plan(recipe, recipe_file=str(tmp / "recipe.toml"), backend=BackendKind.SLURM,
                         gpus_here=0)
        folder = write_run_folder(tmp / "run", recipe, plan, python=PYTHON)
    path = folder.path / script
    return path.read_text().replace(str(folder.path.resolve()), "<RUN_DIR>"), path


def sweep_script(tmp: Path) -> str:
    """The job array of a 6-point sweep of the GPU recipe, at most 2 tasks at a time."""
    (tmp / "recipe.toml").write_text(GPU_RECIPE)
    with this_machine(32):
        recipe = load_recipe(tmp / "recipe.toml")
        plan = make_plan(recipe, recipe_file=str(tmp / "recipe.toml"), backend=BackendKind.SLURM,
                         gpus_here=0)
    return render_sweep_script(recipe, plan, tmp / "sweep", 6, 2, "llama-8b-sft-sweep").replace(
        str(tmp / "sweep"), "<SWEEP_DIR>")


def rendered(tmp: Path) -> dict[str, str]:
    """Every golden file's name and its text as rendered now."""
    texts: dict[str, str] = {}
    for index, name in enumerate(("quickstart", "alpaca-tiny-llama")):
        (tmp / f"local-{index}").mkdir()
        texts.update(local_run_folder(name, tmp / f"local-{index}"))
    (tmp / "one-process").mkdir()  # the worker started directly, without accelerate launch
    texts["launch-1proc.sh"] = local_run_folder("quickstart", tmp / "one-process",
                                                "distributed.procs_per_node=1")[
        "quickstart/launch.sh"]
    for index, golden in enumerate(SLURM_CASES):
        (tmp / f"slurm-{index}").mkdir()
        texts[golden] = job_script(golden, tmp / f"slurm-{index}")[0]
    (tmp / "prepare").mkdir()
    texts["prepare-4node-gpu.sbatch"] = job_script("job-4node-gpu.sbatch", tmp / "prepare",
                                                   "prepare.sbatch")[0]
    (tmp / "sweep").mkdir()
    texts["sweep.sbatch"] = sweep_script(tmp / "sweep")
    return texts


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        for name, text in rendered(Path(tmp)).items():
            path = GOLDEN / name
            path.parent.mkdir(parents=True, exist_ok=True)
            changed = not path.exists() or path.read_text() != text
            path.write_text(text)
            print(f"{'updated' if changed else 'same   '} {path.relative_to(REPO)}")


if __name__ == "__main__":
    sys.exit(main())
