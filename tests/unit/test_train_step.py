"""`TrainLoop.step` against the same steps written out in plain PyTorch, as nanoGPT writes them:
every step's loss, learning rate and gradient norm, and the final weights, equal to the bit.

One process, in this process (no process group): the real engine, task, data feed and loop on
the tiny Llama, with several micro-batches per step, a warmup and decay, and clipping that bites;
so a change to the loss scaling, the clipping or the order of optimizer and schedule fails it.
"""

from __future__ import annotations

import copy
import time
from datetime import timedelta
from pathlib import Path

import torch
from accelerate.utils import set_seed

from launcher.contract.events import EventLog
from launcher.contract.run_folder import RunFolder
from launcher.recipe.schema import Recipe
from launcher.tasks.base import Task, build_task
from launcher.trackers.base import Trackers
from launcher.worker.engines import make_engine
from launcher.worker.feed import StepInput
from launcher.worker.loop import RunServices, TrainLoop
from launcher.worker.trainable import TrainingSpec
from launcher.worker.watchdog import Watchdog
from tests.conftest import REPO
from tests.helpers.plans import planned

ALPACA = REPO / "recipes" / "alpaca-tiny-llama.toml"
STEPS, WARMUP, MAX_NORM = 5, 2, 0.5
Trace = list[tuple[float, float, float]]  # each step's (loss, lr, pre-clip gradient norm)


def plain_pytorch(model: torch.nn.Module, task: Task, steps: list[StepInput],
                  recipe: Recipe) -> Trace:
    """Train `model` on `steps` by hand: per micro-batch the task's summed loss over all the
    step's loss units (the global mean), backward; clip; AdamW (no decay on 1-D parameters);
    the linear schedule after its warmup."""
    train = recipe.train
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(
        [{"params": [p for p in params if p.ndim >= 2], "weight_decay": train.weight_decay},
         {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0}],
        lr=train.lr, fused=True)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: s / WARMUP if s < WARMUP else (STEPS - s) / (STEPS - WARMUP))
    model.train()
    trace = []
    for step in steps:
        lr = schedule.get_last_lr()[0]
        loss_sum = torch.zeros(())
        for part in step.micro:
            summed, _ = task.loss_sum(model, part.batch)
            (summed * (1.0 / step.units)).backward()
            loss_sum += summed.detach()
        norm = torch.nn.utils.clip_grad_norm_(model.parameters(), MAX_NORM)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        schedule.step()
        trace.append((float(loss_sum) / step.units, lr, float(norm)))
    return trace


def test_the_step_is_plain_pytorch_to_the_bit(tiny_llama_dir: Path, tmp_path: Path) -> None:
    recipe, plan = planned(ALPACA, tiny_llama_dir, "distributed.procs_per_node=1",
                           "train.global_batch_size=8", "train.micro_batch_size=2",
                           f"train.max_steps={STEPS}", "train.schedule='linear'",
                           f"train.warmup_steps={WARMUP}", f"train.max_grad_norm={MAX_NORM}",
                           "data.max_train_samples=64")
    assert plan.world_size == 1 and plan.batch.grad_accum == 4
    folder = RunFolder(tmp_path / "run")
    folder.path.mkdir()
    engine = make_engine(plan, folder, timedelta(minutes=5))
    set_seed(recipe.train.seed)
    task = build_task(recipe, plan)
    task.tokenizer = task.load_tokenizer()
    data = task.encode_data(task.tokenizer)
    spec = TrainingSpec(task, data, recipe, STEPS, len(data.train) // plan.batch.global_size)
    trainable = engine.build(spec)
    reference, rng = copy.deepcopy(trainable.model), torch.get_rng_state()
    watchdog = Watchdog(folder, 0, 1, 0).start()
    try:
        loop = TrainLoop(engine, trainable, spec, RunServices(
            folder, EventLog(folder.events, True), Trackers(), watchdog, time.time()))
        loop.model.train()
        inputs = loop.inputs(0, STEPS)
        results = [loop.step(inputs) for _ in range(STEPS)]
    finally:
        watchdog.stop()

    torch.set_rng_state(rng)
    steps = list(loop.inputs(0, STEPS))
    assert all(len(step.micro) > 1 for step in steps)  # gradients accumulate
    expected = plain_pytorch(reference, task, steps, recipe)
    assert [(r.loss, r.lr, r.grad_norm) for r in results] == expected
    assert any(r.grad_norm > MAX_NORM for r in results)  # clipping changed some step
    assert loop.state.step == STEPS
    trained = dict(trainable.model.named_parameters())
    for name, param in reference.named_parameters():
        assert torch.equal(trained[name], param), name
