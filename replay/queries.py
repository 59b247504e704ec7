"""Every SQL statement of the read side, and the conversion of its Arrow results to Python.

The statements are static text: filters that the caller leaves out are bound as neutral values
('' matches everything, the widest time range) instead of being spliced into the SQL, so no
caller input ever becomes SQL and each statement can be read here as it runs. The `sessions`
table is a ReplacingMergeTree, so it is always read with FINAL: without it, a session updated
by several index batches would appear once per unmerged version.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from replay.errors import ArchiveUnavailable
from storage.index import Index, IndexUnavailable

logger = logging.getLogger(__name__)

INT64_MAX = (1 << 63) - 1
INT64_MIN = -(1 << 63)

# Times cross as integer microseconds (toUnixTimestamp64Micro) rather than Arrow timestamps,
# so that no client-side timezone or precision conversion can shift them. Both session
# statements return these columns (this module's own text; every value is a bound parameter).
_SESSION_COLUMNS = """    session_id,
    principal,
    identity_kind,
    issuer,
    groups,
    target_name,
    target_kind,
    target_host,
    target_database,
    gateway_id,
    gateway_product,
    toUnixTimestamp64Micro(started_at) AS started_at_us,
    toUnixTimestamp64Micro(last_event_at) AS last_event_at_us,
    record_count,
    last_seq,
    lower(hex(head_hash)) AS head_hash_hex,
    sealed,
    seal_reason,
    gap_count,
    fork_count,
    max_risk"""

# Newest first, ties broken by session_id so that the keyset cursor (started_at, session_id)
# names exactly one position; the tuple comparison is the keyset condition.
SEARCH_SESSIONS = (
    "\nSELECT\n"
    + _SESSION_COLUMNS
    + """
FROM sessions FINAL
WHERE ({principal:String} = '' OR principal = {principal:String})
  AND ({identity_kind:String} = '' OR identity_kind = {identity_kind:String})
  AND ({target:String} = '' OR target_name = {target:String})
  AND ({target_kind:String} = '' OR target_kind = {target_kind:String})
  AND toUnixTimestamp64Micro(started_at) >= {since_us:Int64}
  AND toUnixTimestamp64Micro(started_at) < {until_us:Int64}
  AND (toUnixTimestamp64Micro(started_at), session_id)
      < ({after_started_us:Int64}, {after_session_id:String})
ORDER BY started_at DESC, session_id DESC
LIMIT {limit:UInt32}
"""
)

GET_SESSION = (
    "\nSELECT\n"
    + _SESSION_COLUMNS
    + """
FROM sessions FINAL
WHERE session_id = {session_id:String}
LIMIT 1
"""
)

# DISTINCT because an index batch replayed outside the deduplication window may repeat rows;
# identical rows describe the same block and are harmless once collapsed.
SESSION_SEGMENTS = """
SELECT DISTINCT
    first_index,
    last_index,
    record_count,
    object_key,
    header_length,
    block_offset,
    block_length
FROM segments
WHERE session_id = {session_id:String}
  AND last_index >= {from_index:UInt64}
ORDER BY first_index, object_key
"""

PING = "SELECT 1 AS ok"


@dataclass(frozen=True)
class SessionFilter:
    """Search filters; '' and the widest time range mean "no filter"."""

    principal: str = ""
    identity_kind: str = ""
    target: str = ""
    target_kind: str = ""
    since_us: int = INT64_MIN
    until_us: int = INT64_MAX


@dataclass(frozen=True)
class SegmentRow:
    """Where a run of a session's records sits in the archive."""

    first_index: int
    last_index: int
    record_count: int
    object_key: str
    header_length: int
    block_offset: int
    block_length: int


def search_sessions(
    index: Index,
    where: SessionFilter,
    *,
    after: tuple[int, str] | None,
    limit: int,
) -> list[dict[str, Any]]:
    """Session rows matching ``where``, newest first, strictly after the keyset ``after``."""
    after_started_us, after_session_id = after if after is not None else (INT64_MAX, "")
    return _query(
        index,
        SEARCH_SESSIONS,
        {
            "principal": where.principal,
            "identity_kind": where.identity_kind,
            "target": where.target,
            "target_kind": where.target_kind,
            "since_us": where.since_us,
            "until_us": where.until_us,
            "after_started_us": after_started_us,
            "after_session_id": after_session_id,
            "limit": limit,
        },
        text_columns=_SESSION_TEXT_COLUMNS,
    )


def get_session(index: Index, session_id: str) -> dict[str, Any] | None:
    rows = _query(index, GET_SESSION, {"session_id": session_id}, text_columns=_SESSION_TEXT_COLUMNS)
    return rows[0] if rows else None


def session_segments(index: Index, session_id: str, *, from_index: int = 0) -> list[SegmentRow]:
    """The session's archive blocks that hold records at or after ``from_index``, in order."""
    rows = _query(
        index,
        SESSION_SEGMENTS,
        {"session_id": session_id, "from_index": from_index},
        text_columns=("object_key",),
    )
    return [
        SegmentRow(
            first_index=int(row["first_index"]),
            last_index=int(row["last_index"]),
            record_count=int(row["record_count"]),
            object_key=row["object_key"],
            header_length=int(row["header_length"]),
            block_offset=int(row["block_offset"]),
            block_length=int(row["block_length"]),
        )
        for row in rows
    ]


def ping(index: Index) -> None:
    """Raise ArchiveUnavailable unless the index answers a trivial query."""
    _query(index, PING, None, text_columns=())


_SESSION_TEXT_COLUMNS = (
    "session_id",
    "principal",
    "identity_kind",
    "issuer",
    "target_name",
    "target_kind",
    "target_host",
    "target_database",
    "gateway_id",
    "gateway_product",
    "head_hash_hex",
    "seal_reason",
)


def _query(
    index: Index, sql: str, parameters: Mapping[str, Any] | None, *, text_columns: tuple[str, ...]
) -> list[dict[str, Any]]:
    try:
        table = index.query(sql, parameters)
    except IndexUnavailable as exc:
        raise ArchiveUnavailable(f"index unavailable: {exc}") from exc
    rows: list[dict[str, Any]] = table.to_pylist()
    for row in rows:
        for column in text_columns:
            row[column] = _text(row.get(column))
        if "groups" in row:
            row["groups"] = [_text(group) for group in row["groups"] or []]
    return rows


def _text(value: Any) -> str:
    # ClickHouse String columns may cross Arrow as binary (they hold bytes, not text); the
    # columns named as text here were written from Avro strings, so they are UTF-8.
    if value is None:
        return ""
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).decode("utf-8", errors="replace")
    return str(value)
