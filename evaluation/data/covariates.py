"""Township covariates: characteristics that may explain which townships became pilots.

A study declares them in its ``covariates:`` block (:class:`evaluation.study.config.
CovariateDeclaration`):

* **a township table** (``covariates.table``): one row per township, e.g. distance to the
  county seat, beds, health workers, mountainous (是/否), read by the one table reader
  (:func:`evaluation.data.fileio.read_table`: CSV or Excel, title rows skipped);
* **baseline values from the panel** (``covariates.baseline``): each township's value
  over a pre-period, as a ratio of sums for an indicator (the indicator of the window's
  pooled counts) and a mean for a panel column, named ``baseline_<name>``; the window
  must end before the first pilot starts;
* **time-varying controls** (``covariates.time_varying``): panel columns, kept by the
  panel loader and averaged when the analysis runs at a coarser frequency.

The time-invariant ones are attached to the panel's rows (constant within a township) and
kept as one row per township in :attr:`Panel.covariates`. Bad input is rejected like any
data-contract violation, naming the file, row and header: text in a numeric column, a
binary column with a third value, a township listed twice, a table whose ids match no
township. Empty cells and townships absent from the table are not errors: they are listed
(:attr:`CovariateSet.missing`), and each covariate-based method leaves those townships
out and says so on the page. A covariate with one value for every township is noted; the
methods leave it out (it cannot explain anything).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from evaluation.errors import DataValidationError, excerpt
from evaluation.study.config import BASELINE_PREFIX, BINARY_KIND, CONTINUOUS_KIND, CovariateDeclaration
from evaluation.study.periods import FREQUENCIES, period_label, span_days

# Cell texts read as yes (1) and no (0) in a binary column.
YES = frozenset({"是", "有", "y", "yes", "true", "1", "1.0", "√", "山区"})
NO = frozenset({"否", "无", "n", "no", "false", "0", "0.0", "×", "非山区"})


@dataclass(frozen=True)
class Covariate:
    """One declared covariate: its name, the label shown to readers (the user's header
    unless the study gives one), ``binary`` or ``continuous``, and where it comes from
    (``table``, ``baseline`` or ``panel`` for a time-varying control)."""

    name: str
    label: str
    kind: str
    source: str
    time_varying: bool = False
    label_en: str | None = None  # for English readers; None: the name


@dataclass
class CovariateSet:
    """The study's covariates after loading.

    ``values``: one row per township of the panel (index ``township_id``), the
    time-invariant covariates in columns, NaN where unknown. ``missing``: townships with an
    unknown value (``township_id``, ``township_name``, ``pilot``, ``covariate``,
    ``reason``). ``constant``: covariates with one value for every township. ``notes``:
    what loading noticed, for the data-quality chapter and ``evaluation validate``.
    """

    info: list[Covariate]
    values: pd.DataFrame
    missing: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(
        columns=["township_id", "township_name", "pilot", "covariate", "reason"]))
    constant: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.info]

    @property
    def time_varying(self) -> list[str]:
        return [c.name for c in self.info if c.time_varying]

    def labels(self, language: str = "zh") -> dict[str, str]:
        """Reader labels by name (the user's header; English readers get the name when
        the header is Chinese and no label was given)."""
        if language == "zh":
            return {c.name: c.label for c in self.info}
        return {c.name: c.label_en or (c.label if c.label.isascii() else c.name) for c in self.info}

    def kind(self, name: str) -> str:
        return next(c.kind for c in self.info if c.name == name)

    def usable(self, names) -> tuple[list[str], list[str]]:
        """``names`` split into the usable and the constant ones (left out)."""
        names = list(names)
        return [n for n in names if n not in self.constant], [n for n in names if n in self.constant]

    def complete(self, names) -> pd.Index:
        """Townships with a value of every covariate in ``names``."""
        return self.values.index[self.values[list(names)].notna().all(axis=1)]


def load_covariates(declaration: CovariateDeclaration, data: pd.DataFrame, *, frequency: str, panel_path: Path,
                    table_path: Path | None, encoding: str = "auto", indicators=None,
                    panel_headers: dict[str, str] | None = None) -> CovariateSet:
    """The declared covariates of the panel ``data`` (the analysis panel, with ``treated``
    and ``first_treat``), validated; see the module docstring.

    ``indicators``: the catalogue (``Catalogue``) the baseline indicators are taken from;
    ``panel_headers``: contract column -> the user's header, for the baseline labels.
    """
    towns = data.drop_duplicates("township_id").set_index("township_id")[["township_name", "treated"]]
    values = pd.DataFrame(index=pd.Index(towns.index, name="township_id"))
    info: list[Covariate] = []
    missing_rows: list[dict] = []
    notes: list[str] = []
    if declaration.table is not None:
        from evaluation.data.panel import _naming_headers  # panel imports this module

        with _naming_headers(declaration.table.columns):
            table, table_info, table_notes = _read_table(declaration, table_path, encoding, towns)
        values = values.join(table)
        info += table_info
        notes += table_notes
        for name in table.columns:
            absent = values.index[values[name].isna()]
            for t in absent:
                in_table = t in table.index
                missing_rows.append({"township_id": t, "township_name": towns.at[t, "township_name"],
                                     "pilot": bool(towns.at[t, "treated"]), "covariate": name,
                                     "reason": "empty cell" if in_table else "not in the township table"})
    if declaration.baseline is not None:
        base, base_info, base_notes = _baseline(declaration, data, frequency, indicators, panel_path, panel_headers or {})
        values = values.join(base)
        info += base_info
        notes += base_notes
        for name in base.columns:
            for t in values.index[values[name].isna()]:
                missing_rows.append({"township_id": t, "township_name": towns.at[t, "township_name"],
                                     "pilot": bool(towns.at[t, "treated"]), "covariate": name,
                                     "reason": "no value in the baseline window"})
    for name in declaration.time_varying:
        info.append(Covariate(name=name, label=declaration.labels.get(name, name),
                              kind=declaration.kinds.get(name, CONTINUOUS_KIND), source="panel", time_varying=True))
    constant = [c for c in values.columns if values[c].dropna().nunique() <= 1]
    for c in constant:
        notes.append(f"covariate '{c}' has one value for every township: it cannot explain which townships became "
                     "pilots and is left out of the propensity score and the subgroups")
    missing = pd.DataFrame(missing_rows, columns=["township_id", "township_name", "pilot", "covariate", "reason"])
    if len(missing):
        towns_missing = missing["township_id"].nunique()
        notes.append(f"{towns_missing} township(s) lack a covariate value ({len(missing)} value(s)); methods that "
                     "use covariates leave them out and say so")
    return CovariateSet(info=info, values=values, missing=missing, constant=constant, notes=notes)


def attach(data: pd.DataFrame, covariates: CovariateSet) -> pd.DataFrame:
    """``data`` with the time-invariant covariates as columns (constant within a township)."""
    if covariates.values.empty or not len(covariates.values.columns):
        return data
    joined = data.drop(columns=[c for c in covariates.values.columns if c in data.columns])
    mapped = {c: joined["township_id"].map(covariates.values[c]) for c in covariates.values.columns}
    return joined.assign(**mapped)


# ----------------------------------------------------------------------------- the township table

def _read_table(declaration: CovariateDeclaration, path: Path, encoding: str,
                towns: pd.DataFrame) -> tuple[pd.DataFrame, list[Covariate], list[str]]:
    from evaluation.data.panel import _map_columns, _parse_numbers, _read_raw, _text  # panel imports this module

    spec = declaration.table
    mapping = dict(spec.columns)
    needed = list(mapping.values())
    raw = _read_raw(path, encoding=encoding, sheet=spec.sheet, header_row=spec.header_row, mapping=mapping,
                    needed=needed, sheet_key="covariates.table.sheet")
    info = raw.attrs.get("header")
    if info is not None:  # a parent/child header written as the study gives it
        mapping = {(info.aliases.get(h, h) if h not in raw.columns else h): c for h, c in mapping.items()}
    table = _map_columns(raw, mapping, needed, path, sheet=spec.sheet, encoding=encoding,
                         sheet_key="covariates.table.sheet")[needed]
    headers = {v: k for k, v in mapping.items()}
    table["township_id"] = _text(table["township_id"])
    empty_id = table.index[table["township_id"] == ""]
    if len(empty_id):
        raise DataValidationError(path, "empty township id", column="township_id", rows=list(empty_id),
                                  header=headers["township_id"], expected="a township id in every row")
    dup = table.index[table.duplicated("township_id", keep=False)]
    if len(dup):
        raise DataValidationError(path, "township listed more than once", column="township_id", rows=list(dup),
                                  header=headers["township_id"],
                                  details=[f"row {r}: {table.at[r, 'township_id']}" for r in dup],
                                  expected="one row per township")
    known = set(towns.index)
    matched = table["township_id"].isin(known)
    if not matched.any():
        raise DataValidationError(
            path, f"none of the table's {len(table)} township ids is a township of the panel (the table has "
            f"{excerpt(table['township_id'].iloc[0])}, the panel {excerpt(next(iter(known)))})",
            column="township_id", header=headers["township_id"],
            expected="the panel's township ids (the same codes, as text)")
    notes = []
    if (~matched).any():
        extra = table.loc[~matched, "township_id"].tolist()
        notes.append(f"{path.name}: {len(extra)} township(s) of the table are not in the analysis panel (outside "
                     f"it or excluded): {', '.join(extra[:5])}{' ...' if len(extra) > 5 else ''}")
    table = table[matched]
    out = pd.DataFrame(index=pd.Index(table["township_id"], name="township_id"))
    covariates = []
    for name in needed:
        if name == "township_id":
            continue
        kind = declaration.kinds.get(name)
        column = table[name]
        yes_no = _yes_no(column)
        if kind == BINARY_KIND or (kind is None and yes_no is not None):
            if yes_no is None:
                text = column.map(lambda v: str(v).strip().lower())
                bad = column.index[(text != "") & ~text.isin(YES | NO)]
                raise DataValidationError(
                    path, "a binary covariate with a value that is neither yes nor no", column=name,
                    header=headers[name], rows=list(bad), details=[f"row {r}: {excerpt(column[r])}" for r in bad[:10]],
                    expected="是/否, 有/无, yes/no or 1/0 (leave unknown cells empty)")
            values, kind = yes_no, BINARY_KIND
        else:
            values = _parse_numbers(column, path, name)
            kind = CONTINUOUS_KIND
        out[name] = values.to_numpy()
        covariates.append(Covariate(name=name, label=declaration.labels.get(name, headers[name]), kind=kind,
                                    source="table"))
    return out, covariates, notes


def _yes_no(column: pd.Series) -> pd.Series | None:
    """1/0 (NaN for an empty cell) when every non-empty cell reads as yes or no, else None."""
    text = column.map(lambda v: str(v).strip().lower())
    filled = text[text != ""]
    if filled.empty or not filled.isin(YES | NO).all():
        return None
    return text.map(lambda v: 1.0 if v in YES else (0.0 if v in NO else np.nan)).astype(float)


# ----------------------------------------------------------------------------- baseline values

def _baseline(declaration: CovariateDeclaration, data: pd.DataFrame, frequency: str,
              catalogue, path: Path, panel_headers: dict[str, str]) -> tuple[pd.DataFrame, list[Covariate], list[str]]:
    base = declaration.baseline
    first, last = span_days(base.start, base.end, frequency)
    periods = pd.PeriodIndex(data["period"], freq=FREQUENCIES[frequency])
    inside = (periods.start_time >= first) & (periods.end_time.normalize() <= last)
    window = data[np.asarray(inside)]
    label = f"{base.start}–{base.end}"
    if window.empty:
        raise DataValidationError(
            path, f"covariates.baseline: no period of the panel lies wholly inside the baseline window {label}",
            column="period", expected=f"a window of whole {frequency}s inside the panel's periods "
                                      f"({period_label(data['period'].min())} .. {period_label(data['period'].max())})")
    pilots = data[data["first_treat"] > 0]
    if len(pilots):
        first_start = pilots.loc[pilots["post"] == 1, "period"].min()
        if window["period"].max() >= first_start:
            raise DataValidationError(
                path, f"covariates.baseline: the baseline window {label} reaches the first pilot start "
                f"({period_label(first_start)}): baseline values would include effects of the pilot",
                column="period", expected=f"a window that ends before {period_label(first_start)}")
    out = pd.DataFrame(index=pd.Index(data["township_id"].unique(), name="township_id"))
    info = []
    for column in base.columns:
        name = BASELINE_PREFIX + column
        out[name] = window.groupby("township_id")[column].mean()
        info.append(Covariate(name=name, label=declaration.labels.get(name, f"基线{panel_headers.get(column, column)}，{label}"),
                              kind=declaration.kinds.get(name, CONTINUOUS_KIND), source="baseline",
                              label_en=f"baseline {column.replace('_', ' ')}, {label}"))
    for ind_id in base.indicators:
        ind = catalogue[ind_id]
        name = BASELINE_PREFIX + ind_id
        missing = [c for c in (ind.numerator, ind.denominator) if c and c not in window.columns]
        if missing:
            raise DataValidationError(path, f"covariates.baseline: indicator '{ind_id}' needs panel column(s) {missing}",
                                      column=missing[0], expected="the column mapped in data.columns")
        out[name] = ind.aggregate(window, "township_id")
        info.append(Covariate(name=name, label=declaration.labels.get(name, f"基线{ind.name_zh}，{label}"),
                              kind=declaration.kinds.get(name, CONTINUOUS_KIND), source="baseline",
                              label_en=f"baseline {ind.name_en.lower()}, {label}"))
    return out, info, []
