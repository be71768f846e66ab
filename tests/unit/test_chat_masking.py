"""Loss masks from rendered conversations: the tokens that carry loss decode to exactly the
assistant contents plus their end of turn, for several templates, on real rows."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from launcher.data.encode.chat import (
    CHATML,
    IGNORE_INDEX,
    ChatTemplateError,
    encode_chat,
    encode_rows,
    encode_text,
    fit_length,
    resolve_template,
)
from launcher.data.formats import load_rows

# Llama-2 style: system folded into the first user turn, no generation prompt, eos after answers.
LLAMA2 = (
    "{% for message in messages %}"
    "{% if message['role'] == 'system' %}{{ '[INST] <<SYS>>\n' + message['content'] + "
    "'\n<</SYS>>\n\n' }}"
    "{% elif message['role'] == 'user' %}"
    "{% if loop.index0 == 0 or messages[loop.index0 - 1]['role'] != 'system' %}{{ '[INST] ' }}"
    "{% endif %}{{ message['content'] + ' [/INST]' }}"
    "{% elif message['role'] == 'assistant' %}{{ ' ' + message['content'] + ' ' + eos_token }}"
    "{% endif %}{% endfor %}"
)
# Zephyr style: role headers, eos closes every turn, generation prompt without the newline.
ZEPHYR = (
    "{% for message in messages %}"
    "{{ '<|' + message['role'] + '|>\n' + message['content'] + eos_token + '\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|assistant|>' }}{% endif %}"
)
# ChatML with the template's own {% generation %} markers.
CHATML_MARKED = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' }}"
    "{% if message['role'] == 'assistant' %}{% generation %}"
    "{{ message['content'] + '<|im_end|>' }}{% endgeneration %}{{ '\n' }}"
    "{% else %}{{ message['content'] + '<|im_end|>\n' }}{% endif %}{% endfor %}"
)
END_OF_TURN = {"chatml": "<|im_end|>", "marked": "<|im_end|>", "llama2": " <|endoftext|>"}
TEMPLATES = {"chatml": "chatml", "marked": CHATML_MARKED, "llama2": LLAMA2}


def loss_runs(tokenizer: Any, example: dict[str, list[int]]) -> list[str]:
    """The decoded text of each contiguous run of tokens that carry loss."""
    runs: list[list[int]] = []
    previous = IGNORE_INDEX
    for token, label in zip(example["input_ids"], example["labels"], strict=True):
        if label != IGNORE_INDEX:
            assert label == token
            if previous == IGNORE_INDEX:
                runs.append([])
            runs[-1].append(token)
        previous = label
    return [tokenizer.decode(run) for run in runs]


def assistant_texts(messages: list[dict[str, str]]) -> list[str]:
    return [m["content"] for m in messages if m["role"] == "assistant"]


@pytest.fixture(scope="module")
def real_conversations(fixture_data: Path) -> list[list[dict[str, str]]]:
    alpaca = load_rows([fixture_data / "alpaca.json"], "alpaca").rows
    messages = load_rows([fixture_data / "messages.jsonl"], "messages").rows
    return [row["messages"] for row in alpaca + messages]


@pytest.mark.parametrize("name", ["chatml", "marked", "llama2"])
def test_loss_tokens_are_the_assistant_contents_and_end_of_turn(
    tiny_tokenizer: Any, real_conversations: list[list[dict[str, str]]], name: str
) -> None:
    template = resolve_template(tiny_tokenizer, TEMPLATES[name])
    for messages in real_conversations:
        example = encode_chat(tiny_tokenizer, messages, template)
        expected = [content + END_OF_TURN[name] for content in assistant_texts(messages)]
        assert [run.lstrip(" ") for run in loss_runs(tiny_tokenizer, example)] == expected
        assert tiny_tokenizer.decode(example["input_ids"]) == tiny_tokenizer.apply_chat_template(
            messages, chat_template=template, tokenize=False
        )


def multi_turn(conversations: list[list[dict[str, str]]]) -> list[dict[str, str]]:
    """A system prompt and three real exchanges in one conversation."""
    turns = [m for messages in conversations[:3] for m in messages]
    return [{"role": "system", "content": "You are terse."}, *turns]


@pytest.mark.parametrize("name", ["chatml", "llama2"])
def test_train_on_assistant_last_assistant_and_all(
    tiny_tokenizer: Any, real_conversations: list[list[dict[str, str]]], name: str
) -> None:
    template = resolve_template(tiny_tokenizer, TEMPLATES[name])
    messages = multi_turn(real_conversations)
    contents = [c + END_OF_TURN[name] for c in assistant_texts(messages)]
    assert len(contents) == 3

    every = encode_chat(tiny_tokenizer, messages, template, "assistant")
    assert [r.lstrip(" ") for r in loss_runs(tiny_tokenizer, every)] == contents

    last = encode_chat(tiny_tokenizer, messages, template, "last_assistant")
    assert [r.lstrip(" ") for r in loss_runs(tiny_tokenizer, last)] == contents[-1:]
    assert last["input_ids"] == every["input_ids"]

    everything = encode_chat(tiny_tokenizer, messages, template, "all")
    assert everything["labels"] == everything["input_ids"] == every["input_ids"]


def test_zephyr_generation_prompt_without_newline(tiny_tokenizer: Any) -> None:
    messages = [{"role": "user", "content": "Hi there"}, {"role": "assistant", "content": "Hello"}]
    example = encode_chat(tiny_tokenizer, messages, ZEPHYR)
    assert [run.strip() for run in loss_runs(tiny_tokenizer, example)] == ["Hello<|endoftext|>"]


def test_template_resolution(tiny_tokenizer: Any) -> None:
    assert resolve_template(tiny_tokenizer) == tiny_tokenizer.chat_template == CHATML
    assert resolve_template(tiny_tokenizer, LLAMA2) == LLAMA2
    with pytest.raises(ChatTemplateError, match="unknown chat template 'vicuna'"):
        resolve_template(tiny_tokenizer, "vicuna")


def test_template_without_stable_prefixes_is_refused(tiny_tokenizer: Any) -> None:
    unstable = (
        "{% for m in messages %}{% if loop.last %}LAST {% endif %}{{ m['content'] }}{% endfor %}"
    )
    messages = [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]
    with pytest.raises(ChatTemplateError, match="message 1"):
        encode_chat(tiny_tokenizer, messages, unstable)


def test_plain_text_has_eos_and_loss_everywhere(tiny_tokenizer: Any, fixture_data: Path) -> None:
    text = load_rows([fixture_data / "wikisql.jsonl"], "text").rows[0]["text"]
    example = encode_text(tiny_tokenizer, text)
    assert example["input_ids"][-1] == tiny_tokenizer.eos_token_id
    assert example["labels"] == example["input_ids"]
    assert tiny_tokenizer.decode(example["input_ids"]) == text + "<|endoftext|>"


def labelled(prompt: int, answer: int, tail: int = 0) -> dict[str, list[int]]:
    """A made-up example: `prompt` tokens without loss, `answer` with, `tail` without."""
    input_ids = list(range(prompt + answer + tail))
    labels = [IGNORE_INDEX] * prompt + input_ids[prompt : prompt + answer] + [IGNORE_INDEX] * tail
    return {"input_ids": input_ids, "labels": labels}


def test_truncation_drops_the_oldest_tokens_when_the_last_turn_fits() -> None:
    example = labelled(prompt=50, answer=10, tail=2)
    fitted = fit_length(example, 20, "truncate")
    assert fitted["input_ids"] == example["input_ids"][-20:]
    assert fitted["labels"] == example["labels"][-20:]


def test_truncation_keeps_the_start_of_a_turn_longer_than_the_window() -> None:
    example = labelled(prompt=50, answer=100)
    fitted = fit_length(example, 20, "truncate")
    assert fitted["input_ids"] == list(range(40, 60))
    assert (
        fitted["labels"][:10] == [IGNORE_INDEX] * 10 and IGNORE_INDEX not in fitted["labels"][10:]
    )
    assert fit_length(labelled(prompt=0, answer=30), 20, "truncate")["input_ids"] == list(range(20))


def test_drop_mode_and_short_examples() -> None:
    example = labelled(prompt=5, answer=5)
    assert fit_length(example, 10, "drop") is example
    assert fit_length(example, 9, "drop") is None


def test_encode_rows_counts_truncated_and_dropped(tiny_tokenizer: Any, fixture_data: Path) -> None:
    rows = load_rows([fixture_data / "alpaca.json"], "alpaca").rows
    examples, _ = encode_rows(rows, tiny_tokenizer, max_length=100_000)
    lengths = sorted(len(example["input_ids"]) for example in examples)
    limit = lengths[len(lengths) // 2]
    longer = sum(length > limit for length in lengths)

    kept, stats = encode_rows(rows, tiny_tokenizer, max_length=limit, truncation="truncate")
    assert (stats.truncated, stats.dropped, stats.examples) == (longer, 0, len(rows))
    assert all(len(example["input_ids"]) <= limit for example in kept)
    for example in kept:
        assert (
            loss_runs(tiny_tokenizer, example)[-1].endswith("<|im_end|>")
            or len(example["input_ids"]) == limit
        )

    kept, stats = encode_rows(rows, tiny_tokenizer, max_length=limit, truncation="drop")
    assert (stats.truncated, stats.dropped, stats.examples) == (0, longer, len(rows) - longer)
