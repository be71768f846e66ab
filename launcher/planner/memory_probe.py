"""The shape of a model no formula sizes (image and audio tasks), measured in a worker process.

The control plane stays torch-free: it writes the request (the resolved recipe and the plan so
far) to a folder and runs `python -m launcher.worker.probe` on it, which builds the model on
the fake device and measures one training micro-batch (a few seconds, mostly imports). The
answer is cached under the sft-launch cache by everything it depends on, so a second launch
of the same model and batch does not wait.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import tempfile
from pathlib import Path

from launcher.contract.cache import cache_base
from launcher.contract.plan import ModelProbe, Plan
from launcher.contract.records import ContractError
from launcher.planner.model_shape import ModelShape
from launcher.recipe.schema import Recipe
from launcher.tasks.registry import task_spec

PROBE_SECONDS = 300
PROBE_VERSION = 4  # part of the cache key: raise it when launcher.worker.probe measures otherwise
# Files of a model or processor folder whose content changes what the probe measures.
CONFIGS = ("config.json", "preprocessor_config.json", "tokenizer_config.json")


class ProbeFailed(RuntimeError):
    """The probe process failed: the plan goes on without a memory estimate."""


def probed_shape(recipe: Recipe, plan: Plan) -> ModelShape:
    """The run's model as the memory plan sees it, measured (or cached) for the plan's micro
    batch and precision; `ProbeFailed` with the probe's last line when it cannot be built."""
    ignored = {"train", "distributed", "tracking", "slurm", "name"}  # not read by the probe
    request = {"version": PROBE_VERSION,
               "recipe": recipe.model_dump(mode="json", exclude=ignored),
               "micro": plan.batch.micro, "precision": plan.precision.value,
               "configs": [_digest(Path(folder) / name)
                           for folder in (plan.model_path, plan.tokenizer_path)
                           for name in CONFIGS]}
    key = hashlib.sha256(json.dumps(request, sort_keys=True).encode()).hexdigest()[:24]
    cached = cache_base() / "model-probes" / f"{key}.json"
    try:
        probe = ModelProbe.read_if_exists(cached)
    except ContractError:  # a file of an older sft-launch: measure again
        probe = None
    if probe is None:
        probe = _run(recipe, plan)
        cached.parent.mkdir(parents=True, exist_ok=True)
        probe.write(cached)
    labels = recipe.task.num_labels or 2
    return ModelShape(
        architecture=_architecture(plan.model_path), num_parameters=probe.parameters,
        hidden_size=probe.hidden_size or 0, num_layers=0, num_heads=0, intermediate_size=0,
        vocab_size=0, head=task_spec(recipe.task.kind).head, num_labels=labels,
        block_parameters=probe.block_parameters, largest_parameter=probe.largest_parameter,
        activations_bytes=probe.activations_bytes, measured_trainable=probe.trainable)


def _run(recipe: Recipe, plan: Plan) -> ModelProbe:
    with tempfile.TemporaryDirectory(prefix="sft-launch-probe-") as folder:
        request = Path(folder)
        (request / "recipe.json").write_text(recipe.model_dump_json())
        plan.write(request / "plan.json")
        try:
            done = subprocess.run([sys.executable, "-m", "launcher.worker.probe", folder],
                                  capture_output=True, text=True, timeout=PROBE_SECONDS)
        except subprocess.TimeoutExpired:
            raise ProbeFailed(f"no answer in {PROBE_SECONDS} s") from None
        if done.returncode != 0:
            lines = done.stderr.strip().splitlines()
            raise ProbeFailed(lines[-1] if lines else f"exit code {done.returncode}")
        return ModelProbe.read(request / "probe.json")


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else ""


def _architecture(model_path: str) -> str:
    config = Path(model_path) / "config.json"
    try:
        found = json.loads(config.read_text()) if config.is_file() else {}
    except (OSError, json.JSONDecodeError):
        found = {}
    return (found.get("architectures") or [found.get("model_type", "unknown")])[0]
