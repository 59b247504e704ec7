"""The per-session hash chain.

record_hash = SHA-256(Avro binary of the SealedRecord); each record carries the previous
record's hash in ``prev_hash`` (32 zero bytes for the first), so editing, dropping or
reordering any record breaks every later link, and a session's SEAL record commits to its
record count and head.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

GENESIS = bytes(32)


def record_hash(record_bytes: bytes) -> bytes:
    return hashlib.sha256(record_bytes).digest()


class ChainBroken(Exception):
    """A session's chain failed a check; says which record and which check."""

    def __init__(self, session_id: str, index: int, check: str, detail: str) -> None:
        super().__init__(f"session {session_id} record {index}: {check}: {detail}")
        self.session_id = session_id
        self.index = index
        self.check = check
        self.detail = detail


@dataclass(frozen=True)
class ChainSummary:
    session_id: str
    record_count: int
    head_hash: bytes
    sealed: bool
    gaps: int
    forks: int


def verify_chain(
    session_id: str, records: Iterable[tuple[bytes, Any]], *, require_seal: bool = False
) -> ChainSummary:
    """Check one session's records, given in archive order as (exact bytes, decoded value).

    Checks, in order, for every record:
      1. it belongs to this session;
      2. its index is the next position (no record dropped, duplicated or reordered);
      3. its prev_hash is the previous record's hash (no record edited or replaced);
      4. nothing follows a SEAL record;
      5. a SEAL record's count and head match the chain before it.
    Then: 6. the chain ends with a SEAL record, when ``require_seal``.
    """
    head = GENESIS
    expected_index = 0
    sealed = False
    gaps = forks = 0
    for raw, value in records:
        index = int(value["index"])
        if value["session_id"] != session_id:  # 1
            raise ChainBroken(session_id, index, "session", f"record belongs to {value['session_id']!r}")
        if index != expected_index:  # 2
            raise ChainBroken(session_id, index, "index", f"expected record {expected_index}")
        if value["prev_hash"] != head:  # 3
            raise ChainBroken(session_id, index, "prev_hash", "does not match the previous record's hash")
        if sealed:  # 4
            raise ChainBroken(session_id, index, "after_seal", "record follows the session's SEAL record")
        kind = value["kind"]
        if kind == "SEAL":  # 5
            seal = value["seal"]
            if seal["record_count"] != expected_index or seal["head_hash"] != head:
                raise ChainBroken(
                    session_id, index, "seal", "seal record's count or head does not match the chain"
                )
            sealed = True
        elif kind == "GAP":
            gaps += 1
        elif kind == "FORK":
            forks += 1
        head = record_hash(raw)
        expected_index += 1
    if require_seal and not sealed:  # 6
        raise ChainBroken(session_id, expected_index, "unsealed", "session has no SEAL record")
    return ChainSummary(session_id, expected_index, head, sealed, gaps, forks)
