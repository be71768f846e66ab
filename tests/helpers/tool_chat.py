"""Tool-calling test material: the real chat templates, the tool rows, and where in a rendered
conversation the assistant turns (what carries loss), tool results and tools blocks lie."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from transformers import AutoTokenizer, PreTrainedTokenizerBase

from launcher.data.formats import load_rows

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
TEMPLATES = {"qwen2.5": "qwen2.5-instruct.jinja", "llama3.1": "llama-3.1-instruct.jinja"}
QWEN_SYSTEM = "You are Qwen, created by Alibaba Cloud. You are a helpful assistant."
LLAMA_SPECIAL = ["<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>",
                 "<|eom_id|>", "<|python_tag|>"]
LLAMA_FACTORY = {"messages": "conversations", "tools": "tools"}

# Per template family: an assistant turn's produced text (group 1, its end of turn included),
# and the text that must never carry loss (tools blocks, tool results, prompts).
ASSISTANT = {
    "chatml": r"<\|im_start\|>assistant\n(.*?<\|im_end\|>)",
    "llama": r"<\|start_header_id\|>assistant<\|end_header_id\|>\n\n(.*?<\|eot_id\|>)",
}
NEVER = {
    "chatml": (r"<tools>.*?</tools>", r"<tool_response>.*?</tool_response>",
               r"<\|im_start\|>(system|user)\n.*?<\|im_end\|>"),
    "llama": (r"<\|start_header_id\|>ipython<\|end_header_id\|>.*?<\|eot_id\|>",
              r"<\|start_header_id\|>(system|user)<\|end_header_id\|>.*?<\|eot_id\|>"),
}
FAMILY = {"chatml": "chatml", "qwen2.5": "chatml", "llama3.1": "llama"}


def template(name: str) -> str:
    """A fixture template's text, or the built-in's name ("chatml") as it is."""
    return name if name == "chatml" else (FIXTURES / "chat_templates" / TEMPLATES[name]).read_text()


def glaive_rows() -> list[dict[str, Any]]:
    return load_rows([FIXTURES / "data" / "glaive_toolcall.json"], "sharegpt", LLAMA_FACTORY).rows


def message_rows() -> list[dict[str, Any]]:
    return load_rows([FIXTURES / "data" / "tool_messages.jsonl"], "messages").rows


def llama_tokenizer(tokenizer_dir: Path) -> PreTrainedTokenizerBase:
    """The tiny test tokenizer with Llama 3's header and end-of-turn tokens as special tokens."""
    tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    tokenizer.add_tokens(LLAMA_SPECIAL, special_tokens=True)
    tokenizer.bos_token = "<|begin_of_text|>"
    return tokenizer


def chars(pattern: str, text: str, group: int = 0) -> set[int]:
    """The character positions of every match of `pattern` (DOTALL) in `text`."""
    return {i for m in re.finditer(pattern, text, re.S) for i in range(*m.span(group))}


def assistant_chars(name: str, text: str) -> set[int]:
    return chars(ASSISTANT[FAMILY[name]], text, 1)


def never_chars(name: str, text: str) -> set[int]:
    return set().union(*(chars(pattern, text) for pattern in NEVER[FAMILY[name]]))
