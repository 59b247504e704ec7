"""The WORM object store: where sealed records and signed checkpoints become evidence.

Two implementations of one `ObjectStore` protocol:

* `S3ObjectStore` — S3 (or MinIO, Ceph RGW) with Object Lock. Every object is written with a
  conditional create (`If-None-Match: *`), a retention date and a SHA-256 checksum.
* `LocalWormStore` — a directory for single-node installs: create-if-absent via `os.link`,
  read-only files, retain-until dates in sidecar files written before the object is published.

Writes never overwrite, so the caller can derive keys from the data's own identity and a replay
after a crash rewrites nothing. Errors: `ObjectNotFound`, `RetentionLocked`, `WormNotSupported`
are final; `ObjectStoreUnavailable` is transient and the caller retries with backoff.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import logging
import os
import stat
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, cast, runtime_checkable

import boto3
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    FlexibleChecksumError,
    HTTPClientError,
)
from botocore.exceptions import ConnectionError as BotoConnectionError

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_s3.literals import BucketLocationConstraintType
    from mypy_boto3_s3.type_defs import HeadObjectOutputTypeDef

__all__ = [
    "LocalWormStore",
    "ObjectNotFound",
    "ObjectStore",
    "ObjectStoreError",
    "ObjectStoreUnavailable",
    "Retention",
    "RetentionLocked",
    "S3ObjectStore",
    "WormNotSupported",
    "create_worm_bucket",
]

logger = logging.getLogger(__name__)


class ObjectStoreError(Exception):
    """The object store refused or failed an operation; not worth retrying as is."""


class ObjectNotFound(ObjectStoreError):
    """No object with that key."""


class RetentionLocked(ObjectStoreError):
    """A delete was refused because the object is under retention (or legal hold)."""


class WormNotSupported(ObjectStoreError):
    """WORM storage was required but the target cannot enforce retention."""


class ObjectStoreUnavailable(ObjectStoreError):
    """Transient: network error, timeout, 5xx, throttling, full disk. Retry with backoff."""


_MODES = frozenset({"COMPLIANCE", "GOVERNANCE"})


@dataclass(frozen=True)
class Retention:
    """How long each new object is protected. COMPLIANCE cannot be shortened by anyone, not even
    the account root; GOVERNANCE can be bypassed by principals holding a special permission."""

    mode: str = "COMPLIANCE"
    days: int = 365

    def __post_init__(self) -> None:
        if self.mode not in _MODES:
            raise ValueError(f"retention mode must be COMPLIANCE or GOVERNANCE, not {self.mode!r}")
        if self.days < 1:
            raise ValueError(f"retention must be at least 1 day, not {self.days}")

    def until(self, now: datetime) -> datetime:
        return now + timedelta(days=self.days)

    def __str__(self) -> str:
        return f"{self.mode} {self.days}d"


@runtime_checkable
class ObjectStore(Protocol):
    @property
    def put_concurrency(self) -> int:
        """How many puts a caller with many small objects should keep in flight at once: on S3 a
        put is a network round trip, in a local directory a few system calls."""
        ...

    def put_if_absent(self, key: str, data: bytes) -> bool:
        """Create the object (with retention, if configured). True if this call created it; False
        if an object with that key already exists — possibly written by an earlier attempt of
        this same call whose reply was lost. Never overwrites."""
        ...

    def get(self, key: str) -> bytes:
        """The whole object. Raises ObjectNotFound."""
        ...

    def get_range(self, key: str, start: int, length: int) -> bytes:
        """Up to `length` bytes from offset `start`; shorter (possibly empty) where the object
        ends first, like a file read. Raises ObjectNotFound."""
        ...

    def size(self, key: str) -> int:
        """Length in bytes. Raises ObjectNotFound."""
        ...

    def list_keys(self, prefix: str = "", start_after: str = "") -> Iterator[str]:
        """Keys starting with `prefix` and sorting after `start_after`, in lexicographic
        (UTF-8 byte) order, fetched lazily."""
        ...

    def delete(self, key: str) -> None:
        """Really delete the object. Raises RetentionLocked while it is retained."""
        ...

    def retention_of(self, key: str) -> datetime | None:
        """The retain-until date (UTC), or None when the object is not retained."""
        ...

    def describe(self) -> str:
        """Where and how objects are kept, for logs and `blackbox dev` output."""
        ...


def _utc_now() -> datetime:
    return datetime.now(UTC)


def _check_range(start: int, length: int) -> None:
    if start < 0 or length < 0:
        raise ValueError(f"byte range must not be negative (start={start}, length={length})")


# --------------------------------------------------------------------------------------------
# S3 with Object Lock
# --------------------------------------------------------------------------------------------

_NOT_FOUND_CODES = frozenset({"NoSuchKey", "NotFound", "404", "NoSuchVersion"})
_TRANSIENT_CODES = frozenset(
    {
        "SlowDown",
        "Throttling",
        "ThrottlingException",
        "RequestThrottled",
        "RequestTimeout",
        "ServiceUnavailable",
        "InternalError",
        # Two conditional writes of one key racing: S3 asks the loser to retry, and the retry
        # then answers 412 (exists) or succeeds.
        "ConditionalRequestConflict",
        # The body was damaged on the way in; sending it again is the remedy.
        "BadDigest",
        "XAmzContentSHA256Mismatch",
    }
)

# Standard mode retries throttling, 5xx and connection errors with jittered backoff; what is
# still failing after that surfaces as ObjectStoreUnavailable for the caller's own backoff.
_S3_CONFIG = Config(
    retries={"mode": "standard", "total_max_attempts": 5},
    connect_timeout=5,
    read_timeout=60,
    # The pipeline calls one store from many worker threads; the default pool of 10 would make
    # them queue for connections.
    max_pool_connections=32,
    # Explicit rather than inherited from AWS_* variables or ~/.aws/config: full-object GETs
    # must always be checked against the checksum stored at upload.
    request_checksum_calculation="when_supported",
    response_checksum_validation="when_supported",
)


def _error_code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _status(exc: ClientError) -> int:
    return int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0))


def _translate(exc: Exception, what: str) -> ObjectStoreError:
    """Map a botocore failure to our error types; `what` names the operation and object."""
    if isinstance(exc, FlexibleChecksumError):
        # Not transient: an object whose bytes do not match its stored checksum stays that way.
        return ObjectStoreError(f"{what}: checksum mismatch, object content is corrupt ({exc})")
    if isinstance(exc, BotoConnectionError | HTTPClientError):
        return ObjectStoreUnavailable(f"{what}: {exc}")
    if isinstance(exc, ClientError):
        code, status = _error_code(exc), _status(exc)
        if code in _NOT_FOUND_CODES:
            return ObjectNotFound(what)
        if code in _TRANSIENT_CODES or status >= 500 or status == 429:
            return ObjectStoreUnavailable(f"{what}: {code or status} {exc}")
        return ObjectStoreError(f"{what}: {code or status} {exc}")
    if isinstance(exc, BotoCoreError):
        return ObjectStoreError(f"{what}: {exc}")
    raise TypeError(f"not a botocore error: {exc!r}")


def create_worm_bucket(client: S3Client, bucket: str) -> None:
    """Create a bucket with Object Lock enabled (which also turns on versioning). Object Lock
    can only be switched on at creation on many S3-compatible stores, so buckets for evidence
    must start this way. An existing bucket of ours is left as it is."""
    region = client.meta.region_name
    try:
        if region and region != "us-east-1":
            location = cast("BucketLocationConstraintType", region)
            client.create_bucket(
                Bucket=bucket,
                ObjectLockEnabledForBucket=True,
                CreateBucketConfiguration={"LocationConstraint": location},
            )
        else:
            client.create_bucket(Bucket=bucket, ObjectLockEnabledForBucket=True)
    except ClientError as exc:
        if _error_code(exc) != "BucketAlreadyOwnedByYou":
            raise _translate(exc, f"create bucket {bucket}") from exc
        logger.info("bucket %s already exists; S3ObjectStore checks its Object Lock", bucket)
    except BotoCoreError as exc:
        raise _translate(exc, f"create bucket {bucket}") from exc


class S3ObjectStore:
    """S3 with Object Lock. Thread-safe: it holds one boto3 client (thread-safe) and no other
    mutable state.

    Keys are relative to `prefix`. Construction checks the bucket: with `require_worm` a bucket
    without Object Lock is refused (WormNotSupported); without it, such a bucket is used with no
    retention at all, which is only for development.
    """

    # A ledger appending one archive object writes two small objects per 256 records; one at a
    # time, at tens of milliseconds per PUT, it would fall behind a 20,000 events/s stream.
    put_concurrency = 16  # within _S3_CONFIG's connection pool

    def __init__(
        self,
        bucket: str,
        *,
        prefix: str = "",
        endpoint_url: str | None = None,
        region: str = "us-east-1",
        access_key_id: str | None = None,
        secret_access_key: str | None = None,
        retention: Retention | None = Retention("COMPLIANCE", 365),
        require_worm: bool = True,
        client: S3Client | None = None,
        page_size: int = 1000,
        clock: Callable[[], datetime] = _utc_now,
    ) -> None:
        if not bucket:
            raise ValueError("bucket name is empty")
        if not 1 <= page_size <= 1000:
            raise ValueError(f"page_size must be 1..1000 (the S3 maximum), not {page_size}")
        if prefix and not prefix.endswith("/"):
            prefix += "/"
        self.bucket = bucket
        self.prefix = prefix
        self._page_size = page_size
        self._clock = clock
        if client is None:
            # A private session: boto3's default session is shared module state and not
            # thread-safe to create clients from.
            session = boto3.session.Session(
                aws_access_key_id=access_key_id,
                aws_secret_access_key=secret_access_key,
                region_name=region,
            )
            client = session.client("s3", endpoint_url=endpoint_url, config=_S3_CONFIG)
        self._client: S3Client = client
        self._lock_enabled, self._bucket_default = self._inspect_bucket()
        if not self._lock_enabled:
            if require_worm:
                raise WormNotSupported(
                    f"bucket {bucket!r} has no Object Lock configuration, so it cannot keep evidence "
                    "immutable; create it with Object Lock enabled (create_worm_bucket) or, for "
                    "development only, pass require_worm=False"
                )
            logger.warning("bucket %s has no Object Lock: objects can be deleted at will", bucket)
            retention = None  # S3 rejects lock headers on such a bucket
        elif retention is None and self._bucket_default is None:
            logger.warning("bucket %s has Object Lock but no retention is applied to new objects", bucket)
        self._retention = retention
        logger.info("object store: %s", self.describe())

    def _inspect_bucket(self) -> tuple[bool, Retention | None]:
        try:
            reply = self._client.get_object_lock_configuration(Bucket=self.bucket)
        except ClientError as exc:
            code = _error_code(exc)
            if code == "ObjectLockConfigurationNotFoundError":
                return False, None
            if code == "NoSuchBucket":
                raise ObjectStoreError(f"bucket {self.bucket!r} does not exist") from exc
            raise _translate(exc, f"read Object Lock configuration of bucket {self.bucket}") from exc
        except BotoCoreError as exc:
            raise _translate(exc, f"read Object Lock configuration of bucket {self.bucket}") from exc
        config = reply.get("ObjectLockConfiguration", {})
        if config.get("ObjectLockEnabled") != "Enabled":
            return False, None
        rule = config.get("Rule", {}).get("DefaultRetention", {})
        days = rule.get("Days") or 365 * rule.get("Years", 0)
        default = Retention(rule["Mode"], days) if "Mode" in rule and days else None
        return True, default

    def _key(self, key: str) -> str:
        if not key:
            raise ValueError("object key is empty")
        return self.prefix + key

    def _what(self, operation: str, key: str) -> str:
        return f"{operation} s3://{self.bucket}/{self.prefix}{key}"

    def put_if_absent(self, key: str, data: bytes) -> bool:
        digest = base64.b64encode(hashlib.sha256(data).digest()).decode("ascii")
        lock: dict[str, Any] = {}
        if self._retention is not None:
            lock = {
                "ObjectLockMode": self._retention.mode,
                "ObjectLockRetainUntilDate": self._retention.until(self._clock()),
            }
        try:
            self._client.put_object(
                Bucket=self.bucket,
                Key=self._key(key),
                Body=data,
                IfNoneMatch="*",
                # S3 verifies the body against this and refuses a damaged upload (BadDigest);
                # naming the algorithm also satisfies Object Lock's demand for an integrity header.
                ChecksumAlgorithm="SHA256",
                ChecksumSHA256=digest,
                **lock,
            )
        except ClientError as exc:
            if _status(exc) == 412 or _error_code(exc) == "PreconditionFailed":
                return False
            raise _translate(exc, self._what("put", key)) from exc
        except BotoCoreError as exc:
            raise _translate(exc, self._what("put", key)) from exc
        return True

    def get(self, key: str) -> bytes:
        try:
            reply = self._client.get_object(Bucket=self.bucket, Key=self._key(key))
            with contextlib.closing(reply["Body"]) as body:
                return body.read()
        except (ClientError, BotoCoreError) as exc:
            raise _translate(exc, self._what("get", key)) from exc

    def get_range(self, key: str, start: int, length: int) -> bytes:
        _check_range(start, length)
        if length == 0:
            self.size(key)  # still report a missing object
            return b""
        try:
            reply = self._client.get_object(
                Bucket=self.bucket, Key=self._key(key), Range=f"bytes={start}-{start + length - 1}"
            )
            with contextlib.closing(reply["Body"]) as body:
                return body.read()
        except ClientError as exc:
            if _error_code(exc) == "InvalidRange":
                return b""  # the object exists but ends before `start`
            raise _translate(exc, self._what("get range of", key)) from exc
        except BotoCoreError as exc:
            raise _translate(exc, self._what("get range of", key)) from exc

    def _head(self, key: str) -> HeadObjectOutputTypeDef:
        try:
            return self._client.head_object(Bucket=self.bucket, Key=self._key(key))
        except (ClientError, BotoCoreError) as exc:
            raise _translate(exc, self._what("head", key)) from exc

    def size(self, key: str) -> int:
        return int(self._head(key)["ContentLength"])

    def list_keys(self, prefix: str = "", start_after: str = "") -> Iterator[str]:
        paginator = self._client.get_paginator("list_objects_v2")
        params: dict[str, Any] = {
            "Bucket": self.bucket,
            "Prefix": self.prefix + prefix,
            "PaginationConfig": {"PageSize": self._page_size},
        }
        if start_after:
            params["StartAfter"] = self.prefix + start_after
        cut = len(self.prefix)
        try:
            for page in paginator.paginate(**params):
                for item in page.get("Contents", []):
                    yield item["Key"][cut:]
        except (ClientError, BotoCoreError) as exc:
            raise _translate(exc, f"list s3://{self.bucket}/{self.prefix}{prefix}") from exc

    def delete(self, key: str) -> None:
        head = self._head(key)
        version = head.get("VersionId")
        try:
            # On a versioned bucket a DELETE without a version id only stacks a delete marker on
            # top and answers 204: the evidence is hidden, not gone, and Object Lock never gets
            # asked. Deleting the version itself is the operation retention is checked against.
            if version:
                reply = self._client.delete_object(Bucket=self.bucket, Key=self._key(key), VersionId=version)
            else:
                reply = self._client.delete_object(Bucket=self.bucket, Key=self._key(key))
        except ClientError as exc:
            if _error_code(exc) == "AccessDenied":
                until = self._retained_until(head)
                if until is not None:
                    raise RetentionLocked(f"{self._what('delete', key)}: retained until {until}") from exc
                raise ObjectStoreError(
                    f"{self._what('delete', key)}: access denied, and HEAD shows no retention or legal "
                    "hold (check the IAM policy, or s3:GetObjectRetention permission)"
                ) from exc
            raise _translate(exc, self._what("delete", key)) from exc
        except BotoCoreError as exc:
            raise _translate(exc, self._what("delete", key)) from exc
        if reply.get("DeleteMarker") and not version:
            raise ObjectStoreError(
                f"{self._what('delete', key)}: the bucket only added a delete marker; the object "
                "version still exists (versioned bucket returned no version id on HEAD)"
            )

    def _retained_until(self, head: HeadObjectOutputTypeDef) -> datetime | str | None:
        if head.get("ObjectLockLegalHoldStatus") == "ON":
            return "legal hold is released"
        until = head.get("ObjectLockRetainUntilDate")
        if until is not None and until.astimezone(UTC) > self._clock():
            return until.astimezone(UTC)
        return None

    def retention_of(self, key: str) -> datetime | None:
        # HEAD rather than GetObjectRetention: it is one request either way, and moto's server
        # answers GetObjectRetention with a 500.
        until = self._head(key).get("ObjectLockRetainUntilDate")
        return until.astimezone(UTC) if until is not None else None

    def describe(self) -> str:
        where = f"s3://{self.bucket}/{self.prefix}".rstrip("/")
        if not self._lock_enabled:
            return f"{where} (no Object Lock)"
        if self._retention is not None:
            return f"{where} (Object Lock {self._retention})"
        if self._bucket_default is not None:
            return f"{where} (Object Lock, bucket default {self._bucket_default})"
        return f"{where} (Object Lock, no retention)"


# --------------------------------------------------------------------------------------------
# Local WORM directory
# --------------------------------------------------------------------------------------------

# Names starting with this are ours (temp files, the sidecar folder); keys may not use them.
_RESERVED = ".worm"
_TMP_PREFIX = _RESERVED + "-tmp-"
_SIDECAR_DIR = (_RESERVED, "retention")
_LOCK_STRIPES = 64


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_new_file(path: Path, data: bytes) -> None:
    """Create `path` (must not exist), write, fsync and make it read-only before closing, so no
    name ever points at a writable or half-written inode."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
        os.fchmod(fd, 0o444)
    finally:
        os.close(fd)


class LocalWormStore:
    """A directory as a write-once store, for single-node installs.

    A key `a/b/c` is the file `root/a/b/c`. Objects are published with `os.link`, which fails if
    the name exists, so concurrent writers (threads or processes) cannot overwrite each other.
    Retain-until dates live in `root/.worm/retention/`, written before the object appears, and
    only ever move later. COMPLIANCE and GOVERNANCE behave alike here: there is no bypass.

    This protects against mistakes and ordinary users, not against root on the host; for that,
    use S3 Object Lock. Unlike S3, `a` and `a/b` cannot both be keys.
    """

    put_concurrency = 1  # a put is a few system calls: threads would only add GIL contention

    def __init__(
        self,
        root: Path,
        *,
        retention: Retention | None = Retention("COMPLIANCE", 365),
        clock: Callable[[], datetime] = _utc_now,
    ) -> None:
        self.root = Path(root)
        self._retention = retention
        self._clock = clock
        # Striped by key so sidecar read-modify-write is atomic per key without one global lock
        # serialising every fsync.
        self._locks = tuple(threading.Lock() for _ in range(_LOCK_STRIPES))
        self.root.mkdir(parents=True, exist_ok=True)

    def _path(self, key: str) -> Path:
        if not key:
            raise ValueError("object key is empty")
        if key.startswith("/"):
            raise ValueError(f"object key must be relative: {key!r}")
        if "\x00" in key:
            raise ValueError(f"object key contains NUL: {key!r}")
        for segment in key.split("/"):
            if segment in ("", ".", ".."):
                raise ValueError(f"object key has an empty, '.' or '..' segment: {key!r}")
            if segment.startswith(_RESERVED):
                raise ValueError(f"object key segments may not start with {_RESERVED!r}: {key!r}")
        return self.root.joinpath(*key.split("/"))

    def _sidecar(self, key: str) -> Path:
        # Hashed names: a sidecar path derived from the key itself could collide with a folder
        # that another key needs (`a.json` vs `a.json/b`).
        digest = hashlib.sha256(key.encode("utf-8")).hexdigest()
        return self.root.joinpath(*_SIDECAR_DIR, digest[:2], digest + ".json")

    def _lock(self, key: str) -> threading.Lock:
        return self._locks[hash(key) % _LOCK_STRIPES]

    def _ensure_dir(self, directory: Path) -> None:
        missing: list[Path] = []
        current = directory
        while not current.is_dir():
            missing.append(current)
            current = current.parent
        for folder in reversed(missing):
            try:
                folder.mkdir()
            except FileExistsError:
                if not folder.is_dir():
                    raise ObjectStoreError(f"{folder} is an object, so it cannot hold others") from None
            # Also when another writer won the mkdir: our object must not be published into a
            # folder whose own entry may still be lost in a crash.
            _fsync_dir(folder.parent)

    def _read_sidecar(self, key: str) -> datetime | None:
        try:
            record = json.loads(self._sidecar(key).read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        return datetime.fromisoformat(record["retain_until"]).astimezone(UTC)

    def _extend_retention(self, key: str, retention: Retention) -> None:
        until = retention.until(self._clock())
        sidecar = self._sidecar(key)
        with self._lock(key):
            existing = self._read_sidecar(key)
            if existing is not None and existing >= until:
                return
            self._ensure_dir(sidecar.parent)
            record = {"key": key, "mode": retention.mode, "retain_until": until.isoformat()}
            tmp = sidecar.parent / f"{_TMP_PREFIX}{uuid.uuid4().hex}"
            try:
                _write_new_file(tmp, json.dumps(record, sort_keys=True).encode("utf-8"))
                os.replace(tmp, sidecar)
            finally:
                tmp.unlink(missing_ok=True)
            _fsync_dir(sidecar.parent)

    def put_if_absent(self, key: str, data: bytes) -> bool:
        path = self._path(key)
        try:
            if path.is_file():
                return False
            self._ensure_dir(path.parent)
            if self._retention is not None:
                # Before the object exists, so a crash can leave a date without an object but
                # never an object without its date.
                self._extend_retention(key, self._retention)
            tmp = path.parent / f"{_TMP_PREFIX}{uuid.uuid4().hex}"
            try:
                _write_new_file(tmp, data)
                try:
                    os.link(tmp, path)
                except FileExistsError:
                    if not path.is_file():
                        raise ObjectStoreError(f"key {key!r} is a folder of other objects") from None
                    return False
            finally:
                tmp.unlink(missing_ok=True)
            _fsync_dir(path.parent)
        except OSError as exc:
            # Full disk, I/O errors: an outage to wait out, never a reason to drop the record.
            raise ObjectStoreUnavailable(f"put {key!r} under {self.root}: {exc}") from exc
        return True

    def get(self, key: str) -> bytes:
        path = self._path(key)
        try:
            return path.read_bytes()
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            raise ObjectNotFound(key) from None
        except OSError as exc:
            raise ObjectStoreUnavailable(f"get {key!r} under {self.root}: {exc}") from exc

    def get_range(self, key: str, start: int, length: int) -> bytes:
        _check_range(start, length)
        path = self._path(key)
        try:
            with path.open("rb") as handle:
                handle.seek(start)
                return handle.read(length)
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            raise ObjectNotFound(key) from None
        except OSError as exc:
            raise ObjectStoreUnavailable(f"get range of {key!r} under {self.root}: {exc}") from exc

    def _stat(self, key: str) -> os.stat_result:
        try:
            result = self._path(key).stat()
        except (FileNotFoundError, NotADirectoryError):
            raise ObjectNotFound(key) from None
        except OSError as exc:
            raise ObjectStoreUnavailable(f"stat {key!r} under {self.root}: {exc}") from exc
        if not stat.S_ISREG(result.st_mode):
            raise ObjectNotFound(key)
        return result

    def size(self, key: str) -> int:
        return self._stat(key).st_size

    def list_keys(self, prefix: str = "", start_after: str = "") -> Iterator[str]:
        return self._walk(self.root, "", prefix, start_after)

    def _walk(self, directory: Path, relative: str, prefix: str, start_after: str) -> Iterator[str]:
        try:
            with os.scandir(directory) as entries:
                names = []
                for entry in entries:
                    if entry.name.startswith(_RESERVED):
                        continue
                    if entry.is_dir(follow_symlinks=False):
                        # Sorting a folder as "name/" puts its keys exactly where they belong in
                        # the flat key order ("a-b" < "a/x" < "a0"), so the walk streams sorted.
                        names.append(relative + entry.name + "/")
                    elif entry.is_file(follow_symlinks=False):
                        names.append(relative + entry.name)
        except FileNotFoundError:
            return
        for name in sorted(names):
            if name.endswith("/"):
                if not (name.startswith(prefix) or prefix.startswith(name)):
                    continue
                if name < start_after and not start_after.startswith(name):
                    continue  # every key below sorts before start_after
                yield from self._walk(directory / name[len(relative) : -1], name, prefix, start_after)
            elif name.startswith(prefix) and name > start_after:
                yield name

    def delete(self, key: str) -> None:
        path = self._path(key)
        self._stat(key)
        with self._lock(key):
            until = self._read_sidecar(key)
            if until is not None and until > self._clock():
                raise RetentionLocked(f"delete {key!r} under {self.root}: retained until {until}")
            try:
                path.unlink()
                _fsync_dir(path.parent)
                self._sidecar(key).unlink(missing_ok=True)
            except FileNotFoundError:
                raise ObjectNotFound(key) from None
            except OSError as exc:
                raise ObjectStoreUnavailable(f"delete {key!r} under {self.root}: {exc}") from exc

    def retention_of(self, key: str) -> datetime | None:
        self._stat(key)
        return self._read_sidecar(key)

    def describe(self) -> str:
        kept = str(self._retention) if self._retention is not None else "no retention"
        return f"file://{self.root} (WORM directory, {kept})"
