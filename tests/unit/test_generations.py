"""`train.generation_prompts`: which recipes may ask for generations, and what a generation's
prompt and reference are (the conversation before its last answer, as training rendered it)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from launcher.contract.errors import RecipeError
from launcher.data.encode.chat import encode_chat, encode_text, resolve_template
from launcher.data.formats import load_rows
from launcher.recipe.deprecated import RecipeDeprecation
from launcher.recipe.load import load_recipe
from launcher.tasks.causal_lm import _split_answer

CAUSAL = """
[model]
path = "some/model"
[task]
kind = "causal_lm"
[data]
train = "train.jsonl"
"""


def recipe_file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "r.toml"
    path.write_text(text)
    return path


def test_listed_prompts_or_eval_rows(tmp_path: Path) -> None:
    path = recipe_file(tmp_path, CAUSAL)
    assert load_recipe(path).train.generation_prompts == 0
    listed = load_recipe(path, ["train.generation_prompts=['Say hi', 'Add 2 and 3']"])
    assert listed.train.generation_prompts == ["Say hi", "Add 2 and 3"]
    rows = load_recipe(path, ["train.generation_prompts=3", "data.eval_fraction=0.1"])
    assert rows.train.generation_prompts == 3


def test_the_old_key_names_still_load_with_a_warning(tmp_path: Path) -> None:
    """train.sample_prompts and train.sample_max_tokens were renamed: "sample" is a training
    example."""
    path = recipe_file(tmp_path, CAUSAL + "[train]\nsample_prompts = ['hi']\n")
    with pytest.warns(FutureWarning, match="train.sample_prompts is deprecated: use "
                      "train.generation_prompts"):
        recipe = load_recipe(path, ["train.sample_max_tokens=8"])
    assert recipe.train.generation_prompts == ["hi"] and recipe.train.generation_max_tokens == 8


def test_an_old_key_beside_its_new_name_is_one_error(tmp_path: Path, run_cli) -> None:
    path = recipe_file(tmp_path, CAUSAL + "[train]\nsample_max_tokens = 3\n"
                       "generation_max_tokens = 4\n")
    with pytest.warns(RecipeDeprecation), pytest.raises(
            RecipeError, match=r"same setting: keep train\.generation_max_tokens only"):
        load_recipe(path)
    shown = run_cli(path, "--dry-run")  # each as one line, no Python source
    lines = (shown.stdout + shown.stderr).splitlines()
    assert shown.returncode == 2
    said = "warning: train.sample_max_tokens is deprecated: use train.generation_max_tokens"
    assert said in lines
    assert not any("RecipeDeprecation" in line or "Warning" in line for line in lines)


@pytest.mark.parametrize(("extra", "needle"), [
    (["train.generation_prompts=2"], "no eval data"),
    (["train.generation_prompts=-1"], "number of eval rows"),
    (["train.generation_max_tokens=0"], "train.generation_max_tokens"),
])
def test_refused_generation_settings(tmp_path: Path, extra: list[str], needle: str) -> None:
    with pytest.raises(RecipeError, match=needle):
        load_recipe(recipe_file(tmp_path, CAUSAL), extra)


def test_generations_are_for_generated_text_only(tmp_path: Path) -> None:
    text = CAUSAL.replace("causal_lm", "sequence_classification").replace(".jsonl", ".tsv")
    with pytest.raises(RecipeError, match=r"does not apply to sequence_classification "
                                          r"\(generated text\): it applies to causal_lm"):
        load_recipe(recipe_file(tmp_path, text), ["train.generation_prompts=['hi']"])


def test_an_eval_row_is_cut_before_its_last_answer(tiny_tokenizer: Any,
                                                    fixture_data: Path) -> None:
    template = resolve_template(tiny_tokenizer, "chatml")
    conversation = [m for row in load_rows([fixture_data / "messages.jsonl"], "messages").rows[:2]
                    for m in row["messages"]]
    assert conversation[-1]["role"] == "assistant" and len(conversation) >= 4
    prompt, reference = _split_answer(encode_chat(tiny_tokenizer, conversation, template),
                                      tiny_tokenizer)
    assert reference == conversation[-1]["content"]
    assert tiny_tokenizer.decode(prompt["input_ids"]) == tiny_tokenizer.apply_chat_template(
        conversation[:-1], chat_template=template, tokenize=False, add_generation_prompt=True)


def test_a_text_row_is_cut_in_half(tiny_tokenizer: Any) -> None:
    example = encode_text(tiny_tokenizer, "the quick brown fox jumps over the lazy dog")
    prompt, reference = _split_answer(example, tiny_tokenizer)
    half = len(example["input_ids"]) // 2
    assert prompt["input_ids"] == example["input_ids"][:half]
    assert reference == tiny_tokenizer.decode(example["input_ids"][half:],
                                              skip_special_tokens=True)
