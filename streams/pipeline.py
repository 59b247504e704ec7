"""One batch of `blackbox.events` messages → sealed records durable in the archive and the index.

The Faust agent hands a batch here (`hand_over`) and acknowledges it only after `complete`
returns its outcome, so an offset is committed only once its records are in both sinks
(invariant 1); with a seal process, the next batch is handed over inside `complete`, before the
last partition is written, and seals meanwhile. Per partition:

    decode → seal (per-session chain) → archive object (WORM) → index rows → commit states

The archive is the log of what is durable. Its object keys carry the source offsets they
cover, so after a crash the worker asks the archive, not its own memory, how far it got
(`_recover`): objects the index has not seen are indexed from their own bytes, messages at or
below the last archived offset are skipped, and chain states are reloaded from the index.
A replay therefore never writes a record twice and never forks a chain.
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import pyarrow as pa

from ledger.chain import record_hash
from schemas import SEALED_BATCH_SCHEMA, SEALED_SCHEMA, SchemaRegistry
from schemas.bodies import OUTPUT_FLUSH, SECRET_PROMPT_ATTRIBUTE, WORKER_REQUESTS
from storage.archive import (
    ArchivedRecord,
    BlockLocation,
    build_object,
    iter_blocks,
    object_key,
    object_prefix,
    parse_object_key,
)
from storage.index import Index, IndexUnavailable
from storage.index_schema import ARCHIVE_OBJECTS_ARROW, EVENTS_ARROW, SEGMENTS_ARROW, SESSIONS_ARROW
from storage.objectstore import ObjectStore, ObjectStoreUnavailable
from streams.decode import DecodedMessage, Decoder, Events
from streams.index_writes import QueuedInserts
from streams.seal import SealStep, SessionState, alert_json, replay_state
from streams.sealer import (
    Holding,
    LocalSealer,
    MessageSealed,
    PartitionJob,
    RecordRow,
    Sealer,
    record_row,
)

logger = logging.getLogger(__name__)

T = TypeVar("T")
# The next batch's messages, if one is due now (`SealPipeline.complete`).
NextBatch = Callable[[], Sequence["SourceMessage"]]
# One index row's source: the record, and the source offset it came from.
IndexRow = tuple[RecordRow, int]

DIGEST_WINDOW = 4096  # recent seq → digest kept per session; older duplicates ask the index
DECODE_CHUNK = 250  # messages per decode job: enough to amortise the hand-off, small enough to overlap
# Messages decoded at a time while waiting for a seal process (~10 ms): its results are read soon.
DECODE_WHILE_WAITING_MESSAGES = 20
SEALED_HASHES_PER_MESSAGE = 8192  # ~300 KiB of hashes: well under Kafka's default 1 MiB limit


@dataclass(frozen=True)
class SourceMessage:
    """A consumed message, independent of the Kafka client that delivered it."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...] = ()


@dataclass(frozen=True)
class DeadLetter:
    """Input that can never be sealed: its original bytes, why, and where it came from."""

    key: bytes | None
    value: bytes
    reason: str
    source: SourceMessage
    event_index: int | None = None  # position inside a batch message, when one event failed

    def headers(self) -> list[tuple[str, bytes]]:
        headers = [
            ("blackbox.dlq.reason", self.reason.encode()),
            ("blackbox.dlq.topic", self.source.topic.encode()),
            ("blackbox.dlq.partition", str(self.source.partition).encode()),
            ("blackbox.dlq.offset", str(self.source.offset).encode()),
        ]
        if self.event_index is not None:
            headers.append(("blackbox.dlq.event_index", str(self.event_index).encode()))
        # The original headers travel along, prefixed so they cannot pose as ours.
        headers.extend((f"original.{name}", value) for name, value in self.source.headers)
        return headers


@dataclass
class BatchOutcome:
    dead_letters: list[DeadLetter] = field(default_factory=list)
    # (session id, JSON alert) for blackbox.alerts, published with the sealed batches
    alerts: list[tuple[str, bytes]] = field(default_factory=list)
    # (source partition, SealedBatch message) to publish on blackbox.sealed
    sealed_batches: list[tuple[int, bytes]] = field(default_factory=list)
    records: int = 0
    events: int = 0
    duplicates: int = 0
    skipped_messages: int = 0
    objects_written: int = 0
    # (partition, offset) of messages whose terminal bytes the masker still holds: not to be
    # acknowledged yet, so that a crash delivers them again (see SealPipeline.held_messages)
    held: frozenset[tuple[int, int]] = frozenset()


class EvidenceMismatch(RuntimeError):
    """The index and the archive disagree in a way recovery cannot settle on its own."""


@dataclass(frozen=True)
class _PlacedObject:
    """An archive object's identity and layout, as the index records it."""

    key: str
    partition: int
    first_offset: int
    last_offset: int
    header_length: int
    byte_size: int
    blocks: tuple[BlockLocation, ...]


class DlqLimitExceeded(RuntimeError):
    """More dead letters than the configured rate: a bad deploy or a hostile producer.
    The worker stops instead of draining the topic into the DLQ."""


@dataclass(frozen=True)
class PipelineConfig:
    epoch: str = "e1"
    max_message_bytes: int = 4 * 1024 * 1024
    dlq_limit: int = 1000
    dlq_window_seconds: float = 60.0
    retry_initial_seconds: float = 0.2
    retry_max_seconds: float = 10.0
    decode_processes: int = 0  # > 0: decode in that many child processes (see streams/decode.py)
    decode_ahead_limit: int = 1000  # messages decoded ahead of their batch, at most (one batch)


# A block of an archive object as read back: where it is, and its records.
_Block = tuple[BlockLocation, list[ArchivedRecord]]


def _our_object(key: str) -> tuple[str, int, int, int]:
    parsed = parse_object_key(key)
    if parsed is None:
        raise EvidenceMismatch(f"{key} is not an archive object key of the seal worker")
    return parsed


class DlqRateLimiter:
    def __init__(
        self, limit: int, window_seconds: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._limit = limit
        self._window = window_seconds
        self._clock = clock
        self._times: deque[float] = deque()

    def check(self, count: int) -> None:
        """Raise DlqLimitExceeded if ``count`` more dead letters would pass the limit."""
        now = self._clock()
        while self._times and now - self._times[0] > self._window:
            self._times.popleft()
        if len(self._times) + count > self._limit:
            raise DlqLimitExceeded(
                f"{len(self._times) + count} dead letters within {self._window:.0f}s exceed the limit of "
                f"{self._limit}; stopping instead of draining the topic into the DLQ"
            )

    def record(self, count: int) -> None:
        now = self._clock()
        self._times.extend([now] * count)


class SessionCache:
    """Chain states and recent event digests, with a staging area for the batch in flight.

    A batch's changes become visible to later batches only after its records are durable
    (`commit`); a failed batch is forgotten (`discard`) and its sessions reload from the index.
    """

    def __init__(self) -> None:
        self.states: dict[str, SessionState] = {}
        self.digests: dict[str, dict[int, bytes]] = {}
        self.last_seen: dict[str, float] = {}
        self.idle_requested: set[str] = set()
        self._staged_states: dict[str, SessionState] = {}
        self._staged_digests: dict[tuple[str, int], bytes] = {}
        self._staged_active: set[str] = set()  # sessions with records of their own in the batch

    def get(self, session_id: str) -> SessionState | None:
        return self._staged_states.get(session_id) or self.states.get(session_id)

    def stage(self, state: SessionState, rows: Sequence[RecordRow]) -> None:
        self._staged_states[state.session_id] = state
        # The worker's own requests (a flush of held bytes) do not make a session active: its
        # idle time runs from its gateway's last event.
        if any(not row.worker_request for row in rows):
            self._staged_active.add(state.session_id)
        for row in rows:
            if row.gateway_event and row.source_seq is not None and row.event_digest is not None:
                self._staged_digests[(state.session_id, row.source_seq)] = row.event_digest

    def recent_digest(self, session_id: str, seq: int) -> bytes | None:
        staged = self._staged_digests.get((session_id, seq))
        if staged is not None:
            return staged
        return self.digests.get(session_id, {}).get(seq)

    def staged(self) -> dict[str, SessionState]:
        return self._staged_states

    def commit(self, now: float) -> None:
        for (session_id, seq), digest in self._staged_digests.items():
            window = self.digests.setdefault(session_id, {})
            window[seq] = digest
            if len(window) > DIGEST_WINDOW:
                for old in sorted(window)[: len(window) - DIGEST_WINDOW]:
                    del window[old]
        for session_id, state in self._staged_states.items():
            if state.sealed:  # a sealed chain takes no more records: its state lives in the index
                self.forget(session_id)
            else:
                self.states[session_id] = state
                if session_id in self._staged_active or session_id not in self.last_seen:
                    self.last_seen[session_id] = now
                    self.idle_requested.discard(session_id)
        self.discard()

    def discard(self) -> None:
        self._staged_states = {}
        self._staged_digests = {}
        self._staged_active = set()

    def forget(self, session_id: str) -> None:
        self.states.pop(session_id, None)
        self.digests.pop(session_id, None)
        self.last_seen.pop(session_id, None)
        self.idle_requested.discard(session_id)

    def forget_partition(self, partition: int) -> None:
        for session_id in [sid for sid, state in self.states.items() if state.partition == partition]:
            self.forget(session_id)


# The worker's requests as the events table names body types (see `streams.seal.summarize`).
_WORKER_REQUEST_TYPES = sorted(name.rsplit(".", 1)[-1] for name in WORKER_REQUESTS)
_SESSION_COLUMNS = ", ".join(field.name for field in SESSIONS_ARROW)
# Column names are this module's own constants; values are bound server-side.
_STATES_BY_ID_SQL = f"SELECT {_SESSION_COLUMNS} FROM sessions FINAL WHERE session_id IN {{ids:Array(String)}}"  # noqa: S608
_OPEN_STATES_SQL = (
    f"SELECT {_SESSION_COLUMNS} FROM sessions FINAL"  # noqa: S608
    " WHERE kafka_partition = {p:UInt32} AND sealed = 0"
)


def _chunks(items: list[SourceMessage], size: int) -> list[list[SourceMessage]]:
    return [items[start : start + size] for start in range(0, len(items), size)]


def _state_from_row(row: dict[str, Any]) -> SessionState:
    return SessionState(
        session_id=row["session_id"],
        partition=row["kafka_partition"],
        next_index=row["record_count"],
        head_hash=row["head_hash"],
        last_seq=row["last_seq"],
        sealed=bool(row["sealed"]),
        seal_reason=row["seal_reason"],
        missing=tuple(zip(row["missing_first"], row["missing_last"], strict=True)),
        gap_count=row["gap_count"],
        fork_count=row["fork_count"],
        started_at_us=_micros(row["started_at"]),
        last_event_at_us=_micros(row["last_event_at"]),
        max_risk=row["max_risk"],
        total_risk=row["total_risk"],
        identity={
            "principal": row["principal"],
            "kind": row["identity_kind"],
            "issuer": row["issuer"] or None,
            "groups": list(row["groups"]),
        },
        target={
            "name": row["target_name"],
            "kind": row["target_kind"],
            "host": row["target_host"] or None,
            "database": row["target_database"] or None,
        },
        gateway={
            "id": row["gateway_id"],
            "product": row["gateway_product"],
            "version": row["gateway_version"],
        },
    )


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _micros(value: datetime | int) -> int:
    if isinstance(value, int):
        return value
    # Integer arithmetic: a float timestamp can be a microsecond off at today's magnitudes.
    return (value - _EPOCH) // timedelta(microseconds=1)


@dataclass(frozen=True)
class FlushRequest:
    """What the worker's request to flush a session says (see `streams.app.output_flush_event`)."""

    state: SessionState
    secret_prompt: bool  # a password prompt of the session is open
    held_from: int  # the offset of the message the hold runs from: the request's id names it


@dataclass
class _Hold:
    """Bytes of a session the masker holds back (an unfinished token, a secret prompt)."""

    offset: int  # the earliest message they came in: left unacknowledged until they go
    since: float  # when the hold began (clock of the pipeline)
    flush_asked_at_seq: int | None = None  # the session's last seq when a flush was last asked
    prompt_open: bool = False  # a password prompt is open (what the masker said last)


@dataclass
class _PartitionBatch:
    partition: int
    # the partition's messages in the batch that are not durable yet, in offset order
    messages: list[tuple[SourceMessage, DecodedMessage]]
    # session id → records in chain order, and the offset of the message that produced each
    records: dict[str, list[IndexRow]] = field(default_factory=dict)

    @property
    def first_offset(self) -> int:
        return self.messages[0][0].offset

    @property
    def last_offset(self) -> int:
        return self.messages[-1][0].offset


@dataclass
class HandedBatch:
    """A batch handed to the sealer and not yet written (`SealPipeline.hand_over`)."""

    outcome: BatchOutcome  # so far: decoding's dead letters, recovery's announcements
    batches: list[_PartitionBatch]
    results: Iterator[tuple[PartitionJob, list[MessageSealed]]]
    job_count: int
    times_forgotten: dict[int, int]  # partition → how often it was forgotten, at hand-over


@dataclass
class _DecodeJob:
    """Message values a decoder was given ahead of their batch (see `SealPipeline.decode_ahead`)."""

    values: list[bytes | None]
    future: Future[list[DecodedMessage]] | None = None


def _repeats(messages: Sequence[SourceMessage], batch: _PartitionBatch) -> bool:
    """Whether a message comes again at or below the last offset of ``batch``, in its partition
    (a redelivery)."""
    return any(
        message.partition == batch.partition and message.offset <= batch.last_offset for message in messages
    )


class SealPipeline:
    """Seals batches and makes them durable. Synchronous: the agent runs it in a thread."""

    def __init__(
        self,
        registry: SchemaRegistry,
        seal_step: SealStep | Sealer,
        store: ObjectStore,
        index: Index,
        config: PipelineConfig,
        *,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._registry = registry
        # The seal step in this thread, or in a process of its own (`streams.sealer`).
        self._seal: Sealer = LocalSealer(seal_step) if isinstance(seal_step, SealStep) else seal_step
        self._store = store
        self._shared_index = index
        # Inserts overlap the sealing of the next partition; reads wait for them (see index_writes).
        self._index = QueuedInserts(index, self._retry)
        self._config = config
        self._sleep = sleep
        self._clock = clock
        self._writer_schema_json = registry.canonical_json(SEALED_SCHEMA)
        self.cache = SessionCache()
        self._durable_upto: dict[int, int] = {}  # partition → last offset known to be archived
        self._dlq_limiter = DlqRateLimiter(config.dlq_limit, config.dlq_window_seconds, clock)
        self._decoder = Decoder(registry, config.max_message_bytes, config.decode_processes)
        # (partition, offset) → the decoder job started ahead for it, and its place in the job
        self._decoding_ahead: dict[tuple[int, int], tuple[_DecodeJob, int]] = {}
        # (partition, offset) → messages given to `decode_ahead` that this thread decodes while it
        # waits for a seal process (in arrival order)
        self._arrived: dict[tuple[int, int], SourceMessage] = {}
        self._ahead_lock = threading.Lock()
        # Announcements recovery queues for the next outcome (see _announce_again).
        self._announcements: list[tuple[int, bytes]] = []
        self._alerts_again: list[tuple[str, bytes]] = []
        # partition → session → what the masker holds back for it (see _Hold)
        self._holding: dict[int, dict[str, _Hold]] = {}
        # partition → how often it was forgotten: a batch handed over before then keeps none of it
        self._times_forgotten: dict[int, int] = {}

    @property
    def index(self) -> Index:
        """The index this pipeline writes (others that keep state there share it)."""
        return self._shared_index

    # -- the batch -------------------------------------------------------------------------

    def process(self, messages: Sequence[SourceMessage]) -> BatchOutcome:
        """Seal ``messages`` and make their records durable (`hand_over`, then `complete`)."""
        return self.complete(self.hand_over(messages))[0]

    @property
    def overlaps_batches(self) -> bool:
        """Whether the seal step runs beside this process, so that handing the next batch to
        `complete` lets it seal while this one is written."""
        return self._seal.runs_alongside

    def hand_over(self, messages: Sequence[SourceMessage]) -> HandedBatch:
        """Decode ``messages`` and hand them to the sealer (beside this process, it starts)."""
        decoding = self._start_decoding(messages)
        with self._forgetting_on_failure():
            return self._hand_over(self._decoded(decoding))

    def complete(
        self, handed: HandedBatch, take_following: NextBatch | None = None
    ) -> tuple[BatchOutcome, HandedBatch | None]:
        """Write what sealing ``handed`` gave, and return its outcome. ``take_following`` gives
        the next batch, if one is due: it is asked for and handed over as soon as ``handed``'s
        last results are in, before its last partition is written, so that a seal step beside
        this process seals it meanwhile (after, if it repeats offsets of that partition: only
        the write tells recovery they are durable). Returns the following batch handed over
        (None without one); it must be completed next. A partition forgotten (revoked) since
        ``handed`` was handed over has nothing of it written and no dead letters: its next owner
        takes its messages again."""
        following: Sequence[SourceMessage] = []
        following_handed: HandedBatch | None = None
        outcome = handed.outcome
        with self._forgetting_on_failure():
            still_ours = {
                batch.partition
                for batch in handed.batches
                if self._times_forgotten.get(batch.partition, 0) == handed.times_forgotten[batch.partition]
            }
            batch_of = {batch.partition: batch for batch in handed.batches}
            unread = handed.job_count
            for job, results in handed.results:
                batch = batch_of[job.partition]
                if batch.partition in still_ours:
                    self._take_partition(batch, results, outcome)
                else:
                    # Revoked since the hand-over, when only the sessions known then were
                    # forgotten: the masker forgets every session this job streamed, after it.
                    for session_id in job.states:
                        self._seal.forget_stream(session_id)
                unread -= 1
                if unread == 0 and take_following is not None:
                    following = take_following()
                    if not _repeats(following, batch):
                        # Every chain state of this batch is staged: the next can seal from them.
                        following_handed = self._hand_over_batch(following)
                if batch.partition in still_ours:
                    self._write_partition(batch, outcome)
            if take_following is not None and handed.job_count == 0:
                following = take_following()
            if following and following_handed is None:
                following_handed = self._hand_over_batch(following)
            self._index.flush()
            outcome.dead_letters = [
                letter for letter in outcome.dead_letters if letter.source.partition in still_ours
            ]
            self._dlq_limiter.check(len(outcome.dead_letters))
        # Decoding and sealing find bad input in two passes; the DLQ keeps the input's order.
        outcome.dead_letters.sort(
            key=lambda letter: (letter.source.partition, letter.source.offset, letter.event_index or 0)
        )
        self._dlq_limiter.record(len(outcome.dead_letters))
        self.cache.commit(self._clock())
        outcome.held = self.held_messages()
        return outcome, following_handed

    def _hand_over_batch(self, following: Sequence[SourceMessage]) -> HandedBatch | None:
        return self._hand_over(self._decoded(self._start_decoding(following))) if following else None

    def _start_decoding(
        self, messages: Sequence[SourceMessage]
    ) -> dict[int, list[tuple[list[SourceMessage], Callable[[], list[DecodedMessage]]]]]:
        by_partition: dict[int, list[SourceMessage]] = {}
        for message in messages:
            by_partition.setdefault(message.partition, []).append(message)
        # Every partition's decoding starts now (unless `decode_ahead` started it), so decoder
        # processes work on later partitions while this one seals and writes the earlier ones.
        return {
            partition: self._decoding(partition_messages)
            for partition, partition_messages in sorted(by_partition.items())
        }

    def _decoded(
        self, decoding: dict[int, list[tuple[list[SourceMessage], Callable[[], list[DecodedMessage]]]]]
    ) -> dict[int, list[tuple[SourceMessage, DecodedMessage]]]:
        return {partition: self._fetched(chunks) for partition, chunks in decoding.items()}

    def _hand_over(self, decoded: dict[int, list[tuple[SourceMessage, DecodedMessage]]]) -> HandedBatch:
        outcome = BatchOutcome()
        batches = [self._fresh_batch(partition, messages, outcome) for partition, messages in decoded.items()]
        # Recovery's announcements go out with this batch, before its own.
        outcome.sealed_batches.extend(self._announcements)
        outcome.alerts.extend(self._alerts_again)
        self._announcements, self._alerts_again = [], []
        # Every index read of the batch happens before its first insert is queued (a read
        # waits for the inserts queued before it), so the inserts of one partition overlap
        # the sealing of the next.
        fresh = [(message, decoded) for batch in batches for message, decoded in batch.messages]
        self._load_states({decoded.events[0][0]["session_id"] for _, decoded in fresh if decoded.events})
        jobs = [self._job(batch) for batch in batches if batch.messages]
        # The sealer reads the identities of every job first, then seals partition by
        # partition; a partition is written while the next one seals (in a seal process).
        return HandedBatch(
            outcome,
            batches,
            self._seal.seal_partitions(jobs, self._known_digest, self._decode_while_waiting),
            len(jobs),
            {batch.partition: self._times_forgotten.get(batch.partition, 0) for batch in batches},
        )

    @contextmanager
    def _forgetting_on_failure(self) -> Iterator[None]:
        try:
            yield
        except BaseException:
            # Records of this batch may already be durable: forget everything in memory, so
            # the next batch recovers from the archive and the index instead of a stale head.
            # A following batch handed over is given up with it.
            try:
                self.cache.discard()
                for partition in list(self._durable_upto):
                    self.forget_partition(partition)
            finally:
                self._index.discard()  # no insert of this batch still running into the next
            raise

    @property
    def decodes_ahead(self) -> bool:
        """Whether `decode_ahead` does anything: decoder processes decode what it is given, or,
        with a seal process beside this one, this thread decodes it while it waits for results."""
        return self._decoder.in_processes or self._seal.runs_alongside

    def decode_ahead(self, messages: Sequence[SourceMessage]) -> None:
        """Start decoding messages that a later `hand_over` or `complete` will get, so that
        batch N+1 is decoded while batch N seals: by decoder processes, or by this thread while it
        waits for a seal process's results (up to `PipelineConfig.decode_ahead_limit` messages
        decoded and not taken yet); otherwise a no-op.

        Safe to call from another thread while the pipeline runs (the agent calls it as messages
        arrive); a message the pipeline reaches before its decoding was started is decoded there.
        """
        if self._decoder.in_processes:
            self._submit_ahead(messages)
        elif self._seal.runs_alongside:
            with self._ahead_lock:
                for message in messages:
                    self._arrived[(message.partition, message.offset)] = message

    def _submit_ahead(self, messages: Sequence[SourceMessage]) -> None:
        by_partition: dict[int, list[SourceMessage]] = {}
        with self._ahead_lock:
            for message in messages:
                if (message.partition, message.offset) not in self._decoding_ahead:
                    by_partition.setdefault(message.partition, []).append(message)
        for partition_messages in by_partition.values():
            for chunk in _chunks(partition_messages, DECODE_CHUNK):
                job = _DecodeJob([m.value for m in chunk])
                job.future = self._decoder.submit(job.values)
                with self._ahead_lock:
                    for position, message in enumerate(chunk):
                        self._decoding_ahead[(message.partition, message.offset)] = (job, position)

    def _decode_while_waiting(self) -> bool:
        """Decode a few arrived messages here (the seal process is sealing); False when there is
        nothing to decode now, or enough is decoded ahead."""
        with self._ahead_lock:
            room = self._config.decode_ahead_limit - len(self._decoding_ahead)
            count = min(DECODE_WHILE_WAITING_MESSAGES, room, len(self._arrived))
            if count <= 0:
                return False
            keys = list(itertools.islice(self._arrived, count))
            chunk = [self._arrived.pop(key) for key in keys]
        self._submit_ahead(chunk)
        return True

    def _decoding(
        self, messages: list[SourceMessage]
    ) -> list[tuple[list[SourceMessage], Callable[[], list[DecodedMessage]]]]:
        """``messages`` in runs, each with a call that returns their decoded forms: runs that
        `decode_ahead` started, and new decoder jobs for the rest."""
        runs: list[tuple[list[SourceMessage], _DecodeJob | None, list[int]]] = []
        for message in messages:
            with self._ahead_lock:
                ahead = self._decoding_ahead.pop((message.partition, message.offset), None)
                self._arrived.pop((message.partition, message.offset), None)
            if ahead is not None and ahead[0].values[ahead[1]] != message.value:
                ahead = None  # not the bytes decoded ahead (cannot happen within one assignment)
            job, position = ahead if ahead is not None else (None, -1)
            if runs and runs[-1][1] is job and (job is None or runs[-1][2][-1] == position - 1):
                runs[-1][0].append(message)
                runs[-1][2].append(position)
            else:
                runs.append(([message], job, [position]))
        pairs: list[tuple[list[SourceMessage], Callable[[], list[DecodedMessage]]]] = []
        for run, job, positions in runs:
            if job is None:
                for chunk in _chunks(run, DECODE_CHUNK):
                    values = [m.value for m in chunk]
                    pairs.append(
                        (chunk, functools.partial(self._decoder.result, self._decoder.submit(values), values))
                    )
            else:
                pairs.append((run, functools.partial(self._decoded_ahead, job, positions)))
        return pairs

    def _decoded_ahead(self, job: _DecodeJob, positions: list[int]) -> list[DecodedMessage]:
        assert job.future is not None
        decoded = self._decoder.result(job.future, job.values)
        return [decoded[position] for position in positions]

    def held_messages(self) -> frozenset[tuple[int, int]]:
        """Messages to leave unacknowledged: the masker still holds bytes that came in them (an
        unfinished token at the end of a terminal event). They are acknowledged once a later
        event of the session releases the bytes; until then a crash delivers them again and
        `rewarm` rebuilds what was held, instead of losing it."""
        return frozenset(
            (partition, hold.offset)
            for partition, sessions in self._holding.items()
            for hold in sessions.values()
        )

    @staticmethod
    def _fetched(
        chunks: list[tuple[list[SourceMessage], Callable[[], list[DecodedMessage]]]],
    ) -> list[tuple[SourceMessage, DecodedMessage]]:
        return [
            (message, result)
            for chunk, fetch in chunks
            for message, result in zip(chunk, fetch(), strict=True)
        ]

    def _fresh_batch(
        self, partition: int, messages: list[tuple[SourceMessage, DecodedMessage]], outcome: BatchOutcome
    ) -> _PartitionBatch:
        """The partition's messages not yet durable, after recovery and the rewarm of the rest;
        messages that cannot be sealed at all go to the DLQ here."""
        if partition not in self._durable_upto:
            self._recover(partition)
        durable_upto = self._durable_upto[partition]
        fresh = [(m, decoded) for m, decoded in messages if m.offset > durable_upto]
        outcome.skipped_messages += len(messages) - len(fresh)
        if len(fresh) < len(messages):
            self._rewarm(partition, [(m, d) for m, d in messages if m.offset <= durable_upto])
        for message, decoded in fresh:
            if decoded.error is not None:
                outcome.dead_letters.append(
                    DeadLetter(message.key, message.value or b"", decoded.error, message)
                )
        return _PartitionBatch(partition, fresh)

    def _job(self, batch: _PartitionBatch) -> PartitionJob:
        """The partition's decoded messages and their sessions' chains, for the sealer."""
        messages = [
            (message.key, message.value or b"", decoded.events)
            for message, decoded in batch.messages
            if decoded.events
        ]
        states: dict[str, SessionState] = {}
        for _, _, events in messages:
            session_id = events[0][0]["session_id"]
            if session_id not in states:
                states[session_id] = self.cache.get(session_id) or SessionState(session_id, batch.partition)
        return PartitionJob(batch.partition, messages, states)

    def _take_partition(
        self, batch: _PartitionBatch, results: list[MessageSealed], outcome: BatchOutcome
    ) -> None:
        sealed = iter(results)
        for message, decoded in batch.messages:
            if decoded.events:
                self._seal_message(batch, message, decoded.events, next(sealed), outcome)

    def _write_partition(self, batch: _PartitionBatch, outcome: BatchOutcome) -> None:
        if batch.records:
            self._write(batch, outcome)
        self._durable_upto[batch.partition] = batch.last_offset

    def _seal_message(
        self,
        batch: _PartitionBatch,
        message: SourceMessage,
        events: Events,
        result: MessageSealed,
        outcome: BatchOutcome,
    ) -> None:
        """Take what sealing one message gave (one session: batches never mix sessions)."""
        session_id = events[0][0]["session_id"]
        for refusal in result.refused:
            single = self._registry.encode_single(events[refusal.position][1])
            where = refusal.position if len(events) > 1 else None
            outcome.dead_letters.append(
                DeadLetter(message.key, single, f"invalid: {refusal.reason}", message, where)
            )
        outcome.events += len(events) - len(result.refused)
        outcome.duplicates += result.duplicates
        rows = result.rows()
        if not rows:
            if any(refusal.by_masking for refusal in result.refused):
                # Masking's refusal may have left the session failing closed: an open prompt,
                # which the message must be delivered again after a crash to restore.
                self._note_holding(message, session_id, result.holding)
                hold = self._holding.get(message.partition, {}).get(session_id)
                if hold is not None and self.cache.get(session_id) is None:
                    hold.since = self._clock()  # no chain: idle counts from its last event
            return
        # A flush request has records only if sealing took it.
        self._note_holding(message, session_id, result.holding, prompt_flush=_is_prompt_flush(events))
        self.cache.stage(result.state, rows)
        batch.records.setdefault(session_id, []).extend((row, message.offset) for row in rows)
        outcome.alerts.extend((session_id, alert) for alert in result.alerts)
        outcome.records += len(rows)

    def _known_digest(self, session_id: str, seq: int) -> bytes | None:
        recent = self.cache.recent_digest(session_id, seq)
        if recent is not None:
            return recent
        table = self._retry(
            "look up an event digest",
            lambda: self._index.query(
                "SELECT event_digest FROM events WHERE session_id = {sid:String} AND source_seq = {seq:Int64}"
                " AND kind IN ('EVENT', 'LATE') AND body_type NOT IN {requests:Array(String)} LIMIT 1",
                {"sid": session_id, "seq": seq, "requests": _WORKER_REQUEST_TYPES},
            ),
        )
        rows = table.column("event_digest").to_pylist()
        return bytes(rows[0]) if rows else None

    # -- durability ------------------------------------------------------------------------

    def _write(self, batch: _PartitionBatch, outcome: BatchOutcome) -> None:
        key = object_key(self._config.epoch, batch.partition, batch.first_offset, batch.last_offset)
        sessions = list(batch.records)
        built = build_object(
            key,
            self._writer_schema_json,
            [[row.raw for row, _ in batch.records[sid]] for sid in sessions],
        )
        created = self._retry("archive an object", lambda: self._store.put_if_absent(key, built.data))
        if not created:
            # Only a replay of this exact offset range can name this key, and sealing is
            # deterministic: the object already holds these records.
            logger.warning("archive object %s already existed; treating it as this batch's", key)
        rows_by_session = {sid: batch.records[sid] for sid in sessions}
        states = {sid: self.cache.staged()[sid] for sid in sessions}
        placed = _PlacedObject(
            key,
            batch.partition,
            batch.first_offset,
            batch.last_offset,
            built.header_length,
            len(built.data),
            built.blocks,
        )
        self._index_object(placed, rows_by_session, states)
        outcome.objects_written += 1
        blocks = [
            (sid, batch.records[sid][0][0].record_index, [row.hash for row, _ in batch.records[sid]])
            for sid in sessions
        ]
        outcome.sealed_batches.extend(
            (batch.partition, message) for message in self._sealed_messages(placed, blocks)
        )

    def _sealed_messages(
        self, placed: _PlacedObject, blocks: list[tuple[str, int, list[bytes]]]
    ) -> list[bytes]:
        """The object's record hashes as SealedBatch messages, cut to stay far below Kafka's
        message size limit (a block of a very long session may span messages)."""
        chunks: list[list[dict[str, Any]]] = [[]]
        room = SEALED_HASHES_PER_MESSAGE
        for session_id, first_index, hashes in blocks:
            start = 0
            while start < len(hashes):
                if room == 0:
                    chunks.append([])
                    room = SEALED_HASHES_PER_MESSAGE
                part = hashes[start : start + room]
                chunks[-1].append(
                    {"session_id": session_id, "first_index": first_index + start, "record_hashes": part}
                )
                start += len(part)
                room -= len(part)
        return [
            self._registry.encode(
                SEALED_BATCH_SCHEMA,
                {
                    "object_key": placed.key,
                    "source_partition": placed.partition,
                    "first_offset": placed.first_offset,
                    "last_offset": placed.last_offset,
                    "chunk_index": number,
                    "chunk_count": len(chunks),
                    "blocks": chunk,
                },
            )
            for number, chunk in enumerate(chunks)
        ]

    def _index_object(
        self,
        placed: _PlacedObject,
        rows_by_session: dict[str, list[IndexRow]],
        states: dict[str, SessionState],
    ) -> None:
        """Insert the index rows for one archive object; the archive_objects row goes last,
        because its presence is what tells recovery that the object is fully indexed."""
        events = _EventRows()
        segments = []
        key = placed.key
        for (session_id, rows), location in zip(rows_by_session.items(), placed.blocks, strict=True):
            events.add_block(rows, states[session_id], key, placed.partition)
            segments.append(
                {
                    "session_id": session_id,
                    "first_index": rows[0][0].record_index,
                    "last_index": rows[-1][0].record_index,
                    "record_count": len(rows),
                    "object_key": key,
                    "header_length": placed.header_length,
                    "block_offset": location.offset,
                    "block_length": location.length,
                }
            )
        session_rows = [_session_row(state) for state in states.values()]
        object_row = {
            "kafka_partition": placed.partition,
            "first_offset": placed.first_offset,
            "last_offset": placed.last_offset,
            "object_key": key,
            "record_count": sum(len(rows) for rows in rows_by_session.values()),
            "byte_size": placed.byte_size,
            "header_length": placed.header_length,
        }
        for table, rows_table in (
            ("events", events.table()),
            ("segments", pa.Table.from_pylist(segments, schema=SEGMENTS_ARROW)),
            ("sessions", pa.Table.from_pylist(session_rows, schema=SESSIONS_ARROW)),
            ("archive_objects", pa.Table.from_pylist([object_row], schema=ARCHIVE_OBJECTS_ARROW)),
        ):
            self._index.insert(table, rows_table, dedup_token=f"{key}:{table}")

    # -- recovery --------------------------------------------------------------------------

    def _recover(self, partition: int) -> None:
        """Learn from the archive how far this partition got; index what the index missed."""
        prefix = object_prefix(self._config.epoch, partition)
        table = self._retry(
            "read archive progress",
            lambda: self._index.query(
                "SELECT object_key, last_offset FROM archive_objects"
                " WHERE kafka_partition = {p:UInt32} AND startsWith(object_key, {prefix:String})"
                " ORDER BY first_offset DESC LIMIT 1",
                {"p": partition, "prefix": prefix},
            ),
        )
        rows = table.to_pylist()
        last_key = rows[0]["object_key"] if rows else ""
        durable_upto = int(rows[0]["last_offset"]) if rows else -1
        listed = self._retry("list the archive", lambda: list(self._store.list_keys(prefix, last_key)))
        # Not every key under the prefix is ours (a stray upload): the ledger skips those too,
        # and the offline audit reports them.
        unindexed = [key for key in listed if parse_object_key(key) is not None]
        for stray in sorted(set(listed) - set(unindexed)):
            logger.warning("%s is not an archive object of the seal worker; recovery skips it", stray)
        newest_read: tuple[str, bytes, list[_Block]] | None = None
        for key in unindexed:
            data, blocks = self._read_object(key)
            durable_upto = max(durable_upto, self._reindex(key, data, blocks))
            newest_read = (key, data, blocks)
        if newest_read is not None:
            self._announce_again(*newest_read)  # read once for both
        elif last_key:
            self._announce_again(last_key, *self._read_object(last_key))
        self._durable_upto[partition] = durable_upto
        self.cache.forget_partition(partition)
        self._load_open_sessions(partition)
        logger.info(
            "partition %d: archived up to offset %d; %d object(s) re-indexed from the archive",
            partition,
            durable_upto,
            len(unindexed),
        )

    def _read_object(self, key: str) -> tuple[bytes, list[_Block]]:
        data = self._retry("read an archive object", lambda: self._store.get(key))
        return data, list(iter_blocks(data))

    def _announce_again(self, key: str, data: bytes, blocks: list[_Block]) -> None:
        """Queue the sealed batch and alerts of the partition's newest object once more.

        A crash between making a batch durable and publishing its announcement loses the
        announcement, and the replayed batch is skipped as already archived. Only the newest
        object of a partition can be in that state (batches are published before the next
        one starts), so it is announced again; consumers key on the object, at least once.
        """
        _, partition, first_offset, last_offset = _our_object(key)
        placed = _PlacedObject(
            key,
            partition,
            first_offset,
            last_offset,
            blocks[0][0].offset if blocks else len(data),
            len(data),
            tuple(location for location, _ in blocks),
        )
        hashes = [
            (block[0].value["session_id"], block[0].value["index"], [record_hash(r.raw) for r in block])
            for _, block in blocks
        ]
        self._announcements.extend((partition, message) for message in self._sealed_messages(placed, hashes))
        for _, block in blocks:
            for record in block:
                value = record.value
                if value["risk"] is not None and self._seal.is_alert(value):
                    self._alerts_again.append(
                        (value["session_id"], alert_json(record_hash(record.raw), value))
                    )

    def _reindex(self, key: str, data: bytes, blocks: list[_Block]) -> int:
        """Index an archive object from its own bytes (it was written, its rows were not)."""
        _, partition, first_offset, last_offset = _our_object(key)
        session_ids = [block[0].value["session_id"] for _, block in blocks]
        self._load_states(set(session_ids))
        states: dict[str, SessionState] = {}
        rows_by_session: dict[str, list[IndexRow]] = {}
        for session_id, (_, block) in zip(session_ids, blocks, strict=True):
            states[session_id] = self._state_after_block(partition, session_id, block)
            rows_by_session[session_id] = [
                (record_row(record.raw, record_hash(record.raw), record.value), first_offset)
                for record in block
            ]
        header_length = blocks[0][0].offset if blocks else len(data)
        placed = _PlacedObject(
            key,
            partition,
            first_offset,
            last_offset,
            header_length,
            len(data),
            tuple(location for location, _ in blocks),
        )
        self._index_object(placed, rows_by_session, states)
        # The next object of the same session builds on these states (recovery reloads after).
        self.cache.states.update(states)
        logger.warning("re-indexed archive object %s from the archive", key)
        return last_offset

    def _state_after_block(
        self, partition: int, session_id: str, block: list[ArchivedRecord]
    ) -> SessionState:
        base = self.cache.get(session_id) or SessionState(session_id, partition)
        first_index = block[0].value["index"]
        if base.next_index == first_index:
            return replay_state(base, [(record.raw, record.value) for record in block])
        if base.next_index == first_index + len(block):
            return base  # the crash came after the sessions row was written: it is current
        raise EvidenceMismatch(
            f"session {session_id}: the index holds {base.next_index} records but archive block starts at "
            f"record {first_index}; rebuild the index from the archive"
        )

    def _load_states(self, session_ids: set[str]) -> None:
        unknown = [sid for sid in session_ids if self.cache.get(sid) is None]
        if not unknown:
            return
        table = self._retry(
            "load session states",
            lambda: self._index.query(
                _STATES_BY_ID_SQL,
                {"ids": unknown},
            ),
        )
        for row in table.to_pylist():
            state = _state_from_row(row)
            self.cache.states[state.session_id] = state

    def _load_open_sessions(self, partition: int) -> None:
        table = self._retry(
            "load open sessions",
            lambda: self._index.query(
                _OPEN_STATES_SQL,
                {"p": partition},
            ),
        )
        now = self._clock()
        for row in table.to_pylist():
            state = _state_from_row(row)
            self.cache.states[state.session_id] = state
            self.cache.last_seen[state.session_id] = now

    def close(self) -> None:
        try:
            self._decoder.close()
            self._index.close()
        finally:
            self._seal.close()  # a seal process is stopped whatever else failed

    def forget_partition(self, partition: int) -> None:
        """Called when a partition is revoked: another worker may extend its chains now."""
        self._times_forgotten[partition] = self._times_forgotten.get(partition, 0) + 1
        self._durable_upto.pop(partition, None)
        with self._ahead_lock:
            for key in [key for key in self._decoding_ahead if key[0] == partition]:
                del self._decoding_ahead[key]
            for key in [key for key in self._arrived if key[0] == partition]:
                del self._arrived[key]
        # The masker's streams of the partition's sessions: the next owner rebuilds what was held
        # from redelivery, and this worker, should the partition come back, from the archive.
        sessions = set(self._holding.pop(partition, {}))
        sessions.update(sid for sid, state in self.cache.states.items() if state.partition == partition)
        for session_id in sessions:
            self._seal.forget_stream(session_id)
        self.cache.forget_partition(partition)

    # -- what the masker holds back ----------------------------------------------------------

    def _note_holding(
        self,
        message: SourceMessage,
        session_id: str,
        held: Holding,
        *,
        prompt_flush: bool = False,
    ) -> None:
        """After sealing (or feeding again) a message of the session: which message its held
        state needs delivered again after a crash. ``held``: what the masker holds of the session
        after the message. ``prompt_flush``: the message is a flush request saying a password
        prompt is open, and it was sealed into a record (or, in recovery, fed to the masker)."""
        holding = self._holding.setdefault(message.partition, {})
        if not held.output:
            holding.pop(session_id, None)
            return
        # The earliest message still held is the one to keep; but if only the prompt is held and
        # this message says so itself, it is all a worker needs after a crash (it tells it that
        # what is typed next is the secret), so the hold moves on to it, and the next flush moves
        # it on again: the partition's commits trail an open prompt by one flush interval.
        moves_on = prompt_flush and not held.bytes
        if moves_on or session_id not in holding:
            holding[session_id] = _Hold(message.offset, self._clock())
        holding[session_id].prompt_open = held.prompt

    def overdue_flushes(self, hold_seconds: float) -> list[FlushRequest]:
        """Open sessions whose bytes (or open password prompt) the masker has held for
        ``hold_seconds``, and whose flush was not asked for yet at their current last event. A
        held message holds back the commit of its partition (see `held_messages`), so the worker
        asks, through the event topic, to put what is held on record instead of waiting for the
        session's next event. Each comes with what its request must say: whether a prompt is open,
        and from which message the hold runs, both as the last batch written left them (a batch
        sealing meanwhile, beside this process, is not asked)."""
        return [
            FlushRequest(state, hold.prompt_open, hold.offset) for state, hold in self._overdue(hold_seconds)
        ]

    def _overdue(self, hold_seconds: float) -> list[tuple[SessionState, _Hold]]:
        now = self._clock()
        overdue = []
        for sessions in self._holding.values():
            for session_id, hold in sessions.items():
                state = self.cache.states.get(session_id)
                if state is None or state.sealed or now - hold.since < hold_seconds:
                    continue
                if hold.flush_asked_at_seq == state.last_seq:
                    continue
                hold.flush_asked_at_seq = state.last_seq
                overdue.append((state, hold))
        return overdue

    def _rewarm(self, partition: int, skipped: list[tuple[SourceMessage, DecodedMessage]]) -> None:
        """Messages delivered again but already archived: feed their terminal events of open
        sessions to the masker, so the bytes it held when the last worker stopped are held again
        and reach the archive with the session's next event."""
        sessions = {d.events[0][0]["session_id"] for _, d in skipped if d.events}
        self._load_states(sessions)
        open_sessions = {sid for sid in sessions if (state := self.cache.get(sid)) and not state.sealed}
        # session → its chain's last seq, from before the window (a lower bound, from the index)
        # and then replayed event by event: only an event the chain takes in order goes into the
        # session's terminal stream (a duplicate is dropped, LATE and FORK are masked alone).
        chain_at = self._chained_before(open_sessions, partition, skipped[0][0].offset)
        # How the chain took each event of the window, from one index query. An event is named by
        # (session id, event id, digest): a message reusing an id with other content (forged) is
        # not the event on record.
        # - A gateway event it has no record of was refused (masking raised on it, or it was
        #   invalid), wherever it is behind the chain's head, and is replayed as refused: fed in
        #   order, it could be masked without error this time (a fix deployed, or context from
        #   before the window missing) and leave its bytes, or no failing closed, in the stream.
        #   One recorded LATE or FORK was masked alone. (`chain_at` alone cannot tell: it is a
        #   lower bound.)
        # - Sealing let held bytes go at a flush request only if it put them on record (it ignores
        #   a stale request, and one that finds nothing held changes nothing).
        # (message offset, position) → the event's name
        names = {
            (message.offset, position): (event["session_id"], event["event_id"], hashlib.sha256(raw).digest())
            for message, decoded in skipped
            for position, (event, raw) in enumerate(decoded.events)
            if event["session_id"] in open_sessions
            and (event["body"][0] == OUTPUT_FLUSH or event["body"][0] not in WORKER_REQUESTS)
        }
        recorded_as = self._record_kinds(set(names.values()))
        for message, decoded in skipped:
            if not decoded.events:
                continue
            session_id = decoded.events[0][0]["session_id"]
            state = self.cache.get(session_id)
            if state is not None and state.sealed:
                continue
            # A session without a chain had every event refused; those still count (below).
            last_seq = state.last_seq if state is not None else -1
            prompt_flush = False
            for position, (event, _) in enumerate(decoded.events):
                seq = event["seq"]
                if seq > last_seq:
                    # Past the chain's head, so sealing refused it. A refusal by masking may have
                    # left the session failing closed (what is typed next is a secret): so must
                    # this replay, or a crash would forget it.
                    if event["body"][0] not in WORKER_REQUESTS:
                        self._seal.rewarm(event, message.key, refused=True)
                    continue
                if event["body"][0] == OUTPUT_FLUSH:
                    # Sealing takes a request only at the session's last seq: a copy of a recorded
                    # request (same id) behind an event the replay has taken was ignored then.
                    asked_at = event["body"][1]["last_seq"]
                    recorded = "EVENT" in recorded_as.get(names[message.offset, position], ())
                    if recorded and asked_at >= chain_at[session_id]:
                        self._seal.rewarm(event, message.key)
                        prompt_flush = _is_prompt_flush(decoded.events)
                        chain_at[session_id] = asked_at  # taken: sealing's chain was there
                    continue
                if event["body"][0] in WORKER_REQUESTS:
                    continue  # another request (an idle seal, sealed or ignored): not the stream
                if seq <= chain_at[session_id]:
                    continue
                kinds = recorded_as.get(names[message.offset, position])
                if not kinds:
                    self._seal.rewarm(event, message.key, refused=True)
                    continue
                if "EVENT" not in kinds:
                    continue  # LATE or FORK: sealing masked it alone, the stream never saw it
                if self._seal.rewarm(event, message.key):
                    chain_at[session_id] = seq
            self._note_holding(message, session_id, self._seal.holding(session_id), prompt_flush=prompt_flush)

    def _chained_before(self, session_ids: set[str], partition: int, offset: int) -> dict[str, int]:
        """Each session's last seq taken in order, in archive objects wholly before ``offset``: a
        lower bound of its chain's position when the message at ``offset`` was sealed (-1 if
        none). A lower bound errs safe: an event it lets through is fed again, never dropped."""
        chain_at = dict.fromkeys(session_ids, -1)
        if not session_ids:
            return chain_at
        table = self._retry(
            "look up chain positions",
            lambda: self._index.query(
                "SELECT session_id, max(source_seq) AS last_seq FROM events"
                " WHERE session_id IN {ids:Array(String)} AND kind = 'EVENT' AND object_key IN"
                " (SELECT object_key FROM archive_objects WHERE kafka_partition = {p:UInt32}"
                "  AND startsWith(object_key, {prefix:String}) AND last_offset < {offset:Int64})"
                " GROUP BY session_id",
                {
                    "ids": sorted(session_ids),
                    "p": partition,
                    "prefix": object_prefix(self._config.epoch, partition),
                    "offset": offset,
                },
            ),
        )
        for row in table.to_pylist():
            chain_at[row["session_id"]] = int(row["last_seq"])
        return chain_at

    def _record_kinds(self, events: set[tuple[str, str, bytes]]) -> dict[tuple[str, str, bytes], set[str]]:
        """The kinds of record (EVENT, LATE, FORK) the index holds of each of ``events``
        (session id, event id, event digest) that has one."""
        if not events:
            return {}
        table = self._retry(
            "look up records",
            lambda: self._index.query(
                "SELECT DISTINCT session_id, event_id, event_digest, kind FROM events"
                " WHERE session_id IN {sids:Array(String)} AND event_id IN {eids:Array(String)}",
                {
                    "sids": sorted({sid for sid, _, _ in events}),
                    "eids": sorted({eid for _, eid, _ in events}),
                },
            ),
        )
        kinds: dict[tuple[str, str, bytes], set[str]] = {}
        for session_id, event_id, digest, kind in zip(
            table.column("session_id").to_pylist(),
            table.column("event_id").to_pylist(),
            (bytes(digest) for digest in table.column("event_digest").to_pylist()),
            table.column("kind").to_pylist(),
            strict=True,
        ):
            key = (session_id, event_id, digest)
            if key in events:
                kinds.setdefault(key, set()).add(kind)
        return kinds

    # -- idle sessions ---------------------------------------------------------------------

    def idle_sessions(self, idle_seconds: float) -> list[SessionState]:
        """Open sessions with no event for ``idle_seconds`` that were not asked to seal yet."""
        self._drop_chainless_holds(idle_seconds)
        now = self._clock()
        idle = [
            state
            for session_id, state in self.cache.states.items()
            if not state.sealed
            and session_id not in self.cache.idle_requested
            and now - self.cache.last_seen.get(session_id, now) >= idle_seconds
        ]
        self.cache.idle_requested.update(state.session_id for state in idle)
        return idle

    def _drop_chainless_holds(self, idle_seconds: float) -> None:
        """A session none of whose events was chained (masking refused them all) has no chain to
        flush into or seal, so what the masker keeps of it (failing closed) would hold back its
        partition's commits for good. After ``idle_seconds`` without events the hold goes: the
        masker still fails closed for the session, but a crash after that forgets it."""
        now = self._clock()
        for holding in self._holding.values():
            for session_id, hold in list(holding.items()):
                if self.cache.get(session_id) is None and now - hold.since >= idle_seconds:
                    logger.warning(
                        "session %s: no event of it was chained (masking refused them); after %.0fs "
                        "idle its masker state no longer holds back the partition's commits",
                        session_id,
                        idle_seconds,
                    )
                    del holding[session_id]

    # -- plumbing --------------------------------------------------------------------------

    def _retry(self, what: str, operation: Callable[[], T]) -> T:
        """Outages are transient: wait and try again, never drop and never dead-letter."""
        delay = self._config.retry_initial_seconds
        while True:
            try:
                return operation()
            except (ObjectStoreUnavailable, IndexUnavailable) as exc:
                logger.warning("cannot %s (%s); retrying in %.1fs", what, exc, delay)
                self._sleep(delay)
                delay = min(delay * 2, self._config.retry_max_seconds)


# RecordRow fields that go into the events table as they are, under their own name.
_EVENT_FIELD_COLUMNS = (
    "record_index",
    "kind",
    "source_seq",
    "event_id",
    "body_type",
    "summary",
    "prev_hash",
    "risk_score",
    "finding_count",
)


class _EventRows:
    """Column-wise builder for the events table (one Arrow insert per object).

    Per-session values (who, where, which object) are filled per block, not per record:
    this builder runs for every record and was a third of the batch time when it did.
    """

    def __init__(self) -> None:
        self.columns: dict[str, list[Any]] = {field.name: [] for field in EVENTS_ARROW}

    def add_block(self, rows: list[IndexRow], state: SessionState, key: str, partition: int) -> None:
        c = self.columns
        count = len(rows)
        c["session_id"].extend([state.session_id] * count)
        c["principal"].extend([state.identity.get("principal", "")] * count)
        c["identity_kind"].extend([state.identity.get("kind", "UNKNOWN")] * count)
        c["target_name"].extend([state.target.get("name", "")] * count)
        c["target_kind"].extend([state.target.get("kind", "OTHER")] * count)
        c["object_key"].extend([key] * count)
        c["kafka_partition"].extend([partition] * count)
        # Column by column, in C loops (0.33 µs per row; a Python loop appending each row's
        # values took 0.45), each found by its field's name.
        fields = dict(zip(RecordRow._fields, zip(*(row for row, _ in rows), strict=True), strict=True))
        for same_name in _EVENT_FIELD_COLUMNS:
            c[same_name].extend(fields[same_name])
        c["record_hash"].extend(fields["hash"])
        # A record without an event (a gap, a seal) is placed at the session's last event.
        last = state.last_event_at_us
        c["event_time"].extend([last if at is None else at for at in fields["event_time"]])
        c["event_digest"].extend([digest or b"" for digest in fields["event_digest"]])
        c["kafka_offset"].extend([offset for _, offset in rows])

    def table(self) -> pa.Table:
        return pa.Table.from_pydict(self.columns, schema=EVENTS_ARROW)


def _is_prompt_flush(events: Events) -> bool:
    """The events of a worker's flush request (alone in its message) saying that a password
    prompt of the session is open."""
    if len(events) != 1:
        return False
    event = events[0][0]
    return event["body"][0] == OUTPUT_FLUSH and bool(event["attributes"].get(SECRET_PROMPT_ATTRIBUTE))


def _session_row(state: SessionState) -> dict[str, Any]:
    return {
        "session_id": state.session_id,
        "kafka_partition": state.partition,
        "principal": state.identity.get("principal", ""),
        "identity_kind": state.identity.get("kind", "UNKNOWN"),
        "issuer": state.identity.get("issuer") or "",
        "groups": list(state.identity.get("groups", [])),
        "target_name": state.target.get("name", ""),
        "target_kind": state.target.get("kind", "OTHER"),
        "target_host": state.target.get("host") or "",
        "target_database": state.target.get("database") or "",
        "gateway_id": state.gateway.get("id", ""),
        "gateway_product": state.gateway.get("product", ""),
        "gateway_version": state.gateway.get("version", ""),
        "started_at": state.started_at_us,
        "last_event_at": state.last_event_at_us,
        "record_count": state.next_index,
        "last_seq": state.last_seq,
        "head_hash": state.head_hash,
        "sealed": int(state.sealed),
        "seal_reason": state.seal_reason,
        "missing_first": [first for first, _ in state.missing],
        "missing_last": [last for _, last in state.missing],
        "gap_count": state.gap_count,
        "fork_count": state.fork_count,
        "max_risk": state.max_risk,
        "total_risk": state.total_risk,
        "version": state.next_index,
    }
