"""Where the seal step runs: in the pipeline's thread, or in a process of its own.

Masking and scoring cost most of a worker's CPU per event, and one process is bound by its
interpreter lock at about one core. `SealProcess` runs the seal step (decode, validate, mask,
score, chain) in a child process, so that it seals one partition of a batch while the worker
archives and indexes the previous one, and the next batch while the worker writes the last
partition of this one, publishes, acknowledges and keeps the ledger (`SealPipeline.complete`).
`LocalSealer` runs the same step in the caller's thread. Both hand back the same results
(`MessageSealed`, records as `streams.seal.RecordFields` tuples, named by `MessageSealed.rows()`),
so the pipeline has one path.

The child holds what the step keeps in memory: the masker's terminal streams and the scorer's
identity states. It reads nothing itself: what sealing needs from the index (an older event's
digest, identity states) it asks the worker for, over the same pipe, and the worker answers
while it waits for the child's results. All reads of a batch are asked before its first insert
is queued (the identities first, as in-process), except digests of duplicates older than the
worker's window, as before.

A child that fails or dies takes the masker's state with it: the worker then stops (a batch
fails, the seal agent crashes the worker) and its restart recovers from the archive and the
redelivered messages, as after any crash.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import multiprocessing
import queue
import signal
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection
from multiprocessing.reduction import ForkingPickler
from typing import Any, NamedTuple, NoReturn, Protocol

from risk.scorer import StateUnavailable
from schemas import SchemaRegistry
from streams.behaviour_store import PersistentScorerState
from streams.decode import Events, die_with_parent
from streams.score import AlertThreshold
from streams.seal import (
    DigestLookup,
    RecordFields,
    SealingFailed,
    SealStep,
    SessionState,
    error_place,
    is_alert_record,
    kept_of,
    record_fields,
)

logger = logging.getLogger(__name__)

WaitingWork = Callable[[], bool] | None  # work for the caller's thread while a seal process seals


class RecordRow(NamedTuple):
    """A sealed record as the worker needs it after sealing (`streams.seal.RecordFields`, named):
    its exact bytes for the archive, and the values of its index row."""

    raw: bytes
    hash: bytes
    record_index: int
    kind: str
    source_seq: int | None
    prev_hash: bytes
    event_digest: bytes | None
    event_id: str
    event_time: int | None  # None: a record without an event (a gap, a seal)
    body_type: str
    summary: str
    risk_score: int
    finding_count: int
    gateway_event: bool  # carries a gateway's event (see `carries_gateway_event`)
    worker_request: bool  # a worker's own request (see `is_worker_request`)


def record_row(raw: bytes, digest: bytes, value: Mapping[str, Any]) -> RecordRow:
    return RecordRow._make(record_fields(raw, digest, value))


@dataclass(frozen=True)
class Refusal:
    position: int  # of the event in its message
    reason: str
    by_masking: bool  # masking raised (`SealingFailed`): the session may be failing closed


class Holding(NamedTuple):
    """What the masker holds back of a session: the message that brought it must come again
    after a crash, and while a password prompt is open what is typed next is the secret."""

    bytes: bool  # bytes of output or keystrokes, for the session's next event
    prompt: bool  # an open password prompt

    @property
    def output(self) -> bool:
        """Anything at all: bytes, or an open prompt."""
        return self.bytes or self.prompt


def holding_of(step: SealStep, session_id: str) -> Holding:
    return Holding(step.holds_bytes(session_id), step.prompt_open(session_id))


@dataclass(frozen=True)
class MessageSealed:
    """What sealing one message (one session's events) gave."""

    fields: list[RecordFields]  # each record's, as plain tuples: what a seal process pickles
    state: SessionState  # the session's chain after the message
    duplicates: int
    refused: list[Refusal]
    alerts: list[bytes]  # JSON, for records whose risk reaches the identity kind's threshold
    holding: Holding  # what the masker holds back of the session after the message

    def rows(self) -> list[RecordRow]:
        """The records, their fields named."""
        return list(map(RecordRow._make, self.fields))


@dataclass
class PartitionJob:
    """One partition's messages of a batch, in offset order, each (key, value, decoded events),
    and the chain state of each of their sessions before the batch."""

    partition: int
    messages: list[tuple[bytes | None, bytes, Events]]
    states: dict[str, SessionState]


def seal_messages(
    step: SealStep,
    messages: Iterable[tuple[bytes | None, Events]],
    states: dict[str, SessionState],
    known_digest: DigestLookup,
) -> list[MessageSealed]:
    """Seal one partition's messages in order; ``states`` is updated as chains grow."""
    # Digests chained earlier in this call, for duplicates arriving in a later message.
    recent: dict[tuple[str, int], bytes] = {}

    def known(session_id: str, seq: int) -> bytes | None:
        return recent.get((session_id, seq)) or known_digest(session_id, seq)

    sealed: list[MessageSealed] = []
    for key, events in messages:
        session_id = events[0][0]["session_id"]
        result = step.seal_batch(events, states[session_id], known, message_key=key)
        fields, alerts = kept_of(step, result.records, recent)
        if fields:
            states[session_id] = result.state
        refused = [
            Refusal(position, str(error), isinstance(error, SealingFailed))
            for position, error in result.refused
        ]
        sealed.append(
            MessageSealed(
                fields, states[session_id], result.duplicates, refused, alerts, holding_of(step, session_id)
            )
        )
    return sealed


class Sealer(Protocol):
    """The seal step as the pipeline uses it, wherever it runs."""

    # The step runs beside the caller (`SealProcess`): a batch handed over before the previous
    # one is written seals meanwhile. In the caller's thread it would only wait its turn.
    runs_alongside: bool

    def seal_partitions(
        self, jobs: Sequence[PartitionJob], known_digest: DigestLookup, while_waiting: WaitingWork = None
    ) -> Iterator[tuple[PartitionJob, list[MessageSealed]]]:
        """Each job's results, in the jobs' order; the identities of every job's sessions are
        read before the first job's results come (one query). Beside the caller, sealing starts
        at this call; consume the iterator to its end before any other call but `forget_stream`.
        ``while_waiting`` is called, beside the caller, while no results are ready, until it
        returns False (it has nothing more to do)."""
        ...

    def holding(self, session_id: str) -> Holding: ...

    def rewarm(self, event: dict[str, Any], message_key: bytes | None, *, refused: bool = False) -> bool: ...

    def forget_stream(self, session_id: str) -> None: ...

    def is_alert(self, record: Mapping[str, Any]) -> bool: ...

    def close(self) -> None: ...


def _first_events(messages: Iterable[tuple[Any, Events]]) -> Iterator[dict[str, Any]]:
    # A message is one session, and a session one identity: its first event names it.
    return (events[0][0] for _, events in messages)


class LocalSealer:
    """The seal step in the caller's thread; a job seals as its results are read."""

    runs_alongside = False

    def __init__(self, step: SealStep) -> None:
        self.step = step

    def seal_partitions(
        self, jobs: Sequence[PartitionJob], known_digest: DigestLookup, while_waiting: WaitingWork = None
    ) -> Iterator[tuple[PartitionJob, list[MessageSealed]]]:
        self.step.prepare(_first_events((key, events) for job in jobs for key, _, events in job.messages))
        for job in jobs:
            messages = [(key, events) for key, _, events in job.messages]
            yield job, seal_messages(self.step, messages, job.states, known_digest)

    def holding(self, session_id: str) -> Holding:
        return holding_of(self.step, session_id)

    def rewarm(self, event: dict[str, Any], message_key: bytes | None, *, refused: bool = False) -> bool:
        return self.step.rewarm(event, message_key, refused=refused)

    def forget_stream(self, session_id: str) -> None:
        self.step.forget_stream(session_id)

    def is_alert(self, record: Mapping[str, Any]) -> bool:
        return self.step.is_alert(record)

    def close(self) -> None:
        pass


@dataclass(frozen=True)
class SealParts:
    """What a seal process builds for itself (``SealProcess``'s factory returns it)."""

    registry: SchemaRegistry
    step: SealStep
    scorer: PersistentScorerState | None = None


class SealProcessFailed(RuntimeError):
    """The seal process failed or exited; its masker and scorer state is gone with it."""


class SealProcess:
    """The seal step in a child process (see the module's docstring). Calls are serialised; the
    worker makes them from its pipeline thread. One seal job is in flight at a time: handed over
    by `seal_partitions`, it seals while the worker writes the previous batch."""

    runs_alongside = True

    def __init__(
        self,
        factory: Callable[[], SealParts],
        *,
        alerts: AlertThreshold,
        start_timeout_seconds: float = 120.0,
    ) -> None:
        """``alerts``: the child's risk policy's thresholds (a `risk.RiskScorer`), which
        `is_alert` asks here: recovery asks it for every record it announces again, and a pipe
        round trip each (~0.1 ms) was seconds per batch."""
        self._alerts = alerts
        context = multiprocessing.get_context("spawn")
        self._connection, child = context.Pipe()
        self._process = context.Process(
            target=_serve, args=(child, factory), name="blackbox-seal", daemon=True
        )
        self._process.start()
        child.close()
        self._lock = threading.Lock()
        self._broken: str | None = None
        self._in_flight = False  # a seal job was handed over and its results are not all read
        self._loader: Callable[[str], Mapping[str, Any] | None] | None = None
        self._bulk_loader: Callable[[list[str]], Mapping[str, Mapping[str, Any]]] | None = None
        # Identity states the child's finished seal jobs changed, not yet taken (`take_changes`).
        self._changes: dict[str, dict[str, Any]] = {}
        if not self._connection.poll(start_timeout_seconds):
            self.close()
            raise SealProcessFailed(f"the seal process did not start within {start_timeout_seconds:.0f}s")
        try:
            self._expect("ready")
        except BaseException:
            self.close()  # its factory failed: the child is exiting, or stopped here
            raise

    @property
    def pid(self) -> int | None:
        return self._process.pid

    def seal_partitions(
        self, jobs: Sequence[PartitionJob], known_digest: DigestLookup, while_waiting: WaitingWork = None
    ) -> Iterator[tuple[PartitionJob, list[MessageSealed]]]:
        with self._lock:
            self._check()
            if self._in_flight:
                # Its results would answer this job: the caller gave up on it (its batch failed),
                # and the child's masker has taken it, so it is of no use to this worker any more.
                self._fail("a seal job was abandoned before its end")
            # The decoded events stay here: the child decodes the bytes again, for less than
            # pickling them would cost.
            self._send(
                (
                    "seal",
                    [
                        (job.partition, [(key, value) for key, value, _ in job.messages], job.states)
                        for job in jobs
                    ],
                )
            )
            self._in_flight = True
        return self._results(list(jobs), known_digest, while_waiting)

    def _results(
        self, jobs: list[PartitionJob], known_digest: DigestLookup, while_waiting: WaitingWork
    ) -> Iterator[tuple[PartitionJob, list[MessageSealed]]]:
        finished = False
        try:
            for number, job in enumerate(jobs):
                if while_waiting is not None:
                    while not self._connection.poll(0) and while_waiting():
                        pass
                with self._lock:
                    reply = self._expect("sealed", known_digest)
                    if reply[1] != job.partition:
                        self._fail(f"results for partition {reply[1]} came for partition {job.partition}")
                    if number == len(jobs) - 1:
                        self._finish_job(known_digest)
                yield job, reply[2]
            if not jobs:
                with self._lock:
                    self._finish_job(known_digest)
            finished = True
        finally:
            if not finished and self._broken is None:
                self._broken = "a seal job was abandoned before its end"

    def _finish_job(self, known_digest: DigestLookup) -> None:
        """The job's end, read with its last results: the next job can be handed over then."""
        self._changes.update(self._expect("done", known_digest)[1])
        self._in_flight = False

    def holding(self, session_id: str) -> Holding:
        return Holding(*self._call("holding", session_id))

    def rewarm(self, event: dict[str, Any], message_key: bytes | None, *, refused: bool = False) -> bool:
        return bool(self._call("rewarm", event, message_key, refused))

    def forget_stream(self, session_id: str) -> None:
        # No answer to wait for: with a job in flight (a revocation between batches) the child
        # forgets after sealing it, which is the order the worker asked in.
        with self._lock:
            if self._broken is None:  # a failed child has forgotten everything already
                self._send(("forget", session_id))

    def is_alert(self, record: Mapping[str, Any]) -> bool:
        return is_alert_record(self._alerts, record)

    # The child's identity states (`PersistentScorerState`), for `streams.behaviour_store.BehaviourStore`.

    def use_loader(
        self,
        loader: Callable[[str], Mapping[str, Any] | None],
        bulk_loader: Callable[[list[str]], Mapping[str, Mapping[str, Any]]] | None = None,
    ) -> None:
        with self._lock:
            self._check_idle()
            self._loader, self._bulk_loader = loader, bulk_loader
            self._send(("use_loader", bulk_loader is not None))
            self._expect("answer")

    def take_changes(self) -> dict[str, dict[str, Any]]:
        """What the seal jobs read to their end changed (the child sends it with each job's end,
        so a job in flight does not mix its changes into the previous batch's)."""
        with self._lock:
            changes, self._changes = self._changes, {}
            return changes

    def close(self) -> None:
        # A child with a job given up in flight may be waiting for an answer: it is not asked.
        if self._process.is_alive() and not self._in_flight:
            with contextlib.suppress(OSError):
                self._connection.send(("stop",))
            self._process.join(10)
        if self._process.is_alive():
            self._process.kill()
            self._process.join(5)
        self._connection.close()

    # -- the pipe -----------------------------------------------------------------------------

    def _call(self, name: str, *args: Any) -> Any:
        with self._lock:
            self._check_idle()
            self._send(("call", name, args))
            return self._expect("answer")[1]

    def _check(self) -> None:
        if self._broken is not None:
            raise SealProcessFailed(f"the seal process is unusable: {self._broken}")

    def _check_idle(self) -> None:
        self._check()
        if self._in_flight:
            # The pipeline reads a job's results to their end before any call: one still in
            # flight was given up on, and its results would come where the call's answer is due.
            self._fail("a seal job was abandoned before its end")

    def _send(self, message: tuple[Any, ...]) -> None:
        try:
            self._connection.send(message)
        except OSError as exc:
            self._process.join(1)
            self._fail(f"it exited (exit code {self._process.exitcode}; writing to it: {exc})")

    def _expect(self, kind: str, known_digest: DigestLookup | None = None) -> tuple[Any, ...]:
        """The child's next reply of ``kind``, answering what it asks meanwhile."""
        while True:
            try:
                reply = self._connection.recv()
            except (EOFError, OSError):
                self._process.join(1)
                self._fail(f"it exited (exit code {self._process.exitcode})")
            if reply[0] == kind:
                return tuple(reply)
            if reply[0] == "ask":
                self._answer(reply[1], reply[2], known_digest)
            elif reply[0] == "failed":
                self._fail(reply[1])
            else:
                self._fail(f"it sent {reply[0]!r} where {kind!r} was due")

    def _answer(self, what: str, args: tuple[Any, ...], known_digest: DigestLookup | None) -> None:
        read: Callable[..., Any] | None = {
            "digest": known_digest,
            "load": self._loader,
            "load_many": self._bulk_loader,
        }.get(what)
        if read is None:
            self._fail(f"it asked for {what!r}, which nothing here answers now")
        try:
            answer = read(*args)
        except StateUnavailable as exc:
            self._send(("unavailable", str(exc)))
            return
        except BaseException:
            # The worker's own read failed (its retries gave up): the batch fails here, and the
            # child, still waiting for the answer, goes with the worker.
            self._broken = "an index read it asked for failed"
            raise
        self._send(("answer", answer))

    def _fail(self, why: str) -> NoReturn:
        self._broken = why
        raise SealProcessFailed(f"the seal process failed: {why}")


# -- the child ----------------------------------------------------------------------------------


def _serve(connection: Connection, factory: Callable[[], SealParts]) -> None:
    die_with_parent()
    # Ctrl-C reaches the whole process group; the worker stops this process when it stops.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        parts = factory()
    except BaseException as exc:
        connection.send(("failed", error_place(exc)))
        return
    # Replies are written by a thread of their own: the worker reads a job's results only once
    # it has decoded its next batch, and a full pipe must not stop the sealing meanwhile.
    outbox = _Outbox(connection)
    outbox.send(("ready",))

    # Requests that came while an answer was awaited (a `forget` sent during a job): they are
    # taken after the job, in the order they came.
    waiting: deque[tuple[Any, ...]] = deque()

    def ask(what: str, *args: Any) -> Any:
        outbox.send(("ask", what, args))
        while (reply := connection.recv())[0] not in ("answer", "unavailable"):
            waiting.append(reply)
        if reply[0] == "unavailable":
            raise StateUnavailable(reply[1])
        return reply[1]

    try:
        while True:
            try:
                request = waiting.popleft() if waiting else connection.recv()
            except EOFError:
                return
            try:
                if request[0] == "stop":
                    return
                if request[0] == "seal":
                    _seal_jobs(outbox, parts, request[1], lambda sid, seq: ask("digest", sid, seq))
                elif request[0] == "forget":
                    parts.step.forget_stream(request[1])
                elif request[0] == "call":
                    _, name, args = request
                    outbox.send(("answer", _called(parts.step, name, args)))
                elif request[0] == "use_loader":
                    if parts.scorer is not None:
                        bulk = (lambda keys: ask("load_many", keys)) if request[1] else None
                        parts.scorer.use_loader(lambda key: ask("load", key), bulk)
                    outbox.send(("answer", None))
                else:
                    outbox.send(("failed", f"unknown request {request[0]!r}"))
            except BaseException as exc:
                outbox.send(("failed", error_place(exc)))
    finally:
        outbox.close()


class _Outbox:
    """The child's replies, pickled in order by the sealing thread and written by another."""

    def __init__(self, connection: Connection) -> None:
        self._connection = connection
        self._queue: queue.SimpleQueue[memoryview | None] = queue.SimpleQueue()
        self._writer = threading.Thread(target=self._write, name="seal-replies", daemon=True)
        self._writer.start()

    def send(self, message: tuple[Any, ...]) -> None:
        # Pickled here, so a reply is what it was when sent, whatever sealing does next.
        self._queue.put(ForkingPickler.dumps(message))

    def close(self) -> None:
        self._queue.put(None)
        self._writer.join(10)

    def _write(self) -> None:
        while (data := self._queue.get()) is not None:
            try:
                self._connection.send_bytes(data)
            except OSError:
                return  # the worker is gone; this process goes with it (`die_with_parent`)


def _seal_jobs(
    outbox: _Outbox,
    parts: SealParts,
    jobs: list[tuple[int, list[tuple[bytes | None, bytes]], dict[str, SessionState]]],
    known_digest: DigestLookup,
) -> None:
    # As in the worker's own thread (`streams.app.collector_paused`): a batch's live events are
    # many, and sealing makes no cycles worth collecting while it runs.
    enabled = gc.isenabled()
    gc.disable()
    try:
        decoded = [
            (
                partition,
                [(key, parts.registry.decode_events(value).events) for key, value in messages],
                states,
            )
            for partition, messages, states in jobs
        ]
        parts.step.prepare(_first_events(message for _, messages, _ in decoded for message in messages))
        for partition, messages, states in decoded:
            outbox.send(("sealed", partition, seal_messages(parts.step, messages, states, known_digest)))
        # The identity states the job changed, taken with its end: the worker stores them once
        # the batch is durable, while the next job may already be sealing here.
        outbox.send(("done", parts.scorer.take_changes() if parts.scorer is not None else {}))
    finally:
        if enabled:
            gc.enable()


def _called(step: SealStep, name: str, args: tuple[Any, ...]) -> Any:
    """The step's calls a worker makes outside sealing (nothing else is callable remotely)."""
    if name == "holding":
        return tuple(holding_of(step, *args))
    if name == "rewarm":
        event, key, refused = args
        return step.rewarm(event, key, refused=refused)
    raise ValueError(f"{name} is not callable in the seal process")
