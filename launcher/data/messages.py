"""Chat messages of the "messages" and "sharegpt" formats, tool calling included, checked and
normalised to the canonical messages Hugging Face chat templates expect.

No torch or transformers here (the control plane validates data files with it). Canonical shapes:

- a message: ``{"role": "system"|"user"|"assistant"|"tool", "content": str}``;
- an assistant's calls: ``"tool_calls": [{"type": "function", "function": {"name": str,
  "arguments": dict}}]`` (plus each call's ``id`` when given; arguments given as a JSON string
  are parsed, none become ``{}``); its content may be null in the data (it becomes "");
- a tool result: ``{"role": "tool", "content": str}`` plus ``name`` / ``tool_call_id`` when
  given, right after an assistant's calls or another result;
- a tool schema: ``{"type": "function", "function": {"name": str, ...}}`` (a bare
  ``{name, description, parameters}`` schema is wrapped so).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from launcher.data.files import describe

ROLES = ("system", "user", "assistant", "tool")
SHAREGPT_ROLES = {
    "human": "user",
    "gpt": "assistant",
    "system": "system",
    "tool": "tool",
    "function_call": "assistant",
    "observation": "tool",
}


class MessageError(ValueError):
    """A message, tool call, tool result or tool schema that does not fit a chat row."""


def openai_message(message: Any, index: int) -> dict[str, Any]:
    """Message `index` of a "messages" row: role, content (a string or text parts), tool fields."""
    if not isinstance(message, dict) or message.get("role") not in ROLES:
        raise MessageError(f"message {index} must be an object with a role in {list(ROLES)}, "
                           f"got {describe(message)}")
    content = message.get("content")
    if content is None and message.get("tool_calls"):  # a call with no text
        content = ""
    normal = {"role": message["role"], "content": message_content(content, index)}
    where = f"message {index}"
    if message.get("tool_calls") not in (None, []):
        if normal["role"] != "assistant":
            raise MessageError(f"{where}: only assistant messages make tool calls")
        normal["tool_calls"] = tool_calls(message["tool_calls"], where)
    if normal["role"] == "tool":
        normal.update({key: message[key] for key in ("name", "tool_call_id")
                       if isinstance(message.get(key), str)})
    return normal


def message_content(content: Any, index: int) -> str:
    """A message's content: a string, or the text of a list of typed parts joined by newlines."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = []
        for part in content:
            text = part.get("text", part.get("value")) if isinstance(part, dict) else None
            if not isinstance(text, str) or part.get("type", "text") != "text":
                raise MessageError(
                    f"message {index}: content parts must be text parts "
                    f'{{"type": "text", "text"|"value": str}}, got {describe(part)}'
                )
            texts.append(text)
        return "\n".join(texts)
    raise MessageError(
        f"message {index}: content must be a string or a list of parts, got {describe(content)}"
    )


def sharegpt_message(turn: Any, index: int) -> dict[str, Any]:
    """Turn `index` of a ShareGPT conversation: a ``function_call`` (JSON, one ``{name,
    arguments}`` or a list of them) becomes an assistant's tool calls, an ``observation`` (or
    ``tool``) a tool result."""
    speaker = turn.get("from") if isinstance(turn, dict) else None
    if speaker not in SHAREGPT_ROLES or not isinstance(turn.get("value"), str):
        raise MessageError(
            f'turn {index} must be {{"from": one of {list(SHAREGPT_ROLES)}, "value": str}}, '
            f"got {describe(turn)}"
        )
    if speaker != "function_call":
        return {"role": SHAREGPT_ROLES[speaker], "content": turn["value"]}
    where = f"turn {index}"
    calls = parse_json(turn["value"], f"{where}: the function call")
    return {"role": "assistant", "content": "",
            "tool_calls": tool_calls(calls if isinstance(calls, list) else [calls], where)}


def tool_calls(calls: Any, where: str) -> list[dict[str, Any]]:
    """Calls in OpenAI's shape ``{"type": "function", "function": {name, arguments}}`` or bare
    ``{name, arguments}``, normalised."""
    if not isinstance(calls, list) or not calls:
        raise MessageError(f"{where}: tool calls must be a non-empty list, got {describe(calls)}")
    normal = []
    for index, call in enumerate(calls):
        function = call.get("function", call) if isinstance(call, dict) else None
        if not isinstance(function, dict) or not _named(function):
            raise MessageError(f'{where}: tool call {index} has no "name": {describe(call)}')
        arguments = parse_json(function.get("arguments", {}),
                               f"{where}: the arguments of tool call {index}")
        if not isinstance(arguments, dict):
            raise MessageError(f"{where}: the arguments of tool call {index} must be a JSON "
                               f"object, got {describe(arguments)}")
        entry = {"type": "function", "function": {"name": function["name"],
                                                  "arguments": arguments}}
        if isinstance(call.get("id"), str):
            entry["id"] = call["id"]
        normal.append(entry)
    return normal


def tool_schemas(value: Any, column: str) -> list[dict[str, Any]]:
    """A row's tools (a list, or a JSON string holding one), wrapped; [] when absent or empty."""
    if value is None:
        return []
    schemas = parse_json(value, f'"{column}"')
    if not isinstance(schemas, list):
        raise MessageError(f'"{column}" must be a list of tool schemas, got {describe(schemas)}')
    wrapped = []
    for index, schema in enumerate(schemas):
        function = schema.get("function", schema) if isinstance(schema, dict) else None
        if not isinstance(function, dict) or not _named(function):
            raise MessageError(f'"{column}": tool {index} needs a "name" (a JSON-schema '
                               f"function {{name, description, parameters}}), "
                               f"got {describe(schema)}")
        wrapped.append({"type": "function", "function": function})
    return wrapped


def check_tool_order(messages: Sequence[dict[str, Any]], unit: str) -> None:
    """Every tool result follows an assistant's tool calls (directly, or after other results);
    `unit` names the messages in the error ("message", "turn")."""
    for index, message in enumerate(messages):
        previous = messages[index - 1] if index else None
        answers = previous is not None and (previous["role"] == "tool" or "tool_calls" in previous)
        if message["role"] == "tool" and not answers:
            raise MessageError(f"{unit} {index}: a tool result with no tool call before it")


def parse_json(value: Any, what: str) -> Any:
    """`value` itself, or the JSON a string holds."""
    if not isinstance(value, str):
        return value
    try:
        return json.loads(value)
    except json.JSONDecodeError as exc:
        raise MessageError(f"{what} is not valid JSON ({exc.msg}, char {exc.pos}): "
                           f"{describe(value)}") from None


def _named(function: dict[str, Any]) -> bool:
    return isinstance(function.get("name"), str) and bool(function["name"].strip())
