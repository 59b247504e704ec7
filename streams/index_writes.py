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

from storage.index import BINARY_COLUMNS, Index

# (what the operation is, for the log; the operation) → its result, retrying outages
Attempt = Callable[[str, Callable[[], None]], None]


class InsertSkipped(Exception):
    """An insert was not run, because one queued before it failed."""


class QueuedInserts:
    """Inserts into ``index`` run in order on one writer thread; queries wait for them first.

    Not for concurrent callers: one pipeline thread gives inserts and reads (the index itself
    may be shared with others, who use it directly).
    """

    def __init__(self, index: Index, attempt: Attempt) -> None:
        self._index = index
        self._attempt = attempt
        self._pending: list[Future[None]] = []
        self._failed = threading.Event()  # set by the writer thread; cleared when the queue is empty
        self._writer: ThreadPoolExecutor | None = None

    def insert(self, table: str, rows: pa.Table, *, dedup_token: str | None = None) -> None:
        if self._writer is None:
            self._writer = ThreadPoolExecutor(1, thread_name_prefix="blackbox-index-writer")
        operation = functools.partial(self._index.insert, table, rows, dedup_token=dedup_token)
        self._pending.append(self._writer.submit(self._run, f"index {table}", operation))

    def _run(self, what: str, operation: Callable[[], None]) -> None:
        if self._failed.is_set():
            raise InsertSkipped(f"{what}: not run after an earlier insert failed")
        try:
            self._attempt(what, operation)
        except BaseException:
            self._failed.set()
            raise

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
    def pending(self) -> int:
        return sum(not future.done() for future in self._pending)

    def flush(self) -> None:
        """Wait for every insert given so far; raise the first failure."""
        first_failure = self._wait()
        if first_failure is not None:
            raise first_failure

    def discard(self) -> None:
        """Wait for every insert given so far and forget their failures (the caller is already
        failing: what is not in the index, recovery indexes from the archive)."""
        self._wait()

    def _wait(self) -> BaseException | None:
        pending, self._pending = self._pending, []
        first_failure: BaseException | None = None
        for future in pending:
            failure = future.exception()
            if failure is not None and first_failure is None:
                first_failure = failure
        self._failed.clear()  # the queue is empty: the next batch starts afresh
        return first_failure

    def close(self) -> None:
        self.discard()
        if self._writer is not None:
            self._writer.shutdown(wait=True)
            self._writer = None
