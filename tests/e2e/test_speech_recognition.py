"""Speech recognition end to end: Whisper tiny.en (real weights) fine-tuned on spoken digits by
2 processes, its window cut to 1 s; transcripts generated at evaluation and scored with jiwer's
WER and CER; ddp, fsdp, zero2 and zero3 end with the same weights; kill -9 and --resume end
bitwise equal to the uninterrupted run."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import jiwer
import pytest
import soundfile

from launcher.contract.evaluation import EvalReport, Prediction
from launcher.contract.events import Checkpointed
from launcher.contract.plan import WorldSpan
from launcher.contract.run_folder import RunFolder
from launcher.contract.vocabulary import Strategy
from launcher.recipe.load import load_recipe
from launcher.tasks.speech_recognition import normalised
from tests.conftest import REPO, SFT_LAUNCH, cli_env
from tests.helpers.processes import kill_everything, wait_for_event
from tests.helpers.run_folder import plan, rank_reports, summary
from tests.helpers.wandb_file import logged_table

pytestmark = pytest.mark.slow
RECORDINGS = REPO.parent / "shared" / "data" / "fsdd" / "recordings"
WORDS = ("zero", "one", "two", "three")
STEPS, SAVE_EVERY, WEIGHT_TOLERANCE = 4, 2, 1e-4
SETTINGS = ["--set", "tracking.mode=disabled", "--set", f"train.max_steps={STEPS}",
            "--set", f"train.save_every={SAVE_EVERY}", "--set", "train.global_batch_size=4",
            "--set", "train.lr=1e-4"]


def listing(out: Path, speaker: str, takes: range) -> Path:
    lines = ["audio,text"] + [f"{RECORDINGS / f'{digit}_{speaker}_{take}.wav'},{word}"
                              for digit, word in enumerate(WORDS) for take in takes]
    out.write_text("\n".join(lines) + "\n")
    return out


@pytest.fixture(scope="module")
def recipe(whisper_tiny_en: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("asr")
    train, held = listing(root / "train.csv", "george", range(4)), listing(
        root / "eval.csv", "yweweler", range(1))
    path = root / "asr.toml"
    path.write_text((REPO / "recipes" / "asr-digits.toml").read_text()
                    .replace('"../models/whisper-tiny.en"', f'"{whisper_tiny_en}"')
                    .replace('"data/fsdd/train-transcripts.csv"', f'"{train}"')
                    .replace('"data/fsdd/unseen-speaker-transcripts.csv"', f'"{held}"'))
    return path


def launch(recipe: Path, run_dir: Path, *extra: str, fault: str = "") -> subprocess.Popen:
    """sft-launch on the local backend; `fault`: SFT_LAUNCH_FAULT for its workers."""
    return subprocess.Popen([*SFT_LAUNCH, recipe, "--backend", "local", "--run-dir", run_dir,
                             "--quiet", *SETTINGS, *extra], cwd=REPO,
                            env=cli_env(SFT_LAUNCH_FAULT=fault), text=True, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, start_new_session=True)


@pytest.fixture(scope="module")
def runs(recipe: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("strategies")
    folders = {}
    for strategy in ("ddp", "fsdp", "zero2", "zero3"):
        folders[strategy] = root / strategy
        shown = ["--set", "tracking.mode=offline"] if strategy == "ddp" else []  # W&B media
        proc = launch(recipe, root / strategy, "--set", f"distributed.strategy={strategy}",
                      *shown)
        out, _ = proc.communicate(timeout=900)
        assert proc.returncode == 0, f"{strategy}:\n{out}"
    return folders


def test_error_rates_are_jiwers_on_the_generated_transcripts(runs: dict[str, Path],
                                                            recipe: Path) -> None:
    run = runs["ddp"]
    rows = Prediction.read_lines(RunFolder(run).predictions)
    assert len(rows) == len(WORDS) and all(isinstance(r.prediction, str) for r in rows)
    assert [r.reference for r in rows] == list(WORDS)
    settings = load_recipe(recipe)
    truth = normalised([r.reference for r in rows], settings)
    said = normalised([r.prediction for r in rows], settings)
    done = summary(run)
    assert done.eval["wer"] == pytest.approx(jiwer.wer(truth, said), abs=1e-12)
    assert done.eval["cer"] == pytest.approx(jiwer.cer(truth, said), abs=1e-12)
    assert {r.world_size for r in rank_reports(run)} == {2}


def test_wandb_shows_each_clip_with_its_reference_and_transcript(
        runs: dict[str, Path]) -> None:
    columns, data, files = logged_table(runs["ddp"] / "wandb", "eval/examples")
    assert columns == ["input", "reference", "prediction"]
    rows = Prediction.read_lines(RunFolder(runs["ddp"]).predictions)
    assert [(row[1], row[2]) for row in data] == [(r.reference, r.prediction) for r in rows]
    for cell in (row[0] for row in data):
        assert cell["_type"] == "audio-file"
        clip = soundfile.info(files[cell["path"]])
        assert clip.samplerate == 16000  # Whisper's rate; a spoken digit, not its 30 s window
        assert 0.2 < clip.duration < 3 and clip.channels == 1


@pytest.mark.parametrize("strategy", ["fsdp", "zero2", "zero3"])
def test_every_strategy_ends_with_ddps_weights(runs: dict[str, Path], strategy: str) -> None:
    from transformers import AutoModelForSpeechSeq2Seq

    def weights(name: str) -> dict:
        return AutoModelForSpeechSeq2Seq.from_pretrained(runs[name] / "final").state_dict()

    reference, found = weights("ddp"), weights(strategy)
    assert found.keys() == reference.keys()
    worst = max((found[k] - reference[k]).abs().max().item() for k in reference)
    assert worst < WEIGHT_TOLERANCE, f"{strategy}: max |w - w_ddp| = {worst}"


@pytest.mark.parametrize("strategy", ["ddp", "fsdp", "zero2", "zero3"])
def test_each_ranks_peak_memory_is_within_20_percent_of_the_plan(runs: dict[str, Path],
                                                                 strategy: str) -> None:
    """Whisper tiny.en with its window cut to 1 s: the plan measured it on the fake device
    (launcher.worker.probe); each rank's RSS high-water mark is within 20% of `peak_bytes`."""
    from transformers import AutoModelForSpeechSeq2Seq

    from launcher.contract.plan import Plan
    from launcher.contract.vocabulary import Strategy

    memory = Plan.read(RunFolder(runs[strategy]).plan).memory
    final = AutoModelForSpeechSeq2Seq.from_pretrained(runs[strategy] / "final")
    assert memory is not None  # the head tied to the token embedding is counted once:
    assert memory.model_parameters == sum(p.numel() for p in final.parameters())
    planned = memory.estimate_for(Strategy(strategy), ()).peak_bytes
    measured = [report.peak_rss_bytes for report in rank_reports(runs[strategy])]
    assert planned and all(measured)
    assert max(measured) == pytest.approx(planned, rel=0.2), (measured, planned)


def test_kill_9_then_resume_gives_the_uninterrupted_weights(runs: dict[str, Path],
                                                            recipe: Path,
                                                            tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    # Every rank freezes (SIGSTOP) once its checkpoint is written, so that kill -9 lands there.
    first = launch(recipe, run_dir, fault=f"STOP@{SAVE_EVERY}")
    wait_for_event(run_dir, lambda e: isinstance(e, Checkpointed) and e.step == SAVE_EVERY,
                   first)
    kill_everything(run_dir, first)
    elastic = tmp_path / "elastic"
    shutil.copytree(run_dir, elastic)
    second = launch(recipe, run_dir, "--resume")
    out, _ = second.communicate(timeout=900)
    assert second.returncode == 0, out
    assert {r.final_weights_sha256 for r in rank_reports(run_dir)} == {
        r.final_weights_sha256 for r in rank_reports(runs["ddp"])}
    # Elastic: the same checkpoint on 1 process, the global batch kept by accumulation.
    third = launch(recipe, elastic, "--resume", "--procs-per-node", "1")
    out, _ = third.communicate(timeout=900)
    assert third.returncode == 0, out
    assert plan(elastic).world_history == (WorldSpan(0, 1, 2), WorldSpan(SAVE_EVERY, 1, 1))
    assert summary(elastic).steps == STEPS
    assert worst_difference(runs["ddp"] / "final", elastic / "final") < WEIGHT_TOLERANCE


def worst_difference(first: Path, second: Path) -> float:
    """The largest absolute difference between two saved models' weights."""
    from transformers import AutoModelForSpeechSeq2Seq

    ours, theirs = (AutoModelForSpeechSeq2Seq.from_pretrained(f).state_dict()
                    for f in (first, second))
    assert ours.keys() == theirs.keys()
    return max((ours[k] - theirs[k]).abs().max().item() for k in ours)


def test_lora_trains_an_adapter_that_eval_reloads(recipe: Path, run_cli,
                                                  tmp_path: Path) -> None:
    """LoRA on Whisper (peft's plain PeftModel: its seq2seq wrapper passes the decoder's
    input_ids twice): only adapters saved, the plan's memory measured with them, and
    `sft-launch eval` on the adapter generates the in-run transcripts."""
    from safetensors import safe_open

    run_dir = tmp_path / "lora"
    proc = launch(recipe, run_dir, "--set", "model.lora.r=8", "--set", "train.lr=1e-3")
    out, _ = proc.communicate(timeout=900)
    assert proc.returncode == 0, out
    names = {p.name for p in (run_dir / "final").iterdir()}
    assert {"adapter_config.json", "adapter_model.safetensors"} <= names
    assert "model.safetensors" not in names
    with safe_open(run_dir / "final" / "adapter_model.safetensors", "pt") as adapter:
        keys = list(adapter.keys())
    assert keys and all("lora_" in key for key in keys)
    memory = plan(run_dir).memory
    assert memory is not None
    estimate = memory.estimate_for(Strategy.DDP, ())
    assert estimate.optimizer_bytes < 0.05 * 2 * estimate.params_bytes  # Adam for the adapters
    planned = estimate.peak_bytes
    measured = [report.peak_rss_bytes for report in rank_reports(run_dir)]
    assert max(measured) == pytest.approx(planned, rel=0.2), (measured, planned)
    in_run = Prediction.read_lines(RunFolder(run_dir).predictions)
    result = run_cli("eval", run_dir, "--data", recipe.parent / "eval.csv", timeout=600)
    assert result.returncode == 0, result.stderr
    report = EvalReport.read(RunFolder(run_dir).eval_report("eval"))
    assert report.metrics["wer"] == summary(run_dir).eval["wer"]
    assert Prediction.read_lines(RunFolder(run_dir).predictions_on("eval")) == in_run
