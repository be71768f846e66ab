"""The preflight's result (`PreflightResult`, logs/preflight.json) and the rule naming bad nodes.

Each rank measures itself (`RankCheck`); `decide` compares them and names every node that fails
a check: a version other than the majority's (a tie goes to rank 0's), a run folder that is not
the one rank 0 wrote into, too little free disk for checkpoints or the cache, fewer visible GPUs
than processes per node, or a bandwidth below a third of the nodes' median (with 3 or more
nodes; with 2, below a third of the other node's: each node's figure is then the link it
receives on, so only a one-way slow link is pinned on a node). Torch-free, so that tests build
cases by hand.
"""

from __future__ import annotations

import statistics
from collections import Counter
from dataclasses import dataclass, field

from launcher.contract.plan import Plan
from launcher.contract.records import JsonRecord

# A checkpoint is estimated as fp32 weights plus AdamW's two fp32 moments: 12 bytes a parameter
# (an upper bound for LoRA or bf16 saves). The checkpoints folder needs room for two (the new
# one is written before the previous is removed), the cache for one.
CHECKPOINT_BYTES_PER_PARAMETER = 12
CHECKPOINTS_NEEDED = 2
SLOW_FACTOR = 3  # a node slower than the median (or the other node) / 3 is named
VERSIONED = ("python", "torch", "transformers", "accelerate", "deepspeed")
# torchrun's agents meet before any preflight process starts (static rendezvous: 600 s by
# default); a node whose agent never comes ends the preflight after this, "1/2 clients joined".
RENDEZVOUS_TIMEOUT_S = 60


@dataclass(frozen=True)
class RankCheck(JsonRecord):
    """What one rank saw of itself and of its links (figures in MB/s and ms; 0: not measured)."""

    rank: int
    node: int
    host: str
    versions: dict[str, str]  # "" where the package is not installed
    shared_folder: bool  # read back the token rank 0 wrote into the run folder
    checkpoint_free_bytes: int
    cache_free_bytes: int
    visible_devices: int | None  # GPUs this rank sees; None on CPU (not checked)
    allreduce_mb_s: float
    # The better of its two ring links (of two: the one it receives on); between nodes only
    # the node leaders (local rank 0) are in the ring, the others have 0.
    p2p_mb_s: float
    latency_ms: float
    # On GPUs: NCCL's version and every NCCL_* variable in force on this rank (printed).
    nccl: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class NodeFigures:
    """A node's figures: its slowest measured rank's bandwidths, its highest latency."""

    node: int
    host: str
    ranks: tuple[int, ...]
    p2p_mb_s: float
    allreduce_mb_s: float
    latency_ms: float


@dataclass(frozen=True)
class Finding:
    """A node named bad: which check it failed, with the figure."""

    node: int
    host: str
    ranks: tuple[int, ...]
    check: str  # versions, shared_folder, disk, devices, bandwidth, joined
    detail: str


@dataclass(frozen=True)
class PreflightResult(JsonRecord):
    """logs/preflight.json: every rank's check, every node's figures, the nodes named bad."""

    world_size: int
    nodes: int
    backend: str  # the process group's: gloo or nccl
    checkpoint_bytes: int  # the estimate the disks were checked against
    ranks: tuple[RankCheck, ...]
    node_figures: tuple[NodeFigures, ...]
    findings: tuple[Finding, ...]

    @property
    def healthy(self) -> bool:
        return not self.findings

    def lines(self) -> list[str]:
        """The table the user sees, then one line per bad node (or `healthy`)."""
        out = [f"preflight: {self.world_size} rank(s) on {self.nodes} node(s), {self.backend}",
               f"{'node':>4}  {'host':<20} {'ranks':<9} {'p2p MB/s':>10} "
               f"{'all-reduce MB/s':>16} {'latency ms':>11}"]
        for fig in self.node_figures:
            ranks = f"{fig.ranks[0]}-{fig.ranks[-1]}" if len(fig.ranks) > 1 else str(fig.ranks[0])
            out.append(f"{fig.node:>4}  {fig.host[:20]:<20} {ranks:<9} {fig.p2p_mb_s:>10.1f} "
                       f"{fig.allreduce_mb_s:>16.1f} {fig.latency_ms:>11.3f}")
        for finding in self.findings:
            out.append(f"BAD node {finding.node} ({finding.host}, rank(s) "
                       f"{', '.join(map(str, finding.ranks)) or '?'}): {finding.check}: "
                       f"{finding.detail}")
        settings: dict[str, list[str]] = {}  # the NCCL settings in force, and their nodes
        for rank in self.ranks:
            if rank.nccl:
                said = ", ".join(f"{key}={value}" for key, value in sorted(rank.nccl.items()))
                settings.setdefault(said, []).append(rank.host)
        for said, hosts in settings.items():
            out.append(f"NCCL on {', '.join(sorted(set(hosts)))}: {said}")
        if self.healthy:
            out.append("healthy: every node passed every check")
        return out


def checkpoint_bytes(plan: Plan) -> int:
    """The planned size of one checkpoint (0 when the plan has no memory estimate)."""
    if plan.memory is None:
        return 0
    return plan.memory.model_parameters * CHECKPOINT_BYTES_PER_PARAMETER


def decide(ranks: list[RankCheck], *, procs_per_node: int, checkpoint_size: int,
           backend: str) -> PreflightResult:
    """Compare the ranks' checks and name every bad node (see the module's docstring)."""
    ranks = sorted(ranks, key=lambda r: r.rank)
    by_node: dict[int, list[RankCheck]] = {}
    for check in ranks:
        by_node.setdefault(check.node, []).append(check)
    figures = tuple(_figures(node, members) for node, members in sorted(by_node.items()))
    findings: list[Finding] = []

    def name(members: list[RankCheck], check: str, detail: str) -> None:
        findings.append(Finding(node=members[0].node, host=members[0].host,
                                ranks=tuple(m.rank for m in members), check=check,
                                detail=detail))

    for package in VERSIONED:
        seen = [r.versions.get(package, "") for r in ranks]
        counts = Counter(seen)
        top = max(counts.values())
        reference = next(v for v in seen if counts[v] == top)  # a tie: the lowest rank's
        for _, members in sorted(by_node.items()):
            odd = [m for m in members if m.versions.get(package, "") != reference]
            if odd:
                name(odd, "versions", f"{package} {odd[0].versions.get(package) or 'missing'}"
                     f" where the others have {reference or 'none'}")
    for _, members in sorted(by_node.items()):
        unshared = [m for m in members if not m.shared_folder]
        if unshared:
            name(unshared, "shared_folder", "cannot read the token rank 0 wrote into the run "
                 "folder's logs/: this node does not see the same (shared) run folder")
        need = checkpoint_size * CHECKPOINTS_NEEDED
        low = [m for m in members if m.checkpoint_free_bytes < need]
        if low:
            name(low, "disk", f"{_gb(low[0].checkpoint_free_bytes)} free for checkpoints, "
                 f"{CHECKPOINTS_NEEDED} checkpoints of {_gb(checkpoint_size)} need {_gb(need)}")
        low = [m for m in members if m.cache_free_bytes < checkpoint_size]
        if low:
            name(low, "disk", f"{_gb(low[0].cache_free_bytes)} free in the cache, "
                 f"less than one checkpoint ({_gb(checkpoint_size)})")
        few = [m for m in members
               if m.visible_devices is not None and m.visible_devices < procs_per_node]
        if few:
            name(few, "devices", f"{few[0].visible_devices} GPU(s) visible for "
                 f"{procs_per_node} processes per node")
    for fig, reference in _slow(figures):
        name(by_node[fig.node], "bandwidth", f"{fig.p2p_mb_s:.1f} MB/s, below a third of "
             f"{reference:.1f} MB/s ({'the median' if len(figures) > 2 else 'the other node'})")
    return PreflightResult(world_size=len(ranks), nodes=len(by_node), backend=backend,
                           checkpoint_bytes=checkpoint_size, ranks=tuple(ranks),
                           node_figures=figures, findings=tuple(findings))


def _figures(node: int, members: list[RankCheck]) -> NodeFigures:
    measured = [m.p2p_mb_s for m in members if m.p2p_mb_s > 0] or [0.0]  # leaders only
    return NodeFigures(node=node, host=members[0].host, ranks=tuple(m.rank for m in members),
                       p2p_mb_s=min(measured),
                       allreduce_mb_s=min(m.allreduce_mb_s for m in members),
                       latency_ms=max(m.latency_ms for m in members))


def _slow(figures: tuple[NodeFigures, ...]) -> list[tuple[NodeFigures, float]]:
    """The nodes whose bandwidth is below a third of the median (3+ nodes) or of the other
    node's (2 nodes), each with that reference figure; one node is compared with nothing."""
    if len(figures) < 2:
        return []
    if len(figures) == 2:
        slow, fast = sorted(figures, key=lambda f: f.p2p_mb_s)
        return [(slow, fast.p2p_mb_s)] if slow.p2p_mb_s * SLOW_FACTOR < fast.p2p_mb_s else []
    median = statistics.median(f.p2p_mb_s for f in figures)
    return [(f, median) for f in figures if f.p2p_mb_s * SLOW_FACTOR < median]


def not_joined(missing: list[int], procs_per_node: int, world_size: int, nodes: int,
               waited_s: float, backend: str) -> PreflightResult:
    """The result when ranks never joined the process group: their nodes named by the plan's
    layout (a rank that never started wrote nothing, so its host is not known)."""
    by_node: dict[int, list[int]] = {}
    for rank in missing:
        by_node.setdefault(rank // procs_per_node, []).append(rank)
    return PreflightResult(
        world_size=world_size, nodes=nodes, backend=backend, checkpoint_bytes=0, ranks=(),
        node_figures=(),
        findings=tuple(Finding(node=node, host="?", ranks=tuple(members), check="joined",
                               detail=f"never joined the process group within {waited_s:.0f} s")
                       for node, members in sorted(by_node.items())))


def _gb(size: int) -> str:
    return f"{size / 1e9:.1f} GB"
