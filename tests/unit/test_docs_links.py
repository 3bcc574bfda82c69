"""The README and docs/ link only to files in the repository, and the README stays a front page."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
README_MAX_LINES = 200

_FENCE = re.compile(r"^(```|~~~).*?^\1", re.MULTILINE | re.DOTALL)
_CODE_SPAN = re.compile(r"(`+)(?:(?!\1).)+?\1", re.DOTALL)
_INLINE_LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_REFERENCE_LINK = re.compile(r"^\s{0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s|$)", re.MULTILINE)
_HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*#*\s*$", re.MULTILINE)
_SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")


def pages() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def prose(text: str) -> str:
    """The text with code blocks and code spans removed: links are only read outside them."""
    return _CODE_SPAN.sub("", _FENCE.sub("", text))


def links(page: Path) -> list[str]:
    text = prose(page.read_text(encoding="utf-8"))
    return [*_INLINE_LINK.findall(text), *_REFERENCE_LINK.findall(text)]


def anchors(page: Path) -> set[str]:
    """The fragment ids a Markdown renderer gives the page's headings (GitHub's rule, with -1, -2 for repeats)."""
    seen: dict[str, int] = {}
    result: set[str] = set()
    for heading in _HEADING.findall(_FENCE.sub("", page.read_text(encoding="utf-8"))):
        slug = re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-")
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        result.add(slug if count == 0 else f"{slug}-{count}")
    return result


def test_the_docs_exist() -> None:
    """docs/ holds the pages the README's table of contents names."""
    names = {page.name for page in pages()}
    for name in ("cli.md", "http-api.md", "operations.md", "marketplaces.md", "auditing.md", "finance.md"):
        assert name in names
    assert "development.md" in names


@pytest.mark.parametrize("page", pages(), ids=lambda page: str(page.relative_to(ROOT)))
def test_every_link_resolves_inside_the_repository(page: Path) -> None:
    """Each link is relative, stays inside the repository, names a file or folder that exists, and any
    #fragment on a Markdown page names one of its headings."""
    problems = []
    for target in links(page):
        if _SCHEME.match(target):
            problems.append(f"{target}: points outside the repository")
            continue
        path_part, _, fragment = target.partition("#")
        resolved = (page.parent / path_part).resolve() if path_part else page
        if not resolved.is_relative_to(ROOT):
            problems.append(f"{target}: points above the repository root")
        elif not resolved.exists():
            problems.append(f"{target}: no such file")
        elif fragment and resolved.suffix == ".md" and fragment not in anchors(resolved):
            problems.append(f"{target}: no heading #{fragment} in {resolved.relative_to(ROOT)}")
    assert not problems, f"{page.relative_to(ROOT)}: " + "; ".join(problems)


def test_the_checks_catch_bad_links(tmp_path: Path) -> None:
    """The link reader finds inline and reference links outside code, and the anchors of headings."""
    page = tmp_path / "page.md"
    page.write_text(
        "# A title (`x`)\n\n## Two, words\n\nsee [a](../shared/API.md) and [b](#two-words)\n\n"
        "`[c](not-a-link.md)`\n\n```\n[d](nor-this.md)\n```\n\n[e]: other.md\n",
        encoding="utf-8",
    )
    assert links(page) == ["../shared/API.md", "#two-words", "other.md"]
    assert anchors(page) == {"a-title-x", "two-words"}


def test_readme_is_a_front_page() -> None:
    """README.md is at most 200 lines."""
    lines = (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
    assert len(lines) <= README_MAX_LINES
