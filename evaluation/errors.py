"""The package's one exception hierarchy.

``EvaluationError`` is the base of everything the package raises on purpose:

* ``EvaluationInputError``: input the package refuses (study file, data file, period
  label). Every rejection names the file, the row or column, and what was expected, so
  that a researcher can open the spreadsheet and fix the cell. The command line turns
  these into exit code 2.
* ``EstimationError``: a model the data cannot identify (the message says why); the
  command line also exits with 2, since it is the data that cannot support the design.

All are ``ValueError`` subclasses, so code that caught ``ValueError`` keeps working.
"""

from __future__ import annotations

import reprlib
from pathlib import Path

EXCERPT_CHARS = 80


def excerpt(value, limit: int = EXCERPT_CHARS) -> str:
    """``repr(value)`` cut to ``limit`` characters with ``…``: what an error message quotes
    of a user's value (a cell, a study-file value), never the whole of a long one."""
    if isinstance(value, str):
        text = repr(value[: limit + 2])
    else:  # reprlib stops at a few items and levels: a huge or deep structure costs nothing
        shortener = reprlib.Repr()
        shortener.maxlevel, shortener.maxstring, shortener.maxother = 3, limit, limit
        text = shortener.repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


class EvaluationError(ValueError):
    """Base class of every error the package raises on purpose."""


class EvaluationInputError(EvaluationError):
    """Input the package refuses to evaluate."""


class EstimationError(EvaluationError):
    """A model the data cannot identify (the message says why)."""


class UnbalancedPanelError(EstimationError):
    """A method that needs every unit observed, with a value, in every period was given
    an incomplete panel.

    ``method`` names the method; ``incomplete`` is a DataFrame with one row per
    incomplete unit: ``unit``, ``missing_periods`` (periods without a row) and
    ``missing_values`` (periods whose row has no outcome value), each a list.
    Callers that want the method anyway drop those units first (and say so).
    """

    def __init__(self, method: str, incomplete, *, periods: int | None = None, units: int | None = None):
        self.method = method
        self.incomplete = incomplete
        self.periods = periods
        self.units = units
        super().__init__(self._message())

    def _message(self) -> str:
        rows = list(self.incomplete.itertuples(index=False))
        parts = []
        for r in rows[:5]:
            lacks = []
            if len(r.missing_periods):
                lacks.append(f"no row in {len(r.missing_periods)} period(s) ({_listed(r.missing_periods)})")
            if len(r.missing_values):
                lacks.append(f"no outcome value in {len(r.missing_values)} period(s) ({_listed(r.missing_values)})")
            parts.append(f"'{r.unit}' has " + " and ".join(lacks))
        more = f"; and {len(rows) - 5} more" if len(rows) > 5 else ""
        of = f" of {self.units}" if self.units else ""
        return (f"{self.method} needs a balanced panel (every unit observed, with a value, in every period), but "
                f"the panel is not balanced: {len(rows)}{of} unit(s) are incomplete: " + "; ".join(parts) + more
                + ". Drop these units first, or use a method that allows gaps.")


def _listed(values, shown: int = 4) -> str:
    values = list(values)
    text = ", ".join(str(v) for v in values[:shown])
    return text + (f", ... {values[-1]}" if len(values) > shown else "")


class ITSError(EstimationError):
    """An interrupted-time-series call the data cannot support (named in the message)."""


class PeriodParseError(EvaluationInputError):
    """A period label that cannot be read at the study's frequency."""


MAX_LINE = 1000  # characters of one line of an error message (a safety net: values are quoted as excerpts)


def _capped(text: str, limit: int = MAX_LINE) -> str:
    """Each line of ``text`` cut to ``limit`` characters with ``…``."""
    return "\n".join(line if len(line) <= limit else line[: limit - 1] + "…" for line in str(text).split("\n"))


class StudyConfigError(EvaluationInputError):
    """The study YAML file is malformed (unknown key, wrong type, missing file)."""

    def __init__(self, path: Path | str, key: str, problem: str):
        self.path = Path(path)
        self.key = _capped(key, 120)
        self.problem = _capped(problem)
        super().__init__(f"{self.path}: key '{self.key}': {self.problem}")


class UsageError(EvaluationInputError):
    """A command-line request the package cannot serve (unknown indicator or chapter)."""


class OutputExistsError(EvaluationInputError, FileExistsError):
    """A file the command would write exists already (``--force`` overwrites it)."""

    def __init__(self, path: Path | str, problem: str):
        self.path = Path(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")

    def __str__(self) -> str:
        return f"{self.path}: {self.problem}"


class DataValidationError(EvaluationInputError):
    """A data file breaks the data contract.

    ``rows`` are 1-based line numbers as a spreadsheet shows them (the header is row 1,
    the first data row is row 2). ``header`` is the user's own header of ``column`` when
    the study file maps one onto the contract name.
    """

    def __init__(
        self,
        path: Path | str,
        problem: str,
        *,
        column: str | None = None,
        rows: list[int] | None = None,
        details: list[str] | None = None,
        expected: str | None = None,
        header: str | None = None,
    ):
        self.path = Path(path)
        self.problem = problem
        self.column = column
        self.rows = list(rows or [])
        self.details = list(details or [])
        self.expected = expected
        self.header = header
        super().__init__(problem)

    def __str__(self) -> str:
        where = [str(self.path)]
        if self.rows:
            shown = ", ".join(str(r) for r in self.rows[:10])
            more = f" and {len(self.rows) - 10} more" if len(self.rows) > 10 else ""
            where.append(f"row{'s' if len(self.rows) > 1 else ''} {shown}{more}")
        if self.column is not None:
            col = f"column '{self.column}'"
            if self.header and self.header != self.column:
                col += f" (header '{self.header}')"
            where.append(col)
        message = ", ".join(where) + f": {self.problem}"
        if self.expected:
            message += f"; expected {self.expected}"
        if self.details:
            message += "\n  " + "\n  ".join(_capped(d, 200) for d in self.details[:10])
            if len(self.details) > 10:
                message += f"\n  ... and {len(self.details) - 10} more"
        return _capped(message)


# ----------------------------------------------------------------------------- warnings
# Warnings are exception classes too; they live here with the errors (the estimator
# modules re-export them under their old import paths).

class PoorPreFitWarning(UserWarning):
    """The pilot lies outside what the donors can reproduce: the counterfactual extrapolates."""


class CovidOverlapWarning(UserWarning):
    """The pre-period ends inside a COVID-19 phase: the counterfactual trend is suspect."""


class EffectNotFoundError(EvaluationError, KeyError):
    """``Estimates.get`` found no effect, or several, with the estimand asked for."""

    def __str__(self) -> str:  # KeyError would print the message with quotes
        return str(self.args[0]) if self.args else ""


class NotAResultError(EvaluationError, TypeError):
    """``tidy`` was given something that is neither an Effect nor an Estimates."""
