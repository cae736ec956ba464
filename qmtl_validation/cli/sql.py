"""``qmtl-validation sql "SELECT ..."``: query the warehouse catalog (opened read-only).

Prints an aligned table by default, or JSON (a list of objects) / CSV. A SQL error exits 1 with
one line; a missing catalog says where it was looked for.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import decimal
import json
import math
import sys
from typing import Any, Sequence

from qmtl_validation.cli import CliError


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "sql",
        help="run a SQL query on the warehouse catalog (read-only)",
        description="Run a SQL query on the DuckDB warehouse catalog, opened read-only.",
    )
    parser.add_argument("query", help='SQL, e.g. "select status, count(*) from evaluation_runs group by 1"')
    parser.add_argument("--catalog", help="catalog file (default: the profile's catalog_path)")
    output = parser.add_mutually_exclusive_group()
    output.add_argument("--json", action="store_true", help="print a JSON list of row objects")
    output.add_argument("--csv", action="store_true", help="print CSV with a header row")
    parser.add_argument(
        "--refresh",
        action="store_true",
        help="create or refresh the catalog for the profile's lake before querying",
    )
    parser.set_defaults(handler=run_sql)


def _plain(value: Any) -> Any:
    """A JSON-friendly version of a DuckDB value."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, decimal.Decimal):
        return float(value)
    if isinstance(value, (dt.datetime, dt.date, dt.time)):
        return value.isoformat()
    if isinstance(value, dt.timedelta):
        return value.total_seconds()
    if isinstance(value, (bytes, bytearray)):
        return value.hex()
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    return value


def _cell(value: Any) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:.10g}"
    if isinstance(value, dt.datetime):
        return value.isoformat(sep=" ")
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_cell(v) for v in value) + "]"
    return str(value)


def format_table(columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """Aligned text table: numbers right-aligned, other values left-aligned, then a row count."""
    cells = [[_cell(v) for v in row] for row in rows]
    numeric = [
        all(isinstance(row[i], (int, float, decimal.Decimal)) and not isinstance(row[i], bool)
            for row in rows if row[i] is not None)
        for i in range(len(columns))
    ]
    widths = [max([len(name)] + [len(r[i]) for r in cells]) for i, name in enumerate(columns)]

    def line(values: Sequence[str]) -> str:
        parts = [
            v.rjust(widths[i]) if numeric[i] else v.ljust(widths[i]) for i, v in enumerate(values)
        ]
        return "  ".join(parts).rstrip()

    out = [line(columns), "  ".join("-" * w for w in widths)]
    out += [line(r) for r in cells]
    out.append(f"({len(rows)} row{'s' if len(rows) != 1 else ''})")
    return "\n".join(out)


def run_sql(args: argparse.Namespace) -> int:
    import duckdb

    from qmtl_validation.settings import load_settings
    from qmtl_validation.warehouse.catalog import connect_catalog, ensure_catalog

    settings = load_settings()
    catalog = args.catalog or settings.catalog_path
    if args.refresh:
        ensure_catalog(
            catalog, settings.lake_root, endpoint_url=settings.s3_endpoint_url, region=settings.s3_region
        )
    try:
        connection = connect_catalog(
            catalog, read_only=True, endpoint_url=settings.s3_endpoint_url, region=settings.s3_region
        )
    except FileNotFoundError as exc:
        raise CliError(str(exc)) from None
    except duckdb.Error as exc:
        raise CliError(f"cannot open catalog {catalog}: {_first_line(exc)}") from None
    try:
        try:
            cursor = connection.execute(args.query)
            columns = [d[0] for d in cursor.description] if cursor.description else []
            rows = cursor.fetchall() if columns else []
        except duckdb.Error as exc:
            raise CliError(f"SQL error: {_first_line(exc)}") from None
    finally:
        connection.close()

    if args.json:
        records = [{c: _plain(v) for c, v in zip(columns, row)} for row in rows]
        json.dump(records, sys.stdout, indent=2, default=str)
        sys.stdout.write("\n")
    elif args.csv:
        writer = csv.writer(sys.stdout, lineterminator="\n")
        writer.writerow(columns)
        for row in rows:
            writer.writerow(["" if v is None else _plain(v) for v in row])
    else:
        print(format_table(columns, rows))
    return 0


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return " ".join(lines[:2]) if lines else type(exc).__name__
