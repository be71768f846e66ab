"""`hf:` data sources: how a recipe names a Hub dataset, its subset, split and revision."""

from __future__ import annotations

import pytest

from launcher.data.hub_data import HubData, is_hub_data


def test_the_split_defaults_by_role_and_options_parse() -> None:
    assert HubData.parse("hf:org/name") == HubData("org/name", "train")
    assert HubData.parse("hf:org/name", "eval").split == "validation"
    source = HubData.parse("hf:openai/gsm8k?subset=main&split=test&revision=v1.0")
    assert source == HubData("openai/gsm8k", "test", "main", "v1.0")


def test_a_source_prints_as_it_parses_and_a_folder_can_replace_the_name() -> None:
    source = HubData.parse("hf:./repo?subset=a", "eval")
    assert HubData.parse(str(source)) == source
    assert source.with_name("/abs/repo") == "hf:/abs/repo?subset=a&split=validation"


@pytest.mark.parametrize("bad", ["hf:", "hf:org/name?splt=train", "hf:org/name?split=",
                                 "hf:?split=train"])
def test_a_malformed_source_names_the_expected_form(bad: str) -> None:
    with pytest.raises(ValueError, match=r"expected hf:ORG/NAME .*\?subset=\.\.\.&split="):
        HubData.parse(bad)


def test_only_the_prefix_makes_a_hub_source() -> None:
    assert is_hub_data("hf:org/name") and not is_hub_data("data/hf:x.jsonl")
    assert not is_hub_data("org/name")
