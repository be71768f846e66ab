"""How a job reports and where it runs: the recipe's [tracking] and [slurm] sections."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from launcher.recipe.section import Section


class TrackingSettings(Section):
    mode: Literal["auto", "online", "offline", "disabled"] = Field(
        "auto", description="auto: online with WANDB_API_KEY set, else offline."
    )
    project: str = "sft-launch"
    entity: str | None = None
    run_name: str | None = None
    group: str | None = Field(None, description="W&B group (a sweep puts all its runs in one).")
    tags: list[str] = Field(default_factory=list)
    timeout_s: int = Field(
        30, ge=1, description="Seconds to wait for W&B online before logging offline instead.")


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
