"""The docs hold together: a short README whose docs index reaches every page, and no relative link that leads
nowhere."""

import re
from pathlib import Path

from tests.conftest import ROOT

README = ROOT / "README.md"
DOCS = ROOT / "docs"
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^```.*?^```", re.S | re.M)


def _relative_links(page: Path) -> list[str]:
    """Targets of the page's Markdown links outside code blocks, without #anchors; web, mail and same-page links left out."""
    text = FENCE.sub("", page.read_text())
    targets = (m.group(1).split("#")[0] for m in LINK.finditer(text))
    return [t for t in targets if t and not re.match(r"^[a-z][a-z0-9+.-]*:", t)]


def _pages() -> list[Path]:
    return [README, *sorted(DOCS.rglob("*.md"))]


def test_readme_is_short():
    size = len(README.read_bytes())
    assert size <= 12_000, f"README.md is {size} bytes: move detail to docs/ (at most 12,000)"


def test_every_relative_link_resolves():
    broken = [f"{page.relative_to(ROOT)}: {target}" for page in _pages() for target in _relative_links(page)
              if not (page.parent / target).exists()]
    assert not broken, "links to nothing:\n" + "\n".join(broken)


def test_readme_indexes_every_docs_page():
    linked = {(ROOT / target).resolve() for target in _relative_links(README)}
    missing = [p.relative_to(ROOT).as_posix() for p in sorted(DOCS.glob("*.md")) if p.resolve() not in linked]
    assert not missing, f"not linked from the README's docs index: {missing}"
    assert (DOCS / "decisions" / "README.md").resolve() in linked, "the decision records' index is not linked"
