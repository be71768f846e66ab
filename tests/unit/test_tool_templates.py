"""The built-in chatml template with tools: plain ChatML as before for rows without tools, the
Qwen2.5 rendering for rows with them; tools reach templates with generation markers; train_on."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from launcher.data.encode.chat import (
    CHATML,
    IGNORE_INDEX,
    ChatTemplateError,
    assistant_spans,
    encode_chat,
    render,
)
from launcher.data.formats import load_rows
from tests.helpers.tool_chat import QWEN_SYSTEM, glaive_rows, message_rows, template

# The built-in template before tool calling: caches and golden renders rely on the same text.
PLAIN_CHATML = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
# ChatML with {% generation %} markers that renders tool calls as JSON.
MARKED_TOOLS = (
    "{% if tools %}{{ 'TOOLS ' + tools | tojson + '\n' }}{% endif %}"
    "{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\n' }}"
    "{% if m['role'] == 'assistant' %}{% generation %}"
    "{% if m['tool_calls'] %}{{ m['tool_calls'] | tojson }}{% else %}{{ m['content'] }}{% endif %}"
    "{{ '<|im_end|>' }}{% endgeneration %}{{ '\n' }}"
    "{% else %}{{ m['content'] + '<|im_end|>\n' }}{% endif %}{% endfor %}"
)


def loss_text(tokenizer: Any, example: dict[str, list[int]]) -> list[str]:
    """The decoded runs of loss-bearing tokens."""
    runs: list[list[int]] = []
    previous = IGNORE_INDEX
    for token, label in zip(example["input_ids"], example["labels"], strict=True):
        if label != IGNORE_INDEX:
            if previous == IGNORE_INDEX:
                runs.append([])
            runs[-1].append(token)
        previous = label
    return [tokenizer.decode(run) for run in runs]


def test_rows_without_tools_render_as_before(tiny_tokenizer: Any, fixture_data: Path) -> None:
    rows = [*load_rows([fixture_data / "alpaca.json"], "alpaca").rows,
            *load_rows([fixture_data / "messages.jsonl"], "messages").rows,
            *load_rows([fixture_data / "gsm8k.jsonl"], "prompt_completion",
                       {"prompt": "question", "completion": "answer"}).rows,
            glaive_rows()[2]]
    rows.append({"messages": [{"role": "system", "content": "S"}, *rows[0]["messages"]]})
    for row in rows:
        messages = row["messages"]
        for end in range(len(messages) + 1):
            for prompt in (False, True):
                assert render(tiny_tokenizer, messages[:end], CHATML, prompt) == render(
                    tiny_tokenizer, messages[:end], PLAIN_CHATML, prompt)


@pytest.mark.parametrize("row", [*glaive_rows()[:2], *message_rows()],
                         ids=["glaive-recipes", "glaive-area", "weather", "clock"])
def test_chatml_renders_tools_as_qwen25_without_its_default_system(tiny_tokenizer: Any,
                                                                   row: dict[str, Any]) -> None:
    qwen = render(tiny_tokenizer, row["messages"], template("qwen2.5"), tools=row["tools"])
    chatml = render(tiny_tokenizer, row["messages"], CHATML, tools=row["tools"])
    if row["messages"][0]["role"] != "system":
        qwen = qwen.replace(f"<|im_start|>system\n{QWEN_SYSTEM}\n\n", "<|im_start|>system\n", 1)
    assert chatml == qwen
    assert chatml.count("<tool_response>") == sum(m["role"] == "tool" for m in row["messages"])


def test_tool_calls_without_a_tools_list(tiny_tokenizer: Any) -> None:
    """Calls and results render (and carry loss) with no schemas given: no tools block."""
    weather = message_rows()[0]
    text = render(tiny_tokenizer, weather["messages"], CHATML)
    assert text.startswith("<|im_start|>system\nYou are a weather bot.<|im_end|>\n")
    assert "<tools>" not in text and text.count("<tool_call>") == 2
    example = encode_chat(tiny_tokenizer, weather["messages"], CHATML)
    assert [run.split("\n")[0] for run in loss_text(tiny_tokenizer, example)] == [
        "<tool_call>", "Paris: 18 C and sunny. Rome: 24 C and cloudy.<|im_end|>"]


def test_spans_of_calls_and_answers(tiny_tokenizer: Any) -> None:
    clock = message_rows()[1]
    text, spans = assistant_spans(tiny_tokenizer, clock["messages"], CHATML, clock["tools"])
    assert [text[start:end] for start, end in spans] == [
        'Let me look it up.\n<tool_call>\n{"name": "get_time", "arguments": {"zone": '
        '"Asia/Tokyo"}}\n</tool_call><|im_end|>',
        "It is 21:04 in Tokyo.<|im_end|>", "You are welcome.<|im_end|>"]


def test_train_on_last_assistant_and_all_with_tools(tiny_tokenizer: Any) -> None:
    area = glaive_rows()[1]
    messages, tools = area["messages"], area["tools"]
    last = encode_chat(tiny_tokenizer, messages, CHATML, "last_assistant", tools)
    assert loss_text(tiny_tokenizer, last) == [
        "The area of the square with side length 7 units is 49 square units.<|im_end|>"]
    call_last = encode_chat(tiny_tokenizer, messages[:-1], CHATML, "last_assistant", tools)
    assert loss_text(tiny_tokenizer, call_last) == [  # it ends with a call and its result
        '<tool_call>\n{"name": "calculate_area", "arguments": {"shape": "square", "dimensions": '
        '[7]}}\n</tool_call><|im_end|>']
    every = encode_chat(tiny_tokenizer, messages, CHATML, "all", tools)
    assert every["labels"] == every["input_ids"] == last["input_ids"]
    assert "calculate_discount" in tiny_tokenizer.decode(every["input_ids"])


def test_generation_markers_with_tools(tiny_tokenizer: Any) -> None:
    weather = message_rows()[0]
    example = encode_chat(tiny_tokenizer, weather["messages"], MARKED_TOOLS,
                          tools=weather["tools"])
    text = tiny_tokenizer.decode(example["input_ids"])
    assert text.startswith('TOOLS [{"type": "function", "function": {"name": "get_weather"')
    assert loss_text(tiny_tokenizer, example) == [
        '[{"type": "function", "function": {"name": "get_weather", "arguments": {"city": '
        '"Paris"}}, "id": "call_1"}, {"type": "function", "function": {"name": "get_weather", '
        '"arguments": {"city": "Rome"}}, "id": "call_2"}]<|im_end|>',
        "Paris: 18 C and sunny. Rome: 24 C and cloudy.<|im_end|>"]


def test_a_template_that_cannot_render_tools_is_refused(tiny_tokenizer: Any) -> None:
    clock = message_rows()[1]
    for tools in (clock["tools"], None):
        with pytest.raises(ChatTemplateError, match="does not render them"):
            encode_chat(tiny_tokenizer, clock["messages"], PLAIN_CHATML, tools=tools)
    with pytest.raises(ChatTemplateError, match="does not render them"):
        encode_chat(tiny_tokenizer, [{"role": "user", "content": "q"},
                                     {"role": "assistant", "content": "a"}], PLAIN_CHATML,
                    tools=clock["tools"])
