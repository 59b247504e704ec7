"""What makes a decoded event acceptable. Invalid is not transient: these go to the DLQ."""

from __future__ import annotations

from typing import Any

MAX_ID_LENGTH = 256
# Event times outside these bounds are clock bugs or forgeries, not recordings.
MIN_EVENT_TIME_US = 946_684_800_000_000  # 2000-01-01
MAX_EVENT_TIME_US = 4_102_444_800_000_000  # 2100-01-01
MAX_TERMINAL_DIMENSION = 10_000


class InvalidEvent(ValueError):
    """An event that decodes but breaks the contract; the message says which rule."""


def validate_event(event: dict[str, Any], message_key: bytes | None) -> None:
    session_id = event["session_id"]
    if not session_id or len(session_id) > MAX_ID_LENGTH:
        raise InvalidEvent(f"session_id must be 1..{MAX_ID_LENGTH} characters")
    if message_key is not None and message_key != session_id.encode():
        # The chain of a session lives in one partition; a wrong key would split it.
        raise InvalidEvent("message key differs from the event's session_id")
    if not event["event_id"] or len(event["event_id"]) > MAX_ID_LENGTH:
        raise InvalidEvent(f"event_id must be 1..{MAX_ID_LENGTH} characters")
    if event["seq"] < 0:
        raise InvalidEvent(f"seq must be >= 0, got {event['seq']}")
    if not MIN_EVENT_TIME_US <= event["event_time"] <= MAX_EVENT_TIME_US:
        raise InvalidEvent(f"event_time {event['event_time']} is outside 2000..2100 (microseconds expected)")
    if not event["identity"]["principal"]:
        raise InvalidEvent("identity.principal is empty")
    if not event["target"]["name"]:
        raise InvalidEvent("target.name is empty")
    body_type, body = event["body"]
    if body_type.endswith(".TerminalResize") or (
        body_type.endswith(".SessionStart") and body.get("terminal")
    ):
        size = body if body_type.endswith(".TerminalResize") else body["terminal"]
        if not (0 < size["cols"] <= MAX_TERMINAL_DIMENSION and 0 < size["rows"] <= MAX_TERMINAL_DIMENSION):
            raise InvalidEvent(f"terminal size {size['cols']}x{size['rows']} is out of range")
