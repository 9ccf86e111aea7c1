"""Start a study file from a researcher's own spreadsheet (``evaluation init PANEL PILOTS``).

Reads the panel and the pilot table (CSV in UTF-8 or GBK, or .xlsx; the sheet and the
header row are found by :func:`evaluation.data.fileio.locate_header`), proposes a mapping
from the file's headers onto the data contract with the synonym dictionary shipped in
``evaluation/data/synonyms.yml``, detects the period format and the frequency, the window
(the data's first and last period) and the indicators the mapped columns allow, and
writes a commented study file like ``studies/demo.yml``. What could not be mapped, and
why, is listed in a comment block at the top of that file. A wide table (periods as
columns, a column naming the measures) is written as ``layout: wide`` with its measure
names mapped like headers; county total rows (the loader's own rule) as
``total_rows: drop``.

Matching a header to a contract column, after normalisation (:func:`normalise_header`):

1. exact: the header is one of the column's synonyms (when two headers match one
   column, the earlier synonym in ``synonyms.yml`` wins and the other is reported);
2. contains: a synonym of two characters or more is part of the header and covers at
   least half of it (the longest synonym wins);
3. similar: a spelling close to a synonym (``difflib`` ratio >= 0.85: one character
   added or dropped, a substitution only in long headers), unless the two
   differ by opposite characters (内/外, 上/下 ...: 县内转诊 is not 县外转诊).

Steps 2 and 3 skip a header that names a rate, a share or a mean (率, 占比, 均 ...) for a
count column, and a synonym the header narrows with a qualifier the synonym lacks
(县域内住院人次 is not 住院人次); both lists are in ``synonyms.yml``.

No two headers are mapped onto one column; equally good candidates are left unmapped and
reported as ambiguous. Nothing is guessed silently: every match by containment or
similarity, dropped total rows and a unit that cannot measure its column are marked
``CHECK`` in the study file (a unit such as 万元 is noted: the loader scales it).
"""

from __future__ import annotations

import datetime as dt
import difflib
import os
import re
import unicodedata
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import pandas as pd
import yaml

from evaluation.data.fileio import (
    HeaderInfo,
    locate_header,
    read_table,
    sheet_names,
    unit_in_header,
    write_text_atomic,
)
from evaluation.data.panel import MEASURE_COLUMNS, TOTAL_ROW_PATTERN
from evaluation.errors import DataValidationError, OutputExistsError, StudyConfigError
from evaluation.paths import SYNONYMS
from evaluation.study.catalogue import MONEY_COLUMNS, UNIT_FACTORS, load_catalogue, unit_fits
from evaluation.study.config import PANEL_KEY_COLUMNS, PILOT_COLUMNS
from evaluation.study.periods import FREQUENCIES, PeriodParseError, parse_period, period_label
from evaluation.study.plan import AnalysisPlan

CONTAINS_MIN_SHARE = 0.5
SIMILAR_MIN_RATIO = 0.85
# The COVID-19 phases of studies/demo.yml, in months; written at the detected frequency.
DEFAULT_COVID_PHASES = (
    ("2020年初疫情 / early-2020 wave", "2020-01", "2020-04"),
    ("2022-23年冬季疫情 / winter 2022-23 wave", "2022-12", "2023-01"),
)
_ID = re.compile(r"^[A-Za-z0-9_-]+$")
_BRACKETED = re.compile(r"[(\[【〔{〈《]([^)\]】〕}〉》]*)[)\]】〕}〉》]")
_NOISE = re.compile(r"[\s_\-:：*＊/、.·]+")


# ----------------------------------------------------------------------------- synonyms

@dataclass(frozen=True)
class MatchRules:
    """What keeps a containment or similarity match from being taken."""

    opposites: tuple[tuple[str, str], ...] = ()   # 内/外: 县内转诊 is not 县外转诊
    not_counts: tuple[str, ...] = ()               # 率, 占比, 均: a rate or a mean is not a count
    qualifiers: tuple[str, ...] = ()               # 县域内, 卫生院: a part of the whole, not the whole
    count_columns: frozenset[str] = frozenset(MEASURE_COLUMNS + ("population",))


@dataclass(frozen=True)
class Synonyms:
    """The synonym dictionary: headers by contract column, for the panel and the pilot table."""

    panel: dict[str, tuple[str, ...]]
    pilots: dict[str, tuple[str, ...]]
    rules: MatchRules
    path: Path


@lru_cache(maxsize=4)
def load_synonyms(path: Path | str = SYNONYMS) -> Synonyms:
    """Read and check ``synonyms.yml``: every contract column, and only those, has synonyms."""
    path = Path(path)
    raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    try:
        tables = {}
        for table, wanted in (("panel", PANEL_KEY_COLUMNS + MEASURE_COLUMNS), ("pilots", PILOT_COLUMNS)):
            entries = raw[table]
            if set(entries) != set(wanted):
                raise ValueError(f"'{table}' must list exactly {list(wanted)}; "
                                 f"missing {sorted(set(wanted) - set(entries))}, unknown {sorted(set(entries) - set(wanted))}")
            tables[table] = {}
            for column in wanted:
                words = entries[column]["synonyms"]
                if not words or not all(isinstance(w, str) and w.strip() for w in words):
                    raise ValueError(f"{table}.{column}: synonyms must be non-empty text")
                tables[table][column] = tuple(dict.fromkeys(words))
        rules = MatchRules(tuple(tuple(pair) for pair in raw["opposites"]), tuple(raw["not_counts"]),
                           tuple(raw["qualifiers"]))
    except (KeyError, TypeError, AttributeError) as exc:
        raise ValueError(f"{path}: malformed synonym dictionary: {exc!r}") from exc
    except ValueError as exc:
        raise ValueError(f"{path}: malformed synonym dictionary: {exc}") from exc
    return Synonyms(tables["panel"], tables["pilots"], rules, path)


def normalise_header(header: object) -> tuple[str, list[str]]:
    """A header as compared with the synonyms, and the text it held in brackets.

    Full-width characters become half-width (NFKC), bracketed text (a unit such as
    （元） or (人次), or a qualifier such as 县(市、区)) is set aside, spaces, underscores,
    hyphens, colons and slashes are dropped, Latin letters are lower-cased:
    ``'住院总费用 （万元）'`` -> ``('住院总费用', ['万元'])``.
    """
    text = unicodedata.normalize("NFKC", str(header))
    bracketed = [b.strip() for b in _BRACKETED.findall(text) if b.strip()]
    text = _BRACKETED.sub("", text)
    return _NOISE.sub("", text).lower(), bracketed


# ----------------------------------------------------------------------------- matching

@dataclass(frozen=True)
class Match:
    """One header mapped onto one contract column, and how."""

    header: str
    column: str
    method: str      # exact | contains | similar
    synonym: str
    score: float


@dataclass(frozen=True)
class Ambiguity:
    """Headers and columns that matched equally well (left unmapped), or a header that
    lost its column to a better one (``winner``)."""

    headers: tuple[str, ...]
    columns: tuple[str, ...]
    method: str
    winner: str | None = None


@dataclass
class HeaderMapping:
    """The proposed mapping of one table's headers onto the contract."""

    headers: list[str]
    matches: list[Match]
    ambiguous: list[Ambiguity]
    contract: tuple[str, ...]

    @property
    def columns(self) -> dict[str, str]:
        """Header -> contract column, in the file's header order."""
        by_header = {m.header: m.column for m in self.matches}
        return {h: by_header[h] for h in self.headers if h in by_header}

    @property
    def mapped(self) -> set[str]:
        return {m.column for m in self.matches}

    @property
    def missing(self) -> list[str]:
        """Contract columns no header was mapped onto, in contract order."""
        return [c for c in self.contract if c not in self.mapped]

    @property
    def unmapped(self) -> list[str]:
        by_header = {m.header for m in self.matches}
        return [h for h in self.headers if h not in by_header]

    def match(self, column: str) -> Match | None:
        return next((m for m in self.matches if m.column == column), None)


def _opposed(a: str, b: str, opposites) -> bool:
    only = set(a) ^ set(b)
    return any(x in only and y in only for x, y in opposites)


def _score(method: str, header: str, column: str, synonyms: list[tuple[int, str, str]],
           rules: MatchRules) -> tuple[float, str] | None:
    if method != "exact" and column in rules.count_columns and any(w in header for w in rules.not_counts):
        return None  # 基层诊疗人次占比 contains 基层诊疗人次 but is a share, not the count
    best = None
    for rank, word, norm in synonyms:
        if not norm:
            continue
        if method != "exact" and any(q in header and q not in norm for q in rules.qualifiers):
            continue  # 县域内住院人次 contains 住院人次 but counts a part of the admissions
        if method == "exact":
            score = 1.0 - rank / 1000 if header == norm else None
        elif method == "contains":
            share = len(norm) / len(header)
            score = share if len(norm) >= 2 and norm in header and share >= CONTAINS_MIN_SHARE else None
        else:
            ratio = difflib.SequenceMatcher(None, header, norm, autojunk=False).ratio()
            score = ratio if ratio >= SIMILAR_MIN_RATIO and not _opposed(header, norm, rules.opposites) else None
        if score is not None and (best is None or score > best[0]):
            best = (score, word)
    return best


def map_headers(headers: list[str], synonyms: dict[str, tuple[str, ...]],
                rules: MatchRules = MatchRules()) -> HeaderMapping:
    """Propose header -> contract column: exact synonyms, then containment, then similarity.

    Within each step the best-scoring pairs are taken first; a header or a column is used
    once; pairs that tie with another pair sharing their header or column are left
    unmapped and reported as ambiguous, and so is a header whose column went to a better
    match and that found no other.
    """
    norm = {h: normalise_header(h)[0] for h in headers}
    words = {c: [(i, w, normalise_header(w)[0]) for i, w in enumerate(ws)] for c, ws in synonyms.items()}
    order = {c: i for i, c in enumerate(synonyms)}
    position = {h: i for i, h in enumerate(headers)}
    free_h = [h for h in headers if norm[h]]
    free_c = list(synonyms)
    matches: list[Match] = []
    ambiguous: list[Ambiguity] = []
    lost: dict[str, tuple[str, str, str]] = {}  # header -> (column, winner, method)
    for method in ("exact", "contains", "similar"):
        candidates = []
        for h in free_h:
            for c in free_c:
                best = _score(method, norm[h], c, words[c], rules)
                if best:
                    candidates.append((best[0], h, c, best[1]))
        candidates.sort(key=lambda x: (-x[0], position[x[1]], order[x[2]]))
        taken_h: set[str] = set()
        taken_c: dict[str, str] = {}
        blocked: set[str] = set()
        for score, h, c, word in candidates:
            if h in taken_h or h in blocked:
                continue
            if c in taken_c or c in blocked:
                if c in taken_c:
                    lost.setdefault(h, (c, taken_c[c], method))
                continue
            rivals = [(h2, c2) for s2, h2, c2, _ in candidates
                      if abs(s2 - score) < 1e-9 and (h2, c2) != (h, c)
                      and ((h2 == h and c2 not in taken_c and c2 not in blocked)
                           or (c2 == c and h2 not in taken_h and h2 not in blocked))]
            if rivals:
                hs = tuple(sorted({h, *(r[0] for r in rivals)}, key=position.get))
                cs = tuple(sorted({c, *(r[1] for r in rivals)}, key=order.get))
                ambiguous.append(Ambiguity(hs, cs, method))
                blocked.update(hs)
                blocked.update(cs)
                continue
            taken_h.add(h)
            taken_c[c] = h
            matches.append(Match(h, c, method, word, round(score, 3)))
        free_h = [h for h in free_h if h not in taken_h and h not in blocked]
        free_c = [c for c in free_c if c not in taken_c and c not in blocked]
    mapped_headers = {m.header for m in matches}
    for h, (c, winner, method) in lost.items():
        if h not in mapped_headers and not any(h in a.headers for a in ambiguous):
            ambiguous.append(Ambiguity((h,), (c,), method, winner=winner))
    return HeaderMapping(list(headers), matches, ambiguous, tuple(synonyms))


# ----------------------------------------------------------------------------- periods

@dataclass(frozen=True)
class PeriodFormat:
    """The period column as found: frequency, first and last period, how it is written."""

    frequency: str | None
    first: pd.Period | None = None
    last: pd.Period | None = None
    formats: tuple[str, ...] = ()
    count: int = 0
    unparsed: tuple[str, ...] = ()
    note: tuple[str, str] | None = None   # (zh, en)


def _template(value: object, frequency: str) -> str:
    """How a period is written: ``2019年1月`` -> ``YYYY年M月``, ``2019Q1`` -> ``YYYYQn``."""
    if isinstance(value, (dt.date, pd.Timestamp)):
        return "Excel date"
    if isinstance(value, (int, float)) and float(value).is_integer():
        value = int(value)
    text = re.sub(r"^\d{4}", "YYYY", str(value).strip())
    if frequency == "quarter":
        return text[:4] + re.sub(r"[1-4一二三四]", "n", text[4:])
    if frequency == "month":
        return text[:4] + re.sub(r"\d", "M", text[4:])
    return text


def detect_periods(values) -> PeriodFormat:
    """Frequency and range of a period column: the first of month, quarter, year at which
    every non-empty value parses (:func:`evaluation.study.periods.parse_period`).

    Excel date cells parse as months; when every date falls in one month of the year they
    are read as years, and when they are three months apart, as quarters (said in ``note``).
    """
    cells = [v for v in values if not (v is None or (isinstance(v, str) and not v.strip())
                                       or (isinstance(v, float) and pd.isna(v)))]
    distinct = list(dict.fromkeys(cells))
    if not distinct:
        return PeriodFormat(None, note=("期间列为空", "the period column is empty"))
    best = None
    for frequency in FREQUENCIES:
        parsed, bad = {}, []
        for v in distinct:
            try:
                parsed[v] = parse_period(v, frequency)
            except PeriodParseError:
                bad.append(v)
        if best is None or len(parsed) > len(best[1]):
            best = (frequency, parsed, bad)
        if not bad:
            break
    frequency, parsed, bad = best
    if not parsed:
        return PeriodFormat(None, unparsed=tuple(str(v) for v in distinct[:5]),
                            note=("期间无法识别为月、季度或年", "the periods read as no month, quarter or year"))
    note = None
    if frequency == "month" and all(isinstance(v, (dt.date, pd.Timestamp)) for v in distinct):
        months = pd.PeriodIndex(sorted(set(parsed.values())), freq="M")
        if len(months) >= 2 and len(set(months.month)) == 1:
            frequency = "year"
            note = ("日期都在同一月份：按年读取", "every date falls in the same month of the year: read as years")
        elif len(months) >= 2 and len({m % 3 for m in months.month}) == 1 and len(set(months.month)) > 1:
            frequency = "quarter"
            note = ("日期相隔三个月：按季度读取", "the dates are three months apart: read as quarters")
        if note:
            parsed = {v: parse_period(v, frequency) for v in distinct}
    periods = sorted(set(parsed.values()))
    formats = tuple(dict.fromkeys(_template(v, frequency) for v in distinct if v in parsed))
    formats = tuple(f for f in formats if f.replace("MM", "M") == f or f.replace("MM", "M") not in formats)
    return PeriodFormat(frequency, periods[0], periods[-1], formats[:4], len(periods),
                        tuple(str(v) for v in bad[:5]), note)


# ----------------------------------------------------------------------------- the proposal

@dataclass
class TableProposal:
    """One file: where its headers are, and how they map."""

    path: Path
    header: HeaderInfo
    first_sheet: str | None
    mapping: HeaderMapping
    extra: dict[str, str] = field(default_factory=dict)  # pilot header -> panel column it names (not needed)
    wide: WideLayout | None = None       # a wide table: its measure (and unit) column
    units: dict[str, str] = field(default_factory=dict)  # header or measure -> the unit the file gives


@dataclass(frozen=True)
class WideLayout:
    """A wide panel: one row per township and measure, one column per period."""

    measure_column: str
    unit_column: str | None
    period_headers: tuple[str, ...]


@dataclass
class StudyProposal:
    """Everything ``evaluation init`` writes into the study file."""

    out: Path
    study_id: str
    panel: TableProposal
    pilots: TableProposal
    periods: PeriodFormat
    total_rows: list[int]                # spreadsheet rows of county totals (合计, 全县 ...)
    pilot_periods_unparsed: tuple[str, ...]
    indicators: list[str]
    unavailable: dict[str, list[str]]    # indicator -> contract columns it lacks
    covid_phases: list[tuple[str, str, str]]
    seed: int
    created: dt.date


def _read(path: Path, encoding: str, synonyms: dict[str, tuple[str, ...]], syn: Synonyms, required):
    """Read a table at its header. In a workbook whose first sheet lacks some of the
    ``required`` columns (or holds no table), the sheet whose headers map best is read
    (the earlier on a tie); when no sheet holds a table, every sheet's problem is named."""
    sheets = sheet_names(path)
    first = sheets[0] if sheets else None
    problems = {}
    try:
        table = read_table(path, encoding=encoding, sheet=first)
    except DataValidationError as exc:
        if len(sheets) < 2:
            raise
        table, found, problems[first] = None, -1, exc.problem
    else:
        mapping = map_headers(list(table.columns), synonyms, syn.rules)
        found = len(mapping.matches)
    if len(sheets) > 1 and (table is None or not set(required) <= mapping.mapped):
        best_sheet = first
        for name in sheets[1:]:
            try:
                info = locate_header(path, encoding=encoding, sheet=name)
            except DataValidationError as exc:  # an empty sheet, or one with no table: not this one
                problems[name] = exc.problem
                continue
            score = len(map_headers(info.columns, synonyms, syn.rules).matches)
            if score > found:
                found, best_sheet = score, name
        if table is None and found < 0:
            raise DataValidationError(path, "no sheet holds a table: " + "; ".join(
                f"sheet '{name}': {problem}" for name, problem in problems.items()))
        if best_sheet != first:
            table = read_table(path, encoding=encoding, sheet=best_sheet)
            mapping = map_headers(list(table.columns), synonyms, syn.rules)
    info = table.attrs["header"]
    return table, TableProposal(path, info, first, mapping, units=dict(info.units or {}))


def _is_period(header: str) -> bool:
    for frequency in FREQUENCIES:
        try:
            parse_period(header, frequency)
            return True
        except PeriodParseError:
            pass
    return False


def _cells(column: pd.Series) -> list[str]:
    """The distinct non-empty cells of a column, as text, in file order."""
    return list(dict.fromkeys(t for t in (_oneline(v) for v in column) if t))


def _detect_wide(table: pd.DataFrame, syn: Synonyms) -> tuple[WideLayout, HeaderMapping, dict[str, str]] | None:
    """A wide table: two or more headers are periods and one column's values name measures
    of the contract (常住人口, 门急诊人次 ...). Returns the layout, the mapping of the id
    headers and of the measure names, and each measure's unit from a unit column."""
    period_headers = tuple(h for h in table.columns if _is_period(h))
    if len(period_headers) < 2:
        return None
    others = [h for h in table.columns if h not in period_headers]
    ids = ("county", "township_id", "township_name")
    measures = {c: w for c, w in syn.panel.items() if c not in ids and c != "period"}
    best = None
    for h in others:
        labels = _cells(table[h])
        if not 2 <= len(labels) <= 200:
            continue
        found = map_headers(labels, measures, syn.rules)
        if len(found.matches) >= 2 and (best is None or len(found.matches) > len(best[1].matches)):
            best = (h, found, labels)
    if best is None:
        return None
    measure, found, labels = best
    unit_column = next((h for h in others if h != measure and _cells(table[h])
                        and all(u in UNIT_FACTORS for u in _cells(table[h]))), None)
    id_headers = [h for h in others if h not in (measure, unit_column)]
    keys = map_headers(id_headers, {c: syn.panel[c] for c in ids}, syn.rules)
    mapping = HeaderMapping(id_headers + labels, keys.matches + found.matches, keys.ambiguous + found.ambiguous,
                            tuple(c for c in PANEL_KEY_COLUMNS + MEASURE_COLUMNS if c != "period"))
    units = {label: unit for label in labels if (unit := unit_in_header(label))}  # 住院总费用（万元）
    if unit_column is not None:
        for label, unit in zip(table[measure], table[unit_column], strict=True):
            if _oneline(unit) and _oneline(label) not in units:
                units[_oneline(label)] = _oneline(unit)
    return WideLayout(measure, unit_column, period_headers), mapping, units


def _split_period(table: pd.DataFrame, mapping: HeaderMapping) -> tuple[str, str] | None:
    """A year column (every cell a year, 2019) beside a month or quarter column (every cell
    1-12, its header naming 月 or 季): the period split over two columns, which the data
    contract does not read. Only headers mapped to ``period`` or left unmapped are looked at."""
    candidates = [h for h in table.columns if mapping.columns.get(h) in (None, "period")]

    def numbers(h):
        out = set()
        for v in _cells(table[h]):
            if not re.fullmatch(r"\d{1,4}(?:\.0)?", v):
                return None
            out.add(int(float(v)))
        return out or None

    year = part = None
    for h in candidates:
        values = numbers(h)
        if values is None:
            continue
        if year is None and all(1900 <= v <= 2100 for v in values):
            year = h
        elif part is None and all(1 <= v <= 12 for v in values) and re.search(r"月|季|month|quarter", h, re.I):
            part = h
    return (year, part) if year and part else None


def _total_rows(table: pd.DataFrame, mapping: HeaderMapping) -> list[int]:
    """Rows whose county, id or name cell reads as a county total (the loader's own rule,
    :data:`evaluation.data.panel.TOTAL_ROW_PATTERN`)."""
    headers = [h for h, c in mapping.columns.items() if c in ("county", "township_id", "township_name")]
    if not headers:
        return []
    hit = pd.concat([table[h].astype(str).str.replace(r"\s+", "", regex=True)
                     .str.contains(TOTAL_ROW_PATTERN, case=False, regex=True) for h in headers], axis=1).any(axis=1)
    return [int(r) for r in table.index[hit]]


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]+", "-", text).strip("-_")


def _study_id(study_id: str | None, out: Path, panel: Path) -> str:
    if study_id is not None:
        if not _ID.match(study_id):
            raise StudyConfigError(out, "id", f"'{study_id}' must be letters, digits, '-' or '_' (it names the "
                                   "output folder)")
        return study_id
    for candidate in (_slug(out.stem), _slug(panel.stem)):
        if candidate and candidate != "study":
            return candidate
    return "study"


def _covid_phases(frequency: str | None, first, last) -> list[tuple[str, str, str]]:
    out = []
    freq = FREQUENCIES.get(frequency or "month")
    for name, start, end in DEFAULT_COVID_PHASES:
        s, e = parse_period(start, "month").asfreq(freq), parse_period(end, "month").asfreq(freq)
        if first is not None and (e < first or s > last):
            continue
        out.append((name, period_label(s), period_label(e)))
    return out


def propose_study(panel: Path | str, pilots: Path | str, *, out: Path | str = "study.yml",
                  study_id: str | None = None, encoding: str = "auto",
                  seed: int | None = None) -> StudyProposal:
    """Read the two files and propose the study: mapping, frequency, window, indicators.

    Raises :class:`evaluation.errors.DataValidationError` when a file cannot be read
    (missing, not a table, undecodable, duplicate headers); a file whose headers do not
    map is not an error here: what is missing is listed in the proposal.
    """
    panel, pilots, out = Path(panel), Path(pilots), Path(out)
    syn = load_synonyms()
    table, panel_prop = _read(panel, encoding, syn.panel, syn, PANEL_KEY_COLUMNS)
    pilot_table, pilot_prop = _read(pilots, encoding, syn.pilots, syn, PILOT_COLUMNS)
    leftovers = pilot_prop.mapping.unmapped
    if leftovers:
        also = map_headers(leftovers, {c: w for c, w in syn.panel.items() if c not in PILOT_COLUMNS}, syn.rules)
        pilot_prop.extra = also.columns
    wide = _detect_wide(table, syn) if "period" not in panel_prop.mapping.mapped else None
    if wide is not None:
        panel_prop.wide, panel_prop.mapping, panel_prop.units = wide
    totals = _total_rows(table, panel_prop.mapping)
    period_header = next((h for h, c in panel_prop.mapping.columns.items() if c == "period"), None)
    if panel_prop.wide is not None:
        periods = detect_periods(panel_prop.wide.period_headers)
    elif period_header:
        periods = detect_periods(table.loc[~table.index.isin(totals), period_header])
    else:
        periods = PeriodFormat(None)
    split = _split_period(table, panel_prop.mapping) if panel_prop.wide is None else None
    if split is not None:
        year, part = split
        periods = PeriodFormat(None, note=(
            f"期间分在两列（{year}、{part}）：请合并为一列（如 2019-01 或 2019Q1）并映射为 period",
            f"the period is split over two columns ({year} and {part}): combine them into one "
            "(2019-01 or 2019Q1) and map it onto period"))
    unparsed: tuple[str, ...] = ()
    start_header = next((h for h, c in pilot_prop.mapping.columns.items() if c == "pilot_start"), None)
    if periods.frequency and start_header:
        bad = []
        for v in pilot_table[start_header]:
            try:
                parse_period(v, periods.frequency)
            except PeriodParseError:
                bad.append(str(v))
        unparsed = tuple(dict.fromkeys(bad))[:5]
    mapped = panel_prop.mapping.mapped
    indicators, unavailable = [], {}
    for ind in load_catalogue():
        lacking = [c for c in ind.columns if c not in mapped]
        if lacking:
            unavailable[ind.id] = lacking
        else:
            indicators.append(ind.id)
    today = dt.date.today()
    return StudyProposal(
        out=out, study_id=_study_id(study_id, out, panel), panel=panel_prop, pilots=pilot_prop,
        periods=periods, total_rows=totals, pilot_periods_unparsed=unparsed, indicators=indicators, unavailable=unavailable,
        covid_phases=_covid_phases(periods.frequency, periods.first, periods.last),
        seed=int(today.strftime("%Y%m%d")) if seed is None else seed, created=today)


# ----------------------------------------------------------------------------- writing

def _text(zh: str, en: str, lang: str) -> str:
    return {"zh": zh, "en": en}.get(lang, f"{zh} / {en}")


def _scalar(value) -> str:
    """A YAML scalar as written in a block mapping (quoted when it needs to be)."""
    return yaml.safe_dump([value], allow_unicode=True, default_flow_style=True, width=10**6).strip()[1:-1]


def _oneline(text: object) -> str:
    return " ".join(str(text).split())


def _relative(path: Path, folder: Path) -> str:
    """``path`` relative to ``folder`` when they share more than the file-system root."""
    path, folder = path.resolve(), folder.resolve()
    try:
        common = Path(os.path.commonpath([path, folder]))
    except ValueError:  # another drive (Windows)
        return path.as_posix()
    if common == Path(common.anchor):
        return path.as_posix()
    return Path(os.path.relpath(path, folder)).as_posix()


def _method_note(m: Match, lang: str) -> str | None:
    if m.method == "contains":
        return _text(f"CHECK：表头包含“{m.synonym}”", f"CHECK: the header contains '{m.synonym}'", lang)
    if m.method == "similar":
        return _text(f"CHECK：与“{m.synonym}”相近（{m.score:.2f}）",
                     f"CHECK: spelled like '{m.synonym}' ({m.score:.2f})", lang)
    return None


def _unit_note(proposal: TableProposal, m: Match, lang: str) -> str | None:
    """A unit the file states (unit row or header) other than the contract's: the loader
    scales it (万元 -> yuan); one that cannot measure the column is to be checked."""
    unit = proposal.units.get(m.header)
    if unit is None or m.column not in MEASURE_COLUMNS + ("population",):
        return None
    if not unit_fits(unit, m.column):
        kind_zh, kind_en = ("金额", "money") if m.column in MONEY_COLUMNS else ("人数、人次或项数", "persons, visits or items")
        return _text(f"CHECK：单位 {unit} 不能度量 {m.column}（应为{kind_zh}）",
                     f"CHECK: unit {unit} cannot measure {m.column} (expected {kind_en})", lang)
    factor = UNIT_FACTORS[unit]
    if factor != 1:
        base_zh, base_en = ("元", "yuan") if m.column in MONEY_COLUMNS else ("人/人次", "persons or visits")
        return _text(f"单位 {unit}：读取时换算为{base_zh}（×{factor:g}）",
                     f"in {unit}: scaled to {base_en} when read (x {factor:g})", lang)
    return None


def _problems(p: StudyProposal, lang: str) -> list[str]:
    """The comment block: what could not be mapped and why (empty when everything maps)."""
    syn = load_synonyms()
    lines: list[str] = []
    needs = {}
    for ind, cols in p.unavailable.items():
        for c in cols:
            needs.setdefault(c, []).append(ind)
    for label, prop, contract in (("panel", p.panel, PANEL_KEY_COLUMNS + MEASURE_COLUMNS),
                                  ("pilots", p.pilots, PILOT_COLUMNS)):
        name = prop.path.name
        words = syn.panel if label == "panel" else syn.pilots
        missing = [c for c in contract if c in prop.mapping.missing]
        tied = {c for a in prop.mapping.ambiguous if a.winner is None for c in a.columns}
        if missing:
            lines.append(_text(f"{name}：未找到的数据契约列", f"{name}: contract columns not found", lang))
            for c in missing:
                if c in PANEL_KEY_COLUMNS or label == "pilots":
                    why = _text("必需列：校验会失败", "required: validation fails without it", lang)
                elif c in needs:
                    why = _text("以下指标需要：", "needed by ", lang) + ", ".join(needs[c])
                else:
                    why = _text("当前指标均不需要", "no indicator needs it", lang)
                examples = "、".join(words[c][1:4])
                if c in tied:
                    found = _text("多个表头同样匹配（见下方歧义）", "several headers match equally (see ambiguous matches)",
                                  lang)
                else:
                    found = _text(f"没有表头匹配（如 {examples}）", f"no header matches (e.g. {examples})", lang)
                lines.append(f"  {c}: {found}; {why}")
        unmapped = prop.mapping.unmapped
        in_ambiguity = {h for a in prop.mapping.ambiguous for h in a.headers}
        plain = [h for h in unmapped if h not in in_ambiguity]
        if plain:
            lines.append(_text(f"{name}：未映射的表头", f"{name}: headers not mapped", lang))
            for h in plain:
                if not normalise_header(h)[0]:
                    why = _text("空表头", "empty header", lang)
                elif h in prop.extra:
                    why = _text(f"试点表不需要（面板的 {prop.extra[h]}）",
                                f"not needed in the pilot table (the panel's {prop.extra[h]})", lang)
                else:
                    why = _text("没有匹配的同义词（不属于数据契约，或请手动映射）",
                                "no synonym matches (not in the contract, or map it by hand)", lang)
                lines.append(f"  {_oneline(h)}: {why}")
        if prop.mapping.ambiguous:
            lines.append(_text(f"{name}：有歧义的匹配", f"{name}: ambiguous matches", lang))
            for a in prop.mapping.ambiguous:
                hs = ", ".join(f"'{_oneline(h)}'" for h in a.headers)
                if a.winner is not None:
                    lines.append(f"  {hs} -> {a.columns[0]}: " + _text(
                        f"该列已映射给“{_oneline(a.winner)}”（匹配更好）；如需要请交换",
                        f"went to '{_oneline(a.winner)}' (a better match); swap them if that is wrong", lang))
                else:
                    lines.append(f"  {hs} -> {' / '.join(a.columns)}: " + _text(
                        "同样匹配，未映射：请手动选择", "equally good matches, left unmapped: choose by hand", lang))
    f = p.periods
    if f.frequency is None:
        lines.append(_text("未能识别期间格式", "period format not detected", lang) + ": " +
                     (_text(*f.note, lang) if f.note else _text("没有期间列", "no period column", lang)) +
                     (f" ({', '.join(f.unparsed)})" if f.unparsed else ""))
    elif f.unparsed:
        lines.append(_text(f"期间值无法按 {f.frequency} 读取", f"period values not read as {f.frequency}s", lang) +
                     ": " + ", ".join(f.unparsed))
    if p.pilot_periods_unparsed:
        lines.append(_text(f"试点开始时间无法按 {f.frequency} 读取", f"pilot starts not read as {f.frequency}s", lang)
                     + ": " + ", ".join(p.pilot_periods_unparsed))
    return lines


def _location_lines(prefix: str, prop: TableProposal) -> list[str]:
    out = []
    info = prop.header
    if prop.first_sheet is not None and info.sheet is not None and info.sheet != prop.first_sheet:
        out.append(f"  {prefix}_sheet: {_scalar(info.sheet)}")
    if info.header_row != 1:
        key = "header_row" if prefix == "panel" else "pilot_header_row"
        out.append(f"  {key}: {info.header_row}".ljust(26) + "# found by init (title rows above it); "
                   "omit to let the reader look for it")
    return out


def _width(text: str) -> int:
    """Columns ``text`` takes in a terminal or editor (CJK characters take two)."""
    return sum(2 if unicodedata.east_asian_width(ch) in "WF" else 1 for ch in text)


def _mapping_lines(prop: TableProposal, lang: str) -> list[str]:
    out = []
    rows = [(f"    {_scalar(m.header)}: {m.column}",
             [n for n in (_method_note(m, lang), _unit_note(prop, m, lang)) if n]) for m in _in_file_order(prop)]
    width = max((_width(line) for line, notes in rows if notes), default=0)
    for line, notes in rows:
        out.append(line + " " * (width - _width(line)) + "  # " + "; ".join(notes) if notes else line)
    return out


def _in_file_order(prop: TableProposal) -> list[Match]:
    return sorted(prop.mapping.matches, key=lambda m: prop.mapping.headers.index(m.header))


def render_study(p: StudyProposal, *, lang: str = "both") -> str:
    """The study file's text, with comments (it is written as text, so they stay)."""
    folder = p.out.parent
    f = p.periods
    lines = [
        f"# Study file written by `evaluation init` on {p.created.isoformat()} from {p.panel.path.name} "
        f"and {p.pilots.path.name}.",
        "# Check every line marked EDIT or CHECK, then run: evaluation validate " + _oneline(p.out.name),
        "# Keys as in studies/demo.yml (README, \"Your own study\"). Paths are relative to this file.",
    ]
    problems = _problems(p, lang)
    if problems:
        lines += ["#", "# " + _text("未能映射的内容（请手动补全映射）", "What init could not map (complete the mapping by hand)",
                                    lang) + ":"]
        lines += [f"#   {_oneline(x) if not x.startswith('  ') else '  ' + _oneline(x)}" for x in problems]
    stem = _oneline(p.panel.path.stem)
    lines += [
        "",
        f"id: {p.study_id}",
        "title:                    # EDIT: placeholders made from the file name",
        f"  zh: {_scalar(f'{stem}：乡镇卫生院一体化试点评估（请修改标题）')}",
        f"  en: {_scalar(f'Evaluation of the township integration pilots: {stem} (EDIT THIS TITLE)')}",
        "",
        "data:",
        f"  panel: {_scalar(_relative(p.panel.path, folder))}",
        f"  pilots: {_scalar(_relative(p.pilots.path, folder))}",
        "  encoding: auto          # auto tries UTF-8 (with or without BOM), then GBK",
    ]
    lines += _location_lines("panel", p.panel) + _location_lines("pilot", p.pilots)
    if p.total_rows:
        rows = ", ".join(str(r) for r in p.total_rows[:8]) + (" ..." if len(p.total_rows) > 8 else "")
        lines.append("  total_rows: drop".ljust(26) + "# " + _text(
            f"CHECK：{len(p.total_rows)} 行县合计（第 {rows} 行）读取时删除；改为 reject 则报错",
            f"CHECK: {len(p.total_rows)} county total row(s) (rows {rows}) dropped when read; reject refuses them",
            lang))
    if p.panel.wide is not None:
        w = p.panel.wide
        spec = f"measure_column: {_scalar(w.measure_column)}"
        if w.unit_column is not None:
            spec += f", unit_column: {_scalar(w.unit_column)}"
        lines += ["  layout: wide".ljust(26) + f"# {len(w.period_headers)} columns are periods; "
                  f"one row per township and measure", f"  wide: {{{spec}}}"]
        lines.append("  # Your headers and measure names -> the data contract's names (README, \"Wide tables\").")
    else:
        lines.append("  # Your headers -> the data contract's names (see README, \"Data contract\").")
    for key, prop in (("columns", p.panel), ("pilot_columns", p.pilots)):
        mapped = _mapping_lines(prop, lang)
        lines += [f"  {key}:" + ("" if mapped else " {}")] + mapped
    lines.append("")
    if f.frequency:
        formats = ", ".join(f.formats)
        detected = f"# detected: {formats}, {f.count} distinct periods"
        if f.note:
            detected += f" ({f.note[1]})"
        lines += [f"frequency: {f.frequency}".ljust(26) + detected,
                  "window:                   # the data's first and last period; narrow it to study a part",
                  f"  start: {_scalar(period_label(f.first))}",
                  f"  end: {_scalar(period_label(f.last))}"]
    else:
        lines += ["frequency: month          # CHECK: not detected (see the top of this file): month | quarter | year"]
    lines += ["", "# Indicators the mapped columns allow (ids from evaluation/study/indicators.yml)."]
    if p.indicators:
        lines += ["indicators:"] + [f"  - {i}" for i in p.indicators]
    else:
        lines += ["# None has its columns mapped: map them above, then list the indicators here",
                  "# (without this key every indicator of the catalogue is evaluated)."]
    if p.unavailable:
        lines.append("# Not available until their columns are mapped:")
        lines += [f"#   {i}: needs {', '.join(cols)}" for i, cols in p.unavailable.items()]
    lines += [
        "",
        "# Province-specific targets override the catalogue's national ones, e.g.",
        "# targets: {county_internal_visit_rate: 0.92}",
        "targets: {}",
        "",
        "covid:",
        "  handling: phases        # phases (indicators in the models) | exclude (drop the periods) | ignore",
    ]
    if p.covid_phases:
        lines.append("  phases:                 # those of studies/demo.yml inside the data's window")
        lines += [f"    - {{name: {_scalar(n)}, start: {_scalar(s)}, end: {_scalar(e)}}}" for n, s, e in p.covid_phases]
    else:
        lines.append("  phases: []              # the data's window holds none of studies/demo.yml's phases")
    defaults = AnalysisPlan(seed=p.seed).model_dump(mode="json", exclude={"seed"})
    dumped = yaml.safe_dump(defaults, allow_unicode=True, sort_keys=False, default_flow_style=None, width=100)
    lines += [
        "",
        "# The analysis plan (README, \"The analysis plan\"). Every key but the seed has a default;",
        "# the defaults are listed below: uncomment a line to change it.",
        "analysis:",
        f"  seed: {p.seed}".ljust(26) + "# every resampling method draws from this seed (any whole number)",
    ]
    lines += [f"  # {line}" for line in dumped.splitlines()]
    return "\n".join(lines) + "\n"


def write_study(p: StudyProposal, *, force: bool = False, lang: str = "both") -> Path:
    """Write the study file atomically; refuse to overwrite an existing one unless ``force``."""
    if p.out.exists() and not force:
        raise OutputExistsError(p.out, "the study file exists; pass --force to overwrite it")
    text = render_study(p, lang=lang)
    yaml.safe_load(text)  # what is written must read back
    return write_text_atomic(p.out, text)


def summary(p: StudyProposal, *, lang: str = "both") -> str:
    """What init found, for the console."""
    t = lambda zh, en: _text(zh, en, lang)  # noqa: E731
    out = []
    for label_zh, label_en, prop in (("面板", "panel", p.panel), ("试点表", "pilots", p.pilots)):
        info = prop.header
        where = [f"{prop.path.name}"]
        if info.sheet is not None:
            where.append(t(f"工作表 {info.sheet}", f"sheet {info.sheet}"))
        where.append(t(f"表头第 {info.header_row} 行", f"header row {info.header_row}"))
        if info.unit_row:
            where.append(t(f"单位行第 {info.unit_row} 行", f"unit row {info.unit_row}"))
        out.append(t(label_zh, label_en) + ": " + ", ".join(where))
        for m in _in_file_order(prop):
            how = {"exact": t("同义词", "synonym"), "contains": t("包含", "contains"),
                   "similar": t(f"相近 {m.score:.2f}", f"similar {m.score:.2f}")}[m.method]
            out.append(f"  {_oneline(m.header)} -> {m.column}  [{how}]")
    if p.panel.wide is not None:
        w = p.panel.wide
        out.append(t(f"宽表：{len(w.period_headers)} 列为期间，指标列 {w.measure_column}",
                     f"wide table: {len(w.period_headers)} period columns, measure column {w.measure_column}"))
    if p.total_rows:
        out.append(t(f"县合计行：{len(p.total_rows)} 行，读取时删除（total_rows: drop）",
                     f"county total rows: {len(p.total_rows)}, dropped when read (total_rows: drop)"))
    f = p.periods
    if f.frequency:
        out.append(t("频率", "frequency") + f": {f.frequency} ({', '.join(f.formats)}), "
                   + t("窗口", "window") + f": {period_label(f.first)} .. {period_label(f.last)}")
    out.append(t("指标", "indicators") + ": " + (", ".join(p.indicators) or t("无", "none")))
    problems = _problems(p, lang)
    if problems:
        out.append(t("未能映射（详见研究文件顶部）", "not mapped (listed at the top of the study file)") + ":")
        out += [f"  {x}" for x in problems]
    return "\n".join(out)
