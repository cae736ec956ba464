"""A real S3 HTTP API on loopback for tests: moto in server mode, not in-process mocks.

Fixtures. Register them once for the whole session with ``pytest_plugins =
["qmtl_validation_tests.s3_server"]`` in the root ``conftest.py``, or import them into a
package's ``conftest.py`` (each importing conftest then gets its own session server)::

    from qmtl_validation_tests.s3_server import s3_server, s3_bucket  # noqa: F401

    def test_drop_is_listed(s3_bucket):
        s3_bucket.client.put_object(Bucket=s3_bucket.name, Key="runs/x", Body=b"1")
        zone = S3LandingZone(s3_bucket.name, "landing", s3_bucket.client)
        lake = Lake(s3_bucket.uri("lake"), s3_client=s3_bucket.client)

- ``s3_server`` (session scope): one ``ThreadedMotoServer`` on 127.0.0.1 at a free port, started
  on first use and stopped at the end of the session. ``.url`` is the endpoint, ``.env()`` the
  variables a subprocess needs (endpoint, fake credentials, region).
- ``s3_bucket`` (function scope): a fresh, uniquely named empty bucket on that server, with a
  boto3 client; for the duration of the test it also sets the fake credentials, the region and
  ``AWS_ENDPOINT_URL_S3`` in ``os.environ`` (restored afterwards), so code that builds its own
  client or reads ``load_settings()`` reaches the same server.

Outside pytest, ``running_s3_server()`` is a context manager giving the same ``S3Server``.
"""

from __future__ import annotations

import contextlib
import logging
import uuid
from dataclasses import dataclass
from typing import Any, Iterator

import pytest

REGION = "us-east-1"
FAKE_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}


@dataclass(frozen=True)
class S3Server:
    host: str
    port: int
    region: str = REGION

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def env(self) -> dict[str, str]:
        """Environment for code (or a subprocess) that should talk to this server."""
        return {
            **FAKE_CREDENTIALS,
            "AWS_DEFAULT_REGION": self.region,
            "AWS_REGION": self.region,
            "AWS_ENDPOINT_URL_S3": self.url,
        }

    def client(self) -> Any:
        import boto3

        return boto3.session.Session().client(
            "s3",
            endpoint_url=self.url,
            region_name=self.region,
            aws_access_key_id=FAKE_CREDENTIALS["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=FAKE_CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
        )

    def create_bucket(self, name: str | None = None) -> "S3Bucket":
        client = self.client()
        bucket = name or f"test-{uuid.uuid4().hex[:16]}"
        client.create_bucket(Bucket=bucket)
        return S3Bucket(bucket, self, client)


@dataclass(frozen=True)
class S3Bucket:
    name: str
    server: S3Server
    client: Any

    def uri(self, prefix: str = "") -> str:
        """``s3://<bucket>/<prefix>``."""
        return f"s3://{self.name}/{prefix.strip('/')}".rstrip("/")

    def put(self, key: str, body: bytes | str) -> None:
        data = body.encode() if isinstance(body, str) else body
        self.client.put_object(Bucket=self.name, Key=key, Body=data)

    def keys(self, prefix: str = "") -> list[str]:
        paginator = self.client.get_paginator("list_objects_v2")
        return [
            item["Key"]
            for page in paginator.paginate(Bucket=self.name, Prefix=prefix)
            for item in page.get("Contents", ())
        ]


@contextlib.contextmanager
def running_s3_server() -> Iterator[S3Server]:
    """Start moto's S3 server on a free loopback port; stop it on exit."""
    from moto.server import ThreadedMotoServer

    # moto logs every request through werkzeug; tests only care about failures.
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        yield S3Server(host, port)
    finally:
        server.stop()


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    with running_s3_server() as server:
        yield server


@pytest.fixture
def s3_bucket(s3_server: S3Server, monkeypatch: pytest.MonkeyPatch) -> S3Bucket:
    for name, value in s3_server.env().items():
        monkeypatch.setenv(name, value)
    return s3_server.create_bucket()


__all__ = ["S3Server", "S3Bucket", "running_s3_server", "s3_server", "s3_bucket"]
