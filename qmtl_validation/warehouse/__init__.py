"""The warehouse: the Parquet lake (local or S3), its DuckDB catalog, and the landing-zone reader.

- ``tables``: the table catalogue (columns, types, grain, documentation) — SPEC §9.
- ``lake``: ``Lake(root)`` writes one Parquet file atomically per call, never overwriting.
- ``catalog``: ``ensure_catalog`` / ``connect_catalog`` — DuckDB views over the lake by glob.
- ``landing``: ``LocalLandingZone`` / ``S3LandingZone`` and the bounded scans the sensors use.

Names resolve lazily so that importing one part does not pull in DuckDB, pandas or boto3.
"""

from __future__ import annotations

from qmtl_validation._lazy import lazy_exports

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

__all__, __getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
