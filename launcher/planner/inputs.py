"""Checks before launch: the model folder and every data file (Hub data fetched into the cache)
exist on the machine that plans the run."""

from __future__ import annotations

from pathlib import Path

from launcher.contract.errors import RecipeError
from launcher.contract.plan import Plan
from launcher.data.hub_data import HubData, HubDataError, is_hub_data
from launcher.recipe.schema import Recipe


def check_inputs(recipe: Recipe, plan: Plan, recipe_file: str) -> None:
    """The model folder (when local) and every data file must exist before anything launches."""
    for key, value in (("model.path", plan.model_path), ("model.tokenizer", plan.tokenizer_path)):
        if value.startswith("/") and not Path(value).is_dir():
            raise RecipeError(recipe_file, key, f"model folder not found: {value}",
                              "check the path (relative paths start at the recipe's folder); "
                              "for a tiny offline model: sft-launch make-tiny-model DIR")
    for key in ("train", "eval"):
        for path in getattr(recipe.data, key):
            if is_hub_data(path):
                _fetch_hub_data(path, key, recipe_file)
            elif not (Path(path).is_file() or Path(path).is_dir()):
                raise RecipeError(recipe_file, f"data.{key}", f"data file not found: {path}",
                                  "check the path (relative paths start at the recipe's folder; "
                                  "a folder is read as an image folder)")


def _fetch_hub_data(value: str, key: str, recipe_file: str) -> None:
    """An `hf:` source must load here: from the Hub into the `datasets` cache of HF_HOME (which
    the job reads offline), or from that cache when offline."""
    try:
        HubData.parse(value, key).load()
    except HubDataError as err:
        raise RecipeError(recipe_file, f"data.{key}", f"cannot load {err}",
                          "run where the Hub is reachable once (with the same HF_HOME, shared "
                          "with the compute nodes), and check the name and its ?subset= and "
                          "?split=") from None
    except ValueError as err:
        raise RecipeError(recipe_file, f"data.{key}", str(err),
                          'e.g. "hf:openai/gsm8k?subset=main&split=train"') from None
