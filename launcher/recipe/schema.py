"""The recipe schema: typed settings are the single source of truth (and `sft-launch schema`)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from launcher.contract.vocabulary import Precision, Strategy
from launcher.data.formats import FORMATS
from launcher.recipe.deprecated import precision_word, renamed_train_keys
from launcher.recipe.job_settings import SlurmSettings, TrackingSettings
from launcher.recipe.section import Section, sane_path
from launcher.tasks.registry import TASKS, task_spec

TaskKind = Literal[tuple(TASKS)]  # type: ignore[valid-type]
DataFormat = Literal[FORMATS]  # type: ignore[valid-type]
StrategyChoice = Strategy | Literal["auto"]
PrecisionChoice = Precision | Literal["auto"]


class LoraSettings(Section):
    """Low-rank adapters through peft; `final/` then holds the adapter."""

    r: int = Field(8, gt=0, description="Adapter rank.")
    alpha: int = Field(16, gt=0, description="LoRA scaling numerator (scale = alpha / r).")
    dropout: float = Field(0.0, ge=0, lt=1)
    target_modules: list[str] | Literal["all-linear"] = Field(
        "all-linear", description="Module names to adapt, or 'all-linear'."
    )


class ModelSettings(Section):
    path: str = Field(
        description="Local folder, Hub id ('org/name', fetched into the HF cache where the run "
        "is planned), or 'package:<module>' (a Python package's get_model_path()).")
    revision: str | None = Field(None, description="Hub id only: branch, tag or commit.")
    tokenizer: str | None = Field(None, description="Tokenizer location; defaults to model.path.")
    dtype: PrecisionChoice = Field(
        "auto", description="The precision the weights are loaded in, in train.precision's "
        "words (float32, bfloat16 and float16 are deprecated spellings); auto: fp32, the master "
        "copy of mixed precision.")
    trust_remote_code: bool = False

    @field_validator("path", "tokenizer")
    @classmethod
    def _openable(cls, value: str | None) -> str | None:
        return sane_path(value) if value is not None else None

    @field_validator("dtype", mode="before")
    @classmethod
    def _precision_words(cls, value: object) -> object:
        return precision_word(value)

    attn_implementation: Literal["sdpa", "eager", "flash_attention_2"] | None = None
    lora: LoraSettings | None = None
    max_shard_size: str = Field(
        "5GB", pattern=r"^[0-9]+(KB|MB|GB|KiB|MiB|GiB)$",
        description="Largest safetensors file of the final model ('5GB', '500MiB'); more "
        "weights: several files and an index, as on the Hub.")


class TaskSettings(Section):
    kind: TaskKind = Field(description="What is fine-tuned: " + "; ".join(
        f"{spec.kind}: {spec.summary}" for spec in TASKS.values()) + ".")
    num_labels: int | None = Field(
        None, gt=1, description="Classification labels; inferred from the training data if unset."
    )
    label_names: list[str] | None = Field(
        None, description="Semantic segmentation: the class names, by mask value (0, 1, ...); "
        "default: class_names.txt beside the data, else 0..n-1.")
    chat_template: str | None = Field(
        None,
        description="Chat tasks: 'chatml', a Jinja template, or unset for the tokenizer's "
        "own.",
    )
    train_on: Literal["assistant", "last_assistant", "all"] = Field(
        "assistant", description="Chat tasks: which tokens carry loss."
    )
    normalize: Literal["english", "basic", "none"] = Field(
        "basic", description="Speech recognition: transcripts normalised before WER and CER: "
        "english (Whisper's English normaliser: numbers as digits, spellings standardised), "
        "basic (lowercase, no punctuation), none.")
    packing: bool = Field(False, description="Padding-free packing of sequences (the tasks "
                          "that generate text).")


class AugmentSettings(Section):
    """Random augmentation of training images, a pure function of (seed, epoch, row)."""

    crop_scale: tuple[float, float] | None = Field(
        (0.25, 1.0), description="Random resized crop: the share of the image's area kept, "
        "drawn in this range (the processor resizes afterwards); unset: no crop.")
    crop_ratio: tuple[float, float] = Field((0.75, 4 / 3), description="Crop aspect ratios.")
    hflip: bool = Field(True, description="Flip horizontally with probability 0.5.")
    color_jitter: float = Field(0.2, ge=0, lt=1, description="Brightness, contrast and "
                                "saturation each scaled by a factor in [1-j, 1+j]; 0: off.")

    @field_validator("crop_scale", "crop_ratio")
    @classmethod
    def _range(cls, value: tuple[float, float] | None) -> tuple[float, float] | None:
        if value is not None and not 0 < value[0] <= value[1]:
            raise ValueError("give (low, high) with 0 < low <= high")
        return value


class DataSettings(Section):
    train: list[str] = Field(description="Training file(s): jsonl, json, csv, tsv, parquet, "
                             "conll; or Hub datasets: hf:org/name?subset=S&split=train.")
    eval: list[str] = Field(default_factory=list, description="Evaluation file(s) or hf: "
                            "datasets (split: validation unless ?split= names one).")
    format: DataFormat | None = Field(None, description="Row format; defaults by task kind "
                                      "(the first it reads).")
    columns: dict[str, str] = Field(
        default_factory=dict, description="Map canonical field -> column name in your files."
    )
    max_length: int = Field(512, gt=8, description="Tokens per sequence (longer: truncation); "
                            "speech recognition: the longest transcript (longer: refused).")
    truncation: Literal["truncate", "drop"] = "truncate"
    eval_fraction: float = Field(
        0.0, ge=0, lt=1, description="Held-out share of train when no eval file is given."
    )
    split_seed: int = 0
    train_weights: list[float] | None = Field(
        None, description="Mix the train files: each file's share of the training rows, e.g. "
        "[3, 1]; files are over/under-sampled, deterministically by split_seed.",
    )
    group_by_length: bool | None = Field(
        None, description="Batch rows of similar length together (less padding). Default: on "
        "for the tasks that cannot pack (classification), off for those that can "
        "(task.packing).",
    )
    max_train_samples: int | None = Field(None, gt=0, description="Use the first N rows only.")
    max_eval_samples: int | None = Field(None, gt=0)
    on_bad_row: Literal["error", "skip"] = "error"
    max_seconds: float = Field(
        30.0, gt=0, description="Audio tasks: the longest stretch of a recording trained on "
        "(a random window of it in training, its start in evaluation).")
    loader_workers: int | None = Field(
        None, ge=0, description="Processes per rank that read, decode and collate training "
        "batches ahead of the step. Default: 2 for tasks that decode files (images, audio), 0 "
        "(in the training process) for text.")
    augment: AugmentSettings | None = Field(
        None, description="Image tasks: random augmentation of the training rows ([data.augment] "
        "with its defaults, or set its keys); a pure function of the seed, epoch and row.")

    @field_validator("train", "eval", mode="before")
    @classmethod
    def _one_or_many(cls, value: object) -> object:
        return [value] if isinstance(value, str) else value

    @field_validator("train")
    @classmethod
    def _not_empty(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("at least one training file is required")
        return value

    @field_validator("train", "eval")
    @classmethod
    def _openable(cls, value: list[str]) -> list[str]:
        return [sane_path(path) for path in value]

    @model_validator(mode="after")
    def _weights_match_files(self) -> DataSettings:
        if self.train_weights is not None and (
            len(self.train_weights) != len(self.train) or min(self.train_weights) <= 0
        ):
            raise ValueError(f"data.train_weights needs one positive weight per train file "
                             f"({len(self.train)} files)")
        return self


class TrainSettings(Section):
    epochs: float = Field(1.0, gt=0, description="Passes over the data (ignored if max_steps).")
    max_steps: int | None = Field(None, gt=0, description="Optimizer steps; overrides epochs.")
    global_batch_size: int = Field(32, gt=0, description="Samples per optimizer step, all ranks.")
    micro_batch_size: int | None = Field(None, gt=0, description="Rows per forward pass per "
                                         "rank at most; default global / world.")
    micro_batch_tokens: int | None = Field(None, ge=0, description="Tokens (padding included) "
        "per forward pass per rank at most: a rank's rows of a step cut into micro-batches under "
        "it, gradients accumulated (same global batch and loss). Unset: 1024 on CPU (fastest "
        "measured), off on GPU; 0: off. DDP and one process only.")
    lr: float = Field(5e-5, gt=0)
    schedule: Literal["linear", "cosine", "constant"] = "linear"
    warmup_ratio: float = Field(0.0, ge=0, lt=1)
    warmup_steps: int | None = Field(None, ge=0, description="Overrides warmup_ratio.")
    weight_decay: float = Field(0.0, ge=0)
    max_grad_norm: float | None = Field(1.0, gt=0, description="Gradient clipping; unset: off.")
    seed: int = 42
    precision: PrecisionChoice = Field("auto", description="auto: bf16 on GPUs, fp32 on CPU.")
    activation_checkpointing: bool = False
    eval_every: int = Field(0, ge=0, description="Evaluate every N steps (0: at the end only).")
    save_every: int = Field(0, ge=0, description="Checkpoint every N steps (0: never).")
    save_every_minutes: float | None = Field(None, gt=0, description="Also checkpoint when "
        "this many minutes passed since the last one: bounds the work a failure costs.")
    log_every: int = Field(10, gt=0, description="Log train metrics every N steps.")
    keep_checkpoints: int = Field(2, gt=0, description="Newest checkpoints kept on disk.")
    async_checkpoints: bool = Field(False, description="DDP, FSDP: write checkpoints in the "
        "background once copied to host memory (one more host copy of the state).")
    hang_timeout_s: int = Field(
        900, ge=0, description="End the job when a rank makes no progress for this many "
        "seconds in training (start-up, preprocessing, evaluation and checkpointing get 4x); "
        "every live rank dumps its Python stacks into logs/. 0: off.",
    )
    max_restarts: int = Field(3, ge=0, description="Restarts from the newest checkpoint, in "
        "the same job, when a worker dies; none after one that made no newer checkpoint.")
    log_sample_ids: bool = Field(
        False, description="Write the ids of the examples each rank trains on, per step, to "
        "logs/samples-rank-<R>.jsonl (to audit the data order, e.g. across a resume).",
    )
    generation_prompts: list[str] | int = Field(
        0, description="Text generation tasks: generate from these prompts (user turns, or "
        "texts for the text format), or from the first N eval rows, greedily at every "
        "evaluation: logged to the event log and as a W&B table, so a wrong template or stop "
        "token shows early. 0: none.",
    )
    generation_max_tokens: int = Field(64, gt=0,
                                       description="Tokens generated per prompt at most.")

    @model_validator(mode="before")
    @classmethod
    def _renamed_keys(cls, data: object) -> object:
        return renamed_train_keys(data)

    @field_validator("generation_prompts")
    @classmethod
    def _some_prompts(cls, value: list[str] | int) -> list[str] | int:
        if isinstance(value, int) and value < 0:
            raise ValueError("give a list of prompts, or a number of eval rows (0: none)")
        return value

    @field_validator("hang_timeout_s")
    @classmethod
    def _sensible_timeout(cls, value: int) -> int:
        if 0 < value < 10:
            raise ValueError("the hang timeout must be at least 10 s (or 0: off)")
        return value


class DistributedSettings(Section):
    strategy: StrategyChoice = Field(
        "auto", description="auto picks the fastest that fits in memory."
    )
    offload_optimizer: bool = Field(False, description="zero3: optimizer state in CPU memory.")
    offload_params: bool = Field(False, description="zero3: parameters in CPU memory.")
    nodes: int = Field(1, gt=0)
    procs_per_node: int = Field(1, gt=0, description="Worker processes per node (GPUs per node).")
    device_memory: str | None = Field(
        None, description="Memory of one device for the plan, e.g. '80GiB' (default: detected)."
    )


class Recipe(Section):
    """A whole fine-tuning recipe."""

    name: str | None = Field(
        None, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$",
        description="Run name (folder prefix, job name): letters, digits, '.', '_', '-'; "
        "defaults to the file's stem.",
    )
    extends: str | None = Field(None, description="Recipe file this one inherits from.")
    model: ModelSettings
    task: TaskSettings
    data: DataSettings
    train: TrainSettings = Field(default_factory=TrainSettings)
    distributed: DistributedSettings = Field(default_factory=DistributedSettings)
    tracking: TrackingSettings = Field(default_factory=TrackingSettings)
    slurm: SlurmSettings = Field(default_factory=SlurmSettings)

    @model_validator(mode="after")
    def _consistent(self) -> Recipe:
        spec = task_spec(self.task.kind)
        if self.data.format is None:
            self.data.format = spec.default_format
        elif self.data.format not in spec.formats:
            raise ValueError(f"data.format = {self.data.format!r} is not read by task.kind = "
                             f"{spec.kind!r}: it reads {', '.join(spec.formats)}")
        if self.data.group_by_length is None:
            self.data.group_by_length = spec.groups_by_length
        offload = self.distributed.offload_optimizer or self.distributed.offload_params
        if offload and self.distributed.strategy not in (Strategy.ZERO3, "auto"):
            raise ValueError("distributed.offload_* needs distributed.strategy = 'zero3'")
        if self.task.packing and not spec.packs:
            raise ValueError(f"task.packing does not apply to {spec.kind}: it applies to "
                             f"{_kinds_where('packs')}")
        if self.train.generation_prompts and not spec.generates_text:
            raise ValueError(f"train.generation_prompts does not apply to {spec.kind} (generated "
                             f"text): it applies to {_kinds_where('generates_text')}")
        no_eval = not self.data.eval and not self.data.eval_fraction
        prompts = self.train.generation_prompts
        if isinstance(prompts, int) and prompts and no_eval:
            raise ValueError("train.generation_prompts = N takes N eval rows, and there is no "
                             "eval data: set data.eval or data.eval_fraction, or list the prompts")
        return self


def _kinds_where(flag: str) -> str:
    """The task kinds whose spec sets `flag`, for a message."""
    return " and ".join(kind for kind, spec in TASKS.items() if getattr(spec, flag))
