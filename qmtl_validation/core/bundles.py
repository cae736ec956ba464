"""Reading evaluation-run bundles from the landing zone into typed objects (SPEC §3).

A bundle is the folder ``runs/<YYYY-MM-DD>/<world_id>/<strategy_id>/<run_id>/`` holding
``returns.parquet`` or ``returns.csv``, optionally ``trades.parquet`` or ``trades.csv``, and
``run.json`` (written last: it marks the bundle complete). The same bytes arrive from a local
folder (:func:`load_bundle`) or from S3 (:func:`load_bundle_from_files`); both end in the same
checks, and every problem found in any file is reported together in one :class:`BundleError`.

:func:`parse_json_document` is the one guarded JSON reader of the project (run manifests, risk
snapshots, override logs): it caps size and nesting depth, requires UTF-8, and rejects NaN /
Infinity literals, out-of-range numbers and duplicate keys.
"""

from __future__ import annotations

import datetime as dt
import difflib
import hashlib
import io
import json
import math
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Literal, Mapping

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from qmtl_validation.core.contracts import (
    ContractError,
    Problem,
    ReturnsSchema,
    TradesSchema,
    validate_frame,
)
from qmtl_validation.core.identifiers import InvalidIdentifierError, check_identifier

__all__ = [
    "BundleError",
    "MANIFEST_MAX_BYTES",
    "RunBundle",
    "RunManifest",
    "TABLE_MAX_BYTES",
    "bundle_content_hash",
    "load_bundle",
    "load_bundle_from_files",
    "load_returns",
    "load_trades",
    "parse_json_document",
    "parse_manifest",
    "returns_series",
]

MANIFEST_MAX_BYTES = 5 * 1024 * 1024
TABLE_MAX_BYTES = 512 * 1024 * 1024
JSON_MAX_DEPTH = 32

STAGES = ("backtest", "paper", "live")
RISK_TIERS = ("low", "medium", "high")
TableFormat = Literal["csv", "parquet"]

MANIFEST_FILE = "run.json"
RETURNS_FILES = ("returns.parquet", "returns.csv")
TRADES_FILES = ("trades.parquet", "trades.csv")
BUNDLE_FILES = (*RETURNS_FILES, *TRADES_FILES, MANIFEST_FILE)


class BundleError(ContractError):
    """A landing-zone input (table file, run manifest, JSON document) that breaks its contract.

    Carries ``file``, ``column``, ``row``, ``path`` of the first problem and every ``problems``
    entry; ``str(error)`` is the reason written to the rejections table.
    """


def _fail(file: str, message: str, **where: Any) -> BundleError:
    return BundleError([Problem(file, message, **where)])


# ---------------------------------------------------------------------------------------------
# Guarded JSON
# ---------------------------------------------------------------------------------------------


class _JsonRejected(ValueError):
    pass


def _reject_constant(name: str) -> Any:
    raise _JsonRejected(f"{name} is not valid JSON (numbers must be finite)")


def _parse_finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise _JsonRejected(f"number {text} is out of range")
    return value


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise _JsonRejected(f"duplicate key {key!r}")
        result[key] = value
    return result


def _nesting_depth(document: Any) -> int:
    """Depth of nested arrays/objects (a scalar is 0, ``{}`` is 1); iterative, no recursion."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(document, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, dict):
            children = node.values()
        elif isinstance(node, list):
            children = node
        else:
            continue
        deepest = max(deepest, depth)
        stack.extend((child, depth + 1) for child in children if isinstance(child, (dict, list)))
    return deepest


def parse_json_document(
    data: bytes,
    *,
    source_name: str,
    max_bytes: int = MANIFEST_MAX_BYTES,
    max_depth: int = JSON_MAX_DEPTH,
    expect_object: bool = True,
) -> Any:
    """Parse untrusted JSON bytes, or raise :class:`BundleError` naming ``source_name``.

    Rejected: more than ``max_bytes`` bytes; bytes that are not UTF-8 (a leading UTF-8 BOM is
    accepted); syntax errors (with line and column); ``NaN`` / ``Infinity`` literals and numbers
    that overflow a float; duplicate keys in an object; nesting deeper than ``max_depth``
    (arrays and objects count one level each); and, with ``expect_object``, a top level that is
    not an object.
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"parse_json_document needs bytes, got {type(data).__name__}")
    data = bytes(data)
    if len(data) > max_bytes:
        raise _fail(source_name, f"is {len(data):,} bytes, above the {max_bytes:,}-byte limit")
    text = _decode_utf8(data, source_name)
    if not text.strip():
        raise _fail(source_name, "is empty")
    try:
        document = json.loads(
            text,
            parse_constant=_reject_constant,
            parse_float=_parse_finite_float,
            object_pairs_hook=_unique_keys,
        )
    except json.JSONDecodeError as exc:
        raise _fail(
            source_name, f"is not valid JSON: line {exc.lineno} column {exc.colno}: {exc.msg}"
        ) from None
    except RecursionError:
        raise _fail(source_name, f"nests deeper than {max_depth} levels") from None
    except _JsonRejected as exc:
        raise _fail(source_name, f"is not valid JSON: {exc}") from None
    except ValueError as exc:  # e.g. an integer literal longer than Python accepts
        raise _fail(source_name, f"is not valid JSON: {exc}") from None
    if _nesting_depth(document) > max_depth:
        raise _fail(source_name, f"nests deeper than {max_depth} levels")
    if expect_object and not isinstance(document, dict):
        raise _fail(source_name, f"must be a JSON object, not {_json_type(document)}")
    return document


def _decode_utf8(data: bytes, source_name: str) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise _fail(
            source_name,
            f"is not UTF-8 text: byte 0x{data[exc.start]:02x} at offset {exc.start}",
        ) from None


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"


# ---------------------------------------------------------------------------------------------
# Tables
# ---------------------------------------------------------------------------------------------


def _read_source(
    source: str | Path | bytes, source_name: str | None, max_bytes: int
) -> tuple[bytes, str]:
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
        name = source_name or "<bytes>"
    else:
        path = Path(source)
        name = source_name or path.name
        size = path.stat().st_size
        if size > max_bytes:
            raise _fail(name, f"is {size:,} bytes, above the {max_bytes:,}-byte limit")
        data = path.read_bytes()
    if len(data) > max_bytes:
        raise _fail(name, f"is {len(data):,} bytes, above the {max_bytes:,}-byte limit")
    return data, name


def _table_format(name: str, explicit: str | None) -> TableFormat:
    if explicit is not None:
        fmt = explicit.lower().lstrip(".")
    else:
        fmt = PurePosixPath(name).suffix.lower().lstrip(".")
    if fmt not in ("csv", "parquet"):
        raise _fail(name, "has an unknown table format (expected a .csv or .parquet file)")
    return fmt  # type: ignore[return-value]


def _read_table(data: bytes, name: str, fmt: TableFormat) -> pd.DataFrame:
    if not data.strip():
        raise _fail(name, "is empty")
    if fmt == "parquet":
        try:
            # what pd.read_parquet does, without its filesystem and engine resolution per call
            return pq.ParquetFile(pa.BufferReader(data)).read().to_pandas()
        except Exception as exc:  # pyarrow raises several unrelated types for corrupt files
            raise _fail(name, f"is not a readable Parquet file ({_first_line(exc)})") from None
    text = _decode_utf8(data, name)
    try:
        # Everything is read as text so the contract reports unreadable values with their row.
        # header=None makes pandas size rows by the header line, so a line with extra fields is
        # a parse error instead of silently becoming an index.
        raw = pd.read_csv(io.StringIO(text), header=None, dtype=str, skipinitialspace=True)
    except pd.errors.EmptyDataError:
        raise _fail(name, "is empty") from None
    except (pd.errors.ParserError, ValueError) as exc:
        raise _fail(name, f"is not valid CSV ({_first_line(exc)})") from None
    header = ["" if pd.isna(h) else str(h).strip() for h in raw.iloc[0]]
    repeated = sorted({h for h in header if header.count(h) > 1})
    if repeated:
        raise _fail(name, f"header repeats column {repeated[0]!r}")
    frame = raw.iloc[1:].reset_index(drop=True)
    frame.columns = header
    return frame


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def load_returns(
    source: str | Path | bytes,
    *,
    source_name: str | None = None,
    format: TableFormat | None = None,
    max_bytes: int = TABLE_MAX_BYTES,
) -> pd.DataFrame:
    """Read and validate a returns file (CSV or Parquet) against :class:`ReturnsSchema`.

    ``source`` is a path or the file's bytes (as the S3 landing zone hands them over);
    ``source_name`` names it in errors (default: the file name) and gives the format by its
    extension unless ``format`` is given. Returns the validated frame: ``date``
    (datetime64[ns], midnight), ``ret`` and optionally ``benchmark_ret`` (float64), in file order
    with a fresh 0..n-1 index. Raises :class:`BundleError` with every problem found.
    """
    data, name = _read_source(source, source_name, max_bytes)
    fmt = _table_format(name, format)
    frame = _read_table(data, name, fmt)
    clean = _clean_returns(_typed(frame, _RETURNS_KINDS) if fmt == "csv" else frame)
    if clean is not None:
        return clean
    return validate_frame(
        ReturnsSchema, frame.reset_index(drop=True), name, allow_empty=False, error_cls=BundleError
    )


def load_trades(
    source: str | Path | bytes,
    *,
    source_name: str | None = None,
    format: TableFormat | None = None,
    max_bytes: int = TABLE_MAX_BYTES,
) -> pd.DataFrame:
    """Read and validate a trades log (CSV or Parquet) against :class:`TradesSchema`.

    Same arguments as :func:`load_returns`. Returns the validated frame (``ts`` as
    datetime64[ns, UTC], ``side`` lowercased, numbers as float64), in file order.
    """
    data, name = _read_source(source, source_name, max_bytes)
    fmt = _table_format(name, format)
    frame = _read_table(data, name, fmt)
    clean = _clean_trades(_typed(frame, _TRADES_KINDS) if fmt == "csv" else frame)
    if clean is not None:
        return clean
    return validate_frame(
        TradesSchema, frame.reset_index(drop=True), name, allow_empty=False, error_cls=BundleError
    )


# Clean typed tables skip pandera. Validating a table through pandera costs 10-30 ms whatever
# its size (schema set-up, one pass per check, error bookkeeping), which is most of the cost of
# reading a bundle, and a backfill over 10,000 runs reads 20,000 tables. Most tables arrive
# clean and typed (Parquet), so they are first checked against the same rules as the contract
# with a few vectorised passes; anything those checks cannot pass (a wrong, missing or oddly typed
# value) returns None and goes through ``validate_frame``, which reports every problem. A CSV table
# is first converted to the contract's types when its values are plainly spelled (``_typed``).
# When they pass, the frame is what ``validate_frame`` would return
# (qmtl_validation_tests/bench/test_fast_paths.py compares the two).

_RETURNS_COLUMNS = ("date", "ret", "benchmark_ret")
_TRADES_COLUMNS = ("ts", "symbol", "side", "qty", "price", "notional", "adv_notional", "bar_volume")
_TRADES_REQUIRED = _TRADES_COLUMNS[:6]
_SIDES = frozenset({"buy", "sell"})
_RETURNS_KINDS = {"date": "date", "ret": "float", "benchmark_ret": "float"}
_TRADES_KINDS = {"ts": "instant", "symbol": "text", "side": "text"} | {
    name: "float" for name in _TRADES_COLUMNS[3:]
}
# datetime64[ns] covers 1677-09-21 .. 2262-04-11; stay clear of both ends
_FIRST_DAY, _LAST_DAY = np.datetime64("1678-01-01", "D"), np.datetime64("2262-01-01", "D")
_EPOCH_ORDINAL = dt.date(1970, 1, 1).toordinal()


def _has_columns(frame: pd.DataFrame, allowed: tuple[str, ...], required: tuple[str, ...]) -> bool:
    names = list(frame.columns)
    return (
        len(frame) > 0
        and frame.columns.is_unique
        and all(isinstance(n, str) and n in allowed for n in names)
        and all(n in names for n in required)
    )


def _finite_floats(
    column: pd.Series, *, gt: float | None = None, nonzero: bool = False
) -> np.ndarray | None:
    values = column.to_numpy()
    if values.dtype.kind in "iu":  # whole numbers (a CSV's quantities): the contract's float cast
        values = values.astype(np.float64)
    if values.dtype != np.float64 or not np.isfinite(values).all():
        return None
    if gt is not None and not (values > gt).all():
        return None
    if nonzero and not (values != 0).all():
        return None
    return values


def _texts(column: pd.Series) -> np.ndarray | None:
    values = column.to_numpy()
    if values.dtype != object or not all(type(v) is str for v in values):
        return None
    return values


def _typed(frame: pd.DataFrame, kinds: Mapping[str, str]) -> pd.DataFrame | None:
    """A CSV table (all text) in its contract's types when every value has its plain spelling —
    a number literal, a ``YYYY-MM-DD`` date, a ``YYYY-MM-DDTHH:MM:SSZ`` instant, present text —
    else None. Each value is what the contract's own coercion makes of that spelling."""
    if len(frame) == 0:
        return None
    columns: dict[str, Any] = {}
    for name in frame.columns:
        kind = kinds.get(name)
        values = frame[name].to_numpy(dtype=object)
        if kind is None or not all(type(v) is str for v in values):
            return None
        if kind == "float":
            try:
                converted = pd.to_numeric(values, errors="raise")
            except (ValueError, TypeError):
                return None
            if converted.dtype.kind not in "fiu":
                return None
        elif kind == "date":
            converted = _spelled_times(values, "D", "")
        elif kind == "instant":
            converted = _spelled_times(values, "s", "Z")
        else:
            converted = values
        if converted is None:
            return None
        columns[name] = converted
    typed = pd.DataFrame(columns, columns=list(frame.columns))
    if "ts" in typed.columns:
        typed["ts"] = typed["ts"].dt.tz_localize("UTC")
    return typed


def _spelled_times(values: np.ndarray, unit: str, suffix: str) -> np.ndarray | None:
    """datetime64[ns] of texts spelled exactly as numpy writes ``unit`` (then ``suffix``), or
    None."""
    if suffix:
        if not all(v.endswith(suffix) for v in values):
            return None
        values = np.array([v[: -len(suffix)] for v in values], dtype=object)
    try:
        parsed = values.astype(str).astype(f"datetime64[{unit}]")
    except ValueError:
        return None
    spelled = np.datetime_as_string(parsed, unit=unit)
    if np.isnat(parsed).any() or not (spelled == values.astype(str)).all():
        return None
    if parsed.min() < _FIRST_DAY or parsed.max() > _LAST_DAY:
        return None
    return parsed.astype("datetime64[ns]")


def _calendar_days(dates: np.ndarray) -> np.ndarray | None:
    """datetime64[D] of a column of plain ``datetime.date`` values (Parquet ``date32``) or of
    naive midnight datetime64[ns] values (a coerced CSV column); None for anything else."""
    if dates.dtype == object:
        if not all(type(v) is dt.date for v in dates):
            return None
        # day numbers from the proleptic ordinals: a C loop, far faster than numpy's object cast
        ordinals = np.fromiter(map(dt.date.toordinal, dates), np.int64, len(dates))
        return (ordinals - _EPOCH_ORDINAL).view("datetime64[D]")
    if dates.dtype != np.dtype("datetime64[ns]") or np.isnat(dates).any():
        return None
    days = dates.astype("datetime64[D]")
    return days if (days == dates).all() else None


def _clean_returns(frame: pd.DataFrame | None) -> pd.DataFrame | None:
    """The validated returns frame when ``frame`` passes :class:`ReturnsSchema` by fast checks
    (calendar dates, strictly increasing; finite float64 returns > -1), else None."""
    if frame is None or not _has_columns(frame, _RETURNS_COLUMNS, _RETURNS_COLUMNS[:2]):
        return None
    days = _calendar_days(frame["date"].to_numpy())
    if days is None:
        return None
    steps = np.diff(days.view(np.int64))
    if days[0] < _FIRST_DAY or days[-1] > _LAST_DAY or not (steps > 0).all():
        return None
    columns: dict[str, Any] = {}
    for name in frame.columns:
        if name == "date":
            columns[name] = days.astype("datetime64[ns]")
            continue
        values = _finite_floats(frame[name], gt=-1.0)
        if values is None:
            return None
        columns[name] = values
    return pd.DataFrame(columns, columns=list(frame.columns))


def _clean_trades(frame: pd.DataFrame | None) -> pd.DataFrame | None:
    """The validated trades frame when ``frame`` passes :class:`TradesSchema` by fast checks
    (UTC timestamps; non-blank symbols; buy/sell in any case and padding; finite float64 numbers
    within their bounds), else None."""
    if frame is None or not _has_columns(frame, _TRADES_COLUMNS, _TRADES_REQUIRED):
        return None
    columns: dict[str, Any] = {}
    for name in frame.columns:
        column = frame[name]
        if name == "ts":
            if not isinstance(column.dtype, pd.DatetimeTZDtype) or column.isna().any():
                return None
            try:
                columns[name] = column.dt.tz_convert("UTC").astype("datetime64[ns, UTC]").array
            except (ValueError, OverflowError):  # beyond the nanosecond range
                return None
        elif name in ("symbol", "side"):
            values = _texts(column)
            if values is None:
                return None
            if name == "symbol":
                if not all(text.strip() for text in set(values)):
                    return None
                columns[name] = values
            else:
                spelled = {text: text.strip().lower() for text in set(values)}
                if not _SIDES.issuperset(spelled.values()):
                    return None
                same = all(text == normal for text, normal in spelled.items())
                columns[name] = (
                    values if same else np.array([spelled[t] for t in values], dtype=object)
                )
        else:
            bound = None if name in ("qty", "notional") else 0.0
            values = _finite_floats(column, gt=bound, nonzero=name == "qty")
            if values is None:
                return None
            columns[name] = values
    return pd.DataFrame(columns, columns=list(frame.columns))


def returns_series(frame: pd.DataFrame) -> tuple[pd.Series, pd.Series | None]:
    """(``ret``, ``benchmark_ret`` or None) of a validated returns frame, indexed by ``date``."""
    index = pd.DatetimeIndex(frame["date"], name="date")
    returns = pd.Series(frame["ret"].to_numpy(dtype=float), index=index, name="ret")
    benchmark = None
    if "benchmark_ret" in frame.columns:
        benchmark = pd.Series(
            frame["benchmark_ret"].to_numpy(dtype=float), index=index, name="benchmark_ret"
        )
    return returns, benchmark


# ---------------------------------------------------------------------------------------------
# run.json
# ---------------------------------------------------------------------------------------------

_REQUIRED_KEYS = ("world_id", "strategy_id", "run_id", "stage", "risk_tier", "submitted_at")
_OPTIONAL_KEYS = (
    "model_card_version",
    "search_intensity",
    "trial_sharpes",
    "campaign_id",
    "complexity",
    "capital",
    "returns_source",
    "extra_metrics",
)
MANIFEST_KEYS = (*_REQUIRED_KEYS, *_OPTIONAL_KEYS)

# Keys producers plausibly send that belong somewhere else: a pointed message beats "unknown".
_MISPLACED_KEYS = {
    "client_critical": "it is a world setting (policy risk_profile.client_critical)",
    "policy_version": "the pipeline takes it from the world's current policy",
}
_RETURNS_SOURCE_MAX = 256
_EXTRA_METRICS_MAX_KEYS = 1000


@dataclass(frozen=True)
class RunManifest:
    """The validated ``run.json`` of a bundle (SPEC §3).

    ``submitted_at`` is timezone-aware UTC (naive input is taken as UTC). ``stage`` and
    ``risk_tier`` are lowercase. ``search_intensity`` is the number of variants tried (≥ 1,
    default 1); ``trial_sharpes`` the per-period Sharpe of each variant (None when not given);
    ``complexity`` maps complexity inputs (``n_parameters``, ``n_features``, ...) to finite
    non-negative numbers; ``capital`` is the notional the backtest traded at (> 0);
    ``extra_metrics`` is a flat map of JSON scalars passed through to the metrics.

    ``client_critical`` is deliberately not a manifest field: criticality belongs to the world
    (its policy's ``risk_profile``), and a run must not be able to declare its world non-critical.
    """

    world_id: str
    strategy_id: str
    run_id: str
    stage: str
    risk_tier: str
    submitted_at: dt.datetime
    model_card_version: str | None = None
    search_intensity: int = 1
    trial_sharpes: tuple[float, ...] | None = None
    campaign_id: str | None = None
    complexity: dict[str, float] = field(default_factory=dict)
    capital: float | None = None
    returns_source: str | None = None
    extra_metrics: dict[str, Any] = field(default_factory=dict)

    @property
    def partition_key(self) -> str:
        """``world/strategy/run``, the ``evaluation_runs`` partition key."""
        return f"{self.world_id}/{self.strategy_id}/{self.run_id}"

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, source_name: str = MANIFEST_FILE) -> "RunManifest":
        """Validate a parsed manifest; raises :class:`BundleError` listing every problem."""
        return _manifest_from_dict(data, source_name)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (``submitted_at`` as ``YYYY-MM-DDTHH:MM:SS[.ffffff]Z``)."""
        return {
            "world_id": self.world_id,
            "strategy_id": self.strategy_id,
            "run_id": self.run_id,
            "stage": self.stage,
            "risk_tier": self.risk_tier,
            "submitted_at": format_utc(self.submitted_at),
            "model_card_version": self.model_card_version,
            "search_intensity": self.search_intensity,
            "trial_sharpes": list(self.trial_sharpes) if self.trial_sharpes is not None else None,
            "campaign_id": self.campaign_id,
            "complexity": dict(self.complexity),
            "capital": self.capital,
            "returns_source": self.returns_source,
            "extra_metrics": dict(self.extra_metrics),
        }


def format_utc(moment: dt.datetime) -> str:
    """``YYYY-MM-DDTHH:MM:SSZ`` (microseconds only when non-zero) of an aware or UTC-naive time."""
    if moment.tzinfo is not None:
        moment = moment.astimezone(dt.timezone.utc).replace(tzinfo=None)
    pattern = "%Y-%m-%dT%H:%M:%S.%fZ" if moment.microsecond else "%Y-%m-%dT%H:%M:%SZ"
    return moment.strftime(pattern)


def parse_utc_timestamp(value: Any) -> dt.datetime:
    """An ISO-8601 string or datetime as an aware UTC datetime; naive means UTC.

    Raises ValueError for anything else (including bare dates without a time, which are
    ambiguous for submission times).
    """
    if isinstance(value, dt.datetime):
        moment = value
    elif isinstance(value, str):
        text = value.strip()
        if len(text) < 16 or ("T" not in text.upper() and " " not in text):
            raise ValueError(f"{value!r} is not an ISO-8601 timestamp (YYYY-MM-DDTHH:MM[:SS][Z])")
        try:
            moment = dt.datetime.fromisoformat(text)
        except ValueError:
            raise ValueError(
                f"{value!r} is not an ISO-8601 timestamp (YYYY-MM-DDTHH:MM[:SS][Z])"
            ) from None
    else:
        raise ValueError(f"expected an ISO-8601 timestamp string, got {_json_type(value)}")
    if moment.tzinfo is None:
        return moment.replace(tzinfo=dt.timezone.utc)
    return moment.astimezone(dt.timezone.utc)


def _closest(key: str, valid: tuple[str, ...]) -> str:
    match = difflib.get_close_matches(key, valid, n=1, cutoff=0.6)
    if match:
        return f"did you mean {match[0]!r}?"
    return f"valid keys: {', '.join(valid)}"


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _manifest_from_dict(data: Mapping[str, Any], source_name: str) -> RunManifest:
    problems: list[Problem] = []

    def problem(key: str, message: str) -> None:
        problems.append(Problem(source_name, message, path=key))

    if not isinstance(data, Mapping):
        raise _fail(source_name, f"must be a JSON object, not {_json_type(data)}")

    for key in data:
        if key in MANIFEST_KEYS:
            continue
        if not isinstance(key, str):
            problem(str(key), "keys must be strings")
        elif key in _MISPLACED_KEYS:
            problem(key, f"not a run field: {_MISPLACED_KEYS[key]}")
        else:
            problem(key, f"unknown key ({_closest(key, MANIFEST_KEYS)})")
    for key in _REQUIRED_KEYS:
        if key not in data or data[key] is None:
            problem(key, "required key is missing")

    values: dict[str, Any] = {}

    for key in ("world_id", "strategy_id", "run_id"):
        if data.get(key) is not None:
            try:
                values[key] = check_identifier(data[key], key)
            except InvalidIdentifierError as exc:
                problem(key, str(exc))

    for key, allowed in (("stage", STAGES), ("risk_tier", RISK_TIERS)):
        raw = data.get(key)
        if raw is None:
            continue
        normalised = raw.strip().lower() if isinstance(raw, str) else None
        if normalised not in allowed:
            problem(key, f"{raw!r} is not one of {', '.join(allowed)}")
        else:
            values[key] = normalised

    if data.get("submitted_at") is not None:
        if isinstance(data["submitted_at"], str):
            try:
                values["submitted_at"] = parse_utc_timestamp(data["submitted_at"])
            except ValueError as exc:
                problem("submitted_at", str(exc))
        else:
            problem("submitted_at", f"must be an ISO-8601 string, not {_json_type(data['submitted_at'])}")

    for key in ("model_card_version", "campaign_id"):
        if data.get(key) is not None:
            try:
                values[key] = check_identifier(data[key], key)
            except InvalidIdentifierError as exc:
                problem(key, str(exc))

    if "search_intensity" in data and data["search_intensity"] is not None:
        raw = data["search_intensity"]
        if not isinstance(raw, int) or isinstance(raw, bool) or raw < 1:
            problem("search_intensity", f"{raw!r} must be an integer >= 1 (variants tried)")
        else:
            values["search_intensity"] = raw

    if data.get("trial_sharpes") is not None:
        raw = data["trial_sharpes"]
        if not isinstance(raw, list):
            problem("trial_sharpes", f"must be an array of numbers, not {_json_type(raw)}")
        elif not raw:
            problem("trial_sharpes", "must not be empty (leave the key out instead)")
        else:
            bad = [i for i, v in enumerate(raw) if not _is_number(v) or not math.isfinite(v)]
            if bad:
                shown = ", ".join(f"[{i}]={raw[i]!r}" for i in bad[:5])
                problem("trial_sharpes", f"entries must be finite numbers: {shown}")
            else:
                values["trial_sharpes"] = tuple(float(v) for v in raw)

    if data.get("complexity") is not None:
        raw = data["complexity"]
        if not isinstance(raw, Mapping):
            problem("complexity", f"must be an object of numbers, not {_json_type(raw)}")
        else:
            complexity: dict[str, float] = {}
            for name, value in raw.items():
                if not name.strip():
                    problem("complexity", "names must not be blank")
                elif not _is_number(value) or not math.isfinite(value) or value < 0:
                    problem(f"complexity.{name}", f"{value!r} must be a finite number >= 0")
                else:
                    complexity[name] = float(value)
            values["complexity"] = complexity

    if data.get("capital") is not None:
        raw = data["capital"]
        if not _is_number(raw) or not math.isfinite(raw) or raw <= 0:
            problem("capital", f"{raw!r} must be a finite number > 0")
        else:
            values["capital"] = float(raw)

    if data.get("returns_source") is not None:
        raw = data["returns_source"]
        if not isinstance(raw, str) or not raw.strip():
            problem("returns_source", "must be a non-blank string")
        elif len(raw) > _RETURNS_SOURCE_MAX:
            problem("returns_source", f"must be at most {_RETURNS_SOURCE_MAX} characters")
        else:
            values["returns_source"] = raw.strip()

    if data.get("extra_metrics") is not None:
        raw = data["extra_metrics"]
        if not isinstance(raw, Mapping):
            problem("extra_metrics", f"must be an object, not {_json_type(raw)}")
        elif len(raw) > _EXTRA_METRICS_MAX_KEYS:
            problem("extra_metrics", f"has more than {_EXTRA_METRICS_MAX_KEYS} keys")
        else:
            extra: dict[str, Any] = {}
            for name, value in raw.items():
                if not name.strip():
                    problem("extra_metrics", "names must not be blank")
                elif value is not None and not isinstance(value, (str, int, float, bool)):
                    problem(
                        f"extra_metrics.{name}",
                        f"must be a string, number, boolean or null, not {_json_type(value)}",
                    )
                else:
                    extra[name] = value
            values["extra_metrics"] = extra

    if problems:
        raise BundleError(problems)
    return RunManifest(**values)


def parse_manifest(
    data: bytes, *, source_name: str = MANIFEST_FILE, max_bytes: int = MANIFEST_MAX_BYTES
) -> RunManifest:
    """Parse and validate ``run.json`` bytes (guarded JSON, then :meth:`RunManifest.from_dict`)."""
    document = parse_json_document(data, source_name=source_name, max_bytes=max_bytes)
    return _manifest_from_dict(document, source_name)


# ---------------------------------------------------------------------------------------------
# Bundles
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RunBundle:
    """One complete, validated evaluation-run bundle.

    ``returns`` and ``benchmark`` are float Series indexed by ``date`` (a DatetimeIndex of
    calendar days); ``trades`` is the validated trades log or None; ``content_hash`` is
    :func:`bundle_content_hash` of the bundle's files, used to tell an identical re-drop (no-op)
    from a conflicting one; ``files`` maps each bundle file name to its source (path or key).
    """

    manifest: RunManifest
    returns: pd.Series
    benchmark: pd.Series | None
    trades: pd.DataFrame | None
    content_hash: str
    files: dict[str, str] = field(default_factory=dict)

    @property
    def partition_key(self) -> str:
        return self.manifest.partition_key


def bundle_content_hash(files: Mapping[str, bytes]) -> str:
    """``sha256:`` + hex digest over the bundle's files: each file's name and content digest,
    sorted by name, so the hash is independent of listing order and of the folder or bucket."""
    digest = hashlib.sha256()
    for name in sorted(files):
        digest.update(name.encode("utf-8"))
        digest.update(b"\0")
        digest.update(hashlib.sha256(files[name]).hexdigest().encode("ascii"))
        digest.update(b"\n")
    return "sha256:" + digest.hexdigest()


def _common_folder(files: Mapping[str, bytes]) -> str:
    parents = {str(PurePosixPath(str(key).replace("\\", "/")).parent) for key in files}
    return parents.pop() if len(parents) == 1 else ""


def _join(folder: str, name: str) -> str:
    return f"{folder}/{name}" if folder and folder != "." else name


def _is_ignorable(name: str) -> bool:
    # Hidden files and job markers (``.DS_Store``, ``_SUCCESS``) are not part of a bundle.
    return name.startswith((".", "_"))


def load_bundle_from_files(
    files: Mapping[str, bytes],
    *,
    expected_key: str | None = None,
    max_manifest_bytes: int = MANIFEST_MAX_BYTES,
    max_table_bytes: int = TABLE_MAX_BYTES,
) -> RunBundle:
    """Load a bundle from ``{name or key: bytes}`` (the objects under one S3 bundle prefix).

    Keys may be bare file names or full paths/keys; the last path component is the bundle file
    name and the full key is what errors quote. Hidden files and ``_``-prefixed markers are
    ignored; any other unexpected file, a missing ``run.json`` or returns file, or both a CSV
    and a Parquet variant of the same table is a problem. When ``expected_key`` (the
    ``world/strategy/run`` partition key derived from the landing path) is given, the manifest's
    identifiers must match it. Every problem in every file is raised together.
    """
    by_name: dict[str, tuple[str, bytes]] = {}
    problems: list[Problem] = []
    for key, content in files.items():
        name = PurePosixPath(str(key).replace("\\", "/")).name
        if _is_ignorable(name):
            continue
        if name not in BUNDLE_FILES:
            problems.append(
                Problem(str(key), f"is not a bundle file (expected {', '.join(BUNDLE_FILES)})")
            )
            continue
        if name in by_name:
            problems.append(Problem(str(key), f"duplicates {by_name[name][0]}"))
            continue
        by_name[name] = (str(key), bytes(content))

    for group in (RETURNS_FILES, TRADES_FILES):
        present = [by_name[n][0] for n in group if n in by_name]
        if len(present) > 1:
            problems.append(Problem(present[0], f"and {present[1]} both present: keep one format"))
    folder = _common_folder(files)
    if MANIFEST_FILE not in by_name:
        problems.append(
            Problem(_join(folder, MANIFEST_FILE), "is missing: the bundle is not complete")
        )
    if not any(n in by_name for n in RETURNS_FILES):
        problems.append(
            Problem(_join(folder, "returns.parquet"), "is missing, and so is returns.csv: no returns")
        )
    if problems:
        raise BundleError(problems)

    manifest: RunManifest | None = None
    returns_frame: pd.DataFrame | None = None
    trades: pd.DataFrame | None = None
    total = 0

    def collect(exc: ContractError) -> None:
        nonlocal total
        problems.extend(exc.problems)
        total += exc.problem_count

    source, content = by_name[MANIFEST_FILE]
    try:
        manifest = parse_manifest(content, source_name=source, max_bytes=max_manifest_bytes)
    except ContractError as exc:
        collect(exc)

    returns_name = next(n for n in RETURNS_FILES if n in by_name)
    source, content = by_name[returns_name]
    try:
        returns_frame = load_returns(content, source_name=source, format=_table_format(returns_name, None),
                                     max_bytes=max_table_bytes)
    except ContractError as exc:
        collect(exc)

    trades_name = next((n for n in TRADES_FILES if n in by_name), None)
    if trades_name is not None:
        source, content = by_name[trades_name]
        try:
            trades = load_trades(content, source_name=source, format=_table_format(trades_name, None),
                                 max_bytes=max_table_bytes)
        except ContractError as exc:
            collect(exc)

    if manifest is not None and expected_key is not None and manifest.partition_key != expected_key:
        message = (
            f"identifies run {manifest.partition_key!r} but was dropped under {expected_key!r}"
        )
        problems.append(Problem(by_name[MANIFEST_FILE][0], message))
        total += 1
    if problems:
        raise BundleError(problems, problem_count=total)

    assert manifest is not None and returns_frame is not None
    returns, benchmark = returns_series(returns_frame)
    return RunBundle(
        manifest=manifest,
        returns=returns,
        benchmark=benchmark,
        trades=trades,
        content_hash=bundle_content_hash({name: blob for name, (_, blob) in by_name.items()}),
        files={name: source for name, (source, _) in by_name.items()},
    )


def load_bundle(
    directory: str | Path,
    *,
    expected_key: str | None = None,
    max_manifest_bytes: int = MANIFEST_MAX_BYTES,
    max_table_bytes: int = TABLE_MAX_BYTES,
) -> RunBundle:
    """Load the bundle in a local folder (same checks as :func:`load_bundle_from_files`).

    Sub-folders are problems like any other unexpected entry. Files above the size caps are
    rejected before they are read.
    """
    folder = Path(directory)
    if not folder.is_dir():
        raise FileNotFoundError(f"bundle folder {str(folder)!r} does not exist")
    files: dict[str, bytes] = {}
    problems: list[Problem] = []
    for entry in sorted(folder.iterdir()):
        if _is_ignorable(entry.name):
            continue
        if not entry.is_file():
            problems.append(Problem(str(entry), "is not a bundle file (a folder?)"))
            continue
        cap = max_manifest_bytes if entry.name == MANIFEST_FILE else max_table_bytes
        size = entry.stat().st_size
        if size > cap:
            problems.append(Problem(str(entry), f"is {size:,} bytes, above the {cap:,}-byte limit"))
            continue
        files[str(entry)] = entry.read_bytes()
    if problems:
        raise BundleError(problems)
    return load_bundle_from_files(
        files,
        expected_key=expected_key,
        max_manifest_bytes=max_manifest_bytes,
        max_table_bytes=max_table_bytes,
    )
