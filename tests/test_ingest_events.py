"""The session builder: envelope, seq, ids, time, and that every body it builds encodes."""

from __future__ import annotations

import itertools
import uuid

import pytest

from ingest.events import (
    IDENTITY_KINDS,
    POLICY_OUTCOMES,
    TARGET_KINDS,
    SessionBuilder,
    SessionClosed,
    SessionEvent,
    UnknownKind,
    body_name,
    make_gateway,
    make_identity,
    make_target,
    schema_enums,
)
from schemas import EVENT_SCHEMA, default_registry
from schemas.bodies import BODY_TYPES, SESSION_END, TERMINAL_INPUT, TERMINAL_OUTPUT


def _builder(clock_start: int = 1_700_000_000_000_000) -> SessionBuilder:
    ticks = itertools.count(clock_start, 1000)
    return SessionBuilder(
        "sess-1",
        make_identity("ci:build#7", "CI_JOB", issuer="https://ci.example", groups=["ci"]),
        make_target("orders-db", "POSTGRES", host="db.internal", database="orders"),
        make_gateway("gw-1", "hoop", "1.0"),
        clock=lambda: next(ticks),
    )


def _every_body(b: SessionBuilder) -> list[SessionEvent]:
    return [
        b.start("debug", client="psql 16", source_address="10.0.0.1", cols=80, rows=24, term="xterm"),
        b.output(b"\x1b[31mred\x1b[0m \xe2\x9c"),  # a UTF-8 character split across events is fine
        b.input(b"ls\r"),
        b.resize(120, 40),
        b.query("SELECT * FROM t WHERE id = $1", ["1", None], "orders"),
        b.query_result(["id", "email"], [["1", "a@example.com"], ["2", None]], duration_us=10),
        b.kubernetes("get", "secrets", "prod", "db", 200, response_body='{"data":{}}', subresource=None),
        b.http("GET", "https://api/x", 404, request_headers={"Accept": "*/*"}, duration_us=5),
        b.command(["ls", "-la"], 0, "/tmp"),
        b.approval_requested("r-1", "sudo", ["sre"]),
        b.approval_decided("r-1", False, "alice", "no"),
        b.policy_decision("secrets", "DENY", "rule-1", "not in window"),
        b.end("exit", 0),
    ]


def test_literal_kinds_match_the_schema() -> None:
    enums = schema_enums()
    assert enums["IdentityKind"] == IDENTITY_KINDS
    assert enums["TargetKind"] == TARGET_KINDS
    assert enums["PolicyOutcome"] == POLICY_OUTCOMES


def test_body_types_match_the_schema_union() -> None:
    schema = default_registry().schema(EVENT_SCHEMA)
    body = next(f for f in schema["fields"] if f["name"] == "body")
    assert tuple(branch["name"] for branch in body["type"]) == BODY_TYPES


def test_kinds_are_validated() -> None:
    assert make_identity("bot", "AI_AGENT")["kind"] == "AI_AGENT"
    assert make_target("db", "MYSQL")["kind"] == "MYSQL"
    with pytest.raises(UnknownKind, match="IdentityKind 'ROBOT'"):
        make_identity("bot", "ROBOT")
    with pytest.raises(UnknownKind, match="TargetKind"):
        make_target("db", "postgres")  # symbols are case-sensitive
    with pytest.raises(UnknownKind, match="PolicyOutcome"):
        _builder().policy_decision("p", "MAYBE")


def test_seq_ids_and_times() -> None:
    b = _builder()
    events = _every_body(b)
    assert [e["seq"] for e in events] == list(range(len(events)))
    assert len({e["event_id"] for e in events}) == len(events)
    for event in events:
        assert uuid.UUID(event["event_id"]).version == 4
        assert event["session_id"] == "sess-1"
    times = [e["event_time"] for e in events]
    assert times == sorted(times)
    assert len(set(times)) == len(times)
    assert b.next_seq == len(events)
    assert b.ended


def test_explicit_time_wins_over_the_clock() -> None:
    b = _builder()
    assert b.output(b"x", at_us=42)["event_time"] == 42
    assert b.output(b"y")["event_time"] == 1_700_000_000_000_000


def test_default_session_id_is_a_uuid() -> None:
    b = SessionBuilder(None, make_identity("x"), make_target("t"), make_gateway("g"))
    assert uuid.UUID(b.session_id).version == 4
    assert b.output(b"")["session_id"] == b.session_id


def test_every_body_round_trips_through_the_codec() -> None:
    registry = default_registry()
    for event in _every_body(_builder()):
        decoded = registry.decode(registry.encode(EVENT_SCHEMA, event))
        assert decoded.value == event


def test_output_and_input_stay_distinct() -> None:
    b = _builder()
    registry = default_registry()
    out, inp = b.output(b"same"), b.input(b"same")
    assert body_name(out) == TERMINAL_OUTPUT
    assert body_name(inp) == TERMINAL_INPUT
    assert registry.decode(registry.encode(EVENT_SCHEMA, inp)).value["body"][0] == TERMINAL_INPUT


def test_terminal_data_must_be_bytes() -> None:
    b = _builder()
    with pytest.raises(TypeError, match="must be bytes"):
        b.output("text")  # type: ignore[arg-type]
    assert b.output(bytearray(b"ok"))["body"][1]["data"] == b"ok"  # type: ignore[arg-type]
    assert b.next_seq == 1  # the refused event took no seq


def test_no_events_after_the_end() -> None:
    b = _builder()
    b.start()
    assert body_name(b.end()) == SESSION_END
    with pytest.raises(SessionClosed):
        b.output(b"late")


def test_start_needs_both_dimensions() -> None:
    with pytest.raises(ValueError, match="both cols and rows"):
        _builder().start(cols=80)
    event = _builder().start(cols=80, rows=24)
    assert event["body"][1]["terminal"] == {"cols": 80, "rows": 24}


def test_attributes_are_per_event_copies() -> None:
    b = SessionBuilder(
        "s", make_identity("x"), make_target("t"), make_gateway("g"), attributes={"env": "prod"}
    )
    first = b.start(attributes={"ticket": "OPS-1"})
    second = b.output(b"")
    assert first["attributes"] == {"env": "prod", "ticket": "OPS-1"}
    second["attributes"]["mutated"] = "yes"
    assert b.output(b"")["attributes"] == {"env": "prod"}


def test_query_result_row_count_defaults_to_rows() -> None:
    b = _builder()
    assert b.query_result(["a"], [["1"], ["2"]])["body"][1]["row_count"] == 2
    truncated = b.query_result(["a"], [["1"]], row_count=500, truncated=True)["body"][1]
    assert (truncated["row_count"], truncated["truncated"]) == (500, True)
