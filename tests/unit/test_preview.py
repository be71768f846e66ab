"""`sft-launch preview`: tool rows rendered by real chat templates (Qwen2.5, Llama 3.1) and the
built-in chatml, loss on assistant turns only; classification and NER rows; the CLI's output."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from launcher.data.encode.chat import IGNORE_INDEX, encode_rows, render, resolve_template
from launcher.data.encode.preview import Preview, preview_rows
from launcher.recipe.schema import Recipe
from tests.conftest import REPO, cli_env
from tests.helpers.tool_chat import (
    QWEN_SYSTEM,
    assistant_chars,
    glaive_rows,
    llama_tokenizer,
    message_rows,
    never_chars,
    template,
)


def causal_lm_recipe(chat_template: str, **data: Any) -> Recipe:
    return Recipe.model_validate({
        "model": {"path": "unused"}, "task": {"kind": "causal_lm", "chat_template": chat_template},
        "data": {"train": ["unused.jsonl"], "max_length": 8192, **data}})


@pytest.fixture(scope="module")
def tokenizers(tiny_tokenizer: Any, tiny_tokenizer_dir: Path) -> dict[str, Any]:
    llama = llama_tokenizer(tiny_tokenizer_dir)
    return {"chatml": tiny_tokenizer, "qwen2.5": tiny_tokenizer, "llama3.1": llama}


def loss_positions(preview: Preview) -> set[int]:
    positions, at = set(), 0
    for segment in preview.segments:
        if segment.loss:
            positions.update(range(at, at + len(segment.text)))
        at += len(segment.text)
    return positions


def check_loss(name: str, tokenizer: Any, row: dict[str, Any]) -> str:
    """Preview `row` with template `name`; the loss lies exactly on the assistant turns (calls
    and answers, end of turn included), never on tool results, the tools or prompts."""
    chat_template = template(name)
    [preview] = preview_rows([row], tokenizer, causal_lm_recipe(chat_template))
    text = "".join(segment.text for segment in preview.segments)
    resolved = resolve_template(tokenizer, chat_template)
    assert text == render(tokenizer, row["messages"], resolved, tools=row.get("tools"))
    loss = loss_positions(preview)
    assert loss == assistant_chars(name, text)
    assert not loss & never_chars(name, text)
    [example], _ = encode_rows([row], tokenizer, 8192, template=chat_template)
    assert preview.tokens == len(example["input_ids"])
    assert preview.loss_tokens == sum(label != IGNORE_INDEX for label in example["labels"]) > 0
    return preview.bracketed()


@pytest.mark.parametrize("name", ["chatml", "qwen2.5", "llama3.1"])
def test_glaive_call_rendered_with_loss_on_the_call_and_answers(tokenizers, name: str) -> None:
    marked = check_loss(name, tokenizers[name], glaive_rows()[0])
    schema = json.dumps({"type": "function", "function": {
        "name": "search_recipes", "description": "Search for recipes based on ingredients",
        "parameters": {"type": "object", "properties": {"ingredients": {
            "type": "array", "items": {"type": "string"},
            "description": "The ingredients to search for"}}, "required": ["ingredients"]}}})
    result = glaive_rows()[0]["messages"][4]["content"]
    arguments = '{"ingredients": ["chicken", "bell peppers", "rice"]}'
    if name == "llama3.1":
        assert marked.startswith("<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\n"
                                 "Environment: ipython\nCutting Knowledge Date: December 2023\n"
                                 "Today Date: 26 Jul 2024\n\n<|eot_id|>"
                                 "<|start_header_id|>user<|end_header_id|>\n\nGiven the following")
        indented = json.dumps(json.loads(schema), indent=4)
        assert f"{indented}\n\nHi, I have some ingredients" in marked  # tools in the user turn
        assert (f'<|start_header_id|>assistant<|end_header_id|>\n\n[[{{"name": "search_recipes", '
                f'"parameters": {arguments}}}<|eot_id|>]]') in marked
        # A string result is JSON-quoted: Jinja strings pass the template's `iterable` test.
        assert (f"<|start_header_id|>ipython<|end_header_id|>\n\n{json.dumps(result)}<|eot_id|>"
                "<|start_header_id|>assistant<|end_header_id|>\n\n[[I found two recipes") in marked
        return
    system = f"{QWEN_SYSTEM}\n\n" if name == "qwen2.5" else ""
    assert marked.startswith(f"<|im_start|>system\n{system}# Tools\n\nYou may call one or more "
                             "functions to assist with the user query.\n\nYou are provided with "
                             f"function signatures within <tools></tools> XML tags:\n<tools>\n"
                             f"{schema}\n</tools>\n\nFor each function call")
    assert (f'<|im_start|>assistant\n[[<tool_call>\n{{"name": "search_recipes", "arguments": '
            f'{arguments}}}\n</tool_call><|im_end|>]]\n') in marked
    assert (f"<|im_start|>user\n<tool_response>\n{result}\n</tool_response><|im_end|>\n"
            "<|im_start|>assistant\n[[I found two recipes") in marked


@pytest.mark.parametrize("name", ["chatml", "qwen2.5"])
def test_parallel_calls_and_merged_results(tokenizers, name: str) -> None:
    weather, clock = message_rows()
    marked = check_loss(name, tokenizers[name], weather)
    assert marked.startswith("<|im_start|>system\nYou are a weather bot.\n\n# Tools\n\n")
    assert ('<|im_start|>assistant\n[[<tool_call>\n{"name": "get_weather", "arguments": '
            '{"city": "Paris"}}\n</tool_call>\n<tool_call>\n{"name": "get_weather", '
            '"arguments": {"city": "Rome"}}\n</tool_call><|im_end|>]]\n') in marked
    assert ("<|im_start|>user\n<tool_response>\n18 C, sunny\n</tool_response>\n<tool_response>"
            "\n24 C, cloudy\n</tool_response><|im_end|>\n<|im_start|>assistant\n[[Paris:") in marked
    marked = check_loss(name, tokenizers[name], clock)  # content and a call in one message
    assert ('<|im_start|>assistant\n[[Let me look it up.\n<tool_call>\n{"name": "get_time", '
            '"arguments": {"zone": "Asia/Tokyo"}}\n</tool_call><|im_end|>]]') in marked


def test_llama31_one_call_per_message(tokenizers) -> None:
    weather, clock = message_rows()
    tokenizer = tokenizers["llama3.1"]
    marked = check_loss("llama3.1", tokenizer, clock)
    assert ('[[{"name": "get_time", "parameters": {"zone": "Asia/Tokyo"}}<|eot_id|>]]'
            in marked)  # the call replaces the content "Let me look it up."
    assert "Let me look it up." not in marked
    for row in glaive_rows():
        check_loss("llama3.1", tokenizer, row)
    [refused] = preview_rows([weather], tokenizer, causal_lm_recipe(template("llama3.1")))
    assert refused.segments == [] and refused.tokens == 0
    assert "This model only supports single tool-calls at once!" in refused.note


def test_rows_without_tools_and_several_calls(tokenizers) -> None:
    for name in ("chatml", "qwen2.5"):
        for row in glaive_rows():
            check_loss(name, tokenizers[name], row)


def test_truncation_and_counts_are_those_of_training(tiny_tokenizer: Any) -> None:
    row = glaive_rows()[1]
    [full] = preview_rows([row], tiny_tokenizer, causal_lm_recipe("chatml"))
    [cut] = preview_rows([row], tiny_tokenizer, causal_lm_recipe("chatml", max_length=200))
    assert cut.tokens == 200 < full.tokens and "truncated to data.max_length = 200" in cut.note
    assert cut.summary() == f"200 tokens, {cut.loss_tokens} with loss, {cut.note}"
    [dropped] = preview_rows([row], tiny_tokenizer,
                             causal_lm_recipe("chatml", max_length=200, truncation="drop"))
    assert dropped.note == "dropped: longer than data.max_length = 200"
    assert dropped.segments == [] and dropped.tokens == 0


def test_cli_preview_prints_brackets_without_a_terminal(run_cli, tiny_tokenizer_dir: Path,
                                                        tmp_path: Path) -> None:
    recipe = tmp_path / "tools.toml"
    recipe.write_text(f"""
[model]
path = "{tiny_tokenizer_dir}"
[task]
kind = "causal_lm"
chat_template = "chatml"
[data]
train = "{REPO / 'tests/fixtures/data/glaive_toolcall.json'}"
format = "sharegpt"
columns = {{ messages = "conversations", tools = "tools" }}
max_length = 4096
""")
    result = run_cli("preview", recipe, "--rows", "2")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert out.startswith(f"2 of 3 training examples of {recipe}; loss-bearing text in [[...]]")
    assert out.count("--- example ") == 2
    assert "\n--- example 2: " in out and " with loss\n<|im_start|>system\n# Tools" in out
    assert ('<|im_start|>assistant\n[[<tool_call>\n{"name": "calculate_area", "arguments": '
            '{"shape": "circle", "dimensions": [4]}}\n</tool_call><|im_end|>]]\n'
            '<|im_start|>user\n<tool_response>\n{"area": 50.24}\n</tool_response><|im_end|>\n'
            '<|im_start|>assistant\n[[The area of the circle') in out
    assert "[[<tool_response>" not in out and "<tools>\n[[" not in out
    bad = run_cli("preview", recipe, "--set", "model.path='/nonexistent/tokenizer'")
    assert bad.returncode == 2
    assert "cannot load the tokenizer or processor from /nonexistent" in bad.stderr


def test_cli_preview_of_classification_and_ner(run_cli) -> None:
    result = run_cli("preview", REPO / "recipes/quickstart.toml", "--rows", "1")
    assert result.returncode == 0, result.stderr
    assert "--- example 1: " in result.stdout and ", label: " in result.stdout
    assert "; the loss is on each example's label\n" in result.stdout
    assert "\n[CLS] " in result.stdout and "[[" not in result.stdout
    ner = run_cli("preview", REPO / "recipes/ner-wnut17.toml", "--rows", "2")
    assert ner.returncode == 0, ner.stderr
    header = ner.stdout.splitlines()[2]
    assert header.endswith("with loss, the first subword of each word carries its tag")
    assert "[[[CLS]" not in ner.stdout and "/O]]" in ner.stdout


def test_preview_loads_no_training_code(tiny_tokenizer_dir: Path) -> None:
    """The tokenizer and the recipe's own task module only (its `preview`): no other task's,
    no worker, model or process-group code of the launcher."""
    script = f"""
import sys
from launcher.cli import main
try:
    main(["preview", {str(REPO / 'recipes/alpaca-tiny-llama.toml')!r}, "--rows", "1",
          "--set", "model.path='{tiny_tokenizer_dir}'"])
finally:
    print(sorted(m for m in sys.modules if m.startswith(("launcher.tasks.", "launcher.worker",
                                                         "launcher.backends"))), file=sys.stderr)
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          env=cli_env(), cwd=REPO, timeout=300)
    assert done.returncode == 0, done.stderr
    loaded = done.stderr.strip().splitlines()[-1]
    assert "[[" in done.stdout and loaded == str(["launcher.tasks.base", "launcher.tasks.causal_lm",
                                                  "launcher.tasks.packed_attention",
                                                  "launcher.tasks.pretrained",
                                                  "launcher.tasks.registry",
                                                  "launcher.tasks.spec"])
