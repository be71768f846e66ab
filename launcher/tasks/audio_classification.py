"""Audio classification (spoken commands, speakers, emotions): fine-tune a pretrained speech
encoder (Whisper's, wav2vec2-style) to label recordings, decoded, resampled and cropped in
DataLoader workers; accuracy, macro-F1 and the confusion matrix."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import AutoFeatureExtractor, AutoModelForAudioClassification

from launcher.data.encode.audio import (
    AudioError,
    crop,
    fit_window,
    frames,
    frames_computed,
    load_audio,
    log_mel_sheet,
    probe,
)
from launcher.data.encode.media import SOUND_SECONDS, Sound
from launcher.data.encode.preview import Preview, Segment, label_name
from launcher.recipe.schema import Recipe
from launcher.tasks.base import Batch, Row
from launcher.tasks.decoded_classification import DecodedClassification, origin


class AudioClassification(DecodedClassification):
    """A recording -> one label. Training crops are random windows of `data.max_seconds`
    (seeded by seed, epoch and row); evaluation takes the first `data.max_seconds`."""

    field, auto_model, invalid = "audio", AutoModelForAudioClassification, AudioError
    augments = True  # the training crop is drawn per (seed, epoch, row)
    cut = ("encoder.embed_positions.weight",)  # Whisper's, for a shorter window

    @classmethod
    def load_processor(cls, path: str, trust_remote_code: bool = False) -> Any:
        """The checkpoint's feature extractor (its rate; log-mel features or raw samples)."""
        return AutoFeatureExtractor.from_pretrained(path, trust_remote_code=trust_remote_code)

    def load_tokenizer(self) -> Any:
        """The feature extractor; a fixed window (Whisper's 30 s) cut to `data.max_seconds`
        when that is shorter."""
        extractor = super().load_tokenizer()
        self.model_input = extractor.model_input_names[0]
        self.window = fit_window(extractor, self.recipe.data.max_seconds)
        return extractor

    def config_changes(self) -> dict[str, Any]:
        """Whisper's encoder takes exactly its window: positions for the cut one (sinusoids,
        as the checkpoint's; its convolutions halve the frames)."""
        return {"max_source_positions": self.tokenizer.nb_max_frames // 2} if self.window else {}

    @classmethod
    def preview(cls, row: Row, tokenizer: Any, recipe: Recipe, names: list[str]) -> Preview:
        """The recording's file, duration and rate, and its label (the loss is on the label)."""
        info = probe(row["audio"], origin(row["audio"]))
        return Preview([Segment(origin(row["audio"]), False)], 0, None,
                       f"{info.seconds:.2f} s at {info.sample_rate} Hz, {info.channels} "
                       f"channel(s), label: {label_name(names, row['label'])}")

    @classmethod
    def preview_picture(cls, rows: list[Row], tokenizer: Any, recipe: Recipe,
                        names: list[str], out: Path) -> bool:
        """Each recording's log-mel spectrogram (its first `data.max_seconds`), labelled."""
        rate = tokenizer.sampling_rate
        clips = [load_audio(row["audio"], origin(row["audio"]), rate)[
            :round(recipe.data.max_seconds * rate)] for row in rows]
        log_mel_sheet(clips, rate, [label_name(names, row["label"]) for row in rows], out)
        return True

    def check(self, source: str | bytes, origin: str) -> dict[str, Any]:
        """The header is read (never the samples): the duration it keeps, for grouping."""
        seconds = min(probe(source, origin).seconds, self.recipe.data.max_seconds)
        return {"centiseconds": frames(seconds)}

    def tokens_in(self, example: dict[str, Any]) -> int:
        return example["centiseconds"]

    def media(self, example: dict[str, Any]) -> Sound:
        """The recording (its first SOUND_SECONDS), mono at the model's rate."""
        source = example["path"] or example["bytes"]
        rate = self.tokenizer.sampling_rate
        return Sound(load_audio(source, origin(source), rate)[:SOUND_SECONDS * rate], rate)

    def collate(self, examples: list[dict[str, Any]]) -> Batch:
        """Decode at the extractor's rate, crop, extract features. An extractor with a fixed
        window (Whisper's 30 s) pads to it; the others pad to the longest, with a mask."""
        rate = self.tokenizer.sampling_rate
        longest = int(self.recipe.data.max_seconds * rate)
        clips = [crop(load_audio(e["path"] or e["bytes"], origin(e["path"] or e["bytes"]), rate),
                      longest, e.get("augment_seed")) for e in examples]
        return self.featured(clips, [e["labels"] for e in examples]
                             if "labels" in examples[0] else None)

    def example_batch(self, rows: int) -> Batch:
        """`rows` silent recordings of `data.max_seconds`, the longest a training crop is."""
        samples = int(self.recipe.data.max_seconds * self.tokenizer.sampling_rate)
        return self.featured([np.zeros(samples, dtype=np.float32)] * rows, [0] * rows)

    def featured(self, clips: list[np.ndarray], labels: list[int] | None) -> Batch:
        """The batch of these clips (at the extractor's rate): their features, and a mask where
        the extractor pads to the longest."""
        batch = dict(self.tokenizer(clips, sampling_rate=self.tokenizer.sampling_rate,
                                    return_tensors="pt",
                                    **({} if self.window else {"padding": "longest",
                                                               "return_attention_mask": True})))
        if labels is not None:
            batch["labels"] = torch.tensor(labels)
        return batch

    def computed_in(self, batch: Batch) -> int:
        return frames_computed(tuple(batch[self.model_input].shape),
                               self.tokenizer.sampling_rate)
