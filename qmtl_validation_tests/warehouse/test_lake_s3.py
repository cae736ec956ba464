"""The lake and catalog on a real S3 API (moto server on loopback)."""

import datetime as dt

import pandas as pd
import pytest

from qmtl_validation.warehouse.catalog import connect_catalog, ensure_catalog
from qmtl_validation.warehouse.lake import Lake, LakeFileExistsError, LakeSchemaError, LakeWriteError

T0 = dt.datetime(2026, 11, 27, 9, 30, tzinfo=dt.timezone.utc)


def history(runs, *, revision=1, status="pass"):
    return pd.DataFrame(
        {
            "strategy_id": "mom",
            "run_id": list(runs),
            "revision": revision,
            "recorded_at": T0,
            "stage": "paper",
            "status": status,
            "recommended_stage": "paper_only",
        }
    )


@pytest.fixture
def lake(s3_bucket):
    return Lake(s3_bucket.uri("warehouse/lake"), s3_client=s3_bucket.client)


def test_s3_write_is_one_object_under_the_table_and_world(lake, s3_bucket):
    uri = lake.write("evaluation_run_history", history(["r1", "r2"]), world_id="alpha", file_stem="rev1")
    key = "warehouse/lake/evaluation_run_history/world_id=alpha/rev1.parquet"
    assert uri == f"s3://{s3_bucket.name}/{key}"
    assert s3_bucket.keys() == [key]
    frame = lake.read("evaluation_run_history")
    assert list(frame["run_id"]) == ["r1", "r2"] and set(frame["world_id"]) == {"alpha"}
    assert lake.exists("evaluation_run_history", "alpha", "rev1")
    assert not lake.exists("evaluation_run_history", "alpha", "rev2")


def test_s3_refuses_to_overwrite_a_history_object(lake):
    lake.write("evaluation_run_history", history(["r1"], status="pass"), world_id="alpha", file_stem="rev1")
    with pytest.raises(LakeFileExistsError, match="world_id=alpha/rev1.parquet: file exists"):
        lake.write("evaluation_run_history", history(["r1"], status="fail"), world_id="alpha", file_stem="rev1")
    assert list(lake.read("evaluation_run_history")["status"]) == ["pass"]


def test_s3_schema_error_writes_nothing(lake, s3_bucket):
    with pytest.raises(LakeSchemaError):
        lake.write("evaluation_run_history", history(["r1"]).drop(columns="stage"), world_id="alpha", file_stem="x")
    assert s3_bucket.keys() == []


def test_s3_partitioned_write_and_listing_skip_schema_files(lake):
    rows = history([f"r{i}" for i in range(6)]).assign(world_id=["a", "b", "c"] * 2)
    uris = lake.write_partitioned("evaluation_run_history", rows, file_stem="batch")
    lake.write_schema_file("evaluation_run_history")
    assert [u.rsplit("/", 2)[-2] for u in uris] == ["world_id=a", "world_id=b", "world_id=c"]
    assert lake.list_files("evaluation_run_history") == sorted(uris)
    assert lake.list_files("evaluation_run_history", world_id="b") == [uris[1]]
    assert lake.schema_file_current("evaluation_run_history")


def test_s3_write_to_a_missing_bucket_names_the_object(s3_bucket):
    lake = Lake("s3://no-such-bucket-here/lake", s3_client=s3_bucket.client)
    with pytest.raises(LakeWriteError, match="cannot write s3://no-such-bucket-here/lake/overrides/world_id=w/x.parquet: NoSuchBucket"):
        lake.write(
            "overrides",
            [{"strategy_id": "s", "run_id": "r", "override_status": "none", "recorded_at": T0}],
            world_id="w",
            file_stem="x",
        )


def test_catalog_over_an_s3_lake_is_queryable_empty_and_with_data(tmp_path, s3_bucket, lake):
    catalog = tmp_path / "validation.duckdb"
    status = ensure_catalog(catalog, lake.root, endpoint_url=s3_bucket.server.url, region="us-east-1")
    assert status.rebuilt and len(status.schema_files_written) > 0
    connection = connect_catalog(catalog)  # endpoint from the environment, as an analyst would
    try:
        assert connection.execute("SELECT count(*) FROM evaluation_runs").fetchall() == [(0,)]
        lake.write("evaluation_run_history", history(["r1", "r2"]), world_id="alpha", file_stem="rev1")
        lake.write("evaluation_run_history", history(["r1"], revision=2, status="fail"), world_id="alpha", file_stem="rev2")
        assert connection.execute(
            "SELECT run_id, revision, status FROM evaluation_runs ORDER BY run_id"
        ).fetchall() == [("r1", 2, "fail"), ("r2", 1, "pass")]
    finally:
        connection.close()
    again = ensure_catalog(catalog, lake.root, endpoint_url=s3_bucket.server.url, region="us-east-1")
    assert not again.rebuilt
