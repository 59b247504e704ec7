"""The Faust app: a thin adapter between Kafka and the seal pipeline.

The agent takes batches of raw messages without acknowledging them (collected by
`streams.intake.BatchIntake` while the previous batch is sealed), hands each batch to the
`SealPipeline` (in a thread: it is CPU and blocking I/O; with a seal process, the next batch is
handed over while this one is written), publishes the dead letters and sealed batches, waits
for the broker to confirm them, and only then acknowledges the batch, so Faust commits an
offset only after its records are durable everywhere. Messages are acknowledged in offset
order per partition, never past one whose terminal bytes (or open password prompt) the masker
still holds (`PartitionAcks`); a timer asks to put what is held too long on record
(`output_flush_event`).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import gc
import logging
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar, cast

import aiokafka
import faust
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TransportT

from schemas import EVENT_SCHEMA, SchemaRegistry
from schemas.bodies import IDLE_TIMEOUT, OUTPUT_FLUSH, SECRET_PROMPT_ATTRIBUTE
from streams.behaviour_store import BehaviourStore, PersistentScorerState
from streams.intake import BatchIntake
from streams.pipeline import (
    BatchOutcome,
    DlqLimitExceeded,
    HandedBatch,
    NextBatch,
    SealPipeline,
    SourceMessage,
)
from streams.seal import SessionState

logger = logging.getLogger(__name__)
T = TypeVar("T")

Taken = tuple[Any, SourceMessage]  # a Faust event from the stream, and the message it carries

LOGGED_DEAD_LETTERS = 5  # per batch: a flood of bad input must not become a flood of log lines
# How long the pipeline's thread waits for the event loop to hand it the next batch.
FOLLOWING_WAIT_SECONDS = 5.0
DECODE_AHEAD_MESSAGES = 50  # arrived messages per decode_ahead call: a decoder job each, per partition
WORKER_GATEWAY = {"id": "blackbox-worker", "product": "blackbox", "version": "1"}
UNKNOWN_IDENTITY: dict[str, Any] = {"principal": "unknown", "kind": "UNKNOWN", "issuer": None, "groups": []}
UNKNOWN_TARGET: dict[str, Any] = {"name": "unknown", "kind": "OTHER", "host": None, "database": None}


@dataclass(frozen=True)
class WorkerConfig:
    bootstrap: str
    data_dir: Path
    app_id: str = "blackbox-seal"
    events_topic: str = "blackbox.events"
    sealed_topic: str = "blackbox.sealed"
    dlq_topic: str = "blackbox.dlq"
    alerts_topic: str = "blackbox.alerts"
    partitions: int = 4
    batch_max_messages: int = 1000
    batch_within_seconds: float = 0.5
    max_message_bytes: int = 4 * 1024 * 1024
    session_timeout_seconds: float = 30.0
    fetch_max_wait_ms: int = 100  # see `_FetchWaitApp`
    idle_timeout_seconds: float = 1800.0
    idle_check_seconds: float = 5.0
    hold_flush_seconds: float = 15.0
    commit_interval_seconds: float = 1.0


@dataclass
class WorkerMetrics:
    """Counters for /metrics; written by the agent only, read by anyone."""

    batches: int = 0
    messages: int = 0
    events: int = 0
    records: int = 0
    duplicates: int = 0
    dead_letters: int = 0
    objects: int = 0
    skipped_messages: int = 0
    last_batch_seconds: float = 0.0
    intake_messages: int = 0  # messages waiting for the next batch when the last one started
    unacknowledged_messages: int = 0  # sealed, waiting behind a message whose bytes are held
    started_at: float = field(default_factory=time.time)

    def gauges(self) -> dict[str, float]:
        return {
            "blackbox_worker_batches_total": self.batches,
            "blackbox_worker_messages_total": self.messages,
            "blackbox_worker_events_total": self.events,
            "blackbox_worker_records_total": self.records,
            "blackbox_worker_duplicates_total": self.duplicates,
            "blackbox_worker_dead_letters_total": self.dead_letters,
            "blackbox_worker_archive_objects_total": self.objects,
            "blackbox_worker_last_batch_seconds": self.last_batch_seconds,
            "blackbox_worker_intake_messages": self.intake_messages,
            "blackbox_worker_unacknowledged_messages": self.unacknowledged_messages,
        }

    def add(self, outcome: BatchOutcome, messages: int, seconds: float) -> None:
        self.batches += 1
        self.messages += messages
        self.events += outcome.events
        self.records += outcome.records
        self.duplicates += outcome.duplicates
        self.dead_letters += len(outcome.dead_letters)
        self.objects += outcome.objects_written
        self.skipped_messages += outcome.skipped_messages
        self.last_batch_seconds = seconds


def idle_timeout_event(state: SessionState, idle_seconds: float) -> dict[str, Any]:
    """The worker's request to seal an idle session; the seal step ignores it if stale."""
    fields = {"last_seq": state.last_seq, "idle_seconds": int(idle_seconds)}
    return _worker_request(state, "idle", (IDLE_TIMEOUT, fields))


def output_flush_event(
    state: SessionState, held_seconds: float, *, secret_prompt: bool = False, held_from: int | None = None
) -> dict[str, Any]:
    """The worker's request to put on record what the masker holds of a session's terminal
    streams; the seal step ignores it if the session did anything since. ``secret_prompt``: a
    password prompt is open, which a worker that meets the request after a crash must know.
    ``held_from``: the offset of the message the hold runs from (the worker always gives it; None
    leaves it out of the id). An open prompt is flushed again and again at the same point of its
    session, each time from the previous flush's message: the offset in the id keeps those
    requests apart, so that recovery, which repeats the flushes the index holds a record of (by id
    and content), never takes a stale one for a recorded one."""
    fields = {"last_seq": state.last_seq, "held_seconds": int(held_seconds)}
    request = _worker_request(state, "flush", (OUTPUT_FLUSH, fields))
    if held_from is not None:
        request["event_id"] += f"-from-{held_from}"
    if secret_prompt:
        request["attributes"] = {SECRET_PROMPT_ATTRIBUTE: "open"}
    return request


def _worker_request(state: SessionState, kind: str, body: tuple[str, dict[str, Any]]) -> dict[str, Any]:
    """The worker's own event about a session, at its last seq (see schemas.bodies.WORKER_REQUESTS)."""
    return {
        # Deterministic id: asking twice for the same point of a session (and, for a flush, from the
        # same hold) is an identical duplicate.
        "event_id": f"{kind}-{state.session_id}-{state.last_seq}",
        "session_id": state.session_id,
        "seq": max(state.last_seq, 0),
        "event_time": state.last_event_at_us,
        "gateway": WORKER_GATEWAY,
        "identity": state.identity or UNKNOWN_IDENTITY,
        "target": state.target or UNKNOWN_TARGET,
        "attributes": {},
        "body": body,
    }


class PartitionAcks:
    """Acknowledges a partition's messages in offset order, never past one still held.

    Faust commits the end of the first run of consecutive acknowledged offsets, and it does not
    see a hole at the committed offset itself: acknowledging the messages after a held one would
    let it commit past the held one, and a crash would lose the bytes only that message carries.
    So sealed messages wait here until every message before them in their partition is done.
    """

    def __init__(self) -> None:
        self._waiting: dict[int, deque[tuple[int, Any]]] = {}
        self._revocations: dict[int, int] = {}

    def __len__(self) -> int:
        return sum(len(waiting) for waiting in self._waiting.values())

    def generation(self, partition: int) -> int:
        """How many times the partition was revoked: taken with a batch, handed back to `add`."""
        return self._revocations.get(partition, 0)

    def add(self, partition: int, offset: int, event: Any, generation: int) -> None:
        """A sealed message, from a batch taken at the partition's ``generation``. One whose
        partition was revoked meanwhile is left unacknowledged: it is the next owner's now."""
        if generation != self._revocations.get(partition, 0):
            return
        self._waiting.setdefault(partition, deque()).append((offset, event))

    def ready(self, held: frozenset[tuple[int, int]]) -> list[Any]:
        """Events to acknowledge now, in offset order: each partition's run up to its first held."""
        done = []
        for partition, waiting in self._waiting.items():
            while waiting and (partition, waiting[0][0]) not in held:
                done.append(waiting.popleft()[1])
        return done

    def drop(self, partitions: set[int]) -> None:
        """Revoked partitions: their next owner reads again from the last commit."""
        for partition in partitions:
            self._waiting.pop(partition, None)
            self._revocations[partition] = self._revocations.get(partition, 0) + 1


def build_app(
    config: WorkerConfig,
    pipeline: SealPipeline,
    registry: SchemaRegistry,
    *,
    metrics: WorkerMetrics | None = None,
    on_started: Callable[[], Awaitable[None]] | None = None,
    behaviour: PersistentScorerState | None = None,
) -> faust.App:
    """The seal agent and the idle timer on a new app. With ``behaviour`` (the scorer), identity
    states are kept in the pipeline's index (`streams.behaviour_store`)."""
    metrics = metrics if metrics is not None else WorkerMetrics()
    # Thread handoff: the pipeline runs in worker threads, one call at a time.
    pipeline_lock = threading.Lock()

    app = _FetchWaitApp(
        config.fetch_max_wait_ms,
        config.app_id,
        broker=f"kafka://{config.bootstrap}",
        store="memory://",
        datadir=str(config.data_dir / "faust"),
        web_enabled=False,
        autodiscover=False,
        topic_partitions=config.partitions,
        topic_allow_declare=True,
        consumer_auto_offset_reset="earliest",
        broker_session_timeout=config.session_timeout_seconds,
        broker_heartbeat_interval=min(3.0, config.session_timeout_seconds / 3),
        broker_commit_interval=config.commit_interval_seconds,
        producer_acks=-1,
        # A dead letter carries the original bytes, up to the largest message we accept.
        producer_max_request_size=config.max_message_bytes + 64 * 1024,
        consumer_max_fetch_size=max(config.max_message_bytes * 2, 4 * 1024 * 1024),
        stream_buffer_maxsize=max(4096, config.batch_max_messages * 2),
        logging_config=None,
    )
    events = app.topic(
        config.events_topic, key_serializer="raw", value_serializer="raw", partitions=config.partitions
    )
    sealed = app.topic(
        config.sealed_topic, key_serializer="raw", value_serializer="raw", partitions=config.partitions
    )
    dlq = app.topic(
        config.dlq_topic, key_serializer="raw", value_serializer="raw", partitions=config.partitions
    )
    alerts = app.topic(
        config.alerts_topic, key_serializer="raw", value_serializer="raw", partitions=config.partitions
    )

    behaviour_store = BehaviourStore(pipeline.index, behaviour) if behaviour is not None else None

    def run_locked(function: Callable[..., Any], *args: Any) -> Any:
        with pipeline_lock:
            return function(*args)

    def seal_taken(
        current: _TakenBatch, take_following: NextBatch | None
    ) -> tuple[BatchOutcome, HandedBatch | None]:
        # A batch not handed over with the previous one is handed over here, under the same
        # hold of the lock as its completion: no revocation comes between the two.
        with pipeline_lock, collector_paused():
            handed = current.handed or pipeline.hand_over([message for _, message in current.batch])
            outcome, following_handed = pipeline.complete(handed, take_following)
            if behaviour_store is not None:
                behaviour_store.save(behaviour_store.scorer.take_changes())
            return outcome, following_handed

    async def publish(outcome: BatchOutcome) -> None:
        pending = []
        for number, letter in enumerate(outcome.dead_letters):
            if number < LOGGED_DEAD_LETTERS:
                logger.warning(
                    "dead letter from %s[%d]@%d: %s",
                    letter.source.topic,
                    letter.source.partition,
                    letter.source.offset,
                    letter.reason,
                )
            elif number == LOGGED_DEAD_LETTERS:
                logger.warning(
                    "... and %d more dead letters in this batch", len(outcome.dead_letters) - number
                )
            pending.append(
                await dlq.send(key=letter.key, value=letter.value, headers=letter.headers(), force=True)
            )
        for session_id, alert in outcome.alerts:
            pending.append(await alerts.send(key=session_id.encode(), value=alert, force=True))
        for partition, message in outcome.sealed_batches:
            pending.append(
                await sealed.send(key=str(partition).encode(), value=message, partition=partition, force=True)
            )
        if pending:
            await asyncio.gather(*pending)

    # Sealed messages not acknowledged yet: behind one whose terminal bytes the masker holds.
    acks = PartitionAcks()
    # The running agent's intake (concurrency=1: one at a time), so a revocation can drop what
    # it holds of the partitions this worker lost. Each item: the Faust event (to acknowledge)
    # and its SourceMessage, built once on arrival.
    intakes: list[BatchIntake[Taken]] = []

    # With decoder processes, messages taken from the stream and not yet handed to
    # `SealPipeline.decode_ahead`: each is decoded while it waits in the intake, so the decoders
    # work on the next batch while the pipeline seals this one.
    arrived: list[SourceMessage] = []

    def decode_arrived() -> None:
        if arrived:
            pipeline.decode_ahead(arrived)
            arrived.clear()

    def taken(batch: list[Taken]) -> _TakenBatch:
        generations = {message.partition: acks.generation(message.partition) for _, message in batch}
        return _TakenBatch(batch, generations, None, time.perf_counter())

    def due_batch(intake: BatchIntake[Taken]) -> _TakenBatch | None:
        """The intake's next batch if one is due now (on the event loop)."""
        decode_arrived()
        batch = intake.take_due()
        return taken(batch) if batch else None

    async def seal_batches(intake: BatchIntake[Taken], stream: Any) -> None:
        # With a seal process, the next batch is handed over while this one is written (see
        # `SealPipeline.complete`): then one batch is in flight between the calls here.
        loop = asyncio.get_running_loop()
        current: _TakenBatch | None = None
        while True:
            if current is None:
                current = taken(await intake.take())
                metrics.intake_messages = len(intake)
                decode_arrived()
            following = None
            if pipeline.overlaps_batches:
                following = _FollowingBatch(loop, functools.partial(due_batch, intake))
            try:
                sealing = functools.partial(seal_taken, current, following)
                outcome, following_handed = await _sealed_in_thread(sealing)
                await publish(outcome)
            except DlqLimitExceeded as exc:
                logger.critical("%s", exc)
                # Unacknowledged, this batch is replayed after the operator has looked.
                await app.crash(exc)
                return
            for event, message in current.batch:
                acks.add(
                    message.partition,
                    message.offset,
                    without_payload(event),
                    current.generations[message.partition],
                )
            for event in acks.ready(outcome.held):
                await stream.ack(event)
            metrics.intake_messages = len(intake)
            metrics.unacknowledged_messages = len(acks)
            metrics.add(outcome, len(current.batch), time.perf_counter() - current.started)
            current = following.taken if following is not None else None
            if current is not None:
                current.handed = following_handed  # `complete` handed over what it took

    crashing: list[asyncio.Future[None]] = []  # referenced, so the task is not collected early

    def stop_if_sealing_failed(sealing: asyncio.Future[None]) -> None:
        if sealing.cancelled() or sealing.exception() is None:
            return
        # A bug, not bad input (that goes to the DLQ) nor an outage (retried inside): stop the
        # worker so that it is restarted and the batch replayed, instead of leaving a process
        # that looks alive and seals nothing.
        error = sealing.exception()
        logger.critical("the seal agent failed; stopping the worker", exc_info=error)
        crashing.append(asyncio.ensure_future(app.crash(cast(BaseException, error))))

    @app.agent(events, name="seal", concurrency=1)
    async def seal_agent(stream: Any) -> None:
        # The stream keeps filling the intake while the previous batch is sealed in its thread
        # (see streams/intake.py); acknowledgements are manual, after durability.
        manual = stream.noack()
        intake: BatchIntake[Taken] = BatchIntake(config.batch_max_messages, config.batch_within_seconds)
        intakes.append(intake)
        sealing = asyncio.ensure_future(seal_batches(intake, manual))
        sealing.add_done_callback(stop_if_sealing_failed)
        decoding_ahead = pipeline.decodes_ahead
        try:
            async for event in manual.events():
                if sealing.done():
                    break  # the worker is stopping: take no message it will not seal
                message = _source_message(event)
                await intake.put((event, message))
                if decoding_ahead:
                    arrived.append(message)
                    if len(arrived) >= DECODE_AHEAD_MESSAGES:
                        decode_arrived()
        finally:
            intakes.remove(intake)
            sealing.cancel()

    @app.timer(config.idle_check_seconds)  # type: ignore[untyped-decorator]
    async def seal_idle_sessions() -> None:
        idle = await asyncio.to_thread(run_locked, pipeline.idle_sessions, config.idle_timeout_seconds)
        for state in idle:
            logger.info(
                "session %s idle for %.0fs: asking to seal it", state.session_id, config.idle_timeout_seconds
            )
            value = registry.encode(EVENT_SCHEMA, idle_timeout_event(state, config.idle_timeout_seconds))
            await events.send(key=state.session_id.encode(), value=value, force=True)
        overdue = await asyncio.to_thread(run_locked, pipeline.overdue_flushes, config.hold_flush_seconds)
        for flush in overdue:
            state = flush.state
            logger.info(
                "session %s: terminal bytes or a password prompt held for %.0fs; asking to record them",
                state.session_id,
                config.hold_flush_seconds,
            )
            request = output_flush_event(
                state, config.hold_flush_seconds, secret_prompt=flush.secret_prompt, held_from=flush.held_from
            )
            value = registry.encode(EVENT_SCHEMA, request)
            await events.send(key=state.session_id.encode(), value=value, force=True)

    async def forget_revoked(sender: Any, revoked: Any, **kwargs: Any) -> None:
        lost = {tp.partition for tp in revoked if tp.topic == config.events_topic}
        # Messages of lost partitions waiting here are the next owner's (from the last commit).
        # Dropped before the pipeline forgets the partitions, so none is decoded ahead after.
        for intake in intakes:
            intake.drop(lambda taken: taken[1].partition in lost)
        arrived[:] = [message for message in arrived if message.partition not in lost]
        acks.drop(lost)
        for partition in sorted(lost):
            await asyncio.to_thread(run_locked, pipeline.forget_partition, partition)

    app.on_partitions_revoked.connect(cast(Any, forget_revoked))

    if on_started is not None:
        hook = on_started

        @app.task  # type: ignore[untyped-decorator]
        async def started() -> None:
            await hook()

    return app


@dataclass
class _TakenBatch:
    """A batch taken from the intake and handed to the pipeline, not acknowledged yet."""

    batch: list[Taken]
    generations: dict[int, int]  # partition → its revocation count when taken (`PartitionAcks`)
    handed: HandedBatch | None  # handed over with the previous batch (`SealPipeline.complete`), or None
    started: float


class _FollowingBatch:
    """The next batch, taken on the event loop when the pipeline's thread asks for it (as
    `SealPipeline.complete`'s ``take_following``). An ask the loop has not answered within
    FOLLOWING_WAIT_SECONDS (it is stopping) is withdrawn, and answered late it takes nothing: a
    batch is never taken from the intake without the pipeline getting it."""

    def __init__(self, loop: asyncio.AbstractEventLoop, take: Callable[[], _TakenBatch | None]) -> None:
        self._loop = loop
        self._take = take
        self._lock = threading.Lock()
        self._open = True
        self.taken: _TakenBatch | None = None

    def __call__(self) -> list[SourceMessage]:
        try:
            answered = asyncio.run_coroutine_threadsafe(self._answer(), self._loop)
        except RuntimeError:  # the loop is closed: the worker is stopping
            return []
        with contextlib.suppress(TimeoutError, concurrent.futures.CancelledError):
            answered.result(FOLLOWING_WAIT_SECONDS)
        with self._lock:
            self._open = False
            return [message for _, message in self.taken.batch] if self.taken is not None else []

    async def _answer(self) -> None:
        with self._lock:
            if self._open:
                self.taken = self._take()


class _FetchWaitApp(faust.App):
    """A Faust app whose Kafka consumer waits at most ``fetch_max_wait_ms`` for a fetch.

    Faust fixes the consumer's fetch wait at 1.5 s. Apache Kafka answers a fetch as soon as data
    is there, so the wait only paces polling of an idle topic; Tansu (the dev stack's and the
    tests' broker) holds every fetch for about half of it, data or not. Measured in the pipeline
    benchmark: messages reached the agent in bursts every 0.75 s, and at the start of a load the
    pipeline sat idle between them.
    """

    def __init__(self, fetch_max_wait_ms: int, *args: Any, **kwargs: Any) -> None:
        self.fetch_max_wait_ms = fetch_max_wait_ms
        super().__init__(*args, **kwargs)

    def _new_transport(self) -> TransportT:
        return _FetchWaitTransport(self.conf.broker_consumer, self)


class _FetchWaitConsumer(faust_aiokafka.Consumer):
    def _new_consumer_thread(self) -> faust_aiokafka.AIOKafkaConsumerThread:
        return _FetchWaitConsumerThread(self, loop=self.loop, beacon=self.beacon)


class _FetchWaitTransport(faust_aiokafka.Transport):
    Consumer = _FetchWaitConsumer


class _FetchWaitConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    def _create_worker_consumer(self, transport: faust_aiokafka.Transport) -> aiokafka.AIOKafkaConsumer:
        consumer = super()._create_worker_consumer(transport)
        # Read when the consumer starts its fetcher; aiokafka has no setter for it.
        consumer._fetch_max_wait_ms = cast(_FetchWaitApp, self.app).fetch_max_wait_ms
        return consumer


def without_payload(event: Any) -> Any:
    """A sealed Faust event, its message's bytes let go: acknowledging it needs only its place.
    It may wait behind a held message of its partition (for a flush interval or more; until the
    flush is sealed, if the topic is behind), and keeping every waiting message's bytes meanwhile
    would grow the worker's memory with the partition's traffic."""
    event.value = None
    event.message.value = None
    return event


def _source_message(event: Any) -> SourceMessage:
    message = event.message
    headers = tuple((name, bytes(value)) for name, value in (message.headers or ()))
    return SourceMessage(
        topic=message.topic,
        partition=message.partition,
        offset=message.offset,
        key=message.key,
        value=message.value,
        headers=headers,
    )


# A batch that takes longer than this is waiting out an outage (store or index retried): the
# collector resumes meanwhile, for the rest of the process (Faust, and the API in `blackbox dev`).
COLLECTOR_PAUSE_LIMIT_SECONDS = 30.0
_collector_resumable = threading.Event()  # set while a pause holds an enabled collector off


@contextmanager
def collector_paused() -> Iterator[None]:
    """No cyclic garbage collection while a batch is sealed.

    A batch decodes every event of up to `batch_max_messages` messages before sealing them:
    hundreds of thousands of live dicts, which each young-generation collection scans again
    and then promotes, until an older-generation collection scans them all (150 ms each).
    Measured in the seal-only benchmark, collections took 0.6 s of an 8 s run. Sealing throws
    its objects away to reference counting; the few cycles a batch makes (a refused event's
    traceback) wait for the end of the batch, when the collector resumes.
    """
    if not gc.isenabled():
        yield
        return
    gc.disable()
    _collector_resumable.set()
    try:
        yield
    finally:
        _collector_resumable.clear()
        gc.enable()


def resume_collector() -> None:
    """Let the collector run again while a paused batch goes on (see COLLECTOR_PAUSE_LIMIT_SECONDS)."""
    if _collector_resumable.is_set():
        gc.enable()


async def _sealed_in_thread(process: Callable[[], T]) -> T:
    """``process()`` in a thread; a batch that outlasts the collector's pause limit gets it back."""
    sealing = asyncio.ensure_future(asyncio.to_thread(process))
    done, _ = await asyncio.wait({sealing}, timeout=COLLECTOR_PAUSE_LIMIT_SECONDS)
    if not done:
        logger.info(
            "a batch has taken over %.0fs; the garbage collector runs meanwhile",
            COLLECTOR_PAUSE_LIMIT_SECONDS,
        )
        resume_collector()
    return await sealing


def run_worker(app: faust.App, loglevel: str = "INFO") -> None:
    """Run the app in the foreground until SIGINT/SIGTERM (or a crash, exiting non-zero)."""
    # Sealing allocates several short-lived dicts per event, so with the default gen-0 threshold
    # (700 allocations) the cyclic collector runs thousands of times a second: ~12% of the
    # worker's CPU, measured. Collecting 70x less often, and never scanning what exists at start
    # (modules, schemas, policies), costs little memory: the pipeline's garbage is acyclic.
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)
    worker = faust.Worker(app, loglevel=loglevel, quiet=True, redirect_stdouts=False, override_logging=False)
    worker.execute_from_commandline()
