"""Tokenize causal-LM rows with loss masks computed from the rendered text, for any chat template.

A conversation is rendered once with its template; the characters each assistant turn produces
are located in that text; the fast tokenizer's offsets map those character spans to tokens. A
token carries loss when it overlaps a span. The span of an assistant turn is found:

- from the template's own ``{% generation %}`` markers, when it has them;
- otherwise by rendering prefixes: the span runs from the end of ``template(messages[:i])`` with the
  generation prompt to the end of ``template(messages[:i + 1])``, trailing whitespace dropped. So it
  holds the content and the end-of-turn text after it (``<|im_end|>``, ``</s>``, ...): the model
  learns to stop. A template with no generation prompt has its span start where the content starts.
  A template whose renders of a conversation's prefixes are not prefixes of the whole render gets a
  `ChatTemplateError`.

Rows with ``tools`` render with them (``tools=``, as HF chat templates take them), so the spans
hold an assistant's tool calls as well as its answers, and never the tools block or tool results.

Plain text rows (``{"text"}``) get the tokenizer's special tokens, eos appended, loss on all tokens.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from jinja2 import TemplateError
from transformers import PreTrainedTokenizerBase
from transformers.utils.chat_template_utils import render_jinja_template

from launcher.data.encode.chatml import CHATML

IGNORE_INDEX = -100
TrainOn = Literal["assistant", "last_assistant", "all"]
Truncation = Literal["truncate", "drop"]
Example = dict[str, list[int]]
Span = tuple[int, int]
Messages = Sequence[dict[str, Any]]
Tools = Sequence[dict[str, Any]] | None

BUILTIN_TEMPLATES = {"chatml": CHATML}
_GENERATION_MARKER = re.compile(r"\{%-?\s*generation\s*-?%\}")


class ChatTemplateError(ValueError):
    """A chat template that refuses a conversation, or from which its assistant turns cannot be
    located."""


@dataclass
class EncodeStats:
    """What `encode_rows` did: examples kept, of which truncated, and rows dropped."""

    examples: int = 0
    truncated: int = 0
    dropped: int = 0


def resolve_template(tokenizer: PreTrainedTokenizerBase, template: str | None = None) -> str:
    """The Jinja template to use: a built-in by name (``"chatml"``), a Jinja string as given, or,
    when `template` is None, the tokenizer's own."""
    if template is None:
        if tokenizer.chat_template is None:
            raise ChatTemplateError(
                "the tokenizer has no chat template: set one in the recipe, "
                f"a Jinja string or one of {list(BUILTIN_TEMPLATES)}"
            )
        return tokenizer.get_chat_template()
    if template in BUILTIN_TEMPLATES:
        return BUILTIN_TEMPLATES[template]
    if "{{" in template or "{%" in template:
        return template
    raise ChatTemplateError(
        f"unknown chat template {template!r}: "
        f"use one of {list(BUILTIN_TEMPLATES)} or a Jinja template string"
    )


def render(
    tokenizer: PreTrainedTokenizerBase,
    messages: Messages,
    template: str,
    add_generation_prompt: bool = False,
    tools: Tools = None,
) -> str:
    """The conversation as text, rendered by `template` (with the tokenizer's special tokens)."""
    text, _ = _render(tokenizer, messages, template, tools,
                      add_generation_prompt=add_generation_prompt)
    return text


def _render(
    tokenizer: PreTrainedTokenizerBase, messages: Messages, template: str, tools: Tools,
    **options: bool,
) -> tuple[str, list[Span]]:
    """The rendered text and its ``{% generation %}`` spans; a template's refusal (a
    ``raise_exception``) becomes a `ChatTemplateError`."""
    try:
        rendered, indices = render_jinja_template(
            conversations=[list(messages)],
            tools=list(tools) if tools else None,
            chat_template=template,
            **options,
            **tokenizer.special_tokens_map,
        )
    except TemplateError as err:
        raise ChatTemplateError(f"the chat template refuses this conversation: {err}") from None
    return rendered[0], [tuple(span) for span in indices[0]] if indices else []


def assistant_spans(
    tokenizer: PreTrainedTokenizerBase, messages: Messages, template: str, tools: Tools = None
) -> tuple[str, list[Span]]:
    """The rendered conversation and the character span of each assistant turn in it (its
    answer or its tool calls, with the end of turn)."""
    if _GENERATION_MARKER.search(template):
        return _render(tokenizer, messages, template, tools, return_assistant_tokens_mask=True)
    text = render(tokenizer, messages, template, tools=tools)
    spans = []
    for index, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        before = render(tokenizer, messages[:index], template, True, tools)
        through = render(tokenizer, messages[: index + 1], template, tools=tools)
        if not (text.startswith(through) and through.startswith(before)):
            raise ChatTemplateError(
                f"the chat template renders message {index} differently in a shorter "
                "conversation, so assistant turns cannot be located; use a template with "
                "{% generation %} markers"
            )
        start = len(before)
        if before == render(tokenizer, messages[:index], template, tools=tools):  # no prompt
            found = through.find(message["content"].strip(), start)
            start = found if found >= 0 else start
        spans.append((start, max(start, len(through.rstrip()))))
    return text, spans


def encode_chat(
    tokenizer: PreTrainedTokenizerBase,
    messages: Messages,
    template: str,
    train_on: TrainOn = "assistant",
    tools: Tools = None,
) -> Example:
    """Token ids of the conversation rendered (with `tools`), and labels: the ids where a token
    carries loss (every assistant turn, the last one only, or all tokens), `IGNORE_INDEX`
    elsewhere. A row with tools or tool calls and a template that never mentions them (so
    cannot render them) is refused, not trained on as empty turns."""
    if (tools or any("tool_calls" in m for m in messages)) and "tool" not in template:
        raise ChatTemplateError(
            "the row has tools or tool calls but the chat template does not render them: use a "
            "template that does (the model's own, or task.chat_template = 'chatml')")
    if train_on == "all":
        text = render(tokenizer, messages, template, tools=tools)
        input_ids = list(tokenizer(text, add_special_tokens=False)["input_ids"])
        return {"input_ids": input_ids, "labels": list(input_ids)}
    if not tokenizer.is_fast:
        raise ChatTemplateError("loss masking needs a fast tokenizer (for offset mappings)")
    text, spans = assistant_spans(tokenizer, messages, template, tools)
    encoding = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    input_ids = list(encoding["input_ids"])
    if train_on == "last_assistant":
        spans = spans[-1:]
    keep = _overlapping(encoding["offset_mapping"], spans)
    labels = [t if k else IGNORE_INDEX for t, k in zip(input_ids, keep, strict=True)]
    return {"input_ids": input_ids, "labels": labels}


def _overlapping(offsets: Sequence[Sequence[int]], spans: Sequence[Span]) -> list[bool]:
    """For each token's (start, end) characters: does it overlap one of the sorted spans?"""
    keep = []
    span_index = 0
    for start, end in offsets:
        while span_index < len(spans) and start >= spans[span_index][1]:
            span_index += 1
        inside = span_index < len(spans) and end > spans[span_index][0] and end > start
        keep.append(inside)
    return keep


def encode_text(tokenizer: PreTrainedTokenizerBase, text: str) -> Example:
    """Token ids of plain text (the tokenizer's special tokens, eos appended), all with loss."""
    input_ids = list(tokenizer(text)["input_ids"])
    eos = tokenizer.eos_token_id
    if eos is not None and (not input_ids or input_ids[-1] != eos):
        input_ids.append(eos)
    return {"input_ids": input_ids, "labels": list(input_ids)}


def fit_length(example: Example, max_length: int, truncation: Truncation) -> Example | None:
    """`example` cut to `max_length` tokens, or None when it is dropped.

    "drop" drops every example that is too long. "truncate" keeps a window of `max_length` tokens
    that holds the last loss-bearing run (the last assistant turn): it drops the oldest tokens
    when that run fits, else it keeps the start of the run with up to half a window of the tokens
    before it. An example all of whose loss falls outside the window is dropped.
    """
    input_ids, labels = example["input_ids"], example["labels"]
    if len(input_ids) <= max_length:
        return example
    if truncation == "drop":
        return None
    last_run = _last_run_start(labels)
    start = len(input_ids) - max_length
    if start > last_run:
        start = max(0, last_run - max_length // 2)
    window = slice(start, start + max_length)
    if all(label == IGNORE_INDEX for label in labels[window]):
        return None
    return {"input_ids": input_ids[window], "labels": labels[window]}


def _last_run_start(labels: Sequence[int]) -> int:
    """Where the last run of loss-bearing labels starts (0 when there is none)."""
    index = len(labels)
    while index > 0 and labels[index - 1] == IGNORE_INDEX:
        index -= 1
    while index > 0 and labels[index - 1] != IGNORE_INDEX:
        index -= 1
    return index


def encode_rows(
    rows: Iterable[dict[str, Any]],
    tokenizer: PreTrainedTokenizerBase,
    max_length: int,
    truncation: Truncation = "truncate",
    train_on: TrainOn = "assistant",
    template: str | None = None,
    progress: Callable[[int], None] | None = None,
) -> tuple[list[Example], EncodeStats]:
    """Tokenize canonical causal-LM rows (``{"messages"}`` with optional ``tools``, or
    ``{"text"}``) and fit each to `max_length`; `template` as in `resolve_template`, looked up on
    the first chat row.
    `progress(rows_done)` is called as rows are done."""
    examples: list[Example] = []
    stats = EncodeStats()
    resolved: str | None = None
    for done, row in enumerate(rows, 1):
        if progress is not None:
            progress(done)
        if "messages" in row:
            resolved = resolved or resolve_template(tokenizer, template)
            example = encode_chat(tokenizer, row["messages"], resolved, train_on,
                                  row.get("tools"))
        else:
            example = encode_text(tokenizer, row["text"])
        fitted = fit_length(example, max_length, truncation)
        if fitted is None:
            stats.dropped += 1
            continue
        stats.truncated += fitted is not example
        examples.append(fitted)
    stats.examples = len(examples)
    return examples, stats
