"""Auditors' reads on record (invariant 7), against the real broker: each auditor's reads are
a session of their own on the events topic, and a read that cannot be recorded is refused."""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from api.access_log import READ_SESSION_ATTRIBUTE, AccessNotRecorded, ContentRead, KafkaAccessLog
from api.auth import Principal
from blackbox.broker import TansuBroker, free_port
from blackbox.topics import ensure_topics
from schemas import default_registry
from schemas.bodies import HTTP_EXCHANGE, SESSION_END, SESSION_START
from tests.stack import Topics, read_topic

pytestmark = pytest.mark.kafka

REGISTRY = default_registry()


def read_events(bootstrap: str, topic: str, count: int) -> list[dict[str, Any]]:
    """The first ``count`` events on ``topic``, however the emitter batched them."""

    def decoded(messages: list[Any]) -> list[dict[str, Any]]:
        return [event for m in messages for event, _ in REGISTRY.decode_events(m.value).events]

    messages = asyncio.run(read_topic(bootstrap, topic, lambda ms: len(decoded(ms)) >= count, 60))
    return decoded(messages)


def auditor(subject: str) -> Principal:
    return Principal(subject, frozenset({"auditor"}), {"sub": subject, "iss": "https://idp.example"})


def test_each_auditors_reads_are_one_session_ended_when_the_api_stops(kafka_bootstrap: str) -> None:
    topics = Topics.fresh(kafka_bootstrap, partitions=2)
    access_log = KafkaAccessLog(kafka_bootstrap, topics.events, api_id="api-test").start()
    try:
        access_log.record(auditor("ada"), ContentRead("s-1", "GET", "/api/v1/sessions/s-1/events", 1200))
        access_log.record(auditor("bob"), ContentRead("s-1", "GET", "/api/v1/sessions/s-1/asciicast", 800))
        access_log.record(
            auditor("ada"), ContentRead("s-2", "GET", "/api/v1/sessions/s-2/events?limit=5", 90)
        )
        assert access_log.gauges() == {
            "blackbox_access_log_reads_recorded_total": 3,
            "blackbox_access_log_reads_refused_total": 0,
            "blackbox_access_log_sessions_open": 2,
        }
    finally:
        access_log.close()
    # Each read was on the broker before record() returned; close() ended both sessions.
    events = read_events(kafka_bootstrap, topics.events, 7)
    by_principal: dict[str, list[dict[str, object]]] = {}
    for event in sorted(events, key=lambda e: (e["session_id"], e["seq"])):
        by_principal.setdefault(event["identity"]["principal"], []).append(event)
    ada = by_principal["ada"]
    assert [e["body"][0] for e in ada] == [SESSION_START, HTTP_EXCHANGE, HTTP_EXCHANGE, SESSION_END]
    assert [e["seq"] for e in ada] == [0, 1, 2, 3]
    assert len({e["session_id"] for e in ada}) == 1
    assert ada[0]["identity"] == {
        "principal": "ada",
        "kind": "HUMAN",
        "issuer": "https://idp.example",
        "groups": ["auditor"],
    }
    assert ada[0]["target"]["name"] == "blackbox-api"
    reads = [(e["attributes"][READ_SESSION_ATTRIBUTE], e["body"][1]["url"]) for e in ada[1:3]]
    assert reads == [("s-1", "/api/v1/sessions/s-1/events"), ("s-2", "/api/v1/sessions/s-2/events?limit=5")]
    assert [e["body"][0] for e in by_principal["bob"]] == [SESSION_START, HTTP_EXCHANGE, SESSION_END]


def test_a_read_that_cannot_be_recorded_is_refused_and_the_next_starts_afresh(tmp_path: Path) -> None:
    port = free_port()
    broker = TansuBroker(port, log_file=tmp_path / "tansu.log").start()
    asyncio.run(ensure_topics(broker.bootstrap, 1, ("events",)))
    access_log = KafkaAccessLog(broker.bootstrap, "events", timeout_seconds=3).start()
    try:
        access_log.record(auditor("ada"), ContentRead("s-1", "GET", "/api/v1/sessions/s-1/events", 10))
        broker.stop()
        started = time.monotonic()
        with pytest.raises(AccessNotRecorded, match="cannot record"):
            access_log.record(auditor("ada"), ContentRead("s-1", "GET", "/api/v1/sessions/s-1/asciicast", 10))
        assert time.monotonic() - started < 10  # refused within the timeout, not hung
        assert access_log.gauges()["blackbox_access_log_reads_refused_total"] == 1

        broker = TansuBroker(port, log_file=tmp_path / "tansu-again.log").start()  # memory store: empty
        asyncio.run(ensure_topics(broker.bootstrap, 1, ("events",)))
        deadline = time.monotonic() + 30
        attempt = 0
        while True:  # the producer reconnects on its own
            attempt += 1
            url = f"/api/v1/sessions/s-1/asciicast?attempt={attempt}"
            try:
                access_log.record(auditor("ada"), ContentRead("s-1", "GET", url, 10))
                break
            except AccessNotRecorded:
                assert time.monotonic() < deadline, "the access log did not recover"
        events = read_events(broker.bootstrap, "events", 2)
        [served] = [e for e in events if e["body"][0] == HTTP_EXCHANGE and e["body"][1]["url"] == url]
        # The read served sits in a session of its own from seq 0, not after a gap where a refused
        # read was. (A refused read may still reach the log: it holds every read served, and
        # perhaps some that were refused, never fewer.)
        session = sorted((e["seq"], e["body"][0]) for e in events if e["session_id"] == served["session_id"])
        assert session == [(0, SESSION_START), (1, HTTP_EXCHANGE)]
    finally:
        access_log.close()
        broker.stop()


def test_a_quiet_auditor_session_ends_before_the_worker_would_seal_it(kafka_bootstrap: str) -> None:
    """The worker seals sessions idle for its idle timeout and refuses events after that; the
    access log ends a quiet session itself and opens another for the next read."""
    topics = Topics.fresh(kafka_bootstrap, partitions=1)
    now = [1000.0]
    access_log = KafkaAccessLog(
        kafka_bootstrap, topics.events, quiet_seconds=60, clock=lambda: now[0]
    ).start()
    try:
        access_log.record(auditor("ada"), ContentRead("s-1", "GET", "/api/v1/sessions/s-1/events", 10))
        now[0] += 61
        access_log.record(auditor("ada"), ContentRead("s-2", "GET", "/api/v1/sessions/s-2/events", 10))
    finally:
        access_log.close()
    events = read_events(kafka_bootstrap, topics.events, 6)
    sessions: dict[str, list[tuple[int, str, str]]] = {}
    for e in events:
        detail = e["body"][1].get("reason") or e["attributes"].get(READ_SESSION_ATTRIBUTE, "")
        sessions.setdefault(e["session_id"], []).append((e["seq"], e["body"][0], detail))
    first, second = sorted(sessions.values(), key=lambda s: [x[2] for x in s].count("s-1"), reverse=True)
    assert sorted(first) == [(0, SESSION_START, ""), (1, HTTP_EXCHANGE, "s-1"), (2, SESSION_END, "quiet")]
    assert sorted(second) == [
        (0, SESSION_START, ""),
        (1, HTTP_EXCHANGE, "s-2"),
        (2, SESSION_END, "api stopped"),
    ]


def test_reads_from_many_threads_are_each_recorded_once(kafka_bootstrap: str) -> None:
    topics = Topics.fresh(kafka_bootstrap, partitions=2)
    access_log = KafkaAccessLog(kafka_bootstrap, topics.events).start()
    reads = [(f"auditor-{n % 3}", f"s-{n}") for n in range(24)]
    try:
        with ThreadPoolExecutor(8) as pool:  # as FastAPI's worker threads call it
            list(
                pool.map(
                    lambda read: access_log.record(
                        auditor(read[0]), ContentRead(read[1], "GET", f"/api/v1/sessions/{read[1]}/events", 1)
                    ),
                    reads,
                )
            )
    finally:
        access_log.close()
    events = read_events(kafka_bootstrap, topics.events, 30)
    recorded = sorted(
        (e["identity"]["principal"], e["attributes"][READ_SESSION_ATTRIBUTE])
        for e in events
        if e["body"][0] == HTTP_EXCHANGE
    )
    assert recorded == sorted(reads)
    for principal in {who for who, _ in reads}:  # one session each, seqs without gaps
        mine = [e for e in events if e["identity"]["principal"] == principal]
        assert len({e["session_id"] for e in mine}) == 1
        assert sorted(e["seq"] for e in mine) == list(range(len(mine)))
