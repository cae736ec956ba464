"""prod-smoke: the production profile end to end on real components.

A fresh PostgreSQL database and moto's S3 server on 127.0.0.1; ``deploy/dagster.yaml`` unchanged
as the instance (``DAGSTER_HOME`` = a temp folder holding a copy); ``QMTL_PROFILE=prod`` with the
landing zone, lake and reports under ``s3://``. A producer drops run bundles and a signed risk
snapshot into the bucket; the sensors tick through the daemon's ``execute_sensor_iteration``, the
queue daemon launches the runs they request, each in its own process started by the code server,
exactly as in production. Then the results are read back: rows from the S3 lake through the
DuckDB catalog, runs from PostgreSQL with plain SQL.

Every secret of the deployment (AWS keys, the PostgreSQL password, the world's snapshot signing
key) is a unique canary value; the last test greps the lake, the instance's database and every
file under ``DAGSTER_HOME`` (run and tick logs) for them.

``make prod-smoke`` runs this module alone; ``make test`` runs it with everything else.
"""

import datetime as dt
import uuid
import zlib
from pathlib import Path

import numpy as np
import pytest

from qmtl_validation.sample_data import bundle_files, make_run_manifest, render_policy, snapshot_files
from qmtl_validation.warehouse.catalog import connect_catalog, ensure_catalog
from qmtl_validation.warehouse.lake import Lake
from qmtl_validation.warehouse.outbox import verify_events_chain
from qmtl_validation_tests.dagster_harness import Drops, daemon_workspace, s3_deployment, sensor_environment, tick_sensor
from qmtl_validation_tests.prod.daemons import reap_code_servers, wait_for_runs
from qmtl_validation_tests.prod.postgres import instance_home, postgres, use_instance_home  # noqa: F401

pytestmark = [pytest.mark.prod_smoke, pytest.mark.slow]

WORLD = "beta_growth"
STRATEGIES = ("mom_fast", "mom_slow", "carry")
SIGNING_KEY_ENV = "QMTL_SMOKE_SIGNING_KEY"


def _signed_policy() -> bytes:
    text = render_policy(WORLD, 1)
    assert "  - gateway\n" in text
    return text.replace("  - gateway\n", f"  - gateway\n  signing_key_env: {SIGNING_KEY_ENV}\n", 1).encode()


@pytest.fixture(scope="module")
def smoke(tmp_path_factory, s3_server, postgres):  # noqa: F811
    tmp = tmp_path_factory.mktemp("prod-smoke")
    canary = uuid.uuid4().hex
    secrets = {
        "AWS_ACCESS_KEY_ID": f"AKIAQMTL{canary[:12].upper()}",
        "AWS_SECRET_ACCESS_KEY": f"qmtl-canary-aws-{canary}",
        "DAGSTER_PG_PASSWORD": f"qmtl-canary-pg-{canary}",
        SIGNING_KEY_ENV: f"qmtl-canary-signing-{canary}",
    }
    database = postgres.create(template=postgres.template)
    bucket = s3_server.create_bucket()  # the producer's own client and credentials
    with pytest.MonkeyPatch.context() as monkeypatch:
        for name, value in s3_server.env().items():
            monkeypatch.setenv(name, value)
        home = instance_home(tmp / "dagster_home")
        use_instance_home(monkeypatch, home, database, password=secrets["DAGSTER_PG_PASSWORD"])
        for name, value in secrets.items():
            monkeypatch.setenv(name, value)
        deploy = s3_deployment(tmp, monkeypatch, bucket)
        assert deploy.settings.is_prod and deploy.settings.lake_root.startswith("s3://")
        sensor_environment(monkeypatch)  # the real clock

        now = dt.datetime.now(dt.timezone.utc)
        drops = Drops(deploy.settings.landing_root, bucket.client)
        drops.put([(f"policies/{WORLD}/1.yaml", _signed_policy())])
        for seed, strategy in enumerate(STRATEGIES, start=1):
            run = make_run_manifest(WORLD, strategy, f"run-{seed:03d}", submitted_at=now - dt.timedelta(hours=2))
            returns = np.random.default_rng(seed).normal(0.0008, 0.01, 300)
            drops.put(bundle_files(run, returns, drop_date=now.date()))
        snapshot = {
            "world_id": WORLD,
            "as_of": (now - dt.timedelta(minutes=1)).isoformat().replace("+00:00", "Z"),
            "version": "v0001",
            "weights": {"mom_fast": 0.5, "mom_slow": 0.3, "carry": 0.2},
            "covariance": {"mom_fast,mom_fast": 1.0e-4, "mom_fast,mom_slow": 2.0e-5, "mom_slow,mom_slow": 1.5e-4,
                           "carry,carry": 0.8e-4, "carry,mom_fast": 1.0e-5, "carry,mom_slow": 0.5e-5},
            "stress": {"crash_2008": {"max_drawdown": 0.2, "var_99": 0.04, "es_99": 0.05}},
            "provenance": {"actor": "risk-engine", "stage": "paper", "source": "smoke"},
            "ttl_sec": 3600,
        }
        drops.put(snapshot_files(snapshot, drop_date=now.date(), signing_key=secrets[SIGNING_KEY_ENV]))

        import dagster as dg

        instance = dg.DagsterInstance.from_config(str(home))
        ticks = {}
        try:
            with daemon_workspace(instance) as context:
                for sensor in ("run_bundle_sensor", "risk_snapshot_sensor"):
                    ticks[sensor] = tick_sensor(context, instance, sensor)
                    assert ticks[sensor].error is None, ticks[sensor].error
                run_ids = [i for t in ticks.values() for i in t.run_ids]
                runs = wait_for_runs(context, instance, run_ids, timeout=600)
        finally:
            instance.dispose()
            reap_code_servers()
        yield {"deploy": deploy, "database": database, "bucket": bucket, "home": home, "tmp": tmp,
               "secrets": secrets, "ticks": ticks, "runs": runs, "server": s3_server}
    postgres.drop(database)


def _lake(smoke) -> Lake:
    return Lake(smoke["deploy"].settings.lake_root, s3_client=smoke["bucket"].client,
                endpoint_url=smoke["server"].url)


def test_prod_smoke_sensors_took_in_every_drop_and_every_run_succeeded(smoke):
    bundles, snapshots = smoke["ticks"]["run_bundle_sensor"], smoke["ticks"]["risk_snapshot_sensor"]
    assert sorted(bundles.partitions_added) == sorted(f"{WORLD}/{s}/run-{n:03d}" for n, s in enumerate(STRATEGIES, 1))
    assert f"{WORLD}/v0001" in snapshots.partitions_added
    # One run for the world's three bundles (they arrived in one tick), one for the snapshot.
    assert sorted((r.job_name, r.status.value) for r in smoke["runs"]) == [
        ("validate_runs", "SUCCESS"), ("validate_snapshots", "SUCCESS")]


def test_prod_smoke_rows_are_read_back_from_the_s3_lake_through_the_duckdb_catalog(smoke):
    catalog = smoke["deploy"].settings.catalog_path
    status = ensure_catalog(catalog, _lake(smoke))
    assert status.lake_root.startswith("s3://")
    with connect_catalog(catalog, endpoint_url=smoke["server"].url, region="us-east-1") as connection:
        runs = connection.execute(
            "SELECT strategy_id, run_id, status, recommended_stage, policy_version FROM evaluation_runs ORDER BY run_id"
        ).fetchall()
        assert [(s, r) for s, r, *_ in runs] == [(s, f"run-{n:03d}") for n, s in enumerate(STRATEGIES, 1)]
        assert all(status in ("pass", "warn", "fail") and version == "1" for _, _, status, _, version in runs)
        metrics = connection.execute("SELECT count(*), count(returns__sharpe) FROM evaluation_metrics_latest").fetchone()
        assert metrics == (3, 3)
        (snapshots,) = connection.execute(
            "SELECT count(*) FROM risk_snapshots WHERE world_id = ? AND version = 'v0001'", [WORLD]
        ).fetchone()
        assert snapshots >= 1
        (portfolio,) = connection.execute("SELECT count(*) FROM portfolio_risk WHERE world_id = ?", [WORLD]).fetchone()
        assert portfolio >= 1
        assert connection.execute("SELECT count(*) FROM rejections").fetchone() == (0,)
        sources = connection.execute("SELECT value FROM catalog_info WHERE key = 'lake_root'").fetchone()
        assert sources[0] == smoke["deploy"].settings.lake_root
    (chain,) = verify_events_chain(_lake(smoke))
    assert chain.ok and chain.events >= len(STRATEGIES)
    reports = smoke["bucket"].keys("reports/")
    assert any(key.endswith("report.html") for key in reports)


def test_prod_smoke_runs_are_recorded_in_postgres(smoke):
    database = smoke["database"]
    rows = database.query(
        "SELECT r.pipeline_name, r.status, t.key, t.value FROM runs r JOIN run_tags t ON t.run_id = r.run_id "
        "AND t.key IN ('dagster/partition', 'dagster/asset_partition_range_start', "
        "'dagster/asset_partition_range_end') ORDER BY 1, 3"
    )
    # The bundles' run covers their range (added in key order: carry, mom_fast, mom_slow).
    assert rows == [
        ("validate_runs", "SUCCESS", "dagster/asset_partition_range_end", f"{WORLD}/mom_slow/run-002"),
        ("validate_runs", "SUCCESS", "dagster/asset_partition_range_start", f"{WORLD}/carry/run-003"),
        ("validate_snapshots", "SUCCESS", "dagster/partition", f"{WORLD}/v0001"),
    ]
    ((materialisations,),) = database.query(
        "SELECT count(*) FROM event_logs WHERE dagster_event_type = 'ASSET_MATERIALIZATION'"
    )
    assert materialisations >= 4 * 5
    partitions = database.query(
        "SELECT partitions_def_name, count(*) FROM dynamic_partitions GROUP BY 1 ORDER BY 1"
    )
    assert ("evaluation_runs", 3) in partitions and ("risk_snapshots", 1) in partitions
    order = database.query(
        "SELECT partition FROM dynamic_partitions WHERE partitions_def_name = 'evaluation_runs' ORDER BY id"
    )
    assert [key for (key,) in order] == [f"{WORLD}/carry/run-003", f"{WORLD}/mom_fast/run-001",
                                         f"{WORLD}/mom_slow/run-002"]  # the range holds all three
    ticks = database.query("SELECT count(*) FROM job_ticks")
    assert ticks[0][0] >= 2


def _postgres_text(database) -> str:
    """Every table of the instance's database as text, compressed snapshot bodies unpacked."""
    parts = []
    tables = [t for (t,) in database.query("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")]
    for table in tables:
        for row in database.query(f'SELECT * FROM "{table}"'):
            for value in row:
                if isinstance(value, (bytes, memoryview)):
                    raw = bytes(value)
                    try:
                        raw = zlib.decompress(raw)
                    except zlib.error:
                        pass
                    parts.append(raw.decode("utf-8", "replace"))
                elif value is not None:
                    parts.append(str(value))
    return "\n".join(parts)


def test_no_secret_reaches_the_lake_the_instance_database_or_any_log(smoke):
    secrets = smoke["secrets"]
    bucket = smoke["bucket"]
    # Everything the deployment wrote to S3 (landing zone aside: producers wrote that).
    written = [key for key in bucket.keys() if not key.startswith("landing/")]
    assert any(key.startswith("lake/") for key in written) and any(key.startswith("reports/") for key in written)
    lake_bytes = b"".join(bucket.client.get_object(Bucket=bucket.name, Key=key)["Body"].read() for key in written)
    # The run and tick logs, the compute logs and everything else the instance keeps on disk.
    home_bytes = b"".join(p.read_bytes() for p in Path(smoke["home"]).rglob("*") if p.is_file())
    catalog_bytes = Path(smoke["deploy"].settings.catalog_path).read_bytes()
    database_text = _postgres_text(smoke["database"])
    assert "run_bundle_sensor" in database_text and "validate_runs" in database_text  # it read something
    for name, value in secrets.items():
        for where, haystack in (("lake", lake_bytes), ("DAGSTER_HOME", home_bytes), ("catalog", catalog_bytes)):
            assert value.encode() not in haystack, f"{name} found in {where}"
        assert value not in database_text, f"{name} found in the instance database"
    # The search did cover the job snapshots (stored compressed), where resource config lives.
    assert "lake_io_manager" in database_text
