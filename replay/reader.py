"""Reading sessions back: find them in the index, fetch their records from the archive by byte
range, and turn the records into JSON-ready events, asciicast files and verification verdicts.

The archive is the evidence and the index only says where it is. So every record handed out
here comes from the archive's exact bytes, and any disagreement between the two (a block that
does not decode, holds other records than the index says, or is missing) is EvidenceCorrupt,
never silently skipped: an auditor must not see a replay with a hole in it. Reads also check
that each record links to the one before it (prev_hash), which costs one SHA-256 per record
and means an edited record is refused wherever it is read, not only by `verify`.

JSON rendering of bytes fields (terminal ``data``): the field holds the bytes decoded as UTF-8
with invalid sequences replaced by U+FFFD, and, only when the bytes are not valid UTF-8 on
their own, a sibling ``<field>_base64`` with the exact bytes. Terminal output may split a
multi-byte character across events, so the exact bytes must stay recoverable; the common case
stays readable text. Hashes and blind indexes are rendered as lower-case hex.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
from collections.abc import Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Any

from ledger.chain import GENESIS, ChainBroken, record_hash, verify_chain
from replay import queries
from replay.asciicast import render_asciicast
from replay.errors import ArchiveUnavailable, EvidenceCorrupt, InvalidQuery, SessionNotFound
from schemas import EVENT_SCHEMA, SEALED_SCHEMA, default_registry
from schemas.codec import NAMESPACE
from storage.archive import ArchivedRecord, ArchiveFormatError, ArchiveHeader, parse_header, read_block
from storage.index import Index
from storage.objectstore import ObjectNotFound, ObjectStore, ObjectStoreError

logger = logging.getLogger(__name__)

MAX_PAGE_SIZE = 500
MAX_FILTER_LENGTH = 256
_CURSOR_VERSION = 1
# A key no writer uses: asking for its size proves the store answers without reading evidence.
_HEALTH_PROBE_KEY = "_healthz/probe"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@lru_cache(maxsize=8)
def _enum_symbols(schema_name: str, enum_name: str) -> tuple[str, ...]:
    """Symbols of an enum inside a shipped schema, so filters follow the contract, not a copy."""
    wanted = f"{NAMESPACE}.{enum_name}"

    def walk(node: Any) -> tuple[str, ...] | None:
        if isinstance(node, dict):
            if node.get("type") == "enum" and node.get("name") in (wanted, enum_name):
                return tuple(node["symbols"])
            children: list[Any] = list(node.values())
        elif isinstance(node, list):
            children = node
        else:
            return None
        for child in children:
            found = walk(child)
            if found is not None:
                return found
        return None

    symbols = walk(default_registry().schema(schema_name))
    if symbols is None:
        raise LookupError(f"{schema_name} has no enum {enum_name}")
    return symbols


def identity_kinds() -> tuple[str, ...]:
    return _enum_symbols(EVENT_SCHEMA, "IdentityKind")


def target_kinds() -> tuple[str, ...]:
    return _enum_symbols(EVENT_SCHEMA, "TargetKind")


def record_kinds() -> tuple[str, ...]:
    return _enum_symbols(SEALED_SCHEMA, "RecordKind")


def iso_utc(micros: int) -> str:
    """ISO 8601 in UTC with microseconds, e.g. ``2024-05-01T12:00:00.000250Z``."""
    moment = _EPOCH + timedelta(microseconds=micros)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass(frozen=True)
class IdentityInfo:
    principal: str
    kind: str
    issuer: str | None
    groups: tuple[str, ...]


@dataclass(frozen=True)
class TargetInfo:
    name: str
    kind: str
    host: str | None
    database: str | None


@dataclass(frozen=True)
class GatewayInfo:
    id: str
    product: str


@dataclass(frozen=True)
class SessionSummary:
    """A session as the index describes it (times in microseconds since the epoch, UTC)."""

    session_id: str
    identity: IdentityInfo
    target: TargetInfo
    gateway: GatewayInfo
    started_at_us: int
    last_event_at_us: int
    record_count: int
    last_seq: int
    sealed: bool
    seal_reason: str
    gap_count: int
    fork_count: int
    head_hash: str
    max_risk: int


@dataclass(frozen=True)
class SessionPage:
    items: list[SessionSummary]
    next_cursor: str | None


@dataclass(frozen=True)
class VerifyFailure:
    """Which check failed, at which record (None when it concerns the session as a whole)."""

    check: str
    detail: str
    index: int | None = None


@dataclass(frozen=True)
class Verdict:
    """The outcome of verifying one session; ``checks`` names the checks that passed, in order."""

    session_id: str
    valid: bool
    record_count: int
    head_hash: str | None
    sealed: bool
    gap_count: int
    fork_count: int
    checks: tuple[str, ...] = ()
    failure: VerifyFailure | None = None


class SessionReader:
    """The read side over one index and one object store (both injected)."""

    def __init__(self, index: Index, store: ObjectStore) -> None:
        self._index = index
        self._store = store

    # -- finding sessions -------------------------------------------------------------------

    def search(
        self,
        *,
        principal: str | None = None,
        identity_kind: str | None = None,
        target: str | None = None,
        target_kind: str | None = None,
        since_us: int | None = None,
        until_us: int | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> SessionPage:
        """Sessions newest first by start time; ``since_us`` inclusive, ``until_us`` exclusive."""
        if not 1 <= limit <= MAX_PAGE_SIZE:
            raise InvalidQuery(f"limit must be between 1 and {MAX_PAGE_SIZE}, got {limit}")
        if since_us is not None and until_us is not None and since_us > until_us:
            raise InvalidQuery("since must not be later than until")
        where = queries.SessionFilter(
            principal=_text_filter("principal", principal),
            identity_kind=_enum_filter("identity_kind", identity_kind, identity_kinds()),
            target=_text_filter("target", target),
            target_kind=_enum_filter("target_kind", target_kind, target_kinds()),
            since_us=queries.INT64_MIN if since_us is None else since_us,
            until_us=queries.INT64_MAX if until_us is None else until_us,
        )
        after = _decode_cursor(cursor) if cursor else None
        # One row more than asked tells whether another page exists without a count query.
        rows = queries.search_sessions(self._index, where, after=after, limit=limit + 1)
        items = [_summary(row) for row in rows[:limit]]
        next_cursor = None
        if len(rows) > limit:
            last = items[-1]
            next_cursor = _encode_cursor(last.started_at_us, last.session_id)
        return SessionPage(items, next_cursor)

    def get_session(self, session_id: str) -> SessionSummary:
        row = queries.get_session(self._index, session_id)
        if row is None:
            raise SessionNotFound(session_id)
        return _summary(row)

    # -- reading records --------------------------------------------------------------------

    def records(self, session_id: str) -> list[ArchivedRecord]:
        """Every archived record of the session, in chain order, links checked."""
        return list(self._iter_records(session_id, from_index=0))

    def record(self, session_id: str, index: int) -> ArchivedRecord | None:
        """One archived record, reading only the block that holds it (its links checked from
        the block's start); None when the session has no record ``index``."""
        if index < 0:
            raise InvalidQuery(f"a record index is >= 0, got {index}")
        # Records come from index ``index`` on, in order: the first is it, unless it is missing.
        record = next(self._iter_records(session_id, from_index=index), None)
        return record if record is not None and record.value["index"] == index else None

    def events(
        self,
        session_id: str,
        *,
        kinds: Collection[str] | None = None,
        after_index: int | None = None,
        limit: int | None = None,
    ) -> list[dict[str, Any]]:
        """JSON-ready records (see the module docstring for how bytes are rendered)."""
        wanted = _kinds_filter(kinds)
        if after_index is not None and after_index < 0:
            raise InvalidQuery(f"after_index must be >= 0, got {after_index}")
        if limit is not None and limit < 1:
            raise InvalidQuery(f"limit must be >= 1, got {limit}")
        from_index = 0 if after_index is None else after_index + 1
        out: list[dict[str, Any]] = []
        for record in self._iter_records(session_id, from_index=from_index):
            if wanted is not None and record.value["kind"] not in wanted:
                continue
            out.append(record_to_json(record))
            if limit is not None and len(out) >= limit:
                break  # stop fetching blocks once the page is full
        return out

    def asciicast(self, session_id: str, *, include_input: bool = False) -> str:
        """The session's terminal activity as an asciicast v2 file."""
        summary = self.get_session(session_id)
        title = f"{summary.identity.principal} \u2192 {summary.target.name}"
        return render_asciicast(self.records(session_id), include_input=include_input, title=title)

    def verify(self, session_id: str) -> Verdict:
        """Verify the session's archived chain against itself and against the index.

        Evidence that cannot be read as the index describes is a failed verdict (check
        ``archive``), not an error: that is exactly what an auditor asks verification to find.
        """
        return self.verify_and_read(session_id)[0]

    def verify_and_read(self, session_id: str) -> tuple[Verdict, list[ArchivedRecord] | None]:
        """`verify`, and the records it read (None when they could not be read as indexed), so
        that the ledger's checks of the same session need not read them again."""
        summary = self.get_session(session_id)
        try:
            # Links unchecked here: verify_chain checks them and names the failing check.
            records = list(self._iter_records(session_id, from_index=0, check_links=False))
        except EvidenceCorrupt as exc:
            logger.error("verify %s: archive check failed: %s", session_id, exc)
            failed = Verdict(
                session_id, False, 0, None, False, 0, 0, (), VerifyFailure("archive", exc.detail)
            )
            return failed, None
        return verify_records(summary, records), records

    def health(self) -> dict[str, str]:
        """Reachability of the index and the object store: "ok" or the reason it is not."""
        checks: dict[str, str] = {}
        try:
            queries.ping(self._index)
            checks["index"] = "ok"
        except Exception as exc:  # a health probe reports every failure, it never raises
            checks["index"] = f"unavailable: {type(exc).__name__}"
        try:
            self._store.size(_HEALTH_PROBE_KEY)
            checks["object_store"] = "ok"
        except ObjectNotFound:
            checks["object_store"] = "ok"  # the store answered; the probe key need not exist
        except Exception as exc:
            checks["object_store"] = f"unavailable: {type(exc).__name__}"
        return checks

    def _iter_records(
        self, session_id: str, *, from_index: int, check_links: bool = True
    ) -> Iterator[ArchivedRecord]:
        """Records from ``from_index`` on, fetched block by block (ranged reads only).

        With ``check_links``, every record read must carry the hash of the record before it;
        the first block is read whole, so links are checked from its start (and from genesis
        when it starts the session), even when ``from_index`` lies inside it.
        """
        segments = queries.session_segments(self._index, session_id, from_index=from_index)
        if not segments:
            self.get_session(session_id)  # unknown session → SessionNotFound; else simply no records
            return
        headers: dict[str, ArchiveHeader] = {}
        expected: int | None = None
        previous: bytes | None = None
        for segment in segments:
            if expected is None:
                if segment.first_index > from_index:
                    raise EvidenceCorrupt(
                        session_id, f"records {from_index}..{segment.first_index - 1} are not indexed"
                    )
                expected = segment.first_index
            elif segment.last_index < expected:
                # The same records archived twice (a replayed batch under another key): the
                # first copy is read; verification compares hashes, not copies.
                logger.warning(
                    "session %s: segment %d..%d in %s repeats records already read",
                    session_id,
                    segment.first_index,
                    segment.last_index,
                    segment.object_key,
                )
                continue
            elif segment.first_index != expected:
                problem = "overlaps" if segment.first_index < expected else "leaves a hole before"
                raise EvidenceCorrupt(
                    session_id,
                    f"segment {segment.first_index}..{segment.last_index} {problem} record {expected}",
                    object_key=segment.object_key,
                )
            block = self._read_segment(session_id, segment, headers)
            for record in block:
                index = record.value["index"]
                if check_links:
                    if index == 0:
                        previous = GENESIS
                    if previous is not None and bytes(record.value["prev_hash"]) != previous:
                        raise EvidenceCorrupt(
                            session_id,
                            f"record {index} does not link to record {index - 1}: one of them was altered",
                            object_key=segment.object_key,
                        )
                    previous = record_hash(record.raw)
                if index >= from_index:
                    yield record
            expected = segment.last_index + 1

    def _read_segment(
        self, session_id: str, segment: queries.SegmentRow, headers: dict[str, ArchiveHeader]
    ) -> list[ArchivedRecord]:
        key = segment.object_key
        try:
            header = headers.get(key)
            if header is None:
                header_bytes = self._store.get_range(key, 0, segment.header_length)
                header = parse_header(header_bytes)
                if header.length != segment.header_length:
                    raise EvidenceCorrupt(
                        session_id,
                        f"header is {header.length} bytes, index says {segment.header_length}",
                        object_key=key,
                    )
                headers[key] = header
            block_bytes = self._store.get_range(key, segment.block_offset, segment.block_length)
            if len(block_bytes) != segment.block_length:
                raise EvidenceCorrupt(
                    session_id,
                    f"block at {segment.block_offset} is truncated "
                    f"({len(block_bytes)} of {segment.block_length} bytes)",
                    object_key=key,
                )
            records = read_block(header, block_bytes)
        except ObjectNotFound as exc:
            raise EvidenceCorrupt(session_id, "archive object is missing", object_key=key) from exc
        except ObjectStoreError as exc:
            # Outages, and refusals such as a revoked permission: the evidence may be intact,
            # this process just cannot read it now.
            raise ArchiveUnavailable(f"object store unavailable: {exc}") from exc
        except ArchiveFormatError as exc:
            raise EvidenceCorrupt(
                session_id, f"archive block does not decode: {exc}", object_key=key
            ) from exc
        _check_block(session_id, segment, records)
        return records


def _check_block(session_id: str, segment: queries.SegmentRow, records: Sequence[ArchivedRecord]) -> None:
    """The block holds exactly the records the index says: this session, first..last, in order."""
    expected = segment.last_index - segment.first_index + 1
    if len(records) != expected or segment.record_count != expected:
        raise EvidenceCorrupt(
            session_id,
            f"block holds {len(records)} records, index says {segment.first_index}..{segment.last_index}",
            object_key=segment.object_key,
        )
    for offset, record in enumerate(records):
        value = record.value
        if value.get("session_id") != session_id or value.get("index") != segment.first_index + offset:
            raise EvidenceCorrupt(
                session_id,
                f"block holds record {value.get('session_id')!r}#{value.get('index')} "
                f"where the index says #{segment.first_index + offset}",
                object_key=segment.object_key,
            )


def verify_records(summary: SessionSummary, records: Sequence[ArchivedRecord]) -> Verdict:
    """Verify a session's archived records (in chain order) against the chain rules and the index.

    Checks, in order:
      1. chain: ledger.chain.verify_chain (membership, positions, links, seal), requiring a
         SEAL record when the index says the session is sealed;
      2. index.record_count: the archive holds at least as many records as the index counted
         (more is allowed only while the session is open: the index row may lag the archive);
      3. index.head_hash: the hash of the record the index calls the head is the index's head.
    """
    session_id = summary.session_id
    passed: list[str] = []

    def failed(check: str, detail: str, index: int | None, count: int, head: bytes | None) -> Verdict:
        logger.error("verify %s: %s failed at %s: %s", session_id, check, index, detail)
        return Verdict(
            session_id,
            False,
            count,
            head.hex() if head else None,
            False,
            0,
            0,
            tuple(passed),
            VerifyFailure(check, detail, index),
        )

    try:  # 1
        chain = verify_chain(session_id, ((r.raw, r.value) for r in records), require_seal=summary.sealed)
    except ChainBroken as exc:
        return failed(f"chain.{exc.check}", exc.detail, exc.index, len(records), None)
    passed.append("chain")
    indexed = summary.record_count
    if chain.record_count < indexed or (summary.sealed and chain.record_count != indexed):  # 2
        return failed(
            "index.record_count",
            f"archive holds {chain.record_count} records, index says {indexed}",
            None,
            chain.record_count,
            chain.head_hash,
        )
    passed.append("index.record_count")
    if indexed > 0:  # 3
        head = record_hash(records[indexed - 1].raw).hex()
        if head != summary.head_hash.lower():
            return failed(
                "index.head_hash",
                f"record {indexed - 1} hashes to {head}, index says {summary.head_hash}",
                indexed - 1,
                chain.record_count,
                chain.head_hash,
            )
    passed.append("index.head_hash")
    return Verdict(
        session_id,
        True,
        chain.record_count,
        chain.head_hash.hex(),
        chain.sealed,
        chain.gaps,
        chain.forks,
        tuple(passed),
        None,
    )


# -- JSON rendering ---------------------------------------------------------------------------


def record_to_json(record: ArchivedRecord) -> dict[str, Any]:
    """One sealed record as a JSON-ready dict (see the module docstring for bytes fields)."""
    value = record.value
    event = value.get("event")
    body_type: str | None = None
    body: dict[str, Any] | None = None
    event_time_us: int | None = None
    if event is not None:
        full_name, fields = event["body"]
        body_type = full_name.rsplit(".", 1)[-1]
        body = _jsonable(fields)
        event_time_us = int(event["event_time"])
    seal = value.get("seal")
    return {
        "index": int(value["index"]),
        "kind": value["kind"],
        "source_seq": value.get("source_seq"),
        "event_id": event["event_id"] if event is not None else None,
        "event_time": iso_utc(event_time_us) if event_time_us is not None else None,
        "event_time_us": event_time_us,
        "body_type": body_type,
        "body": body,
        "attributes": dict(event.get("attributes") or {}) if event is not None else {},
        "gap": dict(value["gap"]) if value.get("gap") else None,
        "seal": (
            {
                "reason": seal["reason"],
                "record_count": seal["record_count"],
                "last_seq": seal["last_seq"],
                "head_hash": bytes(seal["head_hash"]).hex(),
            }
            if seal
            else None
        ),
        "record_hash": record_hash(record.raw).hex(),
        "prev_hash": bytes(value["prev_hash"]).hex(),
        "findings": [
            {
                "entity_type": f["entity_type"],
                "field": f["field"],
                "start": f["start"],
                "end": f["end"],
                "blind_index": bytes(f["blind_index"]).hex(),
            }
            for f in value.get("findings") or []
        ],
        "risk": _jsonable(value["risk"]) if value.get("risk") else None,
    }


def _jsonable(node: Any) -> Any:
    if isinstance(node, Mapping):
        out: dict[str, Any] = {}
        for key, item in node.items():
            if isinstance(item, bytes | bytearray):
                raw = bytes(item)
                out[key] = raw.decode("utf-8", errors="replace")
                if not _is_utf8(raw):
                    out[f"{key}_base64"] = base64.b64encode(raw).decode("ascii")
            else:
                out[key] = _jsonable(item)
        return out
    if isinstance(node, tuple) and len(node) == 2 and isinstance(node[0], str) and isinstance(node[1], dict):
        # A union of records reads as (full name, value): keep which branch it was.
        return {"type": node[0].rsplit(".", 1)[-1], **_jsonable(node[1])}
    if isinstance(node, list | tuple):
        return [_jsonable(item) for item in node]
    if isinstance(node, bytes | bytearray):
        return bytes(node).hex()
    return node


def _is_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


# -- helpers ----------------------------------------------------------------------------------


def _summary(row: Mapping[str, Any]) -> SessionSummary:
    return SessionSummary(
        session_id=row["session_id"],
        identity=IdentityInfo(
            principal=row["principal"],
            kind=row["identity_kind"],
            issuer=row["issuer"] or None,
            groups=tuple(row["groups"]),
        ),
        target=TargetInfo(
            name=row["target_name"],
            kind=row["target_kind"],
            host=row["target_host"] or None,
            database=row["target_database"] or None,
        ),
        gateway=GatewayInfo(id=row["gateway_id"], product=row["gateway_product"]),
        started_at_us=int(row["started_at_us"]),
        last_event_at_us=int(row["last_event_at_us"]),
        record_count=int(row["record_count"]),
        last_seq=int(row["last_seq"]),
        sealed=bool(row["sealed"]),
        seal_reason=row["seal_reason"],
        gap_count=int(row["gap_count"]),
        fork_count=int(row["fork_count"]),
        head_hash=row["head_hash_hex"].lower(),
        max_risk=int(row["max_risk"]),
    )


def _text_filter(name: str, value: str | None) -> str:
    if value is None:
        return ""
    if len(value) > MAX_FILTER_LENGTH:
        raise InvalidQuery(f"{name} is longer than {MAX_FILTER_LENGTH} characters")
    return value


def _enum_filter(name: str, value: str | None, allowed: tuple[str, ...]) -> str:
    if not value:
        return ""
    normalised = value.strip().upper()
    if normalised not in allowed:
        raise InvalidQuery(f"{name} must be one of {', '.join(allowed)}; got {value!r}")
    return normalised


def _kinds_filter(kinds: Collection[str] | None) -> frozenset[str] | None:
    if not kinds:
        return None
    allowed = record_kinds()
    normalised = frozenset(kind.strip().upper() for kind in kinds)
    unknown = sorted(normalised - set(allowed))
    if unknown:
        raise InvalidQuery(f"unknown record kind(s) {', '.join(unknown)}; known: {', '.join(allowed)}")
    return normalised


def _encode_cursor(started_at_us: int, session_id: str) -> str:
    payload = json.dumps({"v": _CURSOR_VERSION, "t": started_at_us, "s": session_id}, separators=(",", ":"))
    return base64.urlsafe_b64encode(payload.encode()).decode("ascii").rstrip("=")


def _decode_cursor(cursor: str) -> tuple[int, str]:
    """The keyset position a cursor names; anything not minted by _encode_cursor is InvalidQuery."""
    invalid = InvalidQuery("cursor is not valid (use next_cursor from a previous page)")
    if len(cursor) > 2048:
        raise invalid
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        payload = json.loads(raw)
    except (binascii.Error, ValueError) as exc:
        raise invalid from exc
    if not isinstance(payload, dict) or payload.get("v") != _CURSOR_VERSION:
        raise invalid
    started_at_us, session_id = payload.get("t"), payload.get("s")
    if (
        not isinstance(started_at_us, int)
        or isinstance(started_at_us, bool)
        or not queries.INT64_MIN <= started_at_us <= queries.INT64_MAX
        or not isinstance(session_id, str)
        or not session_id
    ):
        raise invalid
    return started_at_us, session_id


__all__ = [
    "GatewayInfo",
    "IdentityInfo",
    "SessionPage",
    "SessionReader",
    "SessionSummary",
    "TargetInfo",
    "Verdict",
    "VerifyFailure",
    "identity_kinds",
    "iso_utc",
    "record_kinds",
    "record_to_json",
    "target_kinds",
    "verify_records",
]
