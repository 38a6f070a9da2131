"""The documentation lives in the repository, and what it cites is there too.

- the README is a newcomer's guide of at most :data:`README_MAX_LINES` lines;
- ``docs/design.md`` exists and holds the five parts of the design (:data:`DESIGN_PARTS`);
- no text file of the repository cites a path outside it: no ``../`` path that leaves the
  repository (or names nothing in it) from the citing file's folder, no absolute path
  under the machine's work folder (a reader who clones the repository has neither);
- every relative link of the README and of ``docs/*.md`` reaches a file of the repository
  (and its ``#anchor`` a heading of that page), and every repository path or ``adrank``
  module the pages name in backticks exists.

Python files are read for their comments and docstrings only: their string literals are
data (a test may well build a path outside a temporary folder on purpose).
"""

from __future__ import annotations

import ast
import io
import re
import subprocess
import tokenize
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = ROOT / "docs"
DESIGN = DOCS / "design.md"
LIB = ROOT / "lib" / "adrank"
README_MAX_LINES = 250
DESIGN_PARTS = ("The data flow", "The stack", "Input contracts", "The house and its walls", "Conventions")
# Folders a checkout holds that are not the repository's own files (see .gitignore).
NOT_OURS = {".git", ".venv", ".cache", "data", "__pycache__", "build", "dist", ".pytest_cache",
            "spark-warehouse", "metastore_db", ".mypy_cache", ".ruff_cache"}

# A path that climbs from the citing file's folder (dot-dot-slash first); not an ellipsis, not a/b/dot-dot.
UP_PATH = re.compile(r"(?<![\w./-])((?:\.\./)+[\w.\-/]*)")
WORK_PATH = re.compile(r"(?<![\w.])" + "/" + r"work/")  # built in two parts so this file does not cite it
MARKDOWN_LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
REPO_PATH = re.compile(r"`((?:lib|jobs|conf|tests|bench|scripts|docs)/[\w.\-/]*)`")
MODULE_NAME = re.compile(r"`(adrank(?:\.\w+)+)`")


def repository_files() -> list[Path]:
    """The repository's files: git's tracked and not-ignored ones, else a walk of the tree."""
    try:
        listed = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
                                cwd=ROOT, capture_output=True, check=True, text=True).stdout
        return sorted({ROOT / name for name in listed.split("\0") if name and (ROOT / name).is_file()})
    except (OSError, subprocess.CalledProcessError):
        return sorted(p for p in ROOT.rglob("*")
                      if p.is_file() and not NOT_OURS & set(p.relative_to(ROOT).parts)
                      and not any(part.endswith(".egg-info") for part in p.relative_to(ROOT).parts))


def text_of(path: Path) -> str | None:
    """The file's text, or None for a binary file."""
    data = path.read_bytes()
    if b"\0" in data:
        return None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return None


def prose_of_python(text: str) -> str:
    """A Python file's comments and docstrings, one per line: what a person reads as prose."""
    parts = [tok.string for tok in tokenize.generate_tokens(io.StringIO(text).readline)
             if tok.type == tokenize.COMMENT]
    tree = ast.parse(text)
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            parts.append(ast.get_docstring(node, clean=False) or "")
    return "\n".join(parts)


def cited_text(path: Path) -> str | None:
    text = text_of(path)
    if text is None or path.suffix != ".py":
        return text
    return prose_of_python(text)


TEXT_FILES = [p for p in repository_files() if text_of(p) is not None]
PAGES = [README, *sorted(DOCS.glob("*.md"))]


def inside_repository(path: Path) -> bool:
    return path.resolve().is_relative_to(ROOT)


def test_the_readme_is_a_short_guide():
    lines = README.read_text(encoding="utf-8").splitlines()
    assert len(lines) <= README_MAX_LINES, f"README.md has {len(lines)} lines, at most {README_MAX_LINES}"


def headings(page: Path) -> list[str]:
    return [line.lstrip("#").strip() for line in page.read_text(encoding="utf-8").splitlines()
            if line.startswith("#")]


def test_the_design_is_in_the_repository_with_its_five_parts():
    assert DESIGN.is_file()
    titles = headings(DESIGN)
    missing = [part for part in DESIGN_PARTS if not any(title.startswith(part) for title in titles)]
    assert missing == [], f"docs/design.md lacks {missing}"


def test_the_scan_reads_prose_and_sees_the_pages():
    assert README in TEXT_FILES and DESIGN in TEXT_FILES and ROOT / "constraints.txt" in TEXT_FILES
    prose = prose_of_python('"""Doc ../a."""\nx = "../data"  # see ../b\n')
    assert sorted(UP_PATH.findall(prose)) == ["../a.", "../b"]
    assert UP_PATH.findall("`jobs/x.py --conf-file .../conf/cluster.yaml` a/../b") == []


@pytest.mark.parametrize("path", TEXT_FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_file_cites_a_path_outside_the_repository(path):
    text = cited_text(path) or ""
    outside = []
    for cited in UP_PATH.findall(text):
        target = (path.parent / cited.rstrip(".")).resolve()
        if not inside_repository(target) or not target.exists():
            outside.append(cited)
    outside += [match.group(0) + "..." for match in WORK_PATH.finditer(text_of(path) or "")]
    assert outside == [], f"{path.relative_to(ROOT)} cites paths a clone does not have"


def slug(title: str) -> str:
    """The anchor of a Markdown heading, as GitHub makes it."""
    kept = re.sub(r"[^\w\- ]", "", title.strip().lower())
    return kept.replace(" ", "-")


def links(page: Path) -> Iterator[str]:
    text = re.sub(r"```.*?```", "", page.read_text(encoding="utf-8"), flags=re.S)  # code blocks hold no links
    yield from MARKDOWN_LINK.findall(text)


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_of_the_pages_reaches_a_file_of_the_repository(page):
    broken = []
    for link in links(page):
        if re.match(r"[a-z]+:", link):  # http:, https:, mailto:
            continue
        target, _, anchor = link.partition("#")
        file = (page.parent / target).resolve() if target else page
        if not inside_repository(file) or not file.exists():
            broken.append(link)
        elif anchor and file.suffix == ".md" and anchor not in {slug(t) for t in headings(file)}:
            broken.append(link)
    assert broken == [], f"{page.relative_to(ROOT)} links to what the repository lacks"


def module_defines(module: str, name: str) -> bool:
    """Whether an adrank module (a file or a package) exists and, given a name, mentions it."""
    path = ROOT / "lib" / Path(*module.split("."))
    source = path.with_suffix(".py") if path.with_suffix(".py").is_file() else path / "__init__.py"
    if not source.is_file():
        return False
    return not name or re.search(rf"\b{re.escape(name)}\b", source.read_text(encoding="utf-8")) is not None


def names_a_module(dotted: str) -> bool:
    """``adrank.a.b.c``: its longest module prefix exists and defines the next name, if any."""
    parts = dotted.split(".")
    for cut in range(len(parts), 1, -1):
        if module_defines(".".join(parts[:cut]), ""):
            return cut == len(parts) or module_defines(".".join(parts[:cut]), parts[cut])
    return False


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_the_paths_and_modules_the_pages_name_exist(page):
    text = page.read_text(encoding="utf-8")
    missing = [p for p in REPO_PATH.findall(text) if not (ROOT / p).exists()]
    top_level = {p.stem for p in LIB.iterdir() if p.suffix == ".py" or (p / "__init__.py").is_file()}
    missing += [m for m in MODULE_NAME.findall(text) if m.split(".")[1] in top_level and not names_a_module(m)]
    assert missing == [], f"{page.relative_to(ROOT)} names what the repository lacks"
