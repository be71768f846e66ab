"""One engine per data-parallel strategy, built from the plan (`make_engine`)."""

from __future__ import annotations

from datetime import timedelta

from launcher.contract.plan import Plan
from launcher.contract.run_folder import RunFolder
from launcher.contract.vocabulary import Strategy
from launcher.worker.engines.accelerate_engine import AccelerateEngine
from launcher.worker.engines.base import Engine
from launcher.worker.engines.fsdp_engine import FsdpEngine

ENGINES: dict[Strategy | None, type[Engine]] = {
    None: AccelerateEngine,  # one plain process
    Strategy.DDP: AccelerateEngine,
    Strategy.ZERO2: AccelerateEngine,
    Strategy.ZERO3: AccelerateEngine,
    Strategy.FSDP: FsdpEngine,
}


def make_engine(plan: Plan, folder: RunFolder, timeout: timedelta) -> Engine:
    """The engine for the strategy the plan runs, with its Accelerator (the process group,
    whose collectives give up after `timeout`)."""
    return ENGINES[plan.active_strategy](plan, folder, timeout)
