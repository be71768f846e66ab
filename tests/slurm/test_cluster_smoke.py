"""Smoke test of the Slurm test cluster: a 2-node job whose two torchrun agents, one per
node, form a gloo process group across the nodes' network namespaces and all_reduce."""

from __future__ import annotations

import json
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest

# Runs on each node, started by torchrun (which sets RANK, WORLD_SIZE, MASTER_ADDR, ...).
WORKER = textwrap.dedent(
    """
    import json, os, socket, sys
    from pathlib import Path

    import torch
    import torch.distributed as dist

    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    value = torch.tensor([float(rank + 1)])
    dist.all_reduce(value)  # 1 + 2 = 3 only if both nodes took part
    host = socket.gethostname()
    hosts = [None] * world
    dist.all_gather_object(hosts, host)
    result = {
        "rank": rank,
        "world_size": world,
        "value": value.item(),
        "hostname": host,
        "address": socket.gethostbyname(host),
        "all_hostnames": hosts,
        "slurm_nodeid": os.environ["SLURM_NODEID"],
        "master_addr": os.environ["MASTER_ADDR"],
    }
    Path(sys.argv[1], f"rank{rank}.json").write_text(json.dumps(result))
    dist.destroy_process_group()
    """
)

# $SLURM_NODEID is expanded by bash on each node (single quotes), not in the batch shell.
BATCH = textwrap.dedent(
    """\
    #!/bin/bash
    #SBATCH --job-name=sft-smoke
    #SBATCH --nodes=2
    #SBATCH --ntasks-per-node=1
    #SBATCH --time=2
    set -euo pipefail
    MASTER_ADDR=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)
    MASTER_PORT=$((20000 + SLURM_JOB_ID % 20000))  # two jobs on one node must not collide
    export MASTER_ADDR MASTER_PORT OMP_NUM_THREADS=1
    echo "nodes=$SLURM_JOB_NODELIST master=$MASTER_ADDR:$MASTER_PORT"
    srun --kill-on-bad-exit=1 bash -c 'exec {python} -m torch.distributed.run \\
        --nnodes 2 --nproc-per-node 1 --node-rank "$SLURM_NODEID" \\
        --master-addr "$MASTER_ADDR" --master-port "$MASTER_PORT" {worker} {results}'
    """
)


@dataclass(frozen=True)
class NodeResult:
    """What WORKER wrote on one node (`rank<R>.json`; this test's file, not a run folder's)."""

    rank: int
    world_size: int
    value: float
    hostname: str
    address: str
    all_hostnames: list[str]
    slurm_nodeid: str
    master_addr: str

    @classmethod
    def read(cls, path: Path) -> NodeResult:
        return cls(**json.loads(path.read_text()))


@pytest.mark.slurm
def test_two_node_gloo_all_reduce(sbatch, tmp_path: Path) -> None:
    python = Path(sys.executable)  # the project's venv; the filesystem is shared with nodes
    worker = tmp_path / "allreduce.py"
    worker.write_text(WORKER)
    results = tmp_path / "results"
    results.mkdir()
    script = tmp_path / "smoke.sbatch"
    script.write_text(BATCH.format(python=python, worker=worker, results=results))

    job = sbatch(script, timeout=60)

    assert job.state == "COMPLETED", f"job {job.job_id} {job.state} {job.exit_code}:\n{job.output}"
    ranks = [NodeResult.read(results / f"rank{r}.json") for r in range(2)]
    assert [r.rank for r in ranks] == [0, 1]
    assert all(r.world_size == 2 for r in ranks)
    assert all(r.value == 3.0 for r in ranks), ranks  # the all_reduce really crossed nodes
    hostnames = [r.hostname for r in ranks]
    assert len(set(hostnames)) == 2, f"both ranks ran on one node: {hostnames}"
    assert all(h.startswith("n") and h[1:].isdigit() for h in hostnames), hostnames
    assert all(r.all_hostnames == hostnames for r in ranks)  # each saw the other
    assert len({r.address for r in ranks}) == 2, ranks  # two namespaces, two addresses
    assert sorted(r.slurm_nodeid for r in ranks) == ["0", "1"]
    assert ranks[0].master_addr == hostnames[0]  # node 0 hosts the rendezvous
