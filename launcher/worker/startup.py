"""Start-up on every rank: prove the process group and strategy are the planned ones.

Accelerate on a GPU-less host can silently start unconnected processes or drop DeepSpeed, so
the worker refuses to train unless world size, rank, node rank and the active strategy match
`plan.json`. Each rank writes `logs/rank-<R>.json` (`RankReport`) with what it saw.
"""

from __future__ import annotations

import dataclasses
import os
import socket

import torch
from accelerate import Accelerator
from accelerate.utils import DistributedType

from launcher.contract.errors import LaunchError
from launcher.contract.plan import Plan
from launcher.contract.reports import RankReport
from launcher.contract.vocabulary import BackendKind
from launcher.worker.engines.base import Engine
from launcher.worker.shards import local_shard


class StartupMismatch(LaunchError):
    """The processes that started are not the run the plan describes."""


def expected_ranks() -> tuple[int, int]:
    """(node rank, local rank) as the launcher told this process."""
    return int(os.environ.get("GROUP_RANK", os.environ.get("NODE_RANK", "0"))), int(
        os.environ.get("LOCAL_RANK", "0")
    )


def verify_launch(plan: Plan) -> None:
    """Before any process group: the launcher started as many processes as the plan says."""
    launched = int(os.environ.get("WORLD_SIZE", "1"))
    if launched != plan.world_size:
        node_rank, _ = expected_ranks()
        raise StartupMismatch(
            f"node {socket.gethostname()} (node rank {node_rank}, rank "
            f"{os.environ.get('RANK', '0')}): world size is {launched} (WORLD_SIZE from the "
            f"launcher), the plan says {plan.world_size}. Refusing to train on a setup that "
            "differs from plan.json: start it with launch.sh, job.sbatch or "
            "`accelerate launch --config_file accelerate.yaml -m launcher.worker .`"
        )


def verify_world(accelerator: Accelerator, plan: Plan) -> RankReport:
    """Fail loudly, naming this node and rank, unless the process group is the planned one."""
    node_rank, local_rank = expected_ranks()
    grouped = torch.distributed.is_initialized()
    seen = RankReport(
        hostname=socket.gethostname(),
        rank=accelerator.process_index,
        local_rank=local_rank,
        node_rank=node_rank,
        world_size=accelerator.num_processes,
        group_size=torch.distributed.get_world_size() if grouped else 1,
        distributed_type=str(accelerator.distributed_type),
        process_group_backend=torch.distributed.get_backend() if grouped else None,
    )
    problems = []
    if seen.world_size != plan.world_size or seen.group_size != plan.world_size:
        problems.append(f"world size is {seen.world_size} (process group "
                        f"{seen.group_size}), the plan says {plan.world_size}")
    expected_rank = node_rank * plan.procs_per_node + local_rank
    if seen.rank != expected_rank:
        problems.append(f"rank is {seen.rank}, expected {expected_rank} for node rank "
                        f"{node_rank} local rank {local_rank}")
    if node_rank >= plan.nodes:
        problems.append(f"node rank {node_rank} but the plan has {plan.nodes} node(s)")
    slurm_node = os.environ.get("SLURM_NODEID")  # set by srun on each node of a Slurm job
    if plan.backend is BackendKind.SLURM and slurm_node is not None and int(slurm_node) != (
            node_rank):
        problems.append(f"node rank {node_rank} (GROUP_RANK) but Slurm says this is node "
                        f"{slurm_node} (SLURM_NODEID)")
    if plan.world_size > 1 and accelerator.distributed_type == DistributedType.NO:
        problems.append("accelerate started without a process group")
    if problems:
        raise StartupMismatch(
            f"node {seen.hostname} (node rank {node_rank}, rank {seen.rank}): "
            + "; ".join(problems) + ". Refusing to train on a setup that differs from plan.json."
        )
    return seen


def verify_strategy(engine: Engine, plan: Plan, report: RankReport) -> RankReport:
    """The strategy really active after `Engine.build`, and this rank's parameter count."""
    active, offload = engine.active_strategy(), engine.active_offload()
    wanted = plan.active_strategy
    wanted_offload = plan.offload if wanted is not None and wanted.uses_deepspeed else ()
    if (active, offload) != (wanted, wanted_offload):
        raise StartupMismatch(
            f"rank {engine.accelerator.process_index}: {_describe(active, offload)} is active, "
            f"the plan says {_describe(wanted, wanted_offload)} "
            f"({engine.accelerator.distributed_type}). Refusing to train on a setup that "
            "differs from plan.json."
        )
    local = sum(local_shard(p).numel() for p in engine.model.parameters())
    return dataclasses.replace(report, strategy=active, gradient_sync=engine.gradient_sync,
                               local_param_numel=local)


def _describe(strategy: object, offload: tuple) -> str:
    name = "one plain process" if strategy is None else f"strategy {strategy}"
    return name + (f" offloading {', '.join(offload)}" if offload else "")

