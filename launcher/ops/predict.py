"""`sft-launch eval` and `predict`: a finished run's final model on a new data file, read,
encoded, batched and scored as in training, in one process here (the first GPU, else the CPU).

What it owns: finding the model of a run folder (`final/`, or for LoRA runs the plan's base
model plus the adapter in `final/`), and writing `eval-<name>.json` and
`predictions-<name>.jsonl`. Reading rows is `launcher.data.formats`; encoding, collating,
predicting and scoring are the run's `Task`. Inputs are checked before torch is imported, so
bad input fails at once, with nothing written.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from launcher.contract.errors import UsageError
from launcher.contract.evaluation import EvalReport, Prediction
from launcher.contract.plan import Plan
from launcher.contract.records import ContractError
from launcher.contract.reports import DataStats, LabelNames
from launcher.contract.run_folder import RunFolder
from launcher.contract.vocabulary import Precision
from launcher.data.errors import DataError
from launcher.data.formats import FORMATS, load_rows
from launcher.data.labels import LabelMap
from launcher.recipe.load import load_recipe
from launcher.recipe.schema import Recipe
from launcher.tasks.registry import task_spec

if TYPE_CHECKING:
    import torch

    from launcher.tasks.base import EvalOutput, Example, Row, Task


@dataclass(frozen=True)
class Source:
    """A data file, read with the run's recipe format and columns unless these say otherwise."""

    path: Path
    format: str | None = None
    columns: dict[str, str] | None = None

    @property
    def name(self) -> str:
        """`<name>` of the files written for it: the file's stem."""
        return self.path.stem


@dataclass(frozen=True)
class Run:
    """A finished run folder: its recipe, plan and (classification) label names."""

    folder: RunFolder
    recipe: Recipe
    plan: Plan
    labels: LabelMap | None

    @property
    def lora(self) -> bool:
        return self.recipe.model.lora is not None


def open_run(run_dir: Path) -> Run:
    """The run in `run_dir`, once its final model and label names are known to be there."""
    folder = RunFolder(run_dir)
    if not folder.plan.is_file() or not folder.recipe.is_file():
        raise UsageError(f"{run_dir}: not a run folder (no plan.json / recipe.toml)")
    try:
        recipe, plan = load_recipe(folder.recipe), Plan.read(folder.plan)
        names = LabelNames.read_if_exists(folder.label_names)
    except ContractError as err:
        raise UsageError(str(err)) from None
    run = Run(folder, recipe, plan, LabelMap(names.names) if names else None)
    weights = "adapter_config.json" if run.lora else "config.json"
    if not (folder.final / weights).is_file():
        raise UsageError(f"{folder.final / weights}: not found: the run has no final model yet "
                         f"(see `sft-launch status {run_dir}`)")
    if task_spec(recipe.task.kind).labelled and names is None:
        raise UsageError(f"{folder.label_names}: not found: a {recipe.task.kind} run writes its "
                         "label names there when it trains")
    return run


def read_rows(run: Run, source: Source, *, labelled: bool) -> tuple[str, list[Row]]:
    """The file's format and canonical rows, read as training reads its data: labels (all
    required) mapped through the run's label names."""
    data, spec = run.recipe.data, task_spec(run.recipe.task.kind)
    fmt = source.format or str(data.format)
    if fmt not in spec.formats:
        unknown = "" if fmt in FORMATS else "not a data format; "
        raise UsageError(f"--format {fmt}: {unknown}a {spec.kind} run reads "
                         f"{' or '.join(spec.formats)}")
    default = data.columns if fmt == data.format else {}
    columns = source.columns if source.columns is not None else default
    if not source.path.is_file() and not source.path.is_dir():
        raise UsageError(f"--data {source.path}: file not found (nor an image folder)")
    try:
        rows = load_rows([source.path], fmt, columns, "error", run.labels,
                         labelled=labelled).rows
    except (DataError, ValueError) as err:
        raise UsageError(f"bad data: {err}") from None
    if not rows:
        raise UsageError(f"{source.path}: no rows to {'evaluate' if labelled else 'predict'}")
    return fmt, rows


def evaluate_file(run_dir: Path, source: Source, max_new_tokens: int) -> tuple[EvalReport, Path]:
    """Score the final model on a labelled file with the task's metrics; write the report
    (`eval-<name>.json`) and the predictions by row; return the report and its path."""
    run = open_run(run_dir)
    fmt, rows = read_rows(run, source, labelled=True)
    return score(run, source, fmt, rows, max_new_tokens)


def score(run: Run, source: Source, fmt: str, rows: list[Row],
          max_new_tokens: int) -> tuple[EvalReport, Path]:
    """`evaluate_file` once its inputs are checked: the model's part (imports torch)."""
    from launcher.worker.metrics import scalars, tables

    task = make_task(run)
    examples = encoded(task.encode, rows, run)
    if not examples:
        raise UsageError(f"{source.path}: no row keeps a loss-bearing token within "
                         f"data.max_length = {run.recipe.data.max_length}")
    predicted, out = infer(task, run, encoded(task.prompts, rows, run), max_new_tokens,
                           examples)
    metrics = task.metrics(out.loss_sum, out.count, out.predictions, out.references, out.sums)
    predictions = run.folder.predictions_on(source.name)
    predicted = task.written(predicted, rows, predictions.with_suffix(""))
    write_predictions(predictions, [
        Prediction(index=i, prediction=p, reference=task.reference(row))
        for i, (p, row) in enumerate(zip(predicted, rows, strict=True))])
    report = EvalReport(data=str(source.path.resolve()), format=fmt, task=run.recipe.task.kind,
                        rows=len(rows), metrics=scalars(metrics), tables=tables(metrics),
                        predictions=predictions.name)
    path = run.folder.eval_report(source.name)
    report.write(path)
    return report, path


def predict_file(run_dir: Path, source: Source, max_new_tokens: int) -> tuple[Path, int]:
    """The final model's predictions on a file whose rows need no labels, written by row to
    `predictions-<name>.jsonl`; returns that file and the number of rows."""
    run = open_run(run_dir)
    _, rows = read_rows(run, source, labelled=False)
    task = make_task(run)
    predicted, _ = infer(task, run, encoded(task.prompts, rows, run), max_new_tokens)
    path = run.folder.predictions_on(source.name)
    predicted = task.written(predicted, rows, path.with_suffix(""))
    write_predictions(path, [Prediction(index=i, prediction=keyed(p, i))
                             for i, p in enumerate(predicted)])
    return path, len(rows)


def keyed(prediction: Any, index: int) -> Any:
    """Detections (dicts) with their row's index as COCO's ``image_id``; others as they are."""
    if isinstance(prediction, list) and prediction and isinstance(prediction[0], dict):
        return [{"image_id": index, **detection} for detection in prediction]
    return prediction


def make_task(run: Run) -> Task:
    """The run's task with the tokenizer of `final/` (and its model, unless LoRA's base)."""
    from transformers.utils import logging

    from launcher.tasks.base import build_task

    logging.set_verbosity_error()  # a LoRA base's "newly initialized" head is expected: the
    logging.disable_progress_bar()  # adapter brings the trained one
    final = str(run.folder.final)
    plan = dataclasses.replace(run.plan, tokenizer_path=final,
                               model_path=run.plan.model_path if run.lora else final)
    task = build_task(run.recipe, plan)
    task.tokenizer = task.load_tokenizer()
    return task


def encoded(encode: Callable[[list[Row]], list[Example]], rows: list[Row],
            run: Run) -> list[Example]:
    """`encode(rows)`; a chat template that cannot be used is bad input (exit 2)."""
    from launcher.data.encode.chat import ChatTemplateError

    try:
        return encode(rows)
    except ChatTemplateError as err:
        raise UsageError(f"{run.folder.path}: {err}") from None


def load_model(task: Task, run: Run) -> tuple[torch.nn.Module, torch.device]:
    """The final model in eval mode, on the first GPU if there is one, else on the CPU."""
    import torch

    from launcher.tasks.base import EncodedData

    names = list(run.labels.names) if run.labels else None
    model = task.load_model(EncodedData(train=[], eval=[], stats=DataStats(0, 0),
                                        label_names=names))
    if run.lora:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, run.folder.final)
    device = torch.device("cuda", 0) if torch.cuda.is_available() else torch.device("cpu")
    return model.to(device).eval(), device


def autocast_for(plan: Plan, device: torch.device) -> Callable[[], AbstractContextManager]:
    """Training's precision on a GPU (bf16/fp16 autocast when the plan says so); fp32 on CPU."""
    import torch

    half = plan.precision if plan.precision.is_half else Precision.BF16
    return partial(torch.autocast, device.type, dtype=getattr(torch, half.torch_name),
                   enabled=device.type == "cuda" and plan.precision.is_half)


def infer(task: Task, run: Run, prompts: Sequence[Example], max_new_tokens: int,
          examples: Sequence[Example] = ()) -> tuple[list[Any], EvalOutput]:
    """Load the final model; `task.predict` over the prompts and `task.evaluate` over the
    examples (if any), in batches of the run's micro batch, as training evaluates."""
    import torch

    from launcher.tasks.base import batches, evaluate_examples

    model, device = load_model(task, run)
    size, autocast = run.plan.batch.micro, autocast_for(run.plan, device)
    predicted: list[Any] = []
    with torch.inference_mode():
        out = evaluate_examples(task, model, examples, size, device, autocast)
        for batch in batches(task, prompts, size, device):
            with autocast():
                predicted.extend(task.predict(model, batch, max_new_tokens))
    return predicted, out


def write_predictions(path: Path, predictions: list[Prediction]) -> None:
    """One line per row, written under a temporary name then renamed."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with tmp.open("w", encoding="utf-8") as handle:
        handle.writelines(prediction.to_line() for prediction in predictions)
    tmp.replace(path)
