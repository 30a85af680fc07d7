"""README.md and docs/*.md render as written: every code fence opens and closes on a line of
its own, so no fence swallows the prose after it."""

import re
from pathlib import Path

import pytest
from markdown_it import MarkdownIt

ROOT = Path(__file__).resolve().parents[2]
DOCUMENTS = [ROOT / "README.md", ROOT / "monitoring" / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^```[\w+-]*$")


@pytest.mark.parametrize("path", DOCUMENTS, ids=lambda p: str(p.relative_to(ROOT)))
def test_code_fences_stand_alone_and_close(path: Path) -> None:
    fences = [(number, line) for number, line in enumerate(path.read_text().splitlines(), 1)
              if line.lstrip().startswith("```")]
    bad = [(number, line) for number, line in fences if not FENCE.match(line.strip())]
    assert bad == [], f"{path.name}: a fence with text on its line"
    closed = [line for _, line in fences[1::2]]
    assert len(fences) % 2 == 0, f"{path.name}: a fence is never closed"
    assert all(line.strip() == "```" for line in closed), f"{path.name}: fences out of step"


@pytest.mark.parametrize("path", DOCUMENTS, ids=lambda p: str(p.relative_to(ROOT)))
def test_a_commonmark_parser_closes_every_code_block_where_it_was_meant_to(path: Path) -> None:
    """What a renderer (GitHub's is CommonMark) makes of the file: an unclosed fence runs to
    the end of the document and turns the prose after it into code."""
    lines = path.read_text().splitlines()
    for token in MarkdownIt("commonmark").parse(path.read_text()):
        if token.type == "fence" and token.map is not None:
            start, end = token.map
            closing = lines[end - 1].strip() if end - 1 > start else ""
            assert closing.startswith("```"), f"{path.name}:{start + 1}: this fence never closes"
