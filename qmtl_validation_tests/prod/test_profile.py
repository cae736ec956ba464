"""The deployment profile, picked in one place: dev resources on local folders, prod resources on
S3 through dagster-aws (secrets only as ``EnvVar``), and the DuckDB catalog reading an S3 lake."""

import datetime as dt

import dagster as dg
import pytest
from dagster_aws.s3 import S3Resource

from qmtl_validation.defs.resources import resources_for, s3_resource_for
from qmtl_validation.settings import load_settings
from qmtl_validation.warehouse.catalog import connect_catalog
from qmtl_validation.warehouse.landing import LocalLandingZone, S3LandingZone


def test_prod_needs_its_roots_and_reads_endpoint_and_region_from_the_environment():
    with pytest.raises(ValueError, match="profile prod needs QMTL_LANDING_ROOT, QMTL_LAKE_ROOT"):
        load_settings({"QMTL_PROFILE": "prod"})
    settings = load_settings({
        "QMTL_PROFILE": "prod", "QMTL_LANDING_ROOT": "s3://drops/landing", "QMTL_LAKE_ROOT": "s3://lake/v1",
        "AWS_ENDPOINT_URL_S3": "http://127.0.0.1:9000", "AWS_REGION": "eu-west-3",
    })
    resource = s3_resource_for(settings, environ={})
    assert (resource.endpoint_url, resource.region_name) == ("http://127.0.0.1:9000", "eu-west-3")


def test_prod_credentials_are_environment_references_never_values():
    settings = load_settings({"QMTL_PROFILE": "prod", "QMTL_LANDING_ROOT": "s3://a/b", "QMTL_LAKE_ROOT": "s3://a/c"})
    keys = {"AWS_ACCESS_KEY_ID": "AKIAEXAMPLE", "AWS_SECRET_ACCESS_KEY": "wJalrXUtnFEMI/EXAMPLEKEY",
            "AWS_SESSION_TOKEN": "token-value"}
    resource = s3_resource_for(settings, environ=keys)
    for field, name in (("aws_access_key_id", "AWS_ACCESS_KEY_ID"),
                        ("aws_secret_access_key", "AWS_SECRET_ACCESS_KEY"),
                        ("aws_session_token", "AWS_SESSION_TOKEN")):
        value = getattr(resource, field)
        assert isinstance(value, dg.EnvVar) and value.env_var_name == name
    assert "wJalrXUtnFEMI" not in repr(resource)
    # Without static keys (an IAM role on ECS or EC2) nothing is configured: boto3's chain decides.
    role = s3_resource_for(settings, environ={})
    assert (role.aws_access_key_id, role.aws_secret_access_key, role.aws_session_token) == (None, None, None)


def test_dev_resources_use_local_folders_and_no_s3(tmp_path, monkeypatch):
    for name in ("QMTL_PROFILE", "QMTL_LANDING_ROOT", "QMTL_LAKE_ROOT", "QMTL_REPORT_ROOT", "QMTL_CATALOG_PATH"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("QMTL_DATA_ROOT", str(tmp_path / "data"))
    resources = resources_for(load_settings())
    assert resources["landing"].s3 is None and resources["warehouse"].s3 is None
    assert isinstance(resources["landing"].zone(), LocalLandingZone)
    assert not resources["warehouse"].lake().is_s3
    assert resources["warehouse"].reports() == str(tmp_path / "data" / "warehouse" / "reports")


def test_prod_resources_put_landing_lake_reports_and_catalog_on_s3(tmp_path, monkeypatch, s3_bucket):
    monkeypatch.setenv("QMTL_PROFILE", "prod")
    monkeypatch.setenv("QMTL_LANDING_ROOT", s3_bucket.uri("landing"))
    monkeypatch.setenv("QMTL_LAKE_ROOT", s3_bucket.uri("lake"))
    monkeypatch.setenv("QMTL_REPORT_ROOT", s3_bucket.uri("reports"))
    monkeypatch.setenv("QMTL_CATALOG_PATH", str(tmp_path / "validation.duckdb"))
    resources = resources_for(load_settings())
    landing, warehouse = resources["landing"], resources["warehouse"]
    assert isinstance(landing.s3, S3Resource) and landing.s3.endpoint_url == s3_bucket.server.url
    assert isinstance(landing.s3.aws_secret_access_key, dg.EnvVar)

    # The resources as a run gets them (EnvVar resolved at initialisation).
    with dg.build_resources({"landing": landing, "warehouse": warehouse}) as built:
        zone, lake = built.landing.zone(), built.warehouse.lake()
        assert isinstance(zone, S3LandingZone) and zone.uri() == s3_bucket.uri("landing") + "/"
        assert lake.is_s3 and lake.root == s3_bucket.uri("lake")
        lake.write("rejections", [{"key": "runs/x", "kind": "run_bundle", "reason": "probe",
                                   "detected_at": dt.datetime(2026, 11, 27, tzinfo=dt.timezone.utc)}],
                   world_id=None, file_stem="probe")
        written = built.warehouse.write_report_files("w/s/r", {"report.md": b"# report"})
        assert list(written.values())[0].startswith(s3_bucket.uri("reports"))
        built.warehouse.refresh_catalog()
    assert "lake/rejections/world_id=__HIVE_DEFAULT_PARTITION__/probe.parquet" in " ".join(s3_bucket.keys("lake/"))
    with connect_catalog(tmp_path / "validation.duckdb") as connection:
        assert connection.execute("SELECT key, reason FROM rejections").fetchall() == [("runs/x", "probe")]
        root = connection.execute("SELECT value FROM catalog_info WHERE key = 'lake_root'").fetchone()[0]
        assert root == s3_bucket.uri("lake")
