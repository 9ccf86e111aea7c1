"""The one loader of township panels: read, map, validate, derive the analysis panel.

Reads the raw township-by-period panel and the pilot table (CSV in UTF-8, UTF-8 with BOM
or GBK, or Excel .xlsx; the header, title and unit rows found by
:mod:`evaluation.data.fileio`), melts a wide table (``data.layout: wide``) into the long
contract, renames the user's headers onto the data contract, refuses or drops county
total rows (``data.total_rows``), converts stated units (万元 -> yuan, 万人 -> persons),
rejects input that breaks the contract with a message naming the file, row or column and
what was expected (a township whose median indicator value is implausible included:
catalogue ``plausible``), warns of single implausible cells and population jumps
(kept in ``Panel.notes``), and derives the analysis columns:

``treated``     1 for a township in the pilot table (ever treated), else 0
``cohort``      label of the pilot's first treated period (e.g. ``2019-07``); missing if never treated
``first_treat`` time index of that period (0 for never treated, the convention of Callaway
                and Sant'Anna's ``did``)
``time``        consecutive period index, 1 for the panel's first period
``post``        1 from the pilot's first treated period on (always 0 for never treated)
``event_time``  periods since the pilot start (0 = first treated period); missing if never treated

Nothing is written here; :func:`write_validated_panel` writes atomically on request.
"""

from __future__ import annotations

import hashlib
import re
import warnings
from collections.abc import Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pandera.pandas as pa
from pandera.errors import SchemaErrors

from evaluation.data.covariates import CovariateSet, attach, load_covariates
from evaluation.data.fileio import (
    HeaderInfo,
    atomic_path,
    locate_header,
    read_table,
    sheet_names,
    unit_in_header,
)
from evaluation.errors import DataValidationError, excerpt
from evaluation.study.catalogue import (
    MEASURE_COLUMNS,
    MONEY_COLUMNS,
    UNIT_FACTORS,
    Indicator,
    load_catalogue,
    required_columns,
    share_pairs,
    unit_fits,
)
from evaluation.study.config import PANEL_KEY_COLUMNS, PILOT_COLUMNS, Study, WideLayout
from evaluation.study.periods import FREQUENCIES, PeriodParseError, expected_format, parse_period, period_label

_THOUSANDS = r"[+-]?\d{1,3}(?:,\d{3})+(?:\.\d+)?"


class PanelGapWarning(UserWarning):
    """Some townships lack some periods; the gaps are listed, never filled."""


class DroppedRowsWarning(UserWarning):
    """Rows were dropped as the study asked (county total rows with ``data.total_rows: drop``)."""


class ImplausibleValueWarning(UserWarning):
    """Single cells give an indicator value outside its plausible range (catalogue ``plausible``)."""


class PopulationJumpWarning(UserWarning):
    """A township's population in some period is above 3 times or below a third of its median."""


# What the loader warns about and lists in the panel's summary (validate, the data-quality
# chapter): callers that show the summary silence these.
LISTED_WARNINGS = (PanelGapWarning, DroppedRowsWarning, ImplausibleValueWarning, PopulationJumpWarning)


# County total rows: a county, id or name cell holding one of these is not a township.
TOTAL_ROW_PATTERN = r"合计|小计|总计|汇总|^全(?:县|区|市|镇|乡|旗)|^(?:grand)?(?:sub)?totals?\b|^sum$"
POPULATION_JUMP = 3.0  # a population above 3x or below 1/3 of the township's median is warned about


@dataclass
class Panel:
    """A validated township panel with its derived treatment columns."""

    data: pd.DataFrame
    pilots: pd.DataFrame
    frequency: str
    panel_path: Path
    pilots_path: Path
    indicators: list[Indicator] = field(default_factory=list)
    gaps: pd.DataFrame = field(default_factory=pd.DataFrame)
    excluded: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(
        columns=["township_id", "township_name", "reason", "pilot"]))
    dropped_rows: pd.DataFrame = field(default_factory=pd.DataFrame)
    units: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    controls: list[str] = field(default_factory=list)   # time-varying controls kept from the file
    covariates: CovariateSet | None = None              # the study's covariates (evaluation.data.covariates)
    _column_hashes: dict[str, bytes] = field(default_factory=dict, repr=False, compare=False)

    def column_hash(self, column: str) -> bytes:
        """SHA-256 of a column's values as text, in row order (computed once per panel: the
        panel is not changed after loading). The batch's run keys are made from these."""
        if column not in self._column_hashes:
            values = pd.util.hash_pandas_object(self.data[column].astype(str), index=False).to_numpy()
            self._column_hashes[column] = hashlib.sha256(values.tobytes()).digest()
        return self._column_hashes[column]

    @property
    def periods(self) -> pd.PeriodIndex:
        return pd.period_range(self.data["period"].min(), self.data["period"].max(),
                               freq=FREQUENCIES[self.frequency])

    @property
    def n_townships(self) -> int:
        return self.data["township_id"].nunique()

    @property
    def measure_columns(self) -> list[str]:
        return [c for c in MEASURE_COLUMNS if c in self.data.columns]

    def missing_cells(self) -> pd.Series:
        """Number of empty cells per numeric column."""
        return self.data[self.measure_columns].isna().sum()

    def summary(self) -> dict:
        """Counts a researcher checks first: townships, pilots by cohort and model, periods."""
        d = self.data
        by_cohort_model = (self.pilots.groupby(["cohort", "model"]).size()
                           .rename("townships").reset_index())
        return {
            "panel": str(self.panel_path),
            "pilots": str(self.pilots_path),
            "frequency": self.frequency,
            "counties": int(d["county"].nunique()),
            "townships": int(self.n_townships),
            "pilot_townships": int(d.loc[d["treated"] == 1, "township_id"].nunique()),
            "comparison_townships": int(d.loc[d["treated"] == 0, "township_id"].nunique()),
            "first_period": period_label(d["period"].min()),
            "last_period": period_label(d["period"].max()),
            "periods": len(self.periods),
            "rows": len(d),
            "pilots_by_cohort_and_model": by_cohort_model.to_dict("records"),
            "missing_cells": {k: int(v) for k, v in self.missing_cells().items() if v},
            "gaps": self.gaps.to_dict("records"),
            "excluded": self.excluded.to_dict("records"),
            "dropped_rows": self.dropped_rows.to_dict("records"),
            "units": dict(self.units),
            "notes": list(self.notes),
        }

    def incomplete(self, indicator: Indicator) -> pd.DataFrame:
        """Townships a method that needs a complete panel leaves out for ``indicator``:
        those lacking a period or with an empty cell in a column the indicator reads."""
        columns = [c for c in required_columns([indicator]) if c in MEASURE_COLUMNS]
        return incomplete_townships(self.data, columns, self.frequency)

    def describe(self) -> str:
        """The summary as text for the command line."""
        s = self.summary()
        lines = [
            f"panel:     {s['panel']}",
            f"pilots:    {s['pilots']}",
            f"periods:   {s['first_period']} .. {s['last_period']} ({s['periods']} {self.frequency}s, {s['rows']} rows)",
            f"townships: {s['townships']} in {s['counties']} counties "
            f"({s['pilot_townships']} pilot, {s['comparison_townships']} comparison)",
            "pilots by cohort and model:",
        ]
        lines += [f"  {r['cohort']}  {r['model']}: {r['townships']}" for r in s["pilots_by_cohort_and_model"]]
        if s["missing_cells"]:
            lines.append("missing cells: " + ", ".join(f"{k} {v}" for k, v in s["missing_cells"].items()))
        else:
            lines.append("missing cells: none")
        if s["gaps"]:
            lines.append(f"gaps: {len(s['gaps'])} township(s) lack periods:")
            lines += [f"  {g['township_id']} {g['township_name']}: {g['missing_periods']}" for g in s["gaps"]]
        else:
            lines.append("gaps: none")
        if s["excluded"]:
            lines.append(f"left out of the analysis: {len(s['excluded'])} township(s):")
            lines += [f"  {e['township_id']} {e['township_name']}{' (pilot)' if e['pilot'] else ''}: {e['reason']}"
                      for e in s["excluded"]]
        scaled = {c: u for c, u in s["units"].items() if UNIT_FACTORS[u] != 1}
        if scaled:
            lines.append("units converted: " + ", ".join(f"{c} from {u} (x{UNIT_FACTORS[u]:,.0f})"
                                                         for c, u in scaled.items()))
        if s["dropped_rows"]:
            lines.append(f"dropped rows: {len(s['dropped_rows'])}:")
            lines += [f"  row {d['row']}: {d['reason']}" for d in s["dropped_rows"][:10]]
            if len(s["dropped_rows"]) > 10:
                lines.append(f"  ... and {len(s['dropped_rows']) - 10} more (Panel.dropped_rows)")
        if self.covariates is not None:
            cov = self.covariates
            lines.append(f"covariates: {', '.join(f'{c.name} ({c.kind}, {c.source})' for c in cov.info)}")
            if len(cov.missing):
                lines.append(f"covariates missing: {cov.missing['township_id'].nunique()} township(s):")
                lines += [f"  {r.township_id} {r.township_name}: {r.covariate} ({r.reason})"
                          for r in cov.missing.head(10).itertuples()]
        for note in s["notes"]:
            lines.append(f"warning: {note}")
        return "\n".join(lines)


def load_panel(study: Study) -> Panel:
    """Load and validate the study's panel and pilot table, and its covariates when the
    study declares them (:mod:`evaluation.data.covariates`: attached to the rows, one row
    per township in ``Panel.covariates``)."""
    start, end = study.window_periods
    panel = load_panel_files(
        study.panel_path, study.pilots_path,
        indicators=study.selected_indicators(),
        columns=study.data.columns, pilot_columns=study.data.pilot_columns,
        frequency=study.frequency, window=(start, end), encoding=study.data.encoding,
        panel_sheet=study.data.panel_sheet, pilot_sheet=study.data.pilot_sheet,
        exclude=study.townships.exclude, gap_policy=study.townships.gaps,
        header_row=study.data.header_row, pilot_header_row=study.data.pilot_header_row,
        total_rows=study.data.total_rows, units=study.data.units, layout=study.data.layout,
        wide=study.data.wide, controls=study.covariates.time_varying if study.covariates else (),
    )
    from evaluation.data.aggregate import aggregate_panel  # aggregate imports this module

    panel = aggregate_panel(panel, study.analysis_frequency)  # analysis.frequency: a coarser panel
    if study.covariates is None:
        return panel
    covariates = load_covariates(study.covariates, panel.data, frequency=panel.frequency,
                                 panel_path=panel.panel_path, table_path=study.covariate_table_path,
                                 encoding=study.data.encoding, indicators=load_catalogue(),
                                 panel_headers={v: k for k, v in study.data.columns.items()})
    panel.data = attach(panel.data, covariates)
    panel.covariates = covariates
    panel.notes = list(panel.notes) + covariates.notes
    return panel


def load_panel_files(
    panel_path: Path | str,
    pilots_path: Path | str,
    *,
    indicators: list[Indicator],
    columns: dict[str, str] | None = None,
    pilot_columns: dict[str, str] | None = None,
    frequency: str = "month",
    window: tuple[pd.Period | None, pd.Period | None] = (None, None),
    encoding: str = "auto",
    panel_sheet: str | int | None = None,
    pilot_sheet: str | int | None = None,
    exclude: Sequence[str] = (),
    gap_policy: str = "analyse",
    header_row: int | None = None,
    pilot_header_row: int | None = None,
    total_rows: str = "reject",
    units: dict[str, str] | None = None,
    layout: str = "long",
    wide: WideLayout | dict | None = None,
    controls: Sequence[str] = (),
) -> Panel:
    """Load and validate a panel and its pilot table given explicitly (no study file).

    Sheets are named or numbered from 1; header rows are 1-based spreadsheet rows, found
    automatically when None (:func:`evaluation.data.fileio.locate_header`). ``total_rows``
    is ``"reject"`` or ``"drop"`` (county total rows); ``units`` maps a header or contract
    column to its unit (``万元``); ``layout="wide"`` with ``wide={"measure_column": ...}``
    reads one column per period (:func:`_melt_wide`). ``controls`` are further numeric
    columns kept (time-varying controls, ``covariates.time_varying``).

    ``exclude`` leaves townships out by id or name; ``gap_policy`` says what happens to
    townships with missing periods or empty cells in the columns the indicators read
    (``analyse`` keeps them, ``drop`` leaves them out, ``fail`` rejects the data); see
    :class:`evaluation.study.config.Townships`.
    """
    panel_path, pilots_path = Path(panel_path), Path(pilots_path)
    with _naming_headers(columns):
        data, read = _read_panel(panel_path, columns or {}, indicators, frequency, encoding, panel_sheet,
                                 header_row=header_row, total_rows=total_rows, units=units or {},
                                 layout=layout, wide=wide, controls=list(controls))
    start, end = window
    read_periods = data["period"]
    if start is not None:
        data = data[data["period"] >= start]
    if end is not None:
        data = data[data["period"] <= end]
    if data.empty:
        span = f"{read_periods.min()} .. {read_periods.max()}" if len(read_periods) else "none"
        raise DataValidationError(panel_path, f"no rows inside the study window (window.start {start or '...'} to "
                                  f"window.end {end or '...'} in the study file); the file's periods run {span}",
                                  column="period", expected="a window that overlaps the file's periods")
    with _naming_headers(pilot_columns):
        pilots = _load_pilots(pilots_path, pilot_columns or {}, data, frequency, encoding, pilot_sheet,
                              header_row=pilot_header_row, sheet_key="data.pilot_sheet")
    data, excluded = _exclude_townships(data, exclude, panel_path)
    value_columns = [c for c in required_columns(indicators) if c in MEASURE_COLUMNS]
    incomplete = incomplete_townships(data, value_columns, frequency)
    if len(incomplete) and gap_policy == "fail":
        raise DataValidationError(
            panel_path, f"{len(incomplete)} township(s) have missing periods or empty cells "
            "(the study's townships.gaps is 'fail')", column="township_id",
            details=[f"{r.township_id} ({r.township_name}): {_incomplete_text(r)}" for r in incomplete.itertuples()],
            expected="every township in every period with a value in every column the indicators read, "
                     "or townships.gaps: analyse (the default) or drop")
    if len(incomplete) and gap_policy == "drop":
        data = data[~data["township_id"].isin(incomplete["township_id"])]
        excluded = pd.concat([excluded, incomplete.assign(
            reason=[f"townships.gaps: drop ({_incomplete_text(r)})" for r in incomplete.itertuples()])[
            ["township_id", "township_name", "reason"]]], ignore_index=True)
    excluded["pilot"] = excluded["township_id"].isin(pilots["township_id"])
    pilots = pilots[pilots["township_id"].isin(data["township_id"])].reset_index(drop=True)
    if pilots.empty:
        raise DataValidationError(panel_path, "every pilot township was left out (townships.exclude or "
                                  "townships.gaps: drop)", column="township_id",
                                  expected="at least one pilot township in the analysis")
    if set(data["township_id"]) <= set(pilots["township_id"]):
        raise DataValidationError(panel_path, "no comparison townships left after townships.exclude or "
                                  "townships.gaps: drop", column="township_id",
                                  expected="at least one township that never joined the pilot")
    data = _derive_treatment(data, pilots, frequency)
    gaps = _find_gaps(data, frequency)
    if not gaps.empty:
        listing = "; ".join(f"{g.township_id} ({g.township_name}): {g.missing_periods}"
                            for g in gaps.head(5).itertuples())
        warnings.warn(f"{panel_path}: {len(gaps)} township(s) lack periods (not filled): {listing}",
                      PanelGapWarning, stacklevel=2)
    return Panel(data=data, pilots=pilots, frequency=frequency, panel_path=panel_path,
                 pilots_path=pilots_path, indicators=list(indicators), gaps=gaps,
                 dropped_rows=read.dropped_rows, units=read.units, notes=read.notes, excluded=excluded,
                 controls=list(controls))


def write_validated_panel(panel: Panel, target: Path | str) -> Path:
    """Write the analysis panel as UTF-8 CSV, atomically (nothing half-written)."""
    out = panel.data.copy()
    out["period"] = out["period"].map(period_label)
    with atomic_path(target) as tmp:
        out.to_csv(tmp, index=False, encoding="utf-8")
    return Path(target)


# ----------------------------------------------------------------------------- helpers

@contextmanager
def _naming_headers(mapping: dict[str, str] | None):
    """Add the user's own header to errors about a mapped contract column."""
    try:
        yield
    except DataValidationError as exc:
        exc.header = exc.header or {v: k for k, v in (mapping or {}).items()}.get(exc.column)
        raise


@dataclass
class _ReadReport:
    """What reading the panel changed or noticed besides the data."""

    dropped_rows: pd.DataFrame
    units: dict[str, str]
    notes: list[str]


def _read_panel(panel_path: Path, columns: dict[str, str], indicators: list[Indicator],
                frequency: str, encoding: str, sheet, *, header_row: int | None = None,
                total_rows: str = "reject", units: dict[str, str] | None = None, layout: str = "long",
                wide: WideLayout | dict | None = None,
                controls: list[str] | None = None) -> tuple[pd.DataFrame, _ReadReport]:
    needed = list(PANEL_KEY_COLUMNS) + required_columns(indicators) + [c for c in controls or [] if c not in
                                                                        required_columns(indicators)]
    raw = _read_raw(panel_path, encoding=encoding, sheet=sheet, header_row=header_row, mapping=columns,
                    needed=needed, sheet_key="data.panel_sheet")
    info: HeaderInfo | None = raw.attrs.get("header")
    if info is not None:  # a header written parent/child in the study: the column's own name
        columns = {(info.aliases.get(h, h) if h not in raw.columns else h): c for h, c in columns.items()}
        units = {(info.aliases.get(h, h) if h not in raw.columns else h): u for h, u in (units or {}).items()}
    origin, row_units = None, {}
    if layout == "wide":
        raw, origin, row_units = _melt_wide(raw, columns, wide, frequency, panel_path)
        columns = {h: c for h, c in columns.items() if c != "period"}  # the period headers are the columns
    elif layout != "long":
        raise DataValidationError(panel_path, f"unknown layout {layout!r}", expected="'long' or 'wide'")
    where = _Where(origin, columns)
    with where.translating():
        data = _map_columns(raw, columns, needed, panel_path, sheet=sheet, encoding=encoding,
                            sheet_key="data.panel_sheet")
        optional = [c for c in MEASURE_COLUMNS if c in data.columns and c not in needed]
        data = data[needed + optional]
        for col in ("county", "township_id", "township_name"):
            data[col] = _text(data[col])
        data, dropped = _total_rows(data, panel_path, total_rows, where)
        _reject_empty(data, ["county", "township_id"], panel_path)
        data["period"] = _parse_periods(data["period"], frequency, panel_path, "period")
        for col in ["population"] + [c for c in data.columns if c in MEASURE_COLUMNS] + list(controls or []):
            data[col] = _parse_numbers(data[col], panel_path, col)
        applied = _apply_units(data, info if layout == "long" else None, columns, units or {}, row_units,
                               panel_path)
        _check_schema(data, panel_path)
        for num, den in share_pairs(indicators):
            _check_not_above(data, num, den, panel_path)
        notes = _check_plausible(data, indicators, frequency, panel_path, columns, where)
        notes += _check_population_jumps(data, panel_path, where)
    if dropped is not None and not dropped.empty:
        listing = "; ".join(f"row {d.row}: {d.reason}" for d in dropped.head(5).itertuples())
        message = f"{panel_path}: dropped {len(dropped)} county total row(s) (data.total_rows: drop): {listing}"
        warnings.warn(message, DroppedRowsWarning, stacklevel=3)
    return data, _ReadReport(dropped_rows=dropped, units=applied, notes=notes)


class _Where:
    """Spreadsheet locations of the rows being checked.

    In the long layout a row of the frame is a row of the file. In the wide layout a row of
    the frame (one township and period) comes from one cell per measure: errors raised
    while checking are rewritten to name those cells' rows and the period column.
    """

    def __init__(self, origin: dict[int, tuple[str, dict[str, int]]] | None, mapping: dict[str, str]):
        self.origin = origin
        self.labels = {v: k for k, v in (mapping or {}).items()}

    def rows(self, rows, column: str | None = None) -> list[int]:
        if self.origin is None:
            return list(rows)
        out = set()
        for r in rows:
            cells = self.origin[r][1]
            label = self.labels.get(column, column)
            out.update([cells[label]] if label in cells else cells.values())
        return sorted(out)

    def label(self, row: int, column: str | None = None) -> str:
        if self.origin is None:
            return f"row {row}"
        text, cells = self.origin[row]
        label = self.labels.get(column, column)
        at = [cells[label]] if label in cells else sorted(cells.values())
        return f"{text} (row{'s' if len(at) > 1 else ''} {', '.join(map(str, at))})"

    def _rewrite(self, exc: DataValidationError) -> None:
        known = [r for r in exc.rows if r in self.origin]
        details = []
        for d in exc.details:
            m = re.match(r"^row (\d+)", d)
            if m and int(m.group(1)) in self.origin:
                d = self.label(int(m.group(1)), exc.column) + d[m.end():]
            details.append(d)
        exc.details = details or [self.label(r, exc.column) for r in known]
        exc.rows = self.rows(known, exc.column)

    @contextmanager
    def translating(self):
        try:
            yield
        except DataValidationError as exc:
            if self.origin is not None and exc.rows:
                self._rewrite(exc)
            raise


def _melt_wide(raw: pd.DataFrame, mapping: dict[str, str], wide: WideLayout | dict | None, frequency: str,
               path: Path) -> tuple[pd.DataFrame, dict, dict[str, str]]:
    """A wide table (one row per township and measure, one column per period) made long.

    Columns whose header reads as a period at the study's frequency (``2019-01``,
    ``2019年1月``, an Excel date, ``2019Q1``, ``2019``) hold the values; the column
    ``wide.measure_column`` names each row's measure (a header of the long layout, mapped
    through ``data.columns``: ``常住人口`` -> ``population``); every other column (county,
    id, name, ...) identifies the township and is repeated on each of its long rows. The
    optional ``wide.unit_column`` gives each measure's unit. Returns the long frame (with a
    ``period`` column), where each long row came from, and the units by measure.
    """
    if wide is None:
        raise DataValidationError(path, "layout is wide but no measure column is named",
                                  expected="data.wide: {measure_column: <header>}")
    wide = WideLayout(**wide) if isinstance(wide, dict) else wide
    info: HeaderInfo = raw.attrs["header"]
    resolve = {**{c: c for c in raw.columns}, **info.aliases}
    special = {}
    for key, header in (("measure_column", wide.measure_column), ("unit_column", wide.unit_column)):
        if header is not None and header not in resolve:
            raise DataValidationError(path, f"data.wide.{key} {excerpt(header)} is not a header of the file",
                                      column=header, expected=f"one of {list(raw.columns)}")
        special[key] = resolve.get(header)
    measure, unit_col = special["measure_column"], special["unit_column"]
    period_cols = []
    for c in raw.columns:
        try:
            parse_period(c, frequency)
            period_cols.append(c)
        except PeriodParseError:
            pass
    if not period_cols:
        raise DataValidationError(path, "no period columns in a wide table", column=measure,
                                  expected=f"headers that are periods ({expected_format(frequency)}) "
                                           f"beside the id columns; the file's headers are {list(raw.columns)}")
    id_cols = [c for c in raw.columns if c not in period_cols and c not in (measure, unit_col)]
    labels = _text(raw[measure])
    empty = list(raw.index[labels == ""])
    if empty:
        raise DataValidationError(path, "empty measure cell", column=measure, rows=empty,
                                  expected="the measure's name in every row (e.g. 常住人口, 总诊疗人次)")
    ids = raw[id_cols].apply(_text) if id_cols else pd.DataFrame(index=raw.index)
    keys = ids.apply(tuple, axis=1) if id_cols else pd.Series([()] * len(raw), index=raw.index)
    dup = raw.index[pd.DataFrame({"k": keys, "m": labels}).duplicated(keep=False)]
    if len(dup):
        raise DataValidationError(path, "a measure listed twice for the same township", column=measure,
                                  rows=list(dup), details=[f"row {r}: {labels[r]}" for r in dup],
                                  expected="one row per township and measure")
    units: dict[str, str] = {}
    if unit_col is not None:
        for label, group in _text(raw[unit_col]).groupby(labels, sort=False):
            found = sorted(set(group) - {""})
            bad = [u for u in found if u not in UNIT_FACTORS]
            if bad or len(found) > 1:
                rows = list(group.index[group.isin(bad or found[1:])])
                raise DataValidationError(
                    path, f"measure {excerpt(label)} has " + (f"unknown unit(s) {bad}" if bad else f"several units {found}"),
                    column=unit_col, rows=rows, expected=f"one unit per measure, one of {', '.join(UNIT_FACTORS)}")
            if found:
                units[label] = found[0]
    for label in dict.fromkeys(labels):  # a measure named with its unit: 住院总费用（万元）
        named = unit_in_header(label)
        if named and label in units and UNIT_FACTORS[units[label]] != UNIT_FACTORS[named]:
            rows = list(raw.index[labels == label])
            raise DataValidationError(path, f"measure {excerpt(label)} is given in {units[label]} by the unit column",
                                      column=unit_col, rows=rows, expected=f"the unit its name says, {named}")
        if named:
            units[label] = named
    long_rows, origin, index = [], {}, 1
    for key, group in raw.groupby(keys, sort=False):
        by_label = dict(zip(labels[group.index], group.index, strict=True))
        first = group.index[0]
        who = " ".join(str(v) for v in key) if key else f"row {first}"
        for pc in period_cols:
            rec = {c: raw.at[first, c] for c in id_cols}
            rec["period"] = pc
            for label, r in by_label.items():
                rec[label] = raw.at[r, pc]
            long_rows.append(rec)
            origin[index] = (f"{who}, column '{pc}'", {label: int(r) for label, r in by_label.items()})
            index += 1
    frame = pd.DataFrame(long_rows, index=pd.RangeIndex(1, index, name="row"), dtype=object).fillna("")
    frame.attrs["header"] = HeaderInfo(sheet=info.sheet, header_row=info.header_row, unit_row=None,
                                       columns=list(frame.columns), units={}, title=info.title)
    return frame, origin, units


def _map_columns(raw: pd.DataFrame, mapping: dict[str, str], needed: list[str], path: Path, *,
                 sheet=None, encoding: str = "auto", sheet_key: str | None = None) -> pd.DataFrame:
    info: HeaderInfo | None = raw.attrs.get("header")
    aliases = info.aliases if info else {}
    mapping = {(aliases[h] if h not in raw.columns and h in aliases else h): v for h, v in mapping.items()}
    missing_headers = [h for h in mapping if h not in raw.columns]
    if missing_headers:
        h = missing_headers[0]
        raise DataValidationError(
            path, f"header {excerpt(h)} (mapped to {excerpt(mapping[h])} in the study file) not found{_in_sheet(info)}",
            column=h, expected=f"one of the file's headers {list(raw.columns)}"
            + _sheet_hint(path, info, mapping, encoding, sheet_key, needed))
    data = raw.rename(columns=mapping)
    clashes = [c for c in mapping.values() if list(data.columns).count(c) > 1]
    if clashes:
        raise DataValidationError(path, f"column '{clashes[0]}' appears both mapped and unmapped",
                                  column=clashes[0], expected="each contract column once")
    missing = [c for c in needed if c not in data.columns]
    if missing:
        reverse = {v: k for k, v in mapping.items()}
        names = ", ".join(f"'{c}'" + (f" (header '{reverse[c]}')" if c in reverse else "") for c in missing)
        raise DataValidationError(
            path, f"missing column {names}{_in_sheet(info)}", column=missing[0],
            expected="the data contract's columns, or a mapping from your headers in the study file's data.columns"
            + _sheet_hint(path, info, mapping, encoding, sheet_key, needed))
    return data.copy()


def _in_sheet(info: HeaderInfo | None) -> str:
    if info is None:
        return ""
    sheet = f" sheet '{info.sheet}'," if info.sheet is not None else ""
    return f" (in{sheet} headers read from row {info.header_row})"


def _read_raw(path: Path, *, encoding: str, sheet, header_row: int | None, mapping: dict[str, str],
              needed: list[str], sheet_key: str) -> pd.DataFrame:
    """read_table; a sheet without a header row gets the workbook's other sheets named."""
    try:
        return read_table(path, encoding=encoding, sheet=sheet, header_row=header_row)
    except DataValidationError as exc:
        names = sheet_names(path) if exc.problem.startswith(("no header row found", "sheet '")) else []
        if names:
            current = names[0] if sheet is None else names[sheet - 1] if isinstance(sheet, int) else sheet
            empty = HeaderInfo(sheet=current, header_row=0, unit_row=None, columns=[])
            exc.expected = (exc.expected or "") + _sheet_hint(path, empty, mapping, encoding, sheet_key, needed)
        raise


def _sheet_hint(path: Path, info: HeaderInfo | None, mapping: dict[str, str], encoding: str,
                sheet_key: str | None, needed: list[str] | None = None) -> str:
    """The workbook's sheets and the headers of the one that matches most mapped headers."""
    if info is None or info.sheet is None:
        return ""
    names = sheet_names(path)
    wanted = set(mapping) | {c for c in needed or [] if c not in mapping.values()}

    def score(hdr: HeaderInfo) -> int:
        return len(wanted & (set(hdr.columns) | set(hdr.aliases)))

    best, best_info = None, None
    for number, name in enumerate(names, start=1):
        if name == info.sheet:
            continue
        try:
            other = locate_header(path, encoding=encoding, sheet=number)
        except DataValidationError:
            continue
        if best_info is None or score(other) > score(best_info):
            best, best_info = (number, name), other
    text = f". The workbook's sheets: {names}"
    if best_info is not None and score(best_info) > score(info):
        text += (f"; sheet '{best[1]}' (number {best[0]}) has {score(best_info)} of the {len(wanted)} "
                 f"mapped headers in row {best_info.header_row}: {best_info.columns}"
                 + (f". Set {sheet_key}: {best[1]}" if sheet_key else ""))
    elif best_info is None and len(names) > 1:
        text += " (no other sheet has a header row)"
    return text


def _total_rows(data: pd.DataFrame, path: Path, mode: str, where: _Where) -> tuple[pd.DataFrame, pd.DataFrame]:
    """County total rows (合计, 小计, 总计, 全县 ..., Total): refused, or dropped when the study says so."""
    cols = [c for c in ("county", "township_id", "township_name") if c in data.columns]
    squeezed = {c: data[c].str.replace(r"\s", "", regex=True) for c in cols}
    hit = {c: squeezed[c].str.contains(TOTAL_ROW_PATTERN, case=False, regex=True) for c in cols}
    is_total = pd.concat(hit, axis=1).any(axis=1)
    empty = pd.DataFrame(columns=["row", "county", "township_id", "township_name", "reason"])
    if not is_total.any():
        return data, empty
    rows = list(data.index[is_total])
    why = {r: next(f"{c} {excerpt(data.at[r, c])}" for c in cols if hit[c][r]) for r in rows}
    first_col = next(c for c in cols if hit[c].any())
    if mode != "drop":
        raise DataValidationError(
            path, "county total rows are not townships", column=first_col, rows=rows,
            details=[f"row {r}: {why[r]}" for r in rows],
            expected="one row per township: delete the total rows (合计, 小计, 全县 ...), or set "
                     "data.total_rows: drop")
    dropped = pd.DataFrame({
        "row": [min(where.rows([r])) for r in rows],  # a wide table: the township's first row
        "county": data.loc[rows, "county"].tolist(),
        "township_id": data.loc[rows, "township_id"].tolist(),
        "township_name": data.loc[rows, "township_name"].tolist(),
        "reason": [f"total row ({why[r]})" for r in rows],
    }).drop_duplicates(subset=["row"], ignore_index=True)
    return data.drop(index=rows), dropped


def _apply_units(data: pd.DataFrame, info: HeaderInfo | None, mapping: dict[str, str],
                 declared: dict[str, str], row_units: dict[str, str], path: Path) -> dict[str, str]:
    """Scale columns given in 万元, 千元, 万人 ... to the contract's yuan and persons.

    The file's units (a unit row or a header such as 住院总费用（万元）, or a wide table's
    unit column) and the study's ``data.units`` (keyed by header or contract column) are
    applied alike; where both give a unit they must agree. Returns the unit of each
    numeric column that has one.
    """
    contract = lambda h: mapping.get(h, h)  # noqa: E731
    numeric = ["population"] + [c for c in data.columns if c in MEASURE_COLUMNS]
    found: dict[str, tuple[str, str]] = {}
    if info is not None:
        source = f"the file's unit row (row {info.unit_row})" if info.unit_row else "the file's header"
        for header, unit in info.units.items():
            if contract(header) in numeric:
                found[contract(header)] = (unit, f"{source}, '{header}'")
    for label, unit in row_units.items():
        if contract(label) in numeric:
            found[contract(label)] = (unit, f"the file's unit column, measure '{label}'")
    study: dict[str, str] = {}
    for key, unit in declared.items():
        col = contract(key)
        if col not in numeric:
            raise DataValidationError(
                path, f"data.units names {excerpt(key)}, which is not a numeric column read from the file", column=key,
                expected=f"a header of a mapped count column or its contract name ({', '.join(numeric)})")
        study[col] = unit
    applied = {}
    for col in numeric:
        file_unit, source = found.get(col, (None, ""))
        unit = study.get(col) or file_unit
        if unit is None:
            continue
        if file_unit and col in study and UNIT_FACTORS[file_unit] != UNIT_FACTORS[study[col]]:
            raise DataValidationError(
                path, f"{source} gives the unit {file_unit} but the study's data.units says {study[col]}",
                column=col, expected="one unit for the column: correct data.units or the file")
        if not unit_fits(unit, col):
            kind = "money" if col in MONEY_COLUMNS else "persons, visits or items"
            raise DataValidationError(
                path, f"unit {unit} ({source or 'data.units'}) cannot measure this column", column=col,
                expected=f"a unit of {kind}")
        factor = UNIT_FACTORS[unit]
        if factor != 1:
            data[col] = data[col] * factor
        applied[col] = unit
    return applied


def _unit_hint(ind: Indicator, value: float, low: float, high: float, mapping: dict[str, str]) -> str:
    reverse = {v: k for k, v in mapping.items()}
    named = lambda c: f"'{c}'" + (f" (header '{reverse[c]}')" if c in reverse else "")  # noqa: E731
    for factors in ((1e3, 1e4), (1e-3, 1e-4)):
        fits = [f for f in factors if value > 0 and low <= value * f <= high]
        if not fits:
            continue
        small = fits[0] > 1
        col = ind.numerator if small else (ind.denominator or ind.numerator)
        word = "元" if col in MONEY_COLUMNS else "人" if col == "population" else "人次"
        units = " or ".join(("千" if f in (1e3, 1e-3) else "万") + word for f in fits)
        times = " or ".join(f"{(f if small else 1 / f):,.0f}" for f in fits)
        return (f"; the values look {times} times too {'small' if small else 'large'}: is {named(col)} in "
                f"{units}? Declare it in data.units")
    return ""


def _check_plausible(data: pd.DataFrame, indicators: list[Indicator], frequency: str, path: Path,
                     mapping: dict[str, str], where: _Where) -> list[str]:
    """Indicator values against the catalogue's plausible range.

    A township whose median value lies outside the range is refused (a unit mistake, such
    as a cost in 万元 read as yuan, moves every cell); single cells outside a range that
    the township's median respects are warned about and listed.
    """
    notes = []
    for ind in indicators:
        bounds = ind.plausible_range(frequency)
        if bounds is None:
            continue
        low, high = bounds
        values = ind.values(data)
        medians = values.groupby(data["township_id"], sort=False).median()
        bad = medians[(medians < low) | (medians > high)].dropna()
        if len(bad):
            names = data.groupby("township_id", sort=False)["township_name"].first()
            typical = float(bad.median())
            raise DataValidationError(
                path, f"implausible {ind.name_en} ({ind.id}) in {len(bad)} of {len(medians)} township(s): "
                f"median {typical:.4g}, outside the plausible range {low:,g} to {high:,g} {ind.unit}"
                + _unit_hint(ind, typical, low, high, mapping),
                column=ind.numerator,
                details=[f"township {t} ({names[t]}): median {m:.4g}" for t, m in bad.items()],
                expected=f"{ind.name_en} in {ind.unit} (catalogue 'plausible'); declare the file's units in "
                         "data.units if they are not the contract's (yuan, persons)")
        out = values[(values < low) | (values > high)]
        if len(out):
            cells = [f"{where.label(r, ind.numerator)} ({data.at[r, 'township_id']} "
                     f"{period_label(data.at[r, 'period'])}): {v:.4g}" for r, v in out.head(5).items()]
            note = (f"{path}: {len(out)} cell(s) of {ind.id} outside the plausible range {low:,g} to {high:,g} "
                    f"{ind.unit}: " + "; ".join(cells) + (" ..." if len(out) > 5 else ""))
            warnings.warn(note, ImplausibleValueWarning, stacklevel=4)
            notes.append(note)
    return notes


def _check_population_jumps(data: pd.DataFrame, path: Path, where: _Where) -> list[str]:
    """Warn of township-periods whose population is > 3x or < 1/3 of the township's median."""
    median = data.groupby("township_id", sort=False)["population"].transform("median")
    ratio = data["population"] / median
    jump = (ratio > POPULATION_JUMP) | (ratio < 1 / POPULATION_JUMP)
    if not jump.any():
        return []
    rows = list(data.index[jump])
    cells = [f"{where.label(r, 'population')}: township {data.at[r, 'township_id']} ({data.at[r, 'township_name']}) "
             f"{period_label(data.at[r, 'period'])} population {data.at[r, 'population']:,.0f}, median "
             f"{median[r]:,.0f}" for r in rows[:5]]
    note = (f"{path}: {len(rows)} population value(s) more than {POPULATION_JUMP:g} times above or below the "
            "township's median: " + "; ".join(cells) + (" ..." if len(rows) > 5 else ""))
    warnings.warn(note, PopulationJumpWarning, stacklevel=4)
    return [note]


def _text(col: pd.Series) -> pd.Series:
    def clean(v):
        if isinstance(v, float) and v.is_integer():  # an Excel id cell read as a number
            v = int(v)
        return str(v).strip()
    return col.map(clean).astype(object)


def _reject_empty(data: pd.DataFrame, cols: list[str], path: Path) -> None:
    for col in cols:
        empty = data.index[data[col] == ""]
        if len(empty):
            raise DataValidationError(path, "empty cell", column=col, rows=list(empty),
                                      expected="a value in every row")


def _parse_periods(col: pd.Series, frequency: str, path: Path, column: str) -> pd.Series:
    parsed, bad = {}, []
    for row, value in col.items():
        key = value if not isinstance(value, str) else value.strip()
        if key not in parsed:
            try:
                parsed[key] = parse_period(key, frequency)
            except PeriodParseError:
                parsed[key] = None
        if parsed[key] is None:
            bad.append((row, value))
    if bad:
        raise DataValidationError(
            path, "unparseable period", column=column, rows=[r for r, _ in bad],
            details=[f"row {r}: {excerpt(v)}" for r, v in bad], expected=expected_format(frequency))
    return pd.Series(pd.PeriodIndex([parsed[v if not isinstance(v, str) else v.strip()] for v in col],
                                    freq=FREQUENCIES[frequency]), index=col.index)


def _parse_numbers(col: pd.Series, path: Path, column: str) -> pd.Series:
    """Numbers from text cells: ``12,345`` and ``12 345`` are numbers, ``—`` or ``n/a`` are not.

    Empty cells become missing (reported, never filled).
    """
    text = col.astype(str).str.replace(r"[\s\u00a0\u3000]", "", regex=True)
    thousands = text.str.fullmatch(_THOUSANDS)
    text = text.where(~thousands, text.str.replace(",", "", regex=False))
    empty = text == ""
    numbers = pd.to_numeric(text.where(~empty), errors="coerce")
    bad = (numbers.isna() & ~empty) | np.isinf(numbers.fillna(0))
    if bad.any():
        rows = list(col.index[bad])
        raise DataValidationError(
            path, "text in a numeric cell", column=column, rows=rows,
            details=[f"row {r}: {excerpt(col[r])}" for r in rows],
            expected="a number (thousands separators such as 12,345 are accepted; leave unknown cells empty)")
    return numbers.astype(float)


def _check_schema(data: pd.DataFrame, path: Path) -> None:
    """Contract rules checked with pandera; failures become messages naming rows."""
    measures = {c: pa.Column(float, pa.Check.ge(0, error="negative value"), nullable=True)
                for c in data.columns if c in MEASURE_COLUMNS}
    schema = pa.DataFrameSchema(
        {
            "population": pa.Column(float, pa.Check.gt(0, error="zero or negative population"),
                                    nullable=False),
            **measures,
        },
        unique=["township_id", "period"],
        strict=False,
    )
    try:
        schema.validate(data, lazy=True)
    except SchemaErrors as exc:
        cases = exc.failure_cases
        first = cases.iloc[0]
        column = first["column"]
        group = cases[(cases["column"] == column) & (cases["check"] == first["check"])]
        rows = sorted(int(i) for i in group["index"].dropna().unique())
        check = str(first["check"])
        if column == "population" and "not_nullable" in check:
            raise DataValidationError(path, "missing population", column="population", rows=rows,
                                      expected="the resident population (> 0) in every row") from None
        if column == "population":
            raise DataValidationError(
                path, "zero or negative population", column="population", rows=rows,
                details=[f"row {r}: {data.at[r, 'population']:g}" for r in rows],
                expected="a population above 0 (it is the denominator of per-capita rates)") from None
        if "unique" in check or column in ("township_id", "period"):
            dup = data[data.duplicated(["township_id", "period"], keep=False)]
            rows = list(dup.index)
            raise DataValidationError(
                path, "duplicate township-period rows", column="township_id, period", rows=rows,
                details=[f"row {r}: township {dup.at[r, 'township_id']}, period {period_label(dup.at[r, 'period'])}"
                         for r in rows],
                expected="one row per township and period") from None
        raise DataValidationError(
            path, "negative count", column=column, rows=rows,
            details=[f"row {r}: {data.at[r, column]:g}" for r in rows],
            expected="a count of 0 or more") from None


def _check_not_above(data: pd.DataFrame, num: str, den: str, path: Path) -> None:
    above = data[num] > data[den]
    if above.any():
        rows = list(data.index[above])
        raise DataValidationError(
            path, f"numerator '{num}' above its denominator '{den}'", column=num, rows=rows,
            details=[f"row {r}: {num} {data.at[r, num]:g} > {den} {data.at[r, den]:g}" for r in rows],
            expected=f"{num} <= {den}")


def _load_pilots(path: Path, mapping: dict[str, str], panel: pd.DataFrame, frequency: str,
                 encoding: str, sheet, *, header_row: int | None = None,
                 sheet_key: str | None = None) -> pd.DataFrame:
    raw = _read_raw(path, encoding=encoding, sheet=sheet, header_row=header_row, mapping=mapping,
                    needed=list(PILOT_COLUMNS), sheet_key=sheet_key)
    pilots = _map_columns(raw, mapping, list(PILOT_COLUMNS), path, sheet=sheet, encoding=encoding,
                          sheet_key=sheet_key)[list(PILOT_COLUMNS)]
    pilots["township_id"] = _text(pilots["township_id"])
    pilots["model"] = _text(pilots["model"])
    _reject_empty(pilots, ["township_id", "model"], path)
    dup = pilots.index[pilots.duplicated("township_id", keep=False)]
    if len(dup):
        raise DataValidationError(
            path, "township listed more than once", column="township_id", rows=list(dup),
            details=[f"row {r}: {pilots.at[r, 'township_id']}" for r in dup],
            expected="one row per pilot township")
    pilots["pilot_start"] = _parse_periods(pilots["pilot_start"], frequency, path, "pilot_start")
    known = set(panel["township_id"])
    absent = pilots.index[~pilots["township_id"].isin(known)]
    if len(absent):
        raise DataValidationError(
            path, "pilot township absent from the panel", column="township_id", rows=list(absent),
            details=[f"row {r}: {pilots.at[r, 'township_id']}" for r in absent],
            expected="a township_id that appears in the panel (inside the study window)")
    first, last = panel["period"].min(), panel["period"].max()
    outside = pilots.index[(pilots["pilot_start"] <= first) | (pilots["pilot_start"] > last)]
    if len(outside):
        raise DataValidationError(
            path, "pilot start outside the panel's range", column="pilot_start", rows=list(outside),
            details=[f"row {r}: {pilots.at[r, 'township_id']} starts {period_label(pilots.at[r, 'pilot_start'])}"
                     for r in outside],
            expected=f"a start after {period_label(first)} (at least one pre-period) "
                     f"and no later than {period_label(last)}")
    if known <= set(pilots["township_id"]):
        raise DataValidationError(
            path, "no comparison townships left: every township of the panel is a pilot",
            column="township_id", expected="at least one township that never joined the pilot")
    pilots["cohort"] = pilots["pilot_start"].map(period_label)
    return pilots.reset_index(drop=True)


def _derive_treatment(data: pd.DataFrame, pilots: pd.DataFrame, frequency: str) -> pd.DataFrame:
    freq = FREQUENCIES[frequency]
    first = data["period"].min()
    ordinal = {p: i + 1 for i, p in enumerate(pd.period_range(first, data["period"].max(), freq=freq))}
    data = data.sort_values(["county", "township_id", "period"]).copy()
    data["time"] = data["period"].map(ordinal).astype(int)
    info = pilots.set_index("township_id")
    data["treated"] = data["township_id"].isin(info.index).astype(int)
    data["model"] = data["township_id"].map(info["model"]).astype(object)
    data["cohort"] = data["township_id"].map(info["cohort"]).astype(object)
    data["first_treat"] = data["township_id"].map(info["pilot_start"].map(ordinal)).fillna(0).astype(int)
    event = data["time"] - data["first_treat"]
    data["event_time"] = event.where(data["treated"] == 1).astype("Int64")
    data["post"] = ((data["treated"] == 1) & (data["time"] >= data["first_treat"])).astype(int)
    data.index.name = "row"
    return data


def _find_gaps(data: pd.DataFrame, frequency: str) -> pd.DataFrame:
    full = pd.period_range(data["period"].min(), data["period"].max(), freq=FREQUENCIES[frequency])
    rows = []
    for (tid, name), group in data.groupby(["township_id", "township_name"], sort=True):
        missing = full.difference(pd.PeriodIndex(group["period"]))
        if len(missing):
            rows.append({"township_id": tid, "township_name": name,
                         "missing_periods": ", ".join(period_label(p) for p in missing)})
    return pd.DataFrame(rows, columns=["township_id", "township_name", "missing_periods"])


def _exclude_townships(data: pd.DataFrame, exclude: Sequence[str], path: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Leave out the townships the study lists by id or name (``townships.exclude``)."""
    wanted = [str(x).strip() for x in exclude]
    by_id, by_name = set(data["township_id"]), set(data["township_name"])
    unknown = [x for x in wanted if x not in by_id and x not in by_name]
    if unknown:
        raise DataValidationError(
            path, f"townships.exclude lists {excerpt(unknown[0])}, which is neither a township id nor a name in the panel",
            column="township_id", details=[f"not found: {excerpt(x)}" for x in unknown],
            expected="ids or names as the panel writes them (inside the study window)")
    out = data["township_id"].isin(wanted) | data["township_name"].isin(wanted)
    excluded = (data.loc[out, ["township_id", "township_name"]].drop_duplicates("township_id")
                .assign(reason="townships.exclude").reset_index(drop=True))
    return data[~out], excluded


def incomplete_townships(data: pd.DataFrame, columns: Sequence[str], frequency: str) -> pd.DataFrame:
    """Townships lacking a period of the panel's range, or with an empty cell in ``columns``.

    One row per incomplete township: ``township_id``, ``township_name``,
    ``missing_periods`` (count), ``missing_labels`` (the first few periods),
    ``empty_cells`` (count over ``columns``) and ``empty_columns``.
    """
    full = pd.period_range(data["period"].min(), data["period"].max(), freq=FREQUENCIES[frequency])
    cols = [c for c in columns if c in data.columns]
    rows = []
    for (tid, name), group in data.groupby(["township_id", "township_name"], sort=True):
        missing = full.difference(pd.PeriodIndex(group["period"]))
        empty = group[cols].isna().sum() if cols else pd.Series(dtype=int)
        if len(missing) or empty.sum():
            rows.append({"township_id": tid, "township_name": name, "missing_periods": len(missing),
                         "missing_labels": ", ".join(period_label(p) for p in missing[:6])
                         + (" ..." if len(missing) > 6 else ""),
                         "empty_cells": int(empty.sum()),
                         "empty_columns": ", ".join(c for c in cols if empty.get(c, 0))})
    return pd.DataFrame(rows, columns=["township_id", "township_name", "missing_periods", "missing_labels",
                                       "empty_cells", "empty_columns"])


def _incomplete_text(row) -> str:
    parts = []
    if row.missing_periods:
        parts.append(f"{row.missing_periods} missing period(s) {row.missing_labels}")
    if row.empty_cells:
        parts.append(f"{row.empty_cells} empty cell(s) in {row.empty_columns}")
    return "; ".join(parts)
