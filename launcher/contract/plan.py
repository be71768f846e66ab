"""`plan.json`: the versioned plan every rank verifies itself against, with its memory estimate."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from launcher.contract.records import ContractError, JsonRecord
from launcher.contract.vocabulary import (
    BackendKind,
    Device,
    Offload,
    Precision,
    Strategy,
    TrackerKind,
    TrackingMode,
)

PLAN_VERSION = 2


@dataclass(frozen=True)
class Batch:
    """global = micro x grad_accum x world; `micro_tokens`: each rank's share of a step is cut
    into micro-batches of at most this many computed tokens (None: micro rows each, always)."""

    global_size: int
    micro: int
    grad_accum: int
    world: int
    micro_tokens: int | None = None


@dataclass(frozen=True)
class MemoryEstimate(JsonRecord):
    """Bytes per device for one strategy; host_bytes is what a rank offloads to host memory."""

    strategy: Strategy
    offload: tuple[Offload, ...]
    world_size: int
    params_bytes: int
    grads_bytes: int
    optimizer_bytes: int
    activations_bytes: int
    total_bytes: int
    fits: bool | None  # None when the device memory is not known
    host_bytes: int = 0
    # The highest a rank's memory goes (host memory on CPU, the device's on GPU): the runtime's
    # own footprint, then the largest of load, steady state and final save; 0: not predicted.
    peak_bytes: int = 0

    @property
    def label(self) -> str:
        """`zero3`, or `zero3+offload` when something is offloaded."""
        return self.strategy.value + ("+offload" if self.offload else "")


@dataclass(frozen=True)
class MemoryPlan:
    """The estimate of every strategy at the plan's world size, from the model's config.json."""

    model_parameters: int
    approximate: bool
    device_memory_bytes: int | None
    procs_per_node: int
    estimates: tuple[MemoryEstimate, ...]
    hidden_size: int | None = None  # with block_parameters: sizes DeepSpeed's buffers
    block_parameters: int = 0  # one transformer block (0: unknown)

    def estimate_for(self, strategy: Strategy, offload: tuple[Offload, ...]) -> MemoryEstimate:
        return next(e for e in self.estimates
                    if e.strategy is strategy and bool(e.offload) == bool(offload))


@dataclass(frozen=True)
class ModelProbe(JsonRecord):
    """A model the plan cannot size from its config (images, audio), measured by a dry run of
    one training micro-batch on the fake device (`python -m launcher.worker.probe`): parameters
    with the task's head, the largest unit FSDP gathers at once (a block, or what is left
    outside the blocks: embeddings, stems, heads), the largest tensor, the bytes
    the forward pass keeps for backward (activations) at the plan's micro batch and precision."""

    parameters: int
    block_parameters: int
    largest_parameter: int
    activations_bytes: int
    hidden_size: int | None = None  # the config's width (hidden_size, d_model or hidden_dim)
    trainable: int | None = None  # under LoRA: the adapters and the head (None: every parameter)


@dataclass(frozen=True)
class WorldSpan:
    """The layout a run trained with from `from_step` on (a resume may change it)."""

    from_step: int
    nodes: int
    procs_per_node: int

    @property
    def world_size(self) -> int:
        return self.nodes * self.procs_per_node


@dataclass(frozen=True)
class LrRange:
    """An lr range test instead of training: `steps` optimizer steps, the learning rate rising
    log-uniformly from `min_lr` to `max_lr` (`sft-launch lr-find`)."""

    min_lr: float
    max_lr: float
    steps: int


@dataclass(frozen=True)
class Plan(JsonRecord):
    """Everything a worker needs besides the recipe; written as `plan.json`."""

    recipe_name: str
    recipe_file: str
    backend: BackendKind
    nodes: int
    procs_per_node: int
    world_size: int
    device: Device
    precision: Precision
    strategy: Strategy
    strategy_reason: str
    batch: Batch
    model_path: str
    tokenizer_path: str
    tracking_mode: TrackingMode  # W&B's
    threads_per_proc: int
    trackers: tuple[TrackerKind, ...] = ()  # none when tracking is disabled
    offload: tuple[Offload, ...] = ()
    memory: MemoryPlan | None = None
    world_history: tuple[WorldSpan, ...] = ()  # oldest first; the last is this plan's layout
    lr_find: LrRange | None = None
    version: int = PLAN_VERSION

    @property
    def active_strategy(self) -> Strategy | None:
        """The strategy the workers really run (None: one plain process)."""
        return self.strategy.active(self.world_size)

    @classmethod
    def read(cls, path: Path) -> Plan:
        """plan.json; a plan of another version is refused with what to do."""
        plan = super().read(path)
        if plan.version != PLAN_VERSION:
            raise ContractError(
                f"{path}: plan version {plan.version}, but this sft-launch reads version "
                f"{PLAN_VERSION}: use the sft-launch that wrote it, or plan the run again")
        return plan
