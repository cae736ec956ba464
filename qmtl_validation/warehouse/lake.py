"""The Parquet lake: append-only, atomically written files per table and world.

Layout (SPEC §9)::

    <root>/<table>/world_id=<w>/<file_stem>.parquet        data files, never overwritten
    <root>/<table>/world_id=__schema__/_schema.parquet     0-row file with the declared columns
    <root>/<table>/world_id=__HIVE_DEFAULT_PARTITION__/…    rows without a world (rejections)

``root`` is a local folder or ``s3://bucket/prefix``. A file becomes visible all at once:

- local: the bytes go to ``.<stem>.<random>.tmp`` in the target folder (a name the catalog's
  ``*.parquet`` glob never matches), are fsynced, then hard-linked to the final name — ``link``
  fails if the name exists, so publishing can never clobber a file, even under a race — and the
  temp name is removed. Filesystems without hard links fall back to check + ``os.replace``.
- S3: one ``put_object`` with ``If-None-Match: *`` (the store refuses an existing key); stores
  that do not implement conditional writes fall back to HEAD + PUT.

The schema file is what keeps an empty table queryable: the catalog's views always match at
least that file, so every declared column exists with its type before any data arrives. Its
partition value ``__schema__`` is not a valid world identifier, so it never collides with a
world, and it holds no rows.

Writers hand over a DataFrame, an Arrow table or a list of row dicts; :func:`conform` checks it
against the table's :class:`~qmtl_validation.warehouse.tables.TableSpec` (missing required
columns, nulls in them, undeclared columns, non-finite numbers are errors) and casts every
column to its declared type. One ``write`` is one file, whatever the number of rows, so a batch
of 10,000 runs is one file per world.
"""

from __future__ import annotations

import datetime as dt
import difflib
import errno
import io
import math
import os
import re
import time
import uuid
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping, Sequence

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from qmtl_validation.core.identifiers import check_identifier
from qmtl_validation.warehouse.tables import (
    BIGINT,
    BOOLEAN,
    DATE,
    DOUBLE,
    STRING,
    STRING_LIST,
    TIMESTAMP,
    TableSpec,
    get_table,
    to_json_text,
)

SCHEMA_PARTITION = "__schema__"
SCHEMA_FILE_NAME = "_schema.parquet"
NULL_PARTITION = "__HIVE_DEFAULT_PARTITION__"
PARQUET_COMPRESSION = "zstd"
_FILE_STEM = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.=+-]{0,199}")


class LakeError(Exception):
    """Base class of lake errors."""


class LakeSchemaError(LakeError, ValueError):
    """Data does not fit the table's declared columns."""


class LakeWriteError(LakeError, OSError):
    """A file could not be written; the message names the path and the cause."""

    def __init__(self, path: str, cause: str, errno_: int | None = None):
        super().__init__(f"cannot write {path}: {cause}")
        self.path = path
        if errno_ is not None:
            self.errno = errno_


class LakeFileExistsError(LakeWriteError):
    """The target file exists already: history files are never overwritten."""

    def __init__(self, path: str):
        super().__init__(path, "file exists (lake files are append-only and never overwritten)", errno.EEXIST)


def unique_file_stem(label: str = "batch", now: dt.datetime | None = None) -> str:
    """A fresh, sortable file stem: ``<label>-<UTC yyyymmddThhmmssZ>-<8 hex>``."""
    moment = (now or dt.datetime.now(dt.timezone.utc)).astimezone(dt.timezone.utc)
    return f"{label}-{moment:%Y%m%dT%H%M%S}Z-{uuid.uuid4().hex[:8]}"


def temp_file_name(file_name: str) -> str:
    """Name a file is written under before it is published (never matches ``*.parquet``)."""
    return f".{file_name}.{uuid.uuid4().hex}.tmp"


# ---------------------------------------------------------------------------------------------
# Conforming data to a table.


def _as_frame(data: Any) -> pd.DataFrame:
    if isinstance(data, pd.DataFrame):
        return data
    if isinstance(data, pa.Table):
        return data.to_pandas()
    if isinstance(data, Mapping):
        return pd.DataFrame(dict(data))
    if isinstance(data, Sequence) and not isinstance(data, (str, bytes)):
        return pd.DataFrame.from_records(list(data))
    raise TypeError(f"expected a DataFrame, an Arrow table or a list of rows, got {type(data).__name__}")


def _is_null(value: Any) -> bool:
    if value is None:
        return True
    if isinstance(value, float) and math.isnan(value):
        return True
    return value is pd.NaT or (isinstance(value, type(pd.NA)) and value is pd.NA)


def _bad(table: str, column: str, problem: str) -> LakeSchemaError:
    return LakeSchemaError(f"table {table}, column {column}: {problem}")


def _to_timestamp(series: pd.Series, table: str, column: str) -> pa.Array:
    try:
        if isinstance(series.dtype, pd.DatetimeTZDtype):
            values = series.dt.tz_convert("UTC")
        elif pd.api.types.is_datetime64_dtype(series.dtype):
            values = series.dt.tz_localize("UTC")  # naive timestamps are UTC by convention
        else:
            values = pd.to_datetime(series, utc=True, format="ISO8601")
    except (ValueError, TypeError) as exc:
        raise _bad(table, column, f"expected UTC timestamps: {exc}") from None
    return pa.array(values, from_pandas=True).cast(TIMESTAMP, safe=False)


def _to_double(series: pd.Series, table: str, column: str) -> pa.Array:
    if series.dtype == object:
        series = series.map(lambda v: None if _is_null(v) else v)
    try:
        array = pd.to_numeric(series, errors="raise").to_numpy(dtype="float64", na_value=np.nan)
    except (ValueError, TypeError) as exc:
        raise _bad(table, column, f"expected numbers: {exc}") from None
    infinite = np.isinf(array)
    if infinite.any():
        raise _bad(table, column, f"{int(infinite.sum())} infinite value(s); store null with a reason instead")
    return pa.array(array, type=DOUBLE, from_pandas=True)


def _to_bigint(series: pd.Series, table: str, column: str) -> pa.Array:
    if series.dtype == object:
        series = series.map(lambda v: None if _is_null(v) else v)
    try:
        values = pd.to_numeric(series, errors="raise")
        return pa.array(values, type=BIGINT, from_pandas=True)
    except (ValueError, TypeError, pa.ArrowInvalid) as exc:
        raise _bad(table, column, f"expected integers: {exc}") from None


def _to_boolean(series: pd.Series, table: str, column: str) -> pa.Array:
    values = [None if _is_null(v) else v for v in series.tolist()]
    wrong = [v for v in values if v is not None and not isinstance(v, (bool, np.bool_))]
    if wrong:
        raise _bad(table, column, f"expected booleans, got {wrong[0]!r}")
    return pa.array(values, type=BOOLEAN)


def _to_string(series: pd.Series, table: str, column: str) -> pa.Array:
    try:  # the common case, all text or null, without a Python loop
        return pa.array(series, type=STRING, from_pandas=True)
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        pass
    as_json = column.endswith("_json")
    values: list[str | None] = []
    for value in series.tolist():
        if _is_null(value):
            values.append(None)
        elif isinstance(value, str):
            values.append(value)
        elif as_json:
            values.append(to_json_text(value))
        elif isinstance(value, (bool, int, float, np.generic)):
            values.append(str(value))
        elif isinstance(value, (dt.datetime, dt.date)):
            values.append(value.isoformat())
        else:
            raise _bad(table, column, f"expected text, got {type(value).__name__} {value!r:.80}")
    return pa.array(values, type=STRING)


def _to_string_list(series: pd.Series, table: str, column: str) -> pa.Array:
    values: list[list[str] | None] = []
    for value in series.tolist():
        if value is None or (isinstance(value, float) and math.isnan(value)):
            values.append(None)
        elif isinstance(value, (list, tuple, np.ndarray)):
            items = list(value)
            if not all(isinstance(item, str) for item in items):
                raise _bad(table, column, f"expected a list of strings, got {items!r:.80}")
            values.append(items)
        else:
            raise _bad(table, column, f"expected a list of strings, got {type(value).__name__} {value!r:.80}")
    return pa.array(values, type=STRING_LIST)


def _to_date(series: pd.Series, table: str, column: str) -> pa.Array:
    try:
        values = pd.to_datetime(series, format="ISO8601")
    except (ValueError, TypeError) as exc:
        raise _bad(table, column, f"expected dates: {exc}") from None
    return pa.array(values.dt.date, type=DATE, from_pandas=True)


_CONVERTERS = {
    TIMESTAMP: _to_timestamp,
    DOUBLE: _to_double,
    BIGINT: _to_bigint,
    BOOLEAN: _to_boolean,
    STRING: _to_string,
    STRING_LIST: _to_string_list,
    DATE: _to_date,
}


def _extra_column(series: pd.Series, table: str, column: str) -> pa.Array:
    """An undeclared column of an open table: numbers (and all-null) as DOUBLE, text as VARCHAR,
    booleans as BOOLEAN, datetimes as UTC TIMESTAMP."""
    if pd.api.types.is_bool_dtype(series.dtype):
        return _to_boolean(series, table, column)
    if pd.api.types.is_numeric_dtype(series.dtype):
        return _to_double(series, table, column)
    if pd.api.types.is_datetime64_any_dtype(series.dtype):
        return _to_timestamp(series, table, column)
    non_null = [v for v in series.tolist() if not _is_null(v)]
    if all(isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool) for v in non_null):
        return _to_double(series, table, column)
    if all(isinstance(v, str) for v in non_null):
        return _to_string(series, table, column)
    if all(isinstance(v, (bool, np.bool_)) for v in non_null):
        return _to_boolean(series, table, column)
    if all(isinstance(v, dt.datetime) for v in non_null):
        return _to_timestamp(series, table, column)
    raise _bad(table, column, "an extra column must hold numbers, text, booleans or timestamps")


class _Unset:
    def __repr__(self) -> str:
        return "UNSET"


UNSET: Any = _Unset()


def conform(table: str | TableSpec, data: Any, *, world_id: Any = UNSET) -> pa.Table:
    """``data`` as an Arrow table with exactly the declared columns of ``table``, cast to their types.

    - A required column that is missing, or holds nulls, is an error; a missing optional column
      is written as nulls. An undeclared column is an error, except in open tables.
    - ``world_id``: when given, the ``world_id`` column is filled with it, or must equal it on
      every row; ``None`` means the Hive null partition (the column must be null); left unset,
      the column is checked like any other.
    - Timestamps: tz-aware values are converted to UTC, naive values are taken as UTC, text is
      parsed as ISO-8601. ``*_json`` text columns accept dicts/lists and serialise them.
    - DOUBLE columns reject ±inf (SPEC §5: undefined is null with a reason, never a fake number);
      NaN becomes null.
    """
    spec = get_table(table)
    frame = _as_frame(data)
    frame = frame.reset_index(drop=True)
    if len(set(frame.columns)) != len(frame.columns):
        raise LakeSchemaError(f"table {spec.name}: duplicate column names {list(frame.columns)}")

    unknown = [c for c in frame.columns if c not in spec.columns]
    if unknown and not spec.open_columns:
        hints = []
        for name in unknown:
            close = difflib.get_close_matches(str(name), spec.columns, n=1)
            hints.append(f"{name!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
        raise LakeSchemaError(
            f"table {spec.name}: undeclared column(s) {', '.join(hints)}; "
            "declare them in qmtl_validation/warehouse/tables.py"
        )

    partition = spec.partitioned_by
    if world_id is UNSET:
        pass
    elif world_id is not None:
        if partition in frame.columns:
            observed = frame[partition]
            mismatched = observed[observed.notna() & (observed != world_id)]
            if len(mismatched):
                raise LakeSchemaError(
                    f"table {spec.name}: rows for {partition}={mismatched.iloc[0]!r} written to "
                    f"partition {partition}={world_id!r}"
                )
        frame = frame.assign(**{partition: world_id})
    elif partition in frame.columns and frame[partition].notna().any():
        raise LakeSchemaError(
            f"table {spec.name}: rows carry {partition} values but go to the null partition"
        )

    missing = [c for c in spec.required_columns if c not in frame.columns]
    if missing:
        raise LakeSchemaError(f"table {spec.name}: missing required column(s) {', '.join(missing)}")

    n_rows = len(frame)
    arrays: list[pa.Array] = []
    fields: list[pa.Field] = []
    for name, column in spec.columns.items():
        if name in frame.columns:
            array = _CONVERTERS[column.type](frame[name], spec.name, name)
        else:
            array = pa.nulls(n_rows, type=column.type)
        if column.required and array.null_count and not (name == partition and spec.world_optional):
            raise _bad(spec.name, name, f"required but {array.null_count} row(s) are null")
        arrays.append(array)
        fields.append(pa.field(name, column.type))
    for name in unknown:
        array = _extra_column(frame[name], spec.name, str(name))
        arrays.append(array)
        fields.append(pa.field(str(name), array.type))
    return pa.Table.from_arrays(arrays, schema=pa.schema(fields))


def _parquet_bytes(table: pa.Table) -> bytes:
    sink = io.BytesIO()
    pq.write_table(table, sink, compression=PARQUET_COMPRESSION)
    return sink.getvalue()


# ---------------------------------------------------------------------------------------------
# The lake.


def split_s3_uri(uri: str) -> tuple[str, str]:
    """``s3://bucket/a/b`` → ``("bucket", "a/b")`` (prefix without leading or trailing slash)."""
    if not uri.startswith("s3://"):
        raise ValueError(f"not an s3:// URI: {uri!r}")
    bucket, _, prefix = uri[len("s3://"):].partition("/")
    if not bucket:
        raise ValueError(f"s3 URI without a bucket: {uri!r}")
    return bucket, prefix.strip("/")


def make_s3_client(endpoint_url: str | None = None, region: str | None = None) -> Any:
    """A boto3 S3 client; credentials come from the standard AWS chain."""
    import boto3

    return boto3.session.Session().client("s3", endpoint_url=endpoint_url, region_name=region)


def _partition_value(spec: TableSpec, world_id: str | None) -> str:
    if world_id is None:
        if not spec.world_optional:
            raise LakeSchemaError(f"table {spec.name}: world_id is required")
        return NULL_PARTITION
    return check_identifier(world_id, "world_id")


def _check_file_stem(file_stem: str) -> str:
    if not isinstance(file_stem, str) or not _FILE_STEM.fullmatch(file_stem) or ".." in file_stem:
        raise ValueError(
            f"file_stem {file_stem!r} is not a safe file name (expected {_FILE_STEM.pattern}, no '..')"
        )
    return file_stem


class Lake:
    """The Parquet lake at ``root`` (a local folder or ``s3://bucket/prefix``).

    For S3, ``s3_client`` (a boto3 client, e.g. from dagster-aws ``S3Resource.get_client()``) is
    reused for every call; without one a client is made from ``endpoint_url`` and ``region``.
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        *,
        s3_client: Any = None,
        endpoint_url: str | None = None,
        region: str | None = None,
    ):
        text = os.fspath(root)
        self.endpoint_url = endpoint_url
        self.region = region
        if text.startswith("s3://"):
            self.bucket, self.prefix = split_s3_uri(text)
            self.root = f"s3://{self.bucket}/{self.prefix}".rstrip("/")
            self._client = s3_client
        else:
            if text.startswith("file://"):
                text = text[len("file://"):]
            self.bucket, self.prefix = "", ""
            self.root = str(Path(text).expanduser().resolve())
            self._client = None

    @classmethod
    def from_settings(cls, settings: Any = None, *, s3_client: Any = None) -> "Lake":
        if settings is None:
            from qmtl_validation.settings import load_settings

            settings = load_settings()
        return cls(
            settings.lake_root,
            s3_client=s3_client,
            endpoint_url=settings.s3_endpoint_url,
            region=settings.s3_region,
        )

    def __repr__(self) -> str:
        return f"Lake({self.root!r})"

    @property
    def is_s3(self) -> bool:
        return bool(self.bucket)

    @property
    def s3_client(self) -> Any:
        if not self.is_s3:
            raise LakeError(f"{self.root} is a local lake")
        if self._client is None:
            self._client = make_s3_client(self.endpoint_url, self.region)
        return self._client

    # -- paths ----------------------------------------------------------------------------------

    def _key(self, *parts: str) -> str:
        return "/".join(p for p in (self.prefix, *parts) if p)

    def table_uri(self, table: str | TableSpec) -> str:
        return f"{self.root}/{get_table(table).name}"

    def file_uri(self, table: str | TableSpec, world_id: str | None, file_stem: str) -> str:
        spec = get_table(table)
        partition = _partition_value(spec, world_id)
        return f"{self.root}/{spec.name}/{spec.partitioned_by}={partition}/{_check_file_stem(file_stem)}.parquet"

    def schema_file_uri(self, table: str | TableSpec) -> str:
        spec = get_table(table)
        return f"{self.root}/{spec.name}/{spec.partitioned_by}={SCHEMA_PARTITION}/{SCHEMA_FILE_NAME}"

    def glob(self, table: str | TableSpec) -> str:
        """The pattern the catalog reads: every partition's ``*.parquet`` (temp files never match)."""
        return f"{self.table_uri(table)}/*/*.parquet"

    def _s3_key(self, uri: str) -> str:
        return uri[len(f"s3://{self.bucket}/"):]

    # -- writing --------------------------------------------------------------------------------

    def write(
        self,
        table: str | TableSpec,
        data: Any,
        *,
        world_id: str | None,
        file_stem: str,
    ) -> str | None:
        """Write ``data`` as ONE new Parquet file of ``table`` for ``world_id``; returns its URI.

        Zero rows write nothing and return None (no empty files). Refuses (``LakeFileExistsError``) when the file exists: history is append-only. Schema
        problems raise ``LakeSchemaError`` before anything is written; I/O failures raise
        ``LakeWriteError`` naming the path, and leave no partial file under a ``.parquet`` name.
        """
        spec = get_table(table)
        uri = self.file_uri(spec, world_id, file_stem)
        frame = _as_frame(data)
        if len(frame) == 0:
            return None
        arrow = conform(spec, frame, world_id=world_id)
        if self.is_s3:
            self._put_s3(uri, _parquet_bytes(arrow), overwrite=False)
        else:
            self._write_local(uri, arrow, overwrite=False)
        return uri

    def write_partitioned(self, table: str | TableSpec, data: Any, *, file_stem: str) -> list[str]:
        """Write ``data`` split by its ``world_id`` column: one file per world, same stem.

        Nothing is written if any world's rows fail to conform.
        """
        spec = get_table(table)
        frame = _as_frame(data)
        if spec.partitioned_by not in frame.columns:
            raise LakeSchemaError(f"table {spec.name}: write_partitioned needs a {spec.partitioned_by} column")
        worlds = frame[spec.partitioned_by]
        groups: list[tuple[str | None, pa.Table]] = []
        for world in pd.unique(worlds):
            world_id = None if _is_null(world) else str(world)
            rows = frame[worlds.isna()] if world_id is None else frame[worlds == world]
            groups.append((world_id, conform(spec, rows, world_id=world_id)))
        uris = []
        for world_id, arrow in groups:
            uri = self.file_uri(spec, world_id, file_stem)
            if self.is_s3:
                self._put_s3(uri, _parquet_bytes(arrow), overwrite=False)
            else:
                self._write_local(uri, arrow, overwrite=False)
            uris.append(uri)
        return uris

    def write_schema_file(self, table: str | TableSpec) -> str:
        """(Re)write the 0-row file carrying ``table``'s declared columns; returns its URI."""
        spec = get_table(table)
        uri = self.schema_file_uri(spec)
        empty = spec.arrow_schema().empty_table()
        if self.is_s3:
            self._put_s3(uri, _parquet_bytes(empty), overwrite=True)
        else:
            self._write_local(uri, empty, overwrite=True)
        return uri

    def schema_file_current(self, table: str | TableSpec) -> bool:
        """True when ``table``'s schema file exists and declares exactly the current columns."""
        spec = get_table(table)
        uri = self.schema_file_uri(spec)
        try:
            if self.is_s3:
                body = self.s3_client.get_object(Bucket=self.bucket, Key=self._s3_key(uri))["Body"].read()
                schema = pq.read_schema(pa.BufferReader(body))
            else:
                schema = pq.read_schema(uri)
        except Exception:  # missing or unreadable: rewrite it
            return False
        declared = spec.arrow_schema()
        return schema.names == declared.names and all(
            _same_type(schema.field(name).type, declared.field(name).type) for name in declared.names
        )

    def ensure_schema_files(self, tables: Iterable[str | TableSpec] | None = None) -> list[str]:
        """Write every schema file that is missing or out of date; returns the URIs written."""
        from qmtl_validation.warehouse.tables import TABLES

        written = []
        for table in tables if tables is not None else TABLES.values():
            if not self.schema_file_current(table):
                written.append(self.write_schema_file(table))
        return written

    def _write_local(self, path: str, arrow: pa.Table, *, overwrite: bool) -> None:
        final = Path(path)
        if not overwrite and final.exists():
            raise LakeFileExistsError(path)
        folder = final.parent
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise LakeWriteError(path, exc.strerror or str(exc), exc.errno) from exc
        temp = folder / temp_file_name(final.name)
        try:
            with open(temp, "xb") as handle:
                pq.write_table(arrow, handle, compression=PARQUET_COMPRESSION)
                handle.flush()
                os.fsync(handle.fileno())
            if overwrite:
                os.replace(temp, final)
            else:
                self._publish_no_clobber(temp, final)
            _fsync_directory(folder)
        except LakeFileExistsError:
            raise
        except OSError as exc:
            raise LakeWriteError(path, exc.strerror or str(exc), exc.errno) from exc
        finally:
            try:
                temp.unlink()
            except FileNotFoundError:
                pass
            except OSError:
                pass

    @staticmethod
    def _publish_no_clobber(temp: Path, final: Path) -> None:
        try:
            os.link(temp, final)
        except FileExistsError:
            raise LakeFileExistsError(str(final)) from None
        except OSError as exc:
            if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV, errno.EMLINK):
                raise
            # No hard links here: the existence check and the rename are two steps.
            if final.exists():
                raise LakeFileExistsError(str(final)) from None
            os.replace(temp, final)

    def _put_s3(self, uri: str, body: bytes, *, overwrite: bool) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        key = self._s3_key(uri)
        client = self.s3_client
        try:
            if overwrite:
                client.put_object(Bucket=self.bucket, Key=key, Body=body)
                return
            try:
                client.put_object(Bucket=self.bucket, Key=key, Body=body, IfNoneMatch="*")
            except ClientError as exc:
                code = str(exc.response.get("Error", {}).get("Code", ""))
                status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
                if code in ("PreconditionFailed", "ConditionalRequestConflict") or status in (409, 412):
                    raise LakeFileExistsError(uri) from None
                if code not in ("NotImplemented", "InvalidArgument") and status != 501:
                    raise
                # A store without conditional writes: check, then put.
                if self._s3_exists(key):
                    raise LakeFileExistsError(uri) from None
                client.put_object(Bucket=self.bucket, Key=key, Body=body)
        except LakeFileExistsError:
            raise
        except ClientError as exc:
            error = exc.response.get("Error", {})
            raise LakeWriteError(uri, f"{error.get('Code')}: {error.get('Message')}") from exc
        except BotoCoreError as exc:
            raise LakeWriteError(uri, str(exc)) from exc

    def _s3_exists(self, key: str) -> bool:
        from botocore.exceptions import ClientError

        try:
            self.s3_client.head_object(Bucket=self.bucket, Key=key)
            return True
        except ClientError as exc:
            if exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") == 404:
                return False
            raise

    def sweep_temp_files(self, older_than_seconds: float = 3600.0) -> list[str]:
        """Remove temp files left by writers that died mid-write (local lakes; S3 has none).

        Only ``.*.tmp`` files older than ``older_than_seconds`` are removed, so a write in
        progress is never touched. Returns the paths removed.
        """
        if self.is_s3 or not Path(self.root).is_dir():
            return []
        cutoff = time.time() - older_than_seconds
        removed = []
        for temp in Path(self.root).glob("*/*/.*.tmp"):
            try:
                if temp.stat().st_mtime < cutoff:
                    temp.unlink()
                    removed.append(str(temp))
            except FileNotFoundError:
                continue
        return sorted(removed)

    # -- reading --------------------------------------------------------------------------------

    def exists(self, table: str | TableSpec, world_id: str | None, file_stem: str) -> bool:
        uri = self.file_uri(table, world_id, file_stem)
        if self.is_s3:
            return self._s3_exists(self._s3_key(uri))
        return Path(uri).is_file()

    def list_files(self, table: str | TableSpec, world_id: str | None = None) -> list[str]:
        """URIs of ``table``'s data files (schema and temp files excluded), sorted."""
        spec = get_table(table)
        partition_prefix = f"{spec.partitioned_by}="
        wanted = None if world_id is None else partition_prefix + check_identifier(world_id, "world_id")
        skip = partition_prefix + SCHEMA_PARTITION
        if self.is_s3:
            return sorted(self._list_s3(spec, wanted, skip))
        table_dir = Path(self.table_uri(spec))
        if not table_dir.is_dir():
            return []
        found = []
        for partition in os.scandir(table_dir):
            name = partition.name
            if not partition.is_dir() or name == skip or not name.startswith(partition_prefix):
                continue
            if wanted is not None and name != wanted:
                continue
            for entry in os.scandir(partition.path):
                if entry.is_file() and _is_data_file(entry.name):
                    found.append(entry.path)
        return sorted(found)

    def _list_s3(self, spec: TableSpec, wanted: str | None, skip: str) -> Iterator[str]:
        base = self._key(spec.name) + "/"
        prefix = base + (wanted + "/" if wanted else "")
        paginator = self.s3_client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix):
            for item in page.get("Contents", ()):
                rest = item["Key"][len(base):].split("/")
                if len(rest) == 2 and rest[0] != skip and _is_data_file(rest[1]):
                    yield f"s3://{self.bucket}/{item['Key']}"

    def read_file(self, uri: str) -> pa.Table:
        if uri.startswith("s3://"):
            body = self.s3_client.get_object(Bucket=self.bucket, Key=self._s3_key(uri))["Body"].read()
            return pq.read_table(pa.BufferReader(body))
        return pq.read_table(uri)

    def read_arrow(self, table: str | TableSpec, world_id: str | None = None) -> pa.Table:
        """Every data file of ``table`` (optionally one world) as one Arrow table.

        Declared columns come first in their declared order (absent ones as nulls); extra
        columns of open tables follow. Meant for tests and small lookups: analysts use the catalog.
        """
        spec = get_table(table)
        parts = [self.read_file(uri) for uri in self.list_files(spec, world_id)]
        declared = spec.arrow_schema()
        if not parts:
            return declared.empty_table()
        combined = pa.concat_tables(parts, promote_options="permissive")
        columns, fields = [], []
        for field in declared:
            if field.name in combined.column_names:
                columns.append(combined[field.name].cast(field.type))
            else:
                columns.append(pa.nulls(combined.num_rows, type=field.type))
            fields.append(field)
        for name in combined.column_names:
            if name not in declared.names:
                columns.append(combined[name])
                fields.append(combined.schema.field(name))
        return pa.Table.from_arrays(columns, schema=pa.schema(fields))

    def read(self, table: str | TableSpec, world_id: str | None = None) -> pd.DataFrame:
        """:meth:`read_arrow` as a pandas DataFrame (timestamps tz-aware UTC)."""
        return self.read_arrow(table, world_id).to_pandas()


def _same_type(stored: pa.DataType, declared: pa.DataType) -> bool:
    """Type equality that ignores list child names (Parquet stores ``element``, Arrow ``item``)."""
    if pa.types.is_list(stored) and pa.types.is_list(declared):
        return _same_type(stored.value_type, declared.value_type)
    return stored.equals(declared)


def _is_data_file(name: str) -> bool:
    return name.endswith(".parquet") and not name.startswith((".", "_"))


def _fsync_directory(folder: Path) -> None:
    """Make a rename durable; some filesystems refuse to open a folder, which is harmless."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
