"""Small builders of event dicts for tests that need exact control over seq and content."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Any

from masking.engine import MaskingEngine
from masking.event_masker import EventMasker
from masking.policy import CustomEntity, load_default_policy

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


# Text on which `trap_masker`'s masking raises: content no detector foresaw, as far as the seal
# step can tell.
TRAP = b"<<trap>>"


class _Trap:
    """Stands in for a custom entity's compiled regex and raises on text holding `TRAP`, its
    message quoting the text, as errors do."""

    def finditer(self, data: bytes) -> Iterator[Any]:
        if TRAP in data:
            raise ValueError(f"cannot read {data[-60:]!r}")
        return iter(())


def trap_masker(key: bytes) -> EventMasker:
    """The shipped masker (default detectors) whose masking raises on output holding `TRAP`."""
    default = load_default_policy().default
    trapped = dataclasses.replace(default, custom=(CustomEntity("TRAP", _Trap()),))  # type: ignore[arg-type]
    return EventMasker(MaskingEngine(trapped, key))
