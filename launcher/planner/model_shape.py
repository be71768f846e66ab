"""A model's shape from its Hugging Face config.json (stdlib only): exact parameter counts.

Parameters are counted from the config, never from weights: exactly for llama, mistral and qwen2
(gated MLP, GQA), gpt2, and bert/roberta/xlm-roberta, with the head of the task (causal LM,
sequence or token classification, or the bare model). Other families are counted from the
headers of the folder's safetensors files (no tensor is read), exact when the checkpoint has the
task's head; without weights they get the generic estimate 12*L*h^2 + V*h, flagged
``approximate``.
"""

from __future__ import annotations

import json
import math
import struct
from dataclasses import dataclass
from pathlib import Path

from launcher.tasks.registry import TASKS, task_spec
from launcher.tasks.spec import Head

_DECODERS = ("llama", "mistral", "qwen2")
_ENCODERS = ("bert", "roberta", "xlm-roberta")
# An architecture's head from its class name: each task's heads, then the bare model.
_HEAD_SUFFIXES = (*((suffix, spec.head) for spec in TASKS.values()
                    for suffix in spec.architectures), ("Model", Head.NONE))


@dataclass(frozen=True)
class ModelShape:
    """What the memory plan needs to know about a model, read from its config.json.

    ``architecture`` is as the config names it; ``head`` is the head counted in
    ``num_parameters`` (the task's when one is given).
    """

    architecture: str
    num_parameters: int
    hidden_size: int
    num_layers: int
    num_heads: int
    intermediate_size: int
    vocab_size: int
    head: Head = Head.LM
    num_labels: int = 2
    block_parameters: int = 0  # one transformer block
    approximate: bool = False  # True when num_parameters is the generic estimate
    # Every nn.Linear peft's "all-linear" adapts: (name, in, out, how many); () when unknown.
    linears: tuple[tuple[str, int, int, int], ...] = ()
    head_parameters: int = 0  # the task head (classifier / score), which LoRA trains in full
    largest_parameter: int = 0  # elements of the largest tensor (0: the token embedding's)
    # Measured by the probe (launcher.planner.memory_probe) at the plan's micro batch and precision;
    # None: computed from the shape (launcher.planner.memory).
    activations_bytes: int | None = None
    measured_trainable: int | None = None  # under LoRA, counted by the probe (with its adapters)

    @property
    def largest_tensor(self) -> int:
        """Elements of the largest parameter: measured, else the token embedding (V x h)."""
        return self.largest_parameter or self.vocab_size * self.hidden_size


@dataclass(frozen=True)
class _Count:
    total: int
    block: int
    head: Head
    labels: int
    approximate: bool = False


def _get(config: dict, *names: str) -> int:
    """The first of ``names`` present in config (aliases across families)."""
    for name in names:
        if config.get(name) is not None:
            return int(config[name])
    raise ValueError(f"no {' or '.join(repr(n) for n in names)} key")


def _head_of(config: dict, task: str | None) -> tuple[Head, bool]:
    """The head to count and whether it is known: ``task``'s, else from config's architectures."""
    if task is not None:
        return task_spec(task).head, True
    architectures = config.get("architectures") or []
    if not architectures:
        return (Head.NONE if config.get("model_type") in _ENCODERS else Head.LM), True
    for suffix, head in _HEAD_SUFFIXES:
        if architectures[0].endswith(suffix):
            return head, True
    return Head.NONE, False


def _num_labels(config: dict, num_labels: int | None) -> int:
    if num_labels is not None:
        return num_labels
    if config.get("num_labels") is not None:
        return int(config["num_labels"])
    return len(config.get("id2label") or {}) or 2


def _decoder_head(head: Head, h: int, vocab: int, labels: int, tied: bool) -> int:
    """Head parameters of a decoder: lm_head (unless tied), score (no bias), classifier."""
    return {
        Head.LM: 0 if tied else vocab * h,
        Head.SEQUENCE: h * labels,
        Head.TOKEN: h * labels + labels,
        Head.NONE: 0,
    }[head]


def _attention_widths(config: dict) -> tuple[int, int]:
    """A decoder's query and key/value projection widths (grouped-query attention aware)."""
    h, heads = _get(config, "hidden_size"), _get(config, "num_attention_heads")
    dim = config.get("head_dim") or h // heads
    return heads * dim, (config.get("num_key_value_heads") or heads) * dim


def _count_llama(config: dict, head: Head, labels: int) -> tuple[int, int]:
    h = _get(config, "hidden_size")
    q, kv = _attention_widths(config)
    inter = _get(config, "intermediate_size")
    vocab = _get(config, "vocab_size")
    model_type = config.get("model_type")
    llama_bias = model_type == "llama" and bool(config.get("attention_bias"))
    qkv_bias = model_type == "qwen2" or llama_bias
    mlp_bias = model_type == "llama" and bool(config.get("mlp_bias"))
    attention = h * (q + 2 * kv) + q * h
    attention += (q + 2 * kv if qkv_bias else 0) + (h if llama_bias else 0)
    mlp = 3 * h * inter + (2 * inter + h if mlp_bias else 0)
    block = attention + mlp + 2 * h
    total = vocab * h + _get(config, "num_hidden_layers") * block + h
    tied = config.get("tie_word_embeddings", False)
    return total + _decoder_head(head, h, vocab, labels, tied), block


def _count_gpt2(config: dict, head: Head, labels: int) -> tuple[int, int]:
    h = _get(config, "n_embd", "hidden_size")
    inter = config.get("n_inner") or 4 * h
    vocab = _get(config, "vocab_size")
    attention = h * 3 * h + 3 * h + h * h + h
    block = attention + h * inter + inter + inter * h + h + 4 * h
    total = (vocab + _get(config, "n_positions")) * h + _get(config, "n_layer") * block + 2 * h
    tied = config.get("tie_word_embeddings", True)
    return total + _decoder_head(head, h, vocab, labels, tied), block


def _count_bert(config: dict, head: Head, labels: int) -> tuple[int, int]:
    if head is Head.LM:
        raise ValueError(f"{config.get('model_type')} is an encoder: no language-model head")
    h = _get(config, "hidden_size")
    inter = _get(config, "intermediate_size")
    positions = _get(config, "max_position_embeddings")
    types = config.get("type_vocab_size", 2)
    embeddings = (_get(config, "vocab_size") + positions + types) * h + 2 * h
    block = 4 * (h * h + h) + 2 * h + h * inter + inter + inter * h + h + 2 * h
    pooler = h * h + h  # BERT's pooler, also RoBERTa's classification dense layer
    classifier = h * labels + labels
    heads_params = {
        Head.SEQUENCE: pooler + classifier,
        Head.TOKEN: classifier,
        Head.NONE: pooler,
    }
    total = embeddings + _get(config, "num_hidden_layers") * block + heads_params[head]
    return total, block


def _count(config: dict, task: str | None, num_labels: int | None) -> _Count:
    head, known = _head_of(config, task)
    labels = _num_labels(config, num_labels)
    model_type = config.get("model_type")
    if model_type in _DECODERS:
        total, block = _count_llama(config, head, labels)
    elif model_type == "gpt2":
        total, block = _count_gpt2(config, head, labels)
    elif model_type in _ENCODERS:
        total, block = _count_bert(config, head, labels)
    else:  # generic estimate
        h = _get(config, "hidden_size", "n_embd", "d_model")
        layers = _get(config, "num_hidden_layers", "n_layer", "num_layers")
        block, known = 12 * h * h, False
        total = layers * block + _get(config, "vocab_size") * h
    return _Count(total, block, head, labels, approximate=not known)


def read_model_shape(
    model_dir_or_config_json: Path, *, task: str | None = None, num_labels: int | None = None
) -> ModelShape:
    """Read a ModelShape from a model folder or its config.json, without loading weights."""
    path = Path(model_dir_or_config_json)
    if path.is_dir():
        path = path / "config.json"
    try:
        config = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"cannot read model config {path}: {exc}") from exc
    if not isinstance(config, dict):
        raise ValueError(f"{path}: not a JSON object")
    try:
        count = _count(config, task, num_labels)
        stored = stored_parameters(path.parent) if count.approximate else None
        if stored is not None:  # exact when the checkpoint has the head being counted
            stored_head, known = _head_of(config, None)
            count = _Count(stored, count.block, count.head, count.labels,
                           approximate=not known or stored_head != count.head)
        h = _get(config, "hidden_size", "n_embd", "d_model")
        return ModelShape(
            architecture=(config.get("architectures") or [config.get("model_type", "unknown")])[0],
            num_parameters=count.total,
            hidden_size=h,
            num_layers=_get(config, "num_hidden_layers", "n_layer", "num_layers"),
            num_heads=_get(config, "num_attention_heads", "n_head", "num_heads"),
            intermediate_size=(config.get("intermediate_size") or config.get("n_inner")
                               or 4 * h),
            vocab_size=_get(config, "vocab_size"),
            head=count.head,
            num_labels=count.labels,
            block_parameters=count.block,
            approximate=count.approximate,
            linears=_linears(config, count.head),
            head_parameters=_task_head(config, count.head, count.labels),
        )
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from exc


def _linears(config: dict, head: Head) -> tuple[tuple[str, int, int, int], ...]:
    """The linear layers LoRA can adapt (no lm_head or task head), per family; () if unknown."""
    model_type, layers = config.get("model_type"), config.get("num_hidden_layers", 0)
    if model_type in _DECODERS:
        h, inter = _get(config, "hidden_size"), _get(config, "intermediate_size")
        q, kv = _attention_widths(config)
        block = (("q_proj", h, q), ("k_proj", h, kv), ("v_proj", h, kv), ("o_proj", q, h),
                 ("gate_proj", h, inter), ("up_proj", h, inter), ("down_proj", inter, h))
        return tuple((name, i, o, layers) for name, i, o in block)
    if model_type in _ENCODERS:
        h, inter = _get(config, "hidden_size"), _get(config, "intermediate_size")
        block = (("query", h, h, layers), ("key", h, h, layers), ("value", h, h, layers),
                 ("dense", h, h, layers), ("dense", h, inter, layers),
                 ("dense", inter, h, layers))
        pooler = model_type == "bert" and head in (Head.SEQUENCE, Head.NONE)
        return block + ((("dense", h, h, 1),) if pooler else ())
    return ()


def _task_head(config: dict, head: Head, labels: int) -> int:
    """Parameters of a classification head (score or classifier); 0 for the others."""
    if head not in (Head.SEQUENCE, Head.TOKEN):
        return 0
    h = _get(config, "hidden_size", "n_embd")
    if config.get("model_type") in _DECODERS:
        return _decoder_head(head, h, 0, labels, tied=True)
    dense = (h * h + h if config.get("model_type") in ("roberta", "xlm-roberta")
             and head is Head.SEQUENCE else 0)  # RoBERTa's classifier.dense
    return dense + h * labels + labels



def stored_parameters(folder: Path) -> int | None:
    """Elements of every tensor in `folder`'s safetensors files, from their headers alone (an
    8-byte little-endian length, then JSON); None when the folder has none."""
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        return None
    total = 0
    for file in files:
        with file.open("rb") as handle:
            (length,) = struct.unpack("<Q", handle.read(8))
            header = json.loads(handle.read(length))
        total += sum(math.prod(entry["shape"]) for name, entry in header.items()
                     if name != "__metadata__")
    return total
