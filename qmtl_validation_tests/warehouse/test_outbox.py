"""The events outbox: once per idempotency key, one linear hash chain per world even with
concurrent writers (local lake and S3), and a verifier that names the first broken link."""

import datetime as dt
import subprocess
import sys
import threading
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from qmtl_validation.core.events import cloud_event
from qmtl_validation.settings import REPO_ROOT
from qmtl_validation.warehouse.lake import Lake
from qmtl_validation.warehouse.outbox import (
    append_events,
    chain_file_number,
    chain_files,
    verify_events_chain,
    verify_world_chain,
)
from qmtl_validation.warehouse.queries import latest_rows

T0 = dt.datetime(2026, 11, 27, 12, 0, tzinfo=dt.timezone.utc)


def event(key: str, world: str = "alpha", minute: int = 0) -> dict:
    return cloud_event(
        "evaluation_run_created",
        world_id=world,
        subject=f"{world}/s/{key}",
        data={"run_id": key},
        idempotency_key=f"evaluation_run_created:{world}:{key}",
        time=T0 + dt.timedelta(minutes=minute, microseconds=123_456),
    )


def test_each_event_is_written_once_and_each_world_is_one_chain(tmp_path):
    lake = Lake(tmp_path / "lake")
    assert append_events(lake, [event("r1"), event("r2"), event("r1"), event("r9", world="beta")]) == 3
    assert append_events(lake, [event("r2"), event("r3", minute=1)]) == 1
    assert append_events(lake, [event("r3", minute=1)]) == 0
    rows = latest_rows(lake, "events", latest=False)
    assert sorted(rows["idempotency_key"]) == [
        "evaluation_run_created:alpha:r1", "evaluation_run_created:alpha:r2",
        "evaluation_run_created:alpha:r3", "evaluation_run_created:beta:r9",
    ]
    assert [Path(uri).name for uri in chain_files(lake, "alpha")] == [
        "chain-000000000001.parquet", "chain-000000000002.parquet"
    ]
    checks = {c.world_id: c for c in verify_events_chain(lake)}
    assert checks["alpha"].ok and checks["alpha"].events == 3 and checks["alpha"].files == 2
    assert checks["beta"].ok and checks["beta"].events == 1
    alpha = {r["idempotency_key"]: r for r in rows.to_dict("records")}
    # The second file's first event links to the first file's last one.
    assert alpha["evaluation_run_created:alpha:r3"]["prev_hash"] == alpha["evaluation_run_created:alpha:r2"]["row_hash"]
    assert alpha["evaluation_run_created:alpha:r1"]["prev_hash"] is None


APPENDER = """
import datetime as dt, sys
from qmtl_validation.core.events import cloud_event
from qmtl_validation.warehouse.lake import Lake
from qmtl_validation.warehouse.outbox import append_events
root, writer, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
lake = Lake(root)
now = dt.datetime(2026, 11, 27, tzinfo=dt.timezone.utc)
for i in range(count):
    keys = [f"{writer}-{i}", f"shared-{i}"]  # every writer also tries to publish the shared ones
    append_events(lake, [cloud_event("evaluation_run_created", world_id="alpha", subject=k,
                                     data={"k": k}, idempotency_key=k, time=now) for k in keys])
"""


@pytest.mark.slow
def test_concurrent_processes_appending_to_one_world_keep_one_linear_chain(tmp_path):
    root = tmp_path / "lake"
    writers, count = 4, 12
    processes = [
        subprocess.Popen([sys.executable, "-c", APPENDER, str(root), f"w{n}", str(count)], cwd=REPO_ROOT,
                         stderr=subprocess.PIPE, text=True)
        for n in range(writers)
    ]
    for process in processes:
        _, err = process.communicate(timeout=300)
        assert process.returncode == 0, err
    lake = Lake(root)
    rows = latest_rows(lake, "events", latest=False)
    expected = {f"w{n}-{i}" for n in range(writers) for i in range(count)} | {f"shared-{i}" for i in range(count)}
    assert sorted(rows["idempotency_key"]) == sorted(expected)  # nothing lost, nothing twice
    files = chain_files(lake, "alpha")
    assert [chain_file_number(uri) for uri in files] == list(range(1, len(files) + 1))
    (check,) = verify_events_chain(lake)
    assert check.ok, check
    assert check.events == len(expected)


def test_concurrent_threads_appending_on_s3_keep_one_linear_chain(s3_bucket):
    lake = Lake(s3_bucket.uri("lake"), s3_client=s3_bucket.client, endpoint_url=s3_bucket.server.url)
    errors = []

    def append(writer: int) -> None:
        try:
            own = Lake(lake.root, s3_client=s3_bucket.server.client(), endpoint_url=s3_bucket.server.url)
            for i in range(5):
                append_events(own, [event(f"t{writer}-{i}"), event(f"shared-{i}")])
        except Exception as error:  # reported below, with the thread's failure
            errors.append(repr(error))

    threads = [threading.Thread(target=append, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    assert errors == []
    rows = latest_rows(lake, "events", latest=False)
    assert len(rows) == 4 * 5 + 5 and rows["idempotency_key"].is_unique
    (check,) = verify_events_chain(lake)
    assert check.ok and check.events == 25


def _rewrite(path: Path, edit) -> None:
    table = pq.read_table(path)
    rows = table.to_pylist()
    edit(rows)
    pq.write_table(pa.Table.from_pylist(rows, schema=table.schema), path)


@pytest.fixture
def three_batches(tmp_path):
    lake = Lake(tmp_path / "lake")
    append_events(lake, [event("r1"), event("r2")])
    append_events(lake, [event("r3", minute=1), event("r4", minute=1)])
    append_events(lake, [event("r5", minute=2)])
    return lake


def test_an_edited_event_is_the_first_broken_link(three_batches):
    lake = three_batches
    second = Path(chain_files(lake, "alpha")[1])
    _rewrite(second, lambda rows: rows[1].update(data_json='{"run_id": "forged"}'))
    check = verify_world_chain(lake, "alpha")
    assert not check.ok
    assert (check.broken_at, check.file, check.row_in_file) == (3, str(second), 1)
    assert check.event_id == event("r4")["id"]
    assert "edited" in check.problem


def test_an_edited_event_with_a_recomputed_hash_breaks_the_next_link(three_batches):
    from qmtl_validation.core.events import row_hash

    lake = three_batches
    first = Path(chain_files(lake, "alpha")[0])

    def forge(rows):
        rows[1]["data_json"] = '{"run_id": "forged"}'
        rows[1]["row_hash"] = row_hash(rows[1], rows[0]["row_hash"])

    _rewrite(first, forge)
    check = verify_world_chain(lake, "alpha")
    assert (check.broken_at, check.row_in_file) == (2, 0)
    assert "prev_hash" in check.problem


def test_a_removed_chain_file_and_a_cut_head_are_reported(three_batches):
    lake = three_batches
    head = verify_world_chain(lake, "alpha").head
    files = chain_files(lake, "alpha")
    Path(files[2]).unlink()
    assert verify_world_chain(lake, "alpha").ok  # the chain alone cannot see a cut end...
    cut = verify_world_chain(lake, "alpha", expected_head=head)  # ...the recorded head can
    assert not cut.ok and "expected head" in cut.problem
    Path(files[0]).unlink()
    gap = verify_world_chain(lake, "alpha")
    assert not gap.ok and gap.broken_at == 0 and "chain-000000000001" in gap.problem
