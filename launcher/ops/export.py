"""`sft-launch export RUN_DIR --merge`: fold a LoRA run's adapter into its base model."""

from __future__ import annotations

from pathlib import Path

from launcher.contract.errors import UsageError
from launcher.contract.plan import Plan
from launcher.contract.reports import DataStats, LabelNames
from launcher.contract.run_folder import RunFolder
from launcher.recipe.load import load_recipe


def merge_lora(run_dir: Path, out: Path) -> Path:
    """Base model (built as in training) + the adapter in `final/`, merged, saved with the
    tokenizer in `out` as a plain transformers model (safetensors). Returns `out`."""
    folder = RunFolder(run_dir)
    if not folder.plan.is_file() or not folder.recipe.is_file():
        raise UsageError(f"{run_dir}: not a run folder (no plan.json / recipe.toml)")
    recipe = load_recipe(folder.recipe)
    if recipe.model.lora is None:
        raise UsageError(f"{run_dir} trained the full model (no [model.lora]): {folder.final} "
                         "is already a plain model, there is no adapter to merge")
    if not (folder.final / "adapter_config.json").is_file():
        raise UsageError(f"{folder.final}: no adapter_config.json; has the run finished?")

    from peft import PeftModel
    from transformers.utils import logging

    logging.set_verbosity_error()  # the base load's "classifier newly initialized" is expected:
    logging.disable_progress_bar()  # the adapter brings the trained head

    from launcher.tasks.base import EncodedData, build_task

    plan = Plan.read(folder.plan)
    task = build_task(recipe, plan)
    # Label names (id2label of the merged model): those stored by the training run.
    labels = LabelNames.read_if_exists(folder.label_names)
    base = task.load_model(EncodedData(train=[], eval=[], stats=DataStats(0, 0),
                                    label_names=list(labels.names) if labels else None))
    merged = PeftModel.from_pretrained(base, folder.final).merge_and_unload()
    merged.save_pretrained(out, safe_serialization=True)
    # The tokenizer, image processor or feature extractor the run saved beside its adapter.
    task.load_processor(folder.final, recipe.model.trust_remote_code).save_pretrained(out)
    return out
