"""The one place that reads the environment: deployment profile, roots and endpoints.

Profiles:
- ``dev`` (default): landing zone ``data/landing``, lake ``data/warehouse/lake``, DuckDB catalog
  ``data/warehouse/validation.duckdb``, reports ``data/warehouse/reports``.
- ``prod``: the same roles on S3; roots must be given (``s3://bucket/prefix``), the endpoint and
  credentials come from the standard AWS variables.

Either profile: ``QMTL_BACKFILL_RUNS_PER_CHUNK=N`` makes run-scoped assets back-fill with
``BackfillPolicy.multi_run(N)`` (N evaluation runs per Dagster run, so a deployment whose run
launcher starts one container per run spreads a history backfill over machines); unset, a
backfill is one single run (``BackfillPolicy.single_run()``). See docs/SCALING.md.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

REPO_ROOT = Path(__file__).resolve().parent.parent
PROFILES = ("dev", "prod")


@dataclass(frozen=True)
class Settings:
    profile: str
    landing_root: str
    lake_root: str
    catalog_path: str
    report_root: str
    s3_endpoint_url: str | None
    s3_region: str
    backfill_runs_per_chunk: int | None = None

    @property
    def is_prod(self) -> bool:
        return self.profile == "prod"


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    env = os.environ if environ is None else environ
    profile = env.get("QMTL_PROFILE", "dev").strip().lower() or "dev"
    if profile not in PROFILES:
        raise ValueError(f"QMTL_PROFILE={profile!r}: expected one of {', '.join(PROFILES)}")
    data = Path(env.get("QMTL_DATA_ROOT", str(REPO_ROOT / "data")))
    if profile == "prod":
        missing = [k for k in ("QMTL_LANDING_ROOT", "QMTL_LAKE_ROOT") if not env.get(k)]
        if missing:
            raise ValueError(f"profile prod needs {', '.join(missing)} (s3://bucket/prefix)")
    lake_root = env.get("QMTL_LAKE_ROOT") or str(data / "warehouse" / "lake")
    return Settings(
        profile=profile,
        landing_root=env.get("QMTL_LANDING_ROOT") or str(data / "landing"),
        lake_root=lake_root,
        catalog_path=env.get("QMTL_CATALOG_PATH") or str(data / "warehouse" / "validation.duckdb"),
        report_root=env.get("QMTL_REPORT_ROOT") or str(data / "warehouse" / "reports"),
        s3_endpoint_url=env.get("AWS_ENDPOINT_URL_S3") or env.get("AWS_ENDPOINT_URL") or None,
        s3_region=env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or "us-east-1",
        backfill_runs_per_chunk=read_backfill_runs_per_chunk(env),
    )


def read_backfill_runs_per_chunk(environ: Mapping[str, str] | None = None) -> int | None:
    """``QMTL_BACKFILL_RUNS_PER_CHUNK`` as a positive integer, or None (single-run backfills)."""
    env = os.environ if environ is None else environ
    text = env.get("QMTL_BACKFILL_RUNS_PER_CHUNK", "").strip()
    if not text:
        return None
    try:
        value = int(text)
    except ValueError:
        raise ValueError(f"QMTL_BACKFILL_RUNS_PER_CHUNK={text!r}: expected a positive integer") from None
    if value < 1:
        raise ValueError(f"QMTL_BACKFILL_RUNS_PER_CHUNK={value}: expected a positive integer")
    return value
