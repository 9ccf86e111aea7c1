"""The one loader of township panels: read, map, validate, derive the analysis panel.

Reads the raw township-by-period panel and the pilot table (CSV in UTF-8, UTF-8 with BOM
or GBK, or Excel .xlsx), renames the user's headers onto the data contract, rejects input
that breaks the contract with a message naming the file, row or column and what was
expected, and derives the analysis columns:

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

import warnings
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pandera.pandas as pa
from pandera.errors import SchemaErrors

from evaluation.data.fileio import atomic_path, read_table
from evaluation.errors import DataValidationError
from evaluation.study.catalogue import Indicator, required_columns, share_pairs
from evaluation.study.config import PANEL_KEY_COLUMNS, PILOT_COLUMNS, Study
from evaluation.study.periods import FREQUENCIES, PeriodParseError, expected_format, parse_period, period_label

# Every numeric column the data contract knows (counts, and the cost total in yuan).
MEASURE_COLUMNS = (
    "visits_total", "visits_in_county", "visits_primary", "admissions_total",
    "referrals_out_county", "thc_outpatient_visits", "thc_admissions",
    "inpatient_cost_total", "services_offered", "referrals_down",
)
_THOUSANDS = r"[+-]?\d{1,3}(?:,\d{3})+(?:\.\d+)?"


class PanelGapWarning(UserWarning):
    """Some townships lack some periods; the gaps are listed, never filled."""


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
        }

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
        return "\n".join(lines)


def load_panel(study: Study) -> Panel:
    """Load and validate the study's panel and pilot table."""
    start, end = study.window_periods
    return load_panel_files(
        study.panel_path, study.pilots_path,
        indicators=study.selected_indicators(),
        columns=study.data.columns, pilot_columns=study.data.pilot_columns,
        frequency=study.frequency, window=(start, end), encoding=study.data.encoding,
        panel_sheet=study.data.panel_sheet, pilot_sheet=study.data.pilot_sheet,
        header_row=study.data.header_row, pilot_header_row=study.data.pilot_header_row,
    )


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
    header_row: int | None = None,
    pilot_header_row: int | None = None,
) -> Panel:
    """Load and validate a panel and its pilot table given explicitly (no study file).

    Sheets are named or numbered from 1; header rows are 1-based spreadsheet rows, found
    automatically when None (:func:`evaluation.data.fileio.locate_header`).
    """
    panel_path, pilots_path = Path(panel_path), Path(pilots_path)
    with _naming_headers(columns):
        data = _read_panel(panel_path, columns or {}, indicators, frequency, encoding, panel_sheet,
                           header_row=header_row)
    start, end = window
    if start is not None:
        data = data[data["period"] >= start]
    if end is not None:
        data = data[data["period"] <= end]
    if data.empty:
        raise DataValidationError(panel_path, "no rows inside the study window",
                                  column="period", expected=f"periods between {start} and {end}")
    with _naming_headers(pilot_columns):
        pilots = _load_pilots(pilots_path, pilot_columns or {}, data, frequency, encoding, pilot_sheet,
                              header_row=pilot_header_row)
    data = _derive_treatment(data, pilots, frequency)
    gaps = _find_gaps(data, frequency)
    if not gaps.empty:
        listing = "; ".join(f"{g.township_id} ({g.township_name}): {g.missing_periods}"
                            for g in gaps.head(5).itertuples())
        warnings.warn(f"{panel_path}: {len(gaps)} township(s) lack periods (not filled): {listing}",
                      PanelGapWarning, stacklevel=2)
    return Panel(data=data, pilots=pilots, frequency=frequency, panel_path=panel_path,
                 pilots_path=pilots_path, indicators=list(indicators), gaps=gaps)


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


def _read_panel(panel_path: Path, columns: dict[str, str], indicators: list[Indicator],
                frequency: str, encoding: str, sheet, *, header_row: int | None = None) -> pd.DataFrame:
    needed = list(PANEL_KEY_COLUMNS) + required_columns(indicators)
    raw = read_table(panel_path, encoding=encoding, sheet=sheet, header_row=header_row)
    data = _map_columns(raw, columns, needed, panel_path)
    optional = [c for c in MEASURE_COLUMNS if c in data.columns and c not in needed]
    data = data[needed + optional]
    for col in ("county", "township_id", "township_name"):
        data[col] = _text(data[col])
    _reject_empty(data, ["county", "township_id"], panel_path)
    data["period"] = _parse_periods(data["period"], frequency, panel_path, "period")
    for col in ["population"] + [c for c in data.columns if c in MEASURE_COLUMNS]:
        data[col] = _parse_numbers(data[col], panel_path, col)
    _check_schema(data, panel_path)
    for num, den in share_pairs(indicators):
        _check_not_above(data, num, den, panel_path)
    return data


def _map_columns(raw: pd.DataFrame, mapping: dict[str, str], needed: list[str], path: Path) -> pd.DataFrame:
    missing_headers = [h for h in mapping if h not in raw.columns]
    if missing_headers:
        h = missing_headers[0]
        raise DataValidationError(
            path, f"header '{h}' (mapped to '{mapping[h]}' in the study file) not found",
            column=h, expected=f"one of the file's headers {list(raw.columns)}")
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
            path, f"missing column {names}", column=missing[0],
            expected="the data contract's columns, or a mapping from your headers in the study file's data.columns")
    return data.copy()


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
            details=[f"row {r}: {v!r}" for r, v in bad], expected=expected_format(frequency))
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
            details=[f"row {r}: {col[r]!r}" for r in rows],
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
                 encoding: str, sheet, *, header_row: int | None = None) -> pd.DataFrame:
    raw = read_table(path, encoding=encoding, sheet=sheet, header_row=header_row)
    pilots = _map_columns(raw, mapping, list(PILOT_COLUMNS), path)[list(PILOT_COLUMNS)]
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
