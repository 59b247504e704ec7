"""SessionReader against the real index engine (chdb) and the local WORM store.

The sessions here are written by a small writer in this file that lays records out exactly as
the archive and index sinks do (one block per session per object, segments rows with byte
ranges, a sessions row per state), so that the reader can be tested on layouts the sinks rarely
produce: sessions split over objects, interleaved sessions, tampered and missing evidence.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from ingest.events import SessionBuilder, make_gateway, make_identity, make_target
from ledger.chain import GENESIS, record_hash
from replay import (
    ArchiveUnavailable,
    EvidenceCorrupt,
    InvalidQuery,
    SessionNotFound,
    SessionReader,
)
from schemas import EVENT_SCHEMA, SEALED_SCHEMA, default_registry
from storage.archive import ArchivedRecord, build_object
from storage.index import Index
from storage.index_schema import SEGMENTS_ARROW, SESSIONS_ARROW
from storage.objectstore import LocalWormStore, ObjectStore, ObjectStoreUnavailable

T0 = 1_714_564_800_000_000  # 2024-05-01T12:00:00Z


# -- a small, faithful writer ---------------------------------------------------------------


def chain_records(
    events: Sequence[dict[str, Any]],
    *,
    seal_reason: str | None = "closed",
    edit: Callable[[int, dict[str, Any]], None] | None = None,
) -> list[ArchivedRecord]:
    """EVENT records for ``events`` and a SEAL record, chained as the seal step chains them.

    ``edit(index, value)`` changes a record after the chain was computed and re-encodes it:
    what an attacker who rewrote one archived record (and its index rows) would leave behind.
    """
    registry = default_registry()
    values: list[dict[str, Any]] = []
    head = GENESIS
    raws: list[bytes] = []

    def add(value: dict[str, Any]) -> None:
        nonlocal head
        raw = registry.encode_body(SEALED_SCHEMA, value)
        values.append(value)
        raws.append(raw)
        head = record_hash(raw)

    base: dict[str, Any] = {
        "event_digest": None,
        "event": None,
        "gap": None,
        "seal": None,
        "findings": [],
        "risk": None,
    }
    session_id = events[0]["session_id"]
    for event in events:
        add(
            {
                **base,
                "session_id": session_id,
                "index": len(values),
                "kind": "EVENT",
                "prev_hash": head,
                "source_seq": event["seq"],
                "event_digest": hashlib.sha256(registry.encode_body(EVENT_SCHEMA, event)).digest(),
                "event": event,
                "risk": {"score": 10 * (len(values) % 3), "reasons": []},
            }
        )
    if seal_reason is not None:
        last_seq = events[-1]["seq"]
        seal = {"reason": seal_reason, "record_count": len(values), "last_seq": last_seq, "head_hash": head}
        add(
            {
                **base,
                "session_id": session_id,
                "index": len(values),
                "kind": "SEAL",
                "prev_hash": head,
                "source_seq": None,
                "seal": seal,
            }
        )
    if edit is not None:
        for index, value in enumerate(values):
            edit(index, value)
            raws[index] = registry.encode_body(SEALED_SCHEMA, value)
    # The values as the archive hands them back (decoded), not as written.
    return [ArchivedRecord(raw, registry.decode_body(SEALED_SCHEMA, raw)) for raw in raws]


# The reader needs no more than these session columns; the others take the table's defaults.
_SESSIONS = pa.schema(
    [
        field
        for field in SESSIONS_ARROW
        if field.name not in ("gateway_version", "missing_first", "missing_last")
    ]
)


def archive_object(
    store: ObjectStore, index: Index, key: str, blocks: Sequence[Sequence[ArchivedRecord]]
) -> None:
    """One archive object holding one block per entry of ``blocks``, and its segments rows."""
    schema_json = default_registry().canonical_json(SEALED_SCHEMA)
    built = build_object(key, schema_json, [[r.raw for r in block] for block in blocks])
    assert store.put_if_absent(key, built.data)
    rows = [
        {
            "session_id": block[0].value["session_id"],
            "first_index": block[0].value["index"],
            "last_index": block[-1].value["index"],
            "record_count": len(block),
            "object_key": key,
            "header_length": built.header_length,
            "block_offset": location.offset,
            "block_length": location.length,
        }
        for block, location in zip(blocks, built.blocks, strict=True)
    ]
    index.insert("segments", pa.Table.from_pylist(rows, schema=SEGMENTS_ARROW), dedup_token=f"{key}:segments")


def session_row(records: Sequence[ArchivedRecord], *, partition: int = 0) -> dict[str, Any]:
    """The sessions row the index sink writes after ``records`` (the chain so far)."""
    events = [r.value["event"] for r in records if r.value["event"] is not None]
    first = events[0]
    seal = next((r.value["seal"] for r in records if r.value["kind"] == "SEAL"), None)
    risks = [r.value["risk"]["score"] for r in records if r.value["risk"]]
    return {
        "session_id": first["session_id"],
        "kafka_partition": partition,
        "principal": first["identity"]["principal"],
        "identity_kind": first["identity"]["kind"],
        "issuer": first["identity"]["issuer"] or "",
        "groups": list(first["identity"]["groups"]),
        "target_name": first["target"]["name"],
        "target_kind": first["target"]["kind"],
        "target_host": first["target"]["host"] or "",
        "target_database": first["target"]["database"] or "",
        "gateway_id": first["gateway"]["id"],
        "gateway_product": first["gateway"]["product"],
        "started_at": first["event_time"],
        "last_event_at": max(e["event_time"] for e in events),
        "record_count": len(records),
        "last_seq": max(r.value["source_seq"] for r in records if r.value["source_seq"] is not None),
        "head_hash": record_hash(records[-1].raw),
        "sealed": int(seal is not None),
        "seal_reason": seal["reason"] if seal else "",
        "gap_count": sum(r.value["kind"] == "GAP" for r in records),
        "fork_count": sum(r.value["kind"] == "FORK" for r in records),
        "max_risk": max(risks, default=0),
        "total_risk": sum(risks),
        "version": len(records),
    }


def index_sessions(index: Index, rows: Iterable[dict[str, Any]]) -> None:
    index.insert("sessions", pa.Table.from_pylist(list(rows), schema=_SESSIONS))


def write_sessions(
    store: ObjectStore, index: Index, sessions: Sequence[Sequence[ArchivedRecord]], key: str
) -> None:
    """Each session whole, all in one object, with its final sessions row."""
    archive_object(store, index, key, sessions)
    index_sessions(index, (session_row(records) for records in sessions))


def terminal_session(
    session_id: str,
    *,
    principal: str = "deploy-bot",
    kind: str = "CI_JOB",
    target: str = "prod-db",
    target_kind: str = "POSTGRES",
    start_us: int = T0,
    output: Sequence[bytes] = (b"$ ls\r\n", b"README.md\r\n"),
) -> list[dict[str, Any]]:
    """A terminal session's events: start (100x30), outputs a millisecond apart, a resize, end."""
    builder = SessionBuilder(
        session_id,
        make_identity(principal, kind, issuer="https://idp.example", groups=["ops"]),
        make_target(target, target_kind),
        make_gateway("gw-1", "blackbox-recorder"),
    )
    events = [builder.start(cols=100, rows=30, term="xterm-256color", at_us=start_us)]
    for number, data in enumerate(output, start=1):
        events.append(builder.output(data, at_us=start_us + number * 1000))
    events.append(builder.resize(120, 40, at_us=start_us + 500_000))
    events.append(builder.end("exit", 0, at_us=start_us + 1_000_000))
    return [dict(event) for event in events]


# -- stores that misbehave on purpose -------------------------------------------------------


class RecordingStore:
    """Passes reads through and remembers them; whole-object reads fail the test."""

    def __init__(self, inner: ObjectStore) -> None:
        self.inner = inner
        self.ranges: list[tuple[str, int, int]] = []

    def get(self, key: str) -> bytes:
        raise AssertionError(f"the reader fetched the whole object {key}")

    def get_range(self, key: str, start: int, length: int) -> bytes:
        self.ranges.append((key, start, length))
        return self.inner.get_range(key, start, length)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


class FlakyStore(RecordingStore):
    def get_range(self, key: str, start: int, length: int) -> bytes:
        raise ObjectStoreUnavailable(f"get range of {key}: connection reset")

    def size(self, key: str) -> int:
        raise ObjectStoreUnavailable("head: connection reset")


class BitFlipStore(RecordingStore):
    """Flips a bit of every block's record count (the first varint of a block read)."""

    def get_range(self, key: str, start: int, length: int) -> bytes:
        data = bytearray(self.inner.get_range(key, start, length))
        if start > 0 and data:
            data[0] ^= 0x02  # zigzag: the count moves by one, so the block no longer adds up
        return bytes(data)


# -- fixtures ---------------------------------------------------------------------------------


@pytest.fixture
def store(tmp_path: Path) -> LocalWormStore:
    return LocalWormStore(tmp_path / "worm", retention=None)


# -- tests ------------------------------------------------------------------------------------

pytestmark = pytest.mark.clickhouse


def test_records_come_from_ranged_reads_in_chain_order(store: LocalWormStore, index: Index) -> None:
    a = chain_records(terminal_session("sess-a", output=[f"line {i}\r\n".encode() for i in range(6)]))
    b = chain_records(terminal_session("sess-b"))
    # Session a spans two objects; the first also holds all of session b, between a's blocks.
    archive_object(store, index, "p0/obj-1", [a[:4], b])
    archive_object(store, index, "p0/obj-2", [a[4:]])
    index_sessions(index, [session_row(a), session_row(b)])
    recording = RecordingStore(store)
    reader = SessionReader(index, recording)

    records = reader.records("sess-a")

    assert [r.raw for r in records] == [r.raw for r in a]
    headers = [r for r in recording.ranges if r[1] == 0]
    assert [key for key, _, _ in headers] == ["p0/obj-1", "p0/obj-2"], "one header read per object"
    assert len(recording.ranges) == 4  # two headers, two blocks


def test_one_record_comes_from_the_block_that_holds_it(store: LocalWormStore, index: Index) -> None:
    a = chain_records(terminal_session("sess-a", output=[f"line {i}\r\n".encode() for i in range(6)]))
    archive_object(store, index, "p0/obj-1", [a[:4]])
    archive_object(store, index, "p0/obj-2", [a[4:]])
    index_sessions(index, [session_row(a)])
    recording = RecordingStore(store)
    reader = SessionReader(index, recording)

    record = reader.record("sess-a", 5)

    assert record is not None
    assert record.raw == a[5].raw
    assert [key for key, _, _ in recording.ranges] == ["p0/obj-2", "p0/obj-2"]  # its header, its block
    assert reader.record("sess-a", len(a)) is None
    with pytest.raises(InvalidQuery):
        reader.record("sess-a", -1)
    with pytest.raises(SessionNotFound):
        reader.record("missing", 0)


def test_search_filters_pages_and_orders_newest_first(store: LocalWormStore, index: Index) -> None:
    sessions = [
        chain_records(
            terminal_session(
                f"s{n}",
                principal="bot" if n % 2 else "alice",
                kind="CI_JOB" if n % 2 else "HUMAN",
                target="db" if n < 4 else "k8s",
                target_kind="POSTGRES" if n < 4 else "KUBERNETES",
                start_us=T0 + (n // 2) * 60_000_000,
            )
        )
        for n in range(7)
    ]
    write_sessions(store, index, sessions, "p0/obj")
    reader = SessionReader(index, store)

    everything = reader.search(limit=500)
    assert [s.session_id for s in everything.items] == ["s6", "s5", "s4", "s3", "s2", "s1", "s0"]
    assert everything.next_cursor is None

    pages, cursor = [], None
    while True:
        page = reader.search(limit=2, cursor=cursor)
        pages.append([s.session_id for s in page.items])
        cursor = page.next_cursor
        if cursor is None:
            break
    assert pages == [["s6", "s5"], ["s4", "s3"], ["s2", "s1"], ["s0"]]

    assert [s.session_id for s in reader.search(principal="bot").items] == ["s5", "s3", "s1"]
    assert [s.session_id for s in reader.search(identity_kind="human").items] == ["s6", "s4", "s2", "s0"]
    assert [s.session_id for s in reader.search(target="k8s", target_kind="KUBERNETES").items] == [
        "s6",
        "s5",
        "s4",
    ]
    window = reader.search(since_us=T0 + 60_000_000, until_us=T0 + 180_000_000)
    assert [s.session_id for s in window.items] == ["s5", "s4", "s3", "s2"]
    assert reader.search(principal="nobody").items == []

    summary = reader.get_session("s3")
    assert summary.identity.principal == "bot"
    assert summary.identity.groups == ("ops",)
    assert summary.identity.issuer == "https://idp.example"
    assert summary.target.kind == "POSTGRES"
    assert summary.target.host is None
    assert summary.gateway.product == "blackbox-recorder"
    assert summary.started_at_us == T0 + 60_000_000
    assert summary.last_event_at_us == T0 + 61_000_000
    assert summary.sealed
    assert summary.seal_reason == "closed"
    assert summary.record_count == len(sessions[3])
    assert summary.head_hash == record_hash(sessions[3][-1].raw).hex()
    assert summary.max_risk == 20


def test_latest_sessions_row_wins(store: LocalWormStore, index: Index) -> None:
    records = chain_records(terminal_session("s-grow"))
    archive_object(store, index, "p0/obj-1", [records[:3]])
    index_sessions(index, [session_row(records[:3])])  # an open session, as of the first batch
    archive_object(store, index, "p0/obj-2", [records[3:]])
    index_sessions(index, [session_row(records)])
    reader = SessionReader(index, store)
    assert [s.session_id for s in reader.search().items] == ["s-grow"]
    summary = reader.get_session("s-grow")
    assert (summary.record_count, summary.sealed) == (len(records), True)
    assert reader.verify("s-grow").valid


def test_open_session_whose_index_row_lags_the_archive_verifies(store: LocalWormStore, index: Index) -> None:
    records = chain_records(terminal_session("s-open"), seal_reason=None)
    archive_object(store, index, "p0/obj", [records])
    index_sessions(index, [session_row(records[:2])])
    verdict = SessionReader(index, store).verify("s-open")
    assert verdict.valid, verdict.failure
    assert (verdict.sealed, verdict.record_count) == (False, len(records))


@pytest.mark.parametrize(
    "arguments",
    [
        {"limit": 0},
        {"limit": 501},
        {"cursor": "not-a-cursor"},
        {"cursor": "eyJ2IjoxLCJ0IjoiMSIsInMiOiJ4In0"},  # valid base64 JSON, wrong types
        {"identity_kind": "ROBOT"},
        {"target_kind": "FTP"},
        {"since_us": 10, "until_us": 5},
        {"principal": "x" * 300},
    ],
)
def test_bad_search_arguments_are_invalid_queries(
    index: Index, store: LocalWormStore, arguments: Any
) -> None:
    with pytest.raises(InvalidQuery):
        SessionReader(index, store).search(**arguments)


def test_unknown_session_is_not_found(index: Index, store: LocalWormStore) -> None:
    reader = SessionReader(index, store)
    for call in (reader.get_session, reader.records, reader.events, reader.verify, reader.asciicast):
        with pytest.raises(SessionNotFound):
            call("missing")


def test_events_are_json_ready_and_filterable(store: LocalWormStore, index: Index) -> None:
    output = [b"caf\xc3", b"\xa9 ok\r\n", b"\xff\xfe raw"]
    records = chain_records(terminal_session("s-json", output=output))
    write_sessions(store, index, [records], "p0/obj")
    reader = SessionReader(index, store)

    events = reader.events("s-json")
    assert [e["index"] for e in events] == list(range(len(records)))
    start = events[0]
    assert start["body_type"] == "SessionStart"
    assert start["body"]["terminal"] == {"cols": 100, "rows": 30}
    assert start["event_time"] == "2024-05-01T12:00:00.000000Z"
    assert start["event_time_us"] == T0
    assert start["prev_hash"] == "00" * 32
    assert start["record_hash"] == events[1]["prev_hash"]
    # Valid UTF-8 is text only; a split or invalid sequence also carries the exact bytes.
    first, second, third = events[1]["body"], events[2]["body"], events[3]["body"]
    assert first == {"data": "caf\ufffd", "data_base64": "Y2Fmww=="}
    assert second["data"] == "\ufffd ok\r\n"
    assert third["data_base64"] == "//4gcmF3"
    seal = events[-1]
    assert seal["kind"] == "SEAL"
    assert seal["body"] is None
    assert seal["seal"]["record_count"] == len(records) - 1
    assert seal["seal"]["head_hash"] == events[-2]["record_hash"]

    assert [e["kind"] for e in reader.events("s-json", kinds=["seal"])] == ["SEAL"]
    page = reader.events("s-json", after_index=2, limit=2)
    assert [e["index"] for e in page] == [3, 4]
    with pytest.raises(InvalidQuery):
        reader.events("s-json", kinds=["NOPE"])
    with pytest.raises(InvalidQuery):
        reader.events("s-json", after_index=-1)


def test_asciicast_of_a_session(store: LocalWormStore, index: Index) -> None:
    output = ["héllo ".encode(), "wörld\r\n".encode()]
    split = [output[0][:2], output[0][2:], output[1]]  # é split across two events
    write_sessions(store, index, [chain_records(terminal_session("s-cast", output=split))], "p0/obj")
    cast = SessionReader(index, store).asciicast("s-cast")
    lines = cast.splitlines()
    assert '"width": 100, "height": 30' in lines[0]
    assert '"title": "deploy-bot \\u2192 prod-db"' in lines[0]
    assert lines[1:] == [
        '[0.001, "o", "h"]',
        '[0.002, "o", "\\u00e9llo "]',
        '[0.003, "o", "w\\u00f6rld\\r\\n"]',
        '[0.5, "r", "120x40"]',
    ]


def test_verify_passes_an_intact_session(store: LocalWormStore, index: Index) -> None:
    records = chain_records(terminal_session("s-ok"))
    write_sessions(store, index, [records], "p0/obj")
    verdict = SessionReader(index, store).verify("s-ok")
    assert verdict.valid, verdict.failure
    assert verdict.checks == ("chain", "index.record_count", "index.head_hash")
    assert verdict.sealed
    assert verdict.record_count == len(records)
    assert verdict.head_hash == record_hash(records[-1].raw).hex()


def test_verify_finds_an_edited_record(store: LocalWormStore, index: Index) -> None:
    def rewrite_output(position: int, value: dict[str, Any]) -> None:
        if position == 2:
            value["event"]["body"] = (value["event"]["body"][0], {"data": b"nothing to see\r\n"})

    records = chain_records(terminal_session("s-edit"), edit=rewrite_output)
    write_sessions(store, index, [records], "p0/obj")
    reader = SessionReader(index, store)
    verdict = reader.verify("s-edit")
    assert not verdict.valid
    assert verdict.failure is not None
    assert (verdict.failure.check, verdict.failure.index) == ("chain.prev_hash", 3)
    # Reads refuse the edited evidence too, wherever they start.
    with pytest.raises(EvidenceCorrupt, match="record 3 does not link"):
        reader.asciicast("s-edit")
    with pytest.raises(EvidenceCorrupt, match="record 3 does not link"):
        reader.events("s-edit", after_index=2)
    assert [e["index"] for e in reader.events("s-edit", limit=2)] == [0, 1]


def test_verify_finds_records_removed_from_the_end(store: LocalWormStore, index: Index) -> None:
    records = chain_records(terminal_session("s-cut"))
    archive_object(store, index, "p0/obj", [records[:-2]])  # the last two never reach the archive
    index_sessions(index, [session_row(records)])
    verdict = SessionReader(index, store).verify("s-cut")
    assert not verdict.valid
    assert verdict.failure is not None
    assert verdict.failure.check == "chain.unsealed"


def test_corrupt_block_is_evidence_corrupt_and_a_failed_verdict(store: LocalWormStore, index: Index) -> None:
    write_sessions(store, index, [chain_records(terminal_session("s-flip"))], "p0/obj")
    reader = SessionReader(index, BitFlipStore(store))
    with pytest.raises(EvidenceCorrupt):
        reader.events("s-flip")
    verdict = reader.verify("s-flip")
    assert not verdict.valid
    assert verdict.failure is not None
    assert verdict.failure.check == "archive"


def test_missing_object_and_unindexed_records_are_evidence_corrupt(
    store: LocalWormStore, index: Index
) -> None:
    records = chain_records(terminal_session("s-hole", output=[b"a", b"b", b"c", b"d"]))
    archive_object(store, index, "p0/obj-1", [records[:2]])
    archive_object(store, index, "p0/obj-3", [records[4:]])  # records 2..3 are not indexed
    index_sessions(index, [session_row(records)])
    with pytest.raises(EvidenceCorrupt, match=r"leaves a hole"):
        SessionReader(index, store).records("s-hole")

    index.insert(
        "segments",
        pa.Table.from_pylist(
            [
                {
                    "session_id": "s-gone",
                    "first_index": 0,
                    "last_index": 0,
                    "record_count": 1,
                    "object_key": "p0/never-written",
                    "header_length": 100,
                    "block_offset": 100,
                    "block_length": 10,
                }
            ],
            schema=SEGMENTS_ARROW,
        ),
    )
    with pytest.raises(EvidenceCorrupt, match="missing"):
        SessionReader(index, store).records("s-gone")


def test_store_outage_is_archive_unavailable(store: LocalWormStore, index: Index) -> None:
    write_sessions(store, index, [chain_records(terminal_session("s-down"))], "p0/obj")
    reader = SessionReader(index, FlakyStore(store))
    with pytest.raises(ArchiveUnavailable):
        reader.records("s-down")
    assert reader.health() == {"index": "ok", "object_store": "unavailable: ObjectStoreUnavailable"}
    assert SessionReader(index, store).health() == {"index": "ok", "object_store": "ok"}
