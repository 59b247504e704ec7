"""The ledger service behind the Faust agent, on a fake clock: what it ledgers and signs when
announcements arrive, when they are lost, when shards are revoked, and when the store fails."""

from __future__ import annotations

import os
import shutil
import signal
import stat
from functools import partial
from pathlib import Path

import pytest

from ledger.log import LedgerConflict, LedgerError, ShardLedger, ledger_prefix
from ledger.signer import Ed25519FileSigner, InvalidKey, Verifier
from replay.audit import audit_archive
from replay.proofs import LedgerView
from storage.objectstore import LocalWormStore, ObjectStoreUnavailable
from streams.ledger_agent import LedgerProcess, LedgerService, ledger_signer, public_key_file
from tests.ledger_service.archives import (
    EPOCH,
    LOG_NAME,
    PARTITIONS,
    archive_keys,
    copy_tree,
    object_records,
    open_store,
)

pytestmark = pytest.mark.clickhouse  # the archives come from the real pipeline on chdb


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def growing(ledgered_template: Path, tmp_path: Path) -> tuple[Path, list[Path]]:
    """An archive with rounds 0-2 and no ledger, and the objects rounds 3-5 will add."""
    work = copy_tree(ledgered_template / "stage1", tmp_path / "work") / "archive"
    shutil.rmtree(work / "ledger")
    final = ledgered_template / "final" / "archive"
    later = [
        final / key
        for partition in PARTITIONS
        for key in archive_keys(open_store(final), partition)
        if not (work / key).exists()
    ]
    return work, later


def seal_more(archive: Path, objects: list[Path]) -> None:
    """What the seal worker does meanwhile: new archive objects."""
    for source in objects:
        target = archive / source.relative_to(source.parents[2])
        shutil.copyfile(source, target)


def service(store: LocalWormStore, signer: Ed25519FileSigner, clock: Clock) -> LedgerService:
    return LedgerService(
        store, signer, EPOCH, checkpoint_interval_seconds=2.0, idle_checkpoint_seconds=60.0, clock=clock
    )


def latest_sizes(store: LocalWormStore, signer: Ed25519FileSigner) -> dict[str, int]:
    view = LedgerView(store, signer.verifier())
    sizes = {}
    for origin in [view.root_origin, *(view.shard_origin(EPOCH, p) for p in PARTITIONS)]:
        latest = view.latest(origin)
        sizes[origin.rsplit("/", 1)[-1]] = latest.size if latest else 0
    return sizes


def test_announcements_are_ledgered_and_checkpointed_at_most_every_interval(
    growing: tuple[Path, list[Path]], signer: Ed25519FileSigner
) -> None:
    archive, later = growing
    store, clock = open_store(archive), Clock()
    ledger = service(store, signer, clock)
    ledger.assign(PARTITIONS)
    ledger.on_sealed([0, 1])
    assert latest_sizes(store, signer) == {"root": 2, "p00000": 300, "p00001": 300}

    seal_more(archive, later[:1])  # partition 0's round 3
    clock.now += 0.5
    ledger.on_sealed([0])
    assert latest_sizes(store, signer)["p00000"] == 300  # ledgered, not signed yet: too soon
    assert ledger.metrics.leaves == 700

    clock.now += 1.6
    ledger.tick()
    assert latest_sizes(store, signer) == {"root": 3, "p00000": 400, "p00001": 300}
    assert ledger.metrics.checkpoints == 3
    audit_archive(store, signer.verifier())


def test_a_lost_announcement_is_made_up_for_by_the_timer(
    growing: tuple[Path, list[Path]], signer: Ed25519FileSigner
) -> None:
    archive, later = growing
    store, clock = open_store(archive), Clock()
    ledger = service(store, signer, clock)
    ledger.assign(PARTITIONS)
    seal_more(archive, later)  # nothing announced at all
    clock.now += 2.0
    ledger.tick()
    assert latest_sizes(store, signer) == {"root": 2, "p00000": 606, "p00001": 606}
    report = audit_archive(store, signer.verifier())
    assert report.records == 1212


def test_idle_shards_are_republished_without_new_objects(
    growing: tuple[Path, list[Path]], signer: Ed25519FileSigner
) -> None:
    archive, _ = growing
    store, clock = open_store(archive), Clock()
    ledger = service(store, signer, clock)
    ledger.assign([0])
    ledger.tick()
    origin = LedgerView(store, signer.verifier()).shard_origin(EPOCH, 0)
    checkpoint = archive / ledger_prefix(origin) / "checkpoint" / f"{300:020d}"
    checkpoint.chmod(stat.S_IWUSR | stat.S_IRUSR)
    checkpoint.unlink()  # a write that was lost
    clock.now += 10
    ledger.tick()
    assert not checkpoint.exists()  # idle, not due yet
    clock.now += 60
    ledger.tick()
    assert checkpoint.exists()


def test_a_revoked_shard_is_left_to_its_new_owner(
    growing: tuple[Path, list[Path]], signer: Ed25519FileSigner
) -> None:
    archive, later = growing
    store, clock = open_store(archive), Clock()
    ledger = service(store, signer, clock)
    ledger.assign(PARTITIONS)
    ledger.tick()
    ledger.revoke([0])
    seal_more(archive, later)
    clock.now += 5
    ledger.tick()
    sizes = latest_sizes(store, signer)
    assert (sizes["p00000"], sizes["p00001"]) == (300, 606)
    assert sizes["root"] == 2  # partition 0 went, and the log of logs with it

    new_owner = service(store, signer, clock)
    new_owner.assign([0])
    new_owner.tick()
    assert latest_sizes(store, signer) == {"root": 4, "p00000": 606, "p00001": 606}
    audit_archive(store, signer.verifier())


class OutageStore(LocalWormStore):
    def __init__(self, root: Path) -> None:
        super().__init__(root, retention=None)
        self.down = False

    def put_if_absent(self, key: str, data: bytes) -> bool:
        if self.down:
            raise ObjectStoreUnavailable("503 Slow Down")
        return super().put_if_absent(key, data)


def test_an_outage_is_waited_out(growing: tuple[Path, list[Path]], signer: Ed25519FileSigner) -> None:
    archive, _ = growing
    store, clock = OutageStore(archive), Clock()
    ledger = service(store, signer, clock)
    ledger.assign(PARTITIONS)
    store.down = True
    ledger.tick()
    assert ledger.metrics.errors > 0
    assert latest_sizes(store, signer)["p00000"] == 0
    store.down = False
    clock.now += 2
    ledger.tick()
    assert latest_sizes(store, signer) == {"root": 2, "p00000": 300, "p00001": 300}


def test_a_conflict_is_an_incident_not_a_crash(
    growing: tuple[Path, list[Path]], signer: Ed25519FileSigner, caplog: pytest.LogCaptureFixture
) -> None:
    archive, later = growing
    store, clock = open_store(archive), Clock()
    ledger = service(store, signer, clock)
    ledger.assign([1])
    ledger.tick()
    origin = LedgerView(store, signer.verifier()).shard_origin(EPOCH, 1)
    seal_more(archive, later)
    # someone wrote the next full tile before the ledger did
    store.put_if_absent(f"{ledger_prefix(origin)}tile/0/001", bytes(8192))
    clock.now += 2
    ledger.tick()
    assert "cannot catch up" in caplog.text
    assert "already holds" in caplog.text
    assert latest_sizes(store, signer)["p00001"] == 300
    with pytest.raises(LedgerConflict):
        ShardLedger(store, signer, epoch=EPOCH, partition=1).catch_up()


def test_the_signing_key_is_made_once_in_development(tmp_path: Path) -> None:
    key = tmp_path / "ledger" / "ledger.key"
    with pytest.raises(InvalidKey):
        ledger_signer(key, LOG_NAME)
    made = ledger_signer(key, LOG_NAME, create=True)
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert Verifier.load(public_key_file(key)) == made.verifier()
    assert ledger_signer(key, LOG_NAME).vkey == made.vkey
    with pytest.raises(InvalidKey):
        ledger_signer(key, "another.name")


def _service_in_child(archive: Path, key_file: Path) -> LedgerService:
    """What `LedgerProcess` runs in its child (module level: it is pickled)."""
    store = LocalWormStore(archive, retention=None)
    return LedgerService(store, Ed25519FileSigner.load(key_file), EPOCH, checkpoint_interval_seconds=0.01)


def _service_that_cannot_restart(broken: Path, archive: Path, key_file: Path) -> LedgerService:
    if broken.exists():
        raise RuntimeError("the ledger cannot start")
    return _service_in_child(archive, key_file)


def test_a_child_that_dies_while_restarting_is_a_ledger_error(
    growing: tuple[Path, list[Path]], ledgered_template: Path, tmp_path: Path
) -> None:
    """A replacement child that dies while it is told its partitions is retried once, then
    reported as a LedgerError, like any other death (it was a bare EOFError)."""
    archive, _ = growing
    broken = tmp_path / "broken"
    ledger = LedgerProcess(
        partial(_service_that_cannot_restart, broken, archive, ledgered_template / "ledger.key")
    )
    try:
        ledger.assign(PARTITIONS)
        broken.touch()
        assert ledger.pid is not None
        os.kill(ledger.pid, signal.SIGKILL)
        with pytest.raises(LedgerError, match="died twice"):
            ledger.on_sealed(PARTITIONS)
    finally:
        ledger.close()


def test_a_ledger_in_a_child_process_ledgers_and_survives_the_childs_death(
    growing: tuple[Path, list[Path]], ledgered_template: Path
) -> None:
    archive, later = growing
    signer = Ed25519FileSigner.load(ledgered_template / "ledger.key")
    ledger = LedgerProcess(partial(_service_in_child, archive, ledgered_template / "ledger.key"))
    try:
        ledger.assign(PARTITIONS)
        ledger.on_sealed(PARTITIONS)
        first = ledger.gauges()
        assert first["blackbox_ledger_leaves_total"] > 0
        assert first["blackbox_ledger_checkpoints_total"] == len(PARTITIONS)

        assert ledger.pid is not None
        os.kill(ledger.pid, signal.SIGKILL)  # the child dies between two calls
        seal_more(archive, later)
        ledger.on_sealed(PARTITIONS)  # a new child, told its partitions again, catches up
        ledger.tick()
    finally:
        ledger.close()
    store = open_store(archive)
    records = {
        f"p{partition:05d}": sum(
            len(block) for key in archive_keys(store, partition) for block in object_records(store, key)
        )
        for partition in PARTITIONS
    }
    sizes = latest_sizes(store, signer)
    assert {shard: sizes[shard] for shard in records} == records  # everything, after the restart too
    report = audit_archive(store, signer.verifier())
    assert report.uncovered_records == 0
