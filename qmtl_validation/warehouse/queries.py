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


# Column of ``latest_rows(..., key_positions=True)``: the row's index in ``partition_keys``.
KEY_POSITION = "partition_position"


def latest_rows(
    lake: Lake,
    table: str,
    *,
    partition_keys: Sequence[str] | None = None,
    world_id: str | None = None,
    key_expression: str = RUN_KEY_SQL,
    latest: bool = True,
    columns: Sequence[str] | None = None,
    key_positions: bool = False,
    connection: duckdb.DuckDBPyConnection | None = None,
) -> pd.DataFrame:
    """Rows of ``table`` for the given partition keys (all when None) and world.

    With ``latest`` (and a table that has a version column), only the newest version within each
    of the table's latest partitions is kept — e.g. every rule row of a run's newest evaluation.
    ``key_expression`` is the SQL expression the partition keys are compared to (run tables:
    ``world/strategy/run``).

    ``columns`` narrows the result; ``key_positions`` (with ``partition_keys``) adds
    :data:`KEY_POSITION`, each row's index in ``partition_keys``, so a caller reading millions of
    rows (a backfill's returns) can skip the string columns that identify them: converting those
    strings to Python objects is most of the cost of such a read.
    """
    spec = get_table(table)
    if key_positions and partition_keys is None:
        raise ValueError("key_positions needs partition_keys")
    con = connection or lake_connection(lake)
    try:
        lake.ensure_schema_files([spec])
        con.execute(table_view_sql(lake, spec).replace("CREATE OR REPLACE VIEW", "CREATE OR REPLACE TEMP VIEW"))
        source = _quote_identifier(spec.name)
        where, params = [], []
        if world_id is not None:
            where.append("world_id = ?")
            params.append(world_id)
        picked = f"SELECT * FROM {source}"
        if partition_keys is not None:
            wanted = pd.DataFrame({"_wanted_key": list(dict.fromkeys(partition_keys))})
            wanted["_wanted_position"] = pd.Series(range(len(wanted)), dtype="int64")
            con.register("_wanted_keys", wanted)
            picked = (
                f"SELECT t.*, w._wanted_position FROM {source} t "
                f"JOIN _wanted_keys w ON ({key_expression}) = w._wanted_key"
            )
        if where:
            picked += " WHERE " + " AND ".join(where)
        if latest and spec.version_column:
            # Newest version per latest partition by an aggregate and a join: on millions of rows
            # it is a little over twice as fast as a window (QUALIFY ... OVER) here.
            version = _quote_identifier(spec.version_column)
            partition = [_quote_identifier(c) for c in spec.latest_partition_columns]
            joined = " AND ".join(f"p.{c} IS NOT DISTINCT FROM n.{c}" for c in partition)
            picked = (
                f"WITH picked AS ({picked}), "
                f"newest AS (SELECT {', '.join(partition)}, max({version}) AS _newest FROM picked GROUP BY ALL) "
                f"SELECT p.* FROM picked p JOIN newest n ON {joined} WHERE p.{version} = n._newest"
            )
        if columns is not None:
            selected = [_quote_identifier(c) for c in columns]
        elif partition_keys is not None:
            selected = ["* EXCLUDE (_wanted_position)"]
        else:
            selected = ["*"]
        if key_positions:
            selected.append(f"_wanted_position AS {KEY_POSITION}")
        return con.execute(f"SELECT {', '.join(selected)} FROM ({picked})", params).df()
    finally:
        if connection is None:
            con.close()
