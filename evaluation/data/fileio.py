"""Reading tables from the formats researchers export (CSV in UTF-8 or GBK, Excel .xlsx)
and writing outputs atomically (a temporary file renamed into place, so nothing is ever
half-written).

This module is the single reader of raw files; ``panel.py`` builds on it.
"""

from __future__ import annotations

import io
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path

import pandas as pd

from evaluation.errors import DataValidationError

ENCODINGS = ("auto", "utf-8", "utf-8-sig", "gbk", "gb18030")
HEADER_ROW = 1
_UMASK = os.umask(0)
os.umask(_UMASK)  # a spreadsheet's first row holds the headers; data start at row 2


def read_table(path: Path | str, *, encoding: str = "auto", sheet: str | int | None = None) -> pd.DataFrame:
    """Read a raw table with every cell kept as text (Excel numbers stay numbers).

    The returned frame is indexed by the spreadsheet row number (header = row 1), so that
    every later error can name the row a researcher sees when opening the file.
    """
    path = Path(path)
    if not path.is_file():
        raise DataValidationError(path, "file not found")
    suffix = path.suffix.lower()
    if suffix in (".csv", ".txt"):
        try:
            raw = pd.read_csv(io.StringIO(_decode(path, encoding)), dtype=str, header=None,
                              keep_default_na=False, na_filter=False)
        except pd.errors.EmptyDataError:
            raw = pd.DataFrame()
        except pd.errors.ParserError as exc:  # ragged rows: pandas names the line
            raise DataValidationError(path, f"not a rectangular CSV table ({exc})".strip()) from exc
    elif suffix in (".xlsx", ".xlsm"):
        try:
            raw = pd.read_excel(path, sheet_name=0 if sheet is None else sheet,
                                header=None, dtype=object, engine="openpyxl")
        except ValueError as exc:  # unknown sheet
            raise DataValidationError(path, f"cannot read sheet {sheet!r}: {exc}") from exc
        raw = raw.astype(object).where(raw.notna(), "")
    else:
        raise DataValidationError(
            path, f"unsupported file type '{path.suffix}'", expected="a .csv or .xlsx file")
    if raw.empty:
        raise DataValidationError(path, "the file is empty", expected="a header row and data rows")
    header = [str(c).strip() for c in raw.iloc[0]]
    duplicated = sorted({c for c in header if header.count(c) > 1})
    if duplicated:
        raise DataValidationError(path, f"duplicate column header(s) {duplicated}",
                                  column=duplicated[0], expected="each header once")
    frame = raw.iloc[1:].copy()
    frame.columns = header
    if frame.empty:
        raise DataValidationError(path, "the table has no data rows")
    frame.index = pd.RangeIndex(HEADER_ROW + 1, HEADER_ROW + 1 + len(frame), name="row")
    return frame


def _decode(path: Path, encoding: str) -> str:
    raw = path.read_bytes()
    if encoding not in ENCODINGS:
        raise DataValidationError(path, f"unknown encoding {encoding!r}", expected=f"one of {ENCODINGS}")
    tries = ("utf-8-sig", "gb18030") if encoding == "auto" else (encoding,)
    for enc in tries:
        try:
            return raw.decode(enc)
        except UnicodeDecodeError as exc:
            last = exc
    raise DataValidationError(
        path, f"cannot decode the file as {' or '.join(tries)} (byte {last.start}: {last.reason})",
        expected="a CSV saved as UTF-8 or GBK")


@contextmanager
def atomic_path(target: Path | str):
    """Yield a temporary path beside ``target``; rename it onto ``target`` on success.

    On any exception the temporary file is removed and ``target`` is left untouched.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    os.chmod(tmp_path, 0o666 & ~_UMASK)  # mkstemp makes 0600; give the usual permissions
    try:
        yield tmp_path
        os.replace(tmp_path, target)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def write_text_atomic(target: Path | str, text: str) -> Path:
    with atomic_path(target) as tmp:
        tmp.write_text(text, encoding="utf-8", newline="")
    return Path(target)
