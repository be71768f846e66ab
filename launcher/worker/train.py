"""The training run on one rank, start to finish, in the order it happens."""

from __future__ import annotations

import hashlib
import json
import math
import resource
import shutil
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.utils import gather_object, set_seed
from transformers import get_scheduler

from launcher.data.packing import length_grouped_batches
from launcher.plan.plan import Plan
from launcher.recipe.schema import Recipe
from launcher.render.run_folder import RunFolder
from launcher.tasks.base import Prepared, Task, build_task
from launcher.tasks.lora import apply_lora
from launcher.worker.checkpoint import TrainerState, load_latest, save_checkpoint
from launcher.worker.engines import Engine, make_engine
from launcher.worker.events import EventLog
from launcher.worker.preprocess import prepare_cached
from launcher.worker.startup import (
    verify_launch,
    verify_strategy,
    verify_world,
    write_rank_report,
)


def run(folder: RunFolder, recipe: Recipe, plan: Plan, *, resume: bool) -> None:
    """Train, evaluate, checkpoint and save the final model as the plan says."""
    started = time.time()
    torch.set_num_threads(plan.threads_per_proc)
    verify_launch(plan)
    engine = make_engine(plan, folder.path, "wandb" if plan.tracking_mode != "disabled" else None)
    accelerator = engine.accelerator
    report = verify_world(accelerator, plan)
    events = EventLog(folder.events, accelerator.is_main_process)
    set_seed(recipe.train.seed)
    torch.use_deterministic_algorithms(plan.device == "cpu", warn_only=True)

    task = build_task(recipe, plan)
    task.tokenizer = tokenizer = task.load_tokenizer()
    prepared = prepare_cached(task, tokenizer, recipe, plan, accelerator, events)
    steps_per_epoch = len(prepared.train) // plan.batch.global_size
    if steps_per_epoch == 0:
        raise ValueError(f"{len(prepared.train)} training examples are fewer than one global "
                         f"batch ({plan.batch.global_size})")
    total_steps = recipe.train.max_steps or math.ceil(recipe.train.epochs * steps_per_epoch)
    model = apply_lora(task.load_model(prepared), recipe)
    scheduler = engine.prepare(
        model,
        lambda m: torch.optim.AdamW(_param_groups(m, recipe.train.weight_decay),
                                    lr=recipe.train.lr),
        lambda optimizer: _scheduler(optimizer, recipe, total_steps),
    )
    report.update(verify_strategy(engine, plan))
    write_rank_report(folder, accelerator.process_index, report)

    state = TrainerState()
    if resume:
        loaded = load_latest(engine, folder.checkpoints)
        if loaded is None:
            events.message("--resume: no complete checkpoint yet, starting from step 0")
        else:
            state = loaded
            events.message(f"resumed from checkpoints/step-{state.step}")
    _start_tracking(accelerator, recipe, plan, folder)
    events.write("start", total_steps=total_steps, step=state.step,
                 steps_per_epoch=steps_per_epoch, world_size=plan.world_size)

    loop = _Loop(engine, task, prepared, plan, recipe, scheduler, events)
    eval_metrics = loop.train(state, total_steps, steps_per_epoch, folder, started)
    report["memory_bytes"] = loop.memory_bytes
    report["peak_rss_bytes"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    _save_final(engine, tokenizer, folder)
    if report["strategy"] in ("single", "ddp", "zero2"):  # replicated weights: comparable
        report["final_weights_sha256"] = weights_fingerprint(engine.unwrapped())
    write_rank_report(folder, accelerator.process_index, report)
    if accelerator.is_main_process:
        summary = {
            "status": "completed",
            **loop.summary(state, steps_per_epoch, started),
            **{f"eval_{k}": v for k, v in eval_metrics.items()},
            "world_size": plan.world_size,
            "strategy": report["strategy"],
            **prepared.stats,
        }
        _write_json_atomic(folder.summary, summary)
        events.write("end", summary=summary)
    accelerator.end_training()


def _scheduler(optimizer: torch.optim.Optimizer, recipe: Recipe, total_steps: int) -> Any:
    train = recipe.train
    warmup = train.warmup_steps
    if warmup is None:
        warmup = round(train.warmup_ratio * total_steps)
    name = "constant_with_warmup" if train.schedule == "constant" else train.schedule
    return get_scheduler(name, optimizer, num_warmup_steps=warmup, num_training_steps=total_steps)


class _Loop:
    """The optimizer-step loop with manual, deterministic data sharding."""

    def __init__(self, engine: Engine, task: Task, prepared: Prepared, plan: Plan,
                 recipe: Recipe, scheduler: Any, events: EventLog) -> None:
        self.engine, self.acc, self.task, self.data = engine, engine.accelerator, task, prepared
        self.plan, self.recipe, self.scheduler, self.events = plan, recipe, scheduler, events
        self.model = engine.model
        self.memory_bytes: dict[str, int] = {}
        self.window: list[float] = []
        self.first_step_s: float | None = None
        self.train_s = 0.0
        self.steps_run = 0
        self.last_loss: float | None = None
        self.order: tuple[int, list[int]] = (-1, [])
        self.computed_tokens = 0
        self.real_tokens = 0

    def epoch_order(self, epoch: int) -> list[int]:
        """The order of the training examples in `epoch`: shuffled (or length-grouped) by seed."""
        if self.order[0] != epoch:
            seed = self.recipe.train.seed + epoch
            if self.recipe.data.group_by_length:
                lengths = [self.task.tokens_in(e) for e in self.data.train]
                batches = length_grouped_batches(lengths, self.plan.batch.micro, seed)
                order = [i for batch in batches for i in batch]
            else:
                generator = torch.Generator().manual_seed(seed)
                order = torch.randperm(len(self.data.train), generator=generator).tolist()
            self.order = (epoch, order)
        return self.order[1]

    def global_batch(self, step: int, steps_per_epoch: int) -> list[dict[str, Any]]:
        """This rank's examples for optimizer step `step` (0-based): a pure function of step."""
        epoch, position = divmod(step, steps_per_epoch)
        order = self.epoch_order(epoch)
        size = self.plan.batch.global_size
        chunk = size // self.plan.world_size
        start = position * size + self.acc.process_index * chunk
        return [self.data.train[i] for i in order[start:start + chunk]]

    def train(self, state: TrainerState, total_steps: int, steps_per_epoch: int,
              folder: RunFolder, started: float) -> dict[str, float]:
        train = self.recipe.train
        self.model.train()
        while state.step < total_steps:
            t0 = time.time()
            loss, tokens, samples, grad_norm = self.step(
                self.global_batch(state.step, steps_per_epoch)
            )
            state.step += 1
            state.samples += samples
            state.tokens += tokens
            self.train_s += time.time() - t0
            self.steps_run += 1
            if self.first_step_s is None:
                self.first_step_s = time.time() - started
            self.window.append(loss)
            if state.step % train.log_every == 0 or state.step == total_steps:
                self.log_train(state, steps_per_epoch, grad_norm, tokens, samples,
                               time.time() - t0)
            if train.eval_every and state.step % train.eval_every == 0 and state.step < total_steps:
                self.log_eval(state.step)
            if train.save_every and state.step % train.save_every == 0:
                save_checkpoint(self.engine, folder.checkpoints, state, train.keep_checkpoints)
                self.events.write("checkpoint", step=state.step)
        return self.log_eval(state.step, folder.predictions)

    def step(self, examples: list[dict[str, Any]]) -> tuple[float, int, int, float]:
        """One optimizer step over grad_accum micro-batches; the loss is the global mean."""
        micro = self.plan.batch.micro
        batches = [examples[i:i + micro] for i in range(0, len(examples), micro)]
        counts = sum(self.task.count_units(e) for e in examples)
        total = self.acc.reduce(torch.tensor([float(counts)], device=self.acc.device), "sum")
        scale = self.plan.world_size / max(float(total.item()), 1.0)
        loss_sum, tokens = 0.0, 0
        for i, chunk in enumerate(batches):
            batch = {k: v.to(self.acc.device) for k, v in self.task.collate(chunk).items()}
            tokens += sum(self.task.tokens_in(e) for e in chunk)
            self.computed_tokens += batch["input_ids"].numel()
            with self.engine.micro_step(last=i == len(batches) - 1), self.acc.autocast():
                summed, _ = self.task.loss_sum(self.model, batch)
                self.engine.backward(summed * scale)
            loss_sum += float(summed.detach())
        grad_norm = self.engine.step(self.recipe.train.max_grad_norm or float("inf"))
        if not self.memory_bytes:  # after the first step, when the optimizer state exists
            self.memory_bytes = self.engine.local_bytes()
        self.scheduler.step()
        self.real_tokens += tokens
        stats = torch.tensor([loss_sum, float(tokens), float(len(examples))],
                             device=self.acc.device)
        stats = self.acc.reduce(stats, "sum")
        return (float(stats[0]) / max(float(total.item()), 1.0), int(stats[1]), int(stats[2]),
                grad_norm)

    def log_train(self, state: TrainerState, steps_per_epoch: int, grad_norm: float,
                  tokens: int, samples: int, step_s: float) -> None:
        loss = sum(self.window) / len(self.window)
        self.window = []
        self.last_loss = loss
        metrics = {
            "train/loss": loss,
            "train/lr": self.scheduler.get_last_lr()[0],
            "train/grad_norm": grad_norm,
            "train/epoch": state.step / steps_per_epoch,
            "train/tokens_per_s": tokens / max(step_s, 1e-9),
            "train/samples_per_s": samples / max(step_s, 1e-9),
            "train/token_efficiency": self.efficiency(),
        }
        self.acc.log(metrics, step=state.step)
        self.events.write("train", step=state.step, loss=loss, lr=metrics["train/lr"],
                          grad_norm=grad_norm, epoch=metrics["train/epoch"])

    def log_eval(self, step: int, predictions_file: Path | None = None) -> dict[str, float]:
        metrics = self.evaluate(predictions_file)
        self.acc.log(_flatten(metrics, "eval/"), step=step)
        self.events.write("eval", step=step,
                          metrics={k: v for k, v in metrics.items() if not isinstance(v, dict)})
        return metrics

    @torch.no_grad()
    def evaluate(self, predictions_file: Path | None = None) -> dict[str, float]:
        """Every rank evaluates its share; sums and predictions are combined across ranks."""
        self.model.eval()
        indices = list(range(self.acc.process_index, len(self.data.eval), self.plan.world_size))
        micro = self.plan.batch.micro
        loss_sum, count, predictions, references = 0.0, 0, [], []
        for i in range(0, len(indices), micro):
            chunk = [self.data.eval[j] for j in indices[i:i + micro]]
            batch = {k: v.to(self.acc.device) for k, v in self.task.collate(chunk).items()}
            with self.acc.autocast():
                out = self.task.evaluate(self.model, batch)
            loss_sum += out.loss_sum
            count += out.count
            predictions.extend(out.predictions)
            references.extend(out.references)
        totals = self.acc.reduce(torch.tensor([loss_sum, float(count)], device=self.acc.device),
                                 "sum")
        rows = list(zip(indices, predictions, references, strict=False)) if predictions else []
        if self.plan.world_size > 1:
            rows = gather_object(rows)
        rows.sort()
        self.model.train()
        if predictions_file is not None and rows and self.acc.is_main_process:
            with predictions_file.open("w", encoding="utf-8") as handle:
                for index, prediction, reference in rows:
                    handle.write(json.dumps({"index": index, "prediction": prediction,
                                             "reference": reference}) + "\n")
        return self.task.metrics(float(totals[0]), int(totals[1]), [r[1] for r in rows],
                                 [r[2] for r in rows])

    def efficiency(self) -> float:
        """Real tokens / tokens computed (padding lowers it; padding-free packing keeps 1.0)."""
        return self.real_tokens / max(self.computed_tokens, 1)

    def summary(self, state: TrainerState, steps_per_epoch: int, started: float) -> dict:
        return {
            "token_efficiency": round(self.efficiency(), 4),
            "steps": state.step,
            "epochs": round(state.step / steps_per_epoch, 4),
            "samples": state.samples,
            "tokens": state.tokens,
            "train_loss": self.last_loss,
            "wall_time_s": round(time.time() - started, 2),
            "time_to_first_step_s": round(self.first_step_s or 0.0, 2),
            "train_samples_per_s": round(
                self.steps_run * self.plan.batch.global_size / max(self.train_s, 1e-9), 2),
        }


def _flatten(metrics: dict[str, Any], prefix: str) -> dict[str, float]:
    """Scalars for W&B: a nested table (per-entity scores) becomes `eval/per_entity/person/f1`."""
    flat: dict[str, float] = {}
    for key, value in metrics.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}/"))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """No weight decay on biases and norm weights (1-D parameters)."""
    decay, no_decay = [], []
    for param in model.parameters():
        if param.requires_grad:
            (no_decay if param.ndim < 2 else decay).append(param)
    return [{"params": decay, "weight_decay": weight_decay},
            {"params": no_decay, "weight_decay": 0.0}]


def _start_tracking(accelerator: Accelerator, recipe: Recipe, plan: Plan,
                    folder: RunFolder) -> None:
    if plan.tracking_mode == "disabled":
        return
    tracking = recipe.tracking
    config = {"recipe": recipe.model_dump(mode="json"), "plan": asdict(plan)}
    init = {"dir": str(folder.path), "mode": plan.tracking_mode,
            "name": tracking.run_name or folder.path.name, "tags": tracking.tags}
    if tracking.entity:
        init["entity"] = tracking.entity
    accelerator.init_trackers(tracking.project, config=config, init_kwargs={"wandb": init})


def _save_final(engine: Engine, tokenizer: Any, folder: RunFolder) -> None:
    """Consolidated Hugging Face model + tokenizer in `final/`, written then renamed."""
    state_dict = engine.full_state_dict()
    tmp = folder.path / ".final.tmp"
    if engine.accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
        engine.unwrapped().save_pretrained(tmp, state_dict=state_dict, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        shutil.rmtree(folder.final, ignore_errors=True)
        tmp.rename(folder.final)
    engine.accelerator.wait_for_everyone()


def weights_fingerprint(model: torch.nn.Module) -> str:
    """sha256 over every parameter, in order: equal on all ranks iff the weights are equal."""
    digest = hashlib.sha256()
    for name, param in model.named_parameters():
        digest.update(name.encode())
        digest.update(param.detach().float().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def _write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    tmp.replace(path)
