"""How a job reports and where it runs: the recipe's [tracking] and [slurm] sections."""

from __future__ import annotations

from typing import Literal
from urllib.parse import urlsplit

from pydantic import Field, field_validator

from launcher.contract.vocabulary import TrackerKind
from launcher.recipe.section import Section


class TrackingSettings(Section):
    to: list[TrackerKind] = Field(
        default_factory=lambda: [TrackerKind.WANDB],
        description="Trackers rank 0 logs to, any of 'wandb', 'mlflow', 'tensorboard' (event "
        "files under the run folder's tensorboard/); [] for none.")
    mode: Literal["auto", "online", "offline", "disabled"] = Field(
        "auto", description="W&B: auto is online with WANDB_API_KEY set, else offline; "
        "disabled turns every tracker off."
    )
    mlflow_uri: str | None = Field(
        None, description="MLflow tracking server, e.g. 'http://mlflow.site:5000' (default: "
        "MLFLOW_TRACKING_URI; none: a local store in the run folder). Credentials only in "
        "MLFLOW_TRACKING_TOKEN or MLFLOW_TRACKING_USERNAME/PASSWORD.")
    parent_run: str | None = Field(
        None, description="MLflow run id this run is a child of (a sweep sets it).")
    project: str = "sft-launch"
    entity: str | None = None
    run_name: str | None = None
    group: str | None = Field(None, description="W&B group (a sweep puts all its runs in one).")
    tags: list[str] = Field(default_factory=list)
    timeout_s: int = Field(
        30, ge=1, description="Seconds to wait for W&B or MLflow before logging locally instead.")

    @field_validator("to")
    @classmethod
    def _each_once(cls, value: list[TrackerKind]) -> list[TrackerKind]:
        if len(set(value)) < len(value):
            raise ValueError("name each tracker once")
        return value

    @field_validator("mlflow_uri")
    @classmethod
    def _no_credentials(cls, value: str | None) -> str | None:
        if value is not None and (urlsplit(value).username or urlsplit(value).password):
            raise ValueError("credentials never go in a recipe: set MLFLOW_TRACKING_USERNAME and "
                             "MLFLOW_TRACKING_PASSWORD (or MLFLOW_TRACKING_TOKEN) instead")
        return value


class SlurmSettings(Section):
    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    time: str = Field("01:00:00", description="Wall-time limit, e.g. '02:00:00' or '1-00:00:00'.")
    gpus_per_node: int = Field(0, ge=0)
    cpus_per_task: int | None = Field(None, gt=0)
    mem: str | None = Field(None, description="Memory per node, e.g. '200G'.")
    max_requeues: int = Field(
        20, ge=0, description="Requeues after time limits or preemptions before the job ends.")
    signal_grace_s: int = Field(
        60, ge=10, description="Seconds before the limit when the job checkpoints and requeues."
    )
    extra_sbatch: list[str] = Field(
        default_factory=list, description="Extra '#SBATCH' options, e.g. '--constraint=a100'."
    )
    preflight: bool = Field(
        True, description="A job on several nodes first runs the preflight of `sft-launch "
        "doctor` (versions, shared run folder, disk, GPUs, links' bandwidth) and ends within a "
        "minute, nothing trained, naming a node that fails a check (status PREFLIGHT).")
    exclude_bad_nodes: bool = Field(
        False, description="When the preflight names bad nodes, submit the job again, once, "
        "excluding them (sbatch --exclude), instead of ending it.")
    prep_job: bool = Field(
        True, description="Tokenize and extract features in a CPU job of its own (prepare.sbatch, "
        "one node), submitted first, writing the shared cache ($SFT_LAUNCH_CACHE, which every "
        "node must see); the training job starts after it succeeds (--dependency=afterok) and "
        "only reads the cache. Skipped when the cache entry is complete. false: the training "
        "job's rank 0 tokenizes while the allocation waits.")
    prep_partition: str | None = Field(
        None, description="The data preparation job's partition (default: slurm.partition).")
    prep_cpus: int | None = Field(
        None, gt=0, description="CPUs of the data preparation job (default: the training job's "
        "CPUs per node).")
    prep_mem: str | None = Field(
        None, description="Memory of the data preparation job (default: slurm.mem).")
    prep_time: str | None = Field(
        None, description="The data preparation job's time limit (default: slurm.time).")
    setup: list[str] = Field(
        default_factory=list,
        description="Shell lines run in the job before launch (module load, venv activation). "
        "Trusted: they run as written, like any line of your own sbatch script.",
    )

    @field_validator("extra_sbatch")
    @classmethod
    def _options_only(cls, value: list[str]) -> list[str]:
        for line in value:
            if not line.startswith("--") or "\n" in line:
                raise ValueError(f"{line!r} is not one sbatch option starting with '--'")
        return value
