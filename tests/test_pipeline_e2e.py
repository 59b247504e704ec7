"""The whole path on real parts: emitter → Tansu → seal worker process → S3 (moto) / WORM dir + chdb.

These tests start a real `blackbox worker` process and judge it only by what it wrote: the
archive, the index and the topics.
"""

from __future__ import annotations

import asyncio
import base64
import time
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from ingest.demo import generate_load
from ingest.emitter import Emitter
from ledger.chain import record_hash
from schemas import BATCH_SCHEMA, EVENT_SCHEMA, default_registry
from schemas.bodies import OUTPUT_TAIL_ATTRIBUTE, SECRET_PROMPT_ATTRIBUTE
from storage.objectstore import LocalWormStore, ObjectStore, Retention, S3ObjectStore
from tests.eventdata import body, end, make_event, output
from tests.stack import (
    Topics,
    WorkerProcess,
    index_counts,
    read_archive,
    read_dlq,
    verify_all_chains,
    wait_for_sealed,
)

pytestmark = [pytest.mark.kafka, pytest.mark.clickhouse, pytest.mark.slow]

REGISTRY = default_registry()


def load(sessions: int, events_per_session: int, seed: int) -> list[list[dict[str, Any]]]:
    return [list(events) for events in generate_load(sessions, events_per_session, seed)]


async def emit(bootstrap: str, topic: str, sessions: list[list[dict[str, Any]]]) -> None:
    async with Emitter(bootstrap, topic, max_batch_events=100, linger_ms=20) as emitter:
        for events in sessions:
            await emitter.emit_many(events)


async def committed(bootstrap: str, group: str, topic: str) -> int | None:
    """The group's committed offset of partition 0 (the next offset it will read)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    await consumer.start()
    try:
        offset: int | None = await consumer.committed(TopicPartition(topic, 0))
        return offset
    finally:
        await consumer.stop()


def expected_record_count(sessions: list[list[dict[str, Any]]]) -> int:
    # one record per event, plus the SEAL record of each ended session
    return sum(len(events) for events in sessions) + len(sessions)


def s3_store(worm_bucket: S3ObjectStore) -> tuple[str, ObjectStore]:
    return f"s3://{worm_bucket.bucket}/{worm_bucket.prefix}".rstrip("/"), worm_bucket


def test_ten_thousand_events_are_sealed_archived_and_indexed(
    kafka_bootstrap: str, moto_server: str, worm_bucket: S3ObjectStore, tmp_path: Path
) -> None:
    topics = Topics.fresh(kafka_bootstrap)
    archive_url, store = s3_store(worm_bucket)
    worker = WorkerProcess(
        kafka_bootstrap, topics, tmp_path / "worker", archive_url, {"BLACKBOX_S3_ENDPOINT_URL": moto_server}
    ).start()
    sessions = load(100, 100, seed=1)
    try:
        asyncio.run(emit(kafka_bootstrap, topics.events, sessions))
        published = wait_for_sealed(
            kafka_bootstrap, topics.sealed, expected_record_count(sessions), alive=worker.alive
        )
    finally:
        return_code = worker.stop()
    assert return_code == 0, worker.log()[-3000:]

    contents = read_archive(store)
    assert len(contents.records) == expected_record_count(sessions)
    assert {record_hash(raw) for raw, _ in contents.records} == set(published)
    archived_ids = {v["event"]["event_id"] for _, v in contents.records if v["kind"] == "EVENT"}
    assert archived_ids == {event["event_id"] for events in sessions for event in events}
    assert verify_all_chains(contents, require_seal=True) == len(sessions)
    # objects batch many records: their number does not follow the event count
    assert contents.objects < len(published) / 50

    counts = index_counts(worker.index_dir)
    assert counts["records"] == counts["distinct_records"] == expected_record_count(sessions)
    assert counts["distinct_event_ids"] == 10_000
    assert counts["sessions"] == counts["sealed"] == len(sessions)


# With a seal process the worker hands each next batch over while it writes the one before.
# Both places named: unset, where the worker seals depends on the machine's cores.
SEAL_PROCESS = {"BLACKBOX_SEAL_PROCESS": "true"}
IN_WORKER = {"BLACKBOX_SEAL_PROCESS": "false"}
SEALING_PLACES = pytest.mark.parametrize(
    "sealing_place", [IN_WORKER, SEAL_PROCESS], ids=["sealing-in-worker", "sealing-in-process"]
)


@SEALING_PLACES
def test_sigkill_mid_run_loses_and_duplicates_nothing(
    kafka_bootstrap: str, tmp_path: Path, sealing_place: dict[str, str]
) -> None:
    topics = Topics.fresh(kafka_bootstrap)
    archive_dir = tmp_path / "archive"
    # small batches, so that the kill lands with many batches done and many still to do
    worker = WorkerProcess(
        kafka_bootstrap,
        topics,
        tmp_path / "worker",
        f"file://{archive_dir}",
        {"BLACKBOX_BATCH_MAX_MESSAGES": "20", **sealing_place},
    ).start()
    first_wave = load(300, 80, seed=2)
    second_wave = load(50, 40, seed=3)
    total = expected_record_count(first_wave) + expected_record_count(second_wave)
    asyncio.run(emit(kafka_bootstrap, topics.events, first_wave))
    try:
        # kill it without warning as soon as it is visibly under way, with most work pending
        published = wait_for_sealed(kafka_bootstrap, topics.sealed, 1, alive=worker.alive)
        worker.kill()
        assert len(set(published)) < expected_record_count(first_wave), "too late to kill mid-run"
        worker.start()
        asyncio.run(emit(kafka_bootstrap, topics.events, second_wave))
        wait_for_sealed(kafka_bootstrap, topics.sealed, total, alive=worker.alive)
    finally:
        return_code = worker.stop()
    assert return_code == 0, worker.log()[-3000:]

    contents = read_archive(LocalWormStore(archive_dir, retention=Retention("COMPLIANCE", 1)))
    keys = [(value["session_id"], value["index"]) for _, value in contents.records]
    assert len(keys) == len(set(keys)) == total, "a record is missing or archived twice"
    assert verify_all_chains(contents, require_seal=True) == len(first_wave) + len(second_wave)
    counts = index_counts(worker.index_dir)
    assert counts["records"] == counts["distinct_records"] == total
    assert counts["sealed"] == len(first_wave) + len(second_wave)


@SEALING_PLACES
def test_bad_input_goes_to_the_dlq_and_the_worker_keeps_going(
    kafka_bootstrap: str, tmp_path: Path, sealing_place: dict[str, str]
) -> None:
    topics = Topics.fresh(kafka_bootstrap, partitions=1)
    archive_dir = tmp_path / "archive"
    worker = WorkerProcess(
        kafka_bootstrap,
        topics,
        tmp_path / "worker",
        f"file://{archive_dir}",
        {"BLACKBOX_MAX_MESSAGE_BYTES": str(64 * 1024), **sealing_place},
    ).start()
    before = [
        make_event("good-1", 0),
        make_event("good-1", 1, ("dev.blackbox.v1.SessionEnd", {"reason": "closed", "exit_code": 0})),
    ]
    after = [
        make_event("good-2", 0),
        make_event("good-2", 1, ("dev.blackbox.v1.SessionEnd", {"reason": "closed", "exit_code": 0})),
    ]
    invalid = make_event("bad-1", -1)
    oversized = make_event("big-1", 0, ("dev.blackbox.v1.TerminalOutput", {"data": b"x" * 100_000}))
    bad_messages = {
        "undecodable": (b"bad-0", b"\x00 this is not avro at all"),
        "unknown schema fingerprint": (b"bad-0", b"\xc3\x01" + bytes(8) + b"\x02"),
        "seq must be >= 0": (b"bad-1", REGISTRY.encode(EVENT_SCHEMA, invalid)),
        "oversized": (b"big-1", REGISTRY.encode(EVENT_SCHEMA, oversized)),
        "message key differs": (b"someone-else", REGISTRY.encode(EVENT_SCHEMA, make_event("good-3", 0))),
    }

    async def produce() -> None:
        producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, max_request_size=1024 * 1024)
        await producer.start()
        try:
            await producer.send_and_wait(
                topics.events,
                REGISTRY.encode(BATCH_SCHEMA, {"session_id": "good-1", "events": before}),
                key=b"good-1",
            )
            for key, value in bad_messages.values():
                await producer.send_and_wait(topics.events, value, key=key, headers=[("trace", b"t-1")])
            await producer.send_and_wait(
                topics.events,
                REGISTRY.encode(BATCH_SCHEMA, {"session_id": "good-2", "events": after}),
                key=b"good-2",
            )
        finally:
            await producer.stop()

    try:
        asyncio.run(produce())
        wait_for_sealed(kafka_bootstrap, topics.sealed, 6, alive=worker.alive)
        letters = read_dlq(kafka_bootstrap, topics.dlq, len(bad_messages))
        time.sleep(1)
        assert worker.alive(), "the worker stopped on bad input"
    finally:
        return_code = worker.stop()
    assert return_code == 0, worker.log()[-3000:]

    assert len(letters) == len(bad_messages)
    for letter, (expected_reason, (key, value)) in zip(letters, bad_messages.items(), strict=True):
        headers = dict(letter.headers)
        assert expected_reason in headers["blackbox.dlq.reason"].decode()
        assert headers["blackbox.dlq.topic"].decode() == topics.events
        assert int(headers["blackbox.dlq.offset"]) >= 0
        assert headers["original.trace"] == b"t-1"
        assert letter.key == key
        assert letter.value == value, "the DLQ must keep the original bytes"
    contents = read_archive(LocalWormStore(archive_dir, retention=Retention("COMPLIANCE", 1)))
    assert sorted(contents.by_session()) == ["good-1", "good-2"]
    assert verify_all_chains(contents, require_seal=True) == 2


def test_a_session_that_never_ends_is_sealed_when_idle(kafka_bootstrap: str, tmp_path: Path) -> None:
    topics = Topics.fresh(kafka_bootstrap, partitions=2)
    archive_dir = tmp_path / "archive"
    worker = WorkerProcess(
        kafka_bootstrap,
        topics,
        tmp_path / "worker",
        f"file://{archive_dir}",
        {"BLACKBOX_IDLE_TIMEOUT_SECONDS": "2", "BLACKBOX_IDLE_CHECK_SECONDS": "0.5"},
    ).start()
    never_ending = [make_event("idle-1", seq) for seq in range(5)]
    try:
        asyncio.run(emit(kafka_bootstrap, topics.events, [never_ending]))
        wait_for_sealed(kafka_bootstrap, topics.sealed, len(never_ending) + 1, alive=worker.alive)
    finally:
        return_code = worker.stop()
    assert return_code == 0, worker.log()[-3000:]
    records = read_archive(LocalWormStore(archive_dir, retention=Retention("COMPLIANCE", 1))).by_session()[
        "idle-1"
    ]
    seal = records[-1][1]
    assert seal["kind"] == "SEAL"
    assert seal["seal"]["reason"] == "idle_timeout"
    assert seal["seal"]["last_seq"] == 4


@SEALING_PLACES
def test_output_the_masker_held_survives_a_sigkill(
    kafka_bootstrap: str, tmp_path: Path, sealing_place: dict[str, str]
) -> None:
    """A session's last output ends in what could be the start of an address, so the masker holds
    it back for the next event. Its message stays unacknowledged, and so does every later message
    of the partition (another session's, here), or Faust would commit past it. The worker is
    killed before the next event comes; the new worker gets the message again and still puts the
    (masked) bytes on record with the session's end, after which everything is acknowledged."""
    topics = Topics.fresh(kafka_bootstrap, partitions=1)
    archive = tmp_path / "archive"
    worker = WorkerProcess(
        kafka_bootstrap,
        topics,
        tmp_path / "data",
        f"file://{archive}",
        {"BLACKBOX_HOLD_FLUSH_SECONDS": "600", **sealing_place},
    )
    # Two sessions come first, as in any partition that has lived a little: Faust's own check of
    # a gap at the head skips a committed offset of 0 or none.
    before = [[make_event(f"s-before-{n}", 0), make_event(f"s-before-{n}", 1, end())] for n in range(2)]
    held = [make_event("s-held", 0), make_event("s-held", 1, output("bye ada@lovelace.org"))]
    after = [make_event("s-after", 0), make_event("s-after", 1, end())]
    worker.start()
    try:
        asyncio.run(emit(kafka_bootstrap, topics.events, before))
        wait_for_sealed(kafka_bootstrap, topics.sealed, 6, alive=worker.alive)
        wait_for_commit(kafka_bootstrap, topics, 2)
        asyncio.run(emit(kafka_bootstrap, topics.events, [held]))
        wait_for_sealed(kafka_bootstrap, topics.sealed, 8, alive=worker.alive)
        asyncio.run(emit(kafka_bootstrap, topics.events, [after]))  # sealed, but behind the held one
        wait_for_sealed(kafka_bootstrap, topics.sealed, 11, alive=worker.alive)
        time.sleep(2.0)  # a commit would have happened by now
        assert asyncio.run(committed(kafka_bootstrap, topics.group, topics.events)) == 2  # still held
        worker.kill()

        worker.start()
        deadline = time.monotonic() + 60
        while "partition 0: archived up to offset 3" not in worker.log():  # got them again, holds it
            assert time.monotonic() < deadline, worker.log()[-3000:]
            time.sleep(0.2)
        asyncio.run(emit(kafka_bootstrap, topics.events, [[make_event("s-held", 2, end())]]))
        wait_for_sealed(kafka_bootstrap, topics.sealed, 13, alive=worker.alive)
        wait_for_commit(kafka_bootstrap, topics, 5)  # nothing is left holding commits back
    finally:
        worker.stop()
    sessions = read_archive(LocalWormStore(archive, retention=None)).by_session()
    values = [value for _, value in sessions["s-held"]]
    assert [value["kind"] for value in values] == ["EVENT", "EVENT", "EVENT", "SEAL"]
    assert values[1]["event"]["body"][1]["data"] == b"bye "
    tail = values[2]["event"]["attributes"][OUTPUT_TAIL_ATTRIBUTE]
    assert base64.b64decode(tail) == b"*" * 16
    assert [value["kind"] for _, value in sessions["s-after"]] == ["EVENT", "EVENT", "SEAL"]  # once


def test_output_held_too_long_is_put_on_record_and_commits_go_on(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    """A session stops mid-token and says nothing more: after the hold limit the worker asks
    itself to put the held bytes on record, and the partition's commits move past them."""
    topics, archive, worker = _quickly_flushing_worker(kafka_bootstrap, tmp_path)
    held = [make_event("s-held", 0), make_event("s-held", 1, output("bye ada@lovelace.org"))]
    after = [make_event("s-after", 0), make_event("s-after", 1, end())]
    worker.start()
    try:
        asyncio.run(emit(kafka_bootstrap, topics.events, [held, after]))
        # held (2) + after (3) + the flush of the held bytes (1)
        wait_for_sealed(kafka_bootstrap, topics.sealed, 6, alive=worker.alive)
        wait_for_commit(kafka_bootstrap, topics, 3)  # both sessions and the worker's request
        asyncio.run(emit(kafka_bootstrap, topics.events, [[make_event("s-held", 2, output("more\r\n"))]]))
        wait_for_sealed(kafka_bootstrap, topics.sealed, 7, alive=worker.alive)
        wait_for_commit(kafka_bootstrap, topics, 4)
    finally:
        worker.stop()
    values = [value for _, value in read_archive(archive).by_session()["s-held"]]
    assert [value["kind"] for value in values] == ["EVENT", "EVENT", "EVENT", "EVENT"]  # still open
    flush = values[2]["event"]
    assert flush["body"][0].endswith("OutputFlush")
    assert base64.b64decode(flush["attributes"][OUTPUT_TAIL_ATTRIBUTE]) == b"*" * 16
    assert values[3]["event"]["body"][1]["data"] == b"more\r\n"


def test_an_unanswered_password_prompt_lets_the_commits_go_on(kafka_bootstrap: str, tmp_path: Path) -> None:
    """A session waits at a password prompt: the worker's flushes put the open prompt on record,
    and the partition's commits move past the prompt and the other sessions' messages instead of
    waiting for the idle seal. The password typed afterwards is still masked."""
    topics, archive, worker = _quickly_flushing_worker(kafka_bootstrap, tmp_path)
    prompt = [make_event("s-sudo", 0), make_event("s-sudo", 1, output("[sudo] password for ada: "))]
    after = [make_event("s-after", 0), make_event("s-after", 1, end())]
    worker.start()
    try:
        asyncio.run(emit(kafka_bootstrap, topics.events, [prompt, after]))
        wait_for_commit(kafka_bootstrap, topics, 2, at_least=True)  # past both sessions' messages
        answer = [
            make_event("s-sudo", 2, body("TerminalInput", data=b"hunter2\r")),
            make_event("s-sudo", 3, end()),
        ]
        asyncio.run(emit(kafka_bootstrap, topics.events, [answer]))
        values = wait_for_seal_record(archive, "s-sudo", worker.alive)
    finally:
        worker.stop()
    flushes = [v["event"] for v in values if v["event"] and v["event"]["body"][0].endswith("OutputFlush")]
    assert flushes
    assert all(flush["attributes"][SECRET_PROMPT_ATTRIBUTE] == "open" for flush in flushes)
    assert b"hunter2" not in repr(values).encode()
    typed = [v for v in values if v["event"] and v["event"]["body"][0].endswith("TerminalInput")]
    assert typed[-1]["event"]["body"][1]["data"] == b"*******\r"


def _quickly_flushing_worker(bootstrap: str, tmp_path: Path) -> tuple[Topics, LocalWormStore, WorkerProcess]:
    """A worker on a fresh one-partition topic that asks for flushes after a second, archiving
    into a local WORM directory."""
    topics = Topics.fresh(bootstrap, partitions=1)
    archive = tmp_path / "archive"
    settings = {"BLACKBOX_HOLD_FLUSH_SECONDS": "1", "BLACKBOX_IDLE_CHECK_SECONDS": "0.5"}
    worker = WorkerProcess(bootstrap, topics, tmp_path / "data", f"file://{archive}", settings)
    return topics, LocalWormStore(archive, retention=None), worker


def wait_for_seal_record(
    store: ObjectStore, session_id: str, alive: Any, timeout: float = 60.0
) -> list[dict[str, Any]]:
    """The session's archived records, once the last is its SEAL record."""
    deadline = time.monotonic() + timeout
    while True:
        assert alive(), "the worker died"
        values = [value for _, value in read_archive(store).by_session().get(session_id, [])]
        if values and values[-1]["kind"] == "SEAL":
            return values
        assert time.monotonic() < deadline, f"{session_id} not sealed after {timeout:.0f}s"
        time.sleep(0.5)


def wait_for_commit(
    bootstrap: str, topics: Topics, offset: int, *, at_least: bool = False, timeout: float = 30.0
) -> None:
    """Until the group's committed offset is ``offset`` (or, ``at_least``, past it)."""

    def reached(current: int | None) -> bool:
        return current is not None and (current >= offset if at_least else current == offset)

    deadline = time.monotonic() + timeout
    while not reached(current := asyncio.run(committed(bootstrap, topics.group, topics.events))):
        expected = f"at least {offset}" if at_least else str(offset)
        assert time.monotonic() < deadline, f"committed offset {current}, expected {expected}"
        time.sleep(0.5)
