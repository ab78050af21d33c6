"""The documentation a clone carries: README is the front door and every page it links to exists."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"\]\(([^)\s]+)\)")


def _anchors(page: Path) -> set[str]:
    """GitHub's heading anchors: lower-cased, punctuation dropped, spaces as hyphens."""
    headings = re.findall(r"^#+ (.+)$", re.sub(r"```.*?```", "", page.read_text(), flags=re.S), re.M)
    return {re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-") for heading in headings}


def test_every_relative_link_in_the_docs_resolves_inside_the_project() -> None:
    broken = []
    for page in PAGES:
        for target in LINK.findall(page.read_text()):
            if re.match(r"[a-z]+:", target):
                continue
            path, _, anchor = target.partition("#")
            resolved = (page.parent / path).resolve() if path else page
            inside = resolved.is_relative_to(ROOT)
            if not inside or not resolved.exists() or (anchor and anchor not in _anchors(resolved)):
                broken.append(f"{page.relative_to(ROOT)}: {target}")
    assert not broken, broken


def test_readme_links_every_docs_page() -> None:
    readme = (ROOT / "README.md").read_text()
    missing = [page.name for page in PAGES[1:] if f"docs/{page.name}" not in readme]
    assert not missing, f"README does not link: {missing}"


def _section_names(page: Path) -> list[str]:
    """A page's headings, lower-cased and cut at a colon ("Echoes and races: how …" → "echoes and races")."""
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)
    return [heading.split(":")[0].strip().lower() for heading in re.findall(r"^#+ (.+)$", text, re.M)]


def test_code_cites_sections_that_exist_in_the_docs() -> None:
    """Code and tests cite the docs as "behaviour: <section>" and "architecture: <section>"."""
    sections = {name: _section_names(ROOT / "docs" / f"{name}.md") for name in ("behaviour", "architecture")}
    cited, unknown = 0, []
    for path in sorted(ROOT.glob("*.py")) + sorted(ROOT.glob("[!.]*/**/*.py")):
        if ".venv" in path.parts or "node_modules" in path.parts or path == Path(__file__).resolve():
            continue
        for page, cite in re.findall(r"\b(behaviour|architecture): ([^)\n;\"]+)", path.read_text()):
            cited += 1
            if not any(cite.lower().startswith(section) for section in sections[page]):
                unknown.append(f"{path.relative_to(ROOT)}: {page}: {cite}")
    assert cited >= 20 and not unknown, unknown


def test_files_the_docs_name_by_path_exist() -> None:
    named = re.compile(r"`([\w.\-]+(?:/[\w.\-]+)+\.(?:py|md|json|bicep|bicepparam|yaml|txt|toml))`")
    missing = [f"{page.relative_to(ROOT)}: {path}" for page in PAGES for path in named.findall(page.read_text())
               if not (ROOT / path).exists()]
    assert not missing, missing
