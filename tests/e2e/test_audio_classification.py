"""Audio classification end to end on real recordings (spoken digits), 2 processes over gloo: a
tiny random-init Whisper encoder through the real CLI, its 30 s window cut to `data.max_seconds`;
eval on the same rows gives the in-run figures (top-5 accuracy included: seven digits); lr-find, a
sweep and its leaderboard on the same recipe; bad recordings named or skipped."""

from __future__ import annotations

import csv
import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
import soundfile

from launcher.contract.evaluation import EvalReport
from launcher.contract.reports import LrFindResult
from launcher.contract.run_folder import RunFolder
from launcher.contract.sweep import Leaderboard, SweepFolder
from tests.conftest import REPO, SFT_LAUNCH, cli_env
from tests.helpers.run_folder import rank_reports, summary
from tests.helpers.tiny_models import build_tiny_whisper

pytestmark = pytest.mark.slow
RECORDINGS = REPO.parent / "shared" / "data" / "fsdd" / "recordings"
WORDS = ("zero", "one", "two", "three", "four", "five", "six")  # more than 5: top-5 accuracy
EVAL_ROWS = len(WORDS) * 3
STEPS = 6


def listing(out: Path, speakers: tuple[str, ...], takes: range) -> Path:
    """`audio,label` rows of the WORDS spoken by `speakers`, paths relative to the file."""
    with out.open("w", newline="") as handle:
        rows = csv.writer(handle)
        rows.writerow(["audio", "label"])
        for speaker in speakers:
            for digit, word in enumerate(WORDS):
                for take in takes:
                    name = f"{digit}_{speaker}_{take}.wav"
                    rows.writerow([str(RECORDINGS / name), word])
    return out


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("audio")
    paths = {"model": build_tiny_whisper(root / "whisper"),
             "train": listing(root / "train.csv", ("george", "jackson"), range(4)),
             "eval": listing(root / "eval.csv", ("nicolas",), range(3))}
    paths["recipe"] = root / "audio.toml"
    paths["recipe"].write_text(f"""
[model]
path = "{paths['model']}"
[task]
kind = "audio_classification"
[data]
train = "{paths['train']}"
eval = "{paths['eval']}"
max_seconds = 1.0
[train]
max_steps = {STEPS}
global_batch_size = 8
lr = 1e-3
log_every = 1
[distributed]
strategy = "ddp"
procs_per_node = 2
[tracking]
mode = "disabled"
""")
    return paths


def launch(recipe: Path, run_dir: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([*SFT_LAUNCH, recipe, "--backend", "local", "--run-dir", run_dir,
                           "--quiet", *extra], cwd=REPO, env=cli_env(), text=True,
                          capture_output=True, timeout=600)


@pytest.fixture(scope="module")
def run(setup: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    run_dir = tmp_path_factory.mktemp("run") / "run"
    result = launch(setup["recipe"], run_dir)
    assert result.returncode == 0, result.stdout + result.stderr
    return run_dir


def test_two_processes_train_a_cut_window_and_save_it(run: Path) -> None:
    reports = rank_reports(run)
    assert {r.world_size for r in reports} == {2} and len({r.final_weights_sha256
                                                           for r in reports}) == 1
    config = json.loads((run / "final" / "config.json").read_text())
    assert config["architectures"] == ["WhisperForAudioClassification"]
    assert config["max_source_positions"] == 50  # 1 s = 100 frames of 10 ms, halved
    assert sorted(config["id2label"].values()) == sorted(WORDS)
    extractor = json.loads((run / "final" / "preprocessor_config.json").read_text())
    assert extractor["n_samples"] == 16_000 and extractor["nb_max_frames"] == 100
    done = summary(run)
    assert done.steps == STEPS and {"accuracy", "macro_f1"} <= set(done.eval)
    assert done.eval["accuracy"] <= done.eval["top5_accuracy"] <= 1
    hits = done.eval["top5_accuracy"] * EVAL_ROWS  # a count of rows, over both ranks' shares
    assert hits == pytest.approx(round(hits), abs=1e-9)
    confusion = done.eval_tables["confusion"]
    assert sum(n for row in confusion.values() for n in row.values()) == EVAL_ROWS


def test_eval_on_the_same_rows_gives_the_in_run_figures(run: Path, run_cli,
                                                        setup: dict[str, Path]) -> None:
    result = run_cli("eval", run, "--data", setup["eval"], timeout=300)
    assert result.returncode == 0, result.stderr
    report = EvalReport.read(RunFolder(run).eval_report("eval"))
    assert report.rows == EVAL_ROWS
    assert report.metrics["accuracy"] == summary(run).eval["accuracy"]
    assert report.metrics["top5_accuracy"] == summary(run).eval["top5_accuracy"]
    assert report.metrics["loss"] == pytest.approx(summary(run).eval["loss"], abs=1e-5)


def test_bad_recordings_are_named_or_skipped(setup: dict[str, Path], tmp_path: Path) -> None:
    """A zero-byte WAV and an hour-long one are refused by name (or skipped and counted);
    48 kHz stereo 24-bit audio is read (down-mixed and resampled)."""
    hifi = tmp_path / "hifi.wav"
    tone = 0.3 * np.sin(2 * np.pi * 440 * np.arange(48_000) / 48_000)
    soundfile.write(hifi, np.stack([tone, tone], axis=1), 48_000, subtype="PCM_24")
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    hour = tmp_path / "hour.wav"
    soundfile.write(hour, np.zeros(8_000, dtype=np.int16), 8_000, subtype="PCM_16")
    with hour.open("r+b") as handle:  # the header of an hour of silence, sparse on disk
        seconds = 3600
        handle.seek(4)
        handle.write((36 + 16_000 * seconds).to_bytes(4, "little"))
        handle.seek(40)
        handle.write((16_000 * seconds).to_bytes(4, "little"))
        handle.truncate(44 + 16_000 * seconds)
    rows = setup["train"].read_text().splitlines()
    train = tmp_path / "train.csv"
    train.write_text("\n".join([*rows, f"{hifi},zero", f"{empty},one", f"{hour},two"]) + "\n")
    recipe = tmp_path / "r.toml"
    recipe.write_text(setup["recipe"].read_text().replace(str(setup["train"]), str(train))
                      .replace(f"max_steps = {STEPS}", "max_steps = 1"))
    failed = launch(recipe, tmp_path / "failed")
    assert failed.returncode != 0
    assert f"{empty}: " in failed.stderr and "Traceback" not in failed.stderr, failed.stderr
    skipped = launch(recipe, tmp_path / "skipped", "--set", "data.on_bad_row=skip")
    assert skipped.returncode == 0, skipped.stdout + skipped.stderr
    assert summary(tmp_path / "skipped").data.skipped_rows == 2  # empty and hour; hifi read


def test_preview_draws_each_recordings_log_mel_features(setup: dict[str, Path], run_cli,
                                                        tmp_path: Path) -> None:
    from PIL import Image

    out = tmp_path / "mels.png"
    result = run_cli("preview", setup["recipe"], "--rows", "3", "--picture", out)
    assert result.returncode == 0, result.stderr
    assert "s at 8000 Hz, 1 channel(s), label: zero" in result.stdout
    with Image.open(out) as picture:
        assert picture.size == (800, 660)  # 2.2 inches a recording at 100 dpi


def test_lr_find_sweep_and_leaderboard_take_an_audio_recipe(setup: dict[str, Path], run_cli,
                                                            tmp_path: Path) -> None:
    found = run_cli("lr-find", setup["recipe"], "--backend", "local", "--run-dir",
                    tmp_path / "lr", "--steps", "6", "--min", "1e-5", "--max", "1", "--quiet")
    assert found.returncode == 0, found.stdout + found.stderr
    result = LrFindResult.read(RunFolder(tmp_path / "lr").lr_find)
    assert len(result.lrs) >= 3 and 1e-6 <= result.suggested_lr <= 1
    sweep_dir = tmp_path / "sweep"
    swept = run_cli("sweep", setup["recipe"], "--backend", "local", "--sweep-dir", sweep_dir,
                    "--grid", "train.lr=1e-4,1e-3", "--set", "train.max_steps=2", "--quiet")
    assert swept.returncode == 0, swept.stdout + swept.stderr
    shown = run_cli("leaderboard", sweep_dir)
    assert shown.returncode == 0, shown.stderr
    folder = SweepFolder(sweep_dir)
    board = Leaderboard.read(folder.leaderboard)
    assert board.metric == "accuracy" and not board.lower_is_better
    assert [entry.state for entry in board.entries] == ["COMPLETED"] * 2
    for entry in board.entries:
        assert entry.value == summary(folder.point(entry.point).path).eval["accuracy"]
    assert folder.best.is_file()
