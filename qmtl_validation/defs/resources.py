"""Resources shared by every area: the landing zone, the warehouse (lake, catalog, reports) and
the lake-backed IO manager. Which roots they point at is decided once, by the profile in
``qmtl_validation.settings`` (dev: local folders; prod: S3 through dagster-aws)."""


import datetime as dt
import os
from typing import Any, Mapping, Optional, Sequence

import dagster as dg
import pandas as pd
from dagster_aws.s3 import S3Resource
from pydantic import PrivateAttr

from qmtl_validation.settings import Settings, load_settings
from qmtl_validation.warehouse.landing import LandingZone, landing_zone_from_root
from qmtl_validation.warehouse.lake import Lake
from qmtl_validation.warehouse.queries import PARTITION_KEY_SQL


_CATALOGS_ENSURED: set[tuple[str, str]] = set()


class LandingZoneResource(dg.ConfigurableResource):
    """Where producers drop run bundles, risk snapshots, policies and model cards.

    ``root``: a local folder (dev) or ``s3://bucket/prefix`` (prod); unset = the profile's.
    ``s3``: the dagster-aws S3 resource whose client lists and reads an S3 root.
    """

    root: Optional[str] = None
    s3: Optional[S3Resource] = None

    _zone: Any = PrivateAttr(default=None)

    def zone(self) -> LandingZone:
        if self._zone is None:
            settings = load_settings()
            root = self.root or settings.landing_root
            client = self.s3.get_client() if (self.s3 is not None and root.startswith("s3://")) else None
            self._zone = landing_zone_from_root(
                root, client=client, endpoint_url=settings.s3_endpoint_url, region=settings.s3_region
            )
        return self._zone


class WarehouseResource(dg.ConfigurableResource):
    """The Parquet lake, the DuckDB catalog over it, and the folder reports are written to."""

    lake_root: Optional[str] = None
    catalog_path: Optional[str] = None
    report_root: Optional[str] = None
    s3: Optional[S3Resource] = None

    _lake: Any = PrivateAttr(default=None)

    def _settings(self) -> Settings:
        return load_settings()

    def lake(self) -> Lake:
        if self._lake is None:
            settings = self._settings()
            root = self.lake_root or settings.lake_root
            client = self.s3.get_client() if (self.s3 is not None and root.startswith("s3://")) else None
            self._lake = Lake(
                root, s3_client=client, endpoint_url=settings.s3_endpoint_url, region=settings.s3_region
            )
        return self._lake

    def catalog(self) -> str:
        return self.catalog_path or self._settings().catalog_path

    def reports(self) -> str:
        return self.report_root or self._settings().report_root

    def ensure_catalog_once(self) -> None:
        """Create the analysts' catalog if it is missing or its table specs changed, once per
        process: the views read the lake by glob, so new files never need a rebuild."""
        key = (self.catalog(), self.lake().root)
        if key not in _CATALOGS_ENSURED:
            self.refresh_catalog()
            _CATALOGS_ENSURED.add(key)

    def refresh_catalog(self) -> None:
        from qmtl_validation.warehouse.catalog import ensure_catalog

        ensure_catalog(self.catalog(), self.lake())

    def write_report_files(self, folder: str, files: dict[str, bytes]) -> dict[str, str]:
        """Write report files under ``<report root>/<folder>/`` (local atomically, or S3)."""
        from qmtl_validation.warehouse.reports import write_files

        return write_files(self.reports(), folder, files, lake=self.lake())

    def record_run_events(self, records: Sequence[Any], recorded_at: dt.datetime) -> None:
        from qmtl_validation.core.events import run_event
        from qmtl_validation.warehouse.outbox import append_events

        append_events(self.lake(), [run_event(record, recorded_at) for record in records])

    def latest(self, table: str, partition_keys: Sequence[str] | None = None, **filters: Any) -> pd.DataFrame:
        from qmtl_validation.warehouse.queries import latest_rows

        return latest_rows(self.lake(), table, partition_keys=partition_keys, **filters)


def now_utc() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


class LakeIOManager(dg.ConfigurableIOManager):
    """Stores each DataFrame asset as Parquet in its lake table and loads the latest rows back.

    The table is the asset's ``lake_table`` metadata (default: the asset name). An output
    covering many partitions becomes one file per world, so a backfill over thousands of runs
    writes a handful of files. Inputs are the newest version of each requested partition's rows.
    """

    warehouse: dg.ResourceDependency[WarehouseResource]

    @staticmethod
    def _table(definition_metadata: Any, asset_key: dg.AssetKey) -> str:
        return (definition_metadata or {}).get("lake_table") or asset_key.path[-1]

    def handle_output(self, context: dg.OutputContext, obj: pd.DataFrame | None) -> None:
        if obj is None:
            return
        table = self._table(context.definition_metadata, context.asset_key)
        stem = f"{now_utc():%Y%m%dT%H%M%S%fZ}-{context.run_id[:8]}"
        files = self.warehouse.lake().write_partitioned(table, obj, file_stem=stem) if len(obj) else []
        self.warehouse.ensure_catalog_once()
        context.add_output_metadata({"lake_table": table, "lake_files": len(files)})

    def load_input(self, context: dg.InputContext) -> pd.DataFrame:
        upstream = context.upstream_output
        table = self._table(upstream.definition_metadata if upstream else None, context.asset_key)
        if not context.has_asset_partitions:
            return self.warehouse.latest(table, None)
        partitions = getattr(context.asset_partitions_def, "name", None)
        return self.warehouse.latest(
            table, list(context.asset_partition_keys), key_expression=PARTITION_KEY_SQL[partitions]
        )


def s3_resource_for(settings: Settings, environ: Optional[Mapping[str, str]] = None) -> S3Resource:
    """The dagster-aws S3 client resource of the prod profile (endpoint and region from settings).

    Secrets are never configuration values: static keys present in the environment are passed as
    ``dg.EnvVar`` (resolved when a run or tick starts, shown and stored by name only); without
    them boto3's default chain applies (the task's or instance's IAM role, a profile).
    """
    env = os.environ if environ is None else environ
    credentials: dict[str, Any] = {}
    if env.get("AWS_ACCESS_KEY_ID") and env.get("AWS_SECRET_ACCESS_KEY"):
        credentials = {
            "aws_access_key_id": dg.EnvVar("AWS_ACCESS_KEY_ID"),
            "aws_secret_access_key": dg.EnvVar("AWS_SECRET_ACCESS_KEY"),
        }
        if env.get("AWS_SESSION_TOKEN"):
            credentials["aws_session_token"] = dg.EnvVar("AWS_SESSION_TOKEN")
    return S3Resource(endpoint_url=settings.s3_endpoint_url, region_name=settings.s3_region, **credentials)


def resources_for(settings: Settings) -> dict[str, Any]:
    """The resources of a deployment profile: local folders in dev, S3 through dagster-aws in
    prod (:func:`s3_resource_for`: credentials only through ``dg.EnvVar`` or the AWS chain)."""
    s3 = s3_resource_for(settings) if settings.is_prod else None
    warehouse = WarehouseResource(s3=s3)
    return {
        "landing": LandingZoneResource(s3=s3),
        "warehouse": warehouse,
        "lake_io_manager": LakeIOManager(warehouse=warehouse),
    }
