"""Project hygiene: dependency lists in sync, lint clean, the command line runs as a module."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib

import yaml

from evaluation.paths import PROJECT_ROOT


def _normalise(requirement: str) -> tuple[str, str]:
    name, spec = re.match(r"^\s*([A-Za-z0-9_.\-]+)\s*(.*)$", requirement).groups()
    return re.sub(r"[-_.]+", "-", name).lower(), spec.replace(" ", "")


def test_environment_yml_mirrors_pyproject():
    project = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    wanted = dict(_normalise(r) for r in project["dependencies"] + project["optional-dependencies"]["test"])
    env = yaml.safe_load((PROJECT_ROOT / "environment.yml").read_text(encoding="utf-8"))
    listed = {}
    for dep in env["dependencies"]:
        entries = dep["pip"] if isinstance(dep, dict) else [dep]
        for entry in entries:
            if entry.startswith("-e") or entry == "pip":
                continue
            name, spec = _normalise(entry)
            if name == "python":  # the interpreter, not a package
                continue
            listed[name] = spec
    assert listed == wanted


def test_lint_clean():
    result = subprocess.run([sys.executable, "-m", "ruff", "check", "evaluation", "tests", "notebooks"],
                            cwd=PROJECT_ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_python_dash_m_evaluation(tmp_path):
    ok = subprocess.run([sys.executable, "-m", "evaluation", "validate", "studies/demo.yml"],
                        cwd=PROJECT_ROOT, capture_output=True, text=True)
    assert ok.returncode == 0 and ok.stdout.rstrip().endswith("valid"), ok.stderr
    bad = subprocess.run([sys.executable, "-m", "evaluation", "validate", str(tmp_path / "absent.yml")],
                         cwd=PROJECT_ROOT, capture_output=True, text=True)
    assert bad.returncode == 2 and "study file not found" in bad.stderr
