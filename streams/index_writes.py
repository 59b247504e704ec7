"""Index inserts on a thread of their own, so the engine's work overlaps the next partition's sealing.

An insert into ClickHouse (chdb in process, or a server) spends most of its time outside the
GIL: the engine parses the Arrow stream and writes parts while Python waits. The seal worker is
one Python process, and waiting there was about a quarter of its batch time. `QueuedInserts`
takes an insert and returns at once; one writer thread runs the inserts in the order they were
given, while the caller decodes and seals the next partition.

Two rules keep the pipeline's guarantees:

- A query first waits for every insert given before it, so the caller always reads its own
  writes (recovery re-indexes an object, then reads the states it wrote).
- After a failed insert, the inserts queued behind it are not run. The pipeline inserts an
  object's `archive_objects` row last, and its presence tells recovery the object is fully
  indexed: a row after a failure would claim rows that are missing.

`flush` waits for everything given so far and raises the first failure; the pipeline calls it
before a batch counts as durable, so nothing is acknowledged or announced earlier than before.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable, Collection, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import pyarrow as pa

from storage.index import BINARY_COLUMNS, Index, IndexStoreError

# (what the operation is, for the log; the operation) → its result, retrying outages
Attempt = Callable[[str, Callable[[], None]], None]


class InsertSkipped(Exception):
    """An insert was not run, because one queued before it failed."""


class QueuedInserts:
    """Inserts into ``index`` run in order on one writer thread; queries wait for them first.

    One pipeline thread gives the inserts and reads (the index itself may be shared with others,
    who use it directly); `close` may come from another thread, while a batch is still running.
    """

    def __init__(self, index: Index, attempt: Attempt) -> None:
        self._index = index
        self._attempt = attempt
        self._lock = threading.Lock()
        self._pending: list[Future[None]] = []
        # The insert given last since the queue was last emptied: the next one runs only if it
        # succeeded. Only `flush` and `discard` (the owner, between batches) start a new chain.
        self._last: Future[None] | None = None
        self._writer: ThreadPoolExecutor | None = None
        self._closed = False

    def insert(self, table: str, rows: pa.Table, *, dedup_token: str | None = None) -> None:
        operation = functools.partial(self._index.insert, table, rows, dedup_token=dedup_token)
        with self._lock:
            if self._closed:
                raise IndexStoreError(f"cannot index {table}: the pipeline is closing")
            if self._writer is None:
                self._writer = ThreadPoolExecutor(1, thread_name_prefix="blackbox-index-writer")
            self._last = self._writer.submit(self._run, self._last, f"index {table}", operation)
            self._pending.append(self._last)

    def _run(self, previous: Future[None] | None, what: str, operation: Callable[[], None]) -> None:
        # One writer thread runs the inserts in order: ``previous`` has finished by now.
        if previous is not None and previous.exception() is not None:
            raise InsertSkipped(f"{what}: not run after an earlier insert failed")
        self._attempt(what, operation)

    def query(
        self,
        sql: str,
        parameters: Mapping[str, Any] | None = None,
        *,
        binary_columns: Collection[str] = BINARY_COLUMNS,
    ) -> pa.Table:
        self.flush()
        return self._index.query(sql, parameters, binary_columns=binary_columns)

    @property
    def closed(self) -> bool:
        with self._lock:
            return self._closed

    @property
    def pending(self) -> int:
        with self._lock:
            return sum(not future.done() for future in self._pending)

    def flush(self) -> None:
        """Wait for every insert given so far; raise the first failure."""
        first_failure = self._wait(take=True)
        if first_failure is not None:
            raise first_failure

    def discard(self) -> None:
        """Wait for every insert given so far and forget their failures (the caller is already
        failing: what is not in the index, recovery indexes from the archive)."""
        self._wait(take=True)

    def _wait(self, *, take: bool) -> BaseException | None:
        """Wait for the inserts given so far and return the first failure. ``take``: they are
        the owner's to report, and the next insert starts a new chain; otherwise (`close`) they
        stay queued for the owner's `flush`, which must still see their failures."""
        with self._lock:
            if take:
                pending, self._pending, self._last = self._pending, [], None
            else:
                pending = list(self._pending)
        first_failure: BaseException | None = None
        for future in pending:
            failure = future.exception()
            if failure is not None and first_failure is None:
                first_failure = failure
        return first_failure

    def close(self) -> None:
        """Refuse further inserts, wait for those given, stop the writer thread. Safe while the
        pipeline's thread is inside a batch: that batch fails, and the inserts it gave stay
        queued for its `flush` to report, their chain unbroken, so nothing runs after a failure."""
        with self._lock:
            self._closed = True
        self._wait(take=False)
        with self._lock:
            writer, self._writer = self._writer, None
        if writer is not None:
            writer.shutdown(wait=True)
