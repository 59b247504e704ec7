"""The emitter SDK: Python gateways put session events on ``blackbox.events`` through it.

The pipeline pays per Kafka message, so events are buffered per session and each buffer goes
out as ONE message: an EventBatch in Avro single-object encoding, keyed by the session id (the
key picks the partition, and a session's chain lives in one partition). A buffer is sealed
when it holds ``max_batch_events`` events or ``max_batch_bytes`` bytes, when its linger time
runs out, when a SessionEnd arrives, or on `Emitter.flush` / `Emitter.close`.

Sealed batches wait in one FIFO outbox that a single sender task hands to the aiokafka
producer, so a session's batches reach the broker in the order they were sealed; delivery
futures are collected, never awaited one by one. Memory is bounded: once the bytes buffered
or in flight exceed ``max_buffered_bytes``, `Emitter.emit` waits for deliveries. Nothing is
dropped silently: a failed delivery is raised as `EmitError` by the next ``emit``, ``flush``
or ``close``, carrying the events that were not delivered.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from types import TracebackType
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.codec import has_gzip, has_lz4, has_zstd

from schemas import BATCH_SCHEMA, SchemaError, SchemaRegistry, default_registry
from schemas.bodies import BODY_TYPES, SESSION_END

logger = logging.getLogger(__name__)

DEFAULT_TOPIC = "blackbox.events"
MiB = 1024 * 1024

# Record-batch framing, key and headers that aiokafka adds around our value; a message whose
# value is within this margin of max_request_size is refused by the producer.
_KAFKA_OVERHEAD = 512
# Single-object header (10) + session id length and array block counts (a few varints).
_BATCH_OVERHEAD = 32

# aiokafka (0.12+) compresses zstd and lz4 with cramjam, not with the zstandard or lz4
# packages; gzip is in the standard library and always works.
_CODECS: dict[str, Callable[[], bool]] = {"zstd": has_zstd, "lz4": has_lz4, "gzip": has_gzip}
_FALLBACK_ORDER = ("zstd", "lz4", "gzip")
_BODY_TYPES = frozenset(BODY_TYPES)
# Map-typed fields encode their keys too; every other dict in an event is a record, whose field
# names are not on the wire.
_MAP_FIELDS = frozenset({"attributes", "request_headers", "response_headers"})


class EmitError(RuntimeError):
    """Events were accepted by `Emitter.emit` but not delivered; ``failures`` says which."""

    def __init__(self, message: str, failures: Sequence[FailedDelivery] = ()) -> None:
        super().__init__(message)
        self.failures = list(failures)

    @property
    def events(self) -> list[Mapping[str, Any]]:
        """Every undelivered event, in emit order per session (to re-emit after a fix)."""
        return [event for failure in self.failures for event in failure.events]


class InvalidEvent(EmitError, ValueError):
    """An event the schema cannot encode; raised by `Emitter.emit` for structural mistakes."""


@dataclass(frozen=True)
class FailedDelivery:
    session_id: str
    events: tuple[Mapping[str, Any], ...]
    error: BaseException

    def describe(self) -> str:
        seqs = [e.get("seq") for e in self.events]
        span = f"seq {seqs[0]}..{seqs[-1]}" if seqs else "no events"
        cause = f"{type(self.error).__name__}: {self.error}"
        return f"session {self.session_id} {span} ({len(seqs)} events): {cause}"


@dataclass(frozen=True)
class EmitterStats:
    events_emitted: int
    events_delivered: int
    messages_handed_over: int  # to the producer, acknowledged by the broker or not yet
    messages_sent: int
    bytes_sent: int
    buffered_bytes: int
    peak_buffered_bytes: int


def resolve_compression(preferred: str | None) -> str | None:
    """``preferred`` if aiokafka can compress with it here, else the best codec it can use."""
    if preferred is None:
        return None
    if preferred not in _CODECS:
        raise ValueError(f"unknown compression {preferred!r}; use one of {', '.join(_CODECS)} or None")
    if _CODECS[preferred]():
        return preferred
    fallback = next(name for name in _FALLBACK_ORDER if _CODECS[name]())
    logger.warning(
        "aiokafka cannot compress with %s here (is cramjam installed?); using %s", preferred, fallback
    )
    return fallback


def estimate_size(event: Mapping[str, Any]) -> int:
    """An upper estimate of an event's Avro binary size, without encoding it.

    Batches are cut and memory is bounded by this number, so it errs high: every string and
    int is charged a possible union index, every int its widest varint.
    """
    return _approx(event)


def _approx(value: Any) -> int:
    if isinstance(value, bytes):
        return len(value) + 5
    if isinstance(value, str):
        # isascii() is O(1) in CPython; only non-ASCII text pays for an encode.
        n = len(value) if value.isascii() else len(value.encode("utf-8", "surrogatepass"))
        return n + (3 if n < 8192 else 6)
    if value is None or isinstance(value, bool):
        return 1
    if isinstance(value, int | float):
        return 11
    if isinstance(value, tuple):  # a union written as (record name, fields): the index + fields
        return 1 + _approx(value[1])
    if isinstance(value, dict):
        total = 1
        for key, item in value.items():
            total += _approx_map(item) if key in _MAP_FIELDS else _approx(item)
        return total
    if isinstance(value, list):
        return 6 + sum(_approx(item) for item in value)
    return 16 + len(str(value))


def _approx_map(value: Any) -> int:
    if not isinstance(value, dict):
        return _approx(value)
    return 6 + sum(_approx(k) + _approx(v) for k, v in value.items())


class _Buffer:
    __slots__ = ("deadline", "events", "size")

    def __init__(self, deadline: float, overhead: int) -> None:
        self.events: list[Mapping[str, Any]] = []
        self.size = overhead
        self.deadline = deadline


@dataclass
class _Message:
    session_id: str
    key: bytes
    value: bytes
    events: list[Mapping[str, Any]]


class Emitter:
    """Batches a gateway's session events into Kafka messages; an async context manager.

    ``compression`` falls back (with a warning) to a codec aiokafka can use here. The broker
    must accept ``acks="all"``; idempotence stays off because the embedded broker (Tansu) has
    no idempotent producer, and ordering holds anyway: one sender, and aiokafka keeps one
    request in flight per broker.
    """

    def __init__(
        self,
        bootstrap_servers: str,
        topic: str = DEFAULT_TOPIC,
        *,
        max_batch_events: int = 500,
        max_batch_bytes: int = 512 * 1024,
        linger_ms: int = 50,
        compression: str | None = "zstd",
        max_buffered_bytes: int = 64 * MiB,
        acks: int | str = "all",
        request_timeout_ms: int = 40_000,
        max_request_size: int = 1 * MiB,
        client_id: str = "blackbox-emitter",
        registry: SchemaRegistry | None = None,
        producer_options: Mapping[str, Any] | None = None,
    ) -> None:
        if max_batch_events < 1:
            raise ValueError("max_batch_events must be at least 1")
        if not 0 < max_batch_bytes <= max_request_size - _KAFKA_OVERHEAD:
            raise ValueError("max_batch_bytes must be positive and fit in max_request_size")
        if max_buffered_bytes < max_batch_bytes:
            raise ValueError("max_buffered_bytes must hold at least one batch (max_batch_bytes)")
        if linger_ms < 0:
            raise ValueError("linger_ms must not be negative")
        self.bootstrap_servers = bootstrap_servers
        self.topic = topic
        self.max_batch_events = max_batch_events
        self.max_batch_bytes = max_batch_bytes
        self.linger = linger_ms / 1000
        self.max_buffered_bytes = max_buffered_bytes
        self.compression = resolve_compression(compression)
        self._max_value_bytes = max_request_size - _KAFKA_OVERHEAD
        self._registry = registry or default_registry()
        self._producer_kwargs: dict[str, Any] = {
            "bootstrap_servers": bootstrap_servers,
            "client_id": client_id,
            "acks": acks,
            "compression_type": self.compression,
            "request_timeout_ms": request_timeout_ms,
            "max_request_size": max_request_size,
            # One producer batch per partition may then carry many session messages.
            "max_batch_size": max_request_size,
            "enable_idempotence": False,
            **(producer_options or {}),
        }
        self._producer: Any = None
        self._buffers: dict[str, _Buffer] = {}
        self._outbox: deque[_Message] = deque()
        self._inflight: set[asyncio.Future[Any]] = set()
        self._failures: list[FailedDelivery] = []
        # Bytes held by this emitter: buffer estimates, plus encoded sizes once sealed, until acked.
        self._pending_bytes = 0
        self._peak_pending_bytes = 0
        self._enqueued = 0  # messages ever put in the outbox
        self._handed_over = 0  # messages the sender has passed to the producer (or failed)
        self._events_emitted = 0
        self._events_delivered = 0
        self._messages_sent = 0
        self._bytes_sent = 0
        self._buffers_ready = asyncio.Event()
        self._outbox_ready = asyncio.Event()
        self._progress = asyncio.Event()
        self._linger_task: asyncio.Task[None] | None = None
        self._sender_task: asyncio.Task[None] | None = None
        self._closing = False
        self._closed = False

    # -- counters ---------------------------------------------------------------------------

    @property
    def events_emitted(self) -> int:
        """Events accepted by `emit`."""
        return self._events_emitted

    @property
    def messages_sent(self) -> int:
        """Kafka messages acknowledged by the broker."""
        return self._messages_sent

    @property
    def bytes_sent(self) -> int:
        """Message value bytes acknowledged by the broker (before compression)."""
        return self._bytes_sent

    def stats(self) -> EmitterStats:
        return EmitterStats(
            events_emitted=self._events_emitted,
            events_delivered=self._events_delivered,
            messages_handed_over=self._handed_over,
            messages_sent=self._messages_sent,
            bytes_sent=self._bytes_sent,
            buffered_bytes=self._pending_bytes,
            peak_buffered_bytes=self._peak_pending_bytes,
        )

    # -- life cycle -------------------------------------------------------------------------

    async def start(self) -> Emitter:
        if self._producer is not None:
            raise RuntimeError("emitter already started")
        producer = AIOKafkaProducer(**self._producer_kwargs)
        try:
            await producer.start()
        except Exception as exc:
            await producer.stop()
            raise EmitError(f"cannot start a Kafka producer for {self.bootstrap_servers}: {exc}") from exc
        self._producer = producer
        self._linger_task = asyncio.create_task(self._linger_loop(), name="blackbox-emitter-linger")
        self._sender_task = asyncio.create_task(self._send_loop(), name="blackbox-emitter-sender")
        logger.info(
            "emitter to %s topic %s started (compression %s)",
            self.bootstrap_servers,
            self.topic,
            self.compression,
        )
        return self

    async def close(self) -> None:
        """Deliver everything emitted, then stop; raises `EmitError` if anything was not delivered."""
        if self._producer is None or self._closed:
            return
        # Refuse new events first: one accepted during the final flush could be left behind.
        self._closing = True
        try:
            await self._flush()
        finally:
            self._closed = True
            self._outbox_ready.set()
            if self._linger_task is not None:
                # Safe to cancel: sealing a buffer is synchronous, so no batch is half moved.
                self._linger_task.cancel()
                await asyncio.gather(self._linger_task, return_exceptions=True)
            if self._sender_task is not None:
                await self._sender_task
            await self._producer.stop()
            logger.info("emitter closed: %s", self.stats())
        # A failure that arrived after flush() looked (none should) still reaches the caller.
        self._raise_failures()

    async def __aenter__(self) -> Emitter:
        return await self.start()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        # Also on an exception in the block: what was emitted is delivered, never dropped.
        await self.close()

    # -- emitting ---------------------------------------------------------------------------

    async def emit(self, event: Mapping[str, Any]) -> None:
        """Buffer one event; waits while the emitter holds more than ``max_buffered_bytes``.

        Raises `InvalidEvent` for an event that is not shaped like a session event, and
        `EmitError` for earlier events that were not delivered; either way ``event`` itself
        was not taken.
        """
        self._require_running()
        self._raise_failures()
        session_id = _check_event(event)
        size = estimate_size(event)
        while True:
            buffer = self._buffers.get(session_id)
            if buffer is not None and buffer.size + size > self.max_batch_bytes:
                self._seal(session_id)
                buffer = None
            needed = size if buffer is not None else size + _BATCH_OVERHEAD + len(session_id)
            # A lone event larger than the bound still goes through, else it would wait forever.
            if not self._pending_bytes or self._pending_bytes + needed <= self.max_buffered_bytes:
                break
            if self._pending_bytes == self._buffered_estimate():
                # Everything is parked in buffers, so no delivery would free space: send it now.
                self._seal_all()
            await self._wait_for_progress()
            self._raise_failures()
        if buffer is None:
            if not self._buffers:
                self._buffers_ready.set()
            buffer = self._buffers[session_id] = _Buffer(
                time.monotonic() + self.linger, _BATCH_OVERHEAD + len(session_id)
            )
            self._add_pending(buffer.size)
        buffer.events.append(event)
        buffer.size += size
        self._add_pending(size)
        self._events_emitted += 1
        if (
            len(buffer.events) >= self.max_batch_events
            or buffer.size >= self.max_batch_bytes
            or event["body"][0] == SESSION_END
            or self.linger == 0
        ):
            self._seal(session_id)
            # A gateway emitting in a tight loop never waits on anything else: without this
            # pause the sender task would not run until the memory bound is reached, so
            # batches would reach the broker in one burst at the end instead of as they fill.
            await asyncio.sleep(0)

    async def emit_many(self, events: Iterable[Mapping[str, Any]]) -> None:
        for event in events:
            await self.emit(event)

    async def flush(self) -> None:
        """Deliver every event emitted so far; raises `EmitError` for any that failed."""
        self._require_running()
        await self._flush()

    async def _flush(self) -> None:
        self._seal_all()
        target = self._enqueued
        while self._handed_over < target:
            await self._wait_for_progress()
        if self._inflight:
            await asyncio.wait(list(self._inflight))
        self._raise_failures()

    # -- internals --------------------------------------------------------------------------

    def _require_running(self) -> None:
        if self._producer is None:
            raise RuntimeError("emitter not started: use `async with Emitter(...)` or `await start()`")
        if self._closing:
            raise RuntimeError("emitter is closed")

    def _add_pending(self, n: int) -> None:
        self._pending_bytes += n
        self._peak_pending_bytes = max(self._peak_pending_bytes, self._pending_bytes)

    def _buffered_estimate(self) -> int:
        return sum(b.size for b in self._buffers.values())

    async def _wait_for_progress(self) -> None:
        # Callers re-check their condition after every wake-up; there is no await between a
        # check and this clear(), so no progress can be missed.
        self._progress.clear()
        await self._progress.wait()

    def _seal_all(self) -> None:
        for session_id in list(self._buffers):
            self._seal(session_id)

    def _seal(self, session_id: str) -> None:
        """Move a session's buffer into the outbox as encoded messages (synchronous on purpose)."""
        buffer = self._buffers.pop(session_id)
        self._pending_bytes -= buffer.size
        for message in self._encode(session_id, buffer.events):
            self._add_pending(len(message.value))
            self._outbox.append(message)
            self._enqueued += 1
        self._outbox_ready.set()
        # Sealing may have shrunk the pending bytes (estimates become real sizes) or failed.
        self._progress.set()

    def _encode(self, session_id: str, events: list[Mapping[str, Any]]) -> list[_Message]:
        try:
            value = self._registry.encode(BATCH_SCHEMA, {"session_id": session_id, "events": events})
        except SchemaError as exc:
            if len(events) == 1:
                self._fail(session_id, events, InvalidEvent(str(exc)))
                return []
            # Halve until the bad events are found, so the good ones of the batch still go out.
            return self._encode_halves(session_id, events)
        if len(value) > self._max_value_bytes:
            if len(events) == 1:
                self._fail(
                    session_id,
                    events,
                    EmitError(
                        f"one event is {len(value)} bytes encoded; the limit is {self._max_value_bytes}"
                        " (raise max_request_size, on the broker too)"
                    ),
                )
                return []
            return self._encode_halves(session_id, events)
        return [_Message(session_id, session_id.encode(), value, events)]

    def _encode_halves(self, session_id: str, events: list[Mapping[str, Any]]) -> list[_Message]:
        middle = len(events) // 2
        return self._encode(session_id, events[:middle]) + self._encode(session_id, events[middle:])

    def _fail(self, session_id: str, events: Sequence[Mapping[str, Any]], error: BaseException) -> None:
        failure = FailedDelivery(session_id, tuple(events), error)
        logger.warning("not delivered: %s", failure.describe())
        self._failures.append(failure)
        self._progress.set()

    def _raise_failures(self) -> None:
        if not self._failures:
            return
        failures, self._failures = self._failures, []
        invalid = all(isinstance(f.error, InvalidEvent) for f in failures)
        count = sum(len(f.events) for f in failures)
        lines = "; ".join(f.describe() for f in failures[:5])
        more = f"; and {len(failures) - 5} more" if len(failures) > 5 else ""
        error_type = InvalidEvent if invalid else EmitError
        error = error_type(f"{count} events not delivered to {self.topic}: {lines}{more}", failures)
        raise error from failures[0].error

    async def _linger_loop(self) -> None:
        # Buffers are created in time order and a dict keeps insertion order, so the first
        # buffer always has the earliest deadline: no heap, and only due buffers are touched.
        while True:
            if not self._buffers:
                self._buffers_ready.clear()
                await self._buffers_ready.wait()
                continue
            first = next(iter(self._buffers.values()))
            delay = first.deadline - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
                continue
            now = time.monotonic()
            due = []
            for session_id, buffer in self._buffers.items():
                if buffer.deadline > now:
                    break
                due.append(session_id)
            for session_id in due:
                self._seal(session_id)

    async def _send_loop(self) -> None:
        producer = self._producer
        while True:
            if not self._outbox:
                if self._closing:
                    return
                self._outbox_ready.clear()
                await self._outbox_ready.wait()
                continue
            message = self._outbox.popleft()
            try:
                # Returns once the message is in the producer's accumulator; the future
                # resolves on the broker's ack.
                future = await producer.send(self.topic, message.value, key=message.key)
            except Exception as exc:
                self._pending_bytes -= len(message.value)
                self._fail(message.session_id, message.events, exc)
            else:
                self._inflight.add(future)
                future.add_done_callback(partial(self._on_delivered, message))
            self._handed_over += 1
            self._progress.set()

    def _on_delivered(self, message: _Message, future: asyncio.Future[Any]) -> None:
        self._inflight.discard(future)
        self._pending_bytes -= len(message.value)
        if future.cancelled():
            self._fail(message.session_id, message.events, EmitError("delivery cancelled"))
        elif (error := future.exception()) is not None:
            self._fail(message.session_id, message.events, error)
        else:
            self._messages_sent += 1
            self._bytes_sent += len(message.value)
            self._events_delivered += len(message.events)
        self._progress.set()


def _check_event(event: Mapping[str, Any]) -> str:
    # Only the mistakes that would otherwise surface far from the caller, inside a batch; the
    # full schema check happens once, when the batch is encoded.
    try:
        session_id = event["session_id"]
        body = event["body"]
    except (KeyError, TypeError) as exc:
        raise InvalidEvent(f"not a session event (missing {exc})") from None
    if not isinstance(session_id, str) or not session_id:
        raise InvalidEvent("session_id must be a non-empty string: it is the Kafka key")
    if not (isinstance(body, tuple) and len(body) == 2 and isinstance(body[1], dict)):
        raise InvalidEvent(
            "body must be a (full record name, fields) tuple, e.g. "
            "('dev.blackbox.v1.TerminalOutput', {'data': b'...'})"
        )
    if body[0] not in _BODY_TYPES:
        raise InvalidEvent(f"unknown body type {body[0]!r}")
    return session_id


async def _emit_all(
    bootstrap: str,
    events: Iterable[Mapping[str, Any]],
    options: dict[str, Any],
) -> EmitterStats:
    async with Emitter(bootstrap, **options) as emitter:
        await emitter.emit_many(events)
    return emitter.stats()


def emit_events(bootstrap: str, events: Iterable[Mapping[str, Any]], **options: Any) -> EmitterStats:
    """Emit a list of events and wait for delivery (runs its own event loop; not from async code)."""
    return asyncio.run(_emit_all(bootstrap, events, options))
