"""Every path the package uses comes from here (cookiecutter-data-science style).

The project root is the folder that holds ``pyproject.toml`` next to this package
(an editable install, as ``make`` sets up). Outputs go to ``<root>/outputs`` unless
``EVALUATION_OUTPUT_ROOT`` points elsewhere (tests use that to write into a temporary
folder). Raw data under ``data_raw/`` are read, never written, except by
``evaluation demo-data``, which regenerates the synthetic demo.
"""

from __future__ import annotations

import os
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent


def _find_project_root() -> Path:
    candidate = PACKAGE_DIR.parent
    if (candidate / "pyproject.toml").is_file():
        return candidate
    return Path.cwd()


PROJECT_ROOT = _find_project_root()
DATA_RAW = PROJECT_ROOT / "data_raw"
DEMO_DATA = DATA_RAW / "demo"
STUDIES = PROJECT_ROOT / "studies"
NOTEBOOKS = PROJECT_ROOT / "notebooks"
DEMO_STUDY = STUDIES / "demo.yml"
INDICATOR_CATALOGUE = PACKAGE_DIR / "study" / "indicators.yml"
SYNONYMS = PACKAGE_DIR / "data" / "synonyms.yml"  # headers -> data contract, for `evaluation init`


def output_root() -> Path:
    """Root of generated files: ``$EVALUATION_OUTPUT_ROOT`` or ``<project>/outputs``."""
    override = os.environ.get("EVALUATION_OUTPUT_ROOT")
    return Path(override).resolve() if override else PROJECT_ROOT / "outputs"


def study_output_dir(study_id: str) -> Path:
    """Folder of one study's generated files: ``outputs/<study_id>/``."""
    return output_root() / study_id


def resolve_study_path(path: str | Path) -> Path:
    """A study path as given, relative to the working folder, or to the project root."""
    p = Path(path)
    if p.is_absolute() or p.is_file():
        return p.resolve()
    return (PROJECT_ROOT / p).resolve()
