"""Reads the pipeline itself makes from the lake: the latest rows of a table for some runs.

They run on a private in-memory DuckDB connection over the lake's Parquet files, never on the
analysts' catalog file, so a pipeline read never takes the catalog's lock.
"""

from __future__ import annotations

from typing import Any, Sequence

import duckdb
import pandas as pd

from qmtl_validation.warehouse.catalog import _quote_identifier, register_lake_filesystem, table_view_sql
from qmtl_validation.warehouse.lake import Lake
from qmtl_validation.warehouse.tables import get_table

RUN_KEY_SQL = "world_id || '/' || strategy_id || '/' || run_id"
SNAPSHOT_KEY_SQL = "world_id || '/' || version"
# How each dynamic partitions definition's keys are spelled in the lake tables' columns.
PARTITION_KEY_SQL = {"evaluation_runs": RUN_KEY_SQL, "risk_snapshots": SNAPSHOT_KEY_SQL, "worlds": "world_id"}


def lake_connection(lake: Lake) -> duckdb.DuckDBPyConnection:
    connection = duckdb.connect()
    register_lake_filesystem(connection, lake)
    return connection


def latest_rows(
    lake: Lake,
    table: str,
    *,
    partition_keys: Sequence[str] | None = None,
    world_id: str | None = None,
    key_expression: str = RUN_KEY_SQL,
    latest: bool = True,
    connection: duckdb.DuckDBPyConnection | None = None,
) -> pd.DataFrame:
    """Rows of ``table`` for the given partition keys (all when None) and world.

    With ``latest`` (and a table that has a version column), only the newest version within each
    of the table's latest partitions is kept — e.g. every rule row of a run's newest evaluation.
    ``key_expression`` is the SQL expression the partition keys are compared to (run tables:
    ``world/strategy/run``).
    """
    spec = get_table(table)
    con = connection or lake_connection(lake)
    try:
        lake.ensure_schema_files([spec])
        con.execute(table_view_sql(lake, spec).replace("CREATE OR REPLACE VIEW", "CREATE OR REPLACE TEMP VIEW"))
        where = []
        params: list[Any] = []
        if world_id is not None:
            where.append("world_id = ?")
            params.append(world_id)
        if partition_keys is not None:
            con.register("_wanted_keys", pd.DataFrame({"key": list(partition_keys)}))
            where.append(f"({key_expression}) IN (SELECT key FROM _wanted_keys)")
        sql = f"SELECT * FROM {_quote_identifier(spec.name)}"
        if where:
            sql += " WHERE " + " AND ".join(where)
        if latest and spec.version_column:
            version = _quote_identifier(spec.version_column)
            partition = ", ".join(_quote_identifier(c) for c in spec.latest_partition_columns)
            sql += f" QUALIFY {version} = max({version}) OVER (PARTITION BY {partition})"
        return con.execute(sql, params).df()
    finally:
        if connection is None:
            con.close()
