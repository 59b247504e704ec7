"""Ledger benchmarks: offline verification of a generated, ledgered archive, and the latency from
an event's emission to its being covered by a signed checkpoint.

.venv/bin/python bench/bench_verify.py [RECORDS] [--keep DIR]
.venv/bin/python bench/bench_verify.py --latency [--events N] [--rate EVENTS_PER_SECOND]

Builds an archive of RECORDS sealed records (default 1,000,000) directly with the archive
format and the hand-written SealedRecord encoder (real chains, real seal records, terminal
output of mixed sizes), ledgers it with `ledger.log.ShardLedger`, then times `audit_archive`.

Throughput is compared with raw ``hashlib.sha256`` in the same run, two ways:
  * per record: one ``sha256(record)`` per record, the least any verifier must do;
  * same hashing: exactly the SHA-256 calls the audit makes, over the same byte strings (each
    record, each leaf entry, each tree node), in tight loops. The ratio says how much of the
    audit's time is hashing rather than Python bookkeeping.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import logging
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

from ledger.chain import GENESIS
from ledger.log import (
    RootLedger,
    ShardLedger,
    entry_for_record,
    latest_key,
    ledger_prefix,
    log_key_id,
    shard_origin,
    split_object,
)
from ledger.merkle import root
from ledger.signer import Ed25519FileSigner
from replay.audit import audit_archive
from schemas import EVENT_SCHEMA, SEALED_SCHEMA, default_registry
from schemas.bodies import SESSION_END, TERMINAL_OUTPUT
from schemas.sealed import encode_sealed_record
from storage.archive import build_object, iter_blocks
from storage.objectstore import LocalWormStore

REGISTRY = default_registry()
T0 = 1_700_000_000_000_000
EPOCH = "bench"
PARTITIONS = 4
RECORDS_PER_BLOCK = 50
BLOCKS_PER_OBJECT = 20
EVENTS_PER_SESSION = 99  # then an end event and a SEAL record: 101 records a session


def _event(session_id: str, seq: int, data: bytes | None) -> dict[str, object]:
    body = (
        (TERMINAL_OUTPUT, {"data": data})
        if data is not None
        else (SESSION_END, {"reason": "closed", "exit_code": 0})
    )
    return {
        "event_id": f"{session_id}-{seq}",
        "session_id": session_id,
        "seq": seq,
        "event_time": T0 + seq * 1000,
        "gateway": {"id": "gw-1", "product": "bench", "version": "1"},
        "identity": {"principal": "ci-deploy", "kind": "CI_JOB", "issuer": None, "groups": []},
        "target": {"name": "orders-db", "kind": "SSH", "host": None, "database": None},
        "attributes": {},
        "body": body,
    }


class SessionWriter:
    """One session's records, chained exactly as the seal step chains them."""

    def __init__(self, session_id: str, sizes: list[int], rng: random.Random) -> None:
        self.session_id = session_id
        self.index = 0
        self.head = GENESIS
        self.seq = 0
        self.sealed = False
        self._sizes = sizes
        self._rng = rng

    def _record(self, kind: str, event: dict[str, object] | None, **extra: object) -> bytes:
        event_bytes = REGISTRY.encode_body(EVENT_SCHEMA, event) if event is not None else None
        value = {
            "session_id": self.session_id,
            "index": self.index,
            "kind": kind,
            "prev_hash": self.head,
            "source_seq": self.seq if event is not None else None,
            "event_digest": hashlib.sha256(event_bytes).digest() if event_bytes else None,
            "event": event,
            "gap": None,
            "seal": None,
            "findings": [],
            "risk": None,
            **extra,
        }
        raw = encode_sealed_record(value, event_bytes)
        self.head = hashlib.sha256(raw).digest()
        self.index += 1
        return raw

    def records(self, count: int) -> list[bytes]:
        out = []
        for _ in range(count):
            if self.sealed:
                break
            if self.seq < EVENTS_PER_SESSION:
                size = self._rng.choice(self._sizes)
                data = self._rng.randbytes(size)
                out.append(self._record("EVENT", _event(self.session_id, self.seq, data)))
                self.seq += 1
            elif self.seq == EVENTS_PER_SESSION:
                out.append(self._record("EVENT", _event(self.session_id, self.seq, None)))
                self.seq += 1
            else:
                seal = {
                    "reason": "closed",
                    "record_count": self.index,
                    "last_seq": self.seq - 1,
                    "head_hash": self.head,
                }
                out.append(self._record("SEAL", None, seal=seal))
                self.sealed = True
        return out


def generate(directory: Path, records: int, seed: int = 7) -> int:
    """Write archive objects holding ``records`` records over PARTITIONS partitions; return bytes."""
    rng = random.Random(seed)
    sizes = [16, 32, 48, 64, 80, 120, 200, 400, 800, 1500]  # terminal output chunks
    schema = REGISTRY.canonical_json(SEALED_SCHEMA)
    written = total_bytes = 0
    per_partition = records // PARTITIONS
    for partition in range(PARTITIONS):
        folder = directory / EPOCH / f"p{partition:05d}"
        folder.mkdir(parents=True)
        open_sessions: list[SessionWriter] = []
        count = number = offset = 0
        while count < per_partition:
            while len(open_sessions) < BLOCKS_PER_OBJECT:
                open_sessions.append(SessionWriter(f"s{partition}-{number}", sizes, rng))
                number += 1
            blocks = []
            for session in open_sessions:
                block = session.records(min(RECORDS_PER_BLOCK, per_partition - count))
                if block:
                    blocks.append(block)
                    count += len(block)
                if count >= per_partition:
                    break
            open_sessions = [session for session in open_sessions if not session.sealed]
            key = f"{EPOCH}/p{partition:05d}/{offset:020d}-{offset + 99:020d}.avro"
            offset += 100
            data = build_object(key, schema, blocks).data
            # Plain files: generating is not what is measured, and LocalWormStore reads them as its own.
            (directory / key).write_bytes(data)
            total_bytes += sum(len(raw) for block in blocks for raw in block)
        written += count
    return total_bytes


def ledger(store: LocalWormStore, signer: Ed25519FileSigner, objects_per_checkpoint: int = 25) -> None:
    for partition in range(PARTITIONS):
        shard = ShardLedger(store, signer, epoch=EPOCH, partition=partition)
        while shard.pending_objects(limit=1):
            shard.catch_up(max_objects=objects_per_checkpoint)
            shard.checkpoint()
    RootLedger(store, signer).update()


def _best(runs: int, work: Callable[[], object]) -> float:
    """The fastest of a few runs: the machine is shared, and noise only ever adds time."""
    best = float("inf")
    for _ in range(runs):
        started = time.perf_counter()
        work()
        best = min(best, time.perf_counter() - started)
    return best


def raw_baselines(store: LocalWormStore, runs: int) -> tuple[float, float, int]:
    """(seconds for one sha256 per record, seconds for the audit's own hash calls, records)."""
    records: list[bytes] = []
    leaves_by_shard: list[list[bytes]] = []
    for partition in range(PARTITIONS):
        shard: list[bytes] = []
        for key in store.list_keys(f"{EPOCH}/p{partition:05d}/"):
            for block in split_object(store.get(key)):
                records.extend(block.records)
                shard.extend(b"\x00" + entry_for_record(raw).encode() for raw in block.records)
        leaves_by_shard.append(shard)
    sha = hashlib.sha256

    def per_record() -> None:
        for raw in records:
            sha(raw).digest()

    def same_hashing() -> None:
        # what the audit hashes: every record, every leaf entry, and the tree once (verify_tiles
        # hashes each full tile up to its parent's entry, level by level)
        for raw in records:
            sha(raw).digest()
        for entries in leaves_by_shard:
            level = [sha(entry).digest() for entry in entries]
            while len(level) >= 256:
                level = [root(level[start : start + 256]) for start in range(0, len(level) - 255, 256)]

    return _best(runs, per_record), _best(runs, same_hashing), len(records)


class CheckpointWatcher(threading.Thread):
    """Polls every shard's latest checkpoint and notes when each size was first seen."""

    def __init__(self, store: LocalWormStore, origins: list[str], period: float = 0.05) -> None:
        super().__init__(daemon=True)
        self.store = store
        self.origins = origins
        self.period = period
        self.seen: dict[str, list[tuple[int, float]]] = {origin: [] for origin in origins}
        self.stopping = threading.Event()

    def run(self) -> None:
        known = dict.fromkeys(self.origins, "")
        while not self.stopping.is_set():
            for origin in self.origins:
                prefix = f"{ledger_prefix(origin)}checkpoint/"
                key = latest_key(self.store, prefix, known[origin])
                if key is not None and key != known[origin]:
                    known[origin] = key
                    self.seen[origin].append((int(key[len(prefix) :]), time.time()))
            time.sleep(self.period)

    def covered_at(self, origin: str, leaf: int) -> float | None:
        return next((at for size, at in self.seen[origin] if size > leaf), None)

    def total(self) -> int:
        return sum(seen[-1][0] for seen in self.seen.values() if seen)


async def emit_steadily(bootstrap: str, topic: str, events: int, rate: float) -> int:
    """Sessions of 50 events (each ended), sent at ``rate`` events/s with their emission time."""
    from ingest.emitter import Emitter  # noqa: PLC0415

    sent = sessions = 0
    interval = 0.01
    async with Emitter(bootstrap, topic) as emitter:
        started = time.monotonic()
        while sent < events:
            due = min(events, int((time.monotonic() - started) * rate) + 1)
            while sent < due:
                session_id, seq = f"lat-{sent // 50}", sent % 50
                now_us = time.time_ns() // 1000
                event = _event(session_id, seq, b"$ make deploy\r\n")
                event["event_time"] = now_us
                await emitter.emit(event)
                if seq == 49:
                    end = _event(session_id, 50, None)
                    end["event_time"] = now_us
                    await emitter.emit(end)
                    sessions += 1
                sent += 1
            await asyncio.sleep(interval)
        await emitter.flush()
    return sent + sessions


def _start_dev_stack(base: Path) -> tuple[subprocess.Popen[bytes], str]:
    """`blackbox dev --no-demo` as a user starts it; returns the process and its broker address."""
    from blackbox.broker import free_port  # noqa: PLC0415

    env = {k: v for k, v in os.environ.items() if not k.startswith("BLACKBOX_")}
    command = [sys.executable, "-m", "blackbox.cli", "dev", "--no-demo", "--data-dir", str(base)]
    with (base / "dev.log").open("ab") as log:
        stack = subprocess.Popen(
            [*command, "--port", str(free_port()), "--partitions", str(PARTITIONS)],
            env=env,
            stdout=log,
            stderr=log,
        )
    deadline = time.monotonic() + 90
    while not (base / "stack.json").exists():
        if time.monotonic() > deadline or stack.poll() is not None:
            raise RuntimeError(f"the dev stack did not start; see {base / 'dev.log'}")
        time.sleep(0.1)
    return stack, str(json.loads((base / "stack.json").read_text())["bootstrap"])


def _warm_up(bootstrap: str, store: LocalWormStore) -> str:
    """One session through the stack before the clock starts (the consumer group settles); returns
    the epoch the dev stack archives under."""
    from ingest.emitter import Emitter  # noqa: PLC0415

    async def emit() -> None:
        async with Emitter(bootstrap, "blackbox.events") as emitter:
            await emitter.emit_many([_event("warm-up", 0, b"$ true\r\n"), _event("warm-up", 1, None)])

    asyncio.run(emit())
    deadline = time.monotonic() + 120
    while not (keys := [key for key in store.list_keys("") if key.endswith(".avro")]):
        if time.monotonic() > deadline:
            raise RuntimeError("the warm-up session was not archived in 120 s")
        time.sleep(0.1)
    return keys[0].split("/", 1)[0]


def measure_latency(base: Path, events: int, rate: float) -> None:
    """Emission → covered by a signed checkpoint, in the dev stack (`blackbox dev`) as shipped:
    masking, scoring, chaining, archive, index and the ledger agent, default intervals."""
    stack, bootstrap = _start_dev_stack(base)
    try:
        store = LocalWormStore(base / "archive", retention=None)
        epoch = _warm_up(bootstrap, store)
        signer = Ed25519FileSigner.load(base / "keys" / "ledger.key")
        origins = [shard_origin(signer.name, log_key_id(signer), epoch, p) for p in range(PARTITIONS)]
        watcher = CheckpointWatcher(store, origins)
        watcher.start()
        warm_up_records = 3  # two events and the SEAL
        records = asyncio.run(emit_steadily(bootstrap, "blackbox.events", events, rate))
        expected = warm_up_records + records + records // 51  # + a SEAL record per session
        deadline = time.monotonic() + 120
        while watcher.total() < expected:
            if time.monotonic() > deadline:
                raise RuntimeError(f"only {watcher.total()} of {expected} records covered; see dev.log")
            time.sleep(0.2)
        watcher.stopping.set()
        latencies: list[float] = []
        for partition, origin in enumerate(origins):
            leaf = 0  # leaves are the archive's records in key order: the ledger's own order
            for key in store.list_keys(f"{epoch}/p{partition:05d}/"):
                for _, block in iter_blocks(store.get(key)):
                    for record in block:
                        event = record.value["event"]
                        covered = watcher.covered_at(origin, leaf)
                        if event is not None and covered is not None and event["session_id"] != "warm-up":
                            latencies.append(covered - int(event["event_time"]) / 1e6)
                        leaf += 1
        latencies.sort()

        def pct(p: float) -> float:
            return latencies[min(len(latencies) - 1, int(p * len(latencies)))]

        print(
            f"latency from emission to a signed checkpoint in `blackbox dev`, {len(latencies):,} events"
            f" at {rate:.0f}/s (default batch window and checkpoint interval; polled every 50 ms):"
        )
        print(
            f"  p50 {pct(0.50):.2f}s  p90 {pct(0.90):.2f}s  p99 {pct(0.99):.2f}s  max {latencies[-1]:.2f}s"
            "  targets p50 <= 2 s, p99 <= 10 s"
        )
    finally:
        stack.send_signal(signal.SIGINT)
        try:
            stack.wait(60)
        except subprocess.TimeoutExpired:
            stack.kill()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("records", nargs="?", type=int, default=1_000_000)
    parser.add_argument("--keep", type=Path, help="build (or reuse) the archive here instead of a temp dir")
    parser.add_argument("--runs", type=int, default=3, help="timed runs of each measurement; the best counts")
    parser.add_argument(
        "--latency", action="store_true", help="measure emission-to-checkpoint latency instead"
    )
    parser.add_argument("--events", type=int, default=4000, help="--latency: events to emit")
    parser.add_argument("--rate", type=float, default=200.0, help="--latency: events per second")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    if args.latency:
        base = Path(tempfile.mkdtemp(prefix="bench-latency-"))
        try:
            measure_latency(base, args.events, args.rate)
        finally:
            shutil.rmtree(base, ignore_errors=True)
        return

    base = args.keep or Path(tempfile.mkdtemp(prefix="bench-verify-"))
    archive = base / "archive"
    key_file = base / "ledger.key"
    try:
        if not archive.exists():
            started = time.perf_counter()
            record_bytes = generate(archive, args.records)
            print(
                f"generated {args.records:,} records ({record_bytes / 1e6:.0f} MB) "
                f"in {time.perf_counter() - started:.1f}s"
            )
            signer = Ed25519FileSigner.generate(key_file, "bench.blackbox")
            store = LocalWormStore(archive, retention=None)
            started = time.perf_counter()
            ledger(store, signer)
            seconds = time.perf_counter() - started
            print(
                f"ledgered in {seconds:.1f}s ({args.records / seconds:,.0f} records/s, "
                "each tile, bundle and marker fsynced)"
            )
        signer = Ed25519FileSigner.load(key_file)
        store = LocalWormStore(archive, retention=None)

        reports = []
        audit_seconds = _best(args.runs, lambda: reports.append(audit_archive(store, signer.verifier())))
        jobs = min(PARTITIONS, os.cpu_count() or 1)
        parallel_seconds = _best(
            args.runs, lambda: reports.append(audit_archive(store, signer.verifier(), jobs=jobs))
        )
        report = reports[-1]
        per_record, same_hashing, records = raw_baselines(store, args.runs)
        megabytes = report.record_bytes / 1e6
        print(
            f"audit: {report.records:,} records, {report.sessions:,} sessions, {megabytes:.0f} MB of records"
        )
        print(f"  raw sha256, one call per record: {per_record:.2f}s ({megabytes / per_record:.0f} MB/s)")
        print(
            f"  raw sha256, the audit's own calls (records, leaf entries, tree nodes): {same_hashing:.2f}s "
            f"({megabytes / same_hashing:.0f} MB/s)"
        )
        for label, seconds in (("1 process", audit_seconds), (f"{jobs} processes", parallel_seconds)):
            print(
                f"  offline verification, {label} (best of {args.runs}): {seconds:.2f}s "
                f"({report.records / seconds:,.0f} records/s, {megabytes / seconds:.0f} MB/s); "
                f"vs raw per record {per_record / seconds:.2f}, "
                f"vs the same hash calls {same_hashing / seconds:.2f}"
            )
        print("  targets: 1,000,000 records in <= 10 s; throughput >= 0.5 of raw")
        assert records == report.records
    finally:
        if args.keep is None:
            shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
