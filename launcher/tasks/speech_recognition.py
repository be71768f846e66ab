"""Speech recognition: fine-tune a pretrained speech model to transcribe recordings, scored by
word and character error rates (jiwer) on normalised text. A sequence-to-sequence checkpoint
(Whisper): labels from its tokenizer, transcripts generated at evaluation. A CTC checkpoint
(wav2vec2, HuBERT, WavLM: its config says which, `launcher.tasks.ctc`): characters as labels, raw
samples as inputs, transcripts decoded greedily from one forward pass."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jiwer
import numpy as np
import torch
import torch.nn.functional as F
from transformers import AutoConfig, AutoModelForSpeechSeq2Seq, AutoProcessor
from transformers.models.whisper.english_normalizer import (
    BasicTextNormalizer,
    EnglishTextNormalizer,
)

from launcher.contract.errors import UsageError
from launcher.data.encode.audio import (
    AudioError,
    fit_window,
    frames,
    frames_computed,
    load_audio,
    log_mel_sheet,
    probe,
)
from launcher.data.encode.media import SOUND_SECONDS, Sound
from launcher.data.encode.preview import Preview, Segment
from launcher.data.errors import DataError
from launcher.data.splits import load_splits
from launcher.recipe.schema import Recipe
from launcher.tasks import ctc
from launcher.tasks.base import Batch, EncodedData, EvalOutput, Example, Row, Task
from launcher.tasks.decoded_classification import file_example, origin, refuse_or_skip
from launcher.tasks.pretrained import pretrained

IGNORE_INDEX = -100
POSITIONS = ("model.encoder.embed_positions.weight",)  # Whisper's, cut with its window


class SpeechRecognition(Task):
    """A recording -> its transcript. Recordings longer than `data.max_seconds` are refused
    (a window of one would not match its transcript); Whisper's window is cut to it."""

    decodes = True
    ctc_model = False  # a CTC checkpoint (its config says), else sequence-to-sequence

    @classmethod
    def load_processor(cls, path: str, trust_remote_code: bool = False) -> Any:
        """The checkpoint's processor: its feature extractor and its tokenizer."""
        return AutoProcessor.from_pretrained(path, trust_remote_code=trust_remote_code)

    def load_tokenizer(self) -> Any:
        """The processor; whether the checkpoint is a CTC model, and its tokenizer one for it."""
        processor = super().load_tokenizer()
        self.ctc_model = ctc.is_ctc(self.plan.model_path, self.recipe.model.trust_remote_code)
        if self.ctc_model != ctc.spells(processor.tokenizer):
            kind = "CTC" if self.ctc_model else "sequence-to-sequence"
            name = type(processor.tokenizer).__name__
            raise UsageError(f"{self.plan.tokenizer_path}: its {name} does not fit the {kind} "
                             f"model {self.plan.model_path} "
                             "(a CTC model needs a CTC character tokenizer such as "
                             "Wav2Vec2CTCTokenizer); set model.tokenizer to one that fits")
        if self.ctc_model:
            ctc.refuse_unsupported(self.recipe, self.plan)
        self.window = fit_window(processor.feature_extractor, self.recipe.data.max_seconds)
        return processor

    @classmethod
    def preview(cls, row: Row, tokenizer: Any, recipe: Recipe, names: list[str]) -> Preview:
        """The recording's file and duration, and the transcript (its tokens carry the loss)."""
        info = probe(row["audio"], origin(row["audio"]))
        spells = ctc.spells(tokenizer.tokenizer)  # CTC: the characters the vocabulary has
        text = ctc.spelled(tokenizer.tokenizer, row["text"]) if spells else row["text"]
        ids = (ctc.label_ids(tokenizer.tokenizer, row["text"]) if spells
               else tokenizer.tokenizer(row["text"]).input_ids)
        return Preview([Segment(f"{origin(row['audio'])}: ", False),
                        Segment(text, True)], len(ids), len(ids),
                       f"{info.seconds:.2f} s at {info.sample_rate} Hz")

    @classmethod
    def preview_picture(cls, rows: list[Row], tokenizer: Any, recipe: Recipe,
                        names: list[str], out: Path) -> bool:
        """Each recording's log-mel spectrogram, titled with its transcript."""
        rate = tokenizer.feature_extractor.sampling_rate
        log_mel_sheet([load_audio(row["audio"], origin(row["audio"]), rate) for row in rows],
                      rate, [row["text"] for row in rows], out)
        return True

    def encode_data(self, tokenizer: Any) -> EncodedData:
        self.tokenizer = tokenizer
        splits = load_splits(self.recipe)
        skipped: list[DataError] = []
        train, evaluation = self.encode(splits.train, skipped), self.encode(splits.eval, skipped)
        stats = type(splits.stats)(train_rows=len(train), eval_rows=len(evaluation),
                                   skipped_rows=splits.stats.skipped_rows + len(skipped))
        return EncodedData(train=train, eval=evaluation, stats=stats)

    def encode(self, rows: list[Row], skipped: list[DataError] | None = None) -> list[Example]:
        """Each recording's source and length (its header checked) and its transcript's
        token ids (`labels`). A recording longer than `data.max_seconds` or a transcript longer
        than `data.max_length` tokens is refused (or skipped): cut, it would not match."""
        examples, start = [], self.tokenizer.tokenizer.convert_tokens_to_ids(
            "<|startoftranscript|>")
        for row in rows:
            source = row["audio"]
            data = self.recipe.data
            try:
                seconds = probe(source, origin(source)).seconds
                if seconds > data.max_seconds:
                    raise AudioError(f"{origin(source)}: {seconds:.1f} s long, longer than "
                                     f"data.max_seconds = {data.max_seconds}; "
                                     "raise it or cut the recording with its transcript")
                example = {**file_example(source), "centiseconds": frames(seconds)}
                if "text" in row:
                    example["labels"] = labels = self.labels(row["text"], start)
                    if len(labels) > data.max_length:
                        raise AudioError(f"{origin(source)}: a transcript of {len(labels)} "
                                         f"tokens, longer than data.max_length = "
                                         f"{data.max_length}; raise it")
            except AudioError as err:
                refuse_or_skip(err, source, data.on_bad_row, skipped)
                continue
            examples.append(example)
        return examples

    def labels(self, text: str, start: int) -> list[int]:
        """The transcript's labels: the tokenizer's ids without the decoder start token `start`
        (the model prepends it); a CTC model's characters (`ctc.label_ids`)."""
        if self.ctc_model:
            return ctc.label_ids(self.tokenizer.tokenizer, text)
        ids = self.tokenizer.tokenizer(text).input_ids
        return ids[1:] if ids and ids[0] == start else ids

    def example_batch(self, rows: int) -> Batch:
        """`rows` silent recordings of `data.max_seconds` with transcripts of `data.max_length`
        tokens (the longest `encode` lets through; at most the decoder's positions)."""
        extractor = self.tokenizer.feature_extractor
        clip = np.zeros(int(self.recipe.data.max_seconds * extractor.sampling_rate), np.float32)
        longest = self.recipe.data.max_length
        if self.ctc_model:
            return ctc.collate(extractor, [clip] * rows, [[1] * longest] * rows)
        positions = getattr(AutoConfig.from_pretrained(self.plan.model_path),
                            "max_target_positions", longest)
        return {"input_features": extractor([clip] * rows, sampling_rate=extractor.sampling_rate,
                                            return_tensors="pt")["input_features"],
                "labels": torch.ones(rows, min(longest, positions), dtype=torch.long)}

    def load_model(self, encoded: EncodedData, meta: bool = False) -> torch.nn.Module:
        """The checkpoint; Whisper's encoder positions for a cut window (the first ones); a CTC
        head over the tokenizer's characters (`ctc.load`)."""
        if self.ctc_model:
            return ctc.load(self.recipe, self.plan, meta, self.tokenizer.tokenizer)
        extractor = self.tokenizer.feature_extractor
        changes = {"max_source_positions": extractor.nb_max_frames // 2} if self.window else {}
        model = pretrained(AutoModelForSpeechSeq2Seq, self.recipe, self.plan, meta,
                           new_head=bool(changes), cut=POSITIONS, **changes)
        model.config.use_cache = False
        return model

    def media(self, example: dict[str, Any]) -> Sound:
        """The recording (its first SOUND_SECONDS), mono at the model's rate."""
        source = example["path"] or example["bytes"]
        rate = self.tokenizer.feature_extractor.sampling_rate
        return Sound(load_audio(source, origin(source), rate)[:SOUND_SECONDS * rate], rate)

    def collate(self, examples: list[dict[str, Any]]) -> Batch:
        extractor = self.tokenizer.feature_extractor
        rate = extractor.sampling_rate
        clips = [load_audio(e["path"] or e["bytes"], origin(e["path"] or e["bytes"]), rate)
                 for e in examples]
        if self.ctc_model:  # raw samples padded to the longest, with a mask
            return ctc.collate(extractor, clips, [e["labels"] for e in examples]
                               if "labels" in examples[0] else None)
        batch = {"input_features": extractor(clips, sampling_rate=rate,
                                             return_tensors="pt")["input_features"]}
        if "labels" in examples[0]:
            longest = max(len(e["labels"]) for e in examples)
            batch["labels"] = torch.tensor([e["labels"] + [IGNORE_INDEX] * (longest
                                            - len(e["labels"])) for e in examples])
        return batch

    def tokens_in(self, example: dict[str, Any]) -> int:
        return example["centiseconds"]

    def count_units(self, example: dict[str, Any]) -> int:
        return len(example["labels"])  # the loss is per transcript token

    def computed_in(self, batch: Batch) -> int:
        extractor = self.tokenizer.feature_extractor
        return frames_computed(tuple(batch[extractor.model_input_names[0]].shape),
                               extractor.sampling_rate)

    def computed_tokens(self, examples: Any) -> int:
        return len(examples)

    def loss_sum(self, model: torch.nn.Module, batch: Batch) -> tuple[torch.Tensor, int]:
        """Summed over the labels' tokens (CTC: the model's loss summed over the recordings,
        counted in characters)."""
        if self.ctc_model:
            loss, _, count = ctc.loss_and_logits(model, batch)
            return loss, count
        labels = batch["labels"]
        logits = model(input_features=batch["input_features"], labels=labels).logits
        loss = F.cross_entropy(logits.float().flatten(0, 1), labels.flatten(),
                               ignore_index=IGNORE_INDEX, reduction="sum")
        return loss, int((labels != IGNORE_INDEX).sum())

    def predict(self, model: torch.nn.Module, batch: Batch, max_new_tokens: int,
                synced: bool = False) -> list[str]:
        """Each recording's transcript, generated greedily (by the model a DDP or DeepSpeed
        wrapper holds: only it generates); a CTC model's decoded from one forward pass."""
        if self.ctc_model:
            logits = model(**ctc.inputs(batch)).logits
            return ctc.greedy(self.tokenizer.tokenizer, logits,
                              ctc.output_frames(model, batch, logits.shape[1]))
        while not hasattr(model, "generate") and hasattr(model, "module"):
            model = model.module
        out = model.generate(input_features=batch["input_features"],
                             max_new_tokens=max_new_tokens, synced_gpus=synced)
        return self.tokenizer.batch_decode(out, skip_special_tokens=True)

    def reference(self, row: Row) -> str | None:
        return row.get("text")

    def evaluate(self, model: torch.nn.Module, batch: Batch) -> EvalOutput:
        if self.ctc_model:  # one forward (every rank runs it): the loss and the transcripts
            loss, logits, count = ctc.loss_and_logits(model, batch)
            tokens = self.tokenizer.tokenizer
            return EvalOutput(loss_sum=float(loss), count=count,
                              predictions=ctc.greedy(tokens, logits, ctc.output_frames(
                                  model, batch, logits.shape[1])),
                              references=ctc.references(tokens, batch["labels"]))
        loss, count = self.loss_sum(model, batch)
        tokens = self.tokenizer.tokenizer
        filler = tokens.pad_token_id if tokens.pad_token_id is not None else tokens.eos_token_id
        labels = batch["labels"].masked_fill(batch["labels"] == IGNORE_INDEX, filler)
        sharded = self.plan.active_strategy is not None and self.plan.active_strategy \
            .shards_parameters  # a forward needs every rank's shards: generate in lockstep
        synced = self.plan.world_size > 1 and sharded
        return EvalOutput(loss_sum=float(loss), count=count,
                          predictions=self.predict(model, batch, self.recipe.train
                                                   .generation_max_tokens, synced),
                          references=self.tokenizer.batch_decode(labels,
                                                                 skip_special_tokens=True))

    def metrics(self, loss_sum: float, count: int, predictions: list[Any],
                references: list[Any], sums: dict[str, float] | None = None) -> dict[str, Any]:
        """WER and CER (jiwer) of the normalised transcripts (`task.normalize`)."""
        scores: dict[str, Any] = {"loss": loss_sum / max(count, 1)}
        if references:
            truth, said = normalised(references, self.recipe), normalised(predictions,
                                                                           self.recipe)
            scores.update(wer=float(jiwer.wer(truth, said)), cer=float(jiwer.cer(truth, said)))
        return scores


def normalised(texts: list[str], recipe: Recipe) -> list[str]:
    """Texts as the error rates compare them: Whisper's English normaliser (numbers as digits,
    spellings standardised), its basic one (lowercase, no punctuation), or as they are; an
    empty text becomes one space (jiwer refuses empty references)."""
    how = recipe.task.normalize
    normalise = (EnglishTextNormalizer({}) if how == "english" else BasicTextNormalizer()
                 if how == "basic" else str.strip)
    return [normalise(text).strip() or " " for text in texts]
