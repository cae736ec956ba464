"""pandera contracts for the tables this project reads and writes (SPEC §3, §4).

This module is the single home of the project's pandera models. Input models describe what a
producer may drop into the landing zone; output-table models (added next to them by the asset
layer) describe what the pipeline writes. Every model is validated through :func:`validate_frame`,
which collects *all* failures (pandera ``lazy=True``) into one :class:`ContractError` whose lines
name the file, the column and the row::

    returns.csv: column 'ret' row 17: value -1.2 must be > -1

Row numbers count data rows from 1 (a CSV header is not a row, so row N is line N+1 of a CSV);
for a frame whose index is not a plain ``0..n-1`` range, the row is the position of the index
label. Problems about the whole file (no rows, missing or unexpected columns) carry no row.

Conventions of the input models:

- Values are coerced before the checks run, and a value that cannot be read as its column's type
  (``'abc'`` in a number column, ``'01/02/2024'`` in a date column) is reported as such, once, at
  its row; it is not reported again as missing. A column whose storage type is plainly wrong
  (booleans in a number column, numbers in a date or text column) is one column-level problem.
- Text columns must hold text; blank text is rejected where the column says so.
- ``side`` is case-insensitive on input (``BUY``, `` Sell``) and normalised to lowercase ``buy`` /
  ``sell``: producers differ in case and nothing is gained by rejecting it.
- ``qty`` may carry a sign (some producers sign sells) but not be zero; the direction of a trade is
  ``side`` and the liquidity metrics use ``|qty|`` and ``|notional|``.
- Optional columns (``benchmark_ret``, ``adv_notional``, ``bar_volume``), when present, obey the same
  rules as required ones: complete and finite.
"""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass
from typing import Annotated, Any, Mapping, Optional, Sequence

import numpy as np
import pandas as pd
import pandera.pandas as pa
from pandera.errors import SchemaErrors
from pandera.typing import Series

__all__ = [
    "ContractError",
    "EvaluationMetricsTable",
    "EvaluationRunHistoryTable",
    "Problem",
    "ReturnsSchema",
    "RuleResultsTable",
    "RunManifestsTable",
    "StrategyReturnsTable",
    "StrategyTradesTable",
    "TradesSchema",
    "ValidationReportsTable",
    "validate_frame",
]

# Problems kept on an error (and lines in its message); the total is always counted.
DEFAULT_MAX_PROBLEMS = 100
_MESSAGE_LINES = 20


@dataclass(frozen=True)
class Problem:
    """One contract failure, located as precisely as the input allows.

    ``column`` is a table column, ``path`` a dotted key path in a JSON document; ``row`` counts
    data rows from 1. Any of them may be None when the problem is about the whole file.
    """

    file: str
    message: str
    column: str | None = None
    row: int | None = None
    path: str | None = None

    def __str__(self) -> str:
        location = []
        if self.column is not None:
            location.append(f"column {self.column!r}")
        if self.path is not None:
            location.append(f"key {self.path!r}")
        if self.row is not None:
            location.append(f"row {self.row}")
        parts = [part for part in (self.file, " ".join(location)) if part]
        return ": ".join([*parts, self.message])

    def to_dict(self) -> dict[str, Any]:
        return {
            "file": self.file,
            "column": self.column,
            "row": self.row,
            "path": self.path,
            "message": self.message,
        }


class ContractError(ValueError):
    """A table or document that breaks its contract, with every problem found.

    ``problems`` holds up to ``max_problems`` problems in file/row order and ``problem_count`` the
    total; ``file``, ``column``, ``row`` and ``path`` describe the first problem. ``str(error)``
    is one line per problem (the first twenty, then a count of the rest).
    """

    def __init__(self, problems: Sequence[Problem], *, problem_count: int | None = None):
        if not problems:
            raise ValueError("ContractError needs at least one problem")
        self.problems: list[Problem] = list(problems)
        self.problem_count: int = max(problem_count or 0, len(self.problems))
        first = self.problems[0]
        self.file: str = first.file
        self.column: str | None = first.column
        self.row: int | None = first.row
        self.path: str | None = first.path
        lines = [str(p) for p in self.problems[:_MESSAGE_LINES]]
        rest = self.problem_count - len(lines)
        if rest > 0:
            lines.append(f"... and {rest} more problem{'s' if rest != 1 else ''}")
        super().__init__("\n".join(lines))

    @property
    def files(self) -> list[str]:
        """The files named by the problems, in first-seen order."""
        return list(dict.fromkeys(p.file for p in self.problems))


# ---------------------------------------------------------------------------------------------
# Input models (SPEC §3)
# ---------------------------------------------------------------------------------------------


class ReturnsSchema(pa.DataFrameModel):
    """``returns.parquet`` / ``returns.csv``: one row per trading day.

    - ``date``: calendar date (no time of day), unique, strictly increasing (gaps allowed).
    - ``ret``: simple daily return as a decimal fraction, finite and > −1 (a return of −1 or
      less would wipe out more than the capital).
    - ``benchmark_ret`` (optional): the benchmark's simple return on the same day, same rules.
    """

    date: Series[pd.Timestamp] = pa.Field(unique=True)
    ret: Series[float] = pa.Field(gt=-1)
    benchmark_ret: Optional[Series[float]] = pa.Field(gt=-1)

    class Config:
        name = "returns"
        strict = True
        coerce = True

    @pa.check("date", name="calendar_date", error="must be a calendar date without a time of day")
    def _calendar_date(cls, date: Series[pd.Timestamp]) -> Series[bool]:
        return date == date.dt.normalize()

    @pa.check("date", name="not_before_previous_row", error="must come after the previous row")
    def _increasing(cls, date: Series[pd.Timestamp]) -> Series[bool]:
        # Equal neighbours are left to the uniqueness check, so each fault is reported once.
        step = date.diff()
        return step.isna() | (step >= pd.Timedelta(0))

    @pa.check("ret", "benchmark_ret", name="finite", error="must be finite")
    def _finite(cls, values: Series[float]) -> Series[bool]:
        return pd.Series(np.isfinite(values.to_numpy(dtype=float)), index=values.index)


class TradesSchema(pa.DataFrameModel):
    """``trades.parquet`` / ``trades.csv``: the run's trades log, one row per execution.

    - ``ts``: execution time, ISO-8601; naive values are UTC; stored as UTC.
    - ``symbol``: non-blank text. ``side``: ``buy`` or ``sell`` (case-insensitive on input).
    - ``qty``: executed quantity, finite, non-zero (sign allowed; ``side`` gives the direction).
    - ``price``: execution price, finite, > 0. ``notional``: traded value, finite (sign allowed).
    - ``adv_notional`` (optional): average daily traded value of the symbol, finite, > 0.
    - ``bar_volume`` (optional): market volume in the execution interval, finite, > 0.
    """

    ts: Series[Annotated[pd.DatetimeTZDtype, "ns", "UTC"]]
    symbol: Series[str]
    side: Series[str] = pa.Field(isin=["buy", "sell"])
    qty: Series[float] = pa.Field(ne=0)
    price: Series[float] = pa.Field(gt=0)
    notional: Series[float]
    adv_notional: Optional[Series[float]] = pa.Field(gt=0)
    bar_volume: Optional[Series[float]] = pa.Field(gt=0)

    class Config:
        name = "trades"
        strict = True
        coerce = True

    @pa.parser("side")
    def _normalise_side(cls, side: pd.Series) -> pd.Series:
        # Non-text columns are left alone: the coercion pass has already reported them.
        if pd.api.types.is_object_dtype(side.dtype) or pd.api.types.is_string_dtype(side.dtype):
            return side.str.strip().str.lower()
        return side

    @pa.check("symbol", name="not_blank", error="must not be blank")
    def _symbol_not_blank(cls, symbol: Series[str]) -> Series[bool]:
        return symbol.str.strip().str.len() > 0

    @pa.check(
        "qty", "price", "notional", "adv_notional", "bar_volume", name="finite", error="must be finite"
    )
    def _finite(cls, values: Series[float]) -> Series[bool]:
        return pd.Series(np.isfinite(values.to_numpy(dtype=float)), index=values.index)


# ---------------------------------------------------------------------------------------------
# validate_frame
# ---------------------------------------------------------------------------------------------


def validate_frame(
    schema: type[pa.DataFrameModel] | pa.DataFrameSchema,
    frame: pd.DataFrame,
    source: str,
    *,
    allow_empty: bool = True,
    error_cls: type[ContractError] = ContractError,
    max_problems: int = DEFAULT_MAX_PROBLEMS,
) -> pd.DataFrame:
    """Validate ``frame`` against ``schema`` and return the validated (coerced) frame.

    Every failure is collected (pandera ``lazy=True`` plus a coercion pass of our own that
    reports unreadable values at their row) and raised as one ``error_cls`` (a
    :class:`ContractError`) whose problems name ``source``, the column and the 1-based row.
    ``allow_empty=False`` makes a frame without rows a problem of its own (inputs use it;
    output tables may legitimately be empty). The input frame is not modified.
    """
    dataframe_schema = schema.to_schema() if isinstance(schema, type) else schema
    problems: list[Problem] = []
    if not allow_empty and len(frame) == 0:
        problems.append(Problem(source, "has no data rows"))

    coerced, coercion_problems, bad_columns = _coerce_columns(dataframe_schema, frame, source)
    problems.extend(coercion_problems)
    reported_cells = {(p.column, p.row) for p in coercion_problems if p.row is not None}

    validated: pd.DataFrame | None = None
    pandera_problems: list[Problem] = []
    pandera_total = 0
    try:
        validated = dataframe_schema.validate(coerced, lazy=True)
    except SchemaErrors as exc:
        pandera_problems, pandera_total = _problems_from_failure_cases(
            dataframe_schema, exc.failure_cases, coerced, source,
            skip_cells=reported_cells, skip_columns=bad_columns, limit=max_problems,
        )

    if not problems and not pandera_problems and validated is not None:
        return validated
    total = len(problems) + pandera_total
    ordered = sorted(problems + pandera_problems, key=_problem_order)
    if not ordered:  # pandera failed, but only on cells the coercion pass had reported
        ordered = [Problem(source, f"does not satisfy the {dataframe_schema.name or 'table'} contract")]
        total = 1
    raise error_cls(ordered[:max_problems], problem_count=total)


def _problem_order(problem: Problem) -> tuple[int, int, str]:
    # Whole-file problems first, then column-level ones, then cells in row order.
    if problem.column is None and problem.row is None:
        return (0, 0, "")
    if problem.row is None:
        return (1, 0, problem.column or "")
    return (2, problem.row, problem.column or "")


def _column_kind(dtype: Any) -> str:
    text = str(dtype)
    if text.startswith("datetime64") and "," in text:
        return "timestamp_utc"
    if text.startswith("datetime64"):
        return "datetime"
    if text.startswith(("float", "Float")):
        return "float"
    if text.startswith(("int", "Int", "uint", "UInt")):
        return "int"
    if text.startswith(("str", "string")):
        return "str"
    if text.startswith("bool"):
        return "bool"
    return "other"


def _row_numbers(index: pd.Index, labels: Any) -> np.ndarray:
    """1-based positions of ``labels`` in ``index`` (0 where unknown)."""
    labels = pd.Index(labels)
    if isinstance(index, pd.RangeIndex) and index.start == 0 and index.step == 1:
        return np.asarray(labels, dtype=np.int64) + 1
    if index.is_unique:
        return index.get_indexer(labels).astype(np.int64) + 1
    return np.zeros(len(labels), dtype=np.int64)


def _coerce_columns(
    schema: pa.DataFrameSchema, frame: pd.DataFrame, source: str
) -> tuple[pd.DataFrame, list[Problem], set[str]]:
    """Convert declared columns to their types, reporting every value that cannot be read.

    pandera's own coercion stops a column at its first unreadable value and then lets every
    later check on that column error out; doing the conversion here keeps the other checks
    running and reports each unreadable value once.
    """
    out = frame.copy()
    problems: list[Problem] = []
    bad_columns: set[str] = set()
    positions = _row_numbers(frame.index, frame.index)
    for name, column in schema.columns.items():
        if name not in frame.columns or not isinstance(frame[name], pd.Series):
            continue
        raw = frame[name]
        kind = _column_kind(column.dtype)
        converted, unreadable, column_problem = _convert(raw, kind)
        if column_problem is not None:
            problems.append(Problem(source, column_problem, column=name))
            bad_columns.add(name)
            continue
        if unreadable is not None and unreadable.any():
            what = _KIND_WORDS.get(kind, str(column.dtype))
            for pos in np.flatnonzero(unreadable.to_numpy()):
                problems.append(
                    Problem(
                        source,
                        f"value {_format_value(raw.iloc[pos])} is not {what}",
                        column=name,
                        row=int(positions[pos]) or None,
                    )
                )
        out[name] = converted
    return out, problems, bad_columns


_KIND_WORDS = {
    "float": "a number",
    "int": "an integer",
    "datetime": "an ISO-8601 date",
    "timestamp_utc": "an ISO-8601 timestamp",
    "str": "text",
    "bool": "a boolean",
}


def _convert(raw: pd.Series, kind: str) -> tuple[pd.Series, pd.Series | None, str | None]:
    """(converted values, mask of unreadable cells, column-level problem)."""
    dtype = raw.dtype
    present = raw.notna()
    if kind in ("float", "int"):
        if pd.api.types.is_bool_dtype(dtype):
            return raw, None, f"has type {dtype}, expected numbers"
        if pd.api.types.is_datetime64_any_dtype(dtype) or isinstance(dtype, pd.PeriodDtype):
            return raw, None, f"has type {dtype}, expected numbers"
        if pd.api.types.is_numeric_dtype(dtype):
            converted = raw.astype(float) if kind == "float" else raw
            unreadable = present & converted.isna()
        else:
            prepared, is_bool = _number_inputs(raw)
            converted = pd.to_numeric(prepared, errors="coerce")
            unreadable = (prepared.notna() & converted.isna()) | is_bool
        if kind == "int":
            values = converted.to_numpy(dtype=float)
            fractional = np.isfinite(values) & (np.floor(values) != values)
            unreadable = unreadable | pd.Series(fractional, index=raw.index)
        return converted, unreadable, None
    if kind in ("datetime", "timestamp_utc"):
        if pd.api.types.is_bool_dtype(dtype) or pd.api.types.is_numeric_dtype(dtype):
            words = "dates" if kind == "datetime" else "timestamps"
            return raw, None, f"has type {dtype}, expected ISO-8601 {words}"
        converted = _parse_datetimes(raw, utc=kind == "timestamp_utc")
        if converted is None:
            return raw, None, "mixes time zone offsets; use one offset or plain dates"
        unreadable = present & converted.isna()
        return converted, unreadable, None
    if kind == "str":
        if pd.api.types.is_bool_dtype(dtype) or pd.api.types.is_numeric_dtype(dtype):
            return raw, None, f"has type {dtype}, expected text"
        if pd.api.types.infer_dtype(raw, skipna=True) in ("string", "empty"):
            return raw, None, None
        unreadable = present & ~raw.map(lambda v: isinstance(v, str)).astype(bool)
        return raw.where(~unreadable, None), unreadable, None
    return raw, None, None


_NAN_TEXT = frozenset({"nan", "+nan", "-nan"})
# A time of day followed by a UTC designator or offset: "...T10:00:00Z", "... 10:00+01:00".
_OFFSET_PATTERN = r"\d{2}:\d{2}(?::\d{2}(?:[.,]\d+)?)?\s*(?:[zZ]|[+-]\d{2}(?::?\d{2})?)\s*$"


def _number_inputs(raw: pd.Series) -> tuple[pd.Series, pd.Series]:
    """(values ready for ``pd.to_numeric``, mask of booleans) of an object column.

    Booleans must not become 1.0/0.0 silently, and "nan" text is a missing value, not text.
    """
    if pd.api.types.infer_dtype(raw, skipna=True) in ("string", "empty"):
        text = raw.str.strip()
        is_nan_text = text.str.lower().isin(_NAN_TEXT)
        return text.where(~is_nan_text, np.nan), pd.Series(False, index=raw.index)
    is_bool = raw.map(lambda v: isinstance(v, (bool, np.bool_))).astype(bool)

    def prepare(value: Any) -> Any:
        if isinstance(value, str):
            text = value.strip()
            return np.nan if text.lower() in _NAN_TEXT else text
        return None if isinstance(value, (bool, np.bool_)) else value

    return raw.map(prepare), is_bool


def _parse_datetimes(raw: pd.Series, *, utc: bool) -> pd.Series | None:
    """ISO-8601 values as datetime64[ns] (wall time) or datetime64[ns, UTC] (naive = UTC).

    Values with an offset and values without one are parsed separately: pandas applies the
    offset of an earlier element to later naive ones when they share one call. Returns None
    when wall-time dates carry different offsets (there is no single calendar to read them in).
    """
    if pd.api.types.is_datetime64_any_dtype(raw.dtype):
        if isinstance(raw.dtype, pd.DatetimeTZDtype):
            return raw.dt.tz_convert("UTC") if utc else raw.dt.tz_localize(None)
        return raw.dt.tz_localize("UTC") if utc else raw
    target = "datetime64[ns, UTC]" if utc else "datetime64[ns]"
    result = pd.Series(pd.NaT, index=raw.index, dtype=target)
    if pd.api.types.infer_dtype(raw, skipna=True) in ("string", "empty"):
        is_text = raw.notna().to_numpy()
    else:
        is_text = raw.map(lambda v: isinstance(v, str)).to_numpy(dtype=bool)
    text = raw[is_text].astype(str).str.strip()
    if is_text.all():
        # Fast path: a column written in one style (all naive, or all one offset) parses in one
        # call; only mixed columns need the split below.
        try:
            with warnings.catch_warnings():
                # Mixed offsets warn (and will raise in pandas 3); either way we take the split path.
                warnings.simplefilter("ignore", FutureWarning)
                parsed = pd.to_datetime(text, format="ISO8601", errors="coerce")
        except (ValueError, TypeError):
            parsed = None
        if parsed is not None and pd.api.types.is_datetime64_any_dtype(parsed.dtype):
            return _parse_datetimes(parsed, utc=utc).astype(target)
    with_offset = text.str.contains(_OFFSET_PATTERN, regex=True, na=False).to_numpy()

    aware_text = text[with_offset]
    if len(aware_text):
        if utc:
            result.loc[aware_text.index] = pd.to_datetime(
                aware_text, format="ISO8601", errors="coerce", utc=True
            )
        else:
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", FutureWarning)
                    parsed = pd.to_datetime(aware_text, format="ISO8601", errors="coerce")
            except (ValueError, TypeError):
                return None
            if not isinstance(parsed.dtype, pd.DatetimeTZDtype):
                return None
            result.loc[aware_text.index] = parsed.dt.tz_localize(None)
    naive_text = text[~with_offset]
    if len(naive_text):
        parsed = pd.to_datetime(naive_text, format="ISO8601", errors="coerce")
        result.loc[naive_text.index] = parsed.dt.tz_localize("UTC") if utc else parsed

    others = raw[~is_text & raw.notna().to_numpy()]
    if len(others):
        # datetime/date objects (Parquet object columns); anything else becomes NaT.
        stamps = others.map(_to_timestamp)
        result.loc[others.index] = [
            _as_target(stamp, utc) for stamp in stamps
        ]
    return result


def _to_timestamp(value: Any) -> Any:
    if isinstance(value, (str, bool, np.bool_, int, float, np.number)):
        return pd.NaT
    try:
        return pd.Timestamp(value)
    except (ValueError, TypeError, OverflowError):
        return pd.NaT


def _as_target(stamp: Any, utc: bool) -> Any:
    if stamp is pd.NaT or pd.isna(stamp):
        return pd.NaT
    if stamp.tzinfo is None:
        return stamp.tz_localize("UTC") if utc else stamp
    return stamp.tz_convert("UTC") if utc else stamp.tz_localize(None)


def _format_value(value: Any) -> str:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return "NaN"
    if isinstance(value, pd.Timestamp):
        if value is pd.NaT:
            return "NaT"
        if value.tzinfo is None and value == value.normalize():
            return value.strftime("%Y-%m-%d")
        return value.isoformat()
    if isinstance(value, str):
        shown = value if len(value) <= 60 else value[:57] + "..."
        return repr(shown)
    if isinstance(value, (np.floating, float)):
        return repr(float(value))
    if isinstance(value, (np.integer, int)) and not isinstance(value, bool):
        return str(int(value))
    return repr(value)


def _format_bound(value: Any) -> str:
    if isinstance(value, (list, tuple, set)):
        return ", ".join(str(v) for v in value)
    return str(value)


_CHECK_MESSAGES: dict[str, str] = {
    "greater_than": "must be > {min_value}",
    "greater_than_or_equal_to": "must be >= {min_value}",
    "less_than": "must be < {max_value}",
    "less_than_or_equal_to": "must be <= {max_value}",
    "equal_to": "must be {value}",
    "not_equal_to": "must not be {value}",
    "isin": "must be one of {allowed_values}",
    "notin": "must not be one of {forbidden_values}",
    "str_matches": "must match {pattern}",
    "str_contains": "must contain {pattern}",
    "str_startswith": "must start with {string}",
    "str_endswith": "must end with {string}",
}


def _check_message(check: Any) -> str:
    name = getattr(check, "name", None)
    stats = getattr(check, "statistics", None) or {}
    if name == "in_range":
        low = "[" if stats.get("include_min", True) else "("
        high = "]" if stats.get("include_max", True) else ")"
        return f"must be in {low}{stats.get('min_value')}, {stats.get('max_value')}{high}"
    if name == "str_length":
        if stats.get("exact_value") is not None:
            return f"must have length {stats['exact_value']}"
        return f"must have length in [{stats.get('min_value')}, {stats.get('max_value')}]"
    template = _CHECK_MESSAGES.get(name or "")
    if template is not None:
        try:
            return template.format(**{k: _format_bound(v) for k, v in stats.items()})
        except (KeyError, IndexError):
            pass
    # Custom checks phrase their ``error`` as a predicate ("must be finite").
    return str(getattr(check, "error", None) or name or check)


def _problems_from_failure_cases(
    schema: pa.DataFrameSchema,
    failure_cases: pd.DataFrame,
    frame: pd.DataFrame,
    source: str,
    *,
    skip_cells: set[tuple[str | None, int | None]],
    skip_columns: set[str],
    limit: int,
) -> tuple[list[Problem], int]:
    """Turn pandera's failure-case table into problems; returns (first ``limit``, total)."""
    checks: dict[tuple[str | None, str], Any] = {}
    for column_name, column in schema.columns.items():
        for check in column.checks:
            checks[(column_name, str(check.error))] = check
    for check in schema.checks:
        checks[(None, str(check.error))] = check
    expected_columns = ", ".join(schema.columns)

    cases = failure_cases.copy()
    # pandera names the schema in `column` for table-level checks; fall back to the failure case.
    cases["column"] = cases["column"].where(cases["schema_context"] != "DataFrameSchema", None)
    cell_mask = cases["index"].notna()
    cell_rows = np.zeros(len(cases), dtype=np.int64)
    if cell_mask.any():
        cell_rows[cell_mask.to_numpy()] = _row_numbers(frame.index, cases.loc[cell_mask, "index"])
    cases["row"] = cell_rows

    whole: list[Problem] = []
    column_level: list[Problem] = []
    for case in cases.loc[~cell_mask].itertuples(index=False):
        check_text = str(case.check)
        column_name = case.column if isinstance(case.column, str) else None
        if column_name in skip_columns:
            continue
        if check_text == "column_in_schema":
            whole.append(
                Problem(
                    source,
                    f"unexpected column {case.failure_case!r} (expected columns: {expected_columns})",
                )
            )
        elif check_text == "column_in_dataframe":
            whole.append(Problem(source, f"missing required column {case.failure_case!r}"))
        elif check_text.startswith("dtype("):
            column_level.append(
                Problem(source, f"has type {case.failure_case}, expected {check_text[6:-1]}",
                        column=column_name)
            )
        else:
            check = checks.get((column_name, check_text))
            message = _check_message(check) if check is not None else check_text
            column_level.append(
                Problem(source, f"{message} (check could not run: {case.failure_case})",
                        column=column_name)
            )

    cells = cases.loc[cell_mask]
    if len(cells):
        keep = ~cells["column"].isin(skip_columns)
        if skip_cells:
            keys = pd.Series(list(zip(cells["column"], cells["row"])), index=cells.index)
            keep &= ~keys.isin(skip_cells)
        cells = cells.loc[keep]
    # One problem per cell (several failed checks are joined), in row order, capped.
    cells = cells.sort_values(["row", "column"], kind="stable")
    cell_keys = cells[["column", "row"]].drop_duplicates()
    total = len(whole) + len(column_level) + len(cell_keys)
    room = max(limit - len(whole) - len(column_level), 0)
    shown = cell_keys.iloc[:room]
    cells = cells.merge(shown, on=["column", "row"], how="inner")

    cell_problems: list[Problem] = []
    for (column_name, row), group in cells.groupby(["column", "row"], sort=True):
        value = group["failure_case"].iloc[0]
        messages: list[str] = []
        for check_text in dict.fromkeys(str(c) for c in group["check"]):
            messages.append(
                _cell_message(checks, column_name, check_text, value, int(row), frame)
            )
        missing = "value is missing (empty or NaN)"
        if missing in messages:
            text = missing
        else:
            text = f"value {_format_value(value)} " + " and ".join(messages)
        cell_problems.append(Problem(source, text, column=column_name, row=int(row) or None))
    return whole + column_level + cell_problems, total


def _cell_message(
    checks: Mapping[tuple[str | None, str], Any],
    column: str,
    check_text: str,
    value: Any,
    row: int,
    frame: pd.DataFrame,
) -> str:
    if check_text == "not_nullable":
        return "value is missing (empty or NaN)"
    if check_text in ("field_uniqueness", "multiple_fields_uniqueness"):
        return "appears more than once"
    if check_text.startswith("coerce_dtype("):
        return f"cannot be converted to {check_text[len('coerce_dtype(') : -1]}"
    if check_text.startswith("dtype("):
        return f"does not have type {check_text[6:-1]}"
    check = checks.get((column, check_text))
    if check is None:
        return check_text
    if getattr(check, "name", None) == "not_before_previous_row" and row >= 2:
        # pandera runs checks on the non-null values, so "previous" skips missing cells.
        earlier = frame[column].iloc[: row - 1].dropna()
        if len(earlier):
            previous = _format_value(earlier.iloc[-1])
            return f"comes before the previous date {previous} (dates must be increasing)"
    return _check_message(check)


# ---------------------------------------------------------------------------------------------
# Output-table models: what the run-scoped assets write (SPEC §4, §9)
# ---------------------------------------------------------------------------------------------

STATUSES = ["pass", "warn", "fail"]
SEVERITIES = ["blocking", "soft", "info"]
OWNERS = ["quant", "risk", "ops"]
RECOMMENDED_STAGES = ["backtest_only", "paper_only", "paper_ok_live_candidate"]
RUN_STAGES = ["backtest", "paper", "live"]
RISK_TIERS = ["low", "medium", "high"]
RUN_KEY = ["world_id", "strategy_id", "run_id"]
_IDENTIFIER = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$"
_UTC = Annotated[pd.DatetimeTZDtype, "ns", "UTC"]


_IDENTIFIER_PATTERN = re.compile(_IDENTIFIER)


class _RunRows(pa.DataFrameModel):
    """Columns every run-scoped table starts with."""

    world_id: Series[str]
    strategy_id: Series[str]
    run_id: Series[str]
    recorded_at: Series[_UTC]

    @pa.check("world_id", "strategy_id", "run_id", name="identifier", error=f"must match {_IDENTIFIER}")
    @classmethod
    def _identifiers(cls, series: pd.Series) -> pd.Series:
        # Each distinct id is matched once: a backfill's returns repeat the same three ids on
        # millions of rows, and matching every row took several times longer.
        codes, distinct = pd.factorize(series)
        matches = [isinstance(v, str) and _IDENTIFIER_PATTERN.match(v) is not None for v in distinct]
        # A null has code -1, which picks the appended True: nulls are the null check's business.
        return pd.Series(np.array([*matches, True], dtype=bool)[codes], index=series.index)


def _finite_or_null(values: pd.Series) -> pd.Series:
    array = values.to_numpy(dtype=float)
    return pd.Series(np.isfinite(array) | np.isnan(array), index=values.index)


class StrategyReturnsTable(_RunRows):
    """``strategy_returns``: validated daily returns, one row per run and date."""

    date: Series[pd.Timestamp]
    ret: Series[float] = pa.Field(gt=-1)
    benchmark_ret: Series[float] = pa.Field(gt=-1, nullable=True)

    class Config:
        name = "strategy_returns"
        strict = True
        coerce = True
        unique = [*RUN_KEY, "date"]

    @pa.check("ret", name="finite", error="must be finite")
    def _finite(cls, values: Series[float]) -> Series[bool]:
        return pd.Series(np.isfinite(values.to_numpy(dtype=float)), index=values.index)

    @pa.check("benchmark_ret", name="finite_or_null", error="must be finite or null")
    def _benchmark_finite(cls, values: Series[float]) -> Series[bool]:
        return _finite_or_null(values)


class StrategyTradesTable(_RunRows):
    """``strategy_trades``: validated trades logs, one row per execution."""

    ts: Series[_UTC]
    symbol: Series[str]
    side: Series[str] = pa.Field(isin=["buy", "sell"])
    qty: Series[float] = pa.Field(ne=0)
    price: Series[float] = pa.Field(gt=0)
    notional: Series[float]
    adv_notional: Series[float] = pa.Field(gt=0, nullable=True)
    bar_volume: Series[float] = pa.Field(gt=0, nullable=True)

    class Config:
        name = "strategy_trades"
        strict = True
        coerce = True

    @pa.check("qty", "price", "notional", name="finite", error="must be finite")
    def _finite(cls, values: Series[float]) -> Series[bool]:
        return pd.Series(np.isfinite(values.to_numpy(dtype=float)), index=values.index)


class RunManifestsTable(_RunRows):
    """``run_manifests``: one validated run.json per run, with where it landed."""

    stage: Series[str] = pa.Field(isin=RUN_STAGES)
    risk_tier: Series[str] = pa.Field(isin=RISK_TIERS)
    submitted_at: Series[_UTC]
    model_card_version: Series[str] = pa.Field(nullable=True)
    campaign_id: Series[str] = pa.Field(nullable=True)
    search_intensity: Series[int] = pa.Field(ge=1)
    capital: Series[float] = pa.Field(gt=0, nullable=True)
    data_start: Series[pd.Timestamp]
    data_end: Series[pd.Timestamp]
    n_periods: Series[int] = pa.Field(ge=1)
    has_trades: Series[bool]
    landing_prefix: Series[str]
    content_hash: Series[str] = pa.Field(str_startswith="sha256:")
    manifest_json: Series[str]

    class Config:
        name = "run_manifests"
        strict = True
        coerce = True
        unique = RUN_KEY


class EvaluationMetricsTable(pa.DataFrameModel):
    """``evaluation_metrics``: one wide row per run; every metric column is finite or null."""

    world_id: Series[str] = pa.Field(str_matches=_IDENTIFIER)
    strategy_id: Series[str] = pa.Field(str_matches=_IDENTIFIER)
    run_id: Series[str] = pa.Field(str_matches=_IDENTIFIER)
    computed_at: Series[_UTC]
    metric: Series[float] = pa.Field(
        alias=r"^(returns|sample|risk|robustness|diagnostics|benchmark)__(?!returns_source$).+$",
        regex=True,
        nullable=True,
    )
    diagnostics__returns_source: Series[str] = pa.Field(nullable=True)
    metric_notes_json: Series[str]
    extra_metrics_json: Series[str]
    metrics_json: Series[str]

    class Config:
        name = "evaluation_metrics"
        strict = True
        coerce = True
        unique = RUN_KEY

    @pa.dataframe_check(name="metrics_finite_or_null", error="metric values must be finite or null")
    def _metrics_finite(cls, frame: pd.DataFrame) -> pd.Series:
        numeric = frame.select_dtypes(include="number").to_numpy(dtype=float)
        return pd.Series((np.isfinite(numeric) | np.isnan(numeric)).all(axis=1), index=frame.index)


class RuleResultsTable(_RunRows):
    """``rule_results``: one row per run and rule of an evaluation."""

    revision: Series[int] = pa.Field(ge=1)
    rule: Series[str]
    status: Series[str] = pa.Field(isin=STATUSES)
    severity: Series[str] = pa.Field(isin=SEVERITIES)
    owner: Series[str] = pa.Field(isin=OWNERS)
    reason_code: Series[str]
    reason: Series[str]
    tags: Series[object]
    details_json: Series[str]
    profile: Series[str] = pa.Field(nullable=True)
    policy_version: Series[str] = pa.Field(nullable=True)
    ruleset_hash: Series[str] = pa.Field(nullable=True, str_startswith="sha256:")
    run_status: Series[str] = pa.Field(isin=STATUSES)
    recommended_stage: Series[str] = pa.Field(isin=RECOMMENDED_STAGES)

    class Config:
        name = "rule_results"
        strict = True
        coerce = True
        unique = [*RUN_KEY, "rule"]


class EvaluationRunHistoryTable(_RunRows):
    """``evaluation_run_history``: one row per revision of a run (append-only)."""

    revision: Series[int] = pa.Field(ge=1)
    reason: Series[str]
    stage: Series[str] = pa.Field(isin=RUN_STAGES)
    risk_tier: Series[str] = pa.Field(isin=RISK_TIERS)
    status: Series[str] = pa.Field(isin=STATUSES)
    recommended_stage: Series[str] = pa.Field(isin=RECOMMENDED_STAGES)
    profile: Series[str] = pa.Field(nullable=True)
    policy_version: Series[str] = pa.Field(nullable=True)
    ruleset_hash: Series[str] = pa.Field(nullable=True)
    model_card_version: Series[str] = pa.Field(nullable=True)
    submitted_at: Series[_UTC]
    campaign_id: Series[str] = pa.Field(nullable=True)
    pipeline_run_id: Series[str] = pa.Field(nullable=True)
    payload_json: Series[str]

    class Config:
        name = "evaluation_run_history"
        strict = True
        coerce = True
        unique = [*RUN_KEY, "revision"]


class ValidationReportsTable(_RunRows):
    """``validation_reports``: where each run revision's report files were written."""

    revision: Series[int] = pa.Field(ge=1)
    status: Series[str] = pa.Field(isin=STATUSES)
    recommended_stage: Series[str] = pa.Field(isin=RECOMMENDED_STAGES)
    markdown_path: Series[str]
    html_path: Series[str]
    model_card_found: Series[bool]

    class Config:
        name = "validation_reports"
        strict = True
        coerce = True
        unique = [*RUN_KEY, "revision"]


# ---------------------------------------------------------------------------------------------
# Output-table models: what the snapshot-scoped (risk hub) assets write (SPEC §4, §8, §9)
# ---------------------------------------------------------------------------------------------

SNAPSHOT_KEY = ["world_id", "version"]
SNAPSHOT_FORMS = ["inline", "ref", "none"]
PORTFOLIO_SCOPES = ["portfolio", "member", "candidate"]
CANDIDATE_VARIANCE_SOURCES = ["snapshot", "run_volatility"]
# Euler components sum to the total up to floating-point rounding of a few hundred terms.
COMPONENT_SUM_TOLERANCE = 1e-9


class _SnapshotRows(pa.DataFrameModel):
    """Columns every snapshot-scoped table starts with; every number finite or null."""

    world_id: Series[str] = pa.Field(str_matches=_IDENTIFIER)
    version: Series[str] = pa.Field(str_matches=_IDENTIFIER)
    as_of: Series[_UTC]

    @pa.dataframe_check(name="numbers_finite_or_null", error="numbers must be finite or null")
    def _numbers_finite(cls, frame: pd.DataFrame) -> pd.Series:
        numeric = frame.select_dtypes(include=["number"]).to_numpy(dtype=float, na_value=np.nan)
        return pd.Series((np.isfinite(numeric) | np.isnan(numeric)).all(axis=1), index=frame.index)


class RiskSnapshotsTable(_SnapshotRows):
    """``risk_snapshots``: one row per contract-validated snapshot version (fallbacks flagged)."""

    hash: Series[str] = pa.Field(str_startswith="sha256:")
    content_hash: Series[str] = pa.Field(str_startswith="sha256:", nullable=True)
    actor: Series[str] = pa.Field(nullable=True)
    producer_stage: Series[str] = pa.Field(nullable=True)
    source: Series[str] = pa.Field(nullable=True)
    ttl_sec: Series[int] = pa.Field(ge=1)
    n_strategies: Series[int] = pa.Field(ge=1)
    covariance_form: Series[str] = pa.Field(isin=SNAPSHOT_FORMS)
    realized_returns_form: Series[str] = pa.Field(isin=SNAPSHOT_FORMS)
    signed: Series[bool]
    is_fallback: Series[bool]
    fallback_of_version: Series[str] = pa.Field(nullable=True, str_matches=_IDENTIFIER)
    landing_key: Series[str] = pa.Field(nullable=True)
    source_etag: Series[str] = pa.Field(nullable=True)
    received_at: Series[_UTC] = pa.Field(nullable=True)
    payload_json: Series[str]
    recorded_at: Series[_UTC]

    class Config:
        name = "risk_snapshots"
        strict = True
        coerce = True
        unique = SNAPSHOT_KEY

    @pa.dataframe_check(name="fallback_names_its_source", error="a fallback row must name the version it derives from")
    def _fallback_source(cls, frame: pd.DataFrame) -> pd.Series:
        return ~frame["is_fallback"] | frame["fallback_of_version"].notna()


class SnapshotWeightsTable(_SnapshotRows):
    """``snapshot_weights``: one row per strategy of each snapshot; a snapshot's weights sum to 1."""

    strategy_id: Series[str] = pa.Field(str_matches=_IDENTIFIER)
    weight: Series[float]
    is_fallback: Series[bool]
    recorded_at: Series[_UTC]

    class Config:
        name = "snapshot_weights"
        strict = True
        coerce = True
        unique = [*SNAPSHOT_KEY, "strategy_id"]

    @pa.dataframe_check(name="weights_sum_to_one", error="a snapshot's weights must sum to 1 ± 1e-3")
    def _sum_to_one(cls, frame: pd.DataFrame) -> pd.Series:
        totals = frame.groupby(SNAPSHOT_KEY, sort=False)["weight"].transform("sum")
        return (totals - 1.0).abs() <= 1e-3


class CovarianceTable(_SnapshotRows):
    """``covariance``: the upper triangle (and diagonal) of each snapshot's covariance matrix."""

    strategy_a: Series[str] = pa.Field(str_matches=_IDENTIFIER)
    strategy_b: Series[str] = pa.Field(str_matches=_IDENTIFIER)
    covariance: Series[float]
    correlation: Series[float] = pa.Field(ge=-1.0 - 1e-9, le=1.0 + 1e-9, nullable=True)
    imputed: Series[bool]
    is_fallback: Series[bool]
    recorded_at: Series[_UTC]

    class Config:
        name = "covariance"
        strict = True
        coerce = True
        unique = [*SNAPSHOT_KEY, "strategy_a", "strategy_b"]

    @pa.dataframe_check(name="variances_not_negative", error="a variance (strategy_a = strategy_b) must be >= 0")
    def _variances(cls, frame: pd.DataFrame) -> pd.Series:
        return (frame["strategy_a"] != frame["strategy_b"]) | (frame["covariance"] >= 0)

    @pa.dataframe_check(name="variances_never_imputed", error="a variance cannot be imputed")
    def _variances_given(cls, frame: pd.DataFrame) -> pd.Series:
        return (frame["strategy_a"] != frame["strategy_b"]) | ~frame["imputed"]


class RealizedReturnsTable(_SnapshotRows):
    """``realized_returns``: one row per strategy and period of each snapshot's realized series."""

    strategy_id: Series[str] = pa.Field(str_matches=_IDENTIFIER)
    period: Series[int] = pa.Field(le=0)
    date: Series[pd.Timestamp] = pa.Field(nullable=True)
    ret: Series[float]
    recorded_at: Series[_UTC]

    class Config:
        name = "realized_returns"
        strict = True
        coerce = True
        unique = [*SNAPSHOT_KEY, "strategy_id", "period"]


class PortfolioRiskTable(_SnapshotRows):
    """``portfolio_risk``: one portfolio row, member rows and candidate rows per snapshot; member
    components sum to the portfolio VaR and ES."""

    computed_at: Series[_UTC]
    scope: Series[str] = pa.Field(isin=PORTFOLIO_SCOPES)
    strategy_id: Series[str] = pa.Field(nullable=True, str_matches=_IDENTIFIER)
    run_id: Series[str] = pa.Field(nullable=True, str_matches=_IDENTIFIER)
    weight: Series[float] = pa.Field(nullable=True)
    alpha: Series[float] = pa.Field(gt=0.5, lt=1.0)
    volatility: Series[float] = pa.Field(ge=0, nullable=True)
    var: Series[float] = pa.Field(ge=0, nullable=True)
    es: Series[float] = pa.Field(ge=0, nullable=True)
    historical_var: Series[float] = pa.Field(ge=0, nullable=True)
    historical_es: Series[float] = pa.Field(ge=0, nullable=True)
    historical_periods: Series[pd.Int64Dtype] = pa.Field(ge=0, nullable=True)
    historical_covered_weight: Series[float] = pa.Field(ge=0, le=1, nullable=True)
    component_var: Series[float] = pa.Field(nullable=True)
    component_es: Series[float] = pa.Field(nullable=True)
    incremental_var: Series[float] = pa.Field(nullable=True)
    incremental_es: Series[float] = pa.Field(nullable=True)
    var_with_candidate: Series[float] = pa.Field(ge=0, nullable=True)
    es_with_candidate: Series[float] = pa.Field(ge=0, nullable=True)
    variance_source: Series[str] = pa.Field(isin=CANDIDATE_VARIANCE_SOURCES, nullable=True)
    imputed_pairs: Series[pd.Int64Dtype] = pa.Field(ge=0, nullable=True)
    is_fallback: Series[bool]

    class Config:
        name = "portfolio_risk"
        strict = True
        coerce = True
        unique = [*SNAPSHOT_KEY, "scope", "strategy_id"]

    @pa.dataframe_check(name="one_portfolio_row", error="each snapshot has exactly one portfolio row")
    def _one_portfolio_row(cls, frame: pd.DataFrame) -> pd.Series:
        count = (frame["scope"] == "portfolio").groupby([frame["world_id"], frame["version"]]).transform("sum")
        return count == 1

    @pa.dataframe_check(name="components_sum_to_total", error="member component VaR/ES must sum to the portfolio VaR/ES")
    def _components(cls, frame: pd.DataFrame) -> pd.Series:
        keys = [frame["world_id"], frame["version"]]
        members = frame["scope"] == "member"
        portfolio = frame["scope"] == "portfolio"
        ok = pd.Series(True, index=frame.index)
        for component, total in (("component_var", "var"), ("component_es", "es")):
            summed = frame[component].where(members, 0.0).fillna(0.0).groupby(keys).transform("sum")
            target = frame[total].where(portfolio).groupby(keys).transform("max")
            tolerance = COMPONENT_SUM_TOLERANCE * np.maximum(1.0, target.abs().fillna(0.0))
            ok &= target.isna() | ((summed - target).abs() <= tolerance)
        return ok


class StressResultsTable(_SnapshotRows):
    """``stress_results``: one row per scenario (and strategy) of each snapshot."""

    scenario: Series[str]
    strategy_id: Series[str] = pa.Field(nullable=True, str_matches=_IDENTIFIER)
    max_drawdown: Series[float] = pa.Field(ge=0, nullable=True)
    var_99: Series[float] = pa.Field(ge=0, nullable=True)
    es_99: Series[float] = pa.Field(ge=0, nullable=True)
    shock: Series[float] = pa.Field(nullable=True)
    stress_pnl: Series[float] = pa.Field(nullable=True)
    pnl_covered_weight: Series[float] = pa.Field(ge=0, le=1, nullable=True)
    status: Series[str] = pa.Field(isin=STATUSES, nullable=True)
    reason: Series[str] = pa.Field(nullable=True)
    computed_at: Series[_UTC]

    class Config:
        name = "stress_results"
        strict = True
        coerce = True
        unique = [*SNAPSHOT_KEY, "scenario", "strategy_id"]


class LiveMonitoringTable(_SnapshotRows):
    """``live_monitoring``: one row per strategy and trailing window of each snapshot."""

    strategy_id: Series[str] = pa.Field(str_matches=_IDENTIFIER)
    window_periods: Series[int] = pa.Field(ge=1)
    computed_at: Series[_UTC]
    n_periods: Series[int] = pa.Field(ge=0)
    realized_sharpe: Series[float] = pa.Field(nullable=True)
    realized_max_drawdown: Series[float] = pa.Field(ge=0, nullable=True)
    backtest_sharpe: Series[float] = pa.Field(nullable=True)
    sharpe_decay_ratio: Series[float] = pa.Field(nullable=True)
    breach_sharpe: Series[bool]
    breach_drawdown: Series[bool]
    breach_decay: Series[bool]
    demotion_candidate: Series[bool]
    strategy_demotion_candidate: Series[bool]
    reason: Series[str] = pa.Field(nullable=True)
    notes: Series[str] = pa.Field(nullable=True)

    class Config:
        name = "live_monitoring"
        strict = True
        coerce = True
        unique = [*SNAPSHOT_KEY, "strategy_id", "window_periods"]

    @pa.dataframe_check(name="demotion_follows_breaches", error="demotion_candidate must equal any breach of the window")
    def _demotion(cls, frame: pd.DataFrame) -> pd.Series:
        return frame["demotion_candidate"] == (frame["breach_sharpe"] | frame["breach_drawdown"] | frame["breach_decay"])


__all__ += [
    "CovarianceTable",
    "LiveMonitoringTable",
    "PortfolioRiskTable",
    "RealizedReturnsTable",
    "RiskSnapshotsTable",
    "SnapshotWeightsTable",
    "StressResultsTable",
]


class ExtendedRevisionsTable(EvaluationRunHistoryTable):
    """``evaluation_run_history`` rows the extended validation appends (new revisions of runs
    whose extended-layer results changed): the history contract under its own name, so the
    asset's Dagster type is distinct from the run-scoped ``evaluation_run``'s."""

    class Config:
        name = "extended_revisions"
        strict = True
        coerce = True
        unique = [*RUN_KEY, "revision"]


__all__ += ["ExtendedRevisionsTable"]


class PolicyDiffTable(pa.DataFrameModel):
    """``policy_diff``: one row per historical run of a world under its old and new policy
    version. ``changed`` is true exactly when the status, the recommended stage or a rule flips."""

    world_id: Series[str] = pa.Field(str_matches=_IDENTIFIER)
    old_policy_version: Series[str] = pa.Field(nullable=True)
    new_policy_version: Series[str]
    strategy_id: Series[str] = pa.Field(str_matches=_IDENTIFIER)
    run_id: Series[str] = pa.Field(str_matches=_IDENTIFIER)
    stage: Series[str] = pa.Field(isin=RUN_STAGES)
    changed: Series[bool]
    old_status: Series[str] = pa.Field(isin=STATUSES)
    new_status: Series[str] = pa.Field(isin=STATUSES)
    old_recommended_stage: Series[str] = pa.Field(isin=RECOMMENDED_STAGES)
    new_recommended_stage: Series[str] = pa.Field(isin=RECOMMENDED_STAGES)
    status_changed: Series[bool]
    stage_changed: Series[bool]
    flipped_rules: Series[object]
    old_ruleset_hash: Series[str] = pa.Field(nullable=True, str_startswith="sha256:")
    new_ruleset_hash: Series[str] = pa.Field(nullable=True, str_startswith="sha256:")
    computed_at: Series[_UTC]

    class Config:
        name = "policy_diff"
        strict = True
        coerce = True
        unique = RUN_KEY

    @pa.dataframe_check(name="status_changed_matches", error="status_changed must equal old_status != new_status")
    def _status_changed(cls, frame: pd.DataFrame) -> pd.Series:
        return frame["status_changed"] == (frame["old_status"] != frame["new_status"])

    @pa.dataframe_check(name="stage_changed_matches", error="stage_changed must equal old != new recommended stage")
    def _stage_changed(cls, frame: pd.DataFrame) -> pd.Series:
        return frame["stage_changed"] == (frame["old_recommended_stage"] != frame["new_recommended_stage"])

    @pa.dataframe_check(name="changed_matches", error="changed must be status_changed or stage_changed or a flipped rule")
    def _changed(cls, frame: pd.DataFrame) -> pd.Series:
        flipped = frame["flipped_rules"].map(lambda rules: len(rules) > 0 if rules is not None else False)
        return frame["changed"] == (frame["status_changed"] | frame["stage_changed"] | flipped.astype(bool))


__all__ += ["PolicyDiffTable"]
