"""The emitter SDK against the real broker (Tansu): batching, flush triggers, backpressure,
compression, and that failures reach the caller."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer

from blackbox.broker import TansuBroker
from blackbox.topics import ensure_topics
from ingest.demo import demo_sessions, example_events, generate_load
from ingest.emitter import (
    EmitError,
    Emitter,
    InvalidEvent,
    emit_events,
    estimate_size,
    resolve_compression,
)
from ingest.events import SessionBuilder, SessionEvent, make_gateway, make_identity, make_target
from schemas import BATCH_SCHEMA, EVENT_SCHEMA, default_registry
from tests.fixtures.kafka import create_topics


@dataclass
class Message:
    key: bytes
    partition: int
    session_id: str
    events: list[dict[str, Any]]
    size: int


async def consume(bootstrap: str, topic: str, expected_events: int, wait_s: float = 30.0) -> list[Message]:
    """Read ``topic`` from the start until ``expected_events`` events arrived (no consumer group:
    Tansu's group joins are slow)."""
    registry = default_registry()
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        auto_offset_reset="earliest",
        group_id=None,
        enable_auto_commit=False,
    )
    await consumer.start()
    messages: list[Message] = []
    count = 0
    deadline = time.monotonic() + wait_s
    try:
        while count < expected_events and time.monotonic() < deadline:
            batches = await consumer.getmany(timeout_ms=200)
            for records in batches.values():
                for record in records:
                    decoded = registry.decode(record.value)
                    assert decoded.schema_name == BATCH_SCHEMA
                    batch = decoded.value
                    messages.append(
                        Message(
                            record.key,
                            record.partition,
                            batch["session_id"],
                            batch["events"],
                            len(record.value),
                        )
                    )
                    count += len(batch["events"])
    finally:
        await consumer.stop()
    return messages


def by_session(messages: list[Message]) -> dict[str, list[dict[str, Any]]]:
    sessions: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for message in sorted(messages, key=lambda m: m.partition):  # order within a partition is kept
        sessions[message.session_id].extend(message.events)
    return sessions


@pytest.fixture
def topic(kafka_bootstrap: str) -> str:
    name = f"test-emitter-{uuid.uuid4().hex[:10]}"
    create_topics(kafka_bootstrap, name)
    return name


def _session(n_outputs: int, payload: bytes = b"x" * 100, end: bool = True) -> list[SessionEvent]:
    b = SessionBuilder(
        None, make_identity("svc", "SERVICE_ACCOUNT"), make_target("host", "SSH"), make_gateway("gw")
    )
    events = [b.start(cols=80, rows=24)] + [b.output(payload + str(i).encode()) for i in range(n_outputs)]
    if end:
        events.append(b.end("exit", 0))
    return events


# -- unit: no broker --------------------------------------------------------------------------


def test_size_estimate_is_an_upper_bound_and_not_wild() -> None:
    registry = default_registry()
    events = [e for s in demo_sessions(3, 1, 1_700_000_000_000_000) for e in s]
    events += list(example_events().values()) + next(generate_load(1, 50, 1))
    for event in events:
        actual = len(registry.encode_body(EVENT_SCHEMA, event))
        assert actual <= estimate_size(event) <= 2 * actual + 64


def test_non_ascii_text_is_counted_in_bytes() -> None:
    b = SessionBuilder("s", make_identity("x"), make_target("t"), make_gateway("g"))
    event = b.query("SELECT '" + "ż" * 1000 + "'")
    assert estimate_size(event) >= len(default_registry().encode_body(EVENT_SCHEMA, event))


def test_compression_is_available_without_fallback() -> None:
    # aiokafka compresses zstd and lz4 through cramjam: a missing install would silently
    # degrade to gzip, so say so here.
    assert resolve_compression("zstd") == "zstd"
    assert resolve_compression("lz4") == "lz4"
    assert resolve_compression(None) is None
    with pytest.raises(ValueError, match="unknown compression"):
        resolve_compression("brotli")


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("max_batch_events", 0),
        ("max_batch_bytes", 2 * 1024 * 1024),
        ("max_buffered_bytes", 1024),
        ("linger_ms", -1),
    ],
)
def test_unsafe_settings_are_refused(option: str, value: int) -> None:
    settings: dict[str, Any] = {option: value}
    with pytest.raises(ValueError, match=option.removesuffix("_ms")):
        Emitter("127.0.0.1:9", **settings)


async def test_emit_before_start_is_an_error() -> None:
    with pytest.raises(RuntimeError, match="not started"):
        await Emitter("127.0.0.1:9").emit(_session(0)[0])


# -- against the broker ------------------------------------------------------------------------


@pytest.mark.kafka
async def test_batches_each_session_into_few_ordered_messages(kafka_bootstrap: str, topic: str) -> None:
    sessions = [_session(1200, end=False) for _ in range(3)]
    async with Emitter(kafka_bootstrap, topic, max_batch_events=500, linger_ms=60_000) as emitter:
        for step in zip(*sessions, strict=True):  # interleaved, as a busy gateway would
            for event in step:
                await emitter.emit(event)
    total = sum(len(s) for s in sessions)
    assert emitter.events_emitted == total
    assert emitter.stats().events_delivered == total

    messages = await consume(kafka_bootstrap, topic, total)
    received = by_session(messages)
    for session in sessions:
        assert received[session[0]["session_id"]] == session  # every event, in order
    assert all(m.key == m.session_id.encode() for m in messages)
    partitions = defaultdict(set)
    for message in messages:
        partitions[message.session_id].add(message.partition)
    assert all(len(p) == 1 for p in partitions.values())  # a session's chain lives in one partition
    # 1201 events per session, cut by count (500) and flushed at close: 3 messages each.
    assert len(messages) == 9 == emitter.messages_sent
    assert emitter.bytes_sent == sum(m.size for m in messages)


@pytest.mark.kafka
async def test_batch_bytes_bound_the_message_size(kafka_bootstrap: str, topic: str) -> None:
    session = _session(300, payload=b"y" * 1000)
    async with Emitter(kafka_bootstrap, topic, max_batch_bytes=32 * 1024, linger_ms=60_000) as emitter:
        await emitter.emit_many(session)
    messages = await consume(kafka_bootstrap, topic, len(session))
    assert by_session(messages)[session[0]["session_id"]] == session
    assert all(m.size <= 32 * 1024 for m in messages)
    assert len(messages) >= 300 * 1000 // (32 * 1024)


@pytest.mark.kafka
async def test_session_end_flushes_at_once(kafka_bootstrap: str, topic: str) -> None:
    ended = _session(3)
    open_session = _session(3, end=False)
    async with Emitter(kafka_bootstrap, topic, linger_ms=600_000) as emitter:
        await emitter.emit_many(open_session)
        await emitter.emit_many(ended)
        # No flush: the SessionEnd alone must send the ended session, while the open session
        # waits for its (ten-minute) linger.
        messages = await consume(kafka_bootstrap, topic, len(ended), wait_s=15)
        assert [m.session_id for m in messages] == [ended[0]["session_id"]]
        assert messages[0].events == ended
    messages = await consume(kafka_bootstrap, topic, len(ended) + len(open_session))
    assert by_session(messages)[open_session[0]["session_id"]] == open_session


@pytest.mark.kafka
async def test_linger_sends_without_flush(kafka_bootstrap: str, topic: str) -> None:
    session = _session(5, end=False)
    async with Emitter(kafka_bootstrap, topic, linger_ms=100) as emitter:
        await emitter.emit_many(session)
        messages = await consume(kafka_bootstrap, topic, len(session), wait_s=15)
        assert by_session(messages)[session[0]["session_id"]] == session
        assert emitter.messages_sent == 1


@pytest.mark.kafka
async def test_a_tight_emit_loop_streams_batches_as_they_fill(kafka_bootstrap: str, topic: str) -> None:
    # A gateway that emits without ever waiting on anything else: batches must still leave as
    # they fill, not all at once when the loop ends (the memory bound here is never reached).
    sessions = [_session(100, end=False) for _ in range(40)]
    async with Emitter(kafka_bootstrap, topic, max_batch_events=20, linger_ms=60_000) as emitter:
        for session in sessions:
            await emitter.emit_many(session)
        # The loop took no time the sender could use, except the pauses the emitter makes
        # (without them nothing at all reached the producer before the loop ended).
        handed_over_during_the_loop = emitter.stats().messages_handed_over
    assert handed_over_during_the_loop > 0
    assert emitter.stats().events_delivered == sum(len(s) for s in sessions)


@pytest.mark.kafka
async def test_backpressure_bounds_memory(kafka_bootstrap: str, topic: str) -> None:
    sessions = [_session(200, payload=b"z" * 1000) for _ in range(10)]
    bound = 64 * 1024
    async with Emitter(
        kafka_bootstrap, topic, max_buffered_bytes=bound, max_batch_bytes=16 * 1024, linger_ms=60_000
    ) as emitter:
        for step in zip(*sessions, strict=True):
            for event in step:
                await emitter.emit(event)
                assert emitter.stats().buffered_bytes <= bound
    total = sum(len(s) for s in sessions)
    stats = emitter.stats()
    assert stats.peak_buffered_bytes <= bound
    assert stats.bytes_sent > 20 * bound  # the bound held while far more than it went through
    assert stats.events_delivered == total
    assert stats.buffered_bytes == 0
    received = by_session(await consume(kafka_bootstrap, topic, total))
    for session in sessions:
        assert received[session[0]["session_id"]] == session


@pytest.mark.kafka
@pytest.mark.parametrize("compression", ["zstd", "lz4", "gzip", None])
async def test_compression_against_the_broker(
    kafka_bootstrap: str,
    topic: str,
    compression: str | None,
) -> None:
    session = _session(400, payload=b"\x1b[32mok\x1b[0m repeated line\r\n" * 4)
    async with Emitter(kafka_bootstrap, topic, compression=compression) as emitter:
        assert emitter.compression == compression
        await emitter.emit_many(session)
    messages = await consume(kafka_bootstrap, topic, len(session))
    assert by_session(messages)[session[0]["session_id"]] == session


@pytest.mark.kafka
async def test_invalid_event_is_refused_or_reported(kafka_bootstrap: str, topic: str) -> None:
    session = _session(10)
    async with Emitter(kafka_bootstrap, topic, linger_ms=60_000) as emitter:
        with pytest.raises(InvalidEvent, match="tuple"):
            await emitter.emit({**session[1], "body": {"data": b"no branch name"}})
        with pytest.raises(InvalidEvent, match="session_id"):
            await emitter.emit({**session[1], "session_id": ""})
        # Structurally fine but the schema refuses it: found when the batch is encoded.
        bad: dict[str, Any] = {**session[3], "body": ("dev.blackbox.v1.TerminalOutput", {"data": 12})}
        await emitter.emit_many(session[:3])
        await emitter.emit(bad)
        await emitter.emit_many(session[4:])
        with pytest.raises(InvalidEvent) as caught:
            await emitter.flush()
        assert caught.value.events == [bad]
        assert emitter.stats().events_delivered == len(session) - 1
    received = by_session(await consume(kafka_bootstrap, topic, len(session) - 1))
    assert received[session[0]["session_id"]] == session[:3] + session[4:]


@pytest.mark.kafka
async def test_oversized_event_is_reported_and_the_rest_delivered(kafka_bootstrap: str, topic: str) -> None:
    session = _session(20)
    huge = {**session[5], "body": ("dev.blackbox.v1.TerminalOutput", {"data": b"h" * 100_000})}
    async with Emitter(
        kafka_bootstrap,
        topic,
        max_request_size=64 * 1024,
        max_batch_bytes=32 * 1024,
        max_buffered_bytes=1024 * 1024,
    ) as emitter:
        await emitter.emit_many([*session[:5], huge])
        # Sealed at once (bigger than a batch), refused by the producer limit; the next call
        # says so, and the event passed to that call is not taken.
        with pytest.raises(EmitError, match="limit is") as caught:
            await emitter.emit(session[6])
        assert caught.value.events == [huge]
        await emitter.emit_many(session[6:])
    received = by_session(await consume(kafka_bootstrap, topic, len(session) - 1))
    assert received[session[0]["session_id"]] == session[:5] + session[6:]


@pytest.fixture
def own_broker(tmp_path: Any) -> Iterator[TansuBroker]:
    """A broker of this test's own, because the test stops it."""
    broker = TansuBroker(log_file=tmp_path / "tansu.log").start()
    try:
        yield broker
    finally:
        broker.stop()


@pytest.mark.kafka
@pytest.mark.slow
async def test_delivery_failure_reaches_flush(own_broker: TansuBroker) -> None:
    await ensure_topics(own_broker.bootstrap, 1, ("test-emitter-outage",))
    first, second = _session(3), _session(3)
    emitter = Emitter(
        own_broker.bootstrap,
        "test-emitter-outage",
        request_timeout_ms=2000,
        producer_options={"retry_backoff_ms": 100},
    )
    await emitter.start()
    try:
        await emitter.emit_many(first)
        await emitter.flush()
        own_broker.stop()
        await emitter.emit_many(second)
        with pytest.raises(EmitError, match="not delivered") as caught:
            await asyncio.wait_for(emitter.flush(), timeout=60)
        assert caught.value.events == second  # what was lost is handed back, in order
        assert emitter.stats().events_delivered == len(first)
    finally:
        await asyncio.wait_for(emitter.close(), timeout=60)


@pytest.mark.kafka
def test_emit_events_helper(kafka_bootstrap: str, topic: str) -> None:
    sessions = list(generate_load(5, 40, seed=7))
    events = [e for s in sessions for e in s]
    stats = emit_events(kafka_bootstrap, events, topic=topic)
    assert stats.events_delivered == len(events) == stats.events_emitted
    assert stats.messages_sent == 5  # each session ends with a SessionEnd: one message each
    received = by_session(asyncio.run(consume(kafka_bootstrap, topic, len(events))))
    for session in sessions:
        assert received[session[0]["session_id"]] == session
