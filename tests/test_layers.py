"""The package's layers: a module imports only from its own layer or the ones below it, at the top of
the file (an import inside a function to dodge a cycle would hide a layer broken the other way)."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "autocompress"

#: lowest first; a module's layer is the first whose prefixes match its dotted name
LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("settings", ("errors", "schema", "store.urls", "store.locks", "store.optuna_internals")),
    ("models and tasks", ("models", "tasks")),
    ("operators", ("ops", "train", "latency")),
    ("storage", ("store",)),
    ("search", ("search",)),
    ("study", ("study",)),
    ("views", ("report", "export")),
    ("entry", ("api", "cli", "__init__")),
)
#: may import lazily inside functions: the command line and the package root keep start-up cheap
LAZY_OK = {"cli", "__init__"}


def _name(path: Path) -> str:
    rel = path.relative_to(PACKAGE).with_suffix("")
    parts = rel.parts[:-1] if rel.name == "__init__" and len(rel.parts) > 1 else rel.parts
    return ".".join(parts)


def _layer(name: str) -> int:
    for i, (_, prefixes) in enumerate(LAYERS):
        if any(name == p or name.startswith(p + ".") for p in prefixes):
            return i
    raise AssertionError(f"autocompress.{name} is in no layer of tests/test_layers.py: add it")


def _imports(tree: ast.Module) -> list[tuple[str, bool]]:
    """(imported autocompress module, imported at module level)."""
    top = {id(node) for node in tree.body}
    found = []
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("autocompress"):
            base = node.module.removeprefix("autocompress").lstrip(".")
            names = [base] if base else [a.name for a in node.names]  # "from autocompress import record, build"
        elif isinstance(node, ast.Import):
            names = [a.name.removeprefix("autocompress.") for a in node.names if a.name.startswith("autocompress.")]
        found += [(n, id(node) in top) for n in names]
    return found


def test_every_module_imports_only_its_own_layer_or_lower_ones():
    wrong = []
    for path in sorted(PACKAGE.rglob("*.py")):
        name = _name(path)
        if name == "":
            continue
        tree = ast.parse(path.read_text())
        for imported, at_top in _imports(tree):
            if imported == "":
                continue
            if _layer(imported) > _layer(name):
                wrong.append(f"{name} ({LAYERS[_layer(name)][0]}) imports {imported} ({LAYERS[_layer(imported)][0]})")
            if not at_top and name.split(".")[0] not in LAZY_OK:
                wrong.append(f"{name} imports {imported} inside a function")
    assert not wrong, "\n".join(wrong)


def test_the_layer_check_sees_a_wrong_import():
    tree = ast.parse("from autocompress.report import collect\n\ndef f():\n    from autocompress import study\n")
    assert _imports(tree) == [("report", True), ("study", False)]
    assert _layer("store.record") < _layer("report.collect") and _layer("study.runner") < _layer("export.ship")
    assert _layer("schema.plan") < _layer("models.adapters") < _layer("ops") < _layer("search.objective")


def test_every_folder_says_its_one_job_and_sits_in_a_layer():
    """A newcomer opens the folder names and reads the architecture: each folder's docstring says
    what it is for, and every folder has its place in the order above."""
    missing, unplaced = [], []
    for init in sorted(PACKAGE.rglob("__init__.py")):
        folder = _name(init)
        if folder in ("", "__init__"):
            continue
        doc = ast.get_docstring(ast.parse(init.read_text()))
        if not doc or len(doc.split()) < 6:
            missing.append(folder)
        try:
            _layer(folder)
        except AssertionError:
            unplaced.append(folder)
    assert not missing, f"folders without a docstring that says their job: {missing}"
    assert not unplaced, f"folders in no layer: {unplaced}"
    top_modules = sorted(p.stem for p in PACKAGE.glob("*.py") if p.stem != "__init__")
    assert top_modules == ["api", "cli", "errors"] or top_modules == ["cli", "errors"], (
        f"modules at the top of the package belong in a folder: {top_modules}")
