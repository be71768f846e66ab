"""Speech recognition with CTC checkpoints: which checkpoints are CTC, transcripts as character
labels (the vocabulary's case, the word delimiter, -100 padding), greedy decoding (repeats
collapsed, a blank between double letters kept, padding frames ignored), a padded batch's loss
and transcripts equal to each recording's alone, and what `preview` shows."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch

from launcher.recipe.load import load_recipe
from launcher.tasks import ctc
from launcher.tasks.speech_recognition import SpeechRecognition
from tests.conftest import REPO
from tests.helpers.tiny_models import (
    CTC_VOCAB,
    build_tiny_wav2vec2_ctc,
    build_tiny_whisper,
    ctc_tokenizer,
)

LOWER_VOCAB = ("<pad>", "<unk>", "|", *"abcdefghijklmnopqrstuvwxyz")
MIXED_VOCAB = ("<pad>", "<unk>", "|", *"abcABC")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_wav2vec2_ctc(tmp_path_factory.mktemp("ctc") / "wav2vec2")


def spelling(tokenizer, text: str) -> str:
    return "".join(tokenizer.convert_ids_to_tokens(ctc.label_ids(tokenizer, text)))


def test_labels_take_the_case_of_an_upper_case_vocabulary(tmp_path: Path) -> None:
    tokenizer = ctc_tokenizer(tmp_path, CTC_VOCAB)
    assert spelling(tokenizer, "  Three, one!\tzero's  ") == "THREE|ONE|ZERO'S"
    assert ctc.spelled(tokenizer, "two-2 ok.") == "TWO OK"  # no "-", "2" or "." in it


def test_labels_take_the_case_of_a_lower_case_vocabulary(tmp_path: Path) -> None:
    tokenizer = ctc_tokenizer(tmp_path, LOWER_VOCAB)
    assert spelling(tokenizer, "THREE One") == "three|one"
    assert "<unk>" not in tokenizer.convert_ids_to_tokens(ctc.label_ids(tokenizer, "Ok?"))


def test_a_mixed_case_vocabulary_keeps_the_texts_case(tmp_path: Path) -> None:
    tokenizer = ctc_tokenizer(tmp_path, MIXED_VOCAB)
    assert spelling(tokenizer, "aB Cab") == "aB|Cab"


def test_labels_are_padded_with_minus_100_and_decode_back_with_double_letters(
        tmp_path: Path) -> None:
    tokenizer = ctc_tokenizer(tmp_path, CTC_VOCAB)
    labels = [ctc.label_ids(tokenizer, "three"), ctc.label_ids(tokenizer, "one two")]
    extractor = build_extractor()
    batch = ctc.collate(extractor, [np.ones(1600, np.float32), np.ones(800, np.float32)],
                        labels)
    assert batch["labels"].tolist() == [labels[0] + [-100] * 2, labels[1]]
    assert batch["input_values"].shape == (2, 1600)
    assert batch["attention_mask"].sum(-1).tolist() == [1600, 800]
    assert ctc.references(tokenizer, batch["labels"]) == ["THREE", "ONE TWO"]
    assert "labels" not in ctc.collate(extractor, [np.ones(800, np.float32)], None)


def build_extractor():
    from transformers import Wav2Vec2FeatureExtractor

    return Wav2Vec2FeatureExtractor(feature_size=1, sampling_rate=16000, padding_value=0.0,
                                    do_normalize=True, return_attention_mask=True)


def test_greedy_decoding_collapses_repeats_and_drops_blanks(tmp_path: Path) -> None:
    tokenizer = ctc_tokenizer(tmp_path, CTC_VOCAB)
    t, h, r, e, bar, o, n, unk = tokenizer.convert_tokens_to_ids(
        ["T", "H", "R", "E", "|", "O", "N", "<unk>"])
    frames = [0, t, t, h, 0, r, e, e, 0, e, bar, bar, o, 0, n, n, e, unk, 0, t, t]
    logits = torch.nn.functional.one_hot(torch.tensor([frames, frames]), len(tokenizer))
    # the second row's last 2 frames are padding: ignored
    assert ctc.greedy(tokenizer, logits.float(), [len(frames), len(frames) - 2]) == [
        "THREE ONET", "THREE ONE"]


def test_a_padded_batch_gives_each_recordings_loss_and_transcript(tiny: Path) -> None:
    from transformers import AutoModelForCTC, AutoProcessor

    processor = AutoProcessor.from_pretrained(tiny)
    model = AutoModelForCTC.from_pretrained(tiny, ctc_loss_reduction="sum",
                                            ctc_zero_infinity=True).eval()
    rng = np.random.default_rng(0)
    clips = [rng.standard_normal(n).astype(np.float32) for n in (4000, 2400, 3200)]
    labels = [ctc.label_ids(processor.tokenizer, text) for text in ("one two", "zero", "three")]
    with torch.no_grad():
        batch = ctc.collate(processor.feature_extractor, clips, labels)
        loss, logits, count = ctc.loss_and_logits(model, batch)
        said = ctc.greedy(processor.tokenizer, logits, ctc.output_frames(model, batch,
                                                                         logits.shape[1]))
        alone = [ctc.collate(processor.feature_extractor, [clip], [ids])
                 for clip, ids in zip(clips, labels, strict=True)]
        each = [ctc.loss_and_logits(model, one) for one in alone]
    assert count == sum(map(len, labels)) == 7 + 4 + 5
    assert ctc.output_frames(model, batch, logits.shape[1]) == [49, 29, 39]  # 80 samples each
    assert float(loss) == pytest.approx(sum(float(one[0]) for one in each), rel=1e-4)
    assert said == [ctc.greedy(processor.tokenizer, one[1], [one[1].shape[1]])[0]
                    for one in each]


def test_the_config_says_which_checkpoints_are_ctc(tiny: Path, tmp_path: Path) -> None:
    from transformers import Wav2Vec2Config

    Wav2Vec2Config(architectures=["Wav2Vec2ForPreTraining"]).save_pretrained(tmp_path / "base")
    assert ctc.is_ctc(str(tiny)) and ctc.is_ctc(str(tmp_path / "base"))
    assert not ctc.is_ctc(str(build_tiny_whisper(tmp_path / "whisper")))


def test_preview_shows_the_transcript_as_the_labels_spell_it(tiny: Path,
                                                             tmp_path: Path) -> None:
    clip = tmp_path / "clip.wav"
    soundfile.write(clip, np.zeros(8000, np.float32), 16000)
    recipe = load_recipe(REPO / "recipes" / "asr-digits.toml", [f"model.path='{tiny}'"])
    processor = SpeechRecognition.load_processor(str(tiny))
    shown = SpeechRecognition.preview({"audio": str(clip), "text": "Three, two."}, processor,
                                      recipe, [])
    assert shown.bracketed() == f"{clip}: [[THREE TWO]]"
    assert (shown.tokens, shown.loss_tokens) == (9, 9)
    assert SpeechRecognition.preview_picture([{"audio": str(clip), "text": "two"}], processor,
                                             recipe, [], tmp_path / "sheet.png")
    assert (tmp_path / "sheet.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_transcript_longer_than_max_length_is_refused_or_skipped(tiny: Path,
                                                                  tmp_path: Path) -> None:
    from launcher.contract.errors import UsageError
    from launcher.contract.vocabulary import BackendKind
    from launcher.planner.make import make_plan
    from launcher.tasks.base import build_task

    clip = tmp_path / "three.wav"
    soundfile.write(clip, np.zeros(8000, np.float32), 16000)
    rows = [{"audio": str(clip), "text": "three"}, {"audio": str(clip), "text": "three two one"}]
    for policy in ("error", "skip"):
        recipe_file = REPO / "recipes" / "asr-digits.toml"
        recipe = load_recipe(recipe_file, [f"model.path='{tiny}'", "data.max_length=10",
                                           f"data.on_bad_row='{policy}'"])
        plan = make_plan(recipe, recipe_file=str(recipe_file), backend=BackendKind.LOCAL,
                         gpus_here=0)
        task = build_task(recipe, plan)
        task.tokenizer = task.load_tokenizer()
        if policy == "error":
            with pytest.raises(UsageError, match=r"three.wav: a transcript of 13 tokens, longer "
                                                 r"than data.max_length = 10"):
                task.encode(rows)
        else:
            skipped: list = []
            assert [len(e["labels"]) for e in task.encode(rows, skipped)] == [5]
            assert len(skipped) == 1
