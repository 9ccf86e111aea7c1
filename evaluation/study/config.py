"""Study file (YAML) -> typed, checked configuration.

A study names its data files (paths relative to the study file), maps the user's column
headers (Chinese included) onto the data contract, and fixes the frequency, window,
indicators, COVID-19 handling, the report's titles and the analysis plan (``analysis:``,
:mod:`evaluation.study.plan`: every choice the chapters make, with the random seed).
Unknown keys, wrong types and missing files are rejected with the key's name.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Annotated, Literal

import pandas as pd
import yaml
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator

from evaluation.errors import StudyConfigError, excerpt
from evaluation.paths import study_output_dir
from evaluation.study.catalogue import MEASURE_COLUMNS, UNIT_FACTORS, Indicator, load_catalogue
from evaluation.study.periods import (
    FREQUENCIES,
    PeriodParseError,
    is_coarser,
    overlapping_periods,
    parse_any_period,
    parse_period,
    span_days,
)
from evaluation.study.plan import AnalysisPlan, DurationError, Settings

PANEL_KEY_COLUMNS = ("county", "township_id", "township_name", "period", "population")
PILOT_COLUMNS = ("township_id", "pilot_start", "model")


def _period_text(value):
    """YAML reads ``2019`` as an int and ``2019-03-01`` as a date: keep them as text."""
    if value is None or isinstance(value, str):
        return value
    return str(value)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=False, frozen=True, allow_inf_nan=False)


MAX_TITLE = 200  # characters of a title: it heads every page


class Titles(_Strict):
    zh: str = Field(min_length=1, max_length=MAX_TITLE)
    en: str = Field(min_length=1, max_length=MAX_TITLE)


class WideLayout(_Strict):
    """A wide panel: one row per township and measure, one column per period.

    ``measure_column`` is the header of the column that names each row's measure (its
    values are mapped onto the contract like headers, through ``data.columns``);
    ``unit_column`` optionally the header of a column giving each row's unit.
    """

    measure_column: str
    unit_column: str | None = None


class DataFiles(_Strict):
    """Where the data files are and how to read them (README, "Data contract").

    ``panel_sheet`` / ``pilot_sheet``: a sheet name, or its 1-based number (1 = the first
    sheet); the first sheet when omitted. ``header_row`` / ``pilot_header_row``: the
    1-based row of the column headers (the upper row of a two-level header); found
    automatically when omitted (title rows skipped, a unit row recognised).
    ``total_rows``: ``reject`` (default) or ``drop`` county total rows (合计, 小计, 全县 ...).
    ``units``: a header or contract column -> its unit (``万元``), scaled to yuan/persons.
    ``layout``: ``long`` (one row per township and period) or ``wide`` (see ``wide``).
    """

    panel: str
    pilots: str
    truth: str | None = None
    encoding: Literal["auto", "utf-8", "utf-8-sig", "gbk", "gb18030", "big5"] = "auto"
    panel_sheet: int | str | None = None
    pilot_sheet: int | str | None = None
    header_row: Annotated[int, Field(ge=1)] | None = None
    pilot_header_row: Annotated[int, Field(ge=1)] | None = None
    columns: dict[str, str] = Field(default_factory=dict)
    pilot_columns: dict[str, str] = Field(default_factory=dict)
    total_rows: Literal["reject", "drop"] = "reject"
    units: dict[str, str] = Field(default_factory=dict)
    layout: Literal["long", "wide"] = "long"
    wide: WideLayout | None = None

    @field_validator("panel_sheet", "pilot_sheet")
    @classmethod
    def _sheet_from_one(cls, sheet):
        if isinstance(sheet, int) and sheet < 1:
            raise ValueError(f"sheets are numbered from 1 (the first sheet), got {sheet}; or give the sheet's name")
        return sheet

    @field_validator("units")
    @classmethod
    def _known_units(cls, units: dict[str, str]) -> dict[str, str]:
        for header, unit in units.items():
            if unit not in UNIT_FACTORS:
                raise ValueError(f"unknown unit '{unit}' for '{header}'; known units: {', '.join(UNIT_FACTORS)}")
        return units



class Window(_Strict):
    start: str | None = None
    end: str | None = None
    _text = field_validator("start", "end", mode="before")(_period_text)


class CovidPhase(_Strict):
    """One COVID-19 phase, from the first day of ``start`` to the last day of ``end``.

    The labels may be months (``2020-01``), quarters (``2020Q1``) or years (``2020``)
    whatever the study's frequency, so one set of phases, written in months, serves
    monthly, quarterly and annual data. On coarser data a phase covers every period it
    overlaps, partly or wholly: ``covid.handling: exclude`` drops all of them, and the ITS
    phase term is the share of each period's days inside the phase (1 in a month of the
    phase, 30/91 in a quarter holding one of its months) rather than a 0/1 dummy, so a
    quarter that is mostly normal is mostly treated as normal.
    """

    name: str
    start: str
    end: str
    _text = field_validator("start", "end", mode="before")(_period_text)


class Covid(_Strict):
    """``handling``: ``phases`` (terms in the models), ``exclude`` (drop the periods that
    overlap a phase) or ``ignore``; ``phases``: :class:`CovidPhase` in time order."""

    handling: Literal["phases", "exclude", "ignore"] = "phases"
    phases: list[CovidPhase] = Field(default_factory=list)


def _ids_text(value):
    """Township ids written as YAML numbers (``361121101``) are ids, not numbers."""
    if isinstance(value, list):
        return [v if isinstance(v, str) else str(v) for v in value]
    return value


class Townships(_Strict):
    """Which townships enter the analysis, and what happens to incomplete ones.

    ``gaps``: ``analyse`` (default) keeps every township; each method uses every
    observation it validly can, and methods that need a complete panel (synthetic control,
    synthetic DiD, Goodman-Bacon) leave out the incomplete townships and say so.
    ``drop`` leaves every township with a missing period or an empty cell (in a column
    the study's indicators read) out of the whole study, listed in ``validate`` and the
    data-quality chapter. ``fail`` rejects such data, naming the townships.
    """

    exclude: list[str] = Field(default_factory=list)
    gaps: Literal["analyse", "drop", "fail"] = "analyse"
    _ids = field_validator("exclude", mode="before")(_ids_text)


BINARY_KIND, CONTINUOUS_KIND = "binary", "continuous"
BASELINE_PREFIX = "baseline_"  # baseline covariates are named baseline_<column or indicator>


class CovariateTable(_Strict):
    """A township table: one row per township, its characteristics in columns.

    ``file`` is relative to the study file; ``sheet`` and ``header_row`` as for the panel
    (found automatically when omitted); ``columns`` maps the table's headers to covariate
    names, one of them onto ``township_id``. The header is the covariate's label in the
    report unless ``covariates.labels`` gives another.
    """

    file: str
    sheet: int | str | None = None
    header_row: Annotated[int, Field(ge=1)] | None = None
    columns: dict[str, str]

    @field_validator("columns")
    @classmethod
    def _names(cls, columns: dict[str, str]) -> dict[str, str]:
        if "township_id" not in columns.values():
            raise ValueError("map the table's township id header onto township_id (e.g. 乡镇编码: township_id)")
        if len(columns) < 2:
            raise ValueError("the table maps no covariate: add its headers (e.g. 床位数: beds)")
        for name in columns.values():
            if not re.fullmatch(r"[A-Za-z][A-Za-z0-9_]*", name):
                raise ValueError(f"covariate name {excerpt(name)}: use letters, digits and _ (e.g. distance_km); "
                                 "the header stays the label in the report")
        return columns


class BaselineCovariates(_Strict):
    """Time-invariant covariates taken from the panel: each township's mean over a
    pre-period (``start`` .. ``end``, period labels of any frequency), of panel columns
    (``population``, count columns) and of indicators (ids from the catalogue), named
    ``baseline_<column or id>``. The window must end before the first pilot starts, so
    the baseline cannot reflect the pilot."""

    start: str
    end: str
    columns: list[str] = Field(default_factory=list)
    indicators: list[str] = Field(default_factory=list)
    _text = field_validator("start", "end", mode="before")(_period_text)


class CovariateDeclaration(_Strict):
    """The ``covariates:`` block: township characteristics and time-varying controls.

    ``table``: time-invariant characteristics from a township table; ``baseline``: from
    the panel over a pre-period; ``time_varying``: panel columns (mapped in
    ``data.columns``) that enter the two-way fixed-effects models as controls; ``kinds``:
    ``binary`` or ``continuous`` per covariate (inferred when omitted: 是/否, 有/无, yes/no
    and 0/1 columns are binary); ``labels``: names shown in the report.
    """

    table: CovariateTable | None = None
    baseline: BaselineCovariates | None = None
    time_varying: list[str] = Field(default_factory=list)
    kinds: dict[str, Literal["binary", "continuous"]] = Field(default_factory=dict)
    labels: dict[str, str] = Field(default_factory=dict)

    def time_invariant_names(self) -> list[str]:
        """Names of the time-invariant covariates, in the order declared."""
        names = [n for n in (self.table.columns.values() if self.table else []) if n != "township_id"]
        if self.baseline:
            names += [BASELINE_PREFIX + c for c in self.baseline.columns + self.baseline.indicators]
        return names

    def names(self) -> list[str]:
        return self.time_invariant_names() + list(self.time_varying)


class ReportOptions(_Strict):
    """How the report is written: its language (``zh``, ``en`` or ``both``, Chinese first)."""

    language: Literal["zh", "en", "both"] = "both"


class StudyConfig(_Strict):
    """The study file's schema, key by key."""

    id: str = Field(pattern=r"^[A-Za-z0-9_-]+$", max_length=64)  # names the output folder
    title: Titles
    synthetic: bool = False
    data: DataFiles
    frequency: Literal["month", "quarter", "year"] = "month"
    window: Window = Window()
    indicators: list[str] | None = None
    targets: dict[str, float | None] = Field(default_factory=dict)
    covid: Covid = Covid()
    townships: Townships = Townships()
    covariates: CovariateDeclaration | None = None
    analysis: AnalysisPlan
    report: ReportOptions = ReportOptions()


class Study(StudyConfig):
    """A loaded study: the configuration plus the folder it was read from."""

    _source: Path = PrivateAttr()
    _encoding: str = PrivateAttr("utf-8")

    @property
    def source(self) -> Path:
        return self._source

    @property
    def encoding(self) -> str:
        """The encoding the study file was read in: ``utf-8``, or ``gb18030`` for a GBK file."""
        return self._encoding

    def resolve(self, relative: str) -> Path:
        """A path of the study file, relative to the study file's folder."""
        return (self._source.parent / relative).resolve()

    @property
    def panel_path(self) -> Path:
        return self.resolve(self.data.panel)

    @property
    def pilots_path(self) -> Path:
        return self.resolve(self.data.pilots)

    @property
    def truth_path(self) -> Path | None:
        return self.resolve(self.data.truth) if self.data.truth else None

    @property
    def output_dir(self) -> Path:
        return study_output_dir(self.id)

    @property
    def window_periods(self) -> tuple[pd.Period | None, pd.Period | None]:
        w = self.window
        return (parse_period(w.start, self.frequency) if w.start else None,
                parse_period(w.end, self.frequency) if w.end else None)

    @property
    def analysis_frequency(self) -> str:
        """The frequency the analysis runs at: ``analysis.frequency``, else the data's."""
        return self.analysis.frequency or self.frequency

    def settings(self, fast: bool = False) -> Settings:
        """The analysis plan in periods of the analysis frequency (full or fast draws),
        its covariate lists filled in from the declared covariates where the plan is silent."""
        settings = self.analysis.resolve(self.analysis_frequency, fast=fast)
        declared = self.covariates or CovariateDeclaration()
        plan = self.analysis
        covariates = tuple(plan.covariates if plan.covariates is not None else declared.time_invariant_names())
        return dataclasses.replace(
            settings, covariates=covariates,
            controls=tuple(plan.controls if plan.controls is not None else declared.time_varying),
            heterogeneity=tuple(plan.heterogeneity if plan.heterogeneity is not None else covariates))

    @property
    def covariate_table_path(self) -> Path | None:
        table = self.covariates.table if self.covariates else None
        return self.resolve(table.file) if table else None

    def selected_indicators(self) -> list[Indicator]:
        """The study's indicators with its target overrides applied, at the analysis
        frequency (their unit labels name its period)."""
        return [i.at_frequency(self.analysis_frequency)
                for i in load_catalogue().select(self.indicators, self.targets)]

    def covid_periods(self, frequency: str | None = None) -> pd.PeriodIndex:
        """Every period of ``frequency`` (default: the analysis frequency) that overlaps a
        COVID-19 phase of the study, partly or wholly."""
        frequency = frequency or self.analysis_frequency
        out = set()
        for phase in self.covid.phases:
            out |= set(overlapping_periods(phase.start, phase.end, frequency))
        return pd.PeriodIndex(sorted(out), freq=FREQUENCIES[frequency])


def _key_of(loc) -> str:
    """A pydantic location as the study file's dotted key (union branches such as
    ``list[constrained-float]`` left out)."""
    parts = [str(part) for part in loc if not (isinstance(part, str) and ("[" in part or "function-" in part))]
    return ".".join(parts) or "(top level)"


# ----------------------------------------------------------------------------- reading the file

MAX_STUDY_BYTES = 1_000_000  # a study file is a few kilobytes; this bounds what the parser can build
MAX_DEPTH = 24               # the schema nests 5 levels; deeper is not a study file
_GB_ENCODING = "gb18030"


class _Refused(Exception):
    """A YAML construct the study-file loader refuses (raised inside the loader)."""

    def __init__(self, key: str, line: int, problem: str):
        self.key, self.line, self.problem = key, line, problem


class _StrictLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses what a study file never needs and an attacker can
    abuse: anchors and aliases (an alias bomb, "billion laughs", expands a 20-line file
    into gigabytes), a key given twice (YAML would keep the last silently) and nesting
    deeper than :data:`MAX_DEPTH`. Each refusal names the key and the line."""

    def __init__(self, stream):
        super().__init__(stream)
        self._keys: list[str] = []

    def _dotted(self, label: str | None = None) -> str:
        parts = [k for k in self._keys if k] + ([label] if label else [])
        return ".".join(parts) or "(top level)"

    def compose_node(self, parent, index):
        event = self.peek_event()
        if isinstance(parent, yaml.MappingNode) and index is None:
            label = None  # a mapping key: named by the mapping it is in
        elif isinstance(index, yaml.ScalarNode):
            label = str(index.value)[:40]
        elif isinstance(index, int) and not isinstance(index, bool):
            label = str(index)
        else:
            label = None
        line = event.start_mark.line + 1
        if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None):
            what = f"alias '*{event.anchor}'" if isinstance(event, yaml.AliasEvent) else f"anchor '&{event.anchor}'"
            raise _Refused(self._dotted(label), line,
                           f"line {line}: YAML {what}: anchors (&name) and aliases (*name) are not allowed in a "
                           "study file; write each value out")
        if len(self._keys) >= MAX_DEPTH:
            raise _Refused(self._dotted(label), line,
                           f"line {line}: nested more than {MAX_DEPTH} levels deep; a study file nests a few levels")
        self._keys.append(label or "")
        try:
            node = super().compose_node(parent, index)
        finally:
            self._keys.pop()
        node.dotted = self._dotted(label)
        return node

    def construct_mapping(self, node, deep=False):
        seen: dict = {}
        for key_node, _ in node.value:
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node)
            mark = key_node.start_mark
            if key in seen:
                where = getattr(node, "dotted", "(top level)")
                dotted = str(key) if where == "(top level)" else f"{where}.{key}"
                first = seen[key]
                places = (f"on lines {first.line + 1} and {mark.line + 1}" if first.line != mark.line else
                          f"twice on line {mark.line + 1} (columns {first.column + 1} and {mark.column + 1})")
                raise _Refused(dotted, mark.line + 1, f"given twice, {places.removeprefix('twice ')} (YAML would "
                                                      "keep the last silently): keep one")
            seen[key] = mark
        return super().construct_mapping(node, deep=deep)


def _read_study_text(path: Path) -> tuple[str, str]:
    """The study file's text and the encoding it was read in: UTF-8 (with or without a
    BOM), else GB18030 (GBK), as Windows Notepad and WPS save Chinese text. Anything else
    (a binary file, UTF-16, Big5, Shift-JIS) is refused, naming the file."""
    size = path.stat().st_size
    if size > MAX_STUDY_BYTES:
        raise StudyConfigError(path, "(file)", f"{size:,} bytes: a study file is a few kilobytes (at most "
                               f"{MAX_STUDY_BYTES:,} bytes); is this the data file?")
    raw = path.read_bytes()
    if raw.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise StudyConfigError(path, "(file)", "UTF-16 text ('Unicode' in Notepad): save the study file as UTF-8")
    if b"\x00" in raw or raw.startswith((b"PK\x03\x04", b"\xd0\xcf\x11\xe0", b"%PDF")):
        raise StudyConfigError(path, "(file)", "not a text file (binary content): a study file is YAML text "
                               "saved as UTF-8")
    try:
        return raw.decode("utf-8-sig"), "utf-8"
    except UnicodeDecodeError as exc:
        not_utf8 = exc
    try:
        text = raw.decode(_GB_ENCODING)
    except UnicodeDecodeError:
        text = None
    if text is None or not _plausible_chinese(text):
        raise StudyConfigError(path, "(file)", f"not UTF-8 (byte {not_utf8.start}: {not_utf8.reason}) and not "
                               "GBK text either (Big5, Shift-JIS?): save the study file as UTF-8")
    return text, _GB_ENCODING


def _plausible_chinese(text: str) -> bool:
    """Whether GB18030-decoded text reads as simplified Chinese: at least 80% of its
    non-ASCII characters are in GB 2312 (everyday characters and punctuation). Big5 or
    Shift-JIS bytes decoded as GB18030 give rare ideographs and symbols."""
    non_ascii = [c for c in text if ord(c) > 127]
    if not non_ascii:
        return True
    common = 0
    for c in non_ascii:
        try:
            c.encode("gb2312")
            common += 1
        except UnicodeEncodeError:
            pass
    return common >= 0.8 * len(non_ascii)


def _parse_yaml(path: Path, text: str):
    try:
        return yaml.load(text, Loader=_StrictLoader)  # noqa: S506 (a SafeLoader subclass)
    except _Refused as exc:
        raise StudyConfigError(path, exc.key, exc.problem) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
        problem = " ".join(str(p) for p in (getattr(exc, "context", None), getattr(exc, "problem", None)) if p)
        raise StudyConfigError(path, "(file)", f"not valid YAML: {where}{problem or exc}") from None
    except RecursionError:
        raise StudyConfigError(path, "(file)", f"nested more than {MAX_DEPTH} levels deep") from None


def load_study(path: Path | str) -> Study:
    """Read a study file; raise :class:`StudyConfigError` naming the offending key.

    The file is read as UTF-8 or GBK (:func:`_read_study_text`; ``study.encoding`` says
    which), parsed with a loader that refuses anchors, aliases, duplicate keys and deep
    nesting (:class:`_StrictLoader`), checked against the schema and then for values that
    would only fail later, in a chapter (:func:`_check_semantics`). Error messages quote at
    most a short excerpt of a value (:func:`evaluation.errors.excerpt`).
    """
    path = Path(path).resolve()
    if not path.is_file():
        what = "is a folder, not a study file" if path.is_dir() else "study file not found"
        raise StudyConfigError(path, "(file)", what)
    text, encoding = _read_study_text(path)
    raw = _parse_yaml(path, text)
    if raw is None:
        raise StudyConfigError(path, "(top level)", "the study file is empty (expected keys such as id, title, "
                               "data, analysis)")
    if not isinstance(raw, dict):
        raise StudyConfigError(path, "(top level)", f"expected a mapping of keys to values (id: ..., title: ...), "
                               f"got a {type(raw).__name__}: {excerpt(raw)}")
    bad_keys = [k for k in raw if not isinstance(k, str)]
    if bad_keys:
        raise StudyConfigError(path, excerpt(bad_keys[0]), "unknown key (keys are names such as id, title, data)")
    for old in ("inference", "report"):
        moved = {"cluster", "seed", "alpha", "draws", "fast_draws", "few_pilots"}
        if old in raw and (old == "inference" or (isinstance(raw[old], dict) and moved & set(raw[old]))):
            raise StudyConfigError(path, old, f"the '{old}:' block is gone: cluster, seed, alpha and draws are "
                                   "set in 'analysis:' (see the README, 'The analysis plan')")
    try:
        study = Study(**raw)
    except ValidationError as exc:
        err = exc.errors()[0]
        key = _key_of(err["loc"])
        if err["type"] == "extra_forbidden":
            problem = "unknown key"
        elif err["type"] == "missing":
            problem = "required key is missing"
        elif isinstance(err.get("input"), dict):  # a block's own check: its value is the whole block
            problem = _short(err["msg"])
        elif "got " in err["msg"]:  # our own checks quote the value already
            problem = _short(err["msg"])
        else:
            problem = f"{_short(err['msg'])} (got {excerpt(err.get('input'))})"
        raise StudyConfigError(path, key, problem) from None
    study._source = path
    study._encoding = encoding
    _check_semantics(study, path)
    return study


def _short(message: str, limit: int = 300) -> str:
    """A pydantic message, which may quote the value it refused, cut to ``limit`` characters."""
    message = message.replace("Value error, ", "")
    return message if len(message) <= limit else message[: limit - 1] + "…"


def _check_semantics(study: Study, path: Path) -> None:
    if study.data.layout == "wide" and study.data.wide is None:
        raise StudyConfigError(path, "data.wide", "layout: wide needs wide: {measure_column: <the header of the "
                               "column naming each row's measure>}")
    if study.data.layout == "long" and study.data.wide is not None:
        raise StudyConfigError(path, "data.wide", "wide: is given but layout is long (set data.layout: wide)")
    for key in ("panel", "pilots", "truth"):
        rel = getattr(study.data, key)
        if rel is None:
            continue
        try:
            found = study.resolve(rel).is_file()
        except OSError as exc:  # a name too long for the file system, a path through a file ...
            raise StudyConfigError(path, f"data.{key}", f"{excerpt(rel)} cannot be a file: {exc.strerror}") from None
        if not found:
            raise StudyConfigError(path, f"data.{key}", f"file not found: {excerpt(str(study.resolve(rel)), 200)} "
                                   "(paths are relative to the study file)")
    for key, mapping, allowed in (("data.columns", study.data.columns, None),
                                  ("data.pilot_columns", study.data.pilot_columns, PILOT_COLUMNS)):
        targets = list(mapping.values())
        dupes = sorted({t for t in targets if targets.count(t) > 1})
        if dupes:
            raise StudyConfigError(path, key, f"two headers map onto {dupes}")
        if allowed:
            bad = [t for t in targets if t not in allowed]
            if bad:
                raise StudyConfigError(path, key, f"unknown pilot-table column(s) {bad}; expected {list(allowed)}")
    catalogue = load_catalogue()
    if study.indicators is not None and not study.indicators:
        raise StudyConfigError(path, "indicators", "the list is empty: name at least one indicator, or leave the key "
                               f"out for all of them ({', '.join(catalogue.ids)})")
    for i, ind in enumerate(study.indicators or []):
        if ind in (study.indicators or [])[:i]:
            raise StudyConfigError(path, f"indicators.{i}", f"{excerpt(ind)} is listed twice")
        if ind not in catalogue.ids:
            raise StudyConfigError(path, f"indicators.{i}",
                                   f"unknown indicator {excerpt(ind)}; the catalogue has {catalogue.ids}")
    for ind, value in study.targets.items():
        if ind not in catalogue.ids:
            raise StudyConfigError(path, f"targets.{excerpt(ind)[1:-1]}",
                                   f"unknown indicator {excerpt(ind)}; the catalogue has {catalogue.ids}")
        kind = catalogue[ind].kind
        if value is not None and kind == "share" and not 0 <= value <= 1:
            raise StudyConfigError(path, f"targets.{ind}", f"{value:g} is not a share: '{ind}' is a share between 0 "
                                   "and 1 (write 90% as 0.90)")
        if value is not None and value < 0:
            raise StudyConfigError(path, f"targets.{ind}", f"{value:g} is negative: '{ind}' ({kind}) is never "
                                   "below 0")
    _check_townships(study, path)
    _check_covariates(study, path, catalogue)
    periods = {"window.start": study.window.start, "window.end": study.window.end}
    parsed = {}
    for key, value in periods.items():
        if value is None:
            continue
        try:
            parsed[key] = parse_period(value, study.frequency)
        except PeriodParseError as exc:
            raise StudyConfigError(path, key, str(exc)) from None
    if "window.start" in parsed and "window.end" in parsed and parsed["window.start"] > parsed["window.end"]:
        raise StudyConfigError(path, "window", "start is after end")
    for i, phase in enumerate(study.covid.phases):
        _check_span(path, f"covid.phases.{i}", phase.start, phase.end, study.frequency)
    if study.analysis.frequency and is_coarser(study.frequency, study.analysis.frequency):
        raise StudyConfigError(path, "analysis.frequency",
                               f"'{study.analysis.frequency}' is finer than the data's frequency "
                               f"'{study.frequency}': data can be aggregated, not split")
    try:
        study.settings()
    except DurationError as exc:
        key, _, problem = str(exc).partition(": ")
        raise StudyConfigError(path, key, problem) from None
    _check_covid(study, path, parsed)


def _check_span(path: Path, key: str, start: str, end: str, frequency: str) -> None:
    """A start and end given as period labels of any frequency: each parses, and the
    start is not after the end (errors name ``key.start``, ``key.end`` or ``key``)."""
    for name, value in (("start", start), ("end", end)):
        try:
            parse_any_period(value, frequency)
        except PeriodParseError as exc:
            raise StudyConfigError(path, f"{key}.{name}", str(exc)) from None
    first, last = span_days(start, end, frequency)
    if first > last:
        raise StudyConfigError(path, key, "start is after end")


def _check_covariates(study: Study, path: Path, catalogue) -> None:
    """The covariates block and the plan's covariate keys name what exists; the panel's
    column mapping maps only onto the data contract or a declared time-varying control
    (a header mapped elsewhere would be read and silently dropped)."""
    declared = study.covariates or CovariateDeclaration()
    contract = set(PANEL_KEY_COLUMNS) | set(MEASURE_COLUMNS)
    for header, target in study.data.columns.items():
        if target not in contract and target not in declared.time_varying:
            raise StudyConfigError(
                path, f"data.columns.{header}", f"'{target}' is not a data-contract column ({', '.join(sorted(contract))})"
                "; to use the column as a time-varying control, list it under covariates.time_varying; "
                "characteristics that do not change go in a township table (covariates.table)")
    if study.covariates is not None:
        table = declared.table
        if table is not None:
            try:
                found = study.resolve(table.file).is_file()
            except OSError as exc:
                raise StudyConfigError(path, "covariates.table.file",
                                       f"{excerpt(table.file)} cannot be a file: {exc.strerror}") from None
            if not found:
                raise StudyConfigError(path, "covariates.table.file", f"file not found: "
                                       f"{excerpt(str(study.resolve(table.file)), 200)} (paths are relative to the "
                                       "study file)")
            targets = list(table.columns.values())
            dupes = sorted({t for t in targets if targets.count(t) > 1})
            if dupes:
                raise StudyConfigError(path, "covariates.table.columns", f"two headers map onto {dupes}")
        mapped = set(study.data.columns.values())
        for i, name in enumerate(declared.time_varying):
            if name not in mapped:
                raise StudyConfigError(path, f"covariates.time_varying.{i}", f"'{name}' is not mapped in data.columns: "
                                       "map the panel's header onto it (e.g. 在岗医生数: doctors)")
            if name in contract:
                raise StudyConfigError(path, f"covariates.time_varying.{i}", f"'{name}' is a data-contract column; "
                                       "give the control its own name")
        base = declared.baseline
        if base is not None:
            for i, column in enumerate(base.columns):
                if column != "population" and column not in MEASURE_COLUMNS:
                    raise StudyConfigError(path, f"covariates.baseline.columns.{i}", f"'{column}' is not a panel "
                                           f"column; expected population or one of {', '.join(MEASURE_COLUMNS)}")
            for i, ind in enumerate(base.indicators):
                if ind not in catalogue.ids:
                    raise StudyConfigError(path, f"covariates.baseline.indicators.{i}",
                                           f"unknown indicator {excerpt(ind)}; the catalogue has {catalogue.ids}")
            _check_span(path, "covariates.baseline", base.start, base.end, study.frequency)
        names = declared.names()
        clash = sorted(set(names) & (contract | {"treated", "post", "cohort", "first_treat", "time", "event_time",
                                                 "model", "value", "numerator", "denominator"}))
        if clash:
            raise StudyConfigError(path, "covariates", f"covariate name(s) {clash} are taken by the data contract; "
                                   "rename them")
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise StudyConfigError(path, "covariates", f"covariate {twice} declared twice")
        for key in ("kinds", "labels"):
            for name in getattr(declared, key):
                if name not in names:
                    raise StudyConfigError(path, f"covariates.{key}.{name}", f"no covariate '{name}' is declared "
                                           f"(declared: {', '.join(names) or 'none'})")
    invariant = declared.time_invariant_names()
    plan = study.analysis
    for key, allowed, what in (("covariates", invariant, "time-invariant covariates (table or baseline)"),
                               ("heterogeneity", invariant, "time-invariant covariates (table or baseline)"),
                               ("controls", declared.time_varying, "time-varying controls (covariates.time_varying)")):
        for i, name in enumerate(getattr(plan, key) or []):
            if name not in allowed:
                raise StudyConfigError(path, f"analysis.{key}.{i}", f"'{name}' is not among the study's declared "
                                       f"{what}: {', '.join(allowed) or 'none declared (add a covariates: block)'}")
    chosen = study.indicators or catalogue.ids
    for outcome, channels in plan.mechanisms.items():
        if outcome not in catalogue.ids:
            raise StudyConfigError(path, f"analysis.mechanisms.{outcome}",
                                   f"unknown indicator {excerpt(outcome)}; the catalogue has {catalogue.ids}")
        for i, ind in [(None, outcome), *enumerate(channels)]:
            if ind in catalogue.ids and ind not in chosen:
                key = f"analysis.mechanisms.{outcome}" + ("" if i is None else f".{i}")
                raise StudyConfigError(path, key, f"'{ind}' is not among the study's indicators: add it to "
                                       "indicators so that its data are read and its chapters run")
        if not channels:
            raise StudyConfigError(path, f"analysis.mechanisms.{outcome}", "name at least one channel indicator")
        for i, channel in enumerate(channels):
            if channel not in catalogue.ids:
                raise StudyConfigError(path, f"analysis.mechanisms.{outcome}.{i}",
                                       f"unknown indicator {excerpt(channel)}; the catalogue has {catalogue.ids}")
            if channel == outcome:
                raise StudyConfigError(path, f"analysis.mechanisms.{outcome}.{i}",
                                       "an indicator cannot be its own channel")


def _check_townships(study: Study, path: Path) -> None:
    excluded = study.townships.exclude
    for i, town in enumerate(excluded):
        if not town.strip():
            raise StudyConfigError(path, f"townships.exclude.{i}", "an empty township id or name")
        if town in excluded[:i]:
            raise StudyConfigError(path, f"townships.exclude.{i}", f"{excerpt(town)} is listed twice")


def _check_covid(study: Study, path: Path, window: dict) -> None:
    """Phases must be distinct, in time order, not overlapping, and touch the window: a
    phase outside it would be a model term that is zero in every period."""
    phases = study.covid.phases
    names = [p.name for p in phases]
    spans = [span_days(p.start, p.end, study.frequency) for p in phases]
    for i, phase in enumerate(phases):
        if not phase.name.strip():
            raise StudyConfigError(path, f"covid.phases.{i}.name", "empty phase name")
        if phase.name in names[:i]:
            raise StudyConfigError(path, f"covid.phases.{i}.name", f"{excerpt(phase.name)} is the name of an "
                                   "earlier phase too: give each phase its own name")
        if i and spans[i][0] <= spans[i - 1][1]:
            raise StudyConfigError(path, f"covid.phases.{i}", f"starts ({phase.start}) before the previous phase "
                                   f"ends ({phases[i - 1].end}): phases are listed in time order and do not overlap")
        if study.covid.handling == "ignore":
            continue
        lo, hi = window.get("window.start"), window.get("window.end")
        if lo is not None and hi is not None and spans[i][0] <= lo.start_time.normalize() and (
                spans[i][1] >= hi.end_time.normalize()):
            raise StudyConfigError(
                path, f"covid.phases.{i}", f"the phase {phase.start} to {phase.end} covers the whole study window "
                f"({study.window.start} to {study.window.end}): no period is outside it (shorten it, or set "
                "covid.handling: ignore)")
        if (lo is not None and spans[i][1] < lo.start_time.normalize()) or (
                hi is not None and spans[i][0] > hi.end_time.normalize()):
            raise StudyConfigError(
                path, f"covid.phases.{i}", f"the phase {phase.start} to {phase.end} lies outside the study window "
                f"({study.window.start or '...'} to {study.window.end or '...'}): remove it, or set "
                "covid.handling: ignore")
