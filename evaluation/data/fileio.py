"""Reading tables from the files county statistics offices export (CSV in UTF-8 or GBK,
Excel .xlsx) and writing outputs atomically (a temporary file renamed into place, so
nothing is ever half-written).

This module is the single reader of raw files; ``panel.py`` builds on it.

What an export may hold, and what :func:`read_table` does with it:

* **Title rows** above the header (``XX县2019年乡镇卫生院月报表``, ``填报单位：…  单位：元``):
  a row with a single non-empty cell, a row whose cells are all ``label：value`` notes, or
  a row much narrower than the table is skipped. The header is the first row that fills
  at least half the table's width (merged cells count for every column they span) with
  text. A study can name the row instead (``data.header_row``, 1-based as the
  spreadsheet shows it).
* **Two-level headers**: a parent cell merged across several columns (``门诊`` over
  ``总诊疗人次 | 基层诊疗人次``; in a CSV, a parent followed by empty cells that the row below
  fills) is flattened. Each column is named by its **child header alone when that name
  is unique** in the table, else ``parent/child`` (``门诊/人次`` and ``住院/人次``); a cell
  merged down over both rows keeps its one name. ``parent/child`` is always accepted as
  an alias in a study's mapping (:attr:`HeaderInfo.aliases`).
* **A unit row** right below the header (cells such as ``人``, ``人次``, ``元``, ``万元``,
  ``（元）``, ``单位：万元``; ``—`` for columns without a unit) is recognised, not read as
  data, and its units are returned in :attr:`HeaderInfo.units`; a header ending in a unit
  in brackets (``住院总费用（万元）``) gives its column's unit the same way.
* **Sheets** are chosen by name or by 1-based number (``1`` = the first sheet); the first
  sheet when none is given.
* **Rejected**, each naming the file and the row, cell or column: text that decodes only
  into nonsense (a Big5 file read as GBK), CSV rows with more or fewer fields than the
  header, Excel formula cells without a stored value, a file whose content is not what its
  extension says (a CSV or web page named .xlsx, a truncated workbook, an Excel 97-2003
  .xls), duplicate headers and data under an empty header.

The frame returned is indexed by the spreadsheet row number of each data row, so every
later error names the row a researcher sees when opening the file.
"""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import io
import math
import os
import re
import tempfile
import unicodedata
import zipfile
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import pandas as pd

from evaluation.errors import DataValidationError
from evaluation.study.catalogue import UNIT_FACTORS

ENCODINGS = ("auto", "utf-8", "utf-8-sig", "gbk", "gb18030", "big5")
TEXT_SUFFIXES = (".csv", ".txt")
EXCEL_SUFFIXES = (".xlsx", ".xlsm")
SCAN_ROWS = 30  # the header is looked for in the first rows of the sheet
# Text decoded with a wrong encoding: the share of implausible characters among the
# non-ASCII ones above which the decoding is refused (see _implausible_share).
NONSENSE_SHARE = 0.2
NONSENSE_MIN = 3
_UMASK = os.umask(0)
os.umask(_UMASK)

_UNITS = "|".join(sorted((re.escape(u) for u in UNIT_FACTORS), key=len, reverse=True))
# A unit cell: 元, （元）, (万元), 单位：人次, 单位:万人 ...
_UNIT_CELL = re.compile(rf"^[（(\[]?\s*(?:单位\s*[:：]\s*)?(?P<unit>{_UNITS})\s*[)）\]]?$")
_NO_UNIT_CELL = re.compile(r"^[—–\-/／]+$|^[（(]?\s*(?:单位\s*[:：]\s*)?[—–\-/／]?\s*[)）]?$|^(?:计量)?单位[:：]?$")
# A header ending in a bracketed unit: 住院总费用（万元）, 常住人口(单位:人)
_HEADER_UNIT = re.compile(rf"[（(]\s*(?:单位\s*[:：]\s*)?(?P<unit>{_UNITS})\s*[)）]\s*$")
_NOTE_CELL = re.compile(r"^[^：:]{1,12}[：:]")  # 填报单位：…, 单位：元, 制表日期: …
_FOOTNOTE = re.compile(r"^(?:注|说明|備註|备注|数据来源|資料來源|资料来源)")
_COLUMN_NUMBER = re.compile(r"^(?:甲|乙|丙|丁|戊|栏次|欄次|\d{1,3})$")
_NUMBER = re.compile(r"^[+-]?[\d,\s.]+%?$")


@dataclass(frozen=True)
class HeaderInfo:
    """Where a table's header is and what it says.

    ``header_row`` is the 1-based spreadsheet row of the header (the upper row of a
    two-level header); ``unit_row`` the row of units below it, or None. ``columns`` are
    the flattened headers in file order, ``units`` maps a column to the unit its unit row
    or its header gives (``万元``). ``number_row`` is a row of column numbers below the
    header (``甲 乙 1 2 3 ...``, the 栏次 of statistical reports), not data; ``first_data_row``
    the first row read as data; ``footer`` the note rows below the table (``注：…``,
    ``填表人：…``) as ``(row, text)``, not data either.
    """

    sheet: str | None
    header_row: int
    unit_row: int | None
    columns: list[str]
    units: dict[str, str] = field(default_factory=dict)
    levels: int = 1
    first_data_row: int = 2
    aliases: dict[str, str] = field(default_factory=dict)
    title: list[str] = field(default_factory=list)
    number_row: int | None = None
    footer: list[tuple[int, str]] = field(default_factory=list)

    def describe(self) -> str:
        where = f"sheet '{self.sheet}', " if self.sheet is not None else ""
        unit = f", units in row {self.unit_row}" if self.unit_row else ""
        return f"{where}header in row {self.header_row}{unit}: {self.columns}"


@dataclass
class _Grid:
    """The cells of one sheet (or a CSV) as read, rows 1-based, blanks as ''."""

    path: Path
    sheet: str | None
    rows: list[list[object]]
    merged: list[tuple[int, int, int, int]] = field(default_factory=list)  # r1, c1, r2, c2 (1-based)
    widths: list[int] | None = None  # CSV: fields of each record
    workbook_sheets: list[str] = field(default_factory=list)

    def cell(self, row: int, col: int) -> object:
        r = self.rows[row - 1] if 0 < row <= len(self.rows) else []
        return r[col - 1] if 0 < col <= len(r) else ""

    @property
    def n_rows(self) -> int:
        return len(self.rows)


# ----------------------------------------------------------------------------- public

def sheet_names(path: Path | str) -> list[str]:
    """The sheets of a workbook in workbook order; ``[]`` for a CSV file."""
    path = _existing(path)
    if _kind(path) == "csv":
        return []
    wb = _open_workbook(path, data_only=True, read_only=True)
    try:
        return list(wb.sheetnames)
    finally:
        wb.close()


def locate_header(path: Path | str, *, encoding: str = "auto", sheet: str | int | None = None,
                  header_row: int | None = None) -> HeaderInfo:
    """Find the header of a table (title rows skipped, a unit row recognised).

    ``sheet`` is a sheet name or a 1-based number (the first sheet when None); with
    ``header_row`` (1-based) the header is taken from that row instead of being looked for.
    """
    grid = _read_grid(_existing(path), encoding, sheet)
    return _header(grid, header_row)


def unit_in_header(text: str) -> str | None:
    """The unit a header ends with in brackets (``住院总费用（万元）`` -> ``万元``), or None."""
    m = _HEADER_UNIT.search(text or "")
    return m.group("unit") if m else None


def read_table(path: Path | str, *, encoding: str = "auto", sheet: str | int | None = None,
               header_row: int | None = None) -> pd.DataFrame:
    """Read a raw table with every cell kept as text (Excel numbers stay numbers).

    The header is found (or taken from ``header_row``, 1-based) as :func:`locate_header`
    says; the frame's columns are the flattened headers, its index the spreadsheet row
    number of each data row (blank rows are skipped, never renumbered), and
    ``frame.attrs["header"]`` the :class:`HeaderInfo`.
    """
    path = _existing(path)
    grid = _read_grid(path, encoding, sheet)
    info = _header(grid, header_row)
    _fill_merged_data(grid, info.first_data_row)
    width = len(info.columns)
    index = [r for r in range(info.first_data_row, grid.n_rows + 1) if not all(_blank(v) for v in grid.rows[r - 1])]
    footer = []
    while index and _is_footnote(grid.rows[index[-1] - 1]):
        r = index.pop()
        footer.insert(0, (r, " ".join(_text(v) for v in grid.rows[r - 1] if not _blank(v))))
    if not index:
        raise DataValidationError(path, f"the table has no data rows below the header (row {info.header_row})",
                                  expected="data rows below the header")
    rows = []
    for r in index:
        if grid.widths is not None:
            _check_csv_width(grid, info, r)
        values = [("" if _blank(v) else v) for v in grid.rows[r - 1][:width]]
        rows.append(values + [""] * (width - len(values)))
    frame = pd.DataFrame(rows, columns=list(range(width)), index=pd.Index(index, name="row"), dtype=object)
    frame = _name_columns(frame, info, grid)
    if grid.workbook_sheets:
        _check_formulas(grid, info, frame)
    frame.attrs["header"] = _final_info(info, list(frame.columns), footer)
    return frame


def _fill_merged_data(grid: _Grid, first_data_row: int) -> None:
    """A cell merged over several data rows or columns (a county name spanning its
    townships) holds its value for every row and column it covers, as a reader sees it."""
    for r1, c1, r2, c2 in grid.merged:
        if r1 < first_data_row:
            continue
        value = grid.cell(r1, c1)
        for r in range(r1, min(r2, grid.n_rows) + 1):
            row = grid.rows[r - 1]
            for c in range(c1, min(c2, len(row)) + 1):
                row[c - 1] = value


def _is_footnote(values: list) -> bool:
    """A note below the table: every filled cell a ``label：`` note or a 注/说明/数据来源 line."""
    texts = [_text(v) for v in values if not _blank(v)]
    return bool(texts) and all(isinstance(v, str) for v in values if not _blank(v)) and (
        all(_NOTE_CELL.match(t) for t in texts) or (len(texts) == 1 and bool(_FOOTNOTE.match(texts[0]))))


def _is_number_row(grid: _Grid, row: int, width: int) -> bool:
    """A row of column numbers (栏次): 甲, 乙 ... then 1, 2, 3 ... consecutively, within the header's width."""
    if row > grid.n_rows:
        return False
    filled = _filled(grid, row)
    texts = [_text(grid.cell(row, c)) for c in filled]
    if not texts or max(filled) > width or len(filled) < width / 2:
        return False
    if not all(_COLUMN_NUMBER.match(t) for t in texts):
        return False
    numbers = [int(t) for t in texts if t.isdigit()]
    consecutive = all(b == a + 1 for a, b in zip(numbers, numbers[1:], strict=False))
    return consecutive and (len(numbers) >= 3 or (len(numbers) >= 1 and len(numbers) < len(texts)))


# ----------------------------------------------------------------------------- file kinds

def _existing(path: Path | str) -> Path:
    path = Path(path)
    if not path.is_file():
        raise DataValidationError(path, "file not found")
    return path


def _looks_like(head: bytes) -> str:
    """What the first bytes of a file look like."""
    if head.startswith(b"PK\x03\x04") or head.startswith(b"PK\x05\x06"):
        return "a zip archive (an Excel .xlsx workbook)"
    if head.startswith(b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"):
        return "an Excel 97-2003 .xls workbook (or an encrypted workbook)"
    text = head.lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    if text.startswith((b"<!doctype html", b"<html", b"<table", b"<meta", b"<head", b"<body")):
        return "a web page (HTML), as some systems export under an Excel name"
    if text.startswith(b"<?xml"):
        return "an XML file (perhaps an Excel 2003 XML spreadsheet)"
    if head.startswith(b"%PDF"):
        return "a PDF document"
    if head.startswith((b"\xff\xfe", b"\xfe\xff")):
        return "UTF-16 text (Excel's 'Unicode text' export)"
    if not head:
        return "an empty file"
    if b"\x00" in head:
        return "a binary file"
    return "plain text (CSV)"


def _kind(path: Path) -> str:
    """'csv' or 'xlsx' from the extension, checked against the content."""
    suffix = path.suffix.lower()
    with path.open("rb") as fh:
        head = fh.read(512)
    looks = _looks_like(head)
    if suffix in EXCEL_SUFFIXES:
        if not looks.startswith("a zip archive"):
            raise DataValidationError(
                path, f"named {suffix} but its content is {looks}, not an Excel workbook",
                expected="a workbook saved from Excel or WPS as .xlsx (or rename a CSV file to .csv; "
                         "remove the password of an encrypted workbook)")
        try:
            with zipfile.ZipFile(path) as archive:
                names = set(archive.namelist())
        except (zipfile.BadZipFile, OSError) as exc:
            raise DataValidationError(
                path, f"the workbook is truncated or damaged (its zip archive cannot be read: {exc})",
                expected="a complete .xlsx file (copy it again, or open and re-save it in Excel or WPS)") from None
        if "xl/workbook.xml" not in names:
            what = ("a Word document" if "word/document.xml" in names else
                    "a PowerPoint presentation" if "ppt/presentation.xml" in names else
                    "a zip archive without a workbook")
            raise DataValidationError(path, f"named {suffix} but its content is {what}, not an Excel workbook",
                                      expected="a workbook saved from Excel or WPS as .xlsx")
        return "xlsx"
    if suffix in TEXT_SUFFIXES:
        if looks.startswith(("a zip archive", "an Excel", "a web page", "an XML", "a PDF", "a binary")):
            raise DataValidationError(
                path, f"named {suffix} but its content is {looks}, not CSV text",
                expected="a CSV text file (or give the file the extension of what it is)")
        return "csv"
    if suffix == ".xls":
        raise DataValidationError(
            path, f"an .xls file (its content is {looks}) cannot be read",
            expected="open it in Excel or WPS and save it as .xlsx (or as CSV)")
    raise DataValidationError(path, f"unsupported file type '{path.suffix}'", expected="a .csv or .xlsx file")


def _cached_workbook(path: Path):
    """The workbook's values, loaded once per content (finding the header of each sheet,
    or the likeliest sheet for an error message, reads the same file several times)."""
    digest = hashlib.sha1(path.read_bytes()).hexdigest()
    return _workbook_by_content(str(path.resolve()), digest)


@lru_cache(maxsize=2)
def _workbook_by_content(path: str, digest: str):
    return _open_workbook(Path(path), data_only=True)


def _open_workbook(path: Path, *, data_only: bool, read_only: bool = False):
    import openpyxl

    try:
        return openpyxl.load_workbook(path, data_only=data_only, read_only=read_only)
    except (zipfile.BadZipFile, KeyError, OSError, EOFError, ValueError, TypeError, IndexError) as exc:
        raise DataValidationError(
            path, f"the workbook cannot be opened: it is truncated or damaged ({type(exc).__name__}: {exc})",
            expected="a complete .xlsx file (copy it again, or open and re-save it in Excel or WPS)") from None


# ----------------------------------------------------------------------------- reading cells

def _read_grid(path: Path, encoding: str, sheet) -> _Grid:
    if encoding not in ENCODINGS:
        raise DataValidationError(path, f"unknown encoding {encoding!r}", expected=f"one of {ENCODINGS}")
    if _kind(path) == "csv":
        if sheet is not None:
            raise DataValidationError(path, f"a sheet ({sheet!r}) is given for a CSV file, which has none",
                                      expected="no panel_sheet / pilot_sheet for a CSV file")
        text = _decode(path, encoding)
        records = list(csv.reader(io.StringIO(text, newline=""), delimiter=_delimiter(text)))
        if not any(any(v.strip() for v in rec) for rec in records):
            raise DataValidationError(path, "the file is empty", expected="a header row and data rows")
        return _Grid(path, None, [list(rec) for rec in records], widths=[len(rec) for rec in records])
    wb = _cached_workbook(path)
    ws = wb[_sheet_title(path, wb.sheetnames, sheet)]
    rows = [list(r) for r in ws.iter_rows(values_only=True)]
    while rows and all(_blank(v) for v in rows[-1]):
        rows.pop()
    if not rows:
        raise DataValidationError(path, f"sheet '{ws.title}' is empty",
                                  expected=f"a header row and data rows (the workbook's sheets: {wb.sheetnames})")
    merged = [(m.min_row, m.min_col, m.max_row, m.max_col) for m in ws.merged_cells.ranges]
    return _Grid(path, ws.title, rows, merged=merged, workbook_sheets=list(wb.sheetnames))


def _delimiter(text: str) -> str:
    """A tab when the first 20 lines hold more tabs than commas (Excel's 'Text (Tab
    delimited)' export), else a comma."""
    head = "\n".join(text.splitlines()[:20])
    return "\t" if head.count("\t") > head.count(",") else ","


def _sheet_title(path: Path, names: list[str], sheet) -> str:
    """A sheet given by name or 1-based number; the first sheet when None."""
    if sheet is None:
        return names[0]
    if isinstance(sheet, bool) or not isinstance(sheet, (int, str)):
        raise DataValidationError(path, f"sheet {sheet!r} is neither a name nor a number",
                                  expected=f"a sheet name or a number from 1 to {len(names)}: {names}")
    if isinstance(sheet, int):
        if not 1 <= sheet <= len(names):
            raise DataValidationError(
                path, f"there is no sheet number {sheet}: the workbook has {len(names)} sheet(s) {names}",
                expected=f"a number from 1 (the first sheet) to {len(names)}, or a sheet name")
        return names[sheet - 1]
    if sheet in names:
        return sheet
    near = [n for n in names if n.strip().lower() == sheet.strip().lower()]
    hint = f" (did you mean '{near[0]}'?)" if near else ""
    raise DataValidationError(path, f"no sheet named '{sheet}'{hint}",
                              expected=f"one of the workbook's sheets {names} or a number from 1 to {len(names)}")


def _decode(path: Path, encoding: str) -> str:
    raw = path.read_bytes()
    if encoding == "auto":
        tries = ("utf-8-sig", "gb18030")
    elif encoding in ("gbk", "gb18030"):
        tries = ("gb18030",) if encoding == "gb18030" else ("gbk",)
    else:
        tries = (encoding,)
    last = None
    for enc in tries:
        try:
            text = raw.decode(enc)
        except UnicodeDecodeError as exc:
            last = exc
            continue
        _reject_nonsense(path, text, enc, not_utf8=last)
        return text
    hint = _other_encoding_hint(raw)
    raise DataValidationError(
        path, f"cannot decode the file as {' or '.join(tries)} (byte {last.start}: {last.reason}){hint}",
        expected="a CSV saved as UTF-8 or GBK")


def _implausible(char: str) -> bool:
    """A character that Chinese statistics text almost never holds, but mojibake does.

    Private-use code points, replacement and control characters, kana, Cyrillic, box
    drawing and bopomofo, and (for a GB decoding) ideographs outside GB 2312, the 6,763
    characters of everyday simplified Chinese. A few rare characters in place names stay
    far below :data:`NONSENSE_SHARE`; Big5 bytes decoded as GBK give about half.
    """
    o = ord(char)
    if 0xE000 <= o <= 0xF8FF or o == 0xFFFD or 0x3040 <= o <= 0x30FF or 0x0400 <= o <= 0x04FF:
        return True
    if 0x2500 <= o <= 0x257F or 0x3100 <= o <= 0x312F:
        return True
    return unicodedata.category(char) in ("Cc", "Co", "Cs") and char not in "\t\r\n"


def _implausible_share(text: str, encoding: str) -> tuple[float, list[str]]:
    """Share of implausible characters among the non-ASCII ones, and examples."""
    gb = encoding.startswith("gb")
    non_ascii = [c for c in text if ord(c) > 127]
    if not non_ascii:
        return 0.0, []
    bad = []
    for c in non_ascii:
        if _implausible(c):
            bad.append(c)
        elif gb and "\u3400" <= c <= "\u9fff":
            try:
                c.encode("gb2312")
            except UnicodeEncodeError:
                bad.append(c)
    return len(bad) / len(non_ascii), bad


def _reject_nonsense(path: Path, text: str, encoding: str, not_utf8: UnicodeDecodeError | None = None) -> None:
    share, bad = _implausible_share(text, encoding)
    if share > NONSENSE_SHARE and len(bad) >= NONSENSE_MIN:
        line = next((i + 1 for i, ln in enumerate(text.splitlines()) if any(c in ln for c in bad[:1])), 1)
        sample = text.splitlines()[line - 1][:40] if text.splitlines() else ""
        examples = "".join(dict.fromkeys(bad))[:12]
        hint = _other_encoding_hint(path.read_bytes(), exclude=encoding)
        if not_utf8 is not None:
            hint = f" (it is not UTF-8 either: byte {not_utf8.start}, {not_utf8.reason})" + hint
        raise DataValidationError(
            path, f"decoded as {encoding.upper()} the text is nonsense: {share:.0%} of its non-ASCII characters "
            f"are rare, private-use or foreign-script characters (e.g. {examples!r}; row {line} reads "
            f"{sample!r}){hint}",
            rows=[line], expected="a CSV saved as UTF-8 or GBK (or data.encoding set to the file's encoding)")


def _other_encoding_hint(raw: bytes, exclude: str = "") -> str:
    for enc, name in (("big5", "Big5 (Traditional Chinese)"), ("utf-16", "UTF-16")):
        if enc == exclude:
            continue
        if enc == "utf-16" and not raw.startswith((b"\xff\xfe", b"\xfe\xff")):
            continue
        try:
            text = raw.decode(enc)
        except UnicodeDecodeError:
            continue
        if _implausible_share(text, enc)[0] <= NONSENSE_SHARE / 4:
            return (f"; it reads cleanly as {name}: save it as UTF-8"
                    + (" or set data.encoding: big5" if enc == "big5" else ""))
    return ""


# ----------------------------------------------------------------------------- header

def _blank(v) -> bool:
    return v is None or (isinstance(v, str) and v.strip() == "") or (isinstance(v, float) and math.isnan(v))


def _text(v) -> str:
    if _blank(v):
        return ""
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    if isinstance(v, (dt.datetime, pd.Timestamp)):
        if v.day == 1 and (v.hour, v.minute, v.second) == (0, 0, 0):
            return f"{v.year:04d}-{v.month:02d}"
        return v.strftime("%Y-%m-%d")
    if isinstance(v, dt.date):
        return v.isoformat()
    return re.sub(r"\s+", " ", str(v)).strip()


def _is_text(v) -> bool:
    """Text as a header holds (a date cell counts: a period header of a wide table)."""
    if isinstance(v, (dt.date, pd.Timestamp)):
        return True
    return isinstance(v, str) and v.strip() != "" and not _NUMBER.match(v.strip())


def _is_year(v) -> bool:
    """A year as a number (2019, or the text "2019" of a CSV): the period header of an annual wide table."""
    if isinstance(v, str) and re.fullmatch(r"\s*\d{4}\s*", v):
        v = int(v)
    return isinstance(v, (int, float)) and not isinstance(v, bool) and float(v).is_integer() and 1900 <= v <= 2100


def _merge_at(grid: _Grid, row: int, col: int):
    for m in grid.merged:
        if m[0] <= row <= m[2] and m[1] <= col <= m[3]:
            return m
    return None


def _covered(grid: _Grid, row: int) -> set[int]:
    """Columns of ``row`` covered by a non-empty cell or the merged range of one."""
    cols = set()
    for c, v in enumerate(grid.rows[row - 1], start=1):
        if not _blank(v):
            m = _merge_at(grid, row, c)
            cols.update(range(c, (m[3] if m and m[0] == row else c) + 1))
    return cols


def _filled(grid: _Grid, row: int) -> list[int]:
    return [c for c, v in enumerate(grid.rows[row - 1], start=1) if not _blank(v)]


def _is_title_row(grid: _Grid, row: int, width: int) -> bool:
    """A title or note row: one cell, all ``label：value`` notes, or much narrower than the table."""
    filled = _filled(grid, row)
    if len(filled) <= 1:
        return True
    texts = [_text(grid.cell(row, c)) for c in filled]
    if all(_NOTE_CELL.match(t) or _UNIT_CELL.match(t) for t in texts):
        return True
    return len(filled) <= 3 and len(_covered(grid, row)) < width / 2 and len(filled) < width / 2


def _is_unit_row(grid: _Grid, row: int) -> bool:
    if row > grid.n_rows:
        return False
    texts = [_text(grid.cell(row, c)) for c in _filled(grid, row)]
    return (any(_UNIT_CELL.match(t) for t in texts)
            and all(_UNIT_CELL.match(t) or _NO_UNIT_CELL.match(t) for t in texts))


def _find_header_row(grid: _Grid) -> tuple[int, list[str]]:
    scan = range(1, min(grid.n_rows, SCAN_ROWS) + 1)
    width = max((len(_covered(grid, r)) for r in scan), default=0)
    titles = []
    for r in scan:
        filled = _filled(grid, r)
        if not filled:
            continue
        if _is_title_row(grid, r, width):
            titles.append(" ".join(_text(grid.cell(r, c)) for c in filled))
            continue
        texts = [grid.cell(r, c) for c in filled]
        header_like = sum(_is_text(v) or _is_year(v) for v in texts)
        if len(_covered(grid, r)) >= width / 2 and header_like >= len(texts) / 2 and any(map(_is_text, texts)):
            return r, titles
        titles.append(" ".join(_text(v) for v in texts))
    raise DataValidationError(
        grid.path, f"no header row found in the first {len(scan)} rows{_where(grid)}",
        expected="a row of column headers (text) as wide as the table, or data.header_row / "
                 "data.pilot_header_row naming it (1-based)")


def _where(grid: _Grid) -> str:
    return f" of sheet '{grid.sheet}'" if grid.sheet is not None else ""


def _two_level_parents(grid: _Grid, h: int, width: int) -> dict[int, str] | None:
    """Parent header of each column under a merged (or CSV-spread) parent cell of row ``h``."""
    if h + 1 > grid.n_rows:
        return None
    parents: dict[int, str] = {}
    for m in grid.merged:
        if m[0] == h and m[2] == h and m[3] > m[1]:
            for c in range(m[1], m[3] + 1):
                parents[c] = _text(grid.cell(h, m[1]))
    if grid.widths is not None:  # a CSV: parent text followed by empty cells that row h+1 fills
        c = 1
        while c <= width:
            if not _blank(grid.cell(h, c)) and c < width and _blank(grid.cell(h, c + 1)):
                end = c
                while end + 1 <= width and _blank(grid.cell(h, end + 1)) and _is_text(grid.cell(h + 1, end + 1)):
                    end += 1
                if end > c and _is_text(grid.cell(h + 1, c)):
                    for k in range(c, end + 1):
                        parents[k] = _text(grid.cell(h, c))
                c = end + 1
            else:
                c += 1
    if not parents:
        return None
    below = [c for c in parents if _is_text(grid.cell(h + 1, c))]
    # a row of child headers holds text only: a number means row h+1 is the first data row
    numbers = [v for v in grid.rows[h] if not _blank(v) and not _is_text(v)]
    if not below or numbers or _is_unit_row(grid, h + 1):
        return None
    return parents


def _header(grid: _Grid, header_row: int | None) -> HeaderInfo:
    if header_row is None:
        h, titles = _find_header_row(grid)
    else:
        if isinstance(header_row, bool) or not isinstance(header_row, int) or header_row < 1:
            raise DataValidationError(grid.path, f"header row {header_row!r} is not a row number",
                                      expected="a 1-based row number")
        if header_row > grid.n_rows or not _filled(grid, header_row):
            raise DataValidationError(
                grid.path, f"the header row given by the study (row {header_row}) is empty or past the "
                f"last row ({grid.n_rows}){_where(grid)}", rows=[header_row],
                expected="the 1-based row number of the column headers")
        h, titles = header_row, [" ".join(_text(v) for v in grid.rows[r - 1] if not _blank(v))
                                 for r in range(1, header_row) if _filled(grid, r)]
    width = grid.widths[h - 1] if grid.widths is not None else len(grid.rows[h - 1])
    parents = _two_level_parents(grid, h, width)
    names, aliases = [], {}
    for c in range(1, width + 1):
        parent = parents.get(c, "") if parents else ""
        parent = parent or _text(grid.cell(h, c))
        child = _text(grid.cell(h + 1, c)) if parents else ""
        m = _merge_at(grid, h + 1, c)
        if m and m[0] <= h:  # merged down from the parent row: one name
            child = ""
        names.append((parent, child))
    children = [child or parent for parent, child in names]
    columns = []
    for (parent, child), alone in zip(names, children, strict=True):
        if child and parent:
            full = f"{parent}/{child}"
            name = child if children.count(child) == 1 else full
            aliases[full] = name
        else:
            name = alone
        columns.append(name)
    levels = 2 if parents else 1
    last = h + levels - 1
    unit_row = number_row = None
    for r in (last + 1, last + 2):  # a unit row and a row of column numbers, in either order
        if unit_row is None and _is_unit_row(grid, r):
            unit_row = r
        elif number_row is None and _is_number_row(grid, r, width):
            number_row = r
        else:
            break
    units = {}
    for c, name in enumerate(columns, start=1):
        if not name:
            continue
        m = _HEADER_UNIT.search(name)
        if m:
            units[name] = m.group("unit")
        if unit_row is not None:
            u = _UNIT_CELL.match(_text(grid.cell(unit_row, c)))
            if u:
                if m and UNIT_FACTORS[m.group("unit")] != UNIT_FACTORS[u.group("unit")]:
                    raise DataValidationError(
                        grid.path, f"the header '{name}' says {m.group('unit')} but the unit row (row {unit_row})"
                        f" says {u.group('unit')}{_where(grid)}", rows=[unit_row], column=name,
                        expected="one unit for the column")
                units[name] = u.group("unit")
    return HeaderInfo(sheet=grid.sheet, header_row=h, unit_row=unit_row, columns=columns, units=units,
                      levels=levels, first_data_row=max(unit_row or 0, number_row or 0, last) + 1,
                      aliases=aliases, title=titles, number_row=number_row)


def _name_columns(frame: pd.DataFrame, info: HeaderInfo, grid: _Grid) -> pd.DataFrame:
    """Headers onto the frame: empty trailing columns dropped, duplicates and unnamed data refused."""
    from openpyxl.utils import get_column_letter

    keep = []
    for i, name in enumerate(info.columns):
        if name:
            keep.append(i)
            continue
        filled = frame.index[frame[i].map(lambda v: not _blank(v))]
        if len(filled):
            letter = get_column_letter(i + 1)
            raise DataValidationError(
                grid.path, f"column {letter}{_where(grid)} holds data but has no header (row {info.header_row})",
                rows=list(filled), column=letter, expected="a header above every column with data")
    header = [info.columns[i] for i in keep]
    duplicated = sorted({c for c in header if header.count(c) > 1})
    if duplicated:
        raise DataValidationError(grid.path, f"duplicate column header(s) {duplicated} in row {info.header_row}"
                                  f"{_where(grid)}", column=duplicated[0], expected="each header once")
    frame = frame[keep]
    frame.columns = header
    return frame


def _final_info(info: HeaderInfo, columns: list[str], footer: list[tuple[int, str]]) -> HeaderInfo:
    return HeaderInfo(sheet=info.sheet, header_row=info.header_row, unit_row=info.unit_row, columns=columns,
                      units={k: v for k, v in info.units.items() if k in columns}, levels=info.levels,
                      first_data_row=info.first_data_row, aliases=info.aliases, title=info.title,
                      number_row=info.number_row, footer=footer)


def _check_csv_width(grid: _Grid, info: HeaderInfo, row: int) -> None:
    expected = grid.widths[info.header_row - 1]
    got = grid.widths[row - 1]
    if got != expected:
        fewer = got < expected
        raise DataValidationError(
            grid.path, f"not a rectangular CSV table: row {row} has {got} field(s), the header "
            f"(row {info.header_row}) {expected}" + (" (a short row would be padded with empty cells)" if fewer
                                                      else " (extra fields have no header)"),
            rows=[row], expected=f"{expected} comma-separated fields in every row (quote a text holding a comma)")


def _check_formulas(grid: _Grid, info: HeaderInfo, frame: pd.DataFrame) -> None:
    """Formula cells with no stored value read as empty: refuse them, naming the cells."""
    empty = {(r, info.columns.index(c) + 1): c for c in frame.columns for r in frame.index[frame[c].eq("")]}
    if not empty:
        return
    from openpyxl.utils import get_column_letter

    formulas = sorted((rc, empty[rc]) for rc in _formulas_without_value(grid) if rc in empty)
    if formulas:
        rows = sorted({r for (r, _), _ in formulas})
        raise DataValidationError(
            grid.path, f"{len(formulas)} formula cell(s){_where(grid)} have no stored value (the workbook was "
            "written by a program that does not calculate formulas)", column=formulas[0][1], rows=rows,
            details=[f"cell {get_column_letter(c)}{r} (column '{name}')" for (r, c), name in formulas],
            expected="values in every cell: open the workbook in Excel or WPS and save it (formulas are then "
                     "calculated), or paste the cells as values")


def _formulas_without_value(grid: _Grid) -> set[tuple[int, int]]:
    """(row, column) of the sheet's formula cells that carry no cached value.

    Read from the sheet's XML (a ``<c>`` with an ``<f>`` and no ``<v>``), which is much
    faster than loading the workbook a second time with its formulas.
    """
    import xml.etree.ElementTree as ET

    from openpyxl.utils.cell import coordinate_to_tuple

    wb = _open_workbook(grid.path, data_only=False, read_only=True)
    try:
        sheet_xml = wb[grid.sheet]._worksheet_path
    finally:
        wb.close()
    found = set()
    with zipfile.ZipFile(grid.path) as archive:
        xml = archive.read(sheet_xml)
    if not re.search(rb"<(?:\w+:)?f[ >/]", xml):  # no formula at all: the common case
        return found
    for _, el in ET.iterparse(io.BytesIO(xml)):
        if el.tag.endswith("}c"):
            formula = next((ch for ch in el if ch.tag.endswith("}f")), None)
            value = next((ch for ch in el if ch.tag.endswith("}v")), None)
            if formula is not None and (value is None or value.text is None) and el.get("r"):
                found.add(coordinate_to_tuple(el.get("r")))
            el.clear()
    return found


# ----------------------------------------------------------------------------- writing

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
