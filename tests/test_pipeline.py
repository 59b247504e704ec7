"""The seal pipeline against the real chdb engine and a WORM directory, without Kafka:
durability order, recovery after a crash at each step, DLQ routing and its rate limit."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from ledger.chain import verify_chain
from schemas import BATCH_SCHEMA, EVENT_SCHEMA, default_registry
from storage.index import ChdbIndex, Index
from storage.objectstore import LocalWormStore, ObjectStoreUnavailable, Retention
from streams.pipeline import DlqLimitExceeded, DlqRateLimiter, PipelineConfig, SealPipeline, SourceMessage
from streams.seal import SealStep
from tests.eventdata import body, end, make_event
from tests.stack import read_archive

pytestmark = pytest.mark.clickhouse

REGISTRY = default_registry()


class Crash(Exception):
    """Stands for the process dying at a given point."""


class CrashingIndex:
    """The real index, made to fail once when a given table is inserted into."""

    def __init__(self, index: Index, crash_on: str | None = None) -> None:
        self._index = index
        self.crash_on = crash_on

    def insert(self, table: str, rows: pa.Table, *, dedup_token: str | None = None) -> None:
        if table == self.crash_on:
            self.crash_on = None
            raise Crash(f"died before inserting into {table}")
        self._index.insert(table, rows, dedup_token=dedup_token)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._index, name)


class FlakyStore(LocalWormStore):
    """A WORM directory whose first puts fail as an outage would."""

    def __init__(self, root: Path, failures: int) -> None:
        super().__init__(root, retention=Retention("COMPLIANCE", 1))
        self.failures = failures

    def put_if_absent(self, key: str, data: bytes) -> bool:
        if self.failures:
            self.failures -= 1
            raise ObjectStoreUnavailable("connection reset")
        return super().put_if_absent(key, data)


def messages(sessions: int, events: int, partition: int = 0, first_offset: int = 0) -> list[SourceMessage]:
    out = []
    for number in range(sessions):
        session_id = f"s-{partition}-{number}"
        batch = [make_event(session_id, seq) for seq in range(events - 1)] + [
            make_event(session_id, events - 1, end())
        ]
        value = REGISTRY.encode(BATCH_SCHEMA, {"session_id": session_id, "events": batch})
        out.append(SourceMessage("events", partition, first_offset + number, session_id.encode(), value))
    return out


def pipeline(store: Any, index: Any, **config: Any) -> SealPipeline:
    return SealPipeline(
        REGISTRY, SealStep(REGISTRY), store, index, PipelineConfig(retry_initial_seconds=0.01, **config)
    )


def counts(index: Index) -> dict[str, int]:
    row = index.query(
        "SELECT count() AS records, uniqExact(session_id, record_index) AS distinct_records FROM events"
    ).to_pylist()[0]
    sessions = index.query(
        "SELECT count() AS sessions, sum(sealed) AS sealed FROM sessions FINAL"
    ).to_pylist()[0]
    objects = index.query("SELECT count() AS objects FROM archive_objects").to_pylist()[0]
    return {**row, **sessions, **objects}


@pytest.fixture
def index(tmp_path: Path) -> Any:
    with ChdbIndex(tmp_path / "index") as opened:
        opened.migrate()
        yield opened


@pytest.fixture
def store(tmp_path: Path) -> LocalWormStore:
    return LocalWormStore(tmp_path / "archive", retention=Retention("COMPLIANCE", 1))


def test_a_batch_becomes_one_object_and_its_index_rows(index: Index, store: LocalWormStore) -> None:
    outcome = pipeline(store, index).process(messages(5, 20))
    assert (outcome.events, outcome.records, outcome.objects_written) == (100, 105, 1)
    assert counts(index) == {
        "records": 105,
        "distinct_records": 105,
        "sessions": 5,
        "sealed": 5,
        "objects": 1,
    }
    contents = read_archive(store)
    for session_id, records in contents.by_session().items():
        verify_chain(session_id, records, require_seal=True)


@pytest.mark.parametrize("crash_on", ["events", "segments", "sessions", "archive_objects"])
def test_crash_between_archive_and_index_is_recovered_without_duplicates(
    index: Index, store: LocalWormStore, crash_on: str
) -> None:
    batch = messages(4, 10)
    with pytest.raises(Crash):
        pipeline(store, CrashingIndex(index, crash_on)).process(batch)
    assert read_archive(store).objects == 1, "the archive object is written before any index row"

    restarted = pipeline(store, index)
    replay = restarted.process(batch)  # Kafka redelivers the uncommitted batch
    assert replay.skipped_messages == len(batch)
    assert counts(index) == {"records": 44, "distinct_records": 44, "sessions": 4, "sealed": 4, "objects": 1}

    # and the chains go on from the recovered state
    more = [make_event("s-0-9", 0), make_event("s-0-9", 1, end())]
    later = SourceMessage(
        "events", 0, 4, b"s-0-9", REGISTRY.encode(BATCH_SCHEMA, {"session_id": "s-0-9", "events": more})
    )
    assert restarted.process([later]).records == 3
    assert counts(index)["records"] == 47


def test_a_failed_insert_of_one_partition_leaves_the_later_partitions_to_recovery(
    index: Index, store: LocalWormStore
) -> None:
    # Inserts are queued while the next partition seals; the first failure stops the ones
    # queued behind it, so no object is marked indexed without its rows.
    crashing = CrashingIndex(index)
    running = pipeline(store, crashing)
    # A first batch recovers every partition (recovery reads the index, which waits for inserts).
    running.process([message_of(f"w-{partition}", [end()], partition, 0) for partition in range(3)])
    batch = [m for partition in range(3) for m in messages(3, 10, partition=partition, first_offset=1)]
    crashing.crash_on = "events"
    with pytest.raises(Crash):
        running.process(batch)
    assert read_archive(store).objects == 6, "every partition was archived"
    assert counts(index)["objects"] == 3, "no object of the failed batch is marked indexed"

    restarted = pipeline(store, index)
    replay = restarted.process(batch)
    assert replay.skipped_messages == len(batch)
    assert counts(index) == {
        "records": 105,
        "distinct_records": 105,
        "sessions": 12,
        "sealed": 12,
        "objects": 6,
    }


def test_a_sealed_sessions_events_sent_again_without_a_key_are_duplicates(
    index: Index, store: LocalWormStore
) -> None:
    # The cache forgets sealed sessions: a later batch loads the state from the index by the
    # session id in the events (a gateway need not key its messages), never starts it again.
    running = pipeline(store, index)
    bodies = [None, None, None, end()]
    running.process([message_of("s-unkeyed", bodies, 0, 0)])
    again = message_of("s-unkeyed", bodies, 0, 1)
    again = SourceMessage(again.topic, again.partition, again.offset, None, again.value)
    outcome = running.process([again])
    assert (outcome.records, outcome.duplicates) == (0, 4)
    assert counts(index)["records"] == 5


def message_of(session_id: str, bodies: list[Any], partition: int, offset: int) -> SourceMessage:
    events = [make_event(session_id, seq, body) for seq, body in enumerate(bodies)]
    value = REGISTRY.encode(BATCH_SCHEMA, {"session_id": session_id, "events": events})
    return SourceMessage("events", partition, offset, session_id.encode(), value)


def test_open_session_continues_its_chain_after_a_restart(index: Index, store: LocalWormStore) -> None:
    first = [make_event("s-open", seq) for seq in range(3)]
    pipeline(store, index).process(
        [
            SourceMessage(
                "events",
                0,
                0,
                b"s-open",
                REGISTRY.encode(BATCH_SCHEMA, {"session_id": "s-open", "events": first}),
            )
        ]
    )
    rest = [make_event("s-open", 3), make_event("s-open", 1), make_event("s-open", 4, end())]
    outcome = pipeline(store, index).process(
        [
            SourceMessage(
                "events",
                0,
                1,
                b"s-open",
                REGISTRY.encode(BATCH_SCHEMA, {"session_id": "s-open", "events": rest}),
            )
        ]
    )
    assert outcome.duplicates == 1  # seq 1 again, identical: recognised through the index after the restart
    records = read_archive(store).by_session()["s-open"]
    assert [value["kind"] for _, value in records] == ["EVENT"] * 5 + ["SEAL"]
    verify_chain("s-open", records, require_seal=True)


def test_outages_are_retried_not_dead_lettered(index: Index, tmp_path: Path) -> None:
    store = FlakyStore(tmp_path / "flaky", failures=3)
    outcome = pipeline(store, index).process(messages(2, 5))
    assert store.failures == 0
    assert outcome.dead_letters == []
    assert counts(index)["records"] == 12


def test_bad_messages_become_dead_letters_in_input_order(index: Index, store: LocalWormStore) -> None:
    good = messages(1, 3, first_offset=0)
    bad_event = make_event("s-bad", 0)
    bad_event["seq"] = -5
    mixed = REGISTRY.encode(
        BATCH_SCHEMA, {"session_id": "s-bad", "events": [make_event("s-bad", 0), bad_event]}
    )
    batch = [
        *good,
        SourceMessage("events", 0, 1, b"x", b"\x00garbage", (("h", b"1"),)),
        SourceMessage("events", 0, 2, b"s-bad", mixed),
        SourceMessage("events", 0, 3, b"x", REGISTRY.encode(EVENT_SCHEMA, make_event("s-y", 0))),
    ]
    outcome = pipeline(store, index, max_message_bytes=1024 * 1024).process(batch)
    reasons = [
        (letter.source.offset, letter.event_index, letter.reason.split(":")[0])
        for letter in outcome.dead_letters
    ]
    assert reasons == [(1, None, "undecodable"), (2, 1, "invalid"), (3, None, "invalid")]
    garbage = outcome.dead_letters[0]
    assert garbage.value == b"\x00garbage"
    assert ("original.h", b"1") in garbage.headers()
    # the refused event of a batch is dead-lettered alone, as a single-object message
    assert REGISTRY.decode(outcome.dead_letters[1].value).value["seq"] == -5
    assert sorted(read_archive(store).by_session()) == ["s-0-0", "s-bad"]


def test_dlq_rate_limit_stops_processing(index: Index, store: LocalWormStore) -> None:
    garbage = [SourceMessage("events", 0, offset, b"k", b"junk") for offset in range(5)]
    sealer = pipeline(store, index, dlq_limit=3)
    with pytest.raises(DlqLimitExceeded, match="exceed the limit of 3"):
        sealer.process(garbage)


def test_rate_limiter_forgets_old_dead_letters() -> None:
    now = [0.0]
    limiter = DlqRateLimiter(3, 60, clock=lambda: now[0])
    limiter.record(3)
    with pytest.raises(DlqLimitExceeded):
        limiter.check(1)
    now[0] = 61.0
    limiter.check(3)


def test_idle_sessions_are_offered_once(index: Index, store: LocalWormStore) -> None:
    now = [100.0]
    sealer = SealPipeline(REGISTRY, SealStep(REGISTRY), store, index, PipelineConfig(), clock=lambda: now[0])
    open_session = [make_event("s-idle", 0)]
    sealer.process(
        [
            SourceMessage(
                "events",
                0,
                0,
                b"s-idle",
                REGISTRY.encode(BATCH_SCHEMA, {"session_id": "s-idle", "events": open_session}),
            )
        ]
    )
    assert sealer.idle_sessions(60) == []
    now[0] = 200.0
    assert [state.session_id for state in sealer.idle_sessions(60)] == ["s-idle"]
    assert sealer.idle_sessions(60) == []


def test_decoding_in_a_child_process_gives_the_same_records(index: Index, tmp_path: Path) -> None:
    in_process = LocalWormStore(tmp_path / "a", retention=Retention("COMPLIANCE", 1))
    batch = [*messages(3, 7), SourceMessage("events", 0, 3, b"k", b"junk")]
    expected = pipeline(in_process, index).process(batch)
    with ChdbIndex(tmp_path / "index", database="other") as other:
        other.migrate()
        sealer = pipeline(
            LocalWormStore(tmp_path / "b", retention=Retention("COMPLIANCE", 1)), other, decode_processes=1
        )
        try:
            outcome = sealer.process(batch)
        finally:
            sealer.close()
    assert outcome.records == expected.records
    assert [d.reason for d in outcome.dead_letters] == [d.reason for d in expected.dead_letters]
    assert (
        read_archive(LocalWormStore(tmp_path / "b", retention=Retention("COMPLIANCE", 1))).records
        == read_archive(in_process).records
    )


def test_decoding_ahead_gives_the_same_records_and_ignores_bytes_it_did_not_see(
    index: Index, tmp_path: Path
) -> None:
    in_process = LocalWormStore(tmp_path / "a", retention=Retention("COMPLIANCE", 1))
    first = messages(3, 5)
    # The second batch: part of it decoded ahead, one message then arriving with other bytes at
    # the offset decoded ahead (as after a partition moved away and back), one not seen ahead.
    second = [*messages(2, 4, first_offset=3), SourceMessage("events", 0, 5, b"k", b"junk")]
    seen_ahead = [*second[:2], SourceMessage("events", 0, 5, b"k", second[0].value)]
    reference = pipeline(in_process, index)
    expected = [reference.process(first), reference.process(second)]
    with ChdbIndex(tmp_path / "index", database="ahead") as other:
        other.migrate()
        ahead_store = LocalWormStore(tmp_path / "b", retention=Retention("COMPLIANCE", 1))
        sealer = pipeline(ahead_store, other, decode_processes=1)
        try:
            sealer.decode_ahead(first)
            outcomes = [sealer.process(first)]
            sealer.decode_ahead(seen_ahead)
            outcomes.append(sealer.process(second))
            assert sealer._decoding_ahead == {}  # everything decoded ahead was used or replaced
        finally:
            sealer.close()
    assert [o.records for o in outcomes] == [e.records for e in expected]
    assert [[d.reason for d in o.dead_letters] for o in outcomes] == [
        [d.reason for d in e.dead_letters] for e in expected
    ]
    assert read_archive(ahead_store).records == read_archive(in_process).records


def test_a_killed_decoder_costs_nothing_but_decoding_in_the_worker(index: Index, tmp_path: Path) -> None:
    reference = LocalWormStore(tmp_path / "a", retention=Retention("COMPLIANCE", 1))
    warm_up, first, second = (messages(1, 3, partition=n) for n in (0, 1, 2))
    # Several partitions: several decoder jobs, more than the pool takes on at once.
    third = [message for partition in range(3, 9) for message in messages(1, 3, partition=partition)]
    batches = [warm_up, first, second, third]
    in_worker = pipeline(reference, index)
    expected = [in_worker.process(batch).records for batch in batches]
    with ChdbIndex(tmp_path / "index", database="killed") as other:
        other.migrate()
        store = LocalWormStore(tmp_path / "b", retention=Retention("COMPLIANCE", 1))
        sealer = pipeline(store, other, decode_processes=1)
        try:
            records = [sealer.process(warm_up).records]  # the decoder process is up
            for process in list(sealer._decoder._executor()._processes.values()):
                assert process.pid is not None
                os.kill(process.pid, signal.SIGKILL)
            sealer.decode_ahead(first)  # both to the pool whose process just died
            sealer.decode_ahead(second)
            records.append(sealer.process(first).records)
            sealer.decode_ahead(third)  # to a fresh pool, while jobs of the dead one are still unread
            records += [sealer.process(batch).records for batch in (second, third)]
        finally:
            sealer.close()
    assert records == expected
    assert read_archive(store).records == read_archive(reference).records


def test_decoding_ahead_is_forgotten_with_a_revoked_partition(index: Index, store: LocalWormStore) -> None:
    sealer = pipeline(store, index, decode_processes=1)
    try:
        sealer.decode_ahead([*messages(2, 3), *messages(1, 3, partition=1)])
        sealer.forget_partition(0)
        assert {key[0] for key in sealer._decoding_ahead} == {1}
    finally:
        sealer.close()


def test_risky_events_are_scored_and_raised_as_alerts(index: Index, store: LocalWormStore) -> None:
    from risk import StatefulScorer  # noqa: PLC0415

    sid = "s-risky"
    events = [
        make_event(
            sid,
            0,
            body("Query", statement="SELECT id FROM orders WHERE id = 7", parameters=[], database=None),
        ),
        make_event(sid, 1, body("Query", statement="DROP TABLE customers", parameters=[], database=None)),
        make_event(sid, 2, end()),
    ]
    sealer = SealPipeline(
        REGISTRY, SealStep(REGISTRY, scorer=StatefulScorer()), store, index, PipelineConfig()
    )
    outcome = sealer.process(
        [
            SourceMessage(
                "events",
                0,
                0,
                sid.encode(),
                REGISTRY.encode(BATCH_SCHEMA, {"session_id": sid, "events": events}),
            )
        ]
    )
    records = read_archive(store).by_session()[sid]
    scores = [value["risk"]["score"] if value["risk"] else None for _, value in records]
    assert scores[0] is not None
    assert scores[1] is not None
    assert scores[1] > scores[0]
    assert any(reason["rule_id"].startswith("sql.") for reason in records[1][1]["risk"]["reasons"])
    alerts = [json.loads(alert) for _, alert in outcome.alerts]
    assert [alert["index"] for alert in alerts] == [1]
    assert alerts[0]["summary"] == "DROP TABLE customers"
    session = index.query(
        "SELECT max_risk, total_risk FROM sessions FINAL WHERE session_id = {s:String}", {"s": sid}
    )
    assert session.to_pylist()[0]["max_risk"] == scores[1]


def test_recovery_reads_an_unindexed_object_once_to_index_and_announce_it(
    index: Index, tmp_path: Path
) -> None:
    class CountingStore(LocalWormStore):
        def __init__(self, root: Path) -> None:
            super().__init__(root, retention=Retention("COMPLIANCE", 1))
            self.whole_reads: list[str] = []

        def get(self, key: str) -> bytes:
            self.whole_reads.append(key)
            return super().get(key)

    store = CountingStore(tmp_path / "worm")
    batch = messages(3, 4)
    with pytest.raises(Crash):
        pipeline(store, CrashingIndex(index, "events")).process(batch)
    restarted = pipeline(store, index)
    replay = restarted.process(batch)
    (key,) = {REGISTRY.decode(message).value["object_key"] for _, message in replay.sealed_batches}
    assert store.whole_reads == [key]  # re-indexed and announced again from one read


def test_recovery_skips_a_stray_upload_in_the_archive(index: Index, store: LocalWormStore) -> None:
    batch = messages(2, 3)
    pipeline(store, index).process(batch)
    store.put_if_absent("e1/p00000/zz-notes.avro", b"not ours")
    restarted = pipeline(store, index)
    assert restarted.process(batch).skipped_messages == len(batch)
    events = [make_event("s-new", 0), make_event("s-new", 1, end())]
    value = REGISTRY.encode(BATCH_SCHEMA, {"session_id": "s-new", "events": events})
    later = SourceMessage("events", 0, len(batch), b"s-new", value)
    assert restarted.process([later]).records == 3  # two events and the seal


def test_announcements_lost_in_a_crash_are_sent_again(index: Index, store: LocalWormStore) -> None:
    batch = messages(3, 4)
    first = pipeline(store, index).process(batch)
    announced = {REGISTRY.decode(message).value["object_key"] for _, message in first.sealed_batches}
    # the process dies after the batch is durable but before its announcement is published:
    restarted = pipeline(store, index)
    replay = restarted.process(batch)
    assert replay.skipped_messages == len(batch)
    again = {REGISTRY.decode(message).value["object_key"] for _, message in replay.sealed_batches}
    assert again == announced
    assert restarted.process(batch).sealed_batches == []  # once per recovery, not per batch
