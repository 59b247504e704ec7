"""Per-identity behaviour state survives a worker's death: it lives in the index.

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
from storage.index import ChdbIndex, IndexStoreError
from storage.objectstore import LocalWormStore
from streams.behaviour_store import BehaviourStore
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


def _events(target: str, count: int) -> list[dict[str, Any]]:
    return [dict(event) for event in session(target, count, 1_700_000_000_000_000)]


def _reasons(risk: Mapping[str, Any] | None) -> set[str]:
    return {reason["rule_id"] for reason in risk["reasons"]} if risk else set()


def _stored_history(index: ChdbIndex) -> tuple[StatefulScorer, BehaviourStore]:
    """A migrated index holding one identity's history: 30 events on its usual target."""
    index.migrate()
    scorer = StatefulScorer()
    store = BehaviourStore(index, scorer)
    for event in _events("build-host", 30):
        scorer.score(event, [])
    store.save(scorer.take_changes())
    return scorer, store


@pytest.mark.clickhouse
def test_a_scorer_reads_back_what_another_stored_in_the_index(tmp_path: Path) -> None:
    with ChdbIndex(tmp_path / "index") as index:
        first, store = _stored_history(index)
        assert first.take_changes() == {}  # taken once
        first.score(_events("build-host", 1)[1], [])
        store.save(first.take_changes())  # a newer state of the same identity
        assert store.saved == 2

        restarted = StatefulScorer()
        BehaviourStore(index, restarted)
        assert FIRST_TARGET in _reasons(restarted.score(_events("reporting-db", 1)[0], []))
        state = restarted.state("|ci-nightly-report")
        assert state is not None
        assert state.events == 32 + 1 + 1  # the newest row, then this event
        assert FIRST_TARGET not in _reasons(StatefulScorer().score(_events("reporting-db", 1)[0], []))


@pytest.mark.clickhouse
def test_a_batchs_identities_are_read_back_in_one_query(tmp_path: Path) -> None:
    def of(principal: str, target: str, count: int) -> list[dict[str, Any]]:
        return [{**event, "identity": make_identity(principal, "CI_JOB")} for event in _events(target, count)]

    principals = [f"ci-job-{n}" for n in range(40)]
    with ChdbIndex(tmp_path / "index") as index:
        index.migrate()
        first = StatefulScorer()
        store = BehaviourStore(index, first)
        for principal in principals:
            for event in of(principal, "build-host", 30):
                first.score(event, [])
        store.save(first.take_changes())

        queries: list[str] = []
        real_query = index.query

        def counting(sql: str, parameters: Mapping[str, Any] | None = None) -> Any:
            queries.append(sql)
            return real_query(sql, parameters)

        index.query = counting  # type: ignore[method-assign,assignment]
        restarted = StatefulScorer()
        BehaviourStore(index, restarted)
        # The first event of each session names its identity; one newcomer has no stored state.
        batch = [of(principal, "reporting-db", 1)[0] for principal in [*principals, "ci-job-new"]]
        restarted.prepare([*batch, {"identity": None}])  # a malformed event is left to the seal step
        assert len(queries) == 1
        risks = [restarted.score(event, []) for event in batch]
        assert len(queries) == 1  # scoring found every identity in memory
        assert all(FIRST_TARGET in _reasons(risk) for risk in risks[:-1])
        assert FIRST_TARGET not in _reasons(risks[-1])  # a stranger: no history to compare with
        state = restarted.state("|ci-job-7")
        assert state is not None
        assert state.events == 32 + 1  # the stored history, then this event


@pytest.mark.clickhouse
def test_the_index_down_while_scoring_leaves_the_stored_history_as_it_was(tmp_path: Path) -> None:
    with ChdbIndex(tmp_path / "index") as index:
        _stored_history(index)

        real_query = index.query

        def down(sql: str, parameters: Mapping[str, Any] | None = None) -> Any:
            raise IndexStoreError("index unreachable")

        index.query = down  # type: ignore[method-assign,assignment]
        restarted = StatefulScorer()
        restarted_store = BehaviourStore(index, restarted)
        batch = _events("reporting-db", 1)
        restarted.prepare(batch)  # one identity, read in bulk
        restarted.score(batch[0], [])
        alone = StatefulScorer(loader=restarted_store.load)  # read one by one
        alone.score(batch[0], [])
        assert restarted.take_changes() == {}  # a fresh state must not replace the stored one
        assert alone.take_changes() == {}
        assert restarted.state("|ci-nightly-report") is None  # forgotten: read again next batch

        index.query = real_query  # type: ignore[method-assign]
        risk = restarted.score(_events("reporting-db", 1)[0], [])
        assert FIRST_TARGET in _reasons(risk)  # compared with the stored history again
        state = restarted.state("|ci-nightly-report")
        assert state is not None
        assert state.events == 32 + 1
