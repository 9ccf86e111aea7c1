"""The results store: each result computed once, written beside the report, read everywhere.

A result is one named section of a chapter for one indicator (``did.callaway_santanna``
for ``primary_care_visit_share``, say): its effects as a tidy table (every estimate with
its estimand, structured fields, interval, p-value, inference method and counts), the
other tables it shows, the data behind its figures, scalar values, and the settings that
made it. On disk, under ``outputs/<study>/results/`` (or the folder a batch passes)::

    <indicator or _study>/<section>/effects.csv      tidy effects (UTF-8, full precision)
                                    tables/<name>.csv other tables and figure data
                                    result.json       values, settings, key, creation time

``key`` is a SHA-256 of the section, the indicator, the resolved analysis plan, the run
mode (full or fast), the inputs' contents and the package's code: a result whose key
differs from the one a reader expects is stale and is never used. Each result is written
to a temporary folder and renamed into place, so a reader never sees half of one.
"""

from __future__ import annotations

import copy
import datetime as dt
import hashlib
import json
import math
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from evaluation.paths import PACKAGE_DIR
from evaluation.results import tidy

STUDY_LEVEL = "_study"


@dataclass
class Result:
    """One stored section: effects (tidy), named tables, scalar values, settings."""

    section: str
    indicator: str | None
    effects: pd.DataFrame
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)
    values: dict = field(default_factory=dict)
    settings: dict = field(default_factory=dict)
    key: str = ""

    @property
    def not_estimable(self) -> str | None:
        """Why the data could not support this section's method (``None`` when estimated)."""
        return self.values.get("not_estimable")

    def effect(self, estimand: str, **fields) -> pd.Series:
        """The one effect row with this estimand (and these column values)."""
        rows = self.effects[self.effects["estimand"] == estimand]
        for name, value in fields.items():
            rows = rows[rows[name] == value]
        if len(rows) != 1:
            raise KeyError(f"{self.section}: {len(rows)} effects '{estimand}' {fields or ''}; "
                           f"it has {sorted(self.effects['estimand'].unique())}")
        return rows.iloc[0]


def make_result(section: str, indicator: str | None, effects=(), tables: dict | None = None,
                values: dict | None = None) -> Result:
    """A result from effects (``Effect`` / ``Estimates`` objects or a tidy table)."""
    table = effects if isinstance(effects, pd.DataFrame) else tidy(list(effects))
    return Result(section=section, indicator=indicator, effects=table.reset_index(drop=True),
                  tables=dict(tables or {}), values=_plain(values or {}))


def _plain(value):
    """JSON-ready values: numpy scalars to Python, NaN to None."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def umask() -> int:
    """The process's file-creation mask (read without changing it)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


def replace_folder(new: Path, target: Path) -> None:
    """Put the folder ``new`` at ``target`` with one rename: the old folder is renamed away
    first and removed after, so a reader sees the old folder or the new one, never half."""
    old = None
    if target.exists():
        old = target.with_name(f".{target.name}-old-{os.getpid()}")
        os.replace(target, old)
    os.replace(new, target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def write_file(target: Path, write) -> Path:
    """Write ``target`` through a temporary file beside it (``write(path)`` fills it), then
    rename it into place: a reader never sees half a file. Permissions follow the umask."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}-", suffix=".tmp", dir=target.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        os.chmod(tmp, 0o666 & ~umask())  # mkstemp makes it private; a published file is read by others
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return target


def code_hash() -> str:
    """SHA-256 of the package's code and catalogue: results made by other code are stale."""
    h = hashlib.sha256()
    for p in sorted(PACKAGE_DIR.rglob("*")):
        if p.suffix in (".py", ".yml") and "__pycache__" not in p.parts:
            h.update(p.relative_to(PACKAGE_DIR).as_posix().encode())
            h.update(p.read_bytes())
    return h.hexdigest()


def result_key(section: str, indicator: str | None, settings: dict, inputs: dict, code: str) -> str:
    payload = json.dumps({"section": section, "indicator": indicator, "settings": settings, "inputs": inputs,
                          "code": code}, sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()


class ResultsStore:
    """A folder of results (see the module docstring)."""

    def __init__(self, root: Path | str):
        self.root = Path(root)
        # what this store object has read: (section, indicator) -> (result.json's inode and
        # mtime, Result). A result is rewritten by renaming a new folder into place, so a
        # changed file has another inode; readers get copies of the frames.
        self._read: dict[tuple[str, str | None], tuple[tuple[int, int], Result]] = {}

    def folder(self, section: str, indicator: str | None) -> Path:
        return self.root / (indicator or STUDY_LEVEL) / section

    def write(self, result: Result) -> Path:
        target = self.folder(result.section, result.indicator)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{result.section}-", dir=target.parent))
        os.chmod(tmp, 0o777 & ~umask())  # mkdtemp makes it private; a published result is read by others
        try:
            result.effects.to_csv(tmp / "effects.csv", index=False, encoding="utf-8")
            if result.tables:
                (tmp / "tables").mkdir()
                for name, table in result.tables.items():
                    table.to_csv(tmp / "tables" / f"{name}.csv", index=False, encoding="utf-8")
            meta = {"section": result.section, "indicator": result.indicator, "key": result.key,
                    "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
                    "settings": _plain(result.settings), "values": _plain(result.values),
                    "tables": sorted(result.tables)}
            (tmp / "result.json").write_text(json.dumps(meta, ensure_ascii=False, indent=1), encoding="utf-8")
            replace_folder(tmp, target)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
        return target

    def read(self, section: str, indicator: str | None, key: str | None = None) -> Result | None:
        """The stored result, or None when absent or (with ``key``) made with other settings."""
        folder = self.folder(section, indicator)
        meta_path = folder / "result.json"
        try:
            stat = meta_path.stat()
        except (FileNotFoundError, NotADirectoryError):
            return None
        version = (stat.st_ino, stat.st_mtime_ns)
        seen = self._read.get((section, indicator))
        if seen is not None and seen[0] == version:
            result = seen[1]
        else:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
            effects = pd.read_csv(folder / "effects.csv", encoding="utf-8", dtype={"indicator": str, "term": str,
                                                                                  "unit": str})
            tables = {name: pd.read_csv(folder / "tables" / f"{name}.csv", encoding="utf-8")
                      for name in meta.get("tables", [])}
            result = Result(section=section, indicator=indicator, effects=effects, tables=tables,
                            values=meta.get("values", {}), settings=meta.get("settings", {}),
                            key=meta.get("key", ""))
            self._read[(section, indicator)] = (version, result)
        if key is not None and result.key != key:
            return None
        return Result(section=section, indicator=indicator, effects=result.effects.copy(),
                      tables={name: t.copy() for name, t in result.tables.items()},
                      values=copy.deepcopy(result.values), settings=copy.deepcopy(result.settings), key=result.key)

    def results(self) -> list[Result]:
        """Every stored result."""
        out = []
        for meta in sorted(self.root.glob("*/*/result.json")):
            indicator = meta.parent.parent.name
            out.append(self.read(meta.parent.name, None if indicator == STUDY_LEVEL else indicator))
        return out

