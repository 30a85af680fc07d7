"""README.md and docs/*.md render as written: every code fence opens and closes on a line of
its own, so no fence swallows the prose after it."""

import re
from pathlib import Path

import pytest

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
