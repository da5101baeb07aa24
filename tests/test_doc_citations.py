"""Every citation of the project's own docs, a page and a heading as in docs/algorithms.md, "TRePO", found in
rlx/, conf/, tests/ or scripts/, names a page that exists and a heading on that page."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCANNED = ("rlx", "conf", "tests", "scripts")
SUFFIXES = {".py", ".yaml", ".yml", ".md", ".sh", ".toml", ".txt"}
# docs/<page>.md, "<heading>"  |  docs/<page>.md ("<heading>")  |  single quotes (inside an f-string), a \" escape
# (inside a Python string), or the heading on the next line of a comment or docstring
CITATION = re.compile(r"docs/(?P<page>[\w/.-]+\.md)(?:,\s*(?:#\s*)?|\s*\(\s*)"  # the page, then `, ` or ` (`
                      r"\\?[\"'](?P<heading>[^\"'\\]{1,100})\\?[\"']")  # the quoted heading
HEADING = re.compile(r"^#{1,6}\s+(?P<text>.+?)\s*#*\s*$", re.MULTILINE)
FENCE = re.compile(r"^```.*?^```", re.MULTILINE | re.DOTALL)


def citations(text: str) -> list[tuple[str, str]]:
    """(page, heading) of every citation in `text`; a heading broken over lines reads as one line."""
    return [(m["page"], " ".join(m["heading"].split())) for m in CITATION.finditer(text)]


def headings(markdown: str) -> set[str]:
    """What a citation may name: each heading's text, and its title alone, the text before a trailing
    ` (`key`)...` or `, `path`` (e.g. "Adaptive rollouts" for "Adaptive rollouts (`algo.adaptive_rollouts`), ...").
    Lines in fenced code blocks are not headings."""
    names = set()
    for match in HEADING.finditer(FENCE.sub("", markdown)):
        text = match["text"]
        names |= {text, re.split(r" \(`|, `", text, maxsplit=1)[0]}
    return names


def scanned_files() -> list[Path]:
    files = {p.resolve() for top in SCANNED for p in (REPO / top).rglob("*") if p.suffix in SUFFIXES and p.is_file()}
    return sorted(f for f in files if ".venv" not in f.parts and "__pycache__" not in f.parts)


def all_citations() -> dict[tuple[str, str], list[str]]:
    found: dict[tuple[str, str], list[str]] = {}
    for path in scanned_files():
        for cite in citations(path.read_text(errors="replace")):
            found.setdefault(cite, []).append(str(path.relative_to(REPO)))
    return found


def test_the_parser_reads_every_citation_form_and_the_heading_titles():
    page = "docs/" + "algorithms.md"  # split: this file's own text holds no citation
    text = (f'({page}, "TRePO") {page}, \'Anchors\' {page} ("Losses") "{page}, \\"PPO\\"" '
            f'{page},\n    "Micro-batches and\n    mini-batches" # {page},\n# "GRPO" {page} alone')
    assert citations(text) == [("algorithms.md", "TRePO"), ("algorithms.md", "Anchors"), ("algorithms.md", "Losses"),
                               ("algorithms.md", "PPO"), ("algorithms.md", "Micro-batches and mini-batches"),
                               ("algorithms.md", "GRPO")]
    markdown = ("# Top\n## Adaptive rollouts (`algo.x`), `rlx/x.py`\n```sh\n# not a heading\n```\n"
                "### `rlx inspect`, `a.py`\n")
    assert headings(markdown) == {"Top", "Adaptive rollouts (`algo.x`), `rlx/x.py`", "Adaptive rollouts",
                                  "`rlx inspect`, `a.py`", "`rlx inspect`"}


def test_every_docs_citation_names_an_existing_heading():
    found = all_citations()
    assert ("algorithms.md", "TRePO") in found and ("frontier.md", "Adaptive rollouts") in found  # the scan works
    broken = []
    for (page, heading), where in sorted(found.items()):
        doc = REPO / "docs" / page
        if not doc.is_file():
            broken.append(f"docs/{page} (no such page), cited in {', '.join(where)}")
        elif heading not in headings(doc.read_text()):
            broken.append(f'docs/{page}, "{heading}" (no such heading), cited in {", ".join(where)}')
    assert not broken, "\n".join(broken)


@pytest.mark.parametrize("page", ["algorithms.md", "frontier.md"])
def test_the_cited_pages_have_headings(page):
    assert len(headings((REPO / "docs" / page).read_text())) >= 5
