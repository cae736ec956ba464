"""The landing zone: one interface over a local folder (dev) and an S3 bucket/prefix (prod).

Layout (SPEC §3), identical on disk and on S3::

    runs/<YYYY-MM-DD>/<world_id>/<strategy_id>/<run_id>/{returns,trades}.{parquet,csv}, run.json
    snapshots/<YYYY-MM-DD>/<world_id>/<version>.json   (+ <name>.parquet files it references)
    policies/<world_id>/<policy_version>.yaml
    model_cards/<strategy_id>.yaml

Keys are ``/``-separated and relative to the zone's root (folder or bucket prefix).

Listing is lexicographic by key on both implementations, honours ``start_after`` and is
counted: every S3 ``ListObjectsV2`` page and every local directory scan adds one to
``zone.list_calls`` and records the requested prefix in ``zone.listed_prefixes``, so a test can
prove a sensor lists only its look-back prefixes.

Etags: S3 gives its own (quotes stripped; the MD5 of the content for single-part uploads). The
local zone uses the SHA-256 hex digest of the content, so an identical re-drop has the same etag
on both — what a sensor's ``run_key`` needs to make re-drops no-ops. Digests are cached per
(path, inode, size, mtime_ns); files above ``LOCAL_HASH_LIMIT`` bytes get
``size-mtime:<size>-<mtime_ns>`` instead, so a huge stray file never slows a listing (it is
rejected as oversize when read anyway). Local entries whose name starts with ``.`` are skipped:
producers write ``.name.tmp`` and rename. S3 "folder marker" keys ending in ``/`` are skipped.

The scanning helpers (:func:`find_run_bundles`, :func:`find_snapshots`, :func:`list_policies`,
:func:`list_model_cards`) never raise on a bad key: they return :class:`Rejection` records
(key, reason, code) next to what they found, so one bad drop never stops a listing.
"""

from __future__ import annotations

import abc
import collections
import datetime as dt
import hashlib
import os
import re
import threading
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping

from qmtl_validation.core.policy_store import version_sort_key
from qmtl_validation.core.identifiers import (
    InvalidIdentifierError,
    check_identifier,
    run_partition_key,
    snapshot_partition_key,
)

LOCAL_HASH_LIMIT = 256 * 1024 * 1024
RUN_FILE_NAMES = ("returns.parquet", "returns.csv", "trades.parquet", "trades.csv", "run.json")
MANIFEST_NAME = "run.json"
POLICY_SUFFIXES = (".yaml", ".yml")
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")


@dataclass(frozen=True)
class LandingObject:
    """One object of the zone: key relative to the zone root, size in bytes, etag, UTC mtime."""

    key: str
    size: int
    etag: str
    last_modified: dt.datetime

    @property
    def name(self) -> str:
        return self.key.rsplit("/", 1)[-1]


class LandingKeyError(ValueError):
    """A key that must not be used (absolute, traversal, bad identifier, unexpected shape).

    ``code`` is machine-readable (``absolute_key``, ``path_traversal``, ``bad_key``,
    ``wrong_depth``, ``bad_date``, ``bad_identifier``, ``unknown_file``); ``fields`` holds the
    identifiers that did parse, for the rejection row.
    """

    def __init__(self, key: str, code: str, reason: str, fields: Mapping[str, str] | None = None):
        super().__init__(f"{key!r}: {reason}")
        self.key = key
        self.code = code
        self.reason = reason
        self.fields = dict(fields or {})


class LandingObjectTooLargeError(ValueError):
    """An object above the size a reader accepts."""

    def __init__(self, key: str, size: int, max_bytes: int):
        super().__init__(f"{key}: {size} bytes exceeds the limit of {max_bytes} bytes")
        self.key = key
        self.size = size
        self.max_bytes = max_bytes


# S3 error codes that say "not now" rather than "never": throttling, timeouts, server trouble.
_TRANSIENT_S3_ERROR_CODES = frozenset(
    {
        "RequestTimeout",
        "RequestTimeoutException",
        "PriorRequestNotComplete",
        "SlowDown",
        "Throttling",
        "ThrottlingException",
        "RequestThrottled",
        "TooManyRequestsException",
        "RequestLimitExceeded",
        "BandwidthLimitExceeded",
        "InternalError",
        "ServiceUnavailable",
    }
)

_TRANSIENT_HTTP_STATUSES = frozenset({429, 500, 502, 503, 504})


def is_transient_io_error(error: BaseException) -> bool:
    """Whether reading from the landing zone failed for a reason that is not the drop's own and
    may go away: a timeout, a dropped or refused connection, an unreachable endpoint, a cut-off
    response, S3 throttling or a server error (500, 502, 503, 504).

    Intakes let such errors propagate (the tick fails, the next tick reads the drop again)
    instead of recording a rejection, which would refuse the drop for good. botocore's timeouts
    subclass ``OSError``, so ``except OSError`` alone cannot tell them from bad content.
    """
    if isinstance(error, (ConnectionError, TimeoutError)):  # the builtins: resets, refusals, timeouts
        return True
    from botocore.exceptions import (
        ClientError,
        ConnectionError as BotocoreConnectionError,
        HTTPClientError,
        IncompleteReadError,
    )

    if isinstance(error, (BotocoreConnectionError, HTTPClientError, IncompleteReadError)):
        return True
    if isinstance(error, ClientError):
        code = str(error.response.get("Error", {}).get("Code", ""))
        status = error.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0
        return code in _TRANSIENT_S3_ERROR_CODES or status in _TRANSIENT_HTTP_STATUSES
    return False


@dataclass(frozen=True)
class Rejection:
    """A key a scan refused, with the exact reason. Unpacks as ``(key, reason)``."""

    key: str
    reason: str
    code: str
    kind: str
    fields: Mapping[str, str] = field(default_factory=dict)
    object: LandingObject | None = None

    def __iter__(self) -> Iterator[str]:
        return iter((self.key, self.reason))

    def as_row(self, detected_at: dt.datetime, **extra: Any) -> dict[str, Any]:
        """A row for the ``rejections`` table (``extra`` adds e.g. ``sensor`` or ``conflict``)."""
        row: dict[str, Any] = {
            "key": self.key,
            "kind": self.kind,
            "reason_code": self.code,
            "reason": self.reason,
            "detected_at": detected_at,
            "world_id": self.fields.get("world_id"),
            "strategy_id": self.fields.get("strategy_id"),
            "run_id": self.fields.get("run_id"),
            "version": self.fields.get("version") or self.fields.get("policy_version"),
        }
        if self.object is not None:
            row.update(size=self.object.size, etag=self.object.etag, last_modified=self.object.last_modified)
        row.update(extra)
        return row


def split_key(key: str) -> list[str]:
    """The components of a relative key; raises :class:`LandingKeyError` for unsafe keys."""
    if not isinstance(key, str) or not key:
        raise LandingKeyError(str(key), "bad_key", "empty key")
    if key.startswith(("/", "\\")) or re.match(r"[A-Za-z]:[\\/]", key):
        raise LandingKeyError(key, "absolute_key", "absolute keys are not allowed")
    if "\\" in key:
        raise LandingKeyError(key, "path_traversal", "backslash in key (a path separator on some systems)")
    if any(ord(ch) < 32 for ch in key):
        raise LandingKeyError(key, "bad_key", "control character in key")
    parts = key.split("/")
    for part in parts:
        if part in (".", ".."):
            raise LandingKeyError(key, "path_traversal", f"path traversal: key contains a {part!r} component")
    if "" in parts:
        raise LandingKeyError(key, "bad_key", "empty path component (double or trailing slash)")
    return parts


def _check_prefix(prefix: str) -> str:
    """A listing prefix: like a key, but may be empty and end with ``/``."""
    if prefix:
        split_key(prefix[:-1] if prefix.endswith("/") else prefix)
    return prefix


# ---------------------------------------------------------------------------------------------
# Zones.


class LandingZone(abc.ABC):
    """Where producers drop files. Keys are relative, ``/``-separated."""

    def __init__(self) -> None:
        self.list_calls = 0
        self.listed_prefixes: list[str] = []

    def reset_counters(self) -> None:
        self.list_calls = 0
        self.listed_prefixes = []

    @abc.abstractmethod
    def uri(self, key: str = "") -> str:
        """Human-readable location of ``key`` (a path or an ``s3://`` URI), for messages."""

    @abc.abstractmethod
    def list_objects(self, prefix: str, *, start_after: str | None = None) -> Iterator[LandingObject]:
        """Objects whose key starts with ``prefix`` (and sorts after ``start_after``), by key."""

    @abc.abstractmethod
    def stat(self, key: str) -> LandingObject | None:
        """The object at ``key``, or None."""

    @abc.abstractmethod
    def read_bytes(self, key: str, max_bytes: int) -> bytes:
        """The content of ``key``; ``LandingObjectTooLargeError`` above ``max_bytes``,
        ``FileNotFoundError`` when absent."""

    @abc.abstractmethod
    def put_bytes(self, key: str, data: bytes) -> LandingObject:
        """Write ``data`` at ``key`` (replacing it) as one visible step."""

    def exists(self, key: str) -> bool:
        return self.stat(key) is not None

    def copy(self, source_key: str, target_key: str, *, max_bytes: int = LOCAL_HASH_LIMIT) -> LandingObject:
        """Copy an object (e.g. to ``quarantine/``); the source is left where it is."""
        return self.put_bytes(target_key, self.read_bytes(source_key, max_bytes))


class _DigestCache:
    """Bounded LRU of content digests keyed by file identity, shared by local zones."""

    def __init__(self, capacity: int = 65536):
        self._capacity = capacity
        self._items: collections.OrderedDict[tuple, str] = collections.OrderedDict()
        self._lock = threading.Lock()

    def get(self, identity: tuple) -> str | None:
        with self._lock:
            value = self._items.get(identity)
            if value is not None:
                self._items.move_to_end(identity)
            return value

    def put(self, identity: tuple, digest: str) -> None:
        with self._lock:
            self._items[identity] = digest
            self._items.move_to_end(identity)
            while len(self._items) > self._capacity:
                self._items.popitem(last=False)


_DIGESTS = _DigestCache()


class LocalLandingZone(LandingZone):
    """A landing folder on local disk."""

    def __init__(self, root: str | os.PathLike[str]):
        super().__init__()
        self.root = Path(root).expanduser().resolve()

    def __repr__(self) -> str:
        return f"LocalLandingZone({str(self.root)!r})"

    def uri(self, key: str = "") -> str:
        return str(self.root / key) if key else str(self.root)

    def _path(self, key: str) -> Path:
        path = self.root.joinpath(*split_key(key))
        # A symlink must not lead a reader out of the landing folder.
        real = Path(os.path.realpath(path))
        if real != self.root and self.root not in real.parents:
            raise LandingKeyError(key, "path_traversal", "key resolves outside the landing zone")
        return path

    def _object(self, key: str, path: str, stat: os.stat_result) -> LandingObject:
        return LandingObject(
            key=key,
            size=stat.st_size,
            etag=self._etag(path, stat),
            last_modified=dt.datetime.fromtimestamp(stat.st_mtime_ns / 1e9, tz=dt.timezone.utc),
        )

    @staticmethod
    def _etag(path: str, stat: os.stat_result) -> str:
        if stat.st_size > LOCAL_HASH_LIMIT:
            return f"size-mtime:{stat.st_size}-{stat.st_mtime_ns}"
        identity = (path, stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns)
        digest = _DIGESTS.get(identity)
        if digest is None:
            hasher = hashlib.sha256()
            with open(path, "rb") as handle:
                for block in iter(lambda: handle.read(1 << 20), b""):
                    hasher.update(block)
            digest = hasher.hexdigest()
            _DIGESTS.put(identity, digest)
        return digest

    def list_objects(self, prefix: str, *, start_after: str | None = None) -> Iterator[LandingObject]:
        _check_prefix(prefix)
        self.listed_prefixes.append(prefix)
        folder_key, _, name_prefix = prefix.rpartition("/")
        folder_key = folder_key + "/" if folder_key else ""
        yield from self._walk(folder_key, name_prefix, start_after)

    def _walk(self, folder_key: str, name_prefix: str, start_after: str | None) -> Iterator[LandingObject]:
        folder = self.root / folder_key if folder_key else self.root
        self.list_calls += 1
        try:
            with os.scandir(folder) as scan:
                entries = [e for e in scan if e.name.startswith(name_prefix) and not e.name.startswith(".")]
        except (FileNotFoundError, NotADirectoryError):
            return
        # Sort as S3 does (by full key): a folder sorts as "name/", so "x-1" comes before "x/…".
        keyed = []
        for entry in entries:
            is_dir = entry.is_dir(follow_symlinks=False)
            keyed.append((folder_key + entry.name + ("/" if is_dir else ""), is_dir, entry))
        keyed.sort(key=lambda item: item[0])
        for key, is_dir, entry in keyed:
            if is_dir:
                # Skip a whole folder when every key under it sorts before start_after.
                if start_after is not None and key < start_after and not start_after.startswith(key):
                    continue
                yield from self._walk(key, "", start_after)
            elif entry.is_file(follow_symlinks=False):
                if start_after is not None and key <= start_after:
                    continue
                try:
                    yield self._object(key, entry.path, entry.stat(follow_symlinks=False))
                except FileNotFoundError:  # removed while listing
                    continue

    def stat(self, key: str) -> LandingObject | None:
        path = self._path(key)
        try:
            stat = path.stat()
        except (FileNotFoundError, NotADirectoryError):
            return None
        if not path.is_file():
            return None
        return self._object(key, str(path), stat)

    def read_bytes(self, key: str, max_bytes: int) -> bytes:
        path = self._path(key)
        try:
            size = path.stat().st_size
            if size > max_bytes:
                raise LandingObjectTooLargeError(key, size, max_bytes)
            with open(path, "rb") as handle:
                data = handle.read(max_bytes + 1)
        except (FileNotFoundError, NotADirectoryError):
            raise FileNotFoundError(f"no landing object {self.uri(key)}") from None
        if len(data) > max_bytes:  # grew while being read
            raise LandingObjectTooLargeError(key, len(data), max_bytes)
        return data

    def put_bytes(self, key: str, data: bytes) -> LandingObject:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        temp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
        try:
            with open(temp, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temp, path)
        finally:
            if temp.exists():
                temp.unlink()
        return self._object(key, str(path), path.stat())


class S3LandingZone(LandingZone):
    """A landing zone under ``s3://<bucket>/<prefix>`` read with a boto3 client (reused).

    ``page_size`` is the ``MaxKeys`` of each list request (S3 caps it at 1000).
    """

    def __init__(self, bucket: str, prefix: str = "", client: Any = None, *, page_size: int = 1000):
        super().__init__()
        self.page_size = page_size
        if client is None:
            from qmtl_validation.warehouse.lake import make_s3_client

            client = make_s3_client()
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self._base = self.prefix + "/" if self.prefix else ""
        self.client = client

    def __repr__(self) -> str:
        return f"S3LandingZone({self.uri()!r})"

    def uri(self, key: str = "") -> str:
        return f"s3://{self.bucket}/{self._base}{key}"

    def _full(self, key: str) -> str:
        split_key(key)
        return self._base + key

    def _object(self, key: str, size: int, etag: str, modified: dt.datetime) -> LandingObject:
        if modified.tzinfo is None:
            modified = modified.replace(tzinfo=dt.timezone.utc)
        return LandingObject(key, int(size), str(etag).strip('"'), modified.astimezone(dt.timezone.utc))

    def list_objects(self, prefix: str, *, start_after: str | None = None) -> Iterator[LandingObject]:
        _check_prefix(prefix)
        self.listed_prefixes.append(prefix)
        request: dict[str, Any] = {
            "Bucket": self.bucket, "Prefix": self._base + prefix, "MaxKeys": self.page_size,
        }
        if start_after:
            request["StartAfter"] = self._base + start_after
        while True:
            self.list_calls += 1
            page = self.client.list_objects_v2(**request)
            for item in page.get("Contents", ()):
                full = item["Key"]
                if full.endswith("/"):  # a console "folder" marker, not a drop
                    continue
                yield self._object(full[len(self._base):], item["Size"], item["ETag"], item["LastModified"])
            if not page.get("IsTruncated"):
                return
            request.pop("StartAfter", None)
            request["ContinuationToken"] = page["NextContinuationToken"]

    def stat(self, key: str) -> LandingObject | None:
        from botocore.exceptions import ClientError

        try:
            head = self.client.head_object(Bucket=self.bucket, Key=self._full(key))
        except ClientError as exc:
            if exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") == 404:
                return None
            raise
        return self._object(key, head["ContentLength"], head["ETag"], head["LastModified"])

    def read_bytes(self, key: str, max_bytes: int) -> bytes:
        from botocore.exceptions import ClientError

        try:
            response = self.client.get_object(Bucket=self.bucket, Key=self._full(key))
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code")
            if code in ("NoSuchKey", "404") or exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") == 404:
                raise FileNotFoundError(f"no landing object {self.uri(key)}") from None
            raise
        body = response["Body"]
        try:
            size = int(response.get("ContentLength", 0))
            if size > max_bytes:
                raise LandingObjectTooLargeError(key, size, max_bytes)
            data = body.read(max_bytes + 1)
        finally:
            body.close()
        if len(data) > max_bytes:
            raise LandingObjectTooLargeError(key, len(data), max_bytes)
        return data

    def put_bytes(self, key: str, data: bytes) -> LandingObject:
        full = self._full(key)
        response = self.client.put_object(Bucket=self.bucket, Key=full, Body=data)
        return self._object(key, len(data), response["ETag"], dt.datetime.now(dt.timezone.utc))

    def copy(self, source_key: str, target_key: str, *, max_bytes: int = LOCAL_HASH_LIMIT) -> LandingObject:
        self.client.copy_object(
            Bucket=self.bucket,
            Key=self._full(target_key),
            CopySource={"Bucket": self.bucket, "Key": self._full(source_key)},
        )
        copied = self.stat(target_key)
        assert copied is not None
        return copied


def landing_zone_from_root(
    root: str | os.PathLike[str],
    *,
    client: Any = None,
    endpoint_url: str | None = None,
    region: str | None = None,
) -> LandingZone:
    """A zone for ``root``: ``s3://bucket/prefix`` or a local folder."""
    text = os.fspath(root)
    if text.startswith("s3://"):
        from qmtl_validation.warehouse.lake import make_s3_client, split_s3_uri

        bucket, prefix = split_s3_uri(text)
        return S3LandingZone(bucket, prefix, client or make_s3_client(endpoint_url, region))
    return LocalLandingZone(text)


# ---------------------------------------------------------------------------------------------
# Keys of the layout.


def _as_date(value: dt.date | dt.datetime | str) -> dt.date:
    if isinstance(value, dt.datetime):
        return (value.astimezone(dt.timezone.utc) if value.tzinfo else value).date()
    if isinstance(value, dt.date):
        return value
    return dt.date.fromisoformat(str(value))


def date_prefixes(kind: str, today: dt.date | dt.datetime | str, lookback_days: int) -> list[str]:
    """``<kind>/<date>/`` for ``today`` and the ``lookback_days`` days before it, oldest first.

    An aware ``today`` datetime is taken in UTC (drop dates are UTC dates).
    """
    if kind not in ("runs", "snapshots"):
        raise ValueError(f"kind {kind!r}: expected 'runs' or 'snapshots'")
    if lookback_days < 0:
        raise ValueError(f"lookback_days must be >= 0, got {lookback_days}")
    day = _as_date(today)
    return [
        f"{kind}/{(day - dt.timedelta(days=offset)).isoformat()}/"
        for offset in range(lookback_days, -1, -1)
    ]


def _check_date(key: str, text: str, fields: dict[str, str]) -> str:
    try:
        if not _DATE.fullmatch(text):
            raise ValueError
        dt.date.fromisoformat(text)
    except ValueError:
        raise LandingKeyError(key, "bad_date", f"date folder {text!r} is not YYYY-MM-DD", fields) from None
    fields["date"] = text
    return text


def _check_id(key: str, value: str, name: str, fields: dict[str, str]) -> str:
    try:
        check_identifier(value, name)
    except InvalidIdentifierError as exc:
        raise LandingKeyError(key, "bad_identifier", str(exc), fields) from None
    fields[name] = value
    return value


@dataclass(frozen=True)
class RunFileKey:
    date: str
    world_id: str
    strategy_id: str
    run_id: str
    file_name: str

    @property
    def bundle_prefix(self) -> str:
        return f"runs/{self.date}/{self.world_id}/{self.strategy_id}/{self.run_id}/"


def parse_run_key(key: str) -> RunFileKey:
    """``runs/<date>/<world>/<strategy>/<run>/<file>``; raises :class:`LandingKeyError`."""
    parts = split_key(key)
    fields: dict[str, str] = {}
    if parts[0] != "runs" or len(parts) != 6:
        raise LandingKeyError(
            key, "wrong_depth",
            "expected runs/<YYYY-MM-DD>/<world_id>/<strategy_id>/<run_id>/<file>",
        )
    _check_date(key, parts[1], fields)
    _check_id(key, parts[2], "world_id", fields)
    _check_id(key, parts[3], "strategy_id", fields)
    _check_id(key, parts[4], "run_id", fields)
    if parts[5] not in RUN_FILE_NAMES:
        raise LandingKeyError(
            key, "unknown_file",
            f"unexpected file {parts[5]!r} in a run bundle (expected one of {', '.join(RUN_FILE_NAMES)})",
            fields,
        )
    return RunFileKey(parts[1], parts[2], parts[3], parts[4], parts[5])


@dataclass(frozen=True)
class SnapshotFileKey:
    date: str
    world_id: str
    file_name: str
    version: str | None  # set for the snapshot JSON, None for a parquet attachment


def parse_snapshot_key(key: str) -> SnapshotFileKey:
    """``snapshots/<date>/<world>/<version>.json`` or a ``<name>.parquet`` beside it."""
    parts = split_key(key)
    fields: dict[str, str] = {}
    if parts[0] != "snapshots" or len(parts) != 4:
        raise LandingKeyError(key, "wrong_depth", "expected snapshots/<YYYY-MM-DD>/<world_id>/<version>.json")
    _check_date(key, parts[1], fields)
    _check_id(key, parts[2], "world_id", fields)
    name = parts[3]
    if name.endswith(".json"):
        version = _check_id(key, name[: -len(".json")], "version", fields)
        return SnapshotFileKey(parts[1], parts[2], name, version)
    if name.endswith(".parquet"):
        _check_id(key, name[: -len(".parquet")], "file_name", fields)
        return SnapshotFileKey(parts[1], parts[2], name, None)
    raise LandingKeyError(
        key, "unknown_file", f"unexpected file {name!r} (expected <version>.json or <name>.parquet)", fields
    )


@dataclass(frozen=True)
class PolicyFileKey:
    world_id: str
    policy_version: str


def parse_policy_key(key: str) -> PolicyFileKey:
    """``policies/<world>/<policy_version>.yaml`` (``.yml`` accepted)."""
    parts = split_key(key)
    fields: dict[str, str] = {}
    if parts[0] != "policies" or len(parts) != 3:
        raise LandingKeyError(key, "wrong_depth", "expected policies/<world_id>/<policy_version>.yaml")
    _check_id(key, parts[1], "world_id", fields)
    name = parts[2]
    suffix = next((s for s in POLICY_SUFFIXES if name.endswith(s)), None)
    if suffix is None:
        raise LandingKeyError(key, "unknown_file", f"unexpected file {name!r} (expected <policy_version>.yaml)", fields)
    version = _check_id(key, name[: -len(suffix)], "policy_version", fields)
    return PolicyFileKey(parts[1], version)


def parse_model_card_key(key: str) -> str:
    """``model_cards/<strategy_id>.yaml`` → the strategy id."""
    parts = split_key(key)
    fields: dict[str, str] = {}
    if parts[0] != "model_cards" or len(parts) != 2:
        raise LandingKeyError(key, "wrong_depth", "expected model_cards/<strategy_id>.yaml")
    name = parts[1]
    suffix = next((s for s in POLICY_SUFFIXES if name.endswith(s)), None)
    if suffix is None:
        raise LandingKeyError(key, "unknown_file", f"unexpected file {name!r} (expected <strategy_id>.yaml)", fields)
    return _check_id(key, name[: -len(suffix)], "strategy_id", fields)


def _rejection(error: LandingKeyError, kind: str, obj: LandingObject | None) -> Rejection:
    return Rejection(error.key, error.reason, error.code, kind, error.fields, obj)


# ---------------------------------------------------------------------------------------------
# Scans used by the sensors.


@dataclass(frozen=True)
class RunBundle:
    """The objects under ``runs/<date>/<world>/<strategy>/<run>/``; complete once run.json exists."""

    date: str
    world_id: str
    strategy_id: str
    run_id: str
    objects: Mapping[str, LandingObject]

    @property
    def prefix(self) -> str:
        return f"runs/{self.date}/{self.world_id}/{self.strategy_id}/{self.run_id}/"

    @property
    def complete(self) -> bool:
        return MANIFEST_NAME in self.objects

    @property
    def partition_key(self) -> str:
        return run_partition_key(self.world_id, self.strategy_id, self.run_id)

    def _key_of(self, stem: str) -> str | None:
        for name in (f"{stem}.parquet", f"{stem}.csv"):
            if name in self.objects:
                return self.objects[name].key
        return None

    @property
    def manifest_key(self) -> str | None:
        return self.objects[MANIFEST_NAME].key if self.complete else None

    @property
    def returns_key(self) -> str | None:
        return self._key_of("returns")

    @property
    def trades_key(self) -> str | None:
        return self._key_of("trades")

    @property
    def content_token(self) -> str:
        """Hash of the bundle's (file name, etag, size) triples: equal iff the same content was dropped."""
        digest = hashlib.sha256()
        for name in sorted(self.objects):
            obj = self.objects[name]
            digest.update(f"{name}\0{obj.etag}\0{obj.size}\n".encode())
        return digest.hexdigest()[:32]


@dataclass(frozen=True)
class RunBundleScan:
    bundles: list[RunBundle]  # complete and well-formed, oldest date first
    pending: list[RunBundle]  # run.json not there yet
    rejections: list[Rejection]
    prefixes: list[str]


def _bundle_problems(bundle: RunBundle) -> list[Rejection]:
    fields = {"world_id": bundle.world_id, "strategy_id": bundle.strategy_id, "run_id": bundle.run_id}
    manifest = bundle.objects.get(MANIFEST_NAME)
    problems = []
    for stem in ("returns", "trades"):
        if f"{stem}.parquet" in bundle.objects and f"{stem}.csv" in bundle.objects:
            problems.append(Rejection(
                bundle.prefix, f"both {stem}.parquet and {stem}.csv present: ambiguous {stem}",
                f"ambiguous_{stem}", "run_bundle", fields, manifest,
            ))
    if bundle.returns_key is None:
        problems.append(Rejection(
            bundle.prefix, "run.json present but no returns.parquet or returns.csv",
            "missing_returns", "run_bundle", fields, manifest,
        ))
    return problems


def find_run_bundles(
    zone: LandingZone, today: dt.date | dt.datetime | str, lookback_days: int
) -> RunBundleScan:
    """Group the look-back's run objects into bundles; only the look-back prefixes are listed.

    A bundle is reported complete only when its run.json exists; a complete bundle without
    returns, or with both a Parquet and a CSV of the same file, is rejected as a whole. Keys of
    the wrong shape are rejected one by one and never stop the scan.
    """
    prefixes = date_prefixes("runs", today, lookback_days)
    grouped: dict[tuple[str, str, str, str], dict[str, LandingObject]] = {}
    rejections: list[Rejection] = []
    for prefix in prefixes:
        for obj in zone.list_objects(prefix):
            try:
                parsed = parse_run_key(obj.key)
            except LandingKeyError as error:
                rejections.append(_rejection(error, "run_bundle", obj))
                continue
            ident = (parsed.date, parsed.world_id, parsed.strategy_id, parsed.run_id)
            grouped.setdefault(ident, {})[parsed.file_name] = obj
    bundles, pending = [], []
    for (date, world, strategy, run), objects in grouped.items():
        bundle = RunBundle(date, world, strategy, run, dict(objects))
        if not bundle.complete:
            pending.append(bundle)
            continue
        problems = _bundle_problems(bundle)
        if problems:
            rejections.extend(problems)
        else:
            bundles.append(bundle)
    return RunBundleScan(bundles, pending, rejections, prefixes)


@dataclass(frozen=True)
class SnapshotDrop:
    """One snapshot JSON, with the Parquet files beside it (name → object) it may reference."""

    date: str
    world_id: str
    version: str
    object: LandingObject
    attachments: Mapping[str, LandingObject]

    @property
    def key(self) -> str:
        return self.object.key

    @property
    def partition_key(self) -> str:
        return snapshot_partition_key(self.world_id, self.version)


@dataclass(frozen=True)
class SnapshotScan:
    snapshots: list[SnapshotDrop]  # oldest date first, then by key
    rejections: list[Rejection]
    prefixes: list[str]


def find_snapshots(
    zone: LandingZone, today: dt.date | dt.datetime | str, lookback_days: int
) -> SnapshotScan:
    """The look-back's snapshot JSONs (and their Parquet neighbours); bad keys become rejections."""
    prefixes = date_prefixes("snapshots", today, lookback_days)
    manifests: list[tuple[SnapshotFileKey, LandingObject]] = []
    attachments: dict[tuple[str, str], dict[str, LandingObject]] = {}
    rejections: list[Rejection] = []
    for prefix in prefixes:
        for obj in zone.list_objects(prefix):
            try:
                parsed = parse_snapshot_key(obj.key)
            except LandingKeyError as error:
                rejections.append(_rejection(error, "snapshot", obj))
                continue
            if parsed.version is None:
                attachments.setdefault((parsed.date, parsed.world_id), {})[parsed.file_name] = obj
            else:
                manifests.append((parsed, obj))
    snapshots = [
        SnapshotDrop(p.date, p.world_id, p.version or "", obj, attachments.get((p.date, p.world_id), {}))
        for p, obj in manifests
    ]
    return SnapshotScan(snapshots, rejections, prefixes)


@dataclass(frozen=True)
class PolicyFile:
    world_id: str
    policy_version: str
    object: LandingObject

    @property
    def key(self) -> str:
        return self.object.key


@dataclass(frozen=True)
class PolicyScan:
    policies: list[PolicyFile]  # by world, then natural version order
    rejections: list[Rejection]

    def current(self) -> dict[str, PolicyFile]:
        """Each world's highest policy version (SPEC §3: the highest version is current)."""
        latest: dict[str, PolicyFile] = {}
        for policy in self.policies:
            held = latest.get(policy.world_id)
            if held is None or version_sort_key(policy.policy_version) > version_sort_key(held.policy_version):
                latest[policy.world_id] = policy
        return latest

    def for_world(self, world_id: str) -> list[PolicyFile]:
        return [p for p in self.policies if p.world_id == world_id]


def list_policies(zone: LandingZone, world_id: str | None = None) -> PolicyScan:
    """Every ``policies/<world>/<version>.yaml`` (of one world when given)."""
    prefix = "policies/" + (check_identifier(world_id, "world_id") + "/" if world_id else "")
    found, rejections = [], []
    for obj in zone.list_objects(prefix):
        try:
            parsed = parse_policy_key(obj.key)
        except LandingKeyError as error:
            rejections.append(_rejection(error, "policy", obj))
            continue
        found.append(PolicyFile(parsed.world_id, parsed.policy_version, obj))
    found.sort(key=lambda p: (p.world_id, version_sort_key(p.policy_version)))
    return PolicyScan(found, rejections)


def list_model_cards(zone: LandingZone) -> tuple[dict[str, LandingObject], list[Rejection]]:
    """``model_cards/<strategy_id>.yaml`` objects by strategy id, and rejected keys."""
    cards: dict[str, LandingObject] = {}
    rejections = []
    for obj in zone.list_objects("model_cards/"):
        try:
            cards[parse_model_card_key(obj.key)] = obj
        except LandingKeyError as error:
            rejections.append(_rejection(error, "model_card", obj))
    return cards, rejections


def iter_rejection_rows(
    rejections: Iterable[Rejection], detected_at: dt.datetime, **extra: Any
) -> list[dict[str, Any]]:
    """``rejections`` table rows for a batch of rejections."""
    return [r.as_row(detected_at, **extra) for r in rejections]
