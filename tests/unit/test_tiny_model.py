"""The locally built tokenizer and tiny Llama: what they save, and that they round-trip."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from launcher.data.encode.chat import CHATML
from launcher.tasks.tiny_model import build_tiny_causal_lm


def test_tokenizer_files_vocab_and_round_trip(
    tiny_tokenizer_dir: Path, tiny_tokenizer: Any, fixture_data: Path
) -> None:
    assert {"tokenizer.json", "tokenizer_config.json", "chat_template.jinja"} <= {
        path.name for path in tiny_tokenizer_dir.iterdir()
    }
    assert 512 <= len(tiny_tokenizer) <= 1000
    assert tiny_tokenizer.is_fast and tiny_tokenizer.chat_template == CHATML
    assert tiny_tokenizer.eos_token == "<|endoftext|>" and tiny_tokenizer.pad_token == "<|pad|>"
    for special in ("<|im_start|>", "<|im_end|>", "<|endoftext|>", "<|pad|>"):
        assert len(tiny_tokenizer(special, add_special_tokens=False)["input_ids"]) == 1
    text = (fixture_data / "shakespeare.txt").read_text(encoding="utf-8")[:2000] + " café 数学"
    assert tiny_tokenizer.decode(tiny_tokenizer(text)["input_ids"]) == text


def test_tiny_llama_is_seeded_and_loads(
    tiny_llama_dir: Path, tiny_tokenizer_dir: Path, tiny_tokenizer: Any, tmp_path: Path
) -> None:
    assert (tiny_llama_dir / "model.safetensors").is_file()
    model = AutoModelForCausalLM.from_pretrained(str(tiny_llama_dir))
    config = model.config
    assert (config.hidden_size, config.num_hidden_layers, config.num_attention_heads) == (64, 2, 4)
    assert config.vocab_size == len(tiny_tokenizer)
    assert config.eos_token_id == tiny_tokenizer.eos_token_id
    assert (
        AutoTokenizer.from_pretrained(str(tiny_llama_dir)).get_vocab() == tiny_tokenizer.get_vocab()
    )

    again = build_tiny_causal_lm(tmp_path, tiny_tokenizer_dir, hidden=64, layers=2, heads=4, seed=0)
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, again.state_dict()[name]), name
