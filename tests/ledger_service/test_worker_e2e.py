"""The ledger agent in the real seal worker (`blackbox worker`, where the ledger is on by default):
emitter → Tansu → worker (SIGKILLed mid-run and restarted) → archive and ledger. Every checkpoint
verifies, and the tree equals the tree an uninterrupted ledger builds over the same archive."""

from __future__ import annotations

import asyncio
import shutil
import time
from pathlib import Path
from typing import Any

import pytest

from ingest.demo import generate_load
from ingest.emitter import Emitter
from ledger.log import ShardLedger
from ledger.signer import Ed25519FileSigner
from replay.audit import audit_archive
from replay.proofs import LedgerView
from storage.objectstore import LocalWormStore, Retention
from tests.stack import Topics, WorkerProcess, wait_for_sealed

pytestmark = [pytest.mark.kafka, pytest.mark.clickhouse, pytest.mark.slow]

PARTITIONS = 4


async def emit(bootstrap: str, topic: str, sessions: list[list[Any]]) -> None:
    async with Emitter(bootstrap, topic, max_batch_events=50, linger_ms=10) as emitter:
        for events in sessions:
            await emitter.emit_many(events)


def covered(store: LocalWormStore, signer: Ed25519FileSigner, epoch: str) -> dict[int, int]:
    """Leaves under each shard's latest checkpoint."""
    view = LedgerView(store, signer.verifier())
    sizes = {}
    for partition in range(PARTITIONS):
        latest = view.latest(view.shard_origin(epoch, partition))
        sizes[partition] = latest.size if latest else 0
    return sizes


def test_a_killed_worker_leaves_a_verifiable_ledger_that_resumes_to_the_same_tree(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    topics = Topics.fresh(kafka_bootstrap, partitions=PARTITIONS)
    archive = tmp_path / "archive"
    worker = WorkerProcess(kafka_bootstrap, topics, tmp_path / "data", f"file://{archive}")
    sessions = [list(events) for events in generate_load(40, 150, seed=11)]
    expected = sum(len(events) + 1 for events in sessions)  # each session ends: one SEAL record more
    worker.start()
    try:
        asyncio.run(emit(kafka_bootstrap, topics.events, sessions[:20]))
        store = LocalWormStore(archive, retention=Retention("COMPLIANCE", 1))
        key = tmp_path / "data" / "keys" / "ledger.key"  # made by the dev worker
        deadline = time.monotonic() + 120
        while not key.exists() or not any(covered(store, Ed25519FileSigner.load(key), "e1").values()):
            assert time.monotonic() < deadline, worker.log()[-3000:]
            assert worker.alive(), worker.log()[-3000:]
            time.sleep(0.2)
        asyncio.run(emit(kafka_bootstrap, topics.events, sessions[20:]))
        time.sleep(0.5)
        worker.kill()  # SIGKILL, somewhere in sealing, archiving or ledgering
        signer = Ed25519FileSigner.load(key)
        audit_archive(store, signer.verifier())  # every checkpoint it left verifies

        worker.start()
        wait_for_sealed(kafka_bootstrap, topics.sealed, expected, alive=worker.alive)
        deadline = time.monotonic() + 120
        while sum(covered(store, signer, "e1").values()) < expected:
            assert time.monotonic() < deadline, worker.log()[-3000:]
            time.sleep(0.3)
        report = audit_archive(store, signer.verifier())
    finally:
        worker.stop()
    assert report.records == expected
    assert report.uncovered_records == 0
    assert report.root is not None

    # an uninterrupted ledger over the same archive builds the same trees
    fresh = shutil.copytree(archive, tmp_path / "fresh", ignore=shutil.ignore_patterns("ledger"))
    fresh_store = LocalWormStore(fresh, retention=None)
    for partition in range(PARTITIONS):
        shard = ShardLedger(fresh_store, signer, epoch="e1", partition=partition)
        shard.catch_up()
        rebuilt = shard.checkpoint()
        view = LedgerView(store, signer.verifier())
        assert rebuilt is not None
        assert view.checkpoint_at(shard.origin, rebuilt.size).note == rebuilt.note
