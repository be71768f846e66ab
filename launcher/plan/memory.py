"""Per-device memory plan for fine-tuning, from a Hugging Face config.json (stdlib only).

Parameters (P) are counted from the config alone, never from weights: exactly for llama,
mistral and qwen2 (gated MLP, GQA), gpt2, and bert/roberta/xlm-roberta, with the head of the
task (causal LM, sequence or token classification, or the bare model). Other families get the
generic estimate 12*L*h^2 + V*h and are flagged ``approximate``.

Accounting, AdamW as in the ZeRO paper, T = trainable parameters (P unless adapters are used):

    precision         params   grads   optimizer
    bf16/fp16 mixed   2P       2T      12T  (fp32 master copy + momentum + variance)
    fp32              4P       4T       8T  (momentum + variance; the params are the master)

DeepSpeed ZeRO keeps its own fp32 master partition of the weights even when they are fp32, so
under zero2/zero3 the fp32 optimizer takes 12T (measured: a copy, not a view).

Per device, N = world size (shards round up):

    ddp            everything replicated
    zero2          params replicated; grads and optimizer / N
    fsdp, zero3    params, grads and optimizer / N (FSDP FULL_SHARD)
    zero3_offload  params, grads and optimizer live in host memory, 1/N per rank (host_bytes);
                   the device holds the largest module gathered (one block or the token
                   embedding) with its grads

Activations per device (Korthikanti et al. 2022, "Reducing Activation Recomputation in Large
Transformer Models", no tensor/sequence parallelism), s = seq_len, b = micro batch,
h = hidden, a = heads, L = layers, V = vocab:

    one layer, 16-bit        s*b*h*(34 + 5*a*s/h) bytes
    one layer, fp32          s*b*h*(66 + 9*a*s/h) bytes (2-byte tensors double, 1-byte masks stay)
    no checkpointing         L * one layer
    checkpointing            L * s*b*h*e (each layer's input, e = 2 or 4 bytes) + one layer
    logits (fp32)            b*s*V*4 (causal LM), b*s*labels*4 (tokens), b*labels*4 (sequence)

The a*s/h term assumes attention scores are stored (eager attention); with flash/SDPA kernels
it overestimates. A plan ``fits`` when its total is at most USABLE_FRACTION of the device
memory; the rest is left to the runtime context, allocator fragmentation and comm buffers.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

STRATEGIES = ("ddp", "zero2", "fsdp", "zero3", "zero3_offload")
PRECISIONS = ("fp32", "bf16", "fp16")
TASKS = ("causal_lm", "sequence_classification", "token_classification")
USABLE_FRACTION = 0.9
# bytes per parameter: (params, grads, optimizer state)
_BYTES_PER_PARAM = {"fp32": (4, 4, 8), "bf16": (2, 2, 12), "fp16": (2, 2, 12)}
_MAX_UNITS = 1 << 16  # nodes, or processes without procs_per_node
_DECODERS = ("llama", "mistral", "qwen2")
_ENCODERS = ("bert", "roberta", "xlm-roberta")
_HEAD_SUFFIXES = (
    ("ForCausalLM", "causal_lm"),
    ("LMHeadModel", "causal_lm"),
    ("ForSequenceClassification", "sequence_classification"),
    ("ForTokenClassification", "token_classification"),
    ("Model", "none"),
)


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
    head: str = "causal_lm"  # a TASKS entry, or "none" for the bare model
    num_labels: int = 2
    block_parameters: int = 0  # one transformer block
    approximate: bool = False  # True when num_parameters is the generic estimate


@dataclass(frozen=True)
class MemoryEstimate:
    """Bytes per device for one strategy; host_bytes is what a rank offloads to CPU memory."""

    strategy: str
    world_size: int
    params_bytes: int
    grads_bytes: int
    optimizer_bytes: int
    activations_bytes: int
    total_bytes: int
    fits: bool | None  # None when no device memory was given
    host_bytes: int = 0


class DoesNotFit(ValueError):
    """No strategy fits; min_world_size/min_nodes say what would (None: nothing would)."""

    def __init__(
        self, message: str, *, best: MemoryEstimate, min_world_size: int | None,
        min_nodes: int | None,
    ) -> None:
        super().__init__(message)
        self.best = best
        self.min_world_size = min_world_size
        self.min_nodes = min_nodes


@dataclass(frozen=True)
class _Count:
    total: int
    block: int
    head: str
    labels: int
    approximate: bool = False


def _get(config: dict, *names: str) -> int:
    """The first of ``names`` present in config (aliases across families)."""
    for name in names:
        if config.get(name) is not None:
            return int(config[name])
    raise ValueError(f"no {' or '.join(repr(n) for n in names)} key")


def _head_of(config: dict, task: str | None) -> tuple[str, bool]:
    """The head to count and whether it is known: ``task``, else from config's architectures."""
    if task is not None:
        if task not in TASKS:
            raise ValueError(f"unknown task {task!r}; expected one of {', '.join(TASKS)}")
        return task, True
    architectures = config.get("architectures") or []
    if not architectures:
        return ("none" if config.get("model_type") in _ENCODERS else "causal_lm"), True
    for suffix, head in _HEAD_SUFFIXES:
        if architectures[0].endswith(suffix):
            return head, True
    return "none", False


def _num_labels(config: dict, num_labels: int | None) -> int:
    if num_labels is not None:
        return num_labels
    if config.get("num_labels") is not None:
        return int(config["num_labels"])
    return len(config.get("id2label") or {}) or 2


def _decoder_head(head: str, h: int, vocab: int, labels: int, tied: bool) -> int:
    """Head parameters of a decoder: lm_head (unless tied), score (no bias), classifier."""
    return {
        "causal_lm": 0 if tied else vocab * h,
        "sequence_classification": h * labels,
        "token_classification": h * labels + labels,
        "none": 0,
    }[head]


def _count_llama(config: dict, head: str, labels: int) -> tuple[int, int]:
    h = _get(config, "hidden_size")
    heads = _get(config, "num_attention_heads")
    q = heads * (config.get("head_dim") or h // heads)
    kv = (config.get("num_key_value_heads") or heads) * (config.get("head_dim") or h // heads)
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


def _count_gpt2(config: dict, head: str, labels: int) -> tuple[int, int]:
    h = _get(config, "n_embd", "hidden_size")
    inter = config.get("n_inner") or 4 * h
    vocab = _get(config, "vocab_size")
    attention = h * 3 * h + 3 * h + h * h + h
    block = attention + h * inter + inter + inter * h + h + 4 * h
    total = (vocab + _get(config, "n_positions")) * h + _get(config, "n_layer") * block + 2 * h
    tied = config.get("tie_word_embeddings", True)
    return total + _decoder_head(head, h, vocab, labels, tied), block


def _count_bert(config: dict, head: str, labels: int) -> tuple[int, int]:
    if head == "causal_lm":
        raise ValueError(f"{config.get('model_type')} is an encoder: no causal_lm head")
    h = _get(config, "hidden_size")
    inter = _get(config, "intermediate_size")
    positions = _get(config, "max_position_embeddings")
    types = config.get("type_vocab_size", 2)
    embeddings = (_get(config, "vocab_size") + positions + types) * h + 2 * h
    block = 4 * (h * h + h) + 2 * h + h * inter + inter + inter * h + h + 2 * h
    pooler = h * h + h  # BERT's pooler, also RoBERTa's classification dense layer
    classifier = h * labels + labels
    heads_params = {
        "sequence_classification": pooler + classifier,
        "token_classification": classifier,
        "none": pooler,
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


def count_parameters(
    config: dict, *, task: str | None = None, num_labels: int | None = None
) -> int:
    """Parameters of the model ``config`` describes, as ``model.parameters()`` counts them.

    ``task`` picks the head (TASKS); by default it follows ``architectures[0]`` in the config.
    ``num_labels`` defaults to the config's (or 2, as in transformers).
    """
    return _count(config, task, num_labels).total


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
        )
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from exc


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def _activations(
    shape: ModelShape, micro_batch_size: int, seq_len: int, precision: str, checkpointing: bool
) -> int:
    s, b, h, a = seq_len, micro_batch_size, shape.hidden_size, shape.num_heads
    if precision == "fp32":
        layer, stored_input = s * b * (66 * h + 9 * a * s), 4 * s * b * h
    else:
        layer, stored_input = s * b * (34 * h + 5 * a * s), 2 * s * b * h
    layers = (shape.num_layers * stored_input + layer if checkpointing
              else shape.num_layers * layer)
    logits = {
        "causal_lm": b * s * shape.vocab_size * 4,
        "token_classification": b * s * shape.num_labels * 4,
        "sequence_classification": b * shape.num_labels * 4,
    }.get(shape.head, 0)
    return layers + logits


def estimate(
    shape: ModelShape,
    *,
    strategy: str,
    world_size: int,
    micro_batch_size: int,
    seq_len: int,
    precision: str,
    activation_checkpointing: bool = False,
    device_memory_bytes: int | None = None,
    trainable_parameters: int | None = None,
) -> MemoryEstimate:
    """Bytes per device for ``strategy`` (see the module docstring for the formulas).

    ``trainable_parameters`` (e.g. LoRA) are part of ``shape.num_parameters``; grads and
    optimizer state scale with them, params with all.
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown strategy {strategy!r}; expected one of {', '.join(STRATEGIES)}")
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; expected one of "
                         f"{', '.join(PRECISIONS)}")
    if min(world_size, micro_batch_size, seq_len) < 1:
        raise ValueError("world_size, micro_batch_size and seq_len must be at least 1")
    total_params = shape.num_parameters
    trainable = total_params if trainable_parameters is None else trainable_parameters
    if not 0 <= trainable <= total_params:
        raise ValueError(f"trainable_parameters must be within 0..{total_params}, "
                         f"got {trainable}")
    p_bytes, g_bytes, o_bytes = _BYTES_PER_PARAM[precision]
    if strategy.startswith("zero") and precision == "fp32":
        o_bytes += 4  # DeepSpeed keeps an fp32 master partition even for fp32 weights
    params, grads, optim = p_bytes * total_params, g_bytes * trainable, o_bytes * trainable
    host = 0
    if strategy == "zero2":
        grads, optim = _ceil_div(grads, world_size), _ceil_div(optim, world_size)
    elif strategy in ("fsdp", "zero3"):
        params, grads, optim = (_ceil_div(x, world_size) for x in (params, grads, optim))
    elif strategy == "zero3_offload":
        host = _ceil_div(params + grads + optim, world_size)
        working = min(max(shape.block_parameters, shape.vocab_size * shape.hidden_size),
                      total_params)
        params, grads, optim = p_bytes * working, g_bytes * min(working, trainable), 0
    activations = _activations(shape, micro_batch_size, seq_len, precision,
                               activation_checkpointing)
    total = params + grads + optim + activations
    fits = (None if device_memory_bytes is None
            else total <= int(device_memory_bytes * USABLE_FRACTION))
    return MemoryEstimate(strategy, world_size, params, grads, optim, activations, total, fits,
                          host)


def choose_strategy(
    shape: ModelShape,
    *,
    world_size: int,
    micro_batch_size: int,
    seq_len: int,
    precision: str,
    activation_checkpointing: bool,
    device_memory_bytes: int,
    procs_per_node: int | None = None,
    trainable_parameters: int | None = None,
    strategies: Sequence[str] = STRATEGIES,
) -> str:
    """The first of ``strategies`` that fits on each device.

    Raises DoesNotFit naming the smallest world size that would fit, in nodes of
    ``procs_per_node`` processes when given (else in processes), or saying that none would.
    """
    def at(n: int) -> list[MemoryEstimate]:
        return [estimate(shape, strategy=s, world_size=n, micro_batch_size=micro_batch_size,
                         seq_len=seq_len, precision=precision,
                         activation_checkpointing=activation_checkpointing,
                         device_memory_bytes=device_memory_bytes,
                         trainable_parameters=trainable_parameters) for s in strategies]

    estimates = at(world_size)
    for est in estimates:
        if est.fits:
            return est.strategy
    step = procs_per_node or 1
    nodes = _min_units(lambda k: any(e.fits for e in at(k * step)))
    best = min(estimates, key=lambda e: e.total_bytes)
    usable = int(device_memory_bytes * USABLE_FRACTION)
    message = (
        f"{shape.architecture} ({shape.num_parameters / 1e9:.2f}B parameters, {precision}, "
        f"micro batch {micro_batch_size} x {seq_len} tokens) does not fit in "
        f"{format_bytes(usable)} usable of {format_bytes(device_memory_bytes)} per device on "
        f"{world_size} processes with {'/'.join(strategies)}: the smallest, {best.strategy}, "
        f"needs {format_bytes(best.total_bytes)} per device."
    )
    if nodes is None:
        message += (
            f" No world size would fit: activations need "
            f"{format_bytes(best.activations_bytes)} per device at any size; lower "
            "micro_batch_size or seq_len, or enable activation checkpointing."
        )
        raise DoesNotFit(message, best=best, min_world_size=None, min_nodes=None)
    fitting = next(e for e in at(nodes * step) if e.fits)
    where = (f"{nodes} nodes of {procs_per_node} processes ({nodes * step} processes)"
             if procs_per_node else f"{nodes} processes")
    message += f" It would fit on {where} with {fitting.strategy}."
    raise DoesNotFit(message, best=best, min_world_size=nodes * step,
                     min_nodes=nodes if procs_per_node else None)


def _min_units(fits: Callable[[int], bool]) -> int | None:
    """Smallest k >= 1 with fits(k), for fits monotone in k; None beyond _MAX_UNITS."""
    high = 1
    while not fits(high):
        if high >= _MAX_UNITS:
            return None
        high *= 2
    low = high // 2  # does not fit (or 0)
    while high - low > 1:
        mid = (low + high) // 2
        low, high = (low, mid) if fits(mid) else (mid, high)
    return high


_UNITS = {
    "": 1, "b": 1,
    "k": 1 << 10, "kib": 1 << 10, "kb": 10**3,
    "m": 1 << 20, "mib": 1 << 20, "mb": 10**6,
    "g": 1 << 30, "gib": 1 << 30, "gb": 10**9,
    "t": 1 << 40, "tib": 1 << 40, "tb": 10**12,
}
_SIZE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([a-z]*)\s*", re.IGNORECASE)


def parse_bytes(text: str) -> int:
    """Bytes in a size: KiB/MiB/GiB/TiB and bare K/M/G/T (as Slurm) are binary, KB/MB/GB/TB
    decimal, no unit or B is bytes; case-insensitive."""
    match = _SIZE.fullmatch(text)
    unit = match and _UNITS.get(match.group(2).lower())
    if not unit:
        raise ValueError(f"cannot read {text!r} as a size; write e.g. 80GiB, 80GB, 512MiB, 24G")
    return round(float(match.group(1)) * unit)


def format_bytes(n: int) -> str:
    """``n`` bytes in binary units, e.g. '80.0 GiB'."""
    exponent = 0
    while exponent < 4 and abs(n) >= 1024 ** (exponent + 1):
        exponent += 1
    if exponent == 0:
        return f"{n} B"
    return f"{n / 1024**exponent:.1f} {('KiB', 'MiB', 'GiB', 'TiB')[exponent - 1]}"
