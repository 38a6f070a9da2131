"""House rules of the code, checked by scanning lib/adrank, jobs/, tests/ and bench/ with ``ast``.

Private names stay private: no module imports another module's ``_name``
(``from adrank.x import _y``, at module level or inside a function), and no file reaches one
through a module it imported (``import adrank.x as m; m._y``). Tests use public functions.
A name another module needs is made public (renamed, without the underscore).
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCANNED = ("lib/adrank", "jobs", "tests", "bench")
# Top-level names under which this repository's own modules are imported: the library, and
# the helper modules of tests/ and bench/ (imported by file name: ``from tables import ...``).
OWN_PACKAGES = frozenset({"adrank", "jobs", "tests", "bench"})
HELPER_MODULES = frozenset(p.stem for folder in ("tests", "bench") for p in (ROOT / folder).glob("*.py"))


@dataclass(frozen=True)
class PrivateUse:
    """One use of another module's private name: where, and the full dotted name."""

    file: str
    line: int
    name: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line} uses {self.name}"


def scanned_files() -> list[Path]:
    return sorted(p for folder in SCANNED for p in (ROOT / folder).rglob("*.py"))


def is_private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def is_own_module(module: str) -> bool:
    """Whether ``module`` (absolute, dotted) is one of this repository's modules."""
    first = module.split(".")[0]
    return first in OWN_PACKAGES or first in HELPER_MODULES


def absolute_module(node: ast.ImportFrom, path: Path) -> str:
    """The dotted module of a ``from ... import``, a relative one resolved against ``path``."""
    if not node.level:
        return node.module or ""
    package = path.relative_to(ROOT / "lib").parent.parts if path.is_relative_to(ROOT / "lib") else path.parent.parts
    base = list(package[: len(package) - (node.level - 1)])
    return ".".join(base + ([node.module] if node.module else []))


def is_module(dotted: str) -> bool:
    """Whether ``dotted`` names a module or package of lib/ (``adrank.embed.export``)."""
    base = ROOT / "lib" / dotted.replace(".", "/")
    return base.with_suffix(".py").is_file() or (base / "__init__.py").is_file()


def private_uses(path: Path) -> list[PrivateUse]:
    """Every ``from <own module> import _name`` in a file, and every ``<own module alias>._name``."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    file = path.relative_to(ROOT).as_posix() if path.is_relative_to(ROOT) else path.name
    modules: dict[str, str] = {}  # a local name bound to an own module -> its dotted name
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            module = absolute_module(node, path)
            if not is_own_module(module):
                continue
            for alias in node.names:
                if is_private(alias.name):
                    found.append(PrivateUse(file, node.lineno, f"{module}.{alias.name}"))
                elif is_module(f"{module}.{alias.name}"):
                    modules[alias.asname or alias.name] = f"{module}.{alias.name}"
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if is_own_module(alias.name) and alias.asname:
                    modules[alias.asname] = alias.name
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and is_private(node.attr):
            owner = ast.unparse(node.value)
            dotted = modules.get(owner, owner if is_own_module(owner) and is_module(owner) else None)
            if dotted is not None:
                found.append(PrivateUse(file, node.lineno, f"{dotted}.{node.attr}"))
    return found


def test_the_scan_finds_private_imports_and_private_attributes(tmp_path):
    sample = tmp_path / "sample.py"
    sample.write_text("import adrank.tables.hashing as hashing\n"
                      "from adrank.embed import export\n"
                      "from adrank.runtime.spark import build_spark\n"
                      "from tables import _helper\n"
                      "def f():\n"
                      "    from adrank.core.config.yaml_values import _build\n"
                      "    return export._examples, _build, build_spark, hashing._x, _helper\n")
    assert sorted(use.name for use in private_uses(sample)) == [
        "adrank.core.config.yaml_values._build", "adrank.embed.export._examples", "adrank.tables.hashing._x",
        "tables._helper"]


def test_no_module_uses_another_modules_private_names():
    uses = [use for path in scanned_files() for use in private_uses(path)]
    offenders = [str(use) for use in uses ]
    assert offenders == []


MAX_LINES = 450  # a module a newcomer reads in one sitting


@pytest.mark.parametrize("path", sorted((ROOT / "lib" / "adrank").rglob("*.py")), ids=lambda p: str(p.relative_to(ROOT)))
def test_no_module_of_the_library_is_over_the_line_limit(path):
    lines = len(path.read_text(encoding="utf-8").splitlines())
    assert lines <= MAX_LINES, f"{path.relative_to(ROOT)}: {lines} lines, split it by concern"
