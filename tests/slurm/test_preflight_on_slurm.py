"""The preflight on the real test cluster: before training, a job on several nodes checks every
node; a node whose link is slowed (a real `tc` token-bucket limit on its interfaces) is named with
its bandwidth and the job ends within a minute, nothing trained; `sft-launch doctor` runs the same
checks alone on Slurm and names a node with another torch version."""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from launcher.contract.job import FinalState
from launcher.contract.preflight import PreflightResult
from launcher.contract.run_folder import RunFolder
from tests.helpers.run_folder import job, rank_reports
from tests.slurm.jobs import NO_TRACKING, QUICKSTART, SHORT, job_log, sft, status

pytestmark = pytest.mark.slurm
NODES_1_TO_3 = '["--nodelist=n[1-3]"]'


@contextmanager
def slowed(node: int, rate: str, inbound_only: bool = False) -> Iterator[None]:
    """Node `node`'s link limited to `rate`: its veth's host end (what it receives) and, unless
    `inbound_only`, its own end inside its namespace (what it sends)."""
    ends = [["tc"], ["ip", "netns", "exec", f"sft-n{node}", "tc"]][:1 if inbound_only else 2]
    devices = [f"sftv-n{node}", "eth0"][:len(ends)]
    try:
        for tc, dev in zip(ends, devices, strict=True):
            subprocess.run([*tc, "qdisc", "add", "dev", dev, "root", "tbf", "rate", rate,
                            "burst", "32kbit", "latency", "400ms"], check=True, timeout=30)
        yield
    finally:
        for tc, dev in zip(ends, devices, strict=True):
            subprocess.run([*tc, "qdisc", "del", "dev", dev, "root"], timeout=30)


def seconds(elapsed: str) -> int:
    """Slurm's [D-]HH:MM:SS (or MM:SS) in seconds."""
    days, _, clock = elapsed.rpartition("-")
    parts = [int(p) for p in clock.split(":")]
    while len(parts) < 3:
        parts.insert(0, 0)
    return int(days or 0) * 86400 + parts[0] * 3600 + parts[1] * 60 + parts[2]


def test_a_node_with_a_slow_link_is_named_and_the_job_ends_within_a_minute(env, tmp_path):
    run_dir = tmp_path / "run"
    with slowed(2, "20mbit"):
        launched = sft(env, QUICKSTART, "--nodes", 3, "--procs-per-node", 1, "--run-dir",
                       run_dir, "--wait", *SHORT, "--set", f"slurm.extra_sbatch={NODES_1_TO_3}",
                       "--set", "train.global_batch_size=33")
    said = launched.stdout + launched.stderr
    assert launched.returncode != 0, said
    record = job(run_dir)
    assert record.final_state is FinalState.PREFLIGHT, record
    assert re.search(r"node 1 \(n2\): bandwidth: .*\d+(\.\d+)? MB/s", record.final_reason), record
    result = PreflightResult.read(RunFolder(run_dir).preflight)
    (finding,) = result.findings
    slow = {f.host: f.p2p_mb_s for f in result.node_figures}
    assert finding.host == "n2" and slow["n2"] * 3 < min(slow["n1"], slow["n3"]), slow
    shown = status(env, run_dir)
    assert shown.state.startswith("FAILED (PREFLIGHT: node 1 (n2): bandwidth"), shown
    assert seconds(shown.elapsed) <= 60, shown
    log = job_log(run_dir)
    assert "BAD node 1 (n2" in log and "nothing was trained" in log
    assert not RunFolder(run_dir).rank_reports(), "a model was loaded"


def test_doctor_on_slurm_names_a_node_with_another_torch(env, tmp_path):
    run_dir = tmp_path / "run"
    done = sft({**env, "SFT_LAUNCH_PREFLIGHT_FAKE_VERSION": "1:torch=0.0"}, "doctor", QUICKSTART,
               "--nodes", 2, "--procs-per-node", 1, "--run-dir", run_dir,
               "--set", "slurm.cpus_per_task=1", "--set", 'slurm.time="00:05:00"')
    said = done.stdout + done.stderr
    assert done.returncode == 2, said
    result = PreflightResult.read(RunFolder(run_dir).preflight)
    assert result.nodes == 2 and {r.host for r in result.ranks} == {"n1", "n2"}
    (finding,) = result.findings
    assert (finding.node, finding.ranks, finding.check) == (1, (1,), "versions")
    assert re.search(r"BAD node 1 \(n\d, rank\(s\) 1\): versions: torch 0\.0", said), said
    assert "Traceback" not in said


def test_exclude_bad_nodes_resubmits_without_the_slow_node_and_completes(env, tmp_path):
    run_dir = tmp_path / "run"
    with slowed(2, "20mbit", inbound_only=True):  # 2 nodes: n2 receives slowly, n1 does not
        launched = sft(env, QUICKSTART, "--nodes", 2, "--procs-per-node", 1, "--run-dir",
                       run_dir, "--wait", *SHORT, *NO_TRACKING,
                       "--set", "slurm.exclude_bad_nodes=true")
    said = launched.stdout + launched.stderr
    assert launched.returncode == 0, said
    record = job(run_dir)
    (excluded,) = record.exclusions
    assert excluded.nodes == ("n2",) and "bandwidth" in excluded.reason
    assert record.job_id != excluded.job_id and record.final_state is None
    hosts = [r.hostname for r in rank_reports(run_dir)]
    assert len(hosts) == 2 and "n2" not in hosts, hosts
    assert "preflight passed" in job_log(run_dir)
    shown = status(env, run_dir)
    assert shown.state.startswith("COMPLETED"), shown
    assert f"job {excluded.job_id} left n2 behind (node 1 (n2): bandwidth: " in shown.state, \
        shown
