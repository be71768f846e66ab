"""The preflight's verdict on per-node measurements built by hand: a slow node by bandwidth, a
different torch version, a missing token file, too little disk, fewer GPUs; the JSON round trip;
doctor's Slurm script (rendered and parsed by bash only: no cluster here)."""

from __future__ import annotations

import dataclasses
import subprocess
from pathlib import Path

from launcher.contract.preflight import PreflightResult, RankCheck, decide, not_joined
from launcher.contract.vocabulary import BackendKind
from launcher.ops.doctor import write_slurm_script
from launcher.planner.make import make_plan
from launcher.recipe.load import load_recipe
from launcher.render.run_folder import write_run_folder
from tests.helpers.golden import CPU_RECIPE

VERSIONS = {"python": "3.11.7", "torch": "2.13.0", "transformers": "5.24.0",
            "accelerate": "1.15.0", "deepspeed": "0.19.8"}
GB = 10**9


def node(number: int, *, procs: int = 2, p2p: float = 1000.0, **changes: object) \
        -> list[RankCheck]:
    """The ranks of node `number`, healthy unless `changes` say otherwise."""
    base = RankCheck(rank=0, node=number, host=f"node-{number}", versions=dict(VERSIONS),
                     shared_folder=True, checkpoint_free_bytes=100 * GB,
                     cache_free_bytes=100 * GB, visible_devices=None, allreduce_mb_s=500.0,
                     p2p_mb_s=p2p, latency_ms=0.1)
    return [dataclasses.replace(base, rank=number * procs + local, **changes)
            for local in range(procs)]


def verdict(*nodes: list[RankCheck], size: int = GB) -> PreflightResult:
    return decide([r for n in nodes for r in n], procs_per_node=len(nodes[0]),
                  checkpoint_size=size, backend="gloo")


def named(result: PreflightResult) -> list[tuple[int, str]]:
    return [(f.node, f.check) for f in result.findings]


def test_healthy_nodes_are_healthy() -> None:
    result = verdict(node(0), node(1), node(2, p2p=900.0))
    assert result.healthy and named(result) == []
    assert [f.p2p_mb_s for f in result.node_figures] == [1000.0, 1000.0, 900.0]
    assert result.lines()[-1] == "healthy: every node passed every check"


def test_a_node_below_a_third_of_the_median_bandwidth_is_named_with_its_figure() -> None:
    result = verdict(node(0), node(1, p2p=200.0), node(2, p2p=1100.0), node(3))
    assert named(result) == [(1, "bandwidth")]
    assert "200.0 MB/s, below a third of 1000.0 MB/s (the median)" in result.findings[0].detail
    assert "BAD node 1 (node-1, rank(s) 2, 3): bandwidth" in "\n".join(result.lines())


def test_a_node_just_above_a_third_of_the_median_passes() -> None:
    assert verdict(node(0), node(1, p2p=340.0), node(2)).healthy


def test_with_two_nodes_the_slower_is_named_below_a_third_of_the_other() -> None:
    assert named(verdict(node(0), node(1, p2p=300.0))) == [(1, "bandwidth")]
    assert verdict(node(0), node(1, p2p=400.0)).healthy


def test_between_nodes_only_the_leaders_links_count() -> None:
    leader_only = [dataclasses.replace(r, p2p_mb_s=r.p2p_mb_s if r.rank % 2 == 0 else 0.0)
                   for r in node(1, p2p=100.0)]
    result = verdict(node(0), leader_only, node(2))
    assert [f.p2p_mb_s for f in result.node_figures] == [1000.0, 100.0, 1000.0]
    assert named(result) == [(1, "bandwidth")]


def test_one_node_is_compared_with_nothing() -> None:
    assert verdict(node(0, p2p=1.0)).healthy


def test_a_rank_with_another_torch_is_named_by_node_and_rank() -> None:
    other = node(2)
    other[1] = dataclasses.replace(other[1], versions={**VERSIONS, "torch": "0.0"})
    result = verdict(node(0), node(1), other)
    assert named(result) == [(2, "versions")]
    assert result.findings[0].ranks == (5,)
    assert "torch 0.0 where the others have 2.13.0" in result.findings[0].detail


def test_with_two_ranks_that_disagree_rank_0s_version_is_the_reference() -> None:
    first, second = node(0, procs=1), node(1, procs=1, versions={**VERSIONS, "torch": "0.0"})
    assert named(verdict(first, second)) == [(1, "versions")]


def test_a_node_that_cannot_read_the_token_is_named() -> None:
    result = verdict(node(0), node(1, shared_folder=False))
    assert named(result) == [(1, "shared_folder")]
    assert "same (shared) run folder" in result.findings[0].detail


def test_too_little_disk_for_two_checkpoints_or_the_cache_is_named() -> None:
    result = verdict(node(0), node(1, checkpoint_free_bytes=15 * GB // 10),
                     node(2, cache_free_bytes=GB // 2))
    assert named(result) == [(1, "disk"), (2, "disk")]
    assert "1.5 GB free for checkpoints, 2 checkpoints of 1.0 GB need 2.0 GB" in \
        result.findings[0].detail
    assert verdict(node(0, checkpoint_free_bytes=0), size=0).healthy  # no estimate: no check


def test_fewer_visible_gpus_than_processes_per_node_is_named() -> None:
    result = verdict(node(0, visible_devices=2), node(1, visible_devices=1))
    assert named(result) == [(1, "devices")]


def test_ranks_that_never_joined_are_named_by_the_plans_layout() -> None:
    result = not_joined([5], procs_per_node=2, world_size=6, nodes=3, waited_s=60,
                        backend="gloo")
    assert named(result) == [(2, "joined")] and not result.healthy
    assert "never joined the process group within 60 s" in "\n".join(result.lines())


def test_the_result_round_trips_through_its_file(tmp_path: Path) -> None:
    result = verdict(node(0), node(1, p2p=10.0))
    result.write(tmp_path / "preflight.json")
    assert PreflightResult.read(tmp_path / "preflight.json") == result


def test_doctors_slurm_script_runs_only_the_preflight_on_every_node(tmp_path: Path) -> None:
    (tmp_path / "recipe.toml").write_text(CPU_RECIPE)
    recipe = load_recipe(tmp_path / "recipe.toml", ["distributed.nodes=4"])
    plan = make_plan(recipe, recipe_file=str(tmp_path / "recipe.toml"),
                     backend=BackendKind.SLURM, gpus_here=0)
    folder = write_run_folder(tmp_path / "run", recipe, plan)
    write_slurm_script(recipe, plan, folder)
    script = folder.preflight_script.read_text()
    assert "#SBATCH --nodes=4" in script and "srun " in script
    assert "-m launcher.worker.preflight ." in script and "launcher.worker.supervisor" not in script
    assert "--rdzv_conf timeout=60" in script  # a node whose agent never comes: a minute
    subprocess.run(["bash", "-n", folder.preflight_script], check=True)


def test_the_nccl_settings_in_force_are_printed_with_their_nodes() -> None:
    same = {"version": "2.21.5", "NCCL_SOCKET_IFNAME": "ib0"}
    result = verdict(node(0, nccl=same), node(1, nccl=same),
                     node(2, nccl={**same, "NCCL_IB_DISABLE": "1"}))
    lines = result.lines()
    assert "NCCL on node-0, node-1: NCCL_SOCKET_IFNAME=ib0, version=2.21.5" in lines
    assert ("NCCL on node-2: NCCL_IB_DISABLE=1, NCCL_SOCKET_IFNAME=ib0, version=2.21.5"
            in lines)
    assert not any(line.startswith("NCCL") for line in verdict(node(0), node(1)).lines())
    assert PreflightResult.from_dict(result.to_dict()) == result
