"""The training run on one rank, start to finish, in the order it happens."""

from __future__ import annotations

import dataclasses
import math
import resource
import time

import torch
from accelerate.utils import set_seed

from launcher.contract.events import Ended, EventLog, Started
from launcher.contract.plan import Plan
from launcher.contract.reports import LabelNames, Summary
from launcher.contract.run_folder import RunFolder
from launcher.contract.vocabulary import Strategy
from launcher.recipe.schema import Recipe
from launcher.tasks.lora import apply_lora
from launcher.tasks.registry import build_task
from launcher.worker.checkpoint import TrainerState, load_latest
from launcher.worker.engines import make_engine
from launcher.worker.final import save_final, weights_fingerprint
from launcher.worker.loop import TrainLoop, scalars, tables
from launcher.worker.optim import make_optimizer, make_scheduler
from launcher.worker.preprocess import prepare_cached
from launcher.worker.startup import verify_launch, verify_strategy, verify_world
from launcher.worker.tracking import start_tracking

# Strategies whose ranks all hold the whole model: their fingerprints must be equal.
REPLICATED = (None, Strategy.DDP, Strategy.ZERO2)


def run(folder: RunFolder, recipe: Recipe, plan: Plan, *, resume: bool) -> None:
    """Train, evaluate, checkpoint and save the final model as the plan says."""
    started = time.time()
    torch.set_num_threads(plan.threads_per_proc)
    verify_launch(plan)
    engine = make_engine(plan, folder.path)
    accelerator = engine.accelerator
    main = accelerator.is_main_process
    report = verify_world(accelerator, plan)
    events = EventLog(folder.events, main)
    set_seed(recipe.train.seed)
    torch.use_deterministic_algorithms(plan.device == "cpu", warn_only=True)

    task = build_task(recipe, plan)
    task.tokenizer = tokenizer = task.load_tokenizer()
    prepared = prepare_cached(task, tokenizer, recipe, plan, accelerator, events)
    if main and prepared.label_names:
        LabelNames(names=tuple(prepared.label_names)).write(folder.label_names)
    steps_per_epoch = len(prepared.train) // plan.batch.global_size
    if steps_per_epoch == 0:
        raise ValueError(f"{len(prepared.train)} training examples are fewer than one global "
                         f"batch ({plan.batch.global_size})")
    total_steps = recipe.train.max_steps or math.ceil(recipe.train.epochs * steps_per_epoch)
    model = apply_lora(task.load_model(prepared), recipe)
    scheduler = engine.prepare(model, lambda m: make_optimizer(m, recipe),
                               lambda optimizer: make_scheduler(optimizer, recipe, total_steps))
    report = verify_strategy(engine, plan, report)
    report.write(folder.rank_report(report.rank))
    print(f"sft-launch worker: rank {report.rank}/{plan.world_size} on {report.hostname}: "
          f"{report.strategy or 'one process'}, {report.local_param_numel:,} parameters held",
          flush=True)

    state = TrainerState()
    if resume:
        loaded = load_latest(engine, folder.checkpoints)
        if loaded is None:
            events.message("--resume: no complete checkpoint yet, starting from step 0")
        else:
            state = loaded
            events.message(f"resumed from checkpoints/step-{state.step}")
    tracker = start_tracking(recipe, plan, folder, main)
    events.write(Started(step=state.step, total_steps=total_steps,
                         steps_per_epoch=steps_per_epoch, world_size=plan.world_size))

    loop = TrainLoop(engine, task, prepared, plan, recipe, scheduler, events, tracker)
    eval_metrics = loop.train(state, total_steps, steps_per_epoch, folder, started)
    save_final(engine, tokenizer, folder)
    report = dataclasses.replace(
        report, held_bytes=loop.held_bytes,
        peak_rss_bytes=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        final_weights_sha256=(weights_fingerprint(engine.unwrapped())
                              if report.strategy in REPLICATED else None))
    report.write(folder.rank_report(report.rank))
    if main:
        summary = Summary(
            steps=state.step,
            epochs=round(state.step / steps_per_epoch, 4),
            samples=state.samples,
            tokens=state.tokens,
            train_loss=loop.last_loss,
            wall_time_s=round(time.time() - started, 2),
            time_to_first_step_s=round(loop.first_step_s or 0.0, 2),
            train_samples_per_s=round(
                loop.steps_run * plan.batch.global_size / max(loop.train_s, 1e-9), 2),
            token_efficiency=round(loop.efficiency(), 4),
            world_size=plan.world_size,
            strategy=report.strategy,
            data=prepared.stats,
            eval=scalars(eval_metrics),
            eval_tables=tables(eval_metrics),
        )
        summary.write(folder.summary)
        events.write(Ended(summary=summary))
    tracker.finish()
    accelerator.end_training()
