import datetime as dt
import errno
import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from qmtl_validation.warehouse.lake import (
    NULL_PARTITION,
    Lake,
    LakeFileExistsError,
    LakeSchemaError,
    LakeWriteError,
    conform,
    temp_file_name,
    unique_file_stem,
)

REPO_ROOT = Path(__file__).resolve().parents[2]
T0 = dt.datetime(2026, 11, 27, 9, 30, tzinfo=dt.timezone.utc)


def history_rows(n: int, *, status: str = "pass", revision: int = 1, strategies: int = 5) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "strategy_id": [f"s{i % strategies}" for i in range(n)],
            "run_id": [f"r{i}" for i in range(n)],
            "revision": revision,
            "recorded_at": T0,
            "stage": "backtest",
            "status": status,
            "recommended_stage": "paper_only" if status == "pass" else "backtest_only",
        }
    )


def test_write_then_read_round_trips_values_and_types(tmp_path):
    lake = Lake(tmp_path / "lake")
    rows = [
        {
            "strategy_id": "mom",
            "run_id": "r1",
            "revision": 2,
            "rule": "sample",
            "status": "fail",
            "severity": "blocking",
            "owner": "quant",
            "reason_code": "history_too_short",
            "reason": "0.4y < 1y",
            "tags": ["sample", "v1"],
            "details_json": {"min_years": 1.0, "observed": float("nan")},
            "recorded_at": "2026-11-27T09:30:00+01:00",
        },
        {
            "strategy_id": "mom",
            "run_id": "r1",
            "revision": 2,
            "rule": "performance",
            "status": "pass",
            "severity": "blocking",
            "owner": "quant",
            "reason_code": "ok",
            "tags": [],
            "recorded_at": dt.datetime(2026, 11, 27, 8, 30),  # naive: taken as UTC
        },
    ]
    uri = lake.write("rule_results", rows, world_id="alpha", file_stem="rev2")

    assert uri == str(tmp_path / "lake" / "rule_results" / "world_id=alpha" / "rev2.parquet")
    schema = pq.read_schema(uri)
    assert str(schema.field("recorded_at").type) == "timestamp[us, tz=UTC]"
    assert schema.field("tags").type.value_type == "string"
    frame = lake.read("rule_results")
    assert list(frame["world_id"]) == ["alpha", "alpha"]
    assert list(frame["recorded_at"]) == [pd.Timestamp("2026-11-27T08:30:00Z")] * 2
    assert list(frame["tags"][0]) == ["sample", "v1"]
    assert json.loads(frame["details_json"][0]) == {"min_years": 1.0, "observed": None}
    assert frame["reason"][1] is None
    assert frame["policy_version"].isna().all()  # optional, absent → null


def test_missing_required_column_is_refused_before_anything_is_written(tmp_path):
    lake = Lake(tmp_path)
    rows = history_rows(3).drop(columns=["status"])
    with pytest.raises(LakeSchemaError, match="missing required column\\(s\\) status"):
        lake.write("evaluation_run_history", rows, world_id="w1", file_stem="b1")
    assert lake.list_files("evaluation_run_history") == []
    assert not (tmp_path / "evaluation_run_history").exists()


def test_zero_rows_write_no_file(tmp_path):
    lake = Lake(tmp_path)
    assert lake.write("rejections", [], world_id=None, file_stem="tick") is None
    assert lake.write("evaluation_run_history", history_rows(0), world_id="w1", file_stem="b") is None
    assert lake.write_partitioned("evaluation_run_history", history_rows(0).assign(world_id="w1"), file_stem="b") == []
    assert lake.list_files("evaluation_run_history") == [] and lake.list_files("rejections") == []


def test_null_in_required_column_is_refused(tmp_path):
    rows = history_rows(3)
    rows.loc[1, "status"] = None
    with pytest.raises(LakeSchemaError, match="column status: required but 1 row"):
        Lake(tmp_path).write("evaluation_run_history", rows, world_id="w1", file_stem="b1")


def test_undeclared_column_is_refused_with_the_closest_name(tmp_path):
    rows = history_rows(1).assign(recomended_stage="x")
    with pytest.raises(LakeSchemaError, match="'recomended_stage' \\(did you mean 'recommended_stage'\\?\\)"):
        Lake(tmp_path).write("evaluation_run_history", rows, world_id="w1", file_stem="b1")


def test_rows_of_another_world_are_refused(tmp_path):
    rows = history_rows(2).assign(world_id=["w1", "w2"])
    with pytest.raises(LakeSchemaError, match="world_id='w2' written to partition world_id='w1'"):
        Lake(tmp_path).write("evaluation_run_history", rows, world_id="w1", file_stem="b1")


def test_infinite_metric_is_refused_and_nan_stored_as_null(tmp_path):
    lake = Lake(tmp_path)
    base = {"strategy_id": "s", "run_id": "r", "computed_at": T0}
    with pytest.raises(LakeSchemaError, match="returns__sharpe: 1 infinite value"):
        lake.write("evaluation_metrics", [{**base, "returns__sharpe": np.inf}], world_id="w", file_stem="m")
    lake.write("evaluation_metrics", [{**base, "returns__sharpe": np.nan}], world_id="w", file_stem="m")
    assert lake.read("evaluation_metrics")["returns__sharpe"].isna().all()


def test_wrong_types_are_cast_or_refused_with_the_column_named(tmp_path):
    table = conform(
        "evaluation_run_history",
        history_rows(2).assign(revision=[1.0, 2.0], policy_version=[3, 4]),
        world_id="w1",
    )
    assert table["revision"].to_pylist() == [1, 2]
    assert table["policy_version"].to_pylist() == ["3", "4"]
    with pytest.raises(LakeSchemaError, match="column revision: expected integers"):
        conform("evaluation_run_history", history_rows(1).assign(revision=1.5), world_id="w1")
    with pytest.raises(LakeSchemaError, match="column recorded_at: expected UTC timestamps"):
        conform("evaluation_run_history", history_rows(1).assign(recorded_at="yesterday"), world_id="w1")


def test_open_metrics_table_keeps_extra_metric_columns_as_double(tmp_path):
    lake = Lake(tmp_path)
    lake.write(
        "evaluation_metrics",
        [{"strategy_id": "s", "run_id": "r", "computed_at": T0, "returns__sharpe": 1.5,
          "benchmark__alpha": 1, "benchmark__name": "SPX", "benchmark__given": True,
          "benchmark__as_of": dt.datetime(2026, 11, 27, 10, 30)}],
        world_id="w",
        file_stem="m1",
    )
    schema = pq.read_schema(lake.list_files("evaluation_metrics")[0])
    assert str(schema.field("benchmark__alpha").type) == "double"
    assert str(schema.field("benchmark__name").type) == "string"
    assert str(schema.field("benchmark__given").type) == "bool"
    assert str(schema.field("benchmark__as_of").type) == "timestamp[us, tz=UTC]"
    frame = lake.read("evaluation_metrics")
    assert frame.loc[0, "benchmark__alpha"] == 1.0
    assert list(frame.columns[-4:]) == ["benchmark__alpha", "benchmark__name", "benchmark__given", "benchmark__as_of"]
    with pytest.raises(LakeSchemaError, match="benchmark__weights: an extra column must hold"):
        lake.write("evaluation_metrics", [{"strategy_id": "s", "run_id": "r", "computed_at": T0,
                                           "benchmark__weights": [0.5, 0.5]}], world_id="w", file_stem="m2")


def test_an_existing_history_file_is_never_overwritten(tmp_path):
    lake = Lake(tmp_path)
    lake.write("evaluation_run_history", history_rows(2, status="pass"), world_id="w1", file_stem="rev1")
    with pytest.raises(LakeFileExistsError, match="rev1.parquet: file exists"):
        lake.write("evaluation_run_history", history_rows(2, status="fail"), world_id="w1", file_stem="rev1")
    assert list(lake.read("evaluation_run_history")["status"]) == ["pass", "pass"]
    assert [p.name for p in (tmp_path / "evaluation_run_history" / "world_id=w1").iterdir()] == ["rev1.parquet"]


def test_racing_writers_of_the_same_file_exactly_one_wins(tmp_path):
    lake = Lake(tmp_path)
    outcomes: list[str] = []
    barrier = threading.Barrier(8)

    def writer(i: int) -> None:
        barrier.wait()
        try:
            lake.write("evaluation_run_history", history_rows(50, revision=i + 1), world_id="w1", file_stem="same")
            outcomes.append("written")
        except LakeFileExistsError:
            outcomes.append("refused")

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(outcomes) == ["refused"] * 7 + ["written"]
    frame = lake.read("evaluation_run_history")
    assert len(frame) == 50 and frame["revision"].nunique() == 1
    assert sorted(os.listdir(tmp_path / "evaluation_run_history" / "world_id=w1")) == ["same.parquet"]


def test_ten_thousand_runs_are_one_file_per_world(tmp_path):
    lake = Lake(tmp_path)
    rows = history_rows(10_000).assign(world_id=np.where(np.arange(10_000) % 3 == 0, "w1", "w2"))
    started = time.perf_counter()
    uris = lake.write_partitioned("evaluation_run_history", rows, file_stem=unique_file_stem("backfill"))
    elapsed = time.perf_counter() - started
    assert len(uris) == 2 and len(lake.list_files("evaluation_run_history")) == 2
    assert len(lake.read("evaluation_run_history", world_id="w1")) == 3334
    assert elapsed < 5.0


def test_rows_without_a_world_go_to_the_null_partition(tmp_path):
    lake = Lake(tmp_path)
    rows = [
        {"key": "runs/2026-11-27/../x/run.json", "kind": "run_bundle", "reason": "path traversal", "detected_at": T0},
        {"key": "runs/2026-11-27/w1/s1/r1/x.txt", "kind": "run_bundle", "reason": "unknown file",
         "detected_at": T0, "world_id": "w1"},
    ]
    uris = lake.write_partitioned("rejections", rows, file_stem="tick1")
    assert sorted(Path(u).parent.name for u in uris) == [f"world_id={NULL_PARTITION}", "world_id=w1"]
    glob = lake.glob("rejections")
    result = duckdb.sql(
        f"select key, world_id from read_parquet('{glob}', hive_partitioning=true, "
        "hive_types={'world_id': VARCHAR}) order by key"
    ).fetchall()
    assert result == [("runs/2026-11-27/../x/run.json", None), ("runs/2026-11-27/w1/s1/r1/x.txt", "w1")]
    with pytest.raises(LakeSchemaError, match="world_id is required"):
        lake.write("evaluation_run_history", history_rows(1), world_id=None, file_stem="x")


@pytest.mark.parametrize("world_id, file_stem", [("../w", "ok"), ("w1", "../escape"), ("w1", "a/b"), ("w 1", "ok")])
def test_world_and_file_names_cannot_escape_the_table_folder(tmp_path, world_id, file_stem):
    with pytest.raises(ValueError):
        Lake(tmp_path).write("evaluation_run_history", history_rows(1), world_id=world_id, file_stem=file_stem)
    assert not any(p.is_file() for p in tmp_path.rglob("*"))


def test_unwritable_root_raises_lake_write_error_naming_the_path(tmp_path):
    blocker = tmp_path / "lake"
    blocker.write_text("a file where the lake folder should be")
    with pytest.raises(LakeWriteError) as caught:
        Lake(blocker).write("evaluation_run_history", history_rows(1), world_id="w1", file_stem="b1")
    assert str(blocker / "evaluation_run_history" / "world_id=w1" / "b1.parquet") in str(caught.value)
    assert isinstance(caught.value, OSError)


def _run_python(code: str, *args: str, **kwargs) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code), *args],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **kwargs,
    )


def test_a_full_disk_mid_write_leaves_no_file_behind(tmp_path):
    # RLIMIT_FSIZE makes the kernel refuse the write part-way (EFBIG), like a full disk.
    code = """
        import datetime as dt, resource, signal, sys
        import numpy as np, pandas as pd
        from qmtl_validation.warehouse.lake import Lake, LakeWriteError
        n = 20000
        frame = pd.DataFrame({"strategy_id": "s", "run_id": [f"r{i}" for i in range(n)],
                              "computed_at": dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc),
                              "returns__sharpe": np.random.default_rng(1).random(n)})
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (8192, 8192))
        try:
            Lake(sys.argv[1]).write("evaluation_metrics", frame, world_id="w1", file_stem="big")
        except LakeWriteError as exc:
            print(exc.errno, exc)
    """
    process = _run_python(code, str(tmp_path))
    out, err = process.communicate(timeout=60)
    assert process.returncode == 0, err
    target = tmp_path / "evaluation_metrics" / "world_id=w1" / "big.parquet"
    assert out.strip() == f"{errno.EFBIG} cannot write {target}: File too large"
    assert os.listdir(target.parent) == []  # the temp file was removed too


def test_temp_names_never_match_the_catalog_glob(tmp_path):
    lake = Lake(tmp_path)
    lake.write("evaluation_run_history", history_rows(1), world_id="w1", file_stem="done")
    folder = tmp_path / "evaluation_run_history" / "world_id=w1"
    (folder / temp_file_name("pending.parquet")).write_bytes(b"PAR1 half a file")
    matched = duckdb.sql(f"select file from glob('{lake.glob('evaluation_run_history')}')").fetchall()
    assert [Path(f).name for (f,) in matched] == ["done.parquet"]
    assert [Path(p).name for p in lake.list_files("evaluation_run_history")] == ["done.parquet"]


def test_a_writer_killed_mid_write_leaves_no_visible_partial_file(tmp_path):
    code = """
        import datetime as dt, sys
        import numpy as np, pandas as pd
        from qmtl_validation.warehouse.lake import Lake
        n = int(sys.argv[2])
        rng = np.random.default_rng(7)
        frame = pd.DataFrame({"strategy_id": "s", "run_id": "r",
                              "computed_at": dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc),
                              **{f"extra__m{j}": rng.random(n) for j in range(24)}})
        Lake(sys.argv[1]).write("evaluation_metrics", frame, world_id="w1", file_stem="big")
    """
    folder = tmp_path / "evaluation_metrics" / "world_id=w1"
    lake = Lake(tmp_path)
    lake.write_schema_file("evaluation_metrics")
    for rows in (400_000, 1_600_000):
        process = _run_python(code, str(tmp_path), str(rows))
        deadline = time.monotonic() + 120
        temp = []
        while not temp and process.poll() is None and time.monotonic() < deadline:
            temp = [p for p in folder.glob(".*.tmp")] if folder.exists() else []
            time.sleep(0.001)
        if process.poll() is None:
            os.kill(process.pid, signal.SIGSTOP)  # frozen mid-write
            try:
                assert temp and not (folder / "big.parquet").exists()
                assert lake.list_files("evaluation_metrics") == []
                count = duckdb.sql(
                    f"select count(*) from read_parquet('{lake.glob('evaluation_metrics')}', union_by_name=true)"
                ).fetchall()
                assert count == [(0,)]
            finally:
                os.kill(process.pid, signal.SIGKILL)
                process.communicate()
            assert not (folder / "big.parquet").exists()
            assert lake.read("evaluation_metrics").empty
            assert lake.sweep_temp_files(older_than_seconds=3600) == []  # too recent to be debris
            (debris,) = folder.glob(".*.tmp")
            os.utime(debris, (time.time() - 7200, time.time() - 7200))
            assert lake.sweep_temp_files(older_than_seconds=3600) == [str(debris)]
            return
        process.communicate()
        (folder / "big.parquet").unlink(missing_ok=True)  # finished before we could stop it: bigger
    pytest.fail("the writer always finished before it could be stopped")
