"""`RunFolder`: the names of the files in a run folder, the only hand-over between the two sides."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class RunFolder:
    """Paths of a run folder's files, in one place."""

    path: Path

    @property
    def recipe(self) -> Path:
        return self.path / "recipe.toml"

    @property
    def plan(self) -> Path:
        return self.path / "plan.json"

    @property
    def accelerate(self) -> Path:
        return self.path / "accelerate.yaml"

    @property
    def deepspeed(self) -> Path:
        return self.path / "deepspeed.json"

    @property
    def launch_script(self) -> Path:
        return self.path / "launch.sh"

    @property
    def job_script(self) -> Path:
        return self.path / "job.sbatch"

    @property
    def prepare_script(self) -> Path:
        """A Slurm run's data preparation job (slurm.prep_job)."""
        return self.path / "prepare.sbatch"

    def prepare_log(self, job_id: str) -> Path:
        return self.logs / f"prepare-{job_id}.out"

    @property
    def job(self) -> Path:
        """job.json: the backend's record of the submission (`JobRecord`)."""
        return self.path / "job.json"

    @property
    def logs(self) -> Path:
        return self.path / "logs"

    @property
    def events(self) -> Path:
        return self.logs / "events.jsonl"

    @property
    def launch_log(self) -> Path:
        """Output of a local run's processes."""
        return self.logs / "launch.log"

    def slurm_log(self, job_id: str) -> Path:
        return self.logs / f"slurm-{job_id}.out"

    def rank_report(self, rank: int) -> Path:
        return self.logs / f"rank-{rank}.json"

    def rank_reports(self) -> list[Path]:
        """Every rank's report, by rank."""
        found = [(int(p.stem.removeprefix("rank-")), p) for p in self.logs.glob("rank-*.json")
                 if p.stem.removeprefix("rank-").isdigit()]
        return [p for _, p in sorted(found)]

    @property
    def preflight(self) -> Path:
        """The preflight's result (`PreflightResult`): `sft-launch doctor`."""
        return self.logs / "preflight.json"

    @property
    def preflight_token(self) -> Path:
        """The random token rank 0 writes and every rank reads back (one shared folder?)."""
        return self.logs / "preflight-token"

    def preflight_joined(self, rank: int) -> Path:
        """Written by a rank before it joins the preflight's process group (who never came)."""
        return self.logs / "preflight-joined" / f"rank-{rank}"

    @property
    def preflight_log(self) -> Path:
        """The preflight processes' output."""
        return self.logs / "preflight.log"

    @property
    def preflight_script(self) -> Path:
        """Slurm: the batch script that runs only the preflight (`sft-launch doctor`)."""
        return self.path / "preflight.sbatch"

    def attempt_verdict(self, attempt: int) -> Path:
        """Node 0's supervisor's decision after the workers of `attempt` died (`AttemptVerdict`),
        which every node's follows."""
        return self.logs / "attempts" / f"attempt-{attempt}.json"

    def heartbeat(self, rank: int) -> Path:
        return self.logs / "heartbeat" / f"rank-{rank}.json"

    def stacks(self, rank: int) -> Path:
        """A rank's Python stacks, dumped when a hang is detected."""
        return self.logs / f"stacks-rank-{rank}.txt"

    def sample_ids(self, rank: int) -> Path:
        return self.logs / f"samples-rank-{rank}.jsonl"

    @property
    def tracking_id(self) -> Path:
        """The W&B run id of this folder: one run across restarts and resumes."""
        return self.logs / "wandb-run-id"

    @property
    def checkpoints(self) -> Path:
        return self.path / "checkpoints"

    def checkpoint(self, step: int) -> Path:
        """The complete checkpoint of step `step` (`CheckpointManifest` inside)."""
        return self.checkpoints / f"step-{step}"

    def checkpoint_in_progress(self, step: int) -> Path:
        """Where step `step`'s checkpoint is written before it is renamed complete."""
        return self.checkpoints / f".step-{step}.tmp"

    def named(self, path: Path) -> str:
        """`path` as messages show it: relative to the run folder."""
        return str(path.relative_to(self.path))

    @property
    def final(self) -> Path:
        return self.path / "final"

    @property
    def final_in_progress(self) -> Path:
        """Where `final/` is written before it is renamed complete."""
        return self.path / ".final.tmp"

    @property
    def summary(self) -> Path:
        return self.path / "summary.json"

    @property
    def predictions(self) -> Path:
        return self.path / "eval_predictions.jsonl"

    @property
    def eval_examples(self) -> Path:
        """The final eval's first pictures with their boxes or masks drawn, true beside
        predicted (detection, segmentation): 0.png, 1.png, ... that report.png shows."""
        return self.path / "eval_examples"

    @property
    def label_names(self) -> Path:
        """The label names of a classification run, in id order (`LabelNames`)."""
        return self.path / "label_names.json"

    def eval_report(self, name: str) -> Path:
        """`sft-launch eval` of the final model on a data file of stem `name` (`EvalReport`)."""
        return self.path / f"eval-{name}.json"

    def predictions_on(self, name: str) -> Path:
        """The final model's predictions on a data file of stem `name`, by row (`Prediction`)."""
        return self.path / f"predictions-{name}.jsonl"

    @property
    def report(self) -> Path:
        """report.png: the curves of the run, drawn at its end."""
        return self.path / "report.png"

    @property
    def report_data(self) -> Path:
        """report.json: the numbers report.png draws (`ReportData`)."""
        return self.path / "report.json"

    @property
    def lr_curve(self) -> Path:
        """An lr range test's raw curve, written by rank 0 (`LrCurve`)."""
        return self.path / "lr_curve.json"

    @property
    def lr_find(self) -> Path:
        """The lr range test's result (`LrFindResult`), and its picture beside it."""
        return self.path / "lr_find.json"

    @property
    def wandb(self) -> Path:
        return self.path / "wandb"

    @property
    def mlflow_store(self) -> Path:
        """MLflow's file store: every metric of the run, whether or not a server took it."""
        return self.path / "mlflow"

    @property
    def mlflow_run(self) -> Path:
        """Which MLflow runs this folder logs to, locally and on the server (`MlflowRuns`)."""
        return self.logs / "mlflow-run.json"

    @property
    def tensorboard(self) -> Path:
        """TensorBoard event files (`tensorboard --logdir` this while the job runs)."""
        return self.path / "tensorboard"
