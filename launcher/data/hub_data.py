"""Datasets named by Hub id: `hf:org/name`, or `hf:/a/folder` laid out like a Hub dataset repo.

Options follow a `?`, as in a URL: `hf:openai/gsm8k?subset=main&split=test&revision=v1`. The
split defaults to "train" for `data.train` and "validation" for `data.eval`. Rows are read
through `datasets.load_dataset`, so the Hub's own layouts (parquet, json, csv files, splits and
configs named in the README) work as they do everywhere. The control plane loads each source
once before launch, which downloads it into the `datasets` cache of `HF_HOME` where the Hub is
reachable; the job runs with HF_HUB_OFFLINE=1 and reads that cache. `datasets` is imported only
when a source is loaded: importing this module costs nothing.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlencode

PREFIX = "hf:"
OPTIONS = ("subset", "split", "revision")
DEFAULT_SPLIT = {"train": "train", "eval": "validation"}


class HubDataError(ValueError):
    """A Hub dataset that cannot be read: not cached offline, unknown split, subset or repo."""


def is_hub_data(value: str) -> bool:
    """`hf:...`: a dataset read through `datasets.load_dataset`, not a data file."""
    return value.startswith(PREFIX)


@dataclass(frozen=True)
class HubData:
    """One `hf:` source: the repo id or local folder, and which subset, split and revision."""

    name: str
    split: str
    subset: str | None = None
    revision: str | None = None

    @classmethod
    def parse(cls, value: str, role: str = "train") -> HubData:
        """`hf:NAME[?subset=S&split=T&revision=R]`; `role` ("train" or "eval") picks the split
        used when none is given."""
        name, _, query = value.removeprefix(PREFIX).partition("?")
        options = dict(parse_qsl(query, keep_blank_values=True))
        unknown = sorted(set(options) - set(OPTIONS))
        if not name or unknown or any(not text for text in options.values()):
            raise ValueError(f"{value!r}: expected hf:ORG/NAME or hf:/a/folder, optionally "
                             f"followed by ?{'&'.join(f'{key}=...' for key in OPTIONS)}")
        return cls(name=name, split=options.get("split", DEFAULT_SPLIT[role]),
                   subset=options.get("subset"), revision=options.get("revision"))

    def with_name(self, name: str) -> str:
        """This source as an `hf:` string, its name replaced (a resolved local folder)."""
        options = {key: getattr(self, key) for key in OPTIONS}
        query = urlencode({key: text for key, text in options.items() if text is not None})
        return f"{PREFIX}{name}?{query}"

    def __str__(self) -> str:
        return self.with_name(self.name)

    @functools.cache  # noqa: B019 (frozen, few): checked, then read, then fingerprinted
    def load(self) -> Any:
        """The split as a `datasets.Dataset`, downloaded into the cache first when online;
        loaded once per process."""
        import datasets

        datasets.disable_progress_bars()
        datasets.logging.set_verbosity_error()  # not "using the latest cached version" x3
        try:
            return datasets.load_dataset(self.name, self.subset, split=self.split,
                                         revision=self.revision)
        except Exception as err:  # offline and not cached, unknown repo, subset or split
            detail = str(err).strip().splitlines()
            raise HubDataError(f"{self}: {type(err).__name__}: "
                               f"{' '.join(detail[:2]) if detail else 'no detail'}") from None

    def rows(self) -> Iterator[dict[str, Any]]:
        """Every row of the split, in order."""
        yield from self.load()

    def fingerprint(self) -> str:
        """What the rows' content is known by: `datasets`' fingerprint of the loaded split."""
        return str(self.load()._fingerprint)
