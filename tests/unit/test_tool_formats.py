"""Tool-calling rows: OpenAI-style messages and LLaMA-Factory's ShareGPT (real glaive rows)
become canonical ``{"messages", "tools"}`` rows; malformed calls and results are row errors."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from launcher.data.errors import DataError
from launcher.data.formats import load_rows

LLAMA_FACTORY = {"messages": "conversations", "tools": "tools"}


def write_jsonl(path: Path, rows: list[Any]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def call(name: str, **arguments: Any) -> dict[str, Any]:
    return {"type": "function", "function": {"name": name, "arguments": arguments}}


def test_glaive_rows_with_llama_factory_columns(fixture_data: Path) -> None:
    path = fixture_data / "glaive_toolcall.json"
    raw = json.loads(path.read_text(encoding="utf-8"))
    rows = load_rows([path], "sharegpt", LLAMA_FACTORY).rows
    assert load_rows([path], "sharegpt").rows == rows  # "conversations" is the default
    assert len(rows) == 3
    recipes, area, no_tools = rows
    assert [m["role"] for m in recipes["messages"]] == [
        "user", "assistant", "user", "assistant", "tool", "assistant", "user", "assistant"]
    assert recipes["messages"][3] == {"role": "assistant", "content": "", "tool_calls": [
        call("search_recipes", ingredients=["chicken", "bell peppers", "rice"])]}
    observation = raw[0]["conversations"][4]["value"]
    assert recipes["messages"][4] == {"role": "tool", "content": observation}
    assert recipes["tools"] == [{"type": "function", "function": schema}
                                for schema in json.loads(raw[0]["tools"])]
    assert [m["tool_calls"][0]["function"]["arguments"] for m in area["messages"]
            if "tool_calls" in m] == [{"shape": "rectangle", "dimensions": [5, 3]},
                                     {"shape": "circle", "dimensions": [4]},
                                     {"shape": "square", "dimensions": [7]}]
    assert [t["function"]["name"] for t in area["tools"]] == ["calculate_area",
                                                              "calculate_discount"]
    assert "tools" not in no_tools  # "tools": "[]"
    assert all(set(m) == {"role", "content"} for m in no_tools["messages"])


def test_openai_messages_with_tool_calls_results_and_tools(fixture_data: Path) -> None:
    weather, clock = load_rows([fixture_data / "tool_messages.jsonl"], "messages").rows
    assert weather["messages"][2] == {
        "role": "assistant", "content": "",  # content null
        "tool_calls": [{**call("get_weather", city="Paris"), "id": "call_1"},  # JSON string
                       {**call("get_weather", city="Rome"), "id": "call_2"}]}
    assert weather["messages"][3] == {"role": "tool", "content": "18 C, sunny",
                                      "name": "get_weather", "tool_call_id": "call_1"}
    assert weather["tools"][0]["type"] == "function"  # a bare schema, wrapped
    assert weather["tools"][0]["function"]["name"] == "get_weather"
    assert clock["messages"][1]["content"] == "Let me look it up."
    assert clock["tools"][0]["function"]["name"] == "get_time"  # a JSON string of wrapped ones


def test_sharegpt_parallel_calls_system_and_tool_tag(tmp_path: Path) -> None:
    row = {"system": "S", "dialog": [
        {"from": "human", "value": "q"},
        {"from": "function_call", "value": json.dumps([
            {"name": "a", "arguments": {"x": 1}}, {"name": "b", "arguments": "{\"y\": 2}"}])},
        {"from": "observation", "value": "r1"},
        {"from": "tool", "value": "r2"},
        {"from": "gpt", "value": "done"}]}
    rows = load_rows([write_jsonl(tmp_path / "s.jsonl", [row])], "sharegpt",
                     {"messages": "dialog"}).rows
    system, _, calls, first, second, answer = rows[0]["messages"]
    assert system == {"role": "system", "content": "S"}
    assert calls["tool_calls"] == [call("a", x=1), call("b", y=2)]
    assert (first["role"], second["role"], answer["content"]) == ("tool", "tool", "done")
    assert "tools" not in rows[0]


SHAREGPT_BAD = [
    ([{"from": "human", "value": "q"}, {"from": "function_call", "value": "{not json"}],
     "turn 1: the function call is not valid JSON"),
    ([{"from": "human", "value": "q"}, {"from": "function_call", "value": '{"arguments": {}}'}],
     'turn 1: tool call 0 has no "name"'),
    ([{"from": "human", "value": "q"},
      {"from": "function_call", "value": '{"name": "f", "arguments": "[1]"}'}],
     "turn 1: the arguments of tool call 0 must be a JSON object"),
    ([{"from": "human", "value": "q"}, {"from": "observation", "value": "r"},
      {"from": "gpt", "value": "a"}], "turn 1: a tool result with no tool call before it"),
]
MESSAGES_BAD = [
    ({"messages": [{"role": "tool", "content": "r"}, {"role": "assistant", "content": "a"}]},
     "message 0: a tool result with no tool call before it"),
    ({"messages": [{"role": "user", "content": "q"},
                   {"role": "assistant", "content": None,
                    "tool_calls": [{"type": "function", "function": {"arguments": {}}}]}]},
     'message 1: tool call 0 has no "name"'),
    ({"messages": [{"role": "user", "content": "q", "tool_calls": [call("f")]},
                   {"role": "assistant", "content": "a"}]},
     "message 0: only assistant messages make tool calls"),
    ({"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}],
      "tools": [{"description": "no name"}]}, '"tools": tool 0 needs a "name"'),
    ({"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}],
      "tools": "[{"}, '"tools" is not valid JSON'),
]


@pytest.mark.parametrize(("fmt", "row", "reason"), [
    *(("sharegpt", {"conversations": turns}, reason) for turns, reason in SHAREGPT_BAD),
    *(("messages", row, reason) for row, reason in MESSAGES_BAD),
])
def test_bad_tool_rows_name_file_line_and_reason(tmp_path: Path, fmt: str, row: dict[str, Any],
                                                 reason: str) -> None:
    good = {"conversations": [{"from": "human", "value": "q"}, {"from": "gpt", "value": "a"}],
            "messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}
    path = write_jsonl(tmp_path / "bad.jsonl", [good, row])
    with pytest.raises(DataError) as caught:
        load_rows([path], fmt)
    assert str(caught.value).startswith(f"{path}:2: {reason}")
    skipped = load_rows([path], fmt, on_bad_row="skip")
    assert len(skipped.rows) == 1 and [e.line for e in skipped.skipped] == [2]
