"""Recipes: every shipped one validates; extends, --set and the errors users see."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from launcher.contract.errors import RecipeError
from launcher.contract.vocabulary import Precision
from launcher.recipe.load import load_recipe
from tests.conftest import REPO

SHIPPED = sorted((REPO / "recipes").glob("*.toml"))
MINIMAL = """
[model]
path = "some/model"
[task]
kind = "sequence_classification"
[data]
train = "train.tsv"
"""


def write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.write_text(text)
    return path


@pytest.mark.parametrize("recipe", SHIPPED, ids=lambda p: p.name)
def test_every_shipped_recipe_validates(recipe: Path) -> None:
    loaded = load_recipe(recipe)
    for file in loaded.data.train + loaded.data.eval:
        assert Path(file).exists(), f"{recipe.name}: data file {file} is missing"


def test_shipped_recipes_exist() -> None:
    names = {p.name for p in SHIPPED}
    assert {"quickstart.toml", "alpaca-tiny-llama.toml"} <= names


def test_defaults_and_relative_paths(tmp_path: Path) -> None:
    recipe = load_recipe(write(tmp_path, "r.toml", MINIMAL))
    assert recipe.data.format == "classification"
    assert recipe.data.train == [str(tmp_path / "train.tsv")]
    assert recipe.model.path == "some/model"  # not a local folder: a hub id, left alone
    assert recipe.train.precision == "auto"


def test_unknown_key_names_file_key_and_suggestion(tmp_path: Path) -> None:
    path = write(tmp_path, "r.toml", MINIMAL + "[train]\nlearning_rat = 1e-4\n")
    with pytest.raises(RecipeError) as err:
        load_recipe(path)
    text = str(err.value)
    assert str(path) in text
    assert "train.learning_rat" in text
    assert "unknown key" in text


def test_unknown_key_did_you_mean(tmp_path: Path) -> None:
    path = write(tmp_path, "r.toml", MINIMAL + "[train]\nepoch = 2\n")
    with pytest.raises(RecipeError, match="did you mean 'epochs'"):
        load_recipe(path)


def test_wrong_type_names_key_and_expectation(tmp_path: Path) -> None:
    path = write(tmp_path, "r.toml", MINIMAL + '[train]\nglobal_batch_size = "big"\n')
    with pytest.raises(RecipeError) as err:
        load_recipe(path)
    text = str(err.value)
    assert "train.global_batch_size" in text and "'big'" in text and "expected int" in text


def test_missing_required_key(tmp_path: Path) -> None:
    path = write(tmp_path, "r.toml", MINIMAL.replace('kind = "sequence_classification"', ""))
    with pytest.raises(RecipeError, match=r"task\.kind: required key is missing"):
        load_recipe(path)


def test_extends_chain_with_overrides(tmp_path: Path) -> None:
    write(tmp_path, "base.toml", MINIMAL + "[train]\nlr = 1e-3\nseed = 7\n")
    write(tmp_path, "mid.toml", 'extends = "base.toml"\n[train]\nlr = 2e-3\n')
    sub = tmp_path / "sub"
    sub.mkdir()
    top = write(sub, "top.toml", 'extends = "../mid.toml"\n[train]\nepochs = 3\n')
    recipe = load_recipe(top)
    assert (recipe.train.lr, recipe.train.seed, recipe.train.epochs) == (2e-3, 7, 3)


def test_error_names_the_file_that_set_the_key(tmp_path: Path) -> None:
    base = write(tmp_path, "base.toml", MINIMAL + "[train]\nlr = -1\n")
    top = write(tmp_path, "top.toml", 'extends = "base.toml"\n[train]\nseed = 1\n')
    with pytest.raises(RecipeError) as err:
        load_recipe(top)
    assert str(err.value).startswith(f"{base}: train.lr")


def test_extends_cycle_refused(tmp_path: Path) -> None:
    write(tmp_path, "a.toml", 'extends = "b.toml"\n' + MINIMAL)
    write(tmp_path, "b.toml", 'extends = "a.toml"\n')
    with pytest.raises(RecipeError, match="cycle in extends"):
        load_recipe(tmp_path / "a.toml")


def test_set_overrides_with_type_checking(tmp_path: Path) -> None:
    path = write(tmp_path, "r.toml", MINIMAL)
    recipe = load_recipe(path, ["train.lr=2e-5", "tracking.tags=['a', 'b']",
                                "distributed.strategy=zero2"])
    assert recipe.train.lr == 2e-5
    assert recipe.tracking.tags == ["a", "b"]
    assert recipe.distributed.strategy == "zero2"
    with pytest.raises(RecipeError, match=r"--set train\.lr"):
        load_recipe(path, ["train.lr=fast"])
    with pytest.raises(RecipeError, match="unknown key"):
        load_recipe(path, ["train.nope=1"])
    with pytest.raises(RecipeError, match="KEY=VALUE"):
        load_recipe(path, ["train.lr"])


def test_model_dtype_takes_the_precision_words(tmp_path: Path) -> None:
    """model.dtype speaks train.precision's words; its old torch spellings still load, with a
    warning naming the new value."""
    path = write(tmp_path, "r.toml", MINIMAL.replace('path = "some/model"',
                                                     'path = "some/model"\ndtype = "bf16"'))
    assert load_recipe(path).model.dtype is Precision.BF16
    with pytest.warns(FutureWarning, match="model.dtype = 'bfloat16' is deprecated: use "
                      "model.dtype = 'bf16'"):
        assert load_recipe(path, ["model.dtype=bfloat16"]).model.dtype is Precision.BF16
    assert {p.torch_name for p in Precision} == {"float32", "bfloat16", "float16"}


def test_extra_sbatch_lines_must_be_options(tmp_path: Path) -> None:
    path = write(tmp_path, "r.toml", MINIMAL + '[slurm]\nextra_sbatch = ["--x=1\\nrm -rf /"]\n')
    with pytest.raises(RecipeError, match=r"slurm\.extra_sbatch"):
        load_recipe(path)


def test_schema_command_prints_json_schema() -> None:
    out = subprocess.run([sys.executable, "-m", "launcher", "schema"], capture_output=True,
                         text=True, check=True, cwd=REPO)
    schema = json.loads(out.stdout)
    assert schema["title"] == "Recipe"
    assert {"model", "task", "data", "train", "distributed", "tracking", "slurm"} <= set(
        schema["properties"])
    assert schema["additionalProperties"] is False


def test_set_keeps_a_slurm_time_as_text(tmp_path: Path) -> None:
    recipe = load_recipe(write(tmp_path, "r.toml", MINIMAL), ["slurm.time=00:10:00"])
    assert recipe.slurm.time == "00:10:00"


def test_run_name_cannot_inject_lines(tmp_path: Path) -> None:
    text = 'name = "ok\\necho pwned"\n' + MINIMAL
    with pytest.raises(RecipeError, match="name"):
        load_recipe(write(tmp_path, "r.toml", text))
