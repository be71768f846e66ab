"""The task registry: every entry names a real `Task` of its module, formats the loaders read,
a PEFT type peft knows, heads transformers has; the recipe takes its kinds and refuses a
format the kind does not read."""

from __future__ import annotations

from pathlib import Path

import pytest

from launcher.contract.errors import RecipeError
from launcher.data.formats import FORMATS
from launcher.recipe.load import load_recipe
from launcher.tasks.registry import TASKS, task_class, task_spec
from launcher.tasks.spec import TaskSpec


@pytest.mark.parametrize("spec", TASKS.values(), ids=list(TASKS))
def test_an_entry_names_what_exists(spec: TaskSpec) -> None:
    import peft
    import transformers

    from launcher.tasks.base import Task

    cls = task_class(spec.kind)
    assert issubclass(cls, Task) and not getattr(cls, "__abstractmethods__", None)
    assert set(spec.formats) <= set(FORMATS) and spec.formats
    assert not spec.peft_task_type or spec.peft_task_type in peft.TaskType.__members__
    if spec.labelled:  # a new head, sized from the labels: LoRA must train and save it
        assert spec.peft_task_type or spec.lora_head, "LoRA would leave the new head untrained"
    auto = [name for name in dir(transformers) if name.startswith("AutoModel")
            and name.endswith(spec.architectures)]
    assert auto, f"no transformers Auto class ends with {spec.architectures}"


def test_each_format_belongs_to_one_kind() -> None:
    """A data format's canonical rows are one task's: the default format of a kind is its own."""
    owners = [kind for spec in TASKS.values() for kind in spec.formats]
    assert len(owners) == len(set(owners))


def test_an_unknown_kind_is_named() -> None:
    with pytest.raises(ValueError, match=r"unknown task kind 'tabular'; expected one of "
                                         r"sequence_classification, "):
        task_spec("tabular")


def recipe_text(kind: str, fmt: str | None = None) -> str:
    form = f'format = "{fmt}"\n' if fmt else ""
    return (f'[model]\npath = "m"\n[task]\nkind = "{kind}"\n'
            f'[data]\ntrain = "t.jsonl"\n{form}')


@pytest.mark.parametrize("spec", TASKS.values(), ids=list(TASKS))
def test_a_recipe_takes_each_kind_with_its_defaults(spec: TaskSpec, tmp_path: Path) -> None:
    path = tmp_path / "r.toml"
    path.write_text(recipe_text(spec.kind))
    recipe = load_recipe(path)
    assert recipe.data.format == spec.default_format
    assert recipe.data.group_by_length is spec.groups_by_length


def test_a_format_the_kind_does_not_read_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "r.toml"
    path.write_text(recipe_text("sequence_classification", "alpaca"))
    with pytest.raises(RecipeError, match=r"data.format = 'alpaca' is not read by task.kind = "
                                          r"'sequence_classification': it reads classification"):
        load_recipe(path)
