"""The tiny tokenizer and Llama model of the tests, built from the fixture texts."""

from __future__ import annotations

from pathlib import Path

from transformers import LlamaForCausalLM, PreTrainedTokenizerBase

from launcher.tasks.tiny_model import build_tiny_causal_lm
from launcher.tasks.tiny_model import build_tokenizer as train_tokenizer

FIXTURE_DATA = Path(__file__).resolve().parents[1] / "fixtures" / "data"
CORPUS = tuple(
    FIXTURE_DATA / name
    for name in ("shakespeare.txt", "alpaca.json", "messages.jsonl", "gsm8k.jsonl", "wikisql.jsonl")
)


def build_tokenizer(out_dir: str | Path) -> PreTrainedTokenizerBase:
    """A byte-level BPE tokenizer (768 tokens, ChatML) trained on the fixture texts."""
    return train_tokenizer(CORPUS, out_dir, vocab_size=768)


def build_tiny_llama(out_dir: str | Path, tokenizer: PreTrainedTokenizerBase) -> LlamaForCausalLM:
    """A seeded random-init Llama (hidden 64, 2 layers, 4 heads) saved with `tokenizer`."""
    tokenizer.save_pretrained(str(out_dir))
    return build_tiny_causal_lm(out_dir, out_dir, hidden=64, layers=2, heads=4, seed=0)
