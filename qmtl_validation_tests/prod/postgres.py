"""The machine's real PostgreSQL for the production-instance tests, and instance homes on it.

The server is the local cluster on 127.0.0.1:5432 (trust authentication, user ``postgres``;
override with ``QMTL_TEST_PG_HOST``/``QMTL_TEST_PG_PORT``/``QMTL_TEST_PG_USER``). Once per test
session a template database is created and given Dagster's schema by loading
``deploy/dagster.yaml`` against it; every test that asks for ``postgres_db`` gets its own fresh
database copied from that template (a file copy, ~0.3 s, instead of ~5 s of schema creation), so
no run, sensor cursor or dynamic partition leaks from one test to the next. Every database is
dropped when the test or the session ends.

Fixtures (import them into a test module or conftest)::

    from qmtl_validation_tests.prod.postgres import postgres, postgres_db  # noqa: F401

- ``postgres`` (session): a :class:`PostgresCluster` with the template ready.
- ``postgres_db``: a fresh :class:`PostgresDatabase`.

:func:`instance_home` writes a ``DAGSTER_HOME`` holding ``deploy/dagster.yaml`` (optionally with
test overrides merged in) and :func:`use_instance_home` points the environment at it.
"""

from __future__ import annotations

import contextlib
import copy
import os
import shutil
import subprocess
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Mapping

import pytest
import yaml

from qmtl_validation.settings import REPO_ROOT

DEPLOY_INSTANCE = REPO_ROOT / "deploy" / "dagster.yaml"
DEPLOY_ECS_INSTANCE = REPO_ROOT / "deploy" / "dagster.ecs.yaml"
DEV_INSTANCE = REPO_ROOT / "dagster.yaml"

PG_HOST = os.environ.get("QMTL_TEST_PG_HOST", "127.0.0.1")
PG_PORT = int(os.environ.get("QMTL_TEST_PG_PORT", "5432"))
PG_USER = os.environ.get("QMTL_TEST_PG_USER", "postgres")

# Runs launched by the instance execute synchronously in the test process (the storage stays
# PostgreSQL); used where the launch path is not what a test is about.
SYNC_LAUNCH = {
    "run_coordinator": {"module": "dagster._core.run_coordinator", "class": "DefaultRunCoordinator"},
    "run_launcher": {
        "module": "dagster._core.launcher.sync_in_memory_run_launcher",
        "class": "SyncInMemoryRunLauncher",
    },
}


def _connect(dbname: str = "postgres", **kwargs: Any):
    import psycopg2

    return psycopg2.connect(host=PG_HOST, port=PG_PORT, user=PG_USER, dbname=dbname, connect_timeout=3, **kwargs)


def postgres_is_up() -> bool:
    try:
        _connect().close()
        return True
    except Exception:
        return False


def _cluster_version() -> str | None:
    folder = Path("/etc/postgresql")
    versions = sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []
    return versions[0] if versions else None


def wait_for_postgres(timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not postgres_is_up():
        if time.monotonic() > deadline:
            raise RuntimeError(f"PostgreSQL on {PG_HOST}:{PG_PORT} did not come up within {timeout:.0f} s")
        time.sleep(0.2)


def pg_ctlcluster(action: str) -> None:
    """``pg_ctlcluster --skip-systemctl-redirect <version> main <action>`` (start/stop/restart)."""
    version = _cluster_version()
    if version is None or shutil.which("pg_ctlcluster") is None:
        raise RuntimeError("no local PostgreSQL cluster to control (pg_ctlcluster, /etc/postgresql)")
    subprocess.run(
        ["pg_ctlcluster", "--skip-systemctl-redirect", version, "main", action],
        check=True, capture_output=True, timeout=120,
    )


def ensure_postgres_running() -> None:
    """Start the local cluster if it is down (as CI does) and wait until it accepts connections."""
    if postgres_is_up():
        return
    with contextlib.suppress(Exception):
        pg_ctlcluster("start")
    wait_for_postgres()


@dataclass(frozen=True)
class PostgresDatabase:
    name: str
    host: str = PG_HOST
    port: int = PG_PORT
    user: str = PG_USER

    def env(self, password: str = "") -> dict[str, str]:
        """The variables ``deploy/dagster.yaml`` reads (trust authentication: any password)."""
        return {
            "DAGSTER_PG_HOST": self.host,
            "DAGSTER_PG_PORT": str(self.port),
            "DAGSTER_PG_USER": self.user,
            "DAGSTER_PG_PASSWORD": password,
            "DAGSTER_PG_DB": self.name,
        }

    def query(self, sql: str, params: tuple = ()) -> list[tuple]:
        connection = _connect(self.name)
        try:
            with connection.cursor() as cursor:
                cursor.execute(sql, params)
                return cursor.fetchall() if cursor.description else []
        finally:
            connection.close()


class PostgresCluster:
    """Creates and drops this session's databases (all named ``qmtl_test_<session>_<n>``)."""

    def __init__(self) -> None:
        self.prefix = f"qmtl_test_{uuid.uuid4().hex[:10]}"
        self.template: PostgresDatabase | None = None
        self._created: list[str] = []

    def _admin(self, sql: str) -> None:
        connection = _connect()
        connection.autocommit = True
        try:
            with connection.cursor() as cursor:
                cursor.execute(sql)
        finally:
            connection.close()

    def create(self, template: PostgresDatabase | None = None) -> PostgresDatabase:
        name = f"{self.prefix}_{len(self._created)}"
        clause = f' TEMPLATE "{template.name}"' if template else ""
        for attempt in range(20):
            try:
                self._admin(f'CREATE DATABASE "{name}"{clause}')
                break
            except Exception as error:  # the template is briefly in use while a copy starts
                if "being accessed by other users" not in str(error) or attempt == 19:
                    raise
                time.sleep(0.25)
        self._created.append(name)
        return PostgresDatabase(name)

    def _sessions(self, name: str) -> int:
        connection = _connect()
        try:
            with connection.cursor() as cursor:
                cursor.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = %s", (name,))
                return cursor.fetchone()[0]
        finally:
            connection.close()

    def drop(self, database: PostgresDatabase, *, grace_seconds: float = 15.0) -> None:
        """Drop ``database`` once the processes a test started (code servers shutting down, run
        workers finishing) have let go of it, or after ``grace_seconds`` regardless."""
        ensure_postgres_running()
        deadline = time.monotonic() + grace_seconds
        while self._sessions(database.name) and time.monotonic() < deadline:
            time.sleep(0.25)
        self._admin(f'DROP DATABASE IF EXISTS "{database.name}" WITH (FORCE)')

    def drop_all(self) -> None:
        ensure_postgres_running()
        for name in reversed(self._created):
            self._admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def prepare_template(self) -> PostgresDatabase:
        """A database with Dagster's schema, created by loading ``deploy/dagster.yaml`` on it."""
        from dagster import DagsterInstance

        template = self.create()
        home = Path(tempfile.mkdtemp(prefix="qmtl-pg-template-"))
        try:
            instance_home(home)
            with pytest.MonkeyPatch.context() as patch:
                for name, value in template.env().items():
                    patch.setenv(name, value)
                instance = DagsterInstance.from_config(str(home))
                instance.get_runs(limit=1)
                instance.dispose()
        finally:
            shutil.rmtree(home, ignore_errors=True)
        self.template = template
        return template


def deep_merge(base: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    merged = copy.deepcopy(dict(base))
    for key, value in overrides.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def instance_home(
    home: Path, overrides: Mapping[str, Any] | None = None, *, source: Path = DEPLOY_INSTANCE
) -> Path:
    """Make ``home`` a ``DAGSTER_HOME`` holding ``source`` (default ``deploy/dagster.yaml``);
    ``overrides`` (e.g. :data:`SYNC_LAUNCH`) are merged over it. Returns ``home``."""
    home.mkdir(parents=True, exist_ok=True)
    if overrides:
        config = deep_merge(yaml.safe_load(source.read_text(encoding="utf-8")), overrides)
        # A replaced class gets only the overriding config, never the original's.
        for key, value in overrides.items():
            if isinstance(value, Mapping) and "class" in value:
                config[key] = copy.deepcopy(dict(value))
        (home / "dagster.yaml").write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    else:
        shutil.copyfile(source, home / "dagster.yaml")
    return home


def use_instance_home(monkeypatch: pytest.MonkeyPatch, home: Path, database: PostgresDatabase, password: str = "") -> None:
    """Point ``DAGSTER_HOME`` and the ``DAGSTER_PG_*`` variables at ``home`` and ``database`` (set
    before ``daemon_workspace``: code servers and run workers inherit the environment)."""
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    for name, value in database.env(password).items():
        monkeypatch.setenv(name, value)


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresCluster]:
    try:
        ensure_postgres_running()
    except RuntimeError as error:
        pytest.fail(f"the production-instance tests need the local PostgreSQL: {error}")
    cluster = PostgresCluster()
    try:
        cluster.prepare_template()
        yield cluster
    finally:
        cluster.drop_all()


@pytest.fixture
def postgres_db(postgres: PostgresCluster) -> Iterator[PostgresDatabase]:
    from qmtl_validation_tests.prod.daemons import reap_code_servers

    database = postgres.create(template=postgres.template)
    try:
        yield database
    finally:
        reap_code_servers()
        postgres.drop(database)


__all__ = [
    "DEPLOY_INSTANCE",
    "DEPLOY_ECS_INSTANCE",
    "DEV_INSTANCE",
    "SYNC_LAUNCH",
    "PostgresCluster",
    "PostgresDatabase",
    "deep_merge",
    "ensure_postgres_running",
    "instance_home",
    "pg_ctlcluster",
    "postgres",
    "postgres_db",
    "postgres_is_up",
    "use_instance_home",
    "wait_for_postgres",
]
