"""Dependency direction: data flows ledger -> features -> risk -> decisions, and a module never
imports from a package downstream of it (docs/architecture.md, "Dependency rules")."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).parents[1] / "pipelines"

# Rank of each part of the package: a module may import its own part and what ranks no higher.
RANKS = {
    # Foundations every part may use.
    "settings": 0,
    "india_time": 0,
    "faults": 0,
    "privacy": 1,
    # The data flow: the ledger (and the warehouse that holds it), features, risk, decisions.
    "ledger": 2,
    "warehouse": 2,
    "quality": 3,
    "features": 3,
    "risk": 4,
    "decisions": 5,
    # Consumers of the flow.
    "review": 6,
    "sandbox": 6,
    "adoption": 6,
    "serving": 6,
    "analyst": 7,
    # The wiring: Dagster definitions, the runner and the command line.
    "defs": 8,
    "definitions": 9,
    "runs": 10,
    "cli": 11,
}


def _part(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if parts[0] == "pipelines" and len(parts) > 1 else None


def _imports(path: Path) -> list[tuple[int, str]]:
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module))
        elif isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
    return found


def test_every_part_of_the_package_has_a_rank():
    parts = {p.stem for p in PACKAGE.iterdir() if p.suffix == ".py" or p.is_dir()}
    parts -= {"__init__", "__pycache__"}
    assert parts == set(RANKS)


def test_no_module_imports_from_downstream():
    wrong = []
    for path in sorted(PACKAGE.rglob("*.py")):
        own = _part("pipelines." + ".".join(path.relative_to(PACKAGE).with_suffix("").parts))
        for line, module in _imports(path):
            target = _part(module)
            if target is None or target == own or own is None:
                continue
            if RANKS[target] > RANKS[own]:
                wrong.append(f"{path.relative_to(PACKAGE.parent)}:{line} imports {module}")
    assert wrong == []


def test_the_rule_catches_an_upstream_import(tmp_path):
    # The scan reads imports inside functions too (the heavy ones are imported late).
    module = tmp_path / "m.py"
    module.write_text("def f():\n    from pipelines.decisions.record import DECISIONS\n")
    assert _imports(module) == [(2, "pipelines.decisions.record")]
    assert RANKS["decisions"] > RANKS["risk"]


def test_only_the_wiring_imports_dagster():
    """Plain modules do the work; Dagster assets are thin wrappers around them (STYLE.md)."""
    wiring = {part for part, rank in RANKS.items() if rank >= RANKS["defs"]}
    importers = {
        str(path.relative_to(PACKAGE.parent))
        for path in PACKAGE.rglob("*.py")
        if any(m.split(".")[0] == "dagster" for _, m in _imports(path))
        and _part("pipelines." + path.relative_to(PACKAGE).parts[0].removesuffix(".py"))
        not in wiring
    }
    assert importers == set()


# The one exception, documented in runs.py and docs/architecture.md: Dagster has no public API
# to execute a run in process with a code-location origin (dagster-io/dagster#17707).
PRIVATE_API_ALLOWED = {("pipelines/runs.py", "dagster._core")}


def _private(name: str) -> bool:
    return name.startswith("_") and not name.endswith("__")


def _private_uses(path: Path, root: Path = PACKAGE) -> list[str]:
    """Imports of another library's private modules or names, and `module._name` on a module
    imported from another library (e.g. `np._set_madvise_hugepage`)."""
    tree = ast.parse(path.read_text())
    external: dict[str, str] = {}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] != "pipelines":
                    external[alias.asname or alias.name.split(".")[0]] = alias.name
                    if any(_private(p) for p in alias.name.split(".")):
                        found.append((node.lineno, alias.name))
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module.split(".")[0] == "pipelines":
                continue
            private_module = any(_private(p) for p in node.module.split("."))
            names = [a.name for a in node.names if _private(a.name)]
            if private_module or names:
                found.append((node.lineno, node.module))
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Attribute)
            and _private(node.attr)
            and isinstance(node.value, ast.Name)
            and node.value.id in external
        ):
            found.append((node.lineno, f"{external[node.value.id]}.{node.attr}"))
    relative = str(path.relative_to(root.parent))
    return [
        f"{relative}:{line} {what}"
        for line, what in found
        if not any(relative == f and what.startswith(p) for f, p in PRIVATE_API_ALLOWED)
    ]


def test_product_code_uses_no_private_api_of_other_libraries(tmp_path):
    assert [use for path in sorted(PACKAGE.rglob("*.py")) for use in _private_uses(path)] == []
    # The scan finds what it looks for.
    sample = tmp_path / "pipelines" / "m.py"
    sample.parent.mkdir()
    sample.write_text(
        "import numpy as np\nfrom dagster._core.x import y\nnp._set_madvise_hugepage(False)\n"
    )
    assert _private_uses(sample, tmp_path / "pipelines") == [
        "pipelines/m.py:2 dagster._core.x",
        "pipelines/m.py:3 numpy._set_madvise_hugepage",
    ]
