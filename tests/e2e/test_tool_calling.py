"""Tool-calling SFT through the CLI: LLaMA-Factory's glaive rows (ShareGPT with function_call and
observation turns and a tools column, its column names) train on a tiny Llama with chatml, and
the loss falls exactly on the assistant's calls and answers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import REPO
from tests.e2e.conftest import ALPACA
from tests.helpers.run_folder import summary

pytestmark = pytest.mark.slow

GLAIVE = REPO / "tests" / "fixtures" / "data" / "glaive_toolcall.json"
TOOL_DATA = [f"data.train='{GLAIVE}'", "data.format=sharegpt",
             'data.columns={messages="conversations", tools="tools"}', "data.eval_fraction=0.0",
             "train.generation_prompts=0",
             "data.max_length=2048", "task.chat_template=chatml"]


def expected_loss_text(conversation: list[dict[str, str]]) -> list[str]:
    """What each assistant turn renders to in chatml, from the raw ShareGPT turns: an answer, or
    a call as <tool_call> JSON, each with its end of turn."""
    texts = []
    for turn in conversation:
        if turn["from"] == "gpt":
            texts.append(turn["value"] + "<|im_end|>")
        elif turn["from"] == "function_call":
            call = json.dumps(json.loads(turn["value"]))
            texts.append(f"<tool_call>\n{call}\n</tool_call><|im_end|>")
    return texts


def test_glaive_tool_calls_train(run_cli, tiny_llama: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    overrides = [f"model.path='{tiny_llama}'", *TOOL_DATA, "train.max_steps=3",
                 "train.global_batch_size=2", "train.log_every=1", "tracking.mode=disabled"]
    result = run_cli(ALPACA, "--backend", "local", "--run-dir", run_dir, "--quiet",
                     *(arg for item in overrides for arg in ("--set", item)))
    assert result.returncode == 0, result.stdout + result.stderr
    done = summary(run_dir)
    assert done.steps == 3 and done.data.train_rows == 3 and done.data.skipped_rows == 0


def test_labels_cover_exactly_the_assistant_turns(tiny_llama: Path) -> None:
    """The worker's own encoded examples: decoded loss runs == each call and answer."""
    from launcher.contract.vocabulary import BackendKind
    from launcher.data.encode.chat import IGNORE_INDEX
    from launcher.planner.make import make_plan
    from launcher.recipe.load import load_recipe
    from launcher.tasks.causal_lm import CausalLM

    recipe = load_recipe(ALPACA, [f"model.path='{tiny_llama}'", *TOOL_DATA])
    plan = make_plan(recipe, recipe_file=str(ALPACA), backend=BackendKind.LOCAL, gpus_here=0)
    task = CausalLM(recipe, plan)
    tokenizer = task.load_tokenizer()
    encoded = task.encode_data(tokenizer)
    raw = json.loads(GLAIVE.read_text(encoding="utf-8"))
    assert len(encoded.train) == len(raw) == 3 and encoded.stats.truncated == 0
    for example, row in zip(encoded.train, raw, strict=True):
        runs: list[list[int]] = []
        others: list[int] = []
        previous = IGNORE_INDEX
        for token, label in zip(example["input_ids"], example["labels"], strict=True):
            if label == IGNORE_INDEX:
                others.append(token)
            elif previous == IGNORE_INDEX:
                runs.append([token])
            else:
                runs[-1].append(token)
            previous = label
        assert [tokenizer.decode(run) for run in runs] == expected_loss_text(row["conversations"])
        unlearned = tokenizer.decode(others)
        for turn in row["conversations"]:
            if turn["from"] in ("human", "observation"):
                assert turn["value"] in unlearned
        for tool in json.loads(row["tools"]):
            assert json.dumps({"type": "function", "function": tool}) in unlearned
