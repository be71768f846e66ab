"""The preflight: checks every rank and its links before any model is loaded, names a bad node.

`python -m launcher.worker.preflight RUN_DIR`, one process per rank, started like the workers
(`accelerate launch`: RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT, LOCAL_RANK, GROUP_RANK). Each
rank gathers its host, versions, whether it sees the run folder rank 0 wrote into, free disk and
visible GPUs, then times an all-reduce (8 MiB float32; 1 MiB on links so slow that 8 MiB would
keep the job from ending within a minute) and point-to-point transfers around a ring
(the node leaders' ring when there are nodes, else all ranks'); every rank gets the same verdict
(`contract.preflight.decide`), rank 0 writes logs/preflight.json and prints the table. Exit 0
when healthy, 2 when a node is bad. A group not complete within 50 s ends the job, rank 0 naming
the ranks that never wrote their `preflight-joined` mark.

Test hook: SFT_LAUNCH_PREFLIGHT_FAKE_VERSION="RANK:PACKAGE=VERSION[,...]" makes rank RANK report
that version (e.g. "1:torch=0.0"); only this module reads it.
"""

from __future__ import annotations

import argparse
import os
import platform
import secrets
import shutil
import socket
import sys
import threading
import time
from collections.abc import Callable
from datetime import timedelta
from importlib import metadata
from pathlib import Path

from launcher.contract.cache import cache_base
from launcher.contract.plan import Plan
from launcher.contract.preflight import (
    VERSIONED,
    RankCheck,
    checkpoint_bytes,
    decide,
    not_joined,
)
from launcher.contract.run_folder import RunFolder
from launcher.contract.vocabulary import Device, ExitCode

JOIN_TIMEOUT_S = 50.0  # the watchdog's: it names who never joined before torch's 60 s run out
GROUP_TIMEOUT_S = 60.0
PAYLOAD_BYTES = 8 * 2**20
PROBE_BYTES = 2**20
SLOW_PROBE_S = 0.05  # 1 MiB all-reduced in 50 ms or more: below ~40 MB/s, measure with 1 MiB
REPETITIONS = 5
PINGS = 10
FAKE_VERSION = "SFT_LAUNCH_PREFLIGHT_FAKE_VERSION"


def versions(rank: int) -> dict[str, str]:
    """Python's and the training stack's versions ("" where not installed), after the test
    hook's fakes for this rank."""
    found = {"python": platform.python_version()}
    for package in VERSIONED[1:]:
        try:
            found[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            found[package] = ""
    for item in filter(None, os.environ.get(FAKE_VERSION, "").split(",")):
        who, _, setting = item.partition(":")
        package, _, version = setting.partition("=")
        if who.strip() == str(rank):
            found[package.strip()] = version.strip()
    return found


def nccl_settings(torch) -> dict[str, str]:
    """NCCL's version and the NCCL_* environment variables in force."""
    version = torch.cuda.nccl.version()
    return {"version": ".".join(map(str, version)) if isinstance(version, tuple)
            else str(version), **{k: v for k, v in os.environ.items() if k.startswith("NCCL_")}}


def free_bytes(path: Path) -> int:
    """Free bytes on the file system of `path`, or of its nearest existing parent."""
    path = path.resolve()
    while not path.exists():
        path = path.parent
    return shutil.disk_usage(path).free


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _env_int(*names: str, default: int = 0) -> int:
    for name in names:
        if os.environ.get(name, "").strip():
            return int(os.environ[name])
    return default


class Watchdog:
    """Ends this process when the group is not complete within JOIN_TIMEOUT_S; rank 0 first
    names the ranks whose `preflight-joined` mark is missing and writes logs/preflight.json."""

    def __init__(self, folder: RunFolder, plan: Plan, rank: int, world: int,
                 backend: str) -> None:
        self.folder, self.plan, self.rank, self.world, self.backend = (folder, plan, rank,
                                                                       world, backend)
        self.timer = threading.Timer(JOIN_TIMEOUT_S, self.fire)
        self.timer.daemon = True

    def fire(self) -> None:
        missing = [r for r in range(self.world) if not self.folder.preflight_joined(r).exists()]
        if self.rank == 0:
            result = not_joined(missing, self.plan.procs_per_node, self.world, self.plan.nodes,
                                JOIN_TIMEOUT_S, self.backend)
            result.write(self.folder.preflight)
            print("\n".join(result.lines()) if missing else
                  f"preflight: every rank started but the process group was not complete "
                  f"within {JOIN_TIMEOUT_S:.0f} s (a rank cannot reach "
                  f"{os.environ.get('MASTER_ADDR')}:{os.environ.get('MASTER_PORT')}?)",
                  flush=True)
        else:
            print(f"preflight: rank {self.rank}: the process group was not complete within "
                  f"{JOIN_TIMEOUT_S:.0f} s", file=sys.stderr, flush=True)
        os._exit(ExitCode.USAGE)


def _payload_bytes(dist, torch, device: str, sync: Callable[[], None]) -> int:
    """PAYLOAD_BYTES, or PROBE_BYTES when a PROBE_BYTES all-reduce takes SLOW_PROBE_S or more on
    some rank (a slow link: 8 MiB at 20 Mbit/s takes 3.4 s a transfer, and the preflight must
    end within a minute); every rank gets the same answer (the slowest's time, all-reduced)."""
    probe = torch.ones(PROBE_BYTES // 4, dtype=torch.float32, device=device)
    dist.all_reduce(probe)  # warm-up: the first collective sets up the links
    sync()
    start = time.perf_counter()
    dist.all_reduce(probe)
    sync()
    took = torch.tensor([time.perf_counter() - start], dtype=torch.float64, device=device)
    dist.all_reduce(took, op=dist.ReduceOp.MAX)
    return PROBE_BYTES if took.item() >= SLOW_PROBE_S else PAYLOAD_BYTES


def measure(dist, torch, device: str, rank: int, world: int, ring: list[int]) \
        -> tuple[float, float, float]:
    """(all-reduce bus MB/s, best ring link MB/s, ring link latency ms) of this rank; a rank
    outside `ring` gets 0 for the last two."""
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    size = _payload_bytes(dist, torch, device, sync)
    payload = torch.ones(size // 4, dtype=torch.float32, device=device)
    dist.all_reduce(payload)  # warm-up
    sync()
    start = time.perf_counter()
    for _ in range(REPETITIONS):
        dist.all_reduce(payload)
    sync()
    took = (time.perf_counter() - start) / REPETITIONS
    allreduce = 2 * (world - 1) / world * size / took / 1e6
    links: dict[tuple[int, int], tuple[float, float]] = {}  # (src, dst): MB/s, ms
    tiny = torch.zeros(1, dtype=torch.float32, device=device)
    for i, src in enumerate(ring if len(ring) > 1 else []):
        dst = ring[(i + 1) % len(ring)]
        dist.barrier()
        if rank == src:
            for _ in range(REPETITIONS + 1):
                dist.send(payload, dst)
            for _ in range(PINGS):
                dist.recv(tiny, dst)
                dist.send(tiny, dst)
        elif rank == dst:
            dist.recv(payload, src)  # warm-up
            sync()
            start = time.perf_counter()
            for _ in range(REPETITIONS):
                dist.recv(payload, src)
            sync()
            bandwidth = size / ((time.perf_counter() - start) / REPETITIONS) / 1e6
            start = time.perf_counter()
            for _ in range(PINGS):
                dist.send(tiny, src)
                dist.recv(tiny, src)
            sync()
            latency = (time.perf_counter() - start) / PINGS / 2 * 1000
            links[(src, dst)] = (bandwidth, latency)
    gathered: list[dict | None] = [None] * world
    dist.all_gather_object(gathered, links)
    # A rank's figure: the better of its two ring links (a node is blamed when both are slow);
    # in a ring of two, the link it receives on (the other way is the other end's figure).
    mine = [figure for part in gathered for (src, dst), figure in (part or {}).items()
            if dst == rank or (src == rank and len(ring) > 2)]
    if not mine:
        return allreduce, 0.0, 0.0
    return allreduce, max(f[0] for f in mine), min(f[1] for f in mine)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m launcher.worker.preflight",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("run_dir", type=Path)
    folder = RunFolder(parser.parse_args(argv).run_dir)
    plan = Plan.read(folder.plan)
    rank, world = _env_int("RANK"), _env_int("WORLD_SIZE", default=1)
    local_rank = _env_int("LOCAL_RANK")
    node = _env_int("GROUP_RANK", "NODE_RANK", default=rank // plan.procs_per_node)
    host = socket.gethostname()
    if rank == 0:
        folder.preflight_token.write_text(secrets.token_hex(16), encoding="utf-8")
    import torch
    import torch.distributed as dist

    if plan.device is Device.CUDA and not torch.cuda.is_available():
        # It cannot join an nccl group: it stays away, and rank 0 names it as never joined.
        print(f"preflight: rank {rank} on {host}: the plan runs on GPUs and torch sees none",
              file=sys.stderr, flush=True)
        return ExitCode.USAGE
    joined = folder.preflight_joined(rank)
    joined.parent.mkdir(parents=True, exist_ok=True)
    joined.write_text(host, encoding="utf-8")
    gpu = plan.device is Device.CUDA
    backend = "nccl" if gpu else "gloo"
    device = f"cuda:{local_rank}" if gpu else "cpu"
    if gpu:
        torch.cuda.set_device(local_rank)
    watchdog = Watchdog(folder, plan, rank, world, backend)
    watchdog.timer.start()
    if "MASTER_PORT" not in os.environ:  # one plain process: a group of its own
        os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
        os.environ["MASTER_PORT"] = str(_free_port())
    dist.init_process_group(backend, rank=rank, world_size=world,
                            timeout=timedelta(seconds=GROUP_TIMEOUT_S))
    token: list[str | None] = [None]
    if rank == 0:
        token = [folder.preflight_token.read_text(encoding="utf-8")]
    dist.broadcast_object_list(token, src=0)
    watchdog.timer.cancel()
    try:
        seen = folder.preflight_token.read_text(encoding="utf-8")
    except OSError:
        seen = None
    layout: list[tuple[int, int, int] | None] = [None] * world
    dist.all_gather_object(layout, (rank, node, local_rank))
    places = [place for place in layout if place is not None]
    ring = list(range(world))
    if len({n for _, n, _ in places}) > 1:  # between nodes: their leaders' links
        ring = sorted(r for r, _, lr in places if lr == 0)
    allreduce, p2p, latency = measure(dist, torch, device, rank, world, ring)
    size = checkpoint_bytes(plan)
    check = RankCheck(
        rank=rank, node=node, host=host, versions=versions(rank), shared_folder=seen == token[0],
        checkpoint_free_bytes=free_bytes(folder.checkpoints), cache_free_bytes=free_bytes(
            cache_base()), visible_devices=torch.cuda.device_count() if gpu else None,
        allreduce_mb_s=allreduce, p2p_mb_s=p2p, latency_ms=latency,
        nccl=nccl_settings(torch) if gpu else {})
    everyone: list[dict | None] = [None] * world
    dist.all_gather_object(everyone, check.to_dict())
    result = decide([RankCheck.from_dict(c) for c in everyone], procs_per_node=plan.procs_per_node,
                    checkpoint_size=size, backend=backend)
    if rank == 0:
        result.write(folder.preflight)
        print("\n".join(result.lines()), flush=True)
    dist.barrier()
    dist.destroy_process_group()
    return ExitCode.OK if result.healthy else ExitCode.USAGE


if __name__ == "__main__":
    sys.exit(main())
