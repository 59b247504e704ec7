"""Tampering with a sealed, ledgered archive, each way the issue lists, is caught by the offline
audit with its exact location: log, leaf, session, record, object or path, and the check."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from ledger.checkpoint import Checkpoint, sign_checkpoint
from ledger.log import ObjectMarker, OriginSigner, marker_key, position_key, read_record_head
from ledger.signer import Ed25519FileSigner, Verifier
from replay.audit import audit_archive, audit_session
from replay.proofs import LedgerView, VerificationFailed
from schemas import SEALED_SCHEMA
from storage.archive import build_object
from tests.ledger_service.archives import (
    EPOCH,
    LOG_NAME,
    REGISTRY,
    archive_keys,
    object_records,
    open_store,
    overwrite,
    remove,
    rewrite_object,
)

pytestmark = pytest.mark.clickhouse  # the archives come from the real pipeline on chdb


def audit(archive: Path, public_key: Verifier, kept: bytes | None = None) -> VerificationFailed:
    with pytest.raises(VerificationFailed) as caught:
        audit_archive(open_store(archive), public_key, kept_checkpoint=kept)
    return caught.value


def origin_of(archive: Path, public_key: Verifier, partition: int) -> str:
    return LedgerView(open_store(archive), public_key).shard_origin(EPOCH, partition)


def leaf_of(archive: Path, origin: str, key: str, session_id: str, index: int) -> int:
    marker = ObjectMarker.decode(open_store(archive).get(marker_key(origin, key)))
    leaf = marker.leaf_of(session_id, index)
    assert leaf is not None
    return leaf


@pytest.fixture
def public_key(signer: Ed25519FileSigner) -> Verifier:
    return signer.verifier()


def test_the_untouched_archive_verifies(archive: Path, public_key: Verifier) -> None:
    report = audit_archive(open_store(archive), public_key)
    # per partition: 4 sessions × 150 events, 3 of them ended (an end event and a SEAL record each)
    assert [shard.records for shard in report.shards] == [606, 606]
    assert (report.sessions, report.sealed_sessions) == (8, 6)
    assert all(shard.uncovered_records == 0 for shard in report.shards)
    assert report.root is not None
    assert report.root.size > 0


def test_shards_verified_in_processes_give_the_same_report(archive: Path, public_key: Verifier) -> None:
    alone = audit_archive(open_store(archive), public_key)
    parallel = audit_archive(open_store(archive), public_key, jobs=2)
    assert parallel.shards == alone.shards
    assert (parallel.sessions, parallel.sealed_sessions) == (alone.sessions, alone.sealed_sessions)


def test_a_failure_in_a_process_is_reported_whole(archive: Path, public_key: Verifier) -> None:
    store = open_store(archive)
    key = archive_keys(store, 1)[0]
    blocks = object_records(store, key)
    del blocks[0][5]
    rewrite_object(store, key, blocks)
    with pytest.raises(VerificationFailed) as caught:
        audit_archive(store, public_key, jobs=2)
    failure = caught.value
    assert failure.check == "archive.record_identity"
    assert (failure.origin, failure.object_key, failure.record_index) == (
        origin_of(archive, public_key, 1),
        key,
        5,
    )
    assert failure.describe() == audit(archive, public_key).describe()


def test_a_byte_changed_inside_a_record(archive: Path, public_key: Verifier) -> None:
    store = open_store(archive)
    key = archive_keys(store, 1)[2]
    blocks = object_records(store, key)
    record = blocks[1][7]
    head = read_record_head(record)
    edited = bytearray(record)
    edited[-10] ^= 0x01  # inside the event: same length, same session, index and kind
    blocks[1][7] = bytes(edited)
    rewrite_object(store, key, blocks)

    failure = audit(archive, public_key)
    origin = origin_of(archive, public_key, 1)
    assert failure.check == "archive.record_hash"
    assert (failure.origin, failure.object_key) == (origin, key)
    assert (failure.session_id, failure.record_index) == (head.session_id, head.index)
    assert failure.leaf == leaf_of(archive, origin, key, head.session_id, head.index)


def test_a_record_deleted(archive: Path, public_key: Verifier) -> None:
    store = open_store(archive)
    key = archive_keys(store, 0)[1]
    blocks = object_records(store, key)
    head = read_record_head(blocks[2][4])
    del blocks[2][4]
    rewrite_object(store, key, blocks)

    failure = audit(archive, public_key)
    origin = origin_of(archive, public_key, 0)
    assert failure.check == "archive.record_identity"
    assert (failure.session_id, failure.record_index, failure.object_key) == (
        head.session_id,
        head.index,
        key,
    )
    assert failure.leaf == leaf_of(archive, origin, key, head.session_id, head.index)
    assert f"record {head.index + 1}" in failure.detail  # what the archive has there instead


def test_two_records_swapped(archive: Path, public_key: Verifier) -> None:
    store = open_store(archive)
    key = archive_keys(store, 0)[3]
    blocks = object_records(store, key)
    head = read_record_head(blocks[0][10])
    blocks[0][10], blocks[0][11] = blocks[0][11], blocks[0][10]
    rewrite_object(store, key, blocks)

    failure = audit(archive, public_key)
    assert failure.check == "archive.record_identity"
    assert (failure.session_id, failure.record_index) == (head.session_id, head.index)
    assert failure.leaf == leaf_of(
        archive, origin_of(archive, public_key, 0), key, head.session_id, head.index
    )


def test_a_whole_session_removed(archive: Path, public_key: Verifier) -> None:
    store = open_store(archive)
    victim = "sess-p1-2"
    for key in archive_keys(store, 1):
        blocks = object_records(store, key)
        kept = [block for block in blocks if read_record_head(block[0]).session_id != victim]
        rewrite_object(store, key, kept)

    failure = audit(archive, public_key)
    first_key = archive_keys(store, 1)[0]
    assert failure.check == "archive.record_identity"
    assert (failure.session_id, failure.record_index) == (victim, 0)
    assert failure.leaf == leaf_of(archive, origin_of(archive, public_key, 1), first_key, victim, 0)


def test_the_archive_of_a_shard_truncated(archive: Path, public_key: Verifier) -> None:
    store = open_store(archive)
    last = archive_keys(store, 0)[-1]
    first_lost = ObjectMarker.decode(store.get(marker_key(origin_of(archive, public_key, 0), last)))
    remove(archive / last)

    failure = audit(archive, public_key)
    assert failure.check == "archive.missing"
    assert failure.origin == origin_of(archive, public_key, 0)
    assert failure.leaf == first_lost.first_leaf
    assert failure.session_id == first_lost.blocks[0][0]


def test_a_shard_rolled_back_with_its_log(archive: Path, public_key: Verifier) -> None:
    """The archive objects and the checkpoints after some point are removed together: the shard is
    self-consistent again, but the log of logs recorded the checkpoints that are gone."""
    store = open_store(archive)
    origin = origin_of(archive, public_key, 1)
    view = LedgerView(store, public_key)
    checkpoints = view.checkpoint_keys(origin)
    keep = view.checkpoint_at(origin, int(checkpoints[0].rsplit("/", 1)[-1]))
    named = store.get(position_key(origin, keep.size)).decode()
    for key in archive_keys(store, 1):
        if key > named:
            remove(archive / key)
    for key in checkpoints[1:]:
        remove(archive / key)

    failure = audit(archive, public_key)
    assert failure.check == "root.shard_checkpoint"
    assert failure.origin == origin
    assert failure.leaf is not None
    assert failure.leaf > keep.size


def test_a_whole_shard_dropped(archive: Path, public_key: Verifier) -> None:
    origin = origin_of(archive, public_key, 0)
    shutil.rmtree(archive / EPOCH / "p00000")
    shutil.rmtree(archive / "ledger" / origin)
    failure = audit(archive, public_key)
    assert (failure.check, failure.origin) == ("root.shard_checkpoint", origin)
    assert "no checkpoints at all" in failure.detail


def test_a_tile_replaced(archive: Path, public_key: Verifier) -> None:
    origin = origin_of(archive, public_key, 1)
    tile = archive / "ledger" / origin / "tile" / "0" / "001"
    overwrite(tile, bytes(reversed(tile.read_bytes())))

    failure = audit(archive, public_key)
    assert failure.check == "tile.parent_hash"
    assert failure.origin == origin
    assert failure.path == f"ledger/{origin}/tile/0/001"


def test_an_entry_bundle_replaced(archive: Path, public_key: Verifier) -> None:
    origin = origin_of(archive, public_key, 0)
    bundle = archive / "ledger" / origin / "tile" / "entries" / "000"
    other = archive / "ledger" / origin_of(archive, public_key, 1) / "tile" / "entries" / "000"
    overwrite(bundle, other.read_bytes())

    failure = audit(archive, public_key)
    assert failure.check == "bundle.leaf_hash"
    assert (failure.origin, failure.leaf, failure.path) == (origin, 0, f"ledger/{origin}/tile/entries/000")


def test_a_deleted_entry_bundle_fails_a_session_audit(archive: Path, public_key: Verifier) -> None:
    # Scanning for a session reads every entry bundle of every shard; a full bundle that is gone
    # is a reported failure, not a crash of the audit.
    origin = origin_of(archive, public_key, 0)
    remove(archive / "ledger" / origin / "tile" / "entries" / "000")

    with pytest.raises(VerificationFailed) as caught:
        audit_session(open_store(archive), public_key, "sess-p0-0")
    failure = caught.value
    assert failure.check == "bundle.missing"
    assert (failure.origin, failure.path) == (origin, "tile/entries/000")


def test_a_checkpoint_re_signed_with_another_key(archive: Path, public_key: Verifier, tmp_path: Path) -> None:
    store = open_store(archive)
    origin = origin_of(archive, public_key, 0)
    view = LedgerView(store, public_key)
    key = view.checkpoint_keys(origin)[-1]
    genuine = view.checkpoint_at(origin, int(key.rsplit("/", 1)[-1])).checkpoint
    forged_root = Checkpoint(genuine.origin, genuine.size, bytes(32))
    impostor = Ed25519FileSigner.generate(tmp_path / "impostor.key", LOG_NAME)
    overwrite(archive / key, sign_checkpoint(forged_root, OriginSigner(impostor, origin)))

    failure = audit(archive, public_key)
    assert failure.check == "checkpoint.note_unknown_key"
    assert (failure.origin, failure.path) == (origin, key)


def test_the_archive_rolled_back_to_an_older_consistent_state(
    ledgered_template: Path, public_key: Verifier, tmp_path: Path
) -> None:
    """A whole earlier copy of the archive and its logs verifies on its own; only a checkpoint the
    auditor kept from a later audit shows that it was rolled back."""
    later = audit_archive(open_store(ledgered_template / "final" / "archive"), public_key)
    assert later.root is not None
    kept = later.root.note

    older = shutil.copytree(ledgered_template / "stage1" / "archive", tmp_path / "older")
    assert audit_archive(open_store(older), public_key).records < later.records  # self-consistent

    failure = audit(older, public_key, kept=kept)
    assert failure.check == "consistency.rollback"
    assert failure.origin == later.root.checkpoint.origin
    assert failure.leaf is not None
    assert failure.leaf < later.root.size


def test_a_kept_shard_checkpoint_also_catches_a_rollback(
    ledgered_template: Path, public_key: Verifier
) -> None:
    store = open_store(ledgered_template / "final" / "archive")
    view = LedgerView(store, public_key)
    latest = view.latest(view.shard_origin(EPOCH, 1))
    assert latest is not None
    failure = audit(ledgered_template / "stage1" / "archive", public_key, kept=latest.note)
    assert (failure.check, failure.origin) == ("consistency.rollback", latest.checkpoint.origin)


def test_a_kept_checkpoint_of_the_same_log_passes(ledgered_template: Path, public_key: Verifier) -> None:
    earlier = audit_archive(open_store(ledgered_template / "stage1" / "archive"), public_key)
    assert earlier.root is not None
    report = audit_archive(
        open_store(ledgered_template / "final" / "archive"), public_key, kept_checkpoint=earlier.root.note
    )
    assert report.kept is not None
    assert report.kept.size == earlier.root.size


def test_a_fork_is_not_passed_off_as_consistent(
    ledgered_template: Path, public_key: Verifier, tmp_path: Path
) -> None:
    """A kept checkpoint of the same size but another root (a forked log) fails the consistency proof."""
    later = audit_archive(open_store(ledgered_template / "final" / "archive"), public_key)
    assert later.root is not None
    signer = Ed25519FileSigner.load(ledgered_template / "ledger.key")
    root = later.root.checkpoint
    fork = sign_checkpoint(
        Checkpoint(root.origin, root.size - 1, bytes(32)), OriginSigner(signer, root.origin)
    )
    failure = audit(ledgered_template / "final" / "archive", public_key, kept=fork)
    assert failure.check.startswith("consistency.")
    assert failure.origin == root.origin


def test_records_not_yet_ledgered_are_reported_not_failed(archive: Path, public_key: Verifier) -> None:
    store = open_store(archive)
    key = archive_keys(store, 0)[-1]
    blocks = object_records(store, key)
    # The seal worker's next object, written a moment before the ledger gets to it
    newer = key.rsplit("/", 1)[0] + "/00000000000000099990-00000000000000099999.avro"
    store.put_if_absent(newer, build_object(newer, REGISTRY.canonical_json(SEALED_SCHEMA), blocks[:1]).data)

    report = audit_archive(store, public_key)
    assert (report.shards[0].uncovered_objects, report.shards[0].uncovered_records) == (1, len(blocks[0]))
    assert "not yet covered" in report.summary()
