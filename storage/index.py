"""The ClickHouse index behind one small interface, with two implementations.

`ChdbIndex` runs the ClickHouse engine in-process (chdb) on a local data directory; it is the
embedded default and what the tests always run. `ClickHouseServerIndex` talks to a ClickHouse
server over HTTP (clickhouse-connect); it is the production choice. Both speak the same SQL,
take Arrow tables in and give Arrow tables out, and bind query parameters server-side with
ClickHouse's `{name:Type}` syntax, so no value is ever formatted into SQL text.

Strings: ClickHouse `String` columns hold bytes. Results return them as Arrow `string`, except
columns named in `binary_columns` (by default the schema's hash columns), which return as Arrow
`binary` with the exact bytes. Inserts accept either Arrow type for a `String` column.

chdb constraints, learnt from chdb-core 26.x:
- One process owns a data directory: the engine takes an exclusive `flock` on `<dir>/status`,
  and a second process fails (`IndexLocked`).
- One process hosts one engine bound to one directory at a time: closing the last connection
  shuts it down, after which another directory may be opened. Opening a second directory while
  one is open fails (`IndexStoreError`).
"""

from __future__ import annotations

import datetime as dt
import fcntl
import logging
import re
import threading
import uuid
from collections.abc import Collection, Iterable, Mapping
from pathlib import Path
from typing import Any, Protocol, Self
from urllib.parse import parse_qs, unquote, urlsplit

import pyarrow as pa

from storage.index_schema import MIGRATIONS, SCHEMA_MIGRATIONS_TABLE, Migration

logger = logging.getLogger(__name__)

# Columns that hold raw hash bytes in the schema (index_schema); query results return them as
# Arrow binary so that bytes which are not UTF-8 survive the trip.
BINARY_COLUMNS: frozenset[str] = frozenset({"record_hash", "prev_hash", "event_digest", "head_hash"})

DEFAULT_DATABASE = "blackbox"


class IndexStoreError(Exception):
    """The index refused or failed an operation; retrying the same call will not help."""


class IndexUnavailable(IndexStoreError):
    """The index is unreachable or overloaded for now (server down, timeout); retry with backoff."""


class IndexLocked(IndexStoreError):
    """Another process owns the chdb data directory."""


class Index(Protocol):
    def migrate(self) -> list[int]:
        """Apply the missing migrations in order and record them; return the versions applied."""
        ...

    def insert(self, table: str, rows: pa.Table, *, dedup_token: str | None = None) -> None:
        """Insert all rows in one INSERT; columns are matched by name, missing ones get defaults.

        A second insert with a `dedup_token` already used on this table (within the last 10000
        inserts) is a no-op, whatever its rows. Without a token ClickHouse's default applies: a
        block identical to a recent one is dropped as well.
        """
        ...

    def query(
        self,
        sql: str,
        parameters: Mapping[str, Any] | None = None,
        *,
        binary_columns: Collection[str] = BINARY_COLUMNS,
    ) -> pa.Table:
        """Run one statement that returns rows, `{name:Type}` parameters bound server-side."""
        ...

    def execute(self, sql: str, parameters: Mapping[str, Any] | None = None) -> None:
        """Run one statement that returns no rows (DDL, OPTIMIZE, INSERT ... SELECT)."""
        ...

    def close(self) -> None: ...

    def describe(self) -> str: ...


# ClickHouse error codes that describe the moment, not the request: the same call may succeed
# later, so callers retry instead of routing the batch anywhere.
_TRANSIENT_CODES = frozenset(
    {
        159,  # TIMEOUT_EXCEEDED
        202,  # TOO_MANY_SIMULTANEOUS_QUERIES
        209,  # SOCKET_TIMEOUT
        210,  # NETWORK_ERROR
        236,  # ABORTED
        241,  # MEMORY_LIMIT_EXCEEDED
        242,  # TABLE_IS_READ_ONLY
        252,  # TOO_MANY_PARTS
        319,  # UNKNOWN_STATUS_OF_INSERT
        425,  # SYSTEM_ERROR
        999,  # KEEPER_EXCEPTION
    }
)
_CODE_RE = re.compile(r"Code: (\d+)\.")
_IDENTIFIER_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


def _error_from_message(message: str, what: str) -> IndexStoreError:
    match = _CODE_RE.search(message)
    if match and int(match.group(1)) in _TRANSIENT_CODES:
        return IndexUnavailable(f"{what}: {message}")
    return IndexStoreError(f"{what}: {message}")


def _identifier(name: str) -> str:
    # Table, column and database names come from our code, never from users; a strict pattern
    # keeps them from carrying SQL, and the backticks keep keywords usable as names.
    if not _IDENTIFIER_RE.match(name):
        raise ValueError(f"not a plain identifier: {name!r}")
    return f"`{name}`"


def _check_parameters(sql: str, parameters: Mapping[str, Any]) -> None:
    # Every value must be bound by a placeholder: a parameter the SQL does not name would be
    # silently ignored by chdb and would make clickhouse-connect fall back to client-side
    # %-formatting.
    for name in parameters:
        if not _IDENTIFIER_RE.match(name):
            raise ValueError(f"not a valid parameter name: {name!r}")
        if not re.search(r"\{\s*" + re.escape(name) + r"\s*:", sql):
            raise ValueError(f"parameter {name!r} has no {{{name}:Type}} placeholder in the SQL")


def _escape_text(value: str) -> str:
    # Backslash escapes shared by ClickHouse's TSV-escaped and quoted text formats; control
    # characters are escaped too, since a raw tab or newline ends a value in the escaped format.
    return (
        value.replace("\\", "\\\\")
        .replace("'", "\\'")
        .replace("\t", "\\t")
        .replace("\n", "\\n")
        .replace("\r", "\\r")
        .replace("\0", "\\0")
    )


def quote_literal(value: str) -> str:
    """A ClickHouse string literal for `value`, for the few places SQL takes no parameters
    (SETTINGS clauses)."""
    return f"'{_escape_text(value)}'"


def format_parameter(value: Any, *, nested: bool = False) -> str:
    """Encode a Python value as ClickHouse parses a `{name:Type}` parameter value.

    The engine parses the text with the parameter's declared type (TSV-escaped format at the top
    level, quoted literals inside arrays and tuples), so the value cannot change the statement.
    Bytes go as `\\xHH` escapes to stay exact; datetimes go as UTC wall-clock time.
    """
    if value is None:
        return "NULL" if nested else "\\N"
    if isinstance(value, bool):
        # 1/0 parse as Bool and as UInt8 alike; true/false only as Bool.
        return "1" if value else "0"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return quote_literal(value) if nested else _escape_text(value)
    if isinstance(value, bytes | bytearray | memoryview):
        text = "".join(f"\\x{b:02x}" for b in bytes(value))
        return f"'{text}'" if nested else text
    if isinstance(value, dt.datetime):
        if value.tzinfo is not None:
            value = value.astimezone(dt.UTC)
        # Whole seconds stay without a fraction so that DateTime (not only DateTime64) parses.
        text = value.strftime("%Y-%m-%d %H:%M:%S.%f" if value.microsecond else "%Y-%m-%d %H:%M:%S")
        return f"'{text}'" if nested else text
    if isinstance(value, dt.date | uuid.UUID):
        text = value.isoformat() if isinstance(value, dt.date) else str(value)
        return f"'{text}'" if nested else text
    if isinstance(value, list):
        return "[" + ", ".join(format_parameter(v, nested=True) for v in value) + "]"
    if isinstance(value, tuple):
        return "(" + ", ".join(format_parameter(v, nested=True) for v in value) + ")"
    raise TypeError(f"cannot bind a {type(value).__name__} as a ClickHouse parameter")


def _with_binary_columns(table: pa.Table, names: Collection[str]) -> pa.Table:
    # The engine writes String as Arrow utf8 without checking the bytes; the cast to binary is
    # zero-copy and does not validate, so hash bytes come back exactly as stored.
    for i, field in enumerate(table.schema):
        if field.name not in names:
            continue
        if pa.types.is_string(field.type):
            target: pa.DataType = pa.binary()
        elif pa.types.is_large_string(field.type):
            target = pa.large_binary()
        elif pa.types.is_list(field.type) and pa.types.is_string(field.type.value_type):
            target = pa.list_(pa.binary())
        else:
            continue
        table = table.set_column(i, field.with_type(target), table.column(i).cast(target))
    return table


def _insert_statement(database: str, table: str, columns: Iterable[str]) -> str:
    cols = ", ".join(_identifier(c) for c in columns)
    return f"INSERT INTO {_identifier(database)}.{_identifier(table)} ({cols})"


def _insert_settings(dedup_token: str | None) -> dict[str, str]:
    if dedup_token is None:
        return {}
    return {"insert_deduplicate": "1", "insert_deduplication_token": dedup_token}


def _ordered_migrations() -> list[Migration]:
    versions = [m.version for m in MIGRATIONS]
    if versions != sorted(set(versions)):
        raise IndexStoreError(f"migration versions must be unique and increasing: {versions}")
    return list(MIGRATIONS)


class _BaseIndex:
    """Migration logic shared by the implementations, written against their execute and query."""

    _database: str

    @property
    def database(self) -> str:
        return self._database

    def execute(self, sql: str, parameters: Mapping[str, Any] | None = None) -> None:
        raise NotImplementedError

    def query(
        self,
        sql: str,
        parameters: Mapping[str, Any] | None = None,
        *,
        binary_columns: Collection[str] = BINARY_COLUMNS,
    ) -> pa.Table:
        raise NotImplementedError

    def migrate(self) -> list[int]:
        self.execute(SCHEMA_MIGRATIONS_TABLE)
        done = self.query("SELECT DISTINCT version FROM schema_migrations")
        applied_before = {int(v) for v in done.column("version").to_pylist()}
        known = _ordered_migrations()
        unknown = applied_before - {m.version for m in known}
        if unknown:
            # The index is derived data and newer code may have added tables this code ignores.
            logger.warning("index %s has migrations this code does not know: %s", self._database, unknown)
        applied: list[int] = []
        for migration in known:
            if migration.version in applied_before:
                continue
            # Each statement is idempotent (IF NOT EXISTS), so a crash between a statement and
            # the version record is repaired by running the migration again.
            for statement in migration.statements:
                self.execute(statement)
            self.execute(
                "INSERT INTO schema_migrations (version, description) "
                "SELECT {version:UInt32}, {description:String}",
                {"version": migration.version, "description": migration.description},
            )
            logger.info(
                "index %s: applied migration %d (%s)",
                self._database,
                migration.version,
                migration.description,
            )
            applied.append(migration.version)
        return applied


class ChdbIndex(_BaseIndex):
    """The index in-process on a local directory (chdb).

    Only one process may open `data_dir`, and one process may have only one directory open at a
    time; the embedded stack therefore runs the stream processors and the API in one process.
    Every call is serialised by one lock: the pipeline calls from worker threads and the API from
    the event loop's threads, and a streaming insert holds the connection exclusively.
    """

    def __init__(self, data_dir: Path, database: str = DEFAULT_DATABASE) -> None:
        import chdb.session  # noqa: PLC0415  (loading the engine costs a second; only on use)

        _identifier(database)
        self._data_dir = Path(data_dir).resolve()
        if "?" in str(self._data_dir):
            # chdb reads everything after '?' in its connection string as engine options.
            raise ValueError(f"chdb data directory may not contain '?': {self._data_dir}")
        self._database = database
        self._lock = threading.Lock()
        self._data_dir.mkdir(parents=True, exist_ok=True)
        try:
            # chdb ships py.typed but leaves Session unannotated.
            self._session: Any = chdb.session.Session(str(self._data_dir))  # type: ignore[no-untyped-call]
        except RuntimeError as exc:
            raise self._open_error(exc) from exc
        try:
            self.execute("SET session_timezone = 'UTC'")
            self.execute(f"CREATE DATABASE IF NOT EXISTS {_identifier(database)}")
            self.execute(f"USE {_identifier(database)}")
        except BaseException:
            self.close()
            raise
        logger.info("opened %s", self.describe())

    def _open_error(self, exc: RuntimeError) -> IndexStoreError:
        message = str(exc)
        if "already initialized with path" in message:
            return IndexStoreError(
                f"cannot open chdb at {self._data_dir}: this process already has another chdb data "
                f"directory open, and chdb runs one directory per process ({message})"
            )
        holder = _status_lock_holder(self._data_dir / "status")
        if holder is not None:
            return IndexLocked(
                f"chdb data directory {self._data_dir} is in use by another process ({holder}); "
                "chdb allows one process per data directory"
            )
        return _error_from_message(message, f"cannot open chdb at {self._data_dir}")

    def _require_session(self) -> Any:
        if self._session is None:
            raise IndexStoreError(f"{self.describe()} is closed")
        return self._session

    def execute(self, sql: str, parameters: Mapping[str, Any] | None = None) -> None:
        self.query(sql, parameters)

    def query(
        self,
        sql: str,
        parameters: Mapping[str, Any] | None = None,
        *,
        binary_columns: Collection[str] = BINARY_COLUMNS,
    ) -> pa.Table:
        params = dict(parameters or {})
        _check_parameters(sql, params)
        encoded = {name: format_parameter(value) for name, value in params.items()}
        with self._lock:
            session = self._require_session()
            try:
                result = session.query(sql, "ArrowTable", params=encoded)
            except RuntimeError as exc:
                raise _error_from_message(str(exc), "chdb query failed") from exc
        return _with_binary_columns(result, binary_columns)

    def insert(self, table: str, rows: pa.Table, *, dedup_token: str | None = None) -> None:
        if rows.num_rows == 0:
            return
        sql = _insert_statement(self._database, table, rows.column_names)
        settings = _insert_settings(dedup_token)
        if settings:
            sql += " SETTINGS " + ", ".join(f"{k} = {quote_literal(v)}" for k, v in settings.items())
        payload = _arrow_stream(rows)
        with self._lock:
            session = self._require_session()
            # Arrow IPC through the streaming inserter: one parse in the engine and no Python
            # objects per row. (chdb's Python() table function is as fast but finds its input by
            # variable name in the caller's frames, and mixed up tables under concurrent use.)
            try:
                inserter = session.send_insert(sql, "ArrowStream")
            except RuntimeError as exc:
                raise _error_from_message(str(exc), f"chdb insert into {table} failed") from exc
            try:
                inserter.append(payload)
                inserter.finish()
            except RuntimeError as exc:
                inserter.cancel()
                raise _error_from_message(str(exc), f"chdb insert into {table} failed") from exc

    def close(self) -> None:
        with self._lock:
            session, self._session = getattr(self, "_session", None), None
            if session is not None:
                session.close()
                logger.info("closed %s", self.describe())

    def describe(self) -> str:
        return f"chdb {self._data_dir} database={self._database}"

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _status_lock_holder(status: Path) -> str | None:
    """Who holds the engine's lock on `status`, or None when nobody does."""
    try:
        handle = status.open("rb")
    except FileNotFoundError:
        return None
    with handle:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            first_line = handle.readline().decode(errors="replace").strip()
            return first_line or "pid unknown"
        fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
        return None


def _arrow_stream(rows: pa.Table) -> bytes:
    # One record batch, so that the same rows always split into the same insert blocks and a
    # replay with the same dedup token matches block for block.
    rows = rows.combine_chunks()
    # Written twice: once to count its bytes, once into a buffer of that size. A growing buffer
    # copied the stream as it doubled, into fresh pages each time (3% of the worker's CPU).
    size = pa.MockOutputStream()
    with pa.ipc.new_stream(size, rows.schema) as counter:
        counter.write_table(rows)
    buffer = pa.allocate_buffer(size.size())
    with pa.ipc.new_stream(pa.FixedSizeBufferWriter(buffer), rows.schema) as writer:
        writer.write_table(rows)
    payload: bytes = buffer.to_pybytes()
    return payload


class ClickHouseServerIndex(_BaseIndex):
    """The index on a ClickHouse server, over HTTP(S) with clickhouse-connect.

    `url` is `http(s)://[user:password@]host[:port]`; explicit `username`/`password` win over
    the URL's. The database is created if missing. The client keeps no server session, so
    concurrent calls from several threads are safe.
    """

    def __init__(
        self,
        url: str,
        database: str = DEFAULT_DATABASE,
        *,
        username: str | None = None,
        password: str | None = None,
        connect_timeout: float = 10,
        send_receive_timeout: float = 300,
    ) -> None:
        import clickhouse_connect  # noqa: PLC0415  (only deployments with a server need it)

        _identifier(database)
        parts = urlsplit(url)
        if parts.scheme not in {"http", "https"} or not parts.hostname:
            raise ValueError("ClickHouse server URL must look like http(s)://host[:port]")
        self._secure = parts.scheme == "https"
        self._host = parts.hostname
        self._port = parts.port or (8443 if self._secure else 8123)
        self._database = database
        self._username = username if username is not None else unquote(parts.username or "") or "default"
        secret = password if password is not None else unquote(parts.password or "")
        try:
            self._client: Any = clickhouse_connect.get_client(
                host=self._host,
                port=self._port,
                username=self._username,
                password=secret,
                secure=self._secure,
                connect_timeout=connect_timeout,
                send_receive_timeout=send_receive_timeout,
                # Server sessions serialise queries; the pipeline and the API query concurrently.
                autogenerate_session_id=False,
                settings={"session_timezone": "UTC"},
            )
            self._client.command(f"CREATE DATABASE IF NOT EXISTS {_identifier(database)}")
        except Exception as exc:
            raise _server_error(exc, f"cannot connect to {self.describe()}") from exc
        self._client.database = database
        logger.info("connected to %s", self.describe())

    def execute(self, sql: str, parameters: Mapping[str, Any] | None = None) -> None:
        params = dict(parameters or {})
        _check_parameters(sql, params)
        try:
            self._client.command(sql, parameters={k: _bools_as_ints(v) for k, v in params.items()} or None)
        except Exception as exc:
            raise _server_error(exc, "ClickHouse command failed") from exc

    def query(
        self,
        sql: str,
        parameters: Mapping[str, Any] | None = None,
        *,
        binary_columns: Collection[str] = BINARY_COLUMNS,
    ) -> pa.Table:
        params = dict(parameters or {})
        _check_parameters(sql, params)
        try:
            # clickhouse-connect binds {name:Type} placeholders server-side (sent as param_name).
            result = self._client.query_arrow(
                sql, parameters={k: _bools_as_ints(v) for k, v in params.items()} or None, use_strings=True
            )
        except Exception as exc:
            raise _server_error(exc, "ClickHouse query failed") from exc
        return _with_binary_columns(result, binary_columns)

    def insert(self, table: str, rows: pa.Table, *, dedup_token: str | None = None) -> None:
        if rows.num_rows == 0:
            return
        _identifier(table)
        for name in rows.column_names:
            _identifier(name)
        try:
            self._client.insert_arrow(
                table,
                rows.combine_chunks(),
                database=self._database,
                settings=_insert_settings(dedup_token) or None,
            )
        except Exception as exc:
            raise _server_error(exc, f"ClickHouse insert into {table} failed") from exc

    def close(self) -> None:
        self._client.close()
        logger.info("closed %s", self.describe())

    def describe(self) -> str:
        scheme = "https" if self._secure else "http"
        return f"clickhouse {scheme}://{self._username}@{self._host}:{self._port} database={self._database}"

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _bools_as_ints(value: Any) -> Any:
    # clickhouse-connect sends True as "True", which UInt8 parameters reject; chdb gets 1/0 from
    # format_parameter, and both implementations must accept the same values.
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, list | tuple):
        return type(value)(_bools_as_ints(v) for v in value)
    return value


def _server_error(exc: Exception, what: str) -> IndexStoreError:
    from clickhouse_connect.driver import exceptions as ch  # noqa: PLC0415

    if isinstance(exc, ch.OperationalError):
        # clickhouse-connect raises OperationalError for network failures and for errors after
        # its own retries; both say "not now" rather than "not this".
        return IndexUnavailable(f"{what}: {exc}")
    if isinstance(exc, ch.DatabaseError) and getattr(exc, "code", None) in _TRANSIENT_CODES:
        return IndexUnavailable(f"{what}: {exc}")
    if isinstance(exc, ch.Error):
        return _error_from_message(str(exc), what)
    if isinstance(exc, OSError):
        return IndexUnavailable(f"{what}: {exc}")
    return IndexStoreError(f"{what}: {exc}")


def open_index(url: str) -> Index:
    """Open the index named by `url`.

    - `chdb:///abs/dir`, `chdb://rel/dir` or a plain path: `ChdbIndex` on that directory;
      `?database=name` picks the database (default `blackbox`).
    - `http(s)://user:password@host:port/database`: `ClickHouseServerIndex`; `clickhouse://` and
      `clickhouses://` are accepted as spellings of http and https (the client speaks HTTP only).
    """
    if "://" not in url:
        return ChdbIndex(Path(url))
    parts = urlsplit(url)
    if parts.scheme == "chdb":
        path = (parts.netloc + parts.path) or "."
        database = parse_qs(parts.query).get("database", [DEFAULT_DATABASE])[0]
        return ChdbIndex(Path(unquote(path)), database)
    schemes = {"http": "http", "https": "https", "clickhouse": "http", "clickhouses": "https"}
    if parts.scheme in schemes:
        database = unquote(parts.path.strip("/")) or DEFAULT_DATABASE
        server = parts._replace(scheme=schemes[parts.scheme], path="", query="", fragment="").geturl()
        return ClickHouseServerIndex(server, database)
    raise ValueError(f"unsupported index URL scheme {parts.scheme!r}; use chdb://, http(s):// or a path")
