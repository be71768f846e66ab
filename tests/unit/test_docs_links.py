"""Every relative link in README.md and docs/ points at a file or folder that exists."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.conftest import REPO

DOCS = REPO / "docs"
PAGES = sorted([REPO / "README.md", *DOCS.rglob("*.md")])
FENCE = re.compile(r"^(```|~~~).*?^\1", re.MULTILINE | re.DOTALL)
CODE_SPAN = re.compile(r"(`+).*?\1", re.DOTALL)
INLINE = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+[\"'][^)]*)?\)")
DEFINITION = re.compile(r"^\s*\[[^\]]+\]:\s*<?(\S+?)>?(?:\s|$)", re.MULTILINE)
SCHEME = re.compile(r"^[a-z][a-z0-9+.-]*:", re.IGNORECASE)


def relative_links(page: Path) -> list[str]:
    """A Markdown page's link targets that are paths (no URL, no bare anchor), code left out."""
    text = CODE_SPAN.sub("", FENCE.sub("", page.read_text()))
    targets = INLINE.findall(text) + DEFINITION.findall(text)
    return [t for t in targets if not SCHEME.match(t) and not t.startswith("#")]


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_relative_links_resolve(page: Path) -> None:
    broken = [target for target in relative_links(page)
              if not (page.parent / target.split("#")[0].split("?")[0]).exists()]
    assert not broken, f"{page.relative_to(REPO)}: links to missing files: {broken}"


def test_the_docs_index_links_every_page() -> None:
    index = DOCS / "README.md"
    linked = {(index.parent / t.split("#")[0]).resolve() for t in relative_links(index)}
    unlisted = [str(p.relative_to(REPO)) for p in DOCS.rglob("*.md")
                if p != index and p.resolve() not in linked]
    assert not unlisted, f"docs/README.md does not link: {unlisted}"


def test_the_link_finder_finds_links() -> None:
    page = REPO / "README.md"
    assert relative_links(page), "README.md links to docs/: the pattern must find those links"
