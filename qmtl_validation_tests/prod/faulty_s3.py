"""A fault-injecting HTTP proxy in front of the moto S3 server, for tests of S3 failures.

Every request is forwarded unchanged (headers included, so signatures and the Host header are
what the client signed) to the upstream endpoint and the answer is sent back, unless a
:class:`Fault` matches it. Faults are switched on and off while a client is in the middle of its
work (a sensor tick in a code-server process, a run), which is the point: real S3 fails *during*
a tick, not before it.

Actions:

- ``"reset"``: close the connection without an answer (a dropped connection; botocore retries it,
  then raises ``ConnectionClosedError``);
- ``"503"`` (any status code): an S3 error document with that status (``SlowDown`` for 503,
  ``InternalError`` otherwise), as S3 answers under load;
- ``"stall"``: hold the request for ``stall_seconds``, then close the connection unanswered
  (a hung endpoint);
- ``"lost_reply"``: forward the request (S3 carries it out) but close the connection instead of
  answering — the write happened, the client cannot know;
- ``"hold"``: keep the request waiting until :meth:`FaultyS3Proxy.release`, then forward it (a
  barrier: several clients held at the same write are let go at once).

``proxy.requests`` records ``(method, path, action)`` of every request and ``proxy.responses``
``(method, path, status)`` of every answer forwarded, so a test can prove a fault really hit.
"""

from __future__ import annotations

import contextlib
import http.client
import socket
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Iterator
from urllib.parse import unquote, urlparse

_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "proxy-connection"}


@dataclass
class Fault:
    """Fail requests whose method is ``method`` (any if None) and whose URL-decoded path contains
    ``path`` (any if None), ``times`` times (forever if None)."""

    action: str
    method: str | None = None
    path: str | None = None
    times: int | None = None
    stall_seconds: float = 2.0
    hits: int = 0

    def matches(self, method: str, path: str) -> bool:
        if self.times is not None and self.hits >= self.times:
            return False
        return (self.method is None or self.method == method) and (self.path is None or self.path in unquote(path))


class FaultyS3Proxy:
    def __init__(self, upstream_url: str):
        parsed = urlparse(upstream_url)
        self.upstream_host = parsed.hostname or "127.0.0.1"
        self.upstream_port = parsed.port or 80
        self.faults: list[Fault] = []
        self.requests: list[tuple[str, str, str]] = []
        self.responses: list[tuple[str, str, int]] = []
        self.held: set[str] = set()  # AWS SDK invocation ids of held calls (retries share one)
        self._released = threading.Event()
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        assert self._server is not None, "proxy not started"
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def fail(self, action: str, *, method: str | None = None, path: str | None = None,
             times: int | None = None, stall_seconds: float = 2.0) -> Fault:
        fault = Fault(action, method, path, times, stall_seconds)
        with self._lock:
            self.faults.append(fault)
        return fault

    def heal(self) -> None:
        with self._lock:
            self.faults.clear()

    def release(self) -> None:
        """Let every held request through (and clear the faults)."""
        self.heal()
        self._released.set()

    def wait_for_held(self, count: int, timeout: float) -> None:
        """Wait until ``count`` distinct API calls are held (a client's retries count once)."""
        deadline = time.monotonic() + timeout
        while len(self.held) < count:
            if time.monotonic() > deadline:
                raise AssertionError(f"only {len(self.held)} of {count} calls reached the hold")
            time.sleep(0.05)

    def statuses(self, method: str, path: str) -> list[int]:
        with self._lock:
            return [status for m, p, status in self.responses if m == method and path in unquote(p)]

    def hits(self, action: str | None = None) -> int:
        with self._lock:
            return sum(1 for _, _, done in self.requests if done != "pass" and (action is None or done == action))

    def _decide(self, method: str, path: str) -> Fault | None:
        with self._lock:
            for fault in self.faults:
                if fault.matches(method, path):
                    fault.hits += 1
                    self.requests.append((method, path, fault.action))
                    return fault
            self.requests.append((method, path, "pass"))
            return None

    def start(self) -> "FaultyS3Proxy":
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:  # quiet
                pass

            def _body(self) -> bytes:
                if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
                    chunks = []
                    while True:
                        size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                        if size == 0:
                            while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                                pass
                            return b"".join(chunks)
                        chunks.append(self.rfile.read(size))
                        self.rfile.readline()
                length = int(self.headers.get("Content-Length") or 0)
                return self.rfile.read(length) if length else b""

            def _handle(self) -> None:
                body = self._body()
                fault = proxy._decide(self.command, self.path)
                if fault is not None and fault.action == "hold":
                    with proxy._lock:
                        proxy.held.add(self.headers.get("amz-sdk-invocation-id") or str(id(self)))
                    proxy._released.wait(timeout=600)
                    fault = None
                if fault is not None and fault.action != "lost_reply":
                    self._fail(fault)
                    return
                headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP}
                if body or self.command in ("PUT", "POST"):
                    headers["Content-Length"] = str(len(body))
                upstream = http.client.HTTPConnection(proxy.upstream_host, proxy.upstream_port, timeout=60)
                try:
                    upstream.request(self.command, self.path, body=body or None, headers=headers)
                    response = upstream.getresponse()
                    data = response.read()
                    with proxy._lock:
                        proxy.responses.append((self.command, self.path, response.status))
                    if fault is not None:  # lost_reply: done upstream, never answered
                        self._drop()
                        return
                    self.send_response_only(response.status, response.reason)
                    for key, value in response.getheaders():
                        if key.lower() not in _HOP_BY_HOP and key.lower() != "content-length":
                            self.send_header(key, value)
                    if self.command == "HEAD":
                        self.send_header("Content-Length", response.getheader("Content-Length") or "0")
                    else:
                        self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    if self.command != "HEAD":
                        self.wfile.write(data)
                finally:
                    upstream.close()

            def _fail(self, fault: Fault) -> None:
                if fault.action == "reset":
                    self._drop()
                    return
                if fault.action == "stall":
                    time.sleep(fault.stall_seconds)
                    self._drop()
                    return
                status = int(fault.action)
                code = "SlowDown" if status == 503 else "InternalError"
                document = (
                    f'<?xml version="1.0" encoding="UTF-8"?><Error><Code>{code}</Code>'
                    f"<Message>injected fault</Message><RequestId>faulty-s3</RequestId></Error>"
                ).encode()
                self.send_response_only(status)
                self.send_header("Content-Type", "application/xml")
                self.send_header("Content-Length", str(len(document) if self.command != "HEAD" else 0))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(document)

            def _drop(self) -> None:
                self.close_connection = True
                with contextlib.suppress(OSError):
                    self.connection.shutdown(socket.SHUT_RDWR)

            do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = _handle

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="faulty-s3", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


@contextlib.contextmanager
def faulty_s3(upstream_url: str) -> Iterator[FaultyS3Proxy]:
    proxy = FaultyS3Proxy(upstream_url).start()
    try:
        yield proxy
    finally:
        proxy.stop()
