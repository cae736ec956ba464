"""The DuckDB catalog: one view per lake table, reading its Parquet files by glob.

Views read ``<lake>/<table>/*/*.parquet`` with Hive partitioning (``world_id`` from the folder,
always VARCHAR) and ``union_by_name`` (files written before a column existed read it as null;
extra metric columns of the open ``evaluation_metrics`` table appear after the declared ones).
New data shows up without touching the catalog; the catalog changes only when the table
catalogue (``tables.py``) or the lake root changes.

How the catalog is written without ever blocking readers: DuckDB lets a file be open either by
one read-write process or by many read-only ones. The pipeline therefore never opens the
catalog read-write in place. :func:`ensure_catalog` first reads the fingerprint stored in the
catalog (a read-only open of a few milliseconds); when it matches, it is done. Otherwise it
builds a complete new catalog in a temporary file beside the target and renames it over the
old one (``os.replace``, atomic). Analysts holding a read-only connection keep the file they
opened; the next connection gets the new one. Nothing waits for a lock.

Empty tables are queryable because the lake keeps a 0-row schema file per table
(``world_id=__schema__/_schema.parquet``) that the glob always matches; :func:`ensure_catalog`
writes any that are missing or out of date before building the views.

For an ``s3://`` lake, DuckDB's httpfs extension is not assumed to be installable; instead the
connection gets an fsspec filesystem over pyarrow's S3 client (``register_filesystem``).
:func:`connect_catalog` does that from the lake root recorded in the catalog, so an analyst's
read-only connection works the same way for both kinds of lake.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable
from urllib.parse import urlparse

import duckdb

from qmtl_validation.warehouse.lake import Lake, _fsync_directory
from qmtl_validation.warehouse.tables import TABLES, TableSpec, duckdb_type

CATALOG_FORMAT = "1"
INFO_TABLE = "catalog_info"
TABLES_TABLE = "catalog_tables"
COLUMNS_TABLE = "catalog_columns"


@dataclass(frozen=True)
class CatalogStatus:
    """What :func:`ensure_catalog` did."""

    path: str
    lake_root: str
    rebuilt: bool
    fingerprint: str
    seconds: float
    schema_files_written: tuple[str, ...] = ()


def _quote_identifier(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _quote_literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _source(lake: Lake, spec: TableSpec) -> str:
    return (
        f"read_parquet({_quote_literal(lake.glob(spec))}, hive_partitioning = true, "
        f"union_by_name = true, hive_types = {{{_quote_literal(spec.partitioned_by)}: VARCHAR}})"
    )


def table_view_sql(lake: Lake, spec: TableSpec) -> str:
    """``CREATE OR REPLACE VIEW <table>``: declared columns in order, then extras of open tables."""
    declared = ", ".join(_quote_identifier(c) for c in spec.columns)
    select = declared
    if spec.open_columns:
        select += f", * EXCLUDE ({declared})"
    return f"CREATE OR REPLACE VIEW {_quote_identifier(spec.name)} AS SELECT {select} FROM {_source(lake, spec)}"


def latest_view_sql(spec: TableSpec) -> str:
    """The latest view: rows whose version equals the maximum within their latest partition."""
    assert spec.latest_view and spec.version_column
    version = _quote_identifier(spec.version_column)
    partition = ", ".join(_quote_identifier(c) for c in spec.latest_partition_columns)
    return (
        f"CREATE OR REPLACE VIEW {_quote_identifier(spec.latest_view)} AS "
        f"SELECT * FROM {_quote_identifier(spec.name)} "
        f"QUALIFY {version} = max({version}) OVER (PARTITION BY {partition})"
    )


def _comment_sql(spec: TableSpec) -> list[str]:
    statements = [f"COMMENT ON VIEW {_quote_identifier(spec.name)} IS {_quote_literal(spec.description)}"]
    for name, column in spec.columns.items():
        statements.append(
            f"COMMENT ON COLUMN {_quote_identifier(spec.name)}.{_quote_identifier(name)} "
            f"IS {_quote_literal(column.description)}"
        )
    if spec.latest_view:
        statements.append(
            f"COMMENT ON VIEW {_quote_identifier(spec.latest_view)} IS "
            f"{_quote_literal(spec.latest_description or 'Latest version of ' + spec.name)}"
        )
    return statements


def catalog_statements(lake: Lake, tables: Iterable[TableSpec] | None = None) -> list[str]:
    """Every statement that builds the views (in dependency order) and their comments."""
    specs = list(tables if tables is not None else TABLES.values())
    statements = [table_view_sql(lake, spec) for spec in specs]
    statements += [latest_view_sql(spec) for spec in specs if spec.latest_view]
    for spec in specs:
        statements += _comment_sql(spec)
    return statements


def _fingerprint(lake: Lake, statements: list[str]) -> str:
    digest = hashlib.sha256()
    for part in (CATALOG_FORMAT, lake.root, *statements):
        digest.update(part.encode("utf-8"))
        digest.update(b"\0")
    return "sha256:" + digest.hexdigest()


def _docs_rows(specs: Iterable[TableSpec]) -> tuple[list[tuple], list[tuple]]:
    tables, columns = [], []
    for spec in specs:
        grain = ", ".join(spec.key) + (f" @ {spec.version_column}" if spec.version_column else "")
        tables.append((spec.name, "table", spec.name, spec.description, grain, spec.latest_view))
        if spec.latest_view:
            tables.append(
                (spec.latest_view, "latest_view", spec.name, spec.latest_description,
                 ", ".join(spec.latest_partition_columns), None)
            )
        for position, (name, column) in enumerate(spec.columns.items(), start=1):
            columns.append(
                (spec.name, name, position, duckdb_type(column.type), column.required, column.description)
            )
    return tables, columns


def s3_filesystem(endpoint_url: str | None = None, region: str | None = None) -> Any:
    """An fsspec filesystem for ``s3://`` URLs over pyarrow's S3 client, for ``register_filesystem``.

    Credentials come from the standard AWS chain (as boto3 resolves them).
    """
    import boto3
    import pyarrow.fs as pafs
    from fsspec.implementations.arrow import ArrowFSWrapper

    class _S3ArrowFileSystem(ArrowFSWrapper):
        protocol = ("s3", "s3a")
        root_marker = ""
        cachable = False

    options: dict[str, Any] = {}
    if region:
        options["region"] = region
    if endpoint_url:
        parsed = urlparse(endpoint_url)
        if parsed.scheme:
            options["scheme"] = parsed.scheme
            options["endpoint_override"] = parsed.netloc + parsed.path.rstrip("/")
        else:
            options["endpoint_override"] = endpoint_url
    credentials = boto3.session.Session().get_credentials()
    if credentials is not None:
        frozen = credentials.get_frozen_credentials()
        options.update(access_key=frozen.access_key, secret_key=frozen.secret_key)
        if frozen.token:
            options["session_token"] = frozen.token
    return _S3ArrowFileSystem(pafs.S3FileSystem(**options))


def register_lake_filesystem(
    connection: duckdb.DuckDBPyConnection, lake: Lake
) -> duckdb.DuckDBPyConnection:
    """Let ``connection`` read an S3 lake's files (no-op for a local lake)."""
    if lake.is_s3:
        connection.register_filesystem(s3_filesystem(lake.endpoint_url, lake.region))
    return connection


def _read_fingerprint(path: Path) -> tuple[str | None, str | None]:
    """(fingerprint, lake_root) stored in an existing catalog, or (None, None) if unreadable."""
    try:
        connection = duckdb.connect(str(path), read_only=True)
    except duckdb.Error:
        return None, None
    try:
        rows = dict(connection.execute(f"SELECT key, value FROM {INFO_TABLE}").fetchall())
        return rows.get("fingerprint"), rows.get("lake_root")
    except duckdb.Error:
        return None, None
    finally:
        connection.close()


def _schema_files_present(lake: Lake, specs: Iterable[TableSpec]) -> bool:
    if lake.is_s3:
        return True  # trusted from the fingerprint; pass force=True after wiping a bucket
    return all(Path(lake.schema_file_uri(spec)).is_file() for spec in specs)


def _remove_quietly(*paths: Path) -> None:
    for path in paths:
        try:
            path.unlink()
        except OSError:
            pass


def ensure_catalog(
    catalog_path: str | os.PathLike[str] | None = None,
    lake_root: str | os.PathLike[str] | Lake | None = None,
    *,
    endpoint_url: str | None = None,
    region: str | None = None,
    force: bool = False,
) -> CatalogStatus:
    """Create or refresh the DuckDB catalog at ``catalog_path`` for the lake at ``lake_root``.

    Idempotent and quick when nothing changed (one read-only open to compare fingerprints);
    otherwise writes missing schema files, builds a new catalog beside the target and atomically
    replaces it. Never blocks on, nor disturbs, readers. Defaults come from ``load_settings()``.
    """
    started = time.perf_counter()
    if catalog_path is None or lake_root is None:
        from qmtl_validation.settings import load_settings

        settings = load_settings()
        catalog_path = catalog_path if catalog_path is not None else settings.catalog_path
        if lake_root is None:
            lake_root = settings.lake_root
            endpoint_url = endpoint_url or settings.s3_endpoint_url
            region = region or settings.s3_region
    lake = lake_root if isinstance(lake_root, Lake) else Lake(lake_root, endpoint_url=endpoint_url, region=region)
    path = Path(catalog_path).expanduser().resolve()
    specs = list(TABLES.values())
    statements = catalog_statements(lake, specs)
    fingerprint = _fingerprint(lake, statements)

    if not force and path.exists():
        stored, _ = _read_fingerprint(path)
        if stored == fingerprint and _schema_files_present(lake, specs):
            return CatalogStatus(str(path), lake.root, False, fingerprint, time.perf_counter() - started)

    written = tuple(lake.ensure_schema_files(specs))
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        connection = duckdb.connect(str(temp))
        try:
            register_lake_filesystem(connection, lake)
            connection.execute("BEGIN TRANSACTION")
            for statement in statements:
                connection.execute(statement)
            connection.execute(f"CREATE TABLE {INFO_TABLE} (key VARCHAR PRIMARY KEY, value VARCHAR)")
            connection.executemany(
                f"INSERT INTO {INFO_TABLE} VALUES (?, ?)",
                [
                    ("fingerprint", fingerprint),
                    ("lake_root", lake.root),
                    ("format", CATALOG_FORMAT),
                    ("built_at", dt.datetime.now(dt.timezone.utc).isoformat()),
                ],
            )
            table_rows, column_rows = _docs_rows(specs)
            connection.execute(
                f"CREATE TABLE {TABLES_TABLE} (table_name VARCHAR, kind VARCHAR, source_table VARCHAR, "
                "description VARCHAR, grain VARCHAR, latest_view VARCHAR)"
            )
            connection.executemany(f"INSERT INTO {TABLES_TABLE} VALUES (?, ?, ?, ?, ?, ?)", table_rows)
            connection.execute(
                f"CREATE TABLE {COLUMNS_TABLE} (table_name VARCHAR, column_name VARCHAR, position INTEGER, "
                "type VARCHAR, required BOOLEAN, description VARCHAR)"
            )
            connection.executemany(f"INSERT INTO {COLUMNS_TABLE} VALUES (?, ?, ?, ?, ?, ?)", column_rows)
            connection.execute("COMMIT")
            connection.execute("CHECKPOINT")
        finally:
            connection.close()
        with open(temp, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(temp, path)
        _fsync_directory(path.parent)
    finally:
        _remove_quietly(temp, Path(f"{temp}.wal"))
    return CatalogStatus(str(path), lake.root, True, fingerprint, time.perf_counter() - started, written)


def connect_catalog(
    catalog_path: str | os.PathLike[str] | None = None,
    read_only: bool = True,
    *,
    endpoint_url: str | None = None,
    region: str | None = None,
    s3_client: Any = None,
    retry_seconds: float = 5.0,
) -> duckdb.DuckDBPyConnection:
    """Open the catalog (read-only by default) ready to query, S3 lakes included.

    The session time zone is UTC, so timestamps print as stored. DuckDB shares one database
    instance per file within a process: a connection opened while an older one to the same path
    is still open sees the catalog as it was then (its views still read the current files).

    Raises ``FileNotFoundError`` when there is no catalog. A lock held by a foreign read-write
    process (e.g. a DuckDB shell opened without ``-readonly``) is retried for ``retry_seconds``.
    """
    if catalog_path is None:
        from qmtl_validation.settings import load_settings

        catalog_path = load_settings().catalog_path
    path = Path(catalog_path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(
            f"no DuckDB catalog at {path}: it is created when the pipeline first writes the "
            "warehouse (or run `qmtl-validation sql --refresh ...`)"
        )
    deadline = time.monotonic() + retry_seconds
    delay = 0.02
    while True:
        try:
            connection = duckdb.connect(str(path), read_only=read_only)
            break
        except duckdb.IOException as exc:
            if "lock" not in str(exc).lower() or time.monotonic() >= deadline:
                raise
            time.sleep(delay)
            delay = min(delay * 2, 0.5)
    # Lake timestamps are UTC; show them so whatever the machine's time zone.
    connection.execute("SET TimeZone = 'UTC'")
    try:
        rows = connection.execute(f"SELECT value FROM {INFO_TABLE} WHERE key = 'lake_root'").fetchall()
        row = rows[0] if rows else None
    except duckdb.Error:
        row = None
    if row and str(row[0]).startswith("s3://"):
        if endpoint_url is None and region is None and s3_client is None:
            from qmtl_validation.settings import load_settings

            settings = load_settings()
            endpoint_url, region = settings.s3_endpoint_url, settings.s3_region
        register_lake_filesystem(
            connection, Lake(row[0], s3_client=s3_client, endpoint_url=endpoint_url, region=region)
        )
    return connection
