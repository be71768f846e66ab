"""Speech recognition with a CTC checkpoint end to end: a tiny random-init wav2vec2 (its
processor an upper-case character vocabulary, as wav2vec2-base-960h's) fine-tuned on spoken
digits by the asr-digits recipe's 2 processes; greedy CTC transcripts at evaluation scored with
jiwer's WER and CER; `sft-launch predict` transcribes a list of recordings."""

from __future__ import annotations

import json
import math
import subprocess
from pathlib import Path

import jiwer
import pytest

from launcher.contract.evaluation import Prediction
from launcher.contract.events import TrainLogged
from launcher.contract.run_folder import RunFolder
from launcher.recipe.load import load_recipe
from launcher.tasks.speech_recognition import normalised
from tests.conftest import REPO, SFT_LAUNCH, cli_env
from tests.helpers.run_folder import events, of_kind, rank_reports, summary
from tests.helpers.tiny_models import build_tiny_wav2vec2_ctc

pytestmark = pytest.mark.slow
RECORDINGS = REPO.parent / "shared" / "data" / "fsdd" / "recordings"
RECIPE = REPO / "recipes" / "asr-digits.toml"
WORDS = ("zero", "one", "two", "three")  # "three": a double letter CTC must keep


def listing(out: Path, speaker: str, takes: range, text: bool = True) -> Path:
    rows = [(RECORDINGS / f"{digit}_{speaker}_{take}.wav", word)
            for digit, word in enumerate(WORDS) for take in takes]
    lines = (["audio,text"] + [f"{path},{word}" for path, word in rows] if text
             else ["audio"] + [str(path) for path, _ in rows])
    out.write_text("\n".join(lines) + "\n")
    return out


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("ctc")
    model = build_tiny_wav2vec2_ctc(root / "wav2vec2")
    train = listing(root / "train.csv", "george", range(2))
    held = listing(root / "eval.csv", "yweweler", range(1))
    settings = {"model.path": model, "data.train": train, "data.eval": held,
                "tracking.mode": "disabled", "train.max_steps": 3, "train.log_every": 1,
                "train.global_batch_size": 4, "train.lr": 1e-3}
    sets = [arg for key, value in settings.items() for arg in ("--set", f"{key}={value}")]
    done = subprocess.run([*SFT_LAUNCH, RECIPE, "--backend", "local", "--run-dir",
                           root / "run", "--quiet", *sets], cwd=REPO, env=cli_env(),
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    return root / "run"


def test_ctc_training_loss_is_finite_and_error_rates_are_jiwers(run: Path) -> None:
    config = json.loads((RunFolder(run).final / "config.json").read_text())
    assert config["architectures"] == ["Wav2Vec2ForCTC"]
    assert config["ctc_loss_reduction"] == "sum" and config["ctc_zero_infinity"] is True
    assert {r.world_size for r in rank_reports(run)} == {2}
    losses = [e.loss for e in of_kind(events(run), TrainLogged)]
    assert len(losses) == 3 and all(math.isfinite(loss) and loss > 0 for loss in losses)
    done = summary(run)
    assert done.train_loss is not None and math.isfinite(done.train_loss)
    rows = Prediction.read_lines(RunFolder(run).predictions)
    assert len(rows) == len(WORDS) and all(isinstance(r.prediction, str) for r in rows)
    # the references are the transcripts as the upper-case vocabulary spells them
    assert [r.reference for r in rows] == [word.upper() for word in WORDS]
    settings = load_recipe(RECIPE)
    truth = normalised([r.reference for r in rows], settings)
    said = normalised([r.prediction for r in rows], settings)
    assert done.eval["wer"] == pytest.approx(jiwer.wer(truth, said), abs=1e-12)
    assert done.eval["cer"] == pytest.approx(jiwer.cer(truth, said), abs=1e-12)
    assert math.isfinite(done.eval["loss"]) and done.eval["loss"] > 0


def test_ctc_predict_transcribes_a_list_of_recordings(run: Path) -> None:
    recordings = listing(run.parent / "to-transcribe.csv", "yweweler", range(1), text=False)
    done = subprocess.run([*SFT_LAUNCH, "predict", run, "--data", recordings], cwd=REPO,
                          env=cli_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    rows = Prediction.read_lines(RunFolder(run).predictions_on("to-transcribe"))
    assert [r.index for r in rows] == list(range(len(WORDS)))
    assert all(isinstance(r.prediction, str) and r.reference is None for r in rows)
    # the final model on the same recordings: the transcripts its evaluation wrote
    evaluated = Prediction.read_lines(RunFolder(run).predictions)
    assert [r.prediction for r in rows] == [r.prediction for r in evaluated]
