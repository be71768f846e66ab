"""Every malformed recipe value is one clear message and exit 2, never a traceback: hypothesis
sets random values (text with NUL bytes, paths longer than the OS allows, huge and negative
numbers, NaN, lists...) on every key of the shipped recipes, through the real CLI, in-process,
with a dry run (so bounded in time)."""

from __future__ import annotations

import typing
from pathlib import Path

import pytest
import tomli_w
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from launcher.cli import main
from launcher.recipe.schema import Recipe
from tests.conftest import REPO

RECIPES = {
    "quickstart": [],
    "alpaca-tiny-llama": [f"model.path='{REPO / 'tests' / 'fixtures' / 'tiny-llama'}'"],
    "ner-wnut17": [],
}


def schema_keys(model: type[BaseModel] = Recipe, prefix: str = "") -> list[str]:
    """Every dotted key of the recipe schema, sections and leaves."""
    keys = []
    for name, field in model.model_fields.items():
        keys.append(prefix + name)
        for arg in (field.annotation, *typing.get_args(field.annotation)):
            if isinstance(arg, type) and issubclass(arg, BaseModel):
                keys += schema_keys(arg, f"{prefix}{name}.")
    return keys


TEXT = st.one_of(
    st.text(max_size=12),
    st.text(alphabet=st.sampled_from("a/\x00.-é $`;'\"\\\n"), max_size=8),
    st.just("x" * 5000), st.just("/" + "a" * 300 + "/b"), st.just("$(touch pwned)"),
)
VALUES = st.one_of(
    TEXT,
    st.integers(min_value=-(10**20), max_value=10**20),
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
    st.lists(st.one_of(TEXT, st.integers(-5, 5)), max_size=3),
    st.dictionaries(st.sampled_from(["text", "label", "x"]), TEXT, max_size=2),
)
KEYS = st.one_of(st.sampled_from(schema_keys()),
                 st.sampled_from(["train.nope", "nope", "model.lora.r", "slurm.extra_sbatch"]))


def toml_value(value: object) -> str:
    return tomli_w.dumps({"v": value}).removeprefix("v = ").strip()


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(recipe=st.sampled_from(sorted(RECIPES)), key=KEYS, value=VALUES)
def test_any_value_on_any_key_is_a_clean_exit(recipe: str, key: str, value: object,
                                              tmp_path_factory: pytest.TempPathFactory,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    run_dir = tmp_path_factory.mktemp("fuzz") / "run"
    overrides = [*RECIPES[recipe], f"{key}={toml_value(value)}"]
    args = [str(REPO / "recipes" / f"{recipe}.toml"), "--backend", "local", "--dry-run",
            "--run-dir", str(run_dir), *(a for item in overrides for a in ("--set", item))]
    with pytest.raises(SystemExit) as exit_info:
        main(args)
        raise SystemExit(0)
    code = exit_info.value.code or 0
    err = capsys.readouterr().err
    assert code in (0, 2), err
    assert "Traceback" not in err
    if code == 2:
        assert err.count("error:") == 1, err
        assert not Path(run_dir).exists(), "a bad value still wrote a run folder"
