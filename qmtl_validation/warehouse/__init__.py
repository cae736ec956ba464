"""The warehouse: the Parquet lake (local or S3), its DuckDB catalog, and the landing-zone reader.

- ``tables``: the table catalogue (columns, types, grain, documentation) — SPEC §9.
- ``lake``: ``Lake(root)`` writes one Parquet file atomically per call, never overwriting.
- ``catalog``: ``ensure_catalog`` / ``connect_catalog`` — DuckDB views over the lake by glob.
- ``landing``: ``LocalLandingZone`` / ``S3LandingZone`` and the bounded scans the sensors use.

Names resolve lazily so that importing one part does not pull in DuckDB, pandas or boto3.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS: dict[str, str] = {
    "TABLES": "tables",
    "TableSpec": "tables",
    "Column": "tables",
    "get_table": "tables",
    "catalogue_markdown": "tables",
    "flatten_metrics": "tables",
    "metric_column": "tables",
    "Lake": "lake",
    "LakeError": "lake",
    "LakeSchemaError": "lake",
    "LakeWriteError": "lake",
    "LakeFileExistsError": "lake",
    "conform": "lake",
    "unique_file_stem": "lake",
    "ensure_catalog": "catalog",
    "connect_catalog": "catalog",
    "CatalogStatus": "catalog",
    "LandingZone": "landing",
    "LocalLandingZone": "landing",
    "S3LandingZone": "landing",
    "LandingObject": "landing",
    "Rejection": "landing",
    "LandingKeyError": "landing",
    "LandingObjectTooLargeError": "landing",
    "landing_zone_from_root": "landing",
    "date_prefixes": "landing",
    "find_run_bundles": "landing",
    "find_snapshots": "landing",
    "list_policies": "landing",
    "list_model_cards": "landing",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module_name = _EXPORTS.get(name)
    if module_name is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module_name}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
