"""Decoding of event messages, in this process or in a pool of processes.

Decoding is a large cost of the seal worker (~6 µs per event with `schemas.event_reader`,
~11 µs with fastavro alone), and the worker is one Python process. A pool of decoder processes
takes it onto other cores: a child decodes a chunk of message values and sends back the events,
which costs ~2 µs per event to pickle on each side. `SealPipeline.decode_ahead` hands the
decoders the next batch while the worker seals the current one. Measured on 2 cores, before the
event reader: the worker alone 47 µs per event, with one decoder 37–39 µs (of which 29 in the
worker). When the cores are already busy (a broker and the gateways on the same machine) the
extra pickling is a net loss, so it stays off by default.
The rest of sealing stays in the worker, which owns the chain states and the index connection.
"""

from __future__ import annotations

import ctypes
import logging
import multiprocessing
import signal
import threading
from collections.abc import Sequence
from concurrent.futures import CancelledError, Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from typing import Any

from schemas import SchemaError, SchemaRegistry

logger = logging.getLogger(__name__)

Events = list[tuple[dict[str, Any], bytes]]


@dataclass(frozen=True)
class DecodedMessage:
    """A message's events with their canonical bytes, or why it cannot be sealed at all."""

    events: Events
    error: str | None = None


def die_with_parent() -> None:
    """Ask Linux to SIGTERM this process when its parent dies (a SIGKILLed worker, a crashed
    dev stack), so that no child outlives the process it served."""
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        logger.debug("no prctl here: child processes may outlive a killed parent")


def decode_value(registry: SchemaRegistry, value: bytes | None, max_message_bytes: int) -> DecodedMessage:
    data = value or b""
    if len(data) > max_message_bytes:
        return DecodedMessage([], f"oversized: {len(data)} bytes exceeds the {max_message_bytes}-byte limit")
    try:
        decoded = registry.decode_events(data)
    except SchemaError as exc:
        return DecodedMessage([], f"undecodable: {exc}")
    if decoded.batch_session_id is not None and any(
        event["session_id"] != decoded.batch_session_id for event, _ in decoded.events
    ):
        return DecodedMessage([], "invalid: a batch message mixes sessions")
    return DecodedMessage(decoded.events)


def decode_values(
    registry: SchemaRegistry, values: Sequence[bytes | None], max_message_bytes: int
) -> list[DecodedMessage]:
    return [decode_value(registry, value, max_message_bytes) for value in values]


_child_registry: SchemaRegistry | None = None


def _start_decoder(registry: SchemaRegistry) -> None:
    global _child_registry  # noqa: PLW0603  (one per decoder process, set once by the pool)
    die_with_parent()
    _child_registry = registry


def _decode_in_child(values: Sequence[bytes | None], max_message_bytes: int) -> list[DecodedMessage]:
    assert _child_registry is not None
    return decode_values(_child_registry, values, max_message_bytes)


class Decoder:
    """Decodes chunks of message values with the pipeline's registry; with ``processes`` > 0 in
    child processes (each gets the registry once, when it starts)."""

    def __init__(self, registry: SchemaRegistry, max_message_bytes: int, processes: int = 0) -> None:
        self._registry = registry
        self._max_message_bytes = max_message_bytes
        self._processes = processes
        self._pool: ProcessPoolExecutor | None = None
        self._pool_lock = threading.Lock()

    def _executor(self) -> ProcessPoolExecutor:
        with self._pool_lock:  # the agent submits ahead from its event loop, the pipeline from its thread
            if self._pool is not None and not _is_broken(self._pool):
                return self._pool
            broken, self._pool = self._pool, None
        if broken is not None:
            broken.shutdown(wait=False, cancel_futures=True)
        with self._pool_lock:
            return self._pool or self._start_pool()

    def _start_pool(self) -> ProcessPoolExecutor:
        # spawn, not fork: the worker has threads (Faust, chdb) that a fork would copy mid-flight
        self._pool = ProcessPoolExecutor(
            self._processes,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_start_decoder,
            initargs=(self._registry,),
        )
        return self._pool

    @property
    def in_processes(self) -> bool:
        return self._processes > 0

    def submit(self, values: Sequence[bytes | None]) -> Future[list[DecodedMessage]]:
        if self._processes <= 0:
            done: Future[list[DecodedMessage]] = Future()
            done.set_result(decode_values(self._registry, values, self._max_message_bytes))
            return done
        return self._executor().submit(_decode_in_child, list(values), self._max_message_bytes)

    def result(
        self, future: Future[list[DecodedMessage]], values: Sequence[bytes | None]
    ) -> list[DecodedMessage]:
        try:
            return future.result()
        except (BrokenProcessPool, CancelledError):
            # A decoder died (out of memory, killed), which breaks its pool and cancels the jobs
            # it had queued: decode here; the next submit starts a fresh pool. Only a broken pool
            # is replaced, never one started since for jobs submitted ahead.
            logger.error("a decoder process died; decoding this chunk in the worker")
            return decode_values(self._registry, values, self._max_message_bytes)

    def close(self) -> None:
        with self._pool_lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)


def _is_broken(pool: ProcessPoolExecutor) -> bool:
    # Set by the pool when one of its processes dies; the executor exposes no public flag.
    return bool(getattr(pool, "_broken", False))
