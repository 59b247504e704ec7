"""Small builders of event dicts for tests that need exact control over seq and content."""

from __future__ import annotations

from typing import Any

NS = "dev.blackbox.v1."
T0 = 1_700_000_000_000_000


def body(kind: str, **fields: Any) -> tuple[str, dict[str, Any]]:
    return (NS + kind, fields)


def output(text: str | bytes) -> tuple[str, dict[str, Any]]:
    return body("TerminalOutput", data=text.encode() if isinstance(text, str) else text)


def end(reason: str = "closed") -> tuple[str, dict[str, Any]]:
    return body("SessionEnd", reason=reason, exit_code=0)


def make_event(
    session_id: str,
    seq: int,
    event_body: tuple[str, dict[str, Any]] | None = None,
    *,
    event_id: str | None = None,
    principal: str = "ci-deploy",
    identity_kind: str = "CI_JOB",
    target: str = "orders-db",
    target_kind: str = "POSTGRES",
    at_us: int | None = None,
) -> dict[str, Any]:
    return {
        "event_id": event_id or f"{session_id}-{seq}",
        "session_id": session_id,
        "seq": seq,
        "event_time": at_us if at_us is not None else T0 + seq * 1000,
        "gateway": {"id": "gw-1", "product": "test", "version": "0"},
        "identity": {"principal": principal, "kind": identity_kind, "issuer": None, "groups": []},
        "target": {"name": target, "kind": target_kind, "host": None, "database": None},
        "attributes": {},
        "body": event_body or output(f"line {seq}\r\n"),
    }


class FailsOnSeq:
    """A masker or scorer that raises on one seq, its message quoting the event as errors do."""

    def __init__(self, seq: int) -> None:
        self.seq = seq

    def _check(self, event: dict[str, Any]) -> None:
        if event["seq"] == self.seq:
            raise ValueError("invalid literal for int(): 'jane@example.com'")

    def mask(self, event: dict[str, Any], *, alone: bool = False) -> tuple[dict[str, Any], list[Any]]:
        self._check(event)
        return event, []

    def end_session(self, session_id: str) -> bytes:
        return b""

    def holds(self, session_id: str) -> bool:
        return False

    def prompt_open(self, session_id: str) -> bool:
        return False

    def holds_bytes(self, session_id: str) -> bool:
        return False

    def score(self, event: dict[str, Any], findings: Any) -> dict[str, Any] | None:
        self._check(event)
        return None

    def prepare(self, events: Any) -> None:
        pass

    def is_alert(self, event: Any, risk: Any) -> bool:
        return False
