"""What a resume may change (nodes and processes) and the plan of a resumed run."""

from __future__ import annotations

import dataclasses

from launcher.contract.checkpoints import newest_step
from launcher.contract.errors import UsageError
from launcher.contract.plan import Plan, WorldSpan
from launcher.contract.run_folder import RunFolder

# What a resume may not change: the checkpoints hold this model, sharded so, in this precision,
# and the example order is a function of the global batch. Nodes and processes may change.
KEPT_ON_RESUME = ("strategy", "offload", "precision", "model_path")


def resumed_plan(folder: RunFolder, plan: Plan) -> Plan:
    """The plan of a resumed run: as before, maybe with another layout (recorded in the
    world history from the step the run resumes at)."""
    if not folder.plan.is_file():
        raise UsageError(f"--resume: {folder.path} is not a run folder (no plan.json)")
    previous = Plan.read(folder.plan)
    changed = [f"{key}: {getattr(previous, key)} -> {getattr(plan, key)}"
               for key in KEPT_ON_RESUME if getattr(previous, key) != getattr(plan, key)]
    if previous.batch.global_size != plan.batch.global_size:
        changed.append(f"global batch: {previous.batch.global_size} -> {plan.batch.global_size}")
    if changed:
        raise UsageError(f"--resume: the run in {folder.path} was planned differently ("
                         + "; ".join(changed) + "); a resume may change the number of nodes and "
                         "processes per node, nothing else")
    history = previous.world_history
    if (history[-1].nodes, history[-1].procs_per_node) != (plan.nodes, plan.procs_per_node):
        history = (*history, WorldSpan(from_step=newest_step(folder.checkpoints),
                                       nodes=plan.nodes, procs_per_node=plan.procs_per_node))
    return dataclasses.replace(plan, world_history=history)
