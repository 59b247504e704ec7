"""The read side: find sessions, read their records from the archive, verify and render them.

Imports `schemas`, `storage` and `ledger` only; never `streams` (the writers) nor `api`.
"""

from replay.asciicast import render_asciicast
from replay.errors import ArchiveUnavailable, EvidenceCorrupt, InvalidQuery, ReplayError, SessionNotFound
from replay.reader import (
    GatewayInfo,
    IdentityInfo,
    SessionPage,
    SessionReader,
    SessionSummary,
    TargetInfo,
    Verdict,
    VerifyFailure,
    identity_kinds,
    iso_utc,
    record_kinds,
    record_to_json,
    target_kinds,
    verify_records,
)
from storage.archive import ArchivedRecord  # what the read side hands out: a record, its exact bytes

__all__ = [
    "ArchiveUnavailable",
    "ArchivedRecord",
    "EvidenceCorrupt",
    "GatewayInfo",
    "IdentityInfo",
    "InvalidQuery",
    "ReplayError",
    "SessionNotFound",
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
    "render_asciicast",
    "target_kinds",
    "verify_records",
]
