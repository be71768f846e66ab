"""The token classification task of recipes/ner-wnut17.toml on a slice of the real WNUT-17 rows,
built as the worker builds it (recipe, plan, task), for unit tests."""

from __future__ import annotations

from launcher.contract.vocabulary import BackendKind
from launcher.planner.make import make_plan
from launcher.recipe.load import load_recipe
from launcher.tasks.token_classification import TokenClassification
from tests.conftest import REPO

NER = REPO / "recipes" / "ner-wnut17.toml"
ROWS = 300


def make_task(*overrides: str) -> TokenClassification:
    recipe = load_recipe(NER, [f"data.max_train_samples={ROWS}", "data.max_eval_samples=40",
                               *overrides])
    plan = make_plan(recipe, recipe_file=str(NER), backend=BackendKind.LOCAL, gpus_here=0)
    return TokenClassification(recipe, plan)
