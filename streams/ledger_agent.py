"""The ledger in the seal worker: a thin Faust adapter around `ledger.log`.

`blackbox.sealed` messages only say "partition p has new archive objects"; the ledger reads the
archive itself (`ShardLedger.catch_up`), so a lost or repeated message changes nothing. A timer
also polls every shard, signs checkpoints of growing shards at most every
``checkpoint_interval_seconds`` (right away when one is due, to keep the event-to-checkpoint
latency low), republishes idle shards' checkpoints every ``idle_checkpoint_seconds`` (the same
bytes under the same key: a no-op unless a write was lost), and, on the worker that holds
partition 0 of the sealed topic, records the shards' checkpoints in the log of logs.

All ledger work is blocking I/O and hashing, so it runs in a thread, one call at a time, or in a
child process of its own (`LedgerProcess`) where the machine has a core to spare.
Failures never stop sealing: an outage is retried on the next message or tick, from the state
in the store; a `LedgerConflict` is logged as an incident and the shard is retried only slowly.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import multiprocessing.process
import signal
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, Protocol, cast

import faust

from ledger.log import LedgerError, RootLedger, ShardLedger, SignedCheckpoint
from ledger.signer import Ed25519FileSigner, InvalidKey, Signer
from storage.objectstore import ObjectStore, ObjectStoreError
from streams.decode import die_with_parent

logger = logging.getLogger(__name__)

ROOT_PARTITION = 0  # the worker holding this sealed-topic partition writes the log of logs
MAX_OBJECTS_PER_CALL = 200  # a long backlog is ledgered in slices, with a checkpoint between
_TICK_SECONDS = 0.25


@dataclass
class LedgerMetrics:
    """Counters for /metrics; written under the service lock, read by anyone."""

    leaves: int = 0
    checkpoints: int = 0
    root_checkpoints: int = 0
    errors: int = 0
    shards: int = 0
    last_checkpoint_at: float = 0.0

    def gauges(self) -> dict[str, float]:
        return {
            "blackbox_ledger_leaves_total": self.leaves,
            "blackbox_ledger_checkpoints_total": self.checkpoints,
            "blackbox_ledger_root_checkpoints_total": self.root_checkpoints,
            "blackbox_ledger_errors_total": self.errors,
            "blackbox_ledger_shards": self.shards,
            "blackbox_ledger_last_checkpoint_timestamp_seconds": self.last_checkpoint_at,
        }


@dataclass
class _Shard:
    ledger: ShardLedger
    checkpointed_size: int = -1  # -1: not known yet (a restart republishes once)
    last_checkpoint: float = float("-inf")
    last_catch_up: float = float("-inf")
    broken_until: float = float("-inf")


@dataclass
class LedgerService:
    """The ledgers of the sealed-topic partitions this worker holds. Synchronous, thread-safe."""

    store: ObjectStore
    signer: Signer
    epoch: str
    checkpoint_interval_seconds: float = 1.0
    idle_checkpoint_seconds: float = 60.0
    clock: Callable[[], float] = time.monotonic
    metrics: LedgerMetrics = field(default_factory=LedgerMetrics)

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._shards: dict[int, _Shard] = {}
        self._root = RootLedger(self.store, self.signer)
        self._owns_root = False
        self._root_dirty = True
        self._last_root = float("-inf")
        self._last_full_root = float("-inf")

    # -- assignment ---------------------------------------------------------------------------

    def assign(self, partitions: Iterable[int]) -> None:
        with self._lock:
            for partition in partitions:
                if partition not in self._shards:
                    ledger = ShardLedger(self.store, self.signer, epoch=self.epoch, partition=partition)
                    self._shards[partition] = _Shard(ledger)
                if partition == ROOT_PARTITION:
                    self._owns_root = True
            self.metrics.shards = len(self._shards)

    def revoke(self, partitions: Iterable[int]) -> None:
        """Another worker ledgers these now; what this one wrote stays valid (it is deterministic)."""
        with self._lock:
            for partition in partitions:
                self._shards.pop(partition, None)
                if partition == ROOT_PARTITION:
                    self._owns_root = False
            self.metrics.shards = len(self._shards)

    def origins(self) -> dict[int, str]:
        with self._lock:
            return {partition: shard.ledger.origin for partition, shard in self._shards.items()}

    # -- work ---------------------------------------------------------------------------------

    def on_sealed(self, partitions: Iterable[int]) -> None:
        """New archive objects were announced: ledger them, and checkpoint if one is due."""
        with self._lock:
            for partition in sorted(set(partitions)):
                shard = self._shards.get(partition)
                if shard is not None:
                    self._catch_up(shard)
                    self._checkpoint_if_due(shard, idle=False)
            self._update_root_if_due()

    def tick(self) -> None:
        """The timer: poll shards whose announcements may have been lost, checkpoint what is due."""
        with self._lock:
            now = self.clock()
            for shard in list(self._shards.values()):
                if now - shard.last_catch_up >= self.checkpoint_interval_seconds:
                    self._catch_up(shard)
                self._checkpoint_if_due(shard, idle=True)
            self._update_root_if_due()

    def _catch_up(self, shard: _Shard) -> None:
        now = self.clock()
        if now < shard.broken_until:
            return
        shard.last_catch_up = now
        try:
            while True:
                added = shard.ledger.catch_up(max_objects=MAX_OBJECTS_PER_CALL)
                self.metrics.leaves += added
                if added == 0 or not shard.ledger.pending_objects(limit=1):
                    return
                self._checkpoint(shard)  # a long backlog: make progress durable as it goes
        except Exception as exc:  # a failure here must never stop sealing
            self._failed(shard, "catch up", exc)

    def _checkpoint_if_due(self, shard: _Shard, *, idle: bool) -> None:
        now = self.clock()
        if now < shard.broken_until:
            return
        try:
            size = shard.ledger.size
        except Exception as exc:
            self._failed(shard, "resume", exc)
            return
        since = now - shard.last_checkpoint
        grown = size != shard.checkpointed_size and size > 0
        if (grown and since >= self.checkpoint_interval_seconds) or (
            idle and size > 0 and since >= self.idle_checkpoint_seconds
        ):
            self._checkpoint(shard)

    def _checkpoint(self, shard: _Shard) -> SignedCheckpoint | None:
        try:
            signed = shard.ledger.checkpoint()
        except Exception as exc:
            self._failed(shard, "checkpoint", exc)
            return None
        shard.last_checkpoint = self.clock()
        if signed is not None:
            if signed.size != shard.checkpointed_size:
                self.metrics.checkpoints += 1
                self._root_dirty = True
            shard.checkpointed_size = signed.size
            self.metrics.last_checkpoint_at = time.time()
        return signed

    def _update_root_if_due(self) -> None:
        if not self._owns_root:
            return
        now = self.clock()
        due = self._root_dirty and now - self._last_root >= self.checkpoint_interval_seconds
        idle = now - self._last_full_root >= self.idle_checkpoint_seconds
        if not due and not idle:
            return
        self._last_root = now
        if idle:
            self._last_full_root = now
        try:
            before = self._root.latest
            # Every shard of every epoch now and then; otherwise the ones that can grow.
            signed = self._root.update(None if idle else self.epoch)
        except Exception as exc:
            self.metrics.errors += 1
            logger.warning("log of logs: cannot update (%s); retrying later", exc)
            return
        self._root_dirty = False
        if signed is not None and (before is None or signed.size != before.size):
            self.metrics.root_checkpoints += 1

    def _failed(self, shard: _Shard, what: str, exc: Exception) -> None:
        self.metrics.errors += 1
        if isinstance(exc, LedgerError):
            # Not transient: the store holds what this ledger would not have written. An
            # incident for operators; retried rarely in case an operator repairs it.
            shard.broken_until = self.clock() + self.idle_checkpoint_seconds
            logger.error("ledger %s: cannot %s: %s", shard.ledger.origin, what, exc)
        elif isinstance(exc, ObjectStoreError):
            logger.warning("ledger %s: cannot %s (%s); retrying", shard.ledger.origin, what, exc)
        else:
            shard.broken_until = self.clock() + self.checkpoint_interval_seconds
            logger.exception("ledger %s: cannot %s", shard.ledger.origin, what)

    def gauges(self) -> dict[str, float]:
        return self.metrics.gauges()


class LedgerHandle(Protocol):
    """What the agent drives: a `LedgerService`, here or in a child process (`LedgerProcess`)."""

    def assign(self, partitions: Iterable[int]) -> None: ...

    def revoke(self, partitions: Iterable[int]) -> None: ...

    def on_sealed(self, partitions: Iterable[int]) -> None: ...

    def tick(self) -> None: ...

    def gauges(self) -> dict[str, float]: ...


def drive_ledger(app: faust.App, ledger: LedgerHandle, *, sealed_topic: str, tick_seconds: float) -> None:
    """The agent on ``sealed_topic`` and the timer, calling ``ledger`` one call at a time in a thread."""
    topic = app.topic(sealed_topic, key_serializer="raw", value_serializer="raw")

    @app.agent(topic, name="ledger", concurrency=1)
    async def ledger_agent(stream: Any) -> None:
        # Batches coalesce announcements: one archive listing per partition, not per message.
        async for events in stream.take_events(1000, within=0.05):
            partitions = {event.message.partition for event in events}
            await asyncio.to_thread(ledger.on_sealed, partitions)

    @app.timer(min(_TICK_SECONDS, tick_seconds))  # type: ignore[untyped-decorator]
    async def ledger_tick() -> None:
        await asyncio.to_thread(ledger.tick)

    async def assigned(sender: Any, assigned: Any, **kwargs: Any) -> None:
        mine = [tp.partition for tp in assigned if tp.topic == sealed_topic]
        if mine:
            await asyncio.to_thread(ledger.assign, mine)

    async def revoked(sender: Any, revoked: Any, **kwargs: Any) -> None:
        gone = [tp.partition for tp in revoked if tp.topic == sealed_topic]
        if gone:
            await asyncio.to_thread(ledger.revoke, gone)

    app.on_partitions_assigned.connect(cast(Any, assigned))
    app.on_partitions_revoked.connect(cast(Any, revoked))


class LedgerProcess:
    """A `LedgerService` in a child process, behind the same methods.

    The ledger reads archive objects back, hashes every record and writes tiles: ~37 µs of CPU
    per record that the seal worker's one Python process would otherwise share. ``make_service``
    runs in the child (it must pickle: a module-level function or a partial of one) and builds the
    service with a store client of its own. The child starts with this object, before Faust joins
    its group; one that dies is started again on the next call and resumes from what the store
    holds, as a restarted worker would. Gauges come back with every answer, so /metrics never
    waits on the child.
    """

    def __init__(self, make_service: Callable[[], LedgerService], *, log_level: int = logging.INFO) -> None:
        self._make_service = make_service
        self._log_level = log_level
        self._lock = threading.Lock()
        self._assigned: set[int] = set()
        self._gauges: dict[str, float] = LedgerMetrics().gauges()
        self._process: multiprocessing.process.BaseProcess | None = None
        self._connection: Connection | None = None
        self._start()

    def assign(self, partitions: Iterable[int]) -> None:
        partitions = list(partitions)
        self._call("assign", partitions, before=lambda: self._assigned.update(partitions))

    def revoke(self, partitions: Iterable[int]) -> None:
        partitions = list(partitions)
        self._call("revoke", partitions, before=lambda: self._assigned.difference_update(partitions))

    def on_sealed(self, partitions: Iterable[int]) -> None:
        self._call("on_sealed", list(partitions))

    def tick(self) -> None:
        self._call("tick")

    def gauges(self) -> dict[str, float]:
        return dict(self._gauges)

    @property
    def pid(self) -> int | None:
        """The child's process id (None between a death and the next call)."""
        return self._process.pid if self._process is not None else None

    def close(self) -> None:
        with self._lock:
            self._stop()

    def _call(self, method: str, *args: Any, before: Callable[[], None] | None = None) -> None:
        """Run ``method`` in the child. ``before`` updates what a restarted child is told it holds,
        under the same lock, so a restart in another thread never sees it half changed."""
        with self._lock:
            if before is not None:
                before()
            for attempt in (1, 2):
                try:
                    connection = self._connection or self._start()
                    connection.send((method, args))
                    failure, self._gauges = connection.recv()
                except (EOFError, OSError) as exc:
                    self._stop()
                    if attempt == 2:
                        raise LedgerError(f"the ledger process died twice on {method}: {exc}") from exc
                    logger.error("the ledger process died (%s); starting another", exc)
                    continue
                if failure is not None:
                    logger.error("ledger process: %s failed: %s", method, failure)
                return

    def _start(self) -> Connection:
        context = multiprocessing.get_context("spawn")
        parent, child = context.Pipe()
        arguments = (child, self._make_service, self._log_level)
        process = context.Process(target=_serve_ledger, args=arguments, name="ledger", daemon=True)
        process.start()
        child.close()
        self._process, self._connection = process, parent
        if self._assigned:  # a restarted child: the partitions this worker holds
            parent.send(("assign", (sorted(self._assigned),)))
            parent.recv()
        return parent

    def _stop(self) -> None:
        if self._connection is not None:
            self._connection.close()
        if self._process is not None:
            self._process.join(timeout=10)
            if self._process.is_alive():
                self._process.kill()
        self._process = self._connection = None


def _serve_ledger(connection: Connection, make_service: Callable[[], LedgerService], log_level: int) -> None:
    """The child's loop: one call at a time, each answered with (failure or None, gauges)."""
    die_with_parent()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the worker's to handle; it closes the pipe
    logging.basicConfig(level=log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    service = make_service()
    while True:
        try:
            method, args = connection.recv()
        except (EOFError, OSError):
            return  # the worker closed the pipe or is gone
        failure = None
        try:
            getattr(service, method)(*args)
        except Exception as exc:  # the service handles its own failures; this is a bug
            logger.exception("ledger %s failed", method)
            failure = f"{type(exc).__name__}: {exc}"
        connection.send((failure, service.gauges()))


def ledger_signer(key_file: Path, log_name: str, *, create: bool = False) -> Ed25519FileSigner:
    """The ledger's signing key from ``key_file`` (a note signer key, mode 0600), creating one when
    ``create`` (development only: production keys are provisioned, never made by the worker).

    The public key, all an auditor needs, is kept next to it as ``<key_file>.pub`` (a note
    verifier key, ``<name>+<key id>+<base64 key>``), written if missing.
    """
    if key_file.exists():
        signer = Ed25519FileSigner.load(key_file)
    elif create:
        key_file.parent.mkdir(parents=True, exist_ok=True)
        signer = Ed25519FileSigner.generate(key_file, log_name)
    else:
        raise InvalidKey(f"no ledger signing key at {key_file}")
    if signer.name != log_name:
        raise InvalidKey(f"{key_file}: key is named {signer.name!r}, the ledger's log name is {log_name!r}")
    public = public_key_file(key_file)
    if not public.exists():
        public.write_text(signer.vkey + "\n", encoding="ascii")
    return signer


def public_key_file(key_file: Path) -> Path:
    return key_file.with_name(key_file.name + ".pub")
