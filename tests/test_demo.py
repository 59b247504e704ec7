"""Demo sessions and the load generator: reproducible, well-formed, and realistic enough to
exercise masking and scoring later."""

from __future__ import annotations

import base64
import json
import uuid

import pytest

from blackbox.topics import ensure_topics
from ingest.demo import demo_sessions, emit_demo, generate_load
from ingest.events import SessionEvent
from schemas import BATCH_SCHEMA, EVENT_SCHEMA, default_registry
from schemas.bodies import (
    HTTP_EXCHANGE,
    KUBERNETES_API_CALL,
    QUERY_RESULT,
    SESSION_END,
    SESSION_START,
    TERMINAL_INPUT,
    TERMINAL_OUTPUT,
)
from tests.test_emitter import by_session, consume

START = 1_767_225_600_000_000


def _bodies(session: list[SessionEvent], name: str) -> list[dict[str, object]]:
    return [e["body"][1] for e in session if e["body"][0] == name]


def test_same_seed_same_sessions_ids_included() -> None:
    assert demo_sessions(5, 2, START) == demo_sessions(5, 2, START)
    assert demo_sessions(5, 1, START) != demo_sessions(6, 1, START)


def test_another_start_time_gives_new_ids() -> None:
    # Re-running the demo later must add sessions, not forks of earlier ones.
    earlier = {s[0]["session_id"] for s in demo_sessions(5, 1, START)}
    later = {s[0]["session_id"] for s in demo_sessions(5, 1, START + 3_600_000_000)}
    assert not earlier & later


def test_sessions_are_well_formed() -> None:
    registry = default_registry()
    sessions = demo_sessions(1, 2, START)
    assert len(sessions) == 8
    assert len({s[0]["session_id"] for s in sessions}) == 8
    assert len({e["event_id"] for s in sessions for e in s}) == sum(len(s) for s in sessions)
    for session in sessions:
        assert session[0]["body"][0] == SESSION_START
        assert session[-1]["body"][0] == SESSION_END
        assert [e["seq"] for e in session] == list(range(len(session)))
        times = [e["event_time"] for e in session]
        assert times == sorted(times)
        assert times[0] >= START
        assert {e["session_id"] for e in session} == {session[0]["session_id"]}
        for event in session:
            uuid.UUID(event["event_id"])
            assert registry.decode(registry.encode(EVENT_SCHEMA, event)).value == event


def test_the_four_stories() -> None:
    psql, kubectl, agent, scanner = demo_sessions(2, 1, START)
    assert [s[0]["identity"]["kind"] for s in (psql, kubectl, agent, scanner)] == [
        "CI_JOB",
        "SERVICE_ACCOUNT",
        "AI_AGENT",
        "SCANNER",
    ]

    cells = [cell for r in _bodies(psql, QUERY_RESULT) for row in r["rows"] for cell in row]  # type: ignore[attr-defined]
    assert any("@" in str(cell) for cell in cells)  # personal data for masking to find
    digits = [str(cell).replace(" ", "") for cell in cells]
    assert any(d.isdigit() and len(d) >= 15 for d in digits)  # and a card number
    assert any(r["error"] for r in _bodies(psql, QUERY_RESULT))

    [secret] = [c for c in _bodies(kubectl, KUBERNETES_API_CALL) if c["resource"] == "secrets" and c["name"]]
    data = json.loads(str(secret["response_body"]))["data"]
    assert base64.b64decode(data["password"])  # Kubernetes Secrets carry base64 values
    assert any(c["status_code"] == 403 for c in _bodies(kubectl, KUBERNETES_API_CALL))

    output = b"".join(o["data"] for o in _bodies(agent, TERMINAL_OUTPUT))  # type: ignore[misc]
    assert b"\x1b[" in output
    assert b"AWS_SECRET_ACCESS_KEY=" in output
    assert _bodies(agent, TERMINAL_INPUT)
    assert agent[0]["body"][1]["terminal"] == {"cols": 120, "rows": 32}

    exchanges = _bodies(scanner, HTTP_EXCHANGE)
    assert len(exchanges) >= 40
    assert {200, 404} <= {x["status_code"] for x in exchanges}
    assert any("/api/v1/users/" in str(x["url"]) for x in exchanges)


def test_load_generator() -> None:
    registry = default_registry()
    sessions = list(generate_load(20, 30, seed=3, start_us=START))
    assert sessions == list(generate_load(20, 30, seed=3, start_us=START))
    assert [len(s) for s in sessions] == [30] * 20
    assert len({e["event_id"] for s in sessions for e in s}) == 600
    for session in sessions:
        assert [e["seq"] for e in session] == list(range(30))
        assert session[0]["body"][0] == SESSION_START
        assert session[-1]["body"][0] == SESSION_END
    # Cheap: payloads are shared objects, not copies.
    assert sessions[0][0]["body"] is sessions[1][0]["body"]
    batch = {"session_id": sessions[0][0]["session_id"], "events": sessions[0]}
    encoded = registry.encode(BATCH_SCHEMA, batch)
    assert registry.decode(encoded).value["events"] == sessions[0]
    with pytest.raises(ValueError, match="at least 2"):
        next(generate_load(1, 1))


@pytest.mark.kafka
async def test_emit_demo(kafka_bootstrap: str) -> None:
    topic = f"test-demo-{uuid.uuid4().hex[:10]}"
    await ensure_topics(kafka_bootstrap, 4, (topic,))
    session_ids = await emit_demo(kafka_bootstrap, seed=9, start_us=START, topic=topic)
    expected = demo_sessions(9, 1, START)
    assert session_ids == [s[0]["session_id"] for s in expected]
    received = by_session(await consume(kafka_bootstrap, topic, sum(len(s) for s in expected)))
    for session in expected:
        assert received[session[0]["session_id"]] == session
