"""The task of a recipe's `task.kind`: one builder per kind."""

from __future__ import annotations

from collections.abc import Callable

from launcher.contract.plan import Plan
from launcher.recipe.schema import Recipe
from launcher.tasks.base import Task


def _sequence_classification(recipe: Recipe, plan: Plan) -> Task:
    from launcher.tasks.sequence_classification import SequenceClassification

    return SequenceClassification(recipe, plan)


def _causal_lm(recipe: Recipe, plan: Plan) -> Task:
    from launcher.tasks.causal_lm import CausalLM

    return CausalLM(recipe, plan)


def _token_classification(recipe: Recipe, plan: Plan) -> Task:
    from launcher.tasks.token_classification import TokenClassification

    return TokenClassification(recipe, plan)


BUILDERS: dict[str, Callable[[Recipe, Plan], Task]] = {
    "sequence_classification": _sequence_classification,
    "causal_lm": _causal_lm,
    "token_classification": _token_classification,
}


def build_task(recipe: Recipe, plan: Plan) -> Task:
    """The task object for `task.kind`."""
    return BUILDERS[recipe.task.kind](recipe, plan)
