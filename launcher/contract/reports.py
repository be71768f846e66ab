"""What the workers report: each rank's `RankReport`, the run's `Summary`, the label names."""

from __future__ import annotations

from dataclasses import dataclass, field

from launcher.contract.records import JsonRecord
from launcher.contract.vocabulary import GradientSync, Strategy


@dataclass(frozen=True)
class HeldBytes:
    """Bytes one rank holds after a step: its parameter, gradient and optimizer-state shards and
    the optimizer's fp32 master copy (ZeRO keeps one even in fp32)."""

    params: int
    grads: int
    optimizer_state: int
    master_params: int

    @property
    def total(self) -> int:
        return self.params + self.grads + self.optimizer_state + self.master_params


@dataclass(frozen=True)
class RankReport(JsonRecord):
    """`logs/rank-<R>.json`: what one rank saw at start-up and, once finished, what it held."""

    hostname: str
    rank: int
    local_rank: int
    node_rank: int
    world_size: int
    group_size: int
    distributed_type: str
    process_group_backend: str | None
    strategy: Strategy | None = None  # None: one plain process
    gradient_sync: GradientSync | None = None  # DDP only: how it all-reduces the gradients
    local_param_numel: int = 0
    held_bytes: HeldBytes | None = None
    peak_rss_bytes: int | None = None  # the process's high-water mark, host memory
    loaded_rss_bytes: int | None = None  # the same, once the model is loaded and sharded
    trained_rss_bytes: int | None = None  # the same, after training, before the final save
    peak_device_bytes: int | None = None  # GPU: the most the allocator held (None on CPU)
    final_weights_sha256: str | None = None  # replicated strategies: equal on every rank


@dataclass(frozen=True)
class DataStats:
    """What loading and tokenizing did to the data."""

    train_rows: int
    eval_rows: int
    skipped_rows: int = 0
    truncated: int = 0
    dropped_too_long: int = 0
    packs: int | None = None  # causal LM with packing: training rows after packing


@dataclass(frozen=True)
class Summary(JsonRecord):
    """`summary.json`: written by rank 0 when a run completed."""

    steps: int
    epochs: float
    samples: int
    tokens: int
    train_loss: float | None  # the last logged (None: no step was logged)
    wall_time_s: float  # over every launch of the run
    time_to_first_step_s: float | None  # in the first launch
    train_samples_per_s: float | None  # in optimizer steps, over every launch
    token_efficiency: float | None  # real tokens / tokens computed (padding lowers it)
    world_size: int
    strategy: Strategy | None
    data: DataStats
    eval: dict[str, float] = field(default_factory=dict)  # final eval metrics; {} without eval data
    eval_tables: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)
    status: str = "completed"


@dataclass(frozen=True)
class LabelNames(JsonRecord):
    """`label_names.json`: a classification run's label names, in id order."""

    names: tuple[str, ...]


@dataclass(frozen=True)
class SampleIds(JsonRecord):
    """One line of `logs/samples-rank-<R>.jsonl` (train.log_sample_ids): the ids of the
    training examples (packs, when packing) this rank used in optimizer step `step` (1-based)."""

    step: int
    ids: tuple[int, ...]


@dataclass(frozen=True)
class Series:
    """A metric against optimizer steps."""

    steps: tuple[int, ...]
    values: tuple[float, ...]


@dataclass(frozen=True)
class Confusion:
    """Counts of (true label, predicted label) on the final evaluation: rows are true labels."""

    labels: tuple[str, ...]
    counts: tuple[tuple[int, ...], ...]


@dataclass(frozen=True)
class ReportData(JsonRecord):
    """`report.json`: what `report.png` draws, as numbers (every launch of the run, each step's
    last value)."""

    train_loss: Series
    lr: Series
    tokens_per_s: Series
    eval: dict[str, Series]
    confusion: Confusion | None = None
    # The final eval's first pictures with boxes or masks drawn, true beside predicted
    # (detection, segmentation): their paths in the run folder (`RunFolder.eval_examples`).
    examples: tuple[str, ...] = ()


@dataclass(frozen=True)
class LrCurve(JsonRecord):
    """`lr_curve.json`: the loss of each step of an lr range test, at the lr it ran with."""

    lrs: tuple[float, ...]
    losses: tuple[float, ...]
    diverged: bool  # stopped early: the smoothed loss passed 4x its minimum


@dataclass(frozen=True)
class LrFindResult(JsonRecord):
    """`lr_find.json`: the curve, its smoothed loss, and the suggested train.lr."""

    lrs: tuple[float, ...]
    losses: tuple[float, ...]
    smoothed: tuple[float, ...]
    suggested_lr: float
    method: str  # "steepest descent" or "minimum / 10"
