"""The one vocabulary of the project: strategies, offload, precisions, devices, backends, job
states, modes.

Every mapping from these words to another tool's words (a ZeRO stage, Accelerate's
mixed-precision name, a process-group backend) is written here, once.
"""

from __future__ import annotations

from enum import IntEnum, StrEnum


class Strategy(StrEnum):
    """How the model is spread over the data-parallel ranks."""

    DDP = "ddp"
    FSDP = "fsdp"
    ZERO2 = "zero2"
    ZERO3 = "zero3"

    @property
    def zero_stage(self) -> int:
        """The DeepSpeed ZeRO stage (0: not DeepSpeed)."""
        return {Strategy.ZERO2: 2, Strategy.ZERO3: 3}.get(self, 0)

    @property
    def uses_deepspeed(self) -> bool:
        return self.zero_stage > 0

    @property
    def shards_parameters(self) -> bool:
        """Each rank holds 1/N of the parameters (FSDP, ZeRO-3)."""
        return self in (Strategy.FSDP, Strategy.ZERO3)

    @property
    def takes_token_budget(self) -> bool:
        """A rank's rows of a step may be cut into micro-batches by a token budget: DDP only
        (FSDP and ZeRO run collectives in every forward pass, so every rank must take as many
        micro-batches as the others)."""
        return self is Strategy.DDP

    def active(self, world_size: int) -> Strategy | None:
        """What really runs at `world_size`: one process wraps nothing for DDP or FSDP."""
        if world_size == 1 and not self.uses_deepspeed:
            return None
        return self


class GradientSync(StrEnum):
    """How DDP all-reduces the gradients: through shared memory (every rank on one CPU host),
    or the process group's own collective (gloo over TCP, NCCL)."""

    SHARED_MEMORY = "shared-memory"
    PROCESS_GROUP = "process-group"


class Offload(StrEnum):
    """What ZeRO-3 keeps in host memory instead of device memory."""

    OPTIMIZER = "optimizer"
    PARAMS = "params"


class Precision(StrEnum):
    """Training precision: fp32, or bf16/fp16 mixed precision (fp32 master weights)."""

    FP32 = "fp32"
    BF16 = "bf16"
    FP16 = "fp16"

    @property
    def accelerate_name(self) -> str:
        """Accelerate's `mixed_precision` value."""
        return "no" if self is Precision.FP32 else self.value

    @property
    def is_half(self) -> bool:
        return self is not Precision.FP32

    @property
    def torch_name(self) -> str:
        """The name of its torch dtype (`getattr(torch, precision.torch_name)`): the one mapping
        of a precision to a dtype."""
        return TORCH_NAMES[self]


TORCH_NAMES = {Precision.FP32: "float32", Precision.BF16: "bfloat16", Precision.FP16: "float16"}


class Device(StrEnum):
    CPU = "cpu"
    CUDA = "cuda"

    @property
    def process_group_backend(self) -> str:
        return "nccl" if self is Device.CUDA else "gloo"


class BackendKind(StrEnum):
    """Where a run executes: this machine, or a Slurm cluster."""

    LOCAL = "local"
    SLURM = "slurm"


class JobState(StrEnum):
    """A job's state, in the same words for every backend (`sft-launch status` shows them);
    each backend translates its scheduler's own words into these."""

    NOT_SUBMITTED = "NOT SUBMITTED"  # a dry run, a refused submission, or not started yet
    PENDING = "PENDING"  # queued: it may still start
    RUNNING = "RUNNING"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"
    TIMEOUT = "TIMEOUT"  # ended by its time limit
    STOPPED = "STOPPED"  # the workers stopped on a signal after a checkpoint: --resume continues
    DIED = "DIED"  # its processes are gone, leaving no summary and no exit code
    UNKNOWN = "UNKNOWN"  # neither the scheduler nor the run folder says

    @property
    def active(self) -> bool:
        """The job may still run (queued or running)."""
        return self in (JobState.PENDING, JobState.RUNNING)


class TrackerKind(StrEnum):
    """An experiment tracker a run logs to from rank 0 (`tracking.to`)."""

    WANDB = "wandb"
    MLFLOW = "mlflow"
    TENSORBOARD = "tensorboard"

    @property
    def module(self) -> str:
        """The Python package its client is (installed by the extra of the same name)."""
        return self.value


class TrackingMode(StrEnum):
    """W&B mode a run starts in (online falls back to offline when W&B cannot be used);
    disabled: no tracker at all."""

    ONLINE = "online"
    OFFLINE = "offline"
    DISABLED = "disabled"


class ExitCode(IntEnum):
    """Exit codes scripts can trust, of `sft-launch` and of the workers."""

    OK = 0
    FAILED = 1  # training or job failure
    USAGE = 2  # bad recipe, arguments or data; nothing launched
    REFUSED = 3  # a worker refused a launch that differs from plan.json
    NOT_SAVED = 74  # a worker could not write a checkpoint (a full disk): make room, resume
    NODE_FAILED = 76  # a node's workers died first twice: the Slurm job goes on without it
    STOPPED = 75  # a worker stopped on a signal after a complete checkpoint: resume it
    HUNG = 124  # a worker saw a rank make no progress for train.hang_timeout_s
    INTERRUPTED = 130  # sft-launch was stopped by a signal (after the workers checkpointed)


# The start of the line a worker prints to its log when it refuses to go on (bad data, a model it
# cannot load); the control plane shows the rest of that line as the reason the job failed.
WORKER_ERROR = "sft-launch worker: error: "
