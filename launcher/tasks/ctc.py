"""CTC checkpoints for speech recognition (wav2vec2, HuBERT, WavLM...): which checkpoints are
CTC, their transcripts as character labels, the model loaded with a summed CTC loss, and greedy
CTC decoding (the most likely token per output frame, repeats collapsed, blanks dropped: no
generation).

The loss is the model's own CTC loss with ``ctc_loss_reduction = "sum"`` (summed over the
batch's recordings), counted in label characters: the training loop divides by the characters
of the whole step, so the logged loss is per transcript character (as Whisper's is per token).
``ctc_zero_infinity = True``: a transcript longer than its recording's output frames gives no
loss (and no gradient) instead of an infinite one; ``layerdrop = 0``: every rank runs every layer
(DDP finds no unused parameter; sharded strategies gather every layer in lockstep). The saved
config keeps these settings.
"""

from __future__ import annotations

from itertools import groupby
from typing import Any

import torch

from launcher.contract.errors import UsageError
from launcher.contract.plan import Plan
from launcher.contract.vocabulary import Strategy
from launcher.recipe.schema import Recipe
from launcher.tasks.pretrained import pretrained

IGNORE_INDEX = -100
SUFFIX = "ForCTC"  # transformers' CTC heads: Wav2Vec2ForCTC, HubertForCTC, WavLMForCTC...


def is_ctc(path: str, trust_remote_code: bool = False) -> bool:
    """Whether the checkpoint at `path` is a CTC model: its config's first architecture ends in
    "ForCTC", or its model type has a CTC head in transformers (a pretrained-only wav2vec2 such
    as facebook/wav2vec2-base, whose architecture is Wav2Vec2ForPreTraining)."""
    from transformers import AutoConfig
    from transformers.models.auto.modeling_auto import MODEL_FOR_CTC_MAPPING_NAMES

    config = AutoConfig.from_pretrained(path, trust_remote_code=trust_remote_code)
    architectures = getattr(config, "architectures", None) or [""]
    return architectures[0].endswith(SUFFIX) or config.model_type in MODEL_FOR_CTC_MAPPING_NAMES


def spells(tokenizer: Any) -> bool:
    """Whether `tokenizer` is a CTC character tokenizer (a word delimiter, a blank as its
    padding token: Wav2Vec2CTCTokenizer), not a sequence-to-sequence one (Whisper's)."""
    return hasattr(tokenizer, "word_delimiter_token") and tokenizer.pad_token_id is not None


def spelled(tokenizer: Any, text: str) -> str:
    """`text` as the vocabulary can spell it: upper-cased when its letters are all upper-case
    (wav2vec2-base-960h), lower-cased when all lower-case; characters it lacks (punctuation, say)
    dropped; runs of whitespace one space (the word delimiter), none at the ends."""
    vocab = tokenizer.get_vocab()
    letters = [token for token in vocab if len(token) == 1 and token.isalpha()]
    if getattr(tokenizer, "do_lower_case", False) or (
            letters and all(letter.isupper() for letter in letters)):
        text = text.upper()  # (a do_lower_case tokenizer upper-cases for its upper-case vocab)
    elif letters and all(letter.islower() for letter in letters):
        text = text.lower()
    return " ".join("".join(c for c in text if c in vocab or c.isspace()).split())


def label_ids(tokenizer: Any, text: str) -> list[int]:
    """The transcript's labels: one id per character of `spelled` text, a space as the word
    delimiter ("|"), no special token added."""
    return tokenizer(spelled(tokenizer, text), add_special_tokens=False).input_ids


def refuse_unsupported(recipe: Recipe, plan: Plan) -> None:
    """A `UsageError` for what a CTC run cannot do: LoRA (no peft task type fits a CTC head),
    ZeRO-3 (transformers cannot load wav2vec2's weight-normalised positional convolution
    partitioned: huggingface/transformers#30881)."""
    if recipe.model.lora is not None:
        raise UsageError("[model.lora] is not supported for CTC checkpoints (no peft task type "
                         "fits their head): fine-tune the whole model")
    if plan.active_strategy is Strategy.ZERO3:
        raise UsageError("distributed.strategy = zero3 cannot load a CTC speech model "
                         "(transformers fails on wav2vec2's weight-normalised positional "
                         "convolution under ZeRO-3); use fsdp (it shards the parameters too), "
                         "zero2 or ddp")


def load(recipe: Recipe, plan: Plan, meta: bool, tokenizer: Any) -> torch.nn.Module:
    """The checkpoint with a CTC head over the tokenizer's vocabulary (a new head when the
    checkpoint's differs in size, or it has none), its padding token as the blank, the loss
    summed over the batch."""
    from transformers import AutoConfig, AutoModelForCTC

    config = AutoConfig.from_pretrained(plan.model_path,
                                        trust_remote_code=recipe.model.trust_remote_code)
    changes = {"vocab_size": len(tokenizer), "pad_token_id": tokenizer.pad_token_id,
               "ctc_loss_reduction": "sum", "ctc_zero_infinity": True, "layerdrop": 0.0}
    head = getattr(config, "architectures", None) or [""]
    new_head = getattr(config, "vocab_size", None) != len(tokenizer) or not head[0].endswith(
        SUFFIX)
    return pretrained(AutoModelForCTC, recipe, plan, meta, new_head=new_head, **changes)


def inputs(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """What the model takes of a batch: the extractor's outputs (samples or features, a mask)."""
    return {key: value for key, value in batch.items() if key != "labels"}


def collate(extractor: Any, clips: list[Any], labels: list[list[int]] | None
            ) -> dict[str, torch.Tensor]:
    """Clips through the feature extractor (normalised as it does), padded to the longest, with
    an attention mask when the extractor returns one; labels padded with -100."""
    batch = dict(extractor(clips, sampling_rate=extractor.sampling_rate, padding="longest",
                           return_tensors="pt"))
    if labels is not None:
        longest = max(len(ids) for ids in labels)
        batch["labels"] = torch.tensor([ids + [IGNORE_INDEX] * (longest - len(ids))
                                        for ids in labels], dtype=torch.long)
    return batch


def loss_and_logits(model: torch.nn.Module, batch: dict[str, torch.Tensor]
                    ) -> tuple[torch.Tensor, torch.Tensor, int]:
    """The summed CTC loss, the logits, and the count of label characters."""
    labels = batch["labels"]
    out = model(**inputs(batch), labels=labels)
    return out.loss, out.logits, int((labels != IGNORE_INDEX).sum())


def output_frames(model: torch.nn.Module, batch: dict[str, torch.Tensor],
                  frames: int) -> list[int]:
    """Each recording's output frames (those of its own samples, not of the padding) when the
    batch has an attention mask and the model says how its convolutions shorten a length;
    else all `frames`."""
    while hasattr(model, "module") and not hasattr(model, "_get_feat_extract_output_lengths"):
        model = model.module  # the model a DDP or DeepSpeed wrapper holds
    lengths = getattr(model, "_get_feat_extract_output_lengths", None)
    mask = batch.get("attention_mask")
    if mask is None or lengths is None or mask.dim() != 2:
        return [frames] * next(iter(batch.values())).shape[0]
    return [min(frames, int(n)) for n in lengths(mask.sum(-1))]


def greedy(tokenizer: Any, logits: torch.Tensor, frames: list[int]) -> list[str]:
    """Greedy CTC decoding: each frame's most likely token, repeats collapsed, blanks (the
    padding token) dropped, then the characters decoded (the delimiter a space)."""
    best = logits.argmax(-1).tolist()
    blank = tokenizer.pad_token_id
    ids = [[token for token, _ in groupby(row[:n]) if token != blank]
           for row, n in zip(best, frames, strict=True)]
    return decode(tokenizer, ids)


def decode(tokenizer: Any, ids: list[list[int]]) -> list[str]:
    """Character ids as text, as they are (no CTC grouping: a double letter stays double),
    special tokens but the word delimiter left out."""
    return tokenizer.batch_decode(ids, skip_special_tokens=True, group_tokens=False)


def references(tokenizer: Any, labels: torch.Tensor) -> list[str]:
    """The batch's transcripts as their labels spell them."""
    return decode(tokenizer, [[i for i in row if i != IGNORE_INDEX] for row in labels.tolist()])
