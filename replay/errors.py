"""What can go wrong when reading a session, as the read side's callers need to tell it apart.

Callers act differently on each: a missing session or a bad query is the caller's problem, an
outage is worth retrying, and corrupt evidence is an incident to investigate, never a retry.
"""

from __future__ import annotations


class ReplayError(Exception):
    """Base of every error the read side raises on purpose."""


class SessionNotFound(ReplayError):
    """No session with this id is indexed."""

    def __init__(self, session_id: str) -> None:
        super().__init__(f"session {session_id!r} not found")
        self.session_id = session_id


class InvalidQuery(ReplayError):
    """The caller asked for something that cannot be answered (bad filter, cursor or range)."""


class ArchiveUnavailable(ReplayError):
    """The index or the object store cannot be reached right now; retrying may succeed."""


class EvidenceCorrupt(ReplayError):
    """Archived bytes do not decode, are missing, or do not match what the index says they hold."""

    def __init__(self, session_id: str, detail: str, *, object_key: str | None = None) -> None:
        where = f" (object {object_key})" if object_key else ""
        super().__init__(f"session {session_id}: {detail}{where}")
        self.session_id = session_id
        self.detail = detail
        self.object_key = object_key
