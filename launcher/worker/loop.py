"""The optimizer-step loop over one state: steps, logging, evaluation and checkpoints.

One optimizer step reads top to bottom in `TrainLoop.step`: fetch, forward and loss, backward
per micro-batch (accumulate), clip and optimizer step, schedule, the sums over all ranks, log.
What each step trains on comes from `launcher.worker.feed` (a pure function of the seed and the
step, collated ahead in worker processes for tasks that decode files); the time the loop waits
for it is measured (`train/data_wait_share`).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

from launcher.contract.evaluation import Prediction
from launcher.contract.events import (
    Evaluated,
    EventLog,
    Stopped,
    TrainLogged,
)
from launcher.contract.heartbeat import Phase
from launcher.contract.reports import SampleIds
from launcher.contract.run_folder import RunFolder
from launcher.tasks.base import on_device
from launcher.trackers.base import Trackers
from launcher.worker.checkpoint import CheckpointClock, Checkpointer, TrainerState
from launcher.worker.engines.base import Engine
from launcher.worker.evaluation import EvalRow, evaluate_on_ranks, predicted_rows
from launcher.worker.examples import EXAMPLES, log_examples, named
from launcher.worker.faults import FaultPlan
from launcher.worker.feed import StepInput, StepOrder, step_inputs
from launcher.worker.generations import PromptGenerator
from launcher.worker.metrics import Metrics, flatten, scalars
from launcher.worker.stopping import REQUEST, StopTraining
from launcher.worker.trainable import Trainable, TrainingSpec
from launcher.worker.watchdog import Watchdog


@dataclass(frozen=True)
class StepResult:
    """One optimizer step, summed over all ranks: the mean loss, the lr it trained with, the
    pre-clip gradient norm; `stop`: some rank was asked to stop."""

    loss: float
    lr: float
    tokens: int
    samples: int
    grad_norm: float
    stop: bool
    checkpoint_due: bool = False  # train.save_every_minutes passed on rank 0's clock
    checkpoint_written: bool = False  # the background write has ended on rank 0


@dataclass(frozen=True)
class RunServices:
    """What a rank reports through: its run folder, event log, trackers and hang watchdog; and
    when this launch started."""

    folder: RunFolder
    events: EventLog
    tracker: Trackers
    watchdog: Watchdog
    started: float


class TrainLoop:
    """Steps, logs, evaluates and checkpoints one rank's share of the run."""

    def __init__(self, engine: Engine, trainable: Trainable, spec: TrainingSpec,
                 services: RunServices) -> None:
        self.engine, self.acc, self.plan = engine, engine.accelerator, engine.plan
        self.model, self.scheduler = trainable.model, trainable.scheduler
        self.spec, self.task, self.data, self.recipe = spec, spec.task, spec.data, spec.recipe
        self.folder, self.events = services.folder, services.events
        self.tracker, self.watchdog, self.started = (services.tracker, services.watchdog,
                                                     services.started)
        self.log_every = 1 if self.plan.lr_find else self.recipe.train.log_every
        self.held_bytes = None
        self.window: list[float] = []
        self.order = StepOrder(self.task, self.data.train, self.plan, self.recipe.train.seed,
                               bool(self.recipe.data.group_by_length), self.acc.process_index)
        self.loader_workers = self.task.loader_workers(self.recipe)
        self.data_wait_s = self.window_s = 0.0  # waiting for data / stepping, since the last log
        self.state, self.wall_before = TrainerState(), 0.0
        self.prompt_generator = PromptGenerator(self.task, self.data.eval, self.recipe,
                                                self.plan, engine)
        self.fault = FaultPlan(self.acc.process_index, self.folder.logs)
        self.clock = CheckpointClock(self.recipe.train.save_every_minutes,
                                     self.acc.is_main_process)
        self.checkpointer = Checkpointer(engine, self.folder, self.recipe.train.keep_checkpoints,
                                         self.events, self.recipe.train.async_checkpoints)

    def inputs(self, start: int, stop: int) -> Iterator[StepInput]:
        """The inputs of steps `start` .. `stop - 1`, collated ahead where the task decodes."""
        return step_inputs(self.order, start, stop, self.loader_workers)

    def train(self, state: TrainerState) -> Metrics:
        """Run steps from `state` to the last; returns the final eval metrics ({} without eval).

        A stop request (a signal) ends the loop after the step it arrived in, with a complete
        checkpoint of that step (StopTraining); one before the first step ends it at once."""
        train, total = self.recipe.train, self.spec.total_steps
        self.state, self.wall_before = state, state.wall_s
        self.model.train()
        if state.step < total and self._agree(REQUEST.requested):
            self._stop(state, checkpoint=False)
        inputs = self.inputs(state.step, total)
        while state.step < total:
            result = self.step(inputs)
            if result.checkpoint_written:
                self.checkpointer.finish()
            if result.stop:
                self._stop(state, checkpoint=True)
            if train.eval_every and state.step % train.eval_every == 0 and state.step < total:
                self.log_eval(state.step)
            if (train.save_every and state.step % train.save_every == 0) or (
                    result.checkpoint_due and state.step < total):
                self.checkpoint(state)
            self.fault.after_step(state.step)
        self.checkpointer.finish()
        return self.log_eval(state.step, self.folder.predictions)

    def step(self, inputs: Iterator[StepInput]) -> StepResult:
        """One optimizer step, top to bottom: fetch this rank's micro-batches; forward, loss
        and backward on each (gradients accumulate; ranks synchronise on the last); clip and
        step the optimizer; step the schedule; sum over all ranks; count, and log when due.
        The loss is the global mean over the step's loss units (samples or tokens)."""
        acc, device, state, t0 = self.acc, self.acc.device, self.state, time.time()
        step_input = next(inputs)  # fetch (collated ahead where the task decodes files)
        self.data_wait_s += time.time() - t0
        units = acc.reduce(torch.tensor([float(step_input.units)], device=device), "sum")
        scale = self.plan.world_size / max(float(units.item()), 1.0)  # sum -> global mean
        loss_sum = torch.zeros((), device=device)
        micro = step_input.micro
        for i, part in enumerate(micro):
            batch = on_device(part.batch, device)
            state.computed_tokens += part.computed
            with self.engine.micro_step(last=i == len(micro) - 1), acc.autocast():
                summed, _ = self.task.loss_sum(self.model, batch)  # forward: the summed loss
                self.engine.backward(summed * scale)  # gradients add up over micro-batches
            loss_sum += summed.detach()  # read once, with the step's other sums (no sync)
        lr = self.scheduler.get_last_lr()[0]  # the lr this step trains with
        # clip to max_grad_norm, step the optimizer, zero the gradients
        grad_norm = self.engine.step(self.recipe.train.max_grad_norm or float("inf"))
        if self.held_bytes is None:  # after the first step, when the optimizer state exists
            self.held_bytes = self.engine.held_bytes()
        self.scheduler.step()
        state.real_tokens += step_input.tokens
        # the sums over all ranks, in one reduce: loss, tokens, samples, stops, checkpoints
        counted = torch.tensor([float(step_input.tokens), float(step_input.samples),
                                float(REQUEST.requested), float(self.clock.due()),
                                float(self.checkpointer.written())], device=device)
        stats = acc.reduce(torch.cat([loss_sum.float().reshape(1), counted]), "sum")
        result = StepResult(loss=float(stats[0]) / max(float(units.item()), 1.0), lr=lr,
                            tokens=int(stats[1]), samples=int(stats[2]), grad_norm=grad_norm,
                            stop=float(stats[3]) > 0, checkpoint_due=float(stats[4]) > 0,
                            checkpoint_written=float(stats[5]) > 0)
        self.count(step_input, result, t0)
        if state.step % self.log_every == 0 or state.step == self.spec.total_steps:
            self.log_train(result, time.time() - t0)
        return result

    def count(self, step_input: StepInput, result: StepResult, t0: float) -> None:
        """A finished step into the state: step, samples, tokens, time; the watchdog told;
        its example ids written where the recipe asks; its loss into the logging window."""
        state = self.state
        state.step += 1
        state.samples += result.samples
        state.tokens += result.tokens
        self.watchdog.progress(Phase.TRAIN, state.step)
        state.train_s += time.time() - t0
        self.window_s += time.time() - t0
        state.steps_timed += 1
        if state.first_step_s is None:
            state.first_step_s = round(time.time() - self.started, 2)
        if self.recipe.train.log_sample_ids:
            with self.folder.sample_ids(self.acc.process_index).open("a") as handle:
                handle.write(SampleIds(step=state.step, ids=tuple(step_input.ids)).to_line())
        self.window.append(result.loss)

    def checkpoint(self, state: TrainerState, *, wait: bool = False) -> None:
        """Begin the checkpoint of this step (`wait`: complete it before going on)."""
        self.clock.reset()
        self.watchdog.progress(Phase.CHECKPOINT)
        state.wall_s = self.wall_s()
        self.checkpointer.save(state, wait=wait)
        self.watchdog.progress(Phase.TRAIN)

    def _stop(self, state: TrainerState, *, checkpoint: bool) -> None:
        """Checkpoint this step (unless no step ran), say so, and leave the loop."""
        signal_name = REQUEST.signal or "a signal on another rank"
        if checkpoint:
            self.checkpoint(state, wait=True)
        self.events.write(Stopped(step=state.step, signal=signal_name,
                                  checkpoint=self.folder.named(self.folder.checkpoint(state.step))
                                  if checkpoint else None))
        raise StopTraining(state.step, signal_name)

    def _agree(self, flag: bool) -> bool:
        """True on every rank when it is true on any."""
        if self.plan.world_size == 1:
            return flag
        vote = self.acc.reduce(torch.tensor([float(flag)], device=self.acc.device), "sum")
        return float(vote.item()) > 0

    def log_train(self, result: StepResult, step_s: float) -> None:
        """The window's mean loss, the lr, grad norm and speeds: to the trackers and events."""
        state = self.state
        loss = sum(self.window) / len(self.window)
        self.window = []
        state.last_loss = loss
        lr = self.scheduler.get_last_lr()[0]
        epoch = state.step / self.spec.steps_per_epoch
        tokens_per_s = result.tokens / max(step_s, 1e-9)
        self.tracker.log({
            "train/loss": loss,
            "train/lr": lr,
            "train/grad_norm": result.grad_norm,
            "train/epoch": epoch,
            "train/tokens_per_s": tokens_per_s,
            "train/samples_per_s": result.samples / max(step_s, 1e-9),
            "train/token_efficiency": state.token_efficiency(),
            "train/data_wait_share": (waited := self.data_wait_s / max(self.window_s, 1e-9)),
        }, step=state.step)
        self.data_wait_s = self.window_s = 0.0
        self.events.write(TrainLogged(step=state.step, loss=loss, lr=lr,
                                      grad_norm=result.grad_norm, epoch=epoch,
                                      tokens_per_s=tokens_per_s,
                                      data_wait_share=round(waited, 4)))

    def log_eval(self, step: int, predictions_file: Path | None = None) -> Metrics:
        """Evaluate, log and return the metrics; nothing at all without eval data."""
        if not self.data.eval:
            return {}
        metrics, rows = self.evaluate(predictions_file)
        self.tracker.log(flatten(metrics, "eval/"), step=step)
        final = predictions_file is not None  # its pictures are kept for report.png
        if self.task.predicts_shown and (final or self.plan.trackers):
            rows = self.shown_rows()
        if self.acc.is_main_process:
            log_examples(self.task, self.data.eval, rows, self.data.label_names, self.tracker,
                         step, self.folder.eval_examples if final else None)
        self.events.write(Evaluated(step=step, metrics=scalars(metrics)))
        if self.prompt_generator:
            self.watchdog.progress(Phase.EVAL)
            generations = self.prompt_generator.generate(self.acc.device, self.acc.autocast)
            self.watchdog.progress(Phase.TRAIN)
            if self.acc.is_main_process:
                self.prompt_generator.log(generations, step, self.events, self.tracker)
        return metrics

    def shown_rows(self) -> list[EvalRow]:
        """The first EXAMPLES eval rows predicted (rank 0's; see `predicted_rows`) for a task
        whose evaluation keeps no prediction per row; the model trains on."""
        self.model.eval()
        shown = [self.data.eval[i] for i in range(min(EXAMPLES, len(self.data.eval)))]
        rows = predicted_rows(self.task, self.model, shown, self.acc, self.plan)
        self.model.train()
        return rows

    def evaluate(self, predictions_file: Path | None = None) -> tuple[Metrics, list[EvalRow]]:
        """Every rank evaluates its share (see `evaluate_on_ranks`); the model trains on."""
        self.model.eval()
        metrics, rows = evaluate_on_ranks(self.task, self.model, self.data.eval, self.acc,
                                          self.plan, lambda: self.watchdog.progress(Phase.EVAL))
        self.model.train()
        self.watchdog.progress(Phase.TRAIN)
        if predictions_file is not None and rows and self.acc.is_main_process:
            with predictions_file.open("w", encoding="utf-8") as handle:
                for index, prediction, reference in rows:
                    names = self.data.label_names
                    handle.write(Prediction(index=index, prediction=named(prediction, names),
                                            reference=named(reference, names)).to_line())
        return metrics, rows

    def wall_s(self) -> float:
        """Wall time of the run so far, over all its launches."""
        return self.wall_before + time.time() - self.started
