"""Start-up on every rank: prove the process group and strategy are the planned ones.

Accelerate on a GPU-less host can silently start unconnected processes or drop DeepSpeed, so
the worker refuses to train unless world size, rank, node rank and the active strategy match
`plan.json`. Each rank writes `logs/rank-<R>.json` with what it saw.
"""

from __future__ import annotations

import json
import os
import socket
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from accelerate import Accelerator
from accelerate.utils import DistributedType

from launcher.errors import LaunchError
from launcher.plan.plan import Plan
from launcher.render.run_folder import RunFolder
from launcher.worker.shards import local_shard

if TYPE_CHECKING:
    from launcher.worker.engines import Engine

# Long enough for preprocessing a large dataset on rank 0 while the others wait.
PROCESS_GROUP_TIMEOUT = timedelta(hours=2)


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


def verify_world(accelerator: Accelerator, plan: Plan) -> dict[str, Any]:
    """Fail loudly, naming this node and rank, unless the process group is the planned one."""
    node_rank, local_rank = expected_ranks()
    seen = {
        "hostname": socket.gethostname(),
        "rank": accelerator.process_index,
        "local_rank": local_rank,
        "node_rank": node_rank,
        "world_size": accelerator.num_processes,
        "distributed_type": str(accelerator.distributed_type),
        "backend": torch.distributed.get_backend() if torch.distributed.is_initialized() else None,
        "group_size": torch.distributed.get_world_size() if torch.distributed.is_initialized()
        else 1,
    }
    problems = []
    if seen["world_size"] != plan.world_size or seen["group_size"] != plan.world_size:
        problems.append(f"world size is {seen['world_size']} (process group "
                        f"{seen['group_size']}), the plan says {plan.world_size}")
    expected_rank = node_rank * plan.procs_per_node + local_rank
    if seen["rank"] != expected_rank:
        problems.append(f"rank is {seen['rank']}, expected {expected_rank} for node rank "
                        f"{node_rank} local rank {local_rank}")
    if node_rank >= plan.nodes:
        problems.append(f"node rank {node_rank} but the plan has {plan.nodes} node(s)")
    slurm_node = os.environ.get("SLURM_NODEID")  # set by srun on each node of a Slurm job
    if plan.backend == "slurm" and slurm_node is not None and int(slurm_node) != node_rank:
        problems.append(f"node rank {node_rank} (GROUP_RANK) but Slurm says this is node "
                        f"{slurm_node} (SLURM_NODEID)")
    if plan.world_size > 1 and accelerator.distributed_type == DistributedType.NO:
        problems.append("accelerate started without a process group")
    if problems:
        raise StartupMismatch(
            f"node {seen['hostname']} (node rank {node_rank}, rank {seen['rank']}): "
            + "; ".join(problems) + ". Refusing to train on a setup that differs from plan.json."
        )
    return seen


def verify_strategy(engine: Engine, plan: Plan) -> dict[str, Any]:
    """The strategy really active after `prepare`, and this rank's parameter count."""
    active = engine.active_strategy()
    wanted = "single" if plan.world_size == 1 and plan.strategy in ("ddp", "fsdp") else (
        plan.strategy)
    if active != wanted:
        raise StartupMismatch(
            f"rank {engine.accelerator.process_index}: strategy {active!r} is active, the plan "
            f"says {wanted!r}. Refusing to train on a setup that differs from plan.json."
        )
    local = sum(local_shard(p).numel() for p in engine.model.parameters())
    return {"strategy": active, "local_param_numel": local}


def write_rank_report(folder: RunFolder, rank: int, report: dict[str, Any]) -> None:
    path: Path = folder.logs / f"rank-{rank}.json"
    path.write_text(json.dumps(report, indent=2) + "\n")
