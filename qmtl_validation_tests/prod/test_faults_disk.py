"""A lake root that cannot be written — full disk, read-only file system, a file where a folder
should be — gives a clear failure naming the path and the cause, leaves no partial file, and
processing goes on once the cause is gone.

Running as root, permission bits do not stop a writer, so the failures are real ones the kernel
gives root too: a full ``tmpfs`` (ENOSPC), a read-only ``tmpfs`` (EROFS) and a regular file in
place of the lake folder (ENOTDIR). The ``tmpfs`` cases need mount rights and are skipped without.
"""

import contextlib
import datetime as dt
import errno
import os
import subprocess
import uuid
from pathlib import Path

import dagster as dg
import pyarrow.parquet as pq
import pytest

from qmtl_validation.defs.pipeline import materialize_runs, register_run_partitions
from qmtl_validation.warehouse.intake import record_intake, take_in_run_bundles
from qmtl_validation.warehouse.lake import Lake, LakeWriteError
from qmtl_validation.warehouse.landing import LocalLandingZone
from qmtl_validation.warehouse.queries import latest_rows
from qmtl_validation_tests.dagster_harness import Drops, bundle, deployment, policy_file

TODAY = dt.date(2026, 11, 27)
NOW = dt.datetime(2026, 11, 27, 15, 0, tzinfo=dt.timezone.utc)


@contextlib.contextmanager
def tmpfs(path: Path, size: str, *, read_only: bool = False):
    path.mkdir(parents=True, exist_ok=True)
    options = f"size={size}" + (",ro" if read_only else "")
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({mounted.stderr.strip()})")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


def fill(folder: Path) -> Path:
    """Write a filler file until the file system is full; returns it (delete it to free space)."""
    filler = folder / f"filler-{uuid.uuid4().hex[:6]}"
    with open(filler, "wb") as handle:
        try:
            while True:
                handle.write(b"\0" * 65536)
                handle.flush()
        except OSError as error:
            assert error.errno == errno.ENOSPC
    with contextlib.suppress(OSError):  # the last partial block may still fit
        with open(filler, "ab") as handle:
            while True:
                handle.write(b"\0")
                handle.flush()
    return filler


def parquet_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and (p.suffix == ".parquet" or p.name.endswith(".tmp")))


def error_text(error) -> str:
    """The messages of a serialised error and of its causes."""
    parts = []
    while error is not None:
        parts.append(error.message)
        error = error.cause or error.context
    return " | ".join(parts)


def landing_with_one_bundle(tmp_path: Path) -> LocalLandingZone:
    landing = tmp_path / "landing"
    Drops(str(landing)).put([policy_file("beta_growth", 1)] + bundle("beta_growth", "mom_fast", "run-001", day=TODAY))
    return LocalLandingZone(landing)


def take_in(zone, lake):
    intake = take_in_run_bundles(zone, lake, today=TODAY, lookback_days=3, now=NOW)
    record_intake(lake, intake, now=NOW, file_label="test")
    return intake


def test_a_full_lake_disk_fails_the_intake_clearly_and_it_resumes_when_space_is_freed(tmp_path):
    zone = landing_with_one_bundle(tmp_path)
    with tmpfs(tmp_path / "lake", "1m") as root:
        filler = fill(root)
        lake = Lake(root)
        with pytest.raises(LakeWriteError) as failure:
            take_in(zone, lake)
        message = str(failure.value)
        assert message.startswith(f"cannot write {root}/")
        assert "No space left on device" in message
        assert failure.value.errno == errno.ENOSPC
        assert parquet_files(root) == []  # no partial file, no temp file left behind

        filler.unlink()
        intake = take_in(zone, lake)
        assert intake.partition_keys == ["beta_growth/mom_fast/run-001"]
        registry = latest_rows(lake, "landing_registry", latest=False)
        assert registry["partition_key"].tolist() == ["beta_growth/mom_fast/run-001"]
    assert zone.exists("runs/2026-11-27/beta_growth/mom_fast/run-001/run.json")  # nothing lost


def test_a_run_on_a_full_lake_fails_with_the_path_and_the_retry_writes_once(tmp_path, monkeypatch):
    deploy = deployment(tmp_path, monkeypatch)
    Drops(deploy.settings.landing_root).put(
        [policy_file("beta_growth", 1)] + bundle("beta_growth", "mom_fast", "run-001", day=TODAY)
    )
    lake_root = Path(deploy.settings.lake_root)
    with tmpfs(lake_root, "4m") as root:
        instance = dg.DagsterInstance.ephemeral()
        keys, _ = register_run_partitions(instance, deploy.settings, today=TODAY, lookback_days=3)
        filler = fill(root)
        before = parquet_files(root)
        failed = materialize_runs(instance, keys, raise_on_error=False)
        assert not failed.success
        (failure,) = failed.get_step_failure_events()
        text = error_text(failure.step_failure_data.error)
        assert "No space left on device" in text and f"cannot write {root}/" in text
        for path in parquet_files(root):  # whatever exists is complete, nothing half-written
            assert path in before and pq.ParquetFile(path).metadata.num_rows >= 0

        filler.unlink()
        retried = materialize_runs(instance, keys)
        assert retried.success
        lake = Lake(root)
        history = latest_rows(lake, "evaluation_run_history", latest=False)
        assert history[["run_id", "revision"]].values.tolist() == [["run-001", 1]]
        assert len(latest_rows(lake, "run_manifests", latest=False)) == 1


def test_a_read_only_lake_fails_clearly_and_leaves_the_drop_in_place(tmp_path):
    zone = landing_with_one_bundle(tmp_path)
    with tmpfs(tmp_path / "lake", "1m", read_only=True) as root:
        with pytest.raises(LakeWriteError) as failure:
            take_in(zone, Lake(root))
        assert "Read-only file system" in str(failure.value) and str(root) in str(failure.value)
        assert failure.value.errno == errno.EROFS
        assert parquet_files(root) == []
    assert zone.exists("runs/2026-11-27/beta_growth/mom_fast/run-001/run.json")


def test_a_file_where_the_lake_folder_should_be_fails_clearly(tmp_path):
    zone = landing_with_one_bundle(tmp_path)
    blocker = tmp_path / "warehouse"
    blocker.write_text("not a folder")
    lake = Lake(blocker / "lake")
    with pytest.raises(LakeWriteError) as failure:
        take_in(zone, lake)
    assert str(blocker / "lake") in str(failure.value)
    assert failure.value.errno in (errno.ENOTDIR, errno.EEXIST)
    assert blocker.read_text() == "not a folder"

    blocker.unlink()
    assert take_in(zone, lake).partition_keys == ["beta_growth/mom_fast/run-001"]
    assert os.path.isdir(blocker / "lake" / "landing_registry")
