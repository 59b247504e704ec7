"""Helpers for end-to-end tests: a seal worker as a real process, and readers of what it wrote."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer

from ledger.chain import verify_chain
from schemas import default_registry
from storage.archive import iter_blocks
from storage.index import ChdbIndex
from storage.objectstore import ObjectStore
from tests.fixtures.kafka import create_topics

REGISTRY = default_registry()


@dataclass
class Topics:
    events: str
    sealed: str
    dlq: str
    group: str

    @classmethod
    def fresh(cls, bootstrap: str, partitions: int = 4) -> Topics:
        run = uuid.uuid4().hex[:8]
        topics = cls(f"events-{run}", f"sealed-{run}", f"dlq-{run}", f"seal-{run}")
        create_topics(bootstrap, topics.events, topics.sealed, topics.dlq, partitions=partitions)
        return topics


@dataclass
class WorkerProcess:
    """`blackbox worker` in a subprocess, configured only through BLACKBOX_* variables."""

    bootstrap: str
    topics: Topics
    data_dir: Path
    archive_url: str
    extra_env: dict[str, str] = field(default_factory=dict)
    process: subprocess.Popen[bytes] | None = None

    @property
    def index_dir(self) -> Path:
        return self.data_dir / "index"

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("BLACKBOX_")}
        env.update(
            {
                "BLACKBOX_ENVIRONMENT": "dev",
                "BLACKBOX_KAFKA_BOOTSTRAP": self.bootstrap,
                "BLACKBOX_EVENTS_TOPIC": self.topics.events,
                "BLACKBOX_SEALED_TOPIC": self.topics.sealed,
                "BLACKBOX_DLQ_TOPIC": self.topics.dlq,
                "BLACKBOX_CONSUMER_GROUP": self.topics.group,
                "BLACKBOX_KAFKA_SESSION_TIMEOUT_SECONDS": "6",
                "BLACKBOX_BATCH_WITHIN_SECONDS": "0.2",
                "BLACKBOX_ARCHIVE_URL": self.archive_url,
                "BLACKBOX_INDEX_URL": f"chdb://{self.index_dir}",
                "BLACKBOX_DATA_DIR": str(self.data_dir),
                "BLACKBOX_S3_ACCESS_KEY_ID": "blackbox-test",
                "BLACKBOX_S3_SECRET_ACCESS_KEY": "blackbox-test-secret",
            }
        )
        env.update(self.extra_env)
        return env

    def start(self) -> WorkerProcess:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        log = (self.data_dir / "worker.log").open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "blackbox.cli", "worker"],
            env=self.env(),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        log.close()
        return self

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)

    def stop(self) -> int:
        if self.process is None:
            return 0
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        return int(self.process.returncode)

    def log(self) -> str:
        path = self.data_dir / "worker.log"
        return path.read_text(errors="replace") if path.exists() else ""


async def read_topic(
    bootstrap: str, topic: str, done: Any, limit_seconds: float, alive: Any = None
) -> list[Any]:
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        auto_offset_reset="earliest",
        group_id=None,
        enable_auto_commit=False,
    )
    await consumer.start()
    messages: list[Any] = []
    deadline = time.monotonic() + limit_seconds
    try:
        while not done(messages):
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"{topic}: condition not met after {limit_seconds:.0f}s ({len(messages)} messages)"
                )
            if alive is not None and not alive():
                raise RuntimeError(f"the worker died while waiting on {topic}")
            batches = await consumer.getmany(timeout_ms=500)
            for batch in batches.values():
                messages.extend(batch)
    finally:
        await consumer.stop()
    return messages


def sealed_records(messages: list[Any]) -> list[bytes]:
    """The record hashes announced on the sealed topic, in order."""
    hashes: list[bytes] = []
    for message in messages:
        for block in REGISTRY.decode(message.value).value["blocks"]:
            hashes.extend(block["record_hashes"])
    return hashes


def wait_for_sealed(
    bootstrap: str, topic: str, expected_records: int, timeout: float = 180.0, alive: Any = None
) -> list[bytes]:
    """Records published on the sealed topic once ``expected_records`` distinct ones arrived.

    A record appears there only after its archive object and index rows are durable, so this
    is the end-to-end signal. After a crash a batch may be published twice; count distinct.
    """
    messages = asyncio.run(
        read_topic(
            bootstrap, topic, lambda m: len(set(sealed_records(m))) >= expected_records, timeout, alive
        )
    )
    return sealed_records(messages)


def read_dlq(bootstrap: str, topic: str, expected: int, timeout: float = 60.0) -> list[Any]:
    return asyncio.run(read_topic(bootstrap, topic, lambda m: len(m) >= expected, timeout))


@dataclass
class ArchiveContents:
    records: list[tuple[bytes, dict[str, Any]]]
    objects: int

    def by_session(self) -> dict[str, list[tuple[bytes, dict[str, Any]]]]:
        sessions: dict[str, list[tuple[bytes, dict[str, Any]]]] = {}
        for raw, value in self.records:
            sessions.setdefault(value["session_id"], []).append((raw, value))
        for records in sessions.values():
            records.sort(key=lambda record: record[1]["index"])
        return sessions


def read_archive(store: ObjectStore) -> ArchiveContents:
    records: list[tuple[bytes, dict[str, Any]]] = []
    objects = 0
    for key in store.list_keys(""):
        if not key.endswith(".avro"):
            continue
        objects += 1
        for _, block in iter_blocks(store.get(key)):
            records.extend((record.raw, record.value) for record in block)
    return ArchiveContents(records, objects)


def verify_all_chains(contents: ArchiveContents, *, require_seal: bool = True) -> int:
    sessions = contents.by_session()
    for session_id, records in sessions.items():
        verify_chain(session_id, records, require_seal=require_seal)
    return len(sessions)


def index_counts(index_dir: Path) -> dict[str, Any]:
    with ChdbIndex(index_dir) as index:
        events = index.query(
            "SELECT count() AS records, uniqExact(session_id, record_index) AS distinct_records,"
            " countIf(kind = 'EVENT') AS events, uniqExactIf(event_id, event_id != '') AS distinct_event_ids"
            " FROM events"
        ).to_pylist()[0]
        sessions = index.query(
            "SELECT count() AS sessions, sum(sealed) AS sealed FROM sessions FINAL"
        ).to_pylist()[0]
    return {**events, **sessions}


def chunks(items: list[Any], size: int) -> Iterator[list[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]
