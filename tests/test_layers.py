"""The package's layers: imports point down only (DESIGN: report -> diagnostics /
inference -> estimators -> results -> data -> study -> errors / paths)."""

from __future__ import annotations

import ast

from evaluation.paths import PACKAGE_DIR

# Rank of each part; a module may import parts of lower rank and its own sub-package.
RANKS = {
    "errors": 0, "paths": 0,
    "study": 1,
    "data": 2,
    "results": 3,
    "estimators": 4,
    "inference": 5, "diagnostics": 5,
    "report": 6,
    "cli": 7, "__main__": 8,
}


def _part(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _imports(path):
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("evaluation"):
            if node.module == "evaluation":
                yield from (f"evaluation.{a.name}" for a in node.names)
            else:
                yield node.module
        elif isinstance(node, ast.Import):
            yield from (a.name for a in node.names if a.name.startswith("evaluation."))


def test_every_module_belongs_to_a_layer():
    parts = {p.stem if p.is_file() else p.name for p in PACKAGE_DIR.iterdir()
             if (p.suffix == ".py" or (p.is_dir() and (p / "__init__.py").is_file()))}
    assert parts - {"__init__"} <= set(RANKS), f"place {parts - set(RANKS) - {'__init__'}} in RANKS"


def test_imports_point_down():
    upward = []
    for path in sorted(PACKAGE_DIR.rglob("*.py")):
        rel = path.relative_to(PACKAGE_DIR.parent).with_suffix("")
        module = ".".join(rel.parts)
        mine = _part(module)
        if mine == "__init__":
            continue
        for target in _imports(path):
            theirs = _part(target)
            if theirs != mine and RANKS.get(theirs, -1) >= RANKS[mine]:
                upward.append(f"{module} imports {target}")
    assert not upward, "imports that point up a layer:\n" + "\n".join(upward)


def test_the_layer_test_sees_an_upward_import(tmp_path):
    """The check above would catch an estimator importing the report layer."""
    fake = tmp_path / "x.py"
    fake.write_text("from evaluation.report.batch import run_batch\n", encoding="utf-8")
    assert list(_imports(fake)) == ["evaluation.report.batch"]
    assert RANKS[_part("evaluation.report.batch")] > RANKS["estimators"]
