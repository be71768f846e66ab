"""Every task kind: one `TaskSpec` entry each (torch-free), and the `Task` class it names.

A new task is one module in `launcher/tasks/` implementing `launcher.tasks.base.Task`, plus
one entry here; nothing else in the package names a task kind (checked by
`tests/unit/test_architecture.py`).
"""

from __future__ import annotations

import importlib

from launcher.tasks.spec import Head, TaskSpec

TASKS: dict[str, TaskSpec] = {spec.kind: spec for spec in (
    TaskSpec(
        kind="sequence_classification",
        summary="text (or a text pair) -> one label: sentiment, topic, entailment",
        implementation="launcher.tasks.sequence_classification:SequenceClassification",
        formats=("classification",), main_metric="accuracy", higher_is_better=True,
        head=Head.SEQUENCE, architectures=("ForSequenceClassification",),
        peft_task_type="SEQ_CLS", predicts="the label name", labelled=True,
        groups_by_length=True),
    TaskSpec(
        kind="token_classification",
        summary="a label per word: named entities, part of speech",
        implementation="launcher.tasks.token_classification:TokenClassification",
        formats=("conll", "tokens"), main_metric="f1", higher_is_better=True,
        head=Head.TOKEN, architectures=("ForTokenClassification",),
        peft_task_type="TOKEN_CLS", predicts="a tag per word", labelled=True,
        groups_by_length=True),
    TaskSpec(
        kind="image_classification",
        summary="an image -> one label: any transformers image classifier (EfficientNet, ViT, "
        "ResNet, ConvNeXt)",
        implementation="launcher.tasks.image_classification:ImageClassification",
        formats=("image",), main_metric="accuracy", higher_is_better=True,
        head=Head.SEQUENCE, architectures=("ForImageClassification",),
        peft_task_type=None, lora_head=("classifier",), predicts="the label name",
        labelled=True, groups_by_length=False, probed=True, counts_tokens=False),
    TaskSpec(
        kind="audio_classification",
        summary="a recording -> one label: spoken commands, speakers, emotions (Whisper's "
        "encoder, wav2vec2-style models)",
        implementation="launcher.tasks.audio_classification:AudioClassification",
        formats=("audio",), main_metric="accuracy", higher_is_better=True,
        head=Head.SEQUENCE, architectures=("ForAudioClassification",),
        peft_task_type=None, lora_head=("projector", "classifier"), predicts="the label name",
        labelled=True, groups_by_length=True, probed=True, counts_tokens=False),
    TaskSpec(
        kind="speech_recognition",
        summary="a recording -> its transcript: sequence-to-sequence speech models (Whisper) "
        "or CTC ones (wav2vec2, HuBERT, WavLM)",
        implementation="launcher.tasks.speech_recognition:SpeechRecognition",
        formats=("transcript",), main_metric="wer", higher_is_better=False,
        head=Head.LM, architectures=("ForSpeechSeq2Seq", "ForConditionalGeneration", "ForCTC"),
        # No peft task type: peft's SEQ_2_SEQ_LM wrapper passes Whisper's decoder input_ids
        # twice; the plain PeftModel forwards input_features untouched.
        peft_task_type=None, predicts="the transcript", labelled=False,
        groups_by_length=True, probed=True, counts_tokens=False),
    TaskSpec(
        kind="causal_lm",
        summary="instruction and chat SFT of a decoder: loss on the responses",
        implementation="launcher.tasks.causal_lm:CausalLM",
        formats=("alpaca", "messages", "sharegpt", "prompt_completion", "text"),
        main_metric="loss", higher_is_better=False,
        head=Head.LM, architectures=("ForCausalLM", "LMHeadModel"),
        peft_task_type="CAUSAL_LM", predicts="the generated text", labelled=False,
        groups_by_length=False, packs=True, generates_text=True),
    TaskSpec(
        kind="object_detection",
        summary="an image -> boxes with labels: any transformers detector (DETR, Conditional "
        "DETR, YOLOS)",
        implementation="launcher.tasks.object_detection:ObjectDetection",
        formats=("detection",), main_metric="map", higher_is_better=True,
        head=Head.NONE, architectures=("ForObjectDetection",),
        peft_task_type=None, lora_head=("class_labels_classifier", "bbox_predictor"),
        predicts="COCO detections: label, category_id, bbox [x, y, w, h], score",
        labelled=True, groups_by_length=False, probed=True, counts_tokens=False),
    TaskSpec(
        kind="semantic_segmentation",
        summary="an image -> a class per pixel: any transformers segmenter (SegFormer, "
        "MobileNetV2 DeepLabV3), masks of class ids (VOC palette PNGs)",
        implementation="launcher.tasks.semantic_segmentation:SemanticSegmentation",
        formats=("segmentation",), main_metric="mean_iou", higher_is_better=True,
        head=Head.NONE, architectures=("ForSemanticSegmentation",),
        peft_task_type=None, lora_head=("decode_head", "segmentation_head"),
        predicts="a mask PNG (class ids) per image", labelled=True,
        groups_by_length=False, probed=True, counts_tokens=False),
)}


def task_spec(kind: str) -> TaskSpec:
    """The spec of `kind`; a ValueError naming the known kinds otherwise."""
    try:
        return TASKS[kind]
    except KeyError:
        raise ValueError(f"unknown task kind {kind!r}; expected one of "
                         f"{', '.join(TASKS)}") from None


def task_class(kind: str) -> type:
    """The `launcher.tasks.base.Task` subclass of `kind` (its module imported now: torch comes
    with it; `launcher.tasks.base.build_task` builds one for a run)."""
    module, name = task_spec(kind).implementation.split(":")
    return getattr(importlib.import_module(module), name)
