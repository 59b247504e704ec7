"""Session events as plain dicts that match ``dev.blackbox.v1.SessionEvent``, and a builder.

A gateway describes one session with a `SessionBuilder`: it stamps every event with the
session's envelope (identity, target, gateway), the next ``seq`` and a fresh event id, so a
gateway cannot get the chain's numbering wrong. Bodies are written as ``(full record name,
fields)`` tuples because TerminalOutput and TerminalInput have identical fields and Avro would
otherwise pick the first matching branch.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from functools import lru_cache
from typing import Any, Literal, TypedDict, get_args

from schemas import EVENT_SCHEMA, default_registry
from schemas.bodies import (
    APPROVAL_DECIDED,
    APPROVAL_REQUESTED,
    COMMAND,
    HTTP_EXCHANGE,
    KUBERNETES_API_CALL,
    POLICY_DECISION,
    QUERY,
    QUERY_RESULT,
    SESSION_END,
    SESSION_START,
    TERMINAL_INPUT,
    TERMINAL_OUTPUT,
    TERMINAL_RESIZE,
)

logger = logging.getLogger(__name__)


IdentityKind = Literal["UNKNOWN", "SERVICE_ACCOUNT", "CI_JOB", "SCANNER", "AI_AGENT", "HUMAN"]
TargetKind = Literal["OTHER", "POSTGRES", "MYSQL", "KUBERNETES", "SSH", "HTTP"]
PolicyOutcome = Literal["ALLOW", "DENY", "MASK", "REVIEW"]

IDENTITY_KINDS: tuple[str, ...] = get_args(IdentityKind)
TARGET_KINDS: tuple[str, ...] = get_args(TargetKind)
POLICY_OUTCOMES: tuple[str, ...] = get_args(PolicyOutcome)


class Identity(TypedDict):
    principal: str
    kind: str
    issuer: str | None
    groups: list[str]


class Target(TypedDict):
    name: str
    kind: str
    host: str | None
    database: str | None


class Gateway(TypedDict):
    id: str
    product: str
    version: str


Body = tuple[str, dict[str, Any]]


class SessionEvent(TypedDict):
    event_id: str
    session_id: str
    seq: int
    event_time: int
    gateway: Gateway
    identity: Identity
    target: Target
    attributes: dict[str, str]
    body: Body


class TerminalSize(TypedDict):
    cols: int
    rows: int


class UnknownKind(ValueError):
    """An enum value (identity kind, target kind, policy outcome) that the schema does not have."""


class SessionClosed(RuntimeError):
    """An event was built after the session's SessionEnd: its seq would follow the seal."""


def now_us() -> int:
    """Wall clock in microseconds since the Unix epoch (the unit of ``event_time``)."""
    return time.time_ns() // 1000


def new_event_id() -> str:
    return str(uuid.uuid4())


@lru_cache(maxsize=1)
def schema_enums() -> dict[str, tuple[str, ...]]:
    """Enum symbols as the shipped schema declares them, by short enum name."""
    enums: dict[str, tuple[str, ...]] = {}

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if node.get("type") == "enum":
                enums[str(node["name"]).rsplit(".", 1)[-1]] = tuple(node["symbols"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(default_registry().schema(EVENT_SCHEMA))
    return enums


def _check_symbol(enum: str, value: str) -> str:
    # Checked against the schema itself rather than the Literal types, so an enum added to the
    # .avsc is accepted at run time even before the Literal here is updated.
    symbols = schema_enums()[enum]
    if value not in symbols:
        raise UnknownKind(f"{enum} {value!r} is not one of {', '.join(symbols)}")
    return value


def make_identity(
    principal: str,
    kind: IdentityKind | str = "UNKNOWN",
    *,
    issuer: str | None = None,
    groups: Iterable[str] = (),
) -> Identity:
    """Who acted. ``kind`` must be an IdentityKind symbol of the schema."""
    return {
        "principal": principal,
        "kind": _check_symbol("IdentityKind", kind),
        "issuer": issuer,
        "groups": list(groups),
    }


def make_target(
    name: str,
    kind: TargetKind | str = "OTHER",
    *,
    host: str | None = None,
    database: str | None = None,
) -> Target:
    """What was accessed. ``database`` is the database, or the Kubernetes namespace."""
    return {"name": name, "kind": _check_symbol("TargetKind", kind), "host": host, "database": database}


def make_gateway(gateway_id: str, product: str = "unknown", version: str = "") -> Gateway:
    """Which gateway instance recorded the session."""
    return {"id": gateway_id, "product": product, "version": version}


def body_name(event: Mapping[str, Any]) -> str:
    """Full record name of an event's body, e.g. ``dev.blackbox.v1.TerminalOutput``."""
    body = event["body"]
    if isinstance(body, tuple) and len(body) == 2 and isinstance(body[0], str):
        return body[0]
    raise ValueError("event body must be a (full record name, fields) tuple")


class SessionBuilder:
    """Builds the events of one session: envelope, ``seq`` from 0 without gaps, fresh ids.

    Every method returns the event (a dict ready for the emitter) and takes ``at_us``, the time
    the gateway observed it in microseconds since the epoch; by default the builder's clock.
    """

    def __init__(
        self,
        session_id: str | None,
        identity: Identity,
        target: Target,
        gateway: Gateway,
        clock: Callable[[], int] = now_us,
        *,
        event_ids: Callable[[], str] = new_event_id,
        attributes: Mapping[str, str] | None = None,
        first_seq: int = 0,
    ) -> None:
        self.session_id = session_id if session_id is not None else str(uuid.uuid4())
        if not self.session_id:
            raise ValueError("session_id must not be empty: it is the Kafka key")
        self.identity = identity
        self.target = target
        self.gateway = gateway
        self.attributes: dict[str, str] = dict(attributes or {})
        self._clock = clock
        self._event_ids = event_ids
        self._next_seq = first_seq
        self._ended = False

    @property
    def next_seq(self) -> int:
        return self._next_seq

    @property
    def ended(self) -> bool:
        return self._ended

    def event(
        self,
        record_name: str,
        fields: dict[str, Any],
        *,
        at_us: int | None = None,
        attributes: Mapping[str, str] | None = None,
    ) -> SessionEvent:
        """An event with any body; the typed methods below are the usual way in."""
        if self._ended:
            raise SessionClosed(f"session {self.session_id} already ended at seq {self._next_seq - 1}")
        event: SessionEvent = {
            "event_id": self._event_ids(),
            "session_id": self.session_id,
            "seq": self._next_seq,
            "event_time": self._clock() if at_us is None else int(at_us),
            "gateway": self.gateway,
            "identity": self.identity,
            "target": self.target,
            # Copied per event so that a caller changing one event's attributes changes no other.
            "attributes": {**self.attributes, **attributes} if attributes else dict(self.attributes),
            "body": (record_name, fields),
        }
        self._next_seq += 1
        if record_name == SESSION_END:
            self._ended = True
        return event

    def start(
        self,
        purpose: str | None = None,
        *,
        client: str | None = None,
        source_address: str | None = None,
        cols: int | None = None,
        rows: int | None = None,
        term: str | None = None,
        at_us: int | None = None,
        attributes: Mapping[str, str] | None = None,
    ) -> SessionEvent:
        """The session's first event. ``attributes`` here describe the session once, not every event."""
        if (cols is None) != (rows is None):
            raise ValueError("give both cols and rows, or neither")
        terminal: TerminalSize | None = (
            {"cols": cols, "rows": rows} if cols is not None and rows is not None else None
        )
        return self.event(
            SESSION_START,
            {
                "purpose": purpose,
                "client": client,
                "source_address": source_address,
                "terminal": terminal,
                "term": term,
            },
            at_us=at_us,
            attributes=attributes,
        )

    def output(self, data: bytes, *, at_us: int | None = None) -> SessionEvent:
        return self.event(TERMINAL_OUTPUT, {"data": _as_bytes(data)}, at_us=at_us)

    def input(self, data: bytes, *, at_us: int | None = None) -> SessionEvent:
        return self.event(TERMINAL_INPUT, {"data": _as_bytes(data)}, at_us=at_us)

    def resize(self, cols: int, rows: int, *, at_us: int | None = None) -> SessionEvent:
        return self.event(TERMINAL_RESIZE, {"cols": cols, "rows": rows}, at_us=at_us)

    def query(
        self,
        statement: str,
        parameters: Sequence[str | None] = (),
        database: str | None = None,
        *,
        at_us: int | None = None,
    ) -> SessionEvent:
        return self.event(
            QUERY, {"statement": statement, "parameters": list(parameters), "database": database}, at_us=at_us
        )

    def query_result(
        self,
        columns: Sequence[str],
        rows: Sequence[Sequence[str | None]],
        *,
        row_count: int | None = None,
        truncated: bool = False,
        duration_us: int | None = None,
        error: str | None = None,
        at_us: int | None = None,
    ) -> SessionEvent:
        """``row_count`` defaults to ``len(rows)``; give it when the gateway kept only some rows."""
        return self.event(
            QUERY_RESULT,
            {
                "columns": list(columns),
                "rows": [list(row) for row in rows],
                "row_count": len(rows) if row_count is None else row_count,
                "truncated": truncated,
                "duration_us": duration_us,
                "error": error,
            },
            at_us=at_us,
        )

    def kubernetes(
        self,
        verb: str,
        resource: str,
        namespace: str | None = None,
        name: str | None = None,
        status_code: int = 200,
        *,
        response_body: str | None = None,
        subresource: str | None = None,
        request_body: str | None = None,
        at_us: int | None = None,
    ) -> SessionEvent:
        return self.event(
            KUBERNETES_API_CALL,
            {
                "verb": verb,
                "resource": resource,
                "namespace": namespace,
                "name": name,
                "subresource": subresource,
                "status_code": status_code,
                "request_body": request_body,
                "response_body": response_body,
            },
            at_us=at_us,
        )

    def http(
        self,
        method: str,
        url: str,
        status_code: int,
        *,
        request_headers: Mapping[str, str] | None = None,
        request_body: str | None = None,
        response_headers: Mapping[str, str] | None = None,
        response_body: str | None = None,
        duration_us: int | None = None,
        at_us: int | None = None,
    ) -> SessionEvent:
        return self.event(
            HTTP_EXCHANGE,
            {
                "method": method,
                "url": url,
                "status_code": status_code,
                "request_headers": dict(request_headers or {}),
                "request_body": request_body,
                "response_headers": dict(response_headers or {}),
                "response_body": response_body,
                "duration_us": duration_us,
            },
            at_us=at_us,
        )

    def command(
        self,
        argv: Sequence[str],
        exit_code: int | None = None,
        cwd: str | None = None,
        *,
        at_us: int | None = None,
    ) -> SessionEvent:
        return self.event(COMMAND, {"argv": list(argv), "cwd": cwd, "exit_code": exit_code}, at_us=at_us)

    def approval_requested(
        self,
        request_id: str,
        reason: str | None = None,
        approvers: Iterable[str] = (),
        *,
        at_us: int | None = None,
    ) -> SessionEvent:
        return self.event(
            APPROVAL_REQUESTED,
            {"request_id": request_id, "reason": reason, "approvers": list(approvers)},
            at_us=at_us,
        )

    def approval_decided(
        self,
        request_id: str,
        approved: bool,
        decided_by: str,
        comment: str | None = None,
        *,
        at_us: int | None = None,
    ) -> SessionEvent:
        return self.event(
            APPROVAL_DECIDED,
            {"request_id": request_id, "approved": approved, "decided_by": decided_by, "comment": comment},
            at_us=at_us,
        )

    def policy_decision(
        self,
        policy: str,
        decision: PolicyOutcome | str,
        rule: str | None = None,
        reason: str | None = None,
        *,
        at_us: int | None = None,
    ) -> SessionEvent:
        return self.event(
            POLICY_DECISION,
            {
                "policy": policy,
                "decision": _check_symbol("PolicyOutcome", decision),
                "rule": rule,
                "reason": reason,
            },
            at_us=at_us,
        )

    def end(
        self,
        reason: str = "closed",
        exit_code: int | None = None,
        *,
        at_us: int | None = None,
    ) -> SessionEvent:
        """The session's last event; the builder refuses further events (`SessionClosed`)."""
        return self.event(SESSION_END, {"reason": reason, "exit_code": exit_code}, at_us=at_us)


def _as_bytes(data: bytes) -> bytes:
    # A str here is the commonest gateway bug (the terminal's bytes were decoded somewhere);
    # Avro would reject it much later, inside a batch, far from the caller.
    if isinstance(data, bytes):
        return data
    if isinstance(data, bytearray | memoryview):
        return bytes(data)
    raise TypeError(f"terminal data must be bytes, not {type(data).__name__}")
