"""DDP's shared-memory gradient all-reduce, in 2 and 3 real gloo processes on this host: the
same gradients as gloo's own all-reduce, on every rank, through buckets of every size."""

from __future__ import annotations

import json
import os
import random
import subprocess
from pathlib import Path

import pytest
import torch
import torch.distributed as dist

from launcher.contract.vocabulary import GradientSync
from launcher.worker.engines import shared_memory


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Embedding(500, 48), torch.nn.Linear(48, 300),
                               torch.nn.Tanh(), torch.nn.Linear(300, 7))


def _rank(rank: int, world: int, port: int, local_world: int, slot_bytes: int | None,
          shm: Path | None, out: Path) -> None:
    if shm is not None:
        shared_memory.SHM = shm
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port),
                      LOCAL_WORLD_SIZE=str(local_world))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    ours = torch.nn.parallel.DistributedDataParallel(_model(), gradient_as_bucket_view=True,
                                                     bucket_cap_mb=0.02)
    bucket_bytes: list[int] = []
    if slot_bytes is None:
        sync = shared_memory.install(ours)
    else:  # slots smaller than some buckets: those go through gloo's all-reduce
        sync = GradientSync.SHARED_MEMORY
        path = [shared_memory._reserve(world * slot_bytes) if rank == 0 else None]
        dist.broadcast_object_list(path, src=0)
        slots = shared_memory._map(path[0], world, slot_bytes, rank)
        dist.barrier()
        if rank == 0:
            os.unlink(path[0])

        def hook(state, bucket):  # unannotated: DDP checks annotations as objects
            bucket_bytes.append(bucket.buffer().numel() * 4)
            return shared_memory.all_reduce_bucket(state, bucket)

        ours.register_comm_hook(slots, hook)
    gloo = torch.nn.parallel.DistributedDataParallel(_model(), bucket_cap_mb=0.02)
    torch.manual_seed(rank + 1)
    errors = []
    for _ in range(3):  # DDP rebuilds its buckets after the first step
        tokens = torch.randint(0, 500, (6, 5))
        for net in (ours, gloo):
            net.zero_grad(set_to_none=False)
            net(tokens).square().mean().backward()
        errors.append(max((a.grad - b.grad).abs().max().item()
                          for a, b in zip(ours.parameters(), gloo.parameters(), strict=True)))
    flat = torch.cat([p.grad.flatten() for p in ours.parameters()])
    every = [torch.empty_like(flat) for _ in range(world)]
    dist.all_gather(every, flat)
    (out / f"rank-{rank}.json").write_text(json.dumps({
        "sync": str(sync), "max_error": max(errors), "bucket_bytes": bucket_bytes,
        "same_on_every_rank": all(torch.equal(flat, other) for other in every)}))
    dist.barrier()
    # No teardown: freeing a Reducer races with gloo's worker threads (torch 2.13 can deadlock
    # there, in ~ProcessGroupGloo), and nothing of this process is needed any more.
    os._exit(0)


def _run(world: int, tmp_path: Path, local_world: int | None = None,
         slot_bytes: int | None = None, shm: Path | None = None) -> list[dict]:
    port = random.Random().randrange(20000, 40000)
    torch.multiprocessing.start_processes(
        _rank, args=(world, port, local_world or world, slot_bytes, shm, tmp_path),
        nprocs=world, start_method="spawn")
    return [json.loads((tmp_path / f"rank-{r}.json").read_text()) for r in range(world)]


def _grads_files() -> set[Path]:
    return set(shared_memory.SHM.glob("sft-launch-grads-*"))


@pytest.mark.parametrize("world", [2, 3])
def test_matches_gloo_on_every_rank_and_leaves_no_file(world: int, tmp_path: Path) -> None:
    before = _grads_files()
    ranks = _run(world, tmp_path)
    assert {r["sync"] for r in ranks} == {"shared-memory"}
    assert max(r["max_error"] for r in ranks) < 1e-6
    assert all(r["same_on_every_rank"] for r in ranks)
    assert _grads_files() == before  # unlinked once mapped


def test_buckets_larger_than_the_slots_fall_back_to_gloo(tmp_path: Path) -> None:
    slot = 80_000
    ranks = _run(2, tmp_path, slot_bytes=slot)
    sizes = ranks[0]["bucket_bytes"]
    assert min(sizes) <= slot < max(sizes), sizes  # both paths taken
    assert max(r["max_error"] for r in ranks) < 1e-6
    assert all(r["same_on_every_rank"] for r in ranks)


def test_ranks_on_several_hosts_keep_the_process_group(tmp_path: Path) -> None:
    ranks = _run(2, tmp_path, local_world=1)  # as on 2 nodes of one rank each
    assert {r["sync"] for r in ranks} == {"process-group"}
    assert max(r["max_error"] for r in ranks) == 0.0


def test_slot_holds_the_largest_bucket_ddp_builds() -> None:
    class Fake:  # what slot_bytes reads from a DDP model
        bucket_bytes_cap = 1000

        @staticmethod
        def parameters():
            return [torch.zeros(10, requires_grad=True), torch.zeros(300, requires_grad=True),
                    torch.zeros(5000)]  # frozen: no gradient, no bucket

    assert shared_memory.slot_bytes(Fake()) == 1280  # min(1240, 1000 + 1200), cache-aligned


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tmpfs needs root")
def test_a_full_dev_shm_keeps_the_process_group(tmp_path: Path) -> None:
    """A real 128 KiB tmpfs as /dev/shm: the 2 x 117 KB of slots do not fit: the ranks keep gloo."""
    small = tmp_path / "shm"
    small.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=128k", "tmpfs", str(small)], check=True)
    try:
        ranks = _run(2, tmp_path, shm=small)
        left = list(small.iterdir())
    finally:
        subprocess.run(["umount", str(small)], check=True)
    assert {r["sync"] for r in ranks} == {"process-group"}
    assert max(r["max_error"] for r in ranks) == 0.0
    assert left == []  # the file that did not fit was removed
