"""Queued index inserts: order kept, reads see earlier writes, nothing runs after a failure."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Collection, Mapping
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from storage.index import BINARY_COLUMNS, ChdbIndex, IndexStoreError, IndexUnavailable
from storage.index_schema import SEGMENTS_ARROW
from streams.index_writes import QueuedInserts


def run_once(what: str, operation: Callable[[], None]) -> None:
    operation()


def segment_rows(session_id: str, count: int) -> pa.Table:
    return pa.Table.from_pylist(
        [
            {
                "session_id": session_id,
                "first_index": number,
                "last_index": number,
                "record_count": 1,
                "object_key": f"objects/{session_id}",
                "header_length": 10,
                "block_offset": number * 100,
                "block_length": 100,
            }
            for number in range(count)
        ],
        schema=SEGMENTS_ARROW,
    )


class RecordingIndex:
    """Records inserts; fails the ones into ``failing`` tables; can hold inserts until released."""

    def __init__(self, failing: Collection[str] = (), release: threading.Event | None = None) -> None:
        self.failing = set(failing)
        self.release = release
        self.inserted: list[str] = []
        self.queries: list[tuple[str, list[str]]] = []  # (sql, what was inserted when it ran)

    def insert(self, table: str, rows: pa.Table, *, dedup_token: str | None = None) -> None:
        if self.release is not None:
            assert self.release.wait(10), "the test never released the writer"
        if table in self.failing:
            raise RuntimeError(f"insert into {table} failed")
        self.inserted.append(table)

    def query(
        self,
        sql: str,
        parameters: Mapping[str, Any] | None = None,
        *,
        binary_columns: Collection[str] = BINARY_COLUMNS,
    ) -> pa.Table:
        self.queries.append((sql, list(self.inserted)))
        return pa.table({"n": [len(self.inserted)]})


def queued_into(index: RecordingIndex, *tables: str) -> QueuedInserts:
    """A queue over ``index`` that was given one small insert into each of ``tables``."""
    queued = QueuedInserts(index, run_once)  # type: ignore[arg-type]
    for table in tables:
        queued.insert(table, pa.table({"x": [1]}))
    return queued


def test_a_query_reads_the_inserts_given_before_it(tmp_path: Path) -> None:
    with ChdbIndex(tmp_path / "index") as index:
        index.migrate()
        queued = QueuedInserts(index, run_once)
        for number in range(5):
            queued.insert("segments", segment_rows(f"s-{number}", 2000), dedup_token=f"t-{number}")
        count = queued.query("SELECT count() AS n FROM segments").column("n").to_pylist()
        assert count == [10_000]
        assert queued.pending == 0
        queued.close()


def test_inserts_run_in_the_order_given_while_the_caller_goes_on() -> None:
    release = threading.Event()
    index = RecordingIndex(release=release)
    queued = queued_into(index, "events", "segments", "sessions", "archive_objects")
    assert index.inserted == [], "insert must not wait for the writer"
    assert queued.pending == 4
    release.set()
    queued.flush()
    assert index.inserted == ["events", "segments", "sessions", "archive_objects"]
    queued.close()


def test_after_a_failed_insert_nothing_queued_behind_it_runs() -> None:
    # An object's archive_objects row tells recovery the object is fully indexed: it must not
    # land after its events failed to.
    index = RecordingIndex(failing={"events"})
    queued = queued_into(index, "events", "segments", "sessions", "archive_objects")
    with pytest.raises(RuntimeError, match="insert into events failed"):
        queued.flush()
    assert index.inserted == []

    # The queue starts afresh once the failure was reported.
    index.failing.clear()
    queued.insert("archive_objects", pa.table({"x": [1]}))
    queued.flush()
    assert index.inserted == ["archive_objects"]
    queued.close()


def test_a_query_reports_a_failed_insert_before_it_instead_of_reading_past_it() -> None:
    index = RecordingIndex(failing={"events"})
    queued = queued_into(index, "events", "sessions")
    with pytest.raises(RuntimeError, match="events"):
        queued.query("SELECT 1")
    assert index.queries == []
    queued.close()


def test_discard_waits_for_every_insert_and_forgets_failures() -> None:
    index = RecordingIndex(failing={"segments"})
    queued = queued_into(index, "events", "segments", "sessions")
    queued.discard()
    assert queued.pending == 0
    assert index.inserted == ["events"]
    queued.flush()  # nothing left to report
    queued.close()


def test_outages_are_retried_on_the_writer_thread() -> None:
    attempts: list[str] = []

    def retry_twice(what: str, operation: Callable[[], None]) -> None:
        for _ in range(2):
            attempts.append(what)
            try:
                operation()
                return
            except IndexUnavailable:
                continue
        raise AssertionError("still unavailable")

    class FlakyIndex(RecordingIndex):
        def insert(self, table: str, rows: pa.Table, *, dedup_token: str | None = None) -> None:
            if len(attempts) == 1:
                raise IndexUnavailable("connection refused")
            super().insert(table, rows, dedup_token=dedup_token)

    index = FlakyIndex()
    queued = QueuedInserts(index, retry_twice)  # type: ignore[arg-type]
    queued.insert("events", pa.table({"x": [1]}))
    queued.flush()
    assert attempts == ["index events", "index events"]
    assert index.inserted == ["events"]
    queued.close()


def test_closing_mid_batch_keeps_the_chain_so_nothing_runs_after_a_failure() -> None:
    # The worker may close its pipeline while the batch thread is still giving inserts.
    release = threading.Event()
    index = RecordingIndex(failing={"events"}, release=release)
    queued = queued_into(index, "events", "segments")
    closing = threading.Thread(target=queued.close)
    closing.start()
    while not queued.closed:
        time.sleep(0.001)
    with pytest.raises(IndexStoreError, match="closing"):
        queued.insert("archive_objects", pa.table({"x": [1]}))
    release.set()
    closing.join(10)
    assert not closing.is_alive()
    assert index.inserted == []
    # The batch still learns that its inserts failed: it must not count as durable.
    with pytest.raises(RuntimeError, match="insert into events failed"):
        queued.flush()
