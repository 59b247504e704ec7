"""Per-identity behaviour state survives a worker's death: it lives in a Faust table.

The scorer notices an identity's first access to a target only once the identity has a history
(`first_target_after` events). A worker that lost its state on restart would see a stranger and
stay silent; one that recovered the table says "first access" for a new target and nothing for a
known one.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from ingest.emitter import Emitter
from ingest.events import SessionBuilder, make_gateway, make_identity, make_target
from risk.scorer import StatefulScorer
from storage.objectstore import LocalWormStore
from tests.stack import Topics, WorkerProcess, read_archive, wait_for_sealed

FIRST_TARGET = "behaviour.first_target"
IDENTITY = make_identity("ci-nightly-report", "CI_JOB")
GATEWAY = make_gateway("gw-test", "blackbox-test", "1")


def session(target: str, commands: int, start_us: int) -> list[Any]:
    clock = iter(range(start_us, start_us + 10_000_000, 1000))
    builder = SessionBuilder(None, IDENTITY, make_target(target, "SSH"), GATEWAY, lambda: next(clock))
    events = [builder.start("nightly report")]
    events += [builder.input(b"make report\r") for _ in range(commands)]
    events.append(builder.end("closed", exit_code=0))
    return events


def reasons_by_target(store: LocalWormStore) -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for _, record in read_archive(store).records:
        event, risk = record["event"], record.get("risk")
        if event is not None and risk:
            found.setdefault(event["target"]["name"], set()).update(r["rule_id"] for r in risk["reasons"])
    return found


async def emit(bootstrap: str, topic: str, events: list[Any]) -> None:
    async with Emitter(bootstrap, topic, max_batch_events=50, linger_ms=5) as emitter:
        await emitter.emit_many(events)


@pytest.mark.kafka
@pytest.mark.clickhouse
@pytest.mark.slow
def test_a_restarted_worker_remembers_each_identitys_history(kafka_bootstrap: str, tmp_path: Path) -> None:
    topics = Topics.fresh(kafka_bootstrap, partitions=2)
    archive = tmp_path / "archive"
    worker = WorkerProcess(kafka_bootstrap, topics, tmp_path / "data", f"file://{archive}")
    store = LocalWormStore(archive, retention=None)
    start_us = time.time_ns() // 1000 - 3_600_000_000
    history = session("build-host", 30, start_us)  # 32 events: past first_target_after (20)
    worker.start()
    try:
        asyncio.run(emit(kafka_bootstrap, topics.events, history))
        wait_for_sealed(kafka_bootstrap, topics.sealed, len(history) + 1, alive=worker.alive)
        time.sleep(1.0)  # the changelog write is sent before the batch is acknowledged; let it land
        worker.kill()  # SIGKILL: no orderly shutdown to save anything

        worker.start()
        known = session("build-host", 3, start_us + 600_000_000)
        new = session("reporting-db", 3, start_us + 700_000_000)
        asyncio.run(emit(kafka_bootstrap, topics.events, known + new))
        total = len(history) + 1 + len(known) + 1 + len(new) + 1
        wait_for_sealed(kafka_bootstrap, topics.sealed, total, timeout=120, alive=worker.alive)
    finally:
        worker.stop()
    reasons = reasons_by_target(store)
    assert FIRST_TARGET in reasons.get("reporting-db", set()), reasons
    assert FIRST_TARGET not in reasons.get("build-host", set()), reasons


class _Table:
    """A stand-in for the table's load path in the unit tests below."""

    def __init__(self) -> None:
        self.rows: dict[str, Mapping[str, Any]] = {}

    def load(self, key: str) -> Mapping[str, Any] | None:
        return self.rows.get(key)


def _events(target: str, count: int) -> list[dict[str, Any]]:
    return [dict(event) for event in session(target, count, 1_700_000_000_000_000)]


def test_a_scorer_loads_missing_identities_and_hands_back_what_changed() -> None:
    table = _Table()
    first = StatefulScorer(loader=table.load)
    for event in _events("build-host", 30):
        first.score(event, [])
    changes = first.take_changes()
    assert list(changes) == ["|ci-nightly-report"]  # identity_key: issuer|principal
    assert first.take_changes() == {}  # taken once
    table.rows.update(changes)

    restarted = StatefulScorer(loader=table.load)
    risk = restarted.score(_events("reporting-db", 1)[0], [])
    assert risk is not None
    assert FIRST_TARGET in {reason["rule_id"] for reason in risk["reasons"]}
    cold = StatefulScorer()
    cold_risk = cold.score(_events("reporting-db", 1)[0], [])
    assert cold_risk is None or FIRST_TARGET not in {reason["rule_id"] for reason in cold_risk["reasons"]}


def test_another_workers_state_replaces_a_cached_one_unless_this_one_has_unsaved_changes() -> None:
    scorer = StatefulScorer()
    events = _events("build-host", 30)
    scorer.score(events[0], [])
    (key,) = scorer.take_changes()
    elsewhere = StatefulScorer()
    for event in events:
        elsewhere.score(event, [])
    theirs = elsewhere.take_changes()[key]

    scorer.adopt(key, theirs)
    scorer.score(_events("build-host", 1)[1], [])  # adoption is applied before the next event
    state = scorer.state(key)
    assert state is not None
    assert state.events == theirs["events"] + 1

    scorer.score(_events("build-host", 1)[1], [])  # a change not yet taken...
    scorer.adopt(key, theirs)
    scorer.score(_events("build-host", 1)[1], [])
    state = scorer.state(key)
    assert state is not None
    assert state.events == theirs["events"] + 3  # ...is kept: ours is stored later and wins
