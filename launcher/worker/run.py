"""The training run on one rank, start to finish, in the order it happens."""

from __future__ import annotations

import dataclasses
import math
import resource
import time
from datetime import timedelta

import torch
from accelerate.utils import set_seed

from launcher.contract.events import Ended, EventLog, Started
from launcher.contract.heartbeat import Phase
from launcher.contract.plan import Plan
from launcher.contract.reports import LabelNames, RankReport, Summary
from launcher.contract.run_folder import RunFolder
from launcher.contract.vocabulary import Device, ExitCode, JobState, Strategy
from launcher.recipe.schema import Recipe
from launcher.tasks.base import build_task
from launcher.trackers.start import start_trackers
from launcher.worker.allocator import keep_freed_blocks
from launcher.worker.checkpoint import CheckpointNotWritten, TrainerState, load_latest
from launcher.worker.engines import make_engine
from launcher.worker.engines.base import Engine
from launcher.worker.final import save_final, weights_fingerprint
from launcher.worker.loop import RunServices, TrainLoop
from launcher.worker.lr_find import run_lr_range
from launcher.worker.metrics import Metrics, scalars, tables
from launcher.worker.preprocess import encode_cached
from launcher.worker.report_drawing import start_drawing, wait_drawn
from launcher.worker.startup import verify_launch, verify_strategy, verify_world
from launcher.worker.stopping import StopTraining
from launcher.worker.trainable import TrainingSpec
from launcher.worker.watchdog import Watchdog, allowance

# Strategies whose ranks all hold the whole model: their fingerprints must be equal.
REPLICATED = (None, Strategy.DDP, Strategy.ZERO2)


def collective_timeout(recipe: Recipe) -> timedelta:
    """How long a collective may wait: past the longest phase the watchdog allows (it catches a
    stalled rank first and names it); 30 minutes when the watchdog is off."""
    timeout = recipe.train.hang_timeout_s
    return timedelta(seconds=allowance(timeout, Phase.CHECKPOINT) + 300 if timeout else 1800)


def run(folder: RunFolder, recipe: Recipe, plan: Plan, *, resume: bool) -> ExitCode:
    """Train, evaluate, checkpoint and save the final model as the plan says (or run the lr
    range test it carries); OK, or STOPPED by a signal with a checkpoint to resume from."""
    started = time.time()
    torch.set_num_threads(plan.threads_per_proc)
    verify_launch(plan)
    engine = make_engine(plan, folder, collective_timeout(recipe))
    accelerator = engine.accelerator
    main = accelerator.is_main_process
    report = verify_world(accelerator, plan)
    watchdog = Watchdog(folder, report.rank, plan.world_size,
                        recipe.train.hang_timeout_s).start()
    events = EventLog(folder.events, main)
    set_seed(recipe.train.seed)
    torch.use_deterministic_algorithms(plan.device == "cpu", warn_only=True)

    spec = _training_spec(recipe, plan, engine, folder, events, watchdog)
    trainable = engine.build(spec)
    report = _loaded(engine, report, folder)
    state = _resumed(engine, folder, events, watchdog) if resume else TrainerState()
    if plan.device is Device.CPU and plan.active_strategy in (None, Strategy.DDP):
        keep_freed_blocks()  # the model is loaded: each step reuses the last one's memory
    watchdog.progress(Phase.STARTUP)
    tracker = start_trackers(recipe, plan, folder, main, events, state.step)
    events.write(Started(step=state.step, total_steps=spec.total_steps,
                         steps_per_epoch=spec.steps_per_epoch, world_size=plan.world_size))
    loop = TrainLoop(engine, trainable, spec, RunServices(folder, events, tracker, watchdog,
                                                          started))
    try:
        if plan.lr_find is not None:
            run_lr_range(loop, plan.lr_find)
        else:
            _train_and_save(loop, state, report)
        code = ExitCode.OK
    except StopTraining:
        code = ExitCode.STOPPED
    except CheckpointNotWritten as err:  # said in the event log; the previous one stands
        print(f"sft-launch worker: {err}", flush=True)
        code = ExitCode.NOT_SAVED
    except BaseException:  # a crash (torch's CheckpointException is no Exception): trackers
        tracker.finish((), JobState.FAILED)  # say FAILED; the heartbeat never says this rank
        raise  # is done (the other ranks' watchdogs name it)
    # The end of a run, written once.
    ended = {ExitCode.OK: JobState.COMPLETED, ExitCode.STOPPED: JobState.STOPPED}
    tracker.finish((folder.summary, folder.report) if code is ExitCode.OK else (),
                   ended.get(code, JobState.FAILED))
    accelerator.end_training()
    watchdog.stop()
    return code


def _training_spec(recipe: Recipe, plan: Plan, engine: Engine, folder: RunFolder,
                   events: EventLog, watchdog: Watchdog) -> TrainingSpec:
    """The task with its tokenizer and its data tokenized (once, cached), the label names
    written (rank 0), and the run's length in optimizer steps."""
    task = build_task(recipe, plan)
    task.tokenizer = tokenizer = task.load_tokenizer()
    encoded = encode_cached(task, tokenizer, recipe, plan, engine.accelerator, events,
                              watchdog)
    watchdog.progress(Phase.STARTUP)
    if engine.accelerator.is_main_process and encoded.label_names:
        LabelNames(names=tuple(encoded.label_names)).write(folder.label_names)
    steps_per_epoch = len(encoded.train) // plan.batch.global_size
    if steps_per_epoch == 0:
        raise ValueError(f"{len(encoded.train)} training examples are fewer than one global "
                         f"batch ({plan.batch.global_size})")
    total_steps = (plan.lr_find.steps if plan.lr_find else
                   recipe.train.max_steps or math.ceil(recipe.train.epochs * steps_per_epoch))
    return TrainingSpec(task, encoded, recipe, total_steps, steps_per_epoch)


def _loaded(engine: Engine, report: RankReport, folder: RunFolder) -> RankReport:
    """This rank's report once its model is loaded and the strategy verified: written, and
    said in one line."""
    plan = engine.plan
    report = dataclasses.replace(verify_strategy(engine, plan, report),
                                 loaded_rss_bytes=peak_rss_bytes())
    report.write(folder.rank_report(report.rank))
    print(f"sft-launch worker: rank {report.rank}/{plan.world_size} on {report.hostname}: "
          f"{report.strategy or 'one process'}, {report.local_param_numel:,} parameters held"
          + (f", gradient all-reduce: {report.gradient_sync}" if report.gradient_sync
             else ""), flush=True)
    return report


def _resumed(engine: Engine, folder: RunFolder, events: EventLog,
             watchdog: Watchdog) -> TrainerState:
    """The newest complete checkpoint restored, and its state; step 0's where there is none."""
    watchdog.progress(Phase.CHECKPOINT)
    loaded = load_latest(engine, folder.checkpoints, events)
    if loaded is None:
        events.message("--resume: no complete checkpoint yet, starting from step 0")
        return TrainerState()
    events.message(f"resumed from {folder.named(folder.checkpoint(loaded.step))}")
    return loaded


def _train_and_save(loop: TrainLoop, state: TrainerState, report: RankReport) -> None:
    """Train to the last step and save the final model; this rank's report, and on rank 0 the
    summary, report.png and the Ended event."""
    eval_metrics = loop.train(state)
    loop.watchdog.progress(Phase.SAVE)
    trained_rss = peak_rss_bytes()
    engine, folder = loop.engine, loop.folder
    main = loop.acc.is_main_process
    drawing = start_drawing(folder, f"{loop.plan.recipe_name}: {folder.path.name}") if main \
        else None
    engine.drop_optimizer_state()
    save_final(engine, loop.task.tokenizer, folder, loop.recipe.model.max_shard_size)
    report = dataclasses.replace(_finished(report, engine, loop), trained_rss_bytes=trained_rss)
    report.write(folder.rank_report(report.rank))
    if drawing is not None:
        summary = _summary(loop, state, report, eval_metrics)
        summary.write(folder.summary)
        wait_drawn(drawing, loop.events)
        loop.events.write(Ended(summary=summary))


def _summary(loop: TrainLoop, state: TrainerState, report: RankReport,
             eval_metrics: Metrics) -> Summary:
    """summary.json of a completed run: its counters over every launch, speeds, final eval."""
    plan, steps_per_epoch = loop.plan, loop.spec.steps_per_epoch
    efficiency = state.token_efficiency()
    return Summary(
        steps=state.step,
        epochs=round(state.step / steps_per_epoch, 4),
        samples=state.samples,
        tokens=state.tokens,
        train_loss=state.last_loss,
        wall_time_s=round(loop.wall_s(), 2),
        time_to_first_step_s=state.first_step_s,
        train_samples_per_s=(round(state.steps_timed * plan.batch.global_size
                                   / state.train_s, 2) if state.steps_timed else None),
        token_efficiency=round(efficiency, 4) if efficiency is not None else None,
        world_size=plan.world_size,
        strategy=report.strategy,
        data=loop.data.stats,
        eval=scalars(eval_metrics),
        eval_tables=tables(eval_metrics),
    )


def peak_rss_bytes() -> int:
    """This process's host-memory high-water mark so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _finished(report: RankReport, engine: Engine, loop: TrainLoop) -> RankReport:
    """The rank's report once trained: bytes held, peak memory, the weights' fingerprint."""
    return dataclasses.replace(
        report, held_bytes=loop.held_bytes,
        peak_rss_bytes=peak_rss_bytes(),
        peak_device_bytes=(torch.cuda.max_memory_allocated() if torch.cuda.is_available()
                           else None),
        final_weights_sha256=(weights_fingerprint(engine.unwrapped())
                              if report.strategy in REPLICATED else None))
