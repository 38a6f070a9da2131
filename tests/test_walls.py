"""The walls of docs/design.md, checked by scanning every import of lib/adrank and jobs/.

- jobs/ import the frame and ``adrank.<package>.run`` only; the library never imports jobs/;
- a job's package is reached from another package only through its ``run``, its
  ``store`` (the tables it owns) or the model registry (``adrank.train.registry``);
- the Spark side (everything outside ``adrank.train``) imports no TensorFlow or Horovod
  at module level;
- ``adrank.train.ranks`` never imports pyspark (at any level), and every module it imports
  at module level is itself free of pyspark at module level;
- the models know nothing of files, config or Spark.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LIB = ROOT / "lib"
# The layers, lowest first: a module imports only from its own layer and those below it.
LAYERS = (("core",), ("storage",), ("runtime",), ("context",),
          ("sample", "tables", "train", "embed", "recommend", "report"), ("orchestration",))
FRAME_PACKAGES = ("core", "storage", "runtime", "context", "orchestration")
PACKAGES = LAYERS[4]
ENTRY_POINTS = ("run", "store")
SHARED = {"adrank.train.registry"}
HEAVY = ("tensorflow", "horovod", "petastorm")


def module_name(path: Path) -> str:
    parts = path.relative_to(LIB).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


LIBRARY = sorted((LIB / "adrank").rglob("*.py"))
MODULES = {module_name(p) for p in LIBRARY}


def imports(path: Path) -> list[tuple[str, bool]]:
    """``(imported module, at module level)`` for every import of a file (relative ones resolved)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    top = {id(node) for node in tree.body}
    top |= {id(n) for node in tree.body if isinstance(node, ast.If) for n in ast.walk(node)}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(alias.name, id(node) in top) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            for alias in node.names:  # a submodule imported by name counts as that module
                submodule = f"{node.module}.{alias.name}"
                found.append((submodule if submodule in MODULES else node.module, id(node) in top))
    return [(name, level) for name, level in found if not _type_checking_only(tree, name)]


def _type_checking_only(tree: ast.Module, name: str) -> bool:
    for node in tree.body:
        if isinstance(node, ast.If) and ast.unparse(node.test) in ("TYPE_CHECKING", "typing.TYPE_CHECKING"):
            for inner in ast.walk(node):
                if isinstance(inner, ast.ImportFrom) and inner.module and name.startswith(inner.module):
                    return True
    return False


def adrank_modules(path: Path, module_level_only: bool = False) -> set[str]:
    """The adrank modules a file imports (``from adrank.x import name`` counts ``adrank.x``)."""
    return {name for name, top in imports(path)
            if name in MODULES and (top or not module_level_only)}


def package_of(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) >= 2 and parts[1] in PACKAGES else None


def test_the_scan_finds_the_library():
    assert {"adrank.tables.run", "adrank.train.ranks.loop", "adrank.embed.run", "adrank.core.layout"} <= MODULES
    assert "adrank.core.layout" in adrank_modules(LIB / "adrank" / "tables" / "run.py")


@pytest.mark.parametrize("job", sorted((ROOT / "jobs").glob("*.py")), ids=lambda p: p.name)
def test_jobs_import_only_the_frame_and_a_run_module(job):
    frame = {m for m in MODULES if m == "adrank" or m.split(".")[1] in FRAME_PACKAGES}
    allowed = frame | {f"adrank.{pkg}.run" for pkg in PACKAGES} | {f"adrank.{pkg}" for pkg in PACKAGES}
    assert adrank_modules(job) <= allowed, f"{job.name} reaches past the frame and run modules"


def layer_of(module: str) -> int | None:
    """The index in LAYERS of a module's package (None: ``adrank`` itself and ``adrank.testing``)."""
    parts = module.split(".")
    return next((i for i, layer in enumerate(LAYERS) if len(parts) >= 2 and parts[1] in layer), None)


def test_every_module_sits_in_a_layer_but_the_package_root_and_the_pytest_plugin():
    assert {m for m in MODULES if layer_of(m) is None} == {"adrank", "adrank.testing"}


@pytest.mark.parametrize("path", LIBRARY, ids=module_name)
def test_a_module_imports_nothing_from_a_higher_layer(path):
    here = layer_of(module_name(path))
    if here is None:
        return
    higher = {m for m in adrank_modules(path) if (layer_of(m) or 0) > here}
    assert higher == set(), f"{module_name(path)} (layer {LAYERS[here]}) imports from a higher layer"


def test_the_library_never_imports_jobs():
    offenders = [p.name for p in LIBRARY if any(name.startswith("jobs") for name, _ in imports(p))]
    assert offenders == []


@pytest.mark.parametrize("path", LIBRARY, ids=module_name)
def test_a_package_is_reached_from_outside_only_through_run_store_or_the_registry(path):
    here = package_of(module_name(path))
    entry = {f"adrank.{pkg}.{name}" for pkg in PACKAGES for name in ENTRY_POINTS} | SHARED
    crossing = {m for m in adrank_modules(path) if package_of(m) not in (None, here) and m not in entry}
    assert crossing == set(), f"{module_name(path)} reaches into another job's package"


@pytest.mark.parametrize("path", [p for p in LIBRARY if package_of(module_name(p)) != "train"], ids=module_name)
def test_the_spark_side_imports_no_tensorflow_at_module_level(path):
    heavy = {name for name, top in imports(path) if top and name.split(".")[0] in HEAVY}
    assert heavy == set()


def _module_level_closure(module: str) -> set[str]:
    seen, todo = set(), [module]
    while todo:
        current = todo.pop()
        if current in seen:
            continue
        seen.add(current)
        path = LIB / (current.replace(".", "/") + ".py")
        if not path.exists():
            path = LIB / current.replace(".", "/") / "__init__.py"
        todo += sorted(adrank_modules(path, module_level_only=True))
    return seen


RANKS = [p for p in LIBRARY if module_name(p).startswith("adrank.train.ranks")]


@pytest.mark.parametrize("path", RANKS, ids=module_name)
def test_the_rank_side_never_imports_pyspark(path):
    assert not any(name.split(".")[0] == "pyspark" for name, _ in imports(path))
    for module in _module_level_closure(module_name(path)):
        file = LIB / (module.replace(".", "/") + ".py")
        if not file.exists():
            file = LIB / module.replace(".", "/") / "__init__.py"
        spark = {name for name, top in imports(file) if top and name.split(".")[0] == "pyspark"}
        assert spark == set(), f"{module_name(path)} imports {module}, which imports pyspark"


def test_the_models_know_nothing_of_files_config_or_spark():
    models = LIB / "adrank" / "train" / "ranks" / "models.py"
    names = {name.split(".")[0] if not name.startswith("adrank") else name for name, _ in imports(models)}
    assert not names & {"os", "pathlib", "shutil", "pyspark", "adrank.core.config", "adrank.core.layout", "adrank.storage.delta"}


# --------------------------------------------------------------------------------
# No import cycle; the rank side imports nothing of the train driver
# --------------------------------------------------------------------------------


def _is_type_checking_block(node: ast.AST) -> bool:
    return isinstance(node, ast.If) and ast.unparse(node.test) in ("TYPE_CHECKING", "typing.TYPE_CHECKING")


def _absolute(module: str | None, level: int, importer: str, is_package: bool) -> str:
    """The absolute name of ``from <level dots><module> import ...`` in module ``importer``."""
    if not level:
        return module or ""
    base = importer.split(".")[: len(importer.split(".")) - level + (1 if is_package else 0)]
    return ".".join([*base, module] if module else base)


def runtime_imports(path: Path, include_type_checking: bool = False) -> set[str]:
    """The adrank modules a file imports when it runs: module level and inside functions alike.

    Imports under ``if TYPE_CHECKING:`` are left out unless ``include_type_checking``;
    ``from adrank.x import y`` counts ``adrank.x.y`` when that is a module, else ``adrank.x``.
    """
    importer = module_name(path)
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if _is_type_checking_block(node) and not include_type_checking:
            for child in node.orelse:  # type: ignore[attr-defined]
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            module = _absolute(node.module, node.level, importer, path.name == "__init__.py")
            for alias in node.names:
                submodule = f"{module}.{alias.name}"
                found.add(submodule if submodule in MODULES else module)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(path.read_text(encoding="utf-8")))
    return {name for name in found if name in MODULES and name != importer}


def import_graph() -> dict[str, set[str]]:
    """Module -> the adrank modules it imports at run time (every level, TYPE_CHECKING excluded)."""
    return {module_name(path): runtime_imports(path) for path in LIBRARY}


def find_cycle(graph: dict[str, set[str]]) -> list[str]:
    """One import cycle as ``[a, b, ..., a]``, or ``[]`` when the graph has none."""
    done: set[str] = set()
    path: list[str] = []
    on_path: set[str] = set()

    def walk(module: str) -> list[str]:
        path.append(module)
        on_path.add(module)
        for imported in sorted(graph.get(module, ())):
            if imported in on_path:
                return [*path[path.index(imported):], imported]
            if imported not in done:
                cycle = walk(imported)
                if cycle:
                    return cycle
        path.pop()
        on_path.discard(module)
        done.add(module)
        return []

    for module in sorted(graph):
        if module not in done:
            cycle = walk(module)
            if cycle:
                return cycle
    return []


def test_the_cycle_finder_names_a_cycle_and_passes_a_tree():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) == []


def test_the_scan_sees_lazy_imports_and_leaves_out_type_checking_ones():
    graph = import_graph()
    assert "adrank.train.run" in graph["adrank.orchestration.bodies"]  # imported inside a function
    assert "adrank.train.pinned" not in graph["adrank.train.launch"]  # under TYPE_CHECKING only


def test_no_module_of_the_library_is_part_of_an_import_cycle():
    cycle = find_cycle(import_graph())
    assert cycle == [], "import cycle: " + " -> ".join(cycle)


def test_train_has_no_import_cycle_even_counting_type_only_imports():
    train = {module_name(path): {name for name in runtime_imports(path, include_type_checking=True)
                                 if name.startswith("adrank.train")}
             for path in LIBRARY if module_name(path).startswith("adrank.train")}
    cycle = find_cycle(train)
    assert cycle == [], "import cycle (type-only imports counted): " + " -> ".join(cycle)


@pytest.mark.parametrize("path", RANKS, ids=module_name)
def test_the_rank_side_imports_nothing_of_the_train_driver(path):
    driver = {name for name in runtime_imports(path, include_type_checking=True)
              if name.startswith("adrank.train.") and not name.startswith("adrank.train.ranks")}
    assert driver == set(), f"{module_name(path)} (inside a rank) imports the driver side: {sorted(driver)}"


@pytest.mark.parametrize("name", ["models", "joint_model", "serving"])
def test_every_model_module_knows_nothing_of_files_config_or_spark(name):
    path = LIB / "adrank" / "train" / "ranks" / f"{name}.py"
    names = {name.split(".")[0] if not name.startswith("adrank") else name for name, _ in imports(path)}
    assert not names & {"os", "pathlib", "shutil", "pyspark", "adrank.core.config", "adrank.core.layout", "adrank.storage.delta"}
