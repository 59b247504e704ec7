"""The seal step in a process of its own (`streams.sealer.SealProcess`) against the same step in
the worker's thread: the same records, alerts, dead letters, held messages and identity states;
and a seal process that fails or dies fails the batch instead of sealing without its state."""

from __future__ import annotations

import functools
import os
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from ingest.demo import generate_load
from masking.engine import MaskingEngine
from masking.event_masker import EventMasker
from masking.policy import load_default_policy
from risk import RiskScorer, StatefulScorer
from schemas import BATCH_SCHEMA, default_registry
from storage.index import ChdbIndex, Index
from storage.objectstore import LocalWormStore, Retention
from streams.behaviour_store import BehaviourStore
from streams.pipeline import BatchOutcome, HandedBatch, PipelineConfig, SealPipeline, SourceMessage
from streams.sealer import Holding, SealParts, SealProcess, SealProcessFailed, holding_of
from tests.eventdata import body, make_event
from tests.stack import read_archive, verify_all_chains

pytestmark = pytest.mark.clickhouse

REGISTRY = default_registry()
BLIND_KEY = b"k" * 32


def masking_and_scoring() -> SealParts:
    """The factory a seal process runs (module level: the child imports it by name)."""
    registry = default_registry()
    scorer = StatefulScorer()
    masker = EventMasker(MaskingEngine(load_default_policy(), BLIND_KEY))
    from streams.seal import SealStep  # noqa: PLC0415

    return SealParts(registry, SealStep(registry, masker=masker, scorer=scorer), scorer)


def broken_factory() -> SealParts:
    raise LookupError("no policy here")


def _message(partition: int, offset: int, session_id: str, events: list[dict[str, Any]]) -> SourceMessage:
    value = REGISTRY.encode(BATCH_SCHEMA, {"session_id": session_id, "events": events})
    return SourceMessage("events", partition, offset, session_id.encode(), value)


def _batches(seed: int = 3) -> list[list[SourceMessage]]:
    """Two batches over two partitions: generated sessions (emails in terminal output, queries,
    HTTP), a value split across two messages (held back in between), a duplicate, and junk."""
    first: list[tuple[int, str, list[dict[str, Any]]]] = []
    second: list[tuple[int, str, list[dict[str, Any]]]] = []
    for number, session in enumerate(generate_load(6, 30, seed=seed, start_us=1_790_000_000_000_000)):
        events = [dict(event) for event in session]
        session_id = events[0]["session_id"]
        first.append((number % 2, session_id, events[:15]))
        second.append((number % 2, session_id, events[15:]))
    split = "s-split"
    start = make_event(split, 0, body("TerminalOutput", data=b"mail to alice@exa"))
    rest = make_event(split, 1, body("TerminalOutput", data=b"mple.com sent\r\n"))
    first += [(0, split, [start]), (0, split, [start])]  # the gateway sent it twice
    second.append((0, split, [rest]))
    offsets = {0: 0, 1: 0}
    batches: list[list[SourceMessage]] = []
    for contents in (first, second):
        batch = []
        for partition, session_id, events in contents:
            batch.append(_message(partition, offsets[partition], session_id, events))
            offsets[partition] += 1
        if contents is first:
            batch.append(SourceMessage("events", 1, offsets[1], b"junk", b"not avro"))
            offsets[1] += 1
        batches.append(batch)
    return batches


def _run(
    seal: Any, store: LocalWormStore, index: Index, scorer: Any, *, overlapped: bool = False
) -> tuple[list[BatchOutcome], list[dict[str, Any]]]:
    """The batches through a pipeline, one after the other, or ``overlapped``: each next batch
    handed over while the one before is written (as the worker does with a seal process), and
    decoded ahead. Returns the outcomes and the identity states each batch changed."""
    pipeline = _pipeline(seal, store, index)
    behaviour = BehaviourStore(index, scorer)
    outcomes = []
    changes: list[dict[str, Any]] = []

    def taken(outcome: BatchOutcome) -> None:
        outcomes.append(outcome)
        changes.append(behaviour.scorer.take_changes())
        behaviour.save(changes[-1])

    batches = _batches()
    try:
        if overlapped:
            pipeline.decode_ahead([message for batch in batches[1:] for message in batch])
            later = iter(batches[1:])
            handed: HandedBatch | None = pipeline.hand_over(batches[0])
            while handed is not None:
                outcome, handed = pipeline.complete(handed, lambda: next(later, []))
                taken(outcome)
        else:
            for batch in batches:
                taken(pipeline.process(batch))
    finally:
        pipeline.close()
    return outcomes, changes


@pytest.fixture
def index(tmp_path: Path) -> Any:
    with ChdbIndex(tmp_path / "index") as opened:
        opened.migrate()
        yield opened


def _store(path: Path) -> LocalWormStore:
    return LocalWormStore(path, retention=Retention("COMPLIANCE", 1))


def _pipeline(seal: Any, store: LocalWormStore, index: Index, *, epoch: str = "e1") -> SealPipeline:
    return SealPipeline(REGISTRY, seal, store, index, PipelineConfig(retry_initial_seconds=0.01, epoch=epoch))


@pytest.mark.parametrize(
    ("in_process", "overlapped"),
    [(True, False), (True, True), (False, True)],
    ids=["seal-process", "seal-process-overlapped", "in-worker-overlapped"],
)
def test_a_seal_process_seals_as_the_step_in_the_worker_does(
    index: Index, tmp_path: Path, in_process: bool, overlapped: bool
) -> None:
    parts = masking_and_scoring()
    expected, expected_changes = _run(parts.step, _store(tmp_path / "a"), index, parts.scorer)
    with ChdbIndex(tmp_path / "index", database="other") as other:
        other.migrate()
        if in_process:
            process = SealProcess(masking_and_scoring, alerts=RiskScorer())
            outcomes, changes = _run(process, _store(tmp_path / "b"), other, process, overlapped=overlapped)
        else:
            local = masking_and_scoring()
            outcomes, changes = _run(
                local.step, _store(tmp_path / "b"), other, local.scorer, overlapped=overlapped
            )
        stored_there = other.query("SELECT count() AS n FROM identity_behaviour").to_pylist()[0]["n"]
    in_worker = read_archive(_store(tmp_path / "a"))
    in_process_archive = read_archive(_store(tmp_path / "b"))
    assert in_process_archive.records == in_worker.records
    assert len(in_process_archive.records) > 6 * 30  # every event, the split session and the seals
    masked = [value for _, value in in_process_archive.records if value["findings"]]
    assert masked, "the generated load has values to mask"
    assert b"alice@example.com" not in b"".join(raw for raw, _ in in_process_archive.records)
    for outcome, reference in zip(outcomes, expected, strict=True):
        assert outcome.records == reference.records
        assert outcome.duplicates == reference.duplicates
        assert outcome.alerts == reference.alerts
        assert outcome.held == reference.held
        assert [(d.source.offset, d.reason) for d in outcome.dead_letters] == [
            (d.source.offset, d.reason) for d in reference.dead_letters
        ]
    assert expected[0].held, "the split value holds its first message back"
    assert not expected[1].held
    assert expected[0].duplicates == 1
    assert [d.source.key for d in expected[0].dead_letters] == [b"junk"]
    # Batch by batch: a batch sealing beside the worker does not mix its changes into the last.
    assert changes == expected_changes
    assert all(changes), "scoring kept identity states"
    stored_here = index.query("SELECT count() AS n FROM identity_behaviour").to_pylist()[0]["n"]
    assert stored_there == stored_here > 0


def test_identity_states_are_read_through_the_worker(index: Index, tmp_path: Path) -> None:
    first = SealProcess(masking_and_scoring, alerts=RiskScorer())
    _, changes_by_batch = _run(first, _store(tmp_path / "a"), index, first)
    changes = {key: state for batch in changes_by_batch for key, state in batch.items()}
    asked: list[list[str]] = []
    second = SealProcess(masking_and_scoring, alerts=RiskScorer())
    try:
        store = BehaviourStore(index, second)

        def load_many(keys: list[str]) -> dict[str, Any]:
            asked.append(sorted(keys))
            return store.load_many(keys)

        second.use_loader(store.load, load_many)
        pipeline = _pipeline(second, _store(tmp_path / "b"), index, epoch="e2")
        pipeline.process(_batches(seed=4)[0])  # other sessions of the same identities
        again = second.take_changes()
        assert len(asked) == 1  # every identity of the batch, in one read
        assert set(again) <= set(asked[0])
        common = set(again) & set(changes)
        assert common
        # Their histories went on from the stored ones, which the child had never seen.
        assert all(again[key] != changes[key] for key in common)
    finally:
        second.close()


def test_a_killed_seal_process_fails_the_batch_and_every_later_call(index: Index, tmp_path: Path) -> None:
    process = SealProcess(masking_and_scoring, alerts=RiskScorer())
    pipeline = _pipeline(process, _store(tmp_path / "a"), index)
    try:
        assert process.pid is not None
        os.kill(process.pid, signal.SIGKILL)
        with pytest.raises(SealProcessFailed, match="exit"):
            pipeline.process(_batches()[0])
        with pytest.raises(SealProcessFailed, match="unusable"):
            process.holding("s-split")
        assert not list(_store(tmp_path / "a").list_keys(""))  # nothing archived without sealing
    finally:
        pipeline.close()


def test_which_records_alert_is_decided_in_the_worker_without_the_child() -> None:
    # Recovery asks it for every record it announces again: one pipe round trip each would be
    # seconds for a batch. The threshold is the policy's, so a dead child does not matter.
    step = masking_and_scoring().step
    process = SealProcess(masking_and_scoring, alerts=RiskScorer())
    try:
        assert process.pid is not None
        os.kill(process.pid, signal.SIGKILL)
        records = [
            {"event": make_event("s-alert", 0, identity_kind=kind), "risk": {"score": score, "reasons": []}}
            for kind in ("CI_JOB", "AI_AGENT", "SERVICE_ACCOUNT")
            for score in (0, 40, 70, 100)
        ] + [{"event": None, "risk": None}, {"event": make_event("s-alert", 1), "risk": None}]
        answers = [process.is_alert(record) for record in records]
        assert answers == [step.is_alert(record) for record in records]
        assert True in answers, "some of these records alert"
        assert False in answers, "and some do not"
    finally:
        process.close()


def test_a_seal_process_that_cannot_start_says_why_without_its_message() -> None:
    with pytest.raises(SealProcessFailed) as raised:
        SealProcess(broken_factory, alerts=RiskScorer())
    assert "LookupError" in str(raised.value)
    assert "no policy here" not in str(raised.value)


@pytest.mark.parametrize("in_process", [True, False], ids=["seal-process", "in-worker"])
def test_a_partition_revoked_while_its_batch_seals_is_left_to_its_next_owner(
    index: Index, tmp_path: Path, in_process: bool
) -> None:
    if in_process:
        process = SealProcess(masking_and_scoring, alerts=RiskScorer())
        seal: Any = process
        holding: Callable[[str], Holding] = process.holding
    else:
        step = masking_and_scoring().step
        seal, holding = step, functools.partial(holding_of, step)
    store = _store(tmp_path / "a")
    pipeline = _pipeline(seal, store, index)
    first, second = _batches()
    # In the revoked partition: a session the worker first sees in the batch sealing, its output
    # cut mid-value (the masker holds it back), and junk, whose dead letter is the next owner's.
    next_offset = max(message.offset for message in second if message.partition == 1) + 1
    fresh = make_event("s-fresh", 0, body("TerminalOutput", data=b"mail to bob@exa"))
    second.append(_message(1, next_offset, "s-fresh", [fresh]))
    second.append(SourceMessage("events", 1, next_offset + 1, b"junk", b"x"))
    try:
        outcome, handed = pipeline.complete(pipeline.hand_over(first), lambda: second)
        assert handed is not None
        written_before = read_archive(store).objects
        # The revocation comes between the batches, while the second one seals: the masker is
        # told to forget (after the job, in order) and nothing of partition 1 may be written.
        pipeline.forget_partition(1)
        outcome, handed = pipeline.complete(handed)
        assert handed is None
        assert outcome.records > 0
        assert not outcome.dead_letters
        assert {partition for partition, _ in outcome.sealed_batches} == {0}
        assert read_archive(store).objects == written_before + 1  # partition 0's object only
        # Nothing of the revoked partition's sessions stays in the masker, new ones included.
        assert not holding("s-fresh").output
        # The partition comes back: its messages are taken again, after recovery from the archive.
        again = pipeline.process([message for message in second if message.partition == 1])
        assert again.records > 0
        assert [letter.source.key for letter in again.dead_letters] == [b"junk"]
        contents = read_archive(store)
        keys = [(value["session_id"], value["index"]) for _, value in contents.records]
        assert len(keys) == len(set(keys)), "a record archived twice"
        assert verify_all_chains(contents, require_seal=False) == 8  # six sessions, split, fresh
        assert not holding("s-split").output  # the split value was released in order
        assert holding("s-fresh").output  # sealed again from its start, it holds its value again
    finally:
        pipeline.close()


def test_a_seal_job_given_up_in_flight_makes_the_process_unusable(index: Index, tmp_path: Path) -> None:
    process = SealProcess(masking_and_scoring, alerts=RiskScorer())
    pipeline = _pipeline(process, _store(tmp_path / "a"), index)
    first, second = _batches()
    try:
        pipeline.hand_over(first)  # never completed: its results would answer the next call
        with pytest.raises(SealProcessFailed, match="abandoned"):
            process.holding("s-split")
        with pytest.raises(SealProcessFailed, match="unusable"):
            pipeline.process(second)
    finally:
        pipeline.close()


@pytest.mark.parametrize("in_process", [True, False], ids=["seal-process", "in-worker"])
def test_a_next_batch_that_repeats_the_last_partitions_offsets_waits_for_its_write(
    index: Index, tmp_path: Path, in_process: bool
) -> None:
    """A redelivery of the last partition's messages in the next batch: only that partition's
    write tells recovery they are durable, so the next batch is handed over after it, and they
    are skipped as in batches that do not overlap."""
    first, second = _batches()
    batches = [first, [m for m in first if m.partition == 1] + second, second[:3]]
    reference = masking_and_scoring()
    pipeline = _pipeline(reference.step, _store(tmp_path / "a"), index)
    try:
        expected = [pipeline.process(batch) for batch in batches]
    finally:
        pipeline.close()
    with ChdbIndex(tmp_path / "index", database="other") as other:
        other.migrate()
        seal: Any = (
            SealProcess(masking_and_scoring, alerts=RiskScorer())
            if in_process
            else masking_and_scoring().step
        )
        pipeline = _pipeline(seal, _store(tmp_path / "b"), other)
        outcomes = []
        try:
            later = iter(batches[1:])
            handed: HandedBatch | None = pipeline.hand_over(batches[0])
            while handed is not None:
                outcome, handed = pipeline.complete(handed, lambda: next(later, []))
                outcomes.append(outcome)
        finally:
            pipeline.close()
    assert read_archive(_store(tmp_path / "b")).records == read_archive(_store(tmp_path / "a")).records
    assert [(o.records, o.duplicates, o.held, o.skipped_messages) for o in outcomes] == [
        (o.records, o.duplicates, o.held, o.skipped_messages) for o in expected
    ]
    assert expected[1].skipped_messages > 0  # the repeated messages are known as durable
