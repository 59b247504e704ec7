"""The ledger writer: leaf entries, cutting archive blocks along their chains, determinism,
resuming after a crash at any point (raised inside a write, or a real SIGKILL), the log of logs'
claims, and key rotation."""

from __future__ import annotations

import hashlib
import os
import random
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ledger.log import (
    ROOT_NAME,
    LeafEntry,
    LedgerConflict,
    RootEntry,
    RootLedger,
    ShardLedger,
    entry_for_record,
    latest_key,
    ledger_prefix,
    read_record_head,
    record_prefix,
    split_block,
    split_object,
)
from ledger.signer import Ed25519FileSigner
from replay.audit import audit_archive
from replay.proofs import LedgerView
from schemas import EVENT_SCHEMA, SEALED_SCHEMA
from storage.archive import build_object, iter_blocks
from storage.objectstore import (
    LocalWormStore,
    ObjectNotFound,
    ObjectStoreUnavailable,
    Retention,
    S3ObjectStore,
)
from streams.seal import SealStep, SessionState
from tests.eventdata import make_event, output
from tests.fixtures.s3 import ACCESS_KEY_ID, REGION, SECRET_ACCESS_KEY
from tests.ledger_service.archives import (
    EPOCH,
    LOG_NAME,
    PARTITIONS,
    REGISTRY,
    all_files,
    archive_keys,
    ledger_all,
    open_store,
    overwrite,
)

pytestmark = pytest.mark.clickhouse  # the archives come from the real pipeline on chdb


class Crash(BaseException):
    """The process dying at this point (BaseException: nothing may catch it on the way out)."""


@pytest.fixture
def bare(archive: Path) -> Path:
    """The sealed archive without any ledger: what a ledger starting today finds."""
    shutil.rmtree(archive / "ledger")
    return archive


@pytest.fixture
def reference(bare: Path, signer: Ed25519FileSigner, tmp_path: Path) -> dict[str, bytes]:
    """The ledger of an uninterrupted run over a copy of the same archive."""
    copy = shutil.copytree(bare, tmp_path / "reference")
    ledger_all(open_store(copy), signer, objects_per_checkpoint=100)
    return ledger_files(copy)


def ledger_files(archive: Path) -> dict[str, bytes]:
    """The shards' ledger objects. (The log of logs records shard checkpoints as it sees them, so
    its leaves depend on timing: it is checked by the audit, not compared.)"""
    files = {str(path.relative_to(archive)): path.read_bytes() for path in all_files(archive / "ledger")}
    return {name: data for name, data in files.items() if f"/{ROOT_NAME}/" not in name}


def assert_same_tree(archive: Path, reference: dict[str, bytes]) -> None:
    """The shards' final checkpoints are byte-identical (same size, same root, deterministic
    signature), and so is every tile, bundle and marker both runs wrote."""
    files = ledger_files(archive)
    for partition in PARTITIONS:
        final = [name for name in reference if f"p{partition:05d}/checkpoint/" in name][-1]
        assert files.get(final) == reference[final], final
    shared = {name for name in files if "/checkpoint/" not in name and "/position/" not in name} & set(
        reference
    )
    assert {name: files[name] for name in shared} == {name: reference[name] for name in shared}
    fulls = {name for name in reference if ("/tile/" in name and ".p/" not in name) or "/objects/" in name}
    assert fulls <= set(files), sorted(fulls - set(files))[:5]


# -- entries ----------------------------------------------------------------------------------------


def test_a_leaf_entry_has_one_encoding() -> None:
    entry = LeafEntry("sess-ü", 300, 4, 1234, bytes(range(32)))
    data = entry.encode()
    assert data[:14] == bytes([1, 4]) + (1234).to_bytes(4, "big") + (300).to_bytes(8, "big")
    assert LeafEntry.decode(data) == entry
    for bad in (data[:-1], data + b"x", bytes([2]) + data[1:], data[:1] + bytes([9]) + data[2:]):
        with pytest.raises(ValueError):
            LeafEntry.decode(bad)


def test_a_root_entry_round_trips() -> None:
    entry = RootEntry("blackbox.test/0011aabb/e1/p00003", 77, bytes(32), bytes(range(32)))
    assert RootEntry.decode(entry.encode()) == entry


def test_entries_are_read_from_the_records_own_bytes(bare: Path) -> None:
    store = open_store(bare)
    for key in archive_keys(store, 0):
        for _, records in iter_blocks(store.get(key)):
            for record in records:
                entry = entry_for_record(record.raw)
                assert (entry.session_id, entry.index) == (record.value["session_id"], record.value["index"])
                assert entry.kind_name == record.value["kind"]
                assert entry.record_hash == hashlib.sha256(record.raw).digest()


# -- cutting blocks ---------------------------------------------------------------------------------


def test_blocks_cut_along_the_chain_are_the_avro_records(bare: Path) -> None:
    store = open_store(bare)
    for partition in PARTITIONS:
        for key in archive_keys(store, partition):
            data = store.get(key)
            blocks = split_object(data)
            decoded = [[record.raw for record in records] for _, records in iter_blocks(data)]
            assert [list(block.records) for block in blocks] == decoded
            # Entries built from the cut are those read from each record's own bytes.
            entries = [entry for block in blocks for entry in block.entries]
            assert entries == [entry_for_record(raw).encode() for records in decoded for raw in records]


def sealed(session_id: str, bodies: list[Any]) -> list[bytes]:
    step = SealStep(REGISTRY)
    events = [make_event(session_id, seq, body) for seq, body in enumerate(bodies)]
    encoded = [(event, REGISTRY.encode_body(EVENT_SCHEMA, event)) for event in events]
    result = step.seal_batch(encoded, SessionState(session_id, 0), lambda sid, seq: None)
    return [record.raw for record in result.records]


def test_content_that_looks_like_the_next_record_does_not_fool_the_cut() -> None:
    """Terminal output holding the next record's prefix, kind and a (wrong) hash is skipped: a cut
    needs the hash of everything before it."""
    session_id = "sess-tricky"
    decoy = record_prefix(session_id, 1) + b"\x00\x40" + bytes(32)
    records = sealed(session_id, [output(decoy * 3), output(b"ok"), output(decoy), output(b"end")])
    assert split_block(b"".join(records), len(records)) == (
        records,
        [hashlib.sha256(raw).digest() for raw in records],
        [read_record_head(raw).kind for raw in records],
    )


def test_a_block_that_does_not_chain_is_decoded_instead() -> None:
    session_id = "sess-broken"
    records = sealed(session_id, [output(b"a"), output(b"b"), output(b"c")])
    unlinked = [records[0], records[2]]  # record 2 does not follow record 0
    assert split_block(b"".join(unlinked), 2) is None
    key = "e1/p00000/00000000000000000000-00000000000000000001.avro"
    data = build_object(key, REGISTRY.canonical_json(SEALED_SCHEMA), [unlinked]).data
    [block] = split_object(data)
    assert list(block.records) == unlinked
    # Entries from each record's own head: index 0 and 2, not the 0 and 1 a run would suggest.
    assert list(block.entries) == [entry_for_record(raw).encode() for raw in unlinked]
    assert [LeafEntry.decode(entry).index for entry in block.entries] == [0, 2]


# -- finding the latest checkpoint ------------------------------------------------------------------


class ListingStore:
    """Only what latest_key uses: sorted keys, listed from a point, and a count of the listings."""

    def __init__(self, keys: list[str]) -> None:
        self.keys = sorted(keys)
        self.listings = 0

    def list_keys(self, prefix: str = "", start_after: str = "") -> Iterator[str]:
        self.listings += 1
        return (key for key in self.keys if key.startswith(prefix) and key > start_after)


@pytest.mark.parametrize("count", [0, 1, 999, 1000, 1001, 5000])
def test_the_latest_checkpoint_is_found_without_listing_them_all(count: int) -> None:
    rng = random.Random(count)
    sizes = sorted(rng.sample(range(1, 10**9), count))
    prefix = "ledger/x/checkpoint/"
    store = ListingStore([f"{prefix}{size:020d}" for size in sizes] + ["ledger/x/checkpoint0"])
    found = latest_key(store, prefix)  # type: ignore[arg-type]
    assert found == (f"{prefix}{sizes[-1]:020d}" if sizes else None)
    assert store.listings <= 2 + 4 * 30
    if sizes:
        assert latest_key(store, prefix, found or "") == found  # type: ignore[arg-type]


# -- determinism and crashes ------------------------------------------------------------------------


def test_two_ledgers_with_different_checkpoint_cadences_build_the_same_tree(
    bare: Path, signer: Ed25519FileSigner, reference: dict[str, bytes]
) -> None:
    ledger_all(open_store(bare), signer, objects_per_checkpoint=1)
    assert_same_tree(bare, reference)


class InFlightS3Store(S3ObjectStore):
    """An S3 store that notes the most puts it had in flight at once."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._counting = threading.Lock()
        self.in_flight = 0
        self.most_in_flight = 0

    def put_if_absent(self, key: str, data: bytes) -> bool:
        with self._counting:
            self.in_flight += 1
            self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            return super().put_if_absent(key, data)
        finally:
            with self._counting:
                self.in_flight -= 1


@pytest.mark.s3
def test_a_ledger_on_s3_puts_its_tiles_concurrently_and_builds_the_same_tree(
    bare: Path,
    signer: Ed25519FileSigner,
    reference: dict[str, bytes],
    moto_server: str,
    worm_bucket: S3ObjectStore,
) -> None:
    store = InFlightS3Store(
        worm_bucket.bucket,
        endpoint_url=moto_server,
        region=REGION,
        access_key_id=ACCESS_KEY_ID,
        secret_access_key=SECRET_ACCESS_KEY,
        retention=Retention("COMPLIANCE", 1),
    )
    for path in all_files(bare):
        store.put_if_absent(str(path.relative_to(bare)), path.read_bytes())
    store.most_in_flight = 0

    ledger_all(store, signer, objects_per_checkpoint=100)

    assert store.most_in_flight > 1, "tiles were put one at a time"
    written = {key: store.get(key) for key in store.list_keys("ledger/") if f"/{ROOT_NAME}/" not in key}
    assert written == reference


@pytest.mark.parametrize("stop_after", [1, 2, 4, 5])
@pytest.mark.parametrize("checkpointed", [True, False])
def test_a_ledger_stopped_after_some_objects_resumes_to_the_same_tree(
    bare: Path, signer: Ed25519FileSigner, reference: dict[str, bytes], stop_after: int, checkpointed: bool
) -> None:
    store = open_store(bare)
    for partition in PARTITIONS:
        first = ShardLedger(store, signer, epoch=EPOCH, partition=partition)
        first.catch_up(max_objects=stop_after)
        if checkpointed:
            first.checkpoint()
    # a new process: nothing but the store survives
    ledger_all(open_store(bare), signer, objects_per_checkpoint=3)
    assert_same_tree(bare, reference)


class CrashingStore(LocalWormStore):
    """Dies at the n-th write: before it (``after=False``) or right after it completed."""

    def __init__(self, root: Path, crash_at: int, *, after: bool) -> None:
        super().__init__(root, retention=None)
        self.crash_at = crash_at
        self.after = after
        self.writes = 0

    def put_if_absent(self, key: str, data: bytes) -> bool:
        self.writes += 1
        if self.writes == self.crash_at and not self.after:
            raise Crash(f"died before writing {key}")
        created = super().put_if_absent(key, data)
        if self.writes == self.crash_at:
            raise Crash(f"died after writing {key}")
        return created


def count_writes(bare: Path, signer: Ed25519FileSigner, tmp_path: Path) -> int:
    probe = CrashingStore(shutil.copytree(bare, tmp_path / "probe"), crash_at=-1, after=False)
    ledger_all(probe, signer, objects_per_checkpoint=2)
    return probe.writes


@pytest.mark.parametrize("after", [False, True])
def test_a_crash_at_any_write_resumes_to_the_same_tree(
    bare: Path, signer: Ed25519FileSigner, reference: dict[str, bytes], tmp_path: Path, after: bool
) -> None:
    writes = count_writes(bare, signer, tmp_path)
    for crash_at in range(1, writes + 1, max(1, writes // 25)):
        copy = shutil.copytree(bare, tmp_path / f"crash-{crash_at}")
        with pytest.raises(Crash):
            ledger_all(CrashingStore(copy, crash_at, after=after), signer, objects_per_checkpoint=2)
        audit_archive(open_store(copy), signer.verifier())  # every checkpoint written still verifies
        ledger_all(open_store(copy), signer, objects_per_checkpoint=2)
        assert_same_tree(copy, reference)


class FlakyStore(LocalWormStore):
    """An object store outage on one write in five, at random (seeded)."""

    def __init__(self, root: Path) -> None:
        super().__init__(root, retention=None)
        self._rng = random.Random(5)

    def put_if_absent(self, key: str, data: bytes) -> bool:
        if self._rng.random() < 0.2:
            raise ObjectStoreUnavailable("connection reset")
        return super().put_if_absent(key, data)


def test_an_outage_is_retried_from_the_store_without_forking(
    bare: Path, signer: Ed25519FileSigner, reference: dict[str, bytes]
) -> None:
    store = FlakyStore(bare)
    shards = {p: ShardLedger(store, signer, epoch=EPOCH, partition=p) for p in PARTITIONS}
    for shard in shards.values():
        for _ in range(500):
            try:
                shard.catch_up(max_objects=1)
                shard.checkpoint()
            except ObjectStoreUnavailable:
                continue  # the agent retries on its next message or tick
            if not shard.pending_objects():
                break
    assert_same_tree(bare, reference)


SIGKILL_LEDGER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from ledger.log import RootLedger, ShardLedger
    from ledger.signer import Ed25519FileSigner
    from tests.ledger_service.archives import EPOCH, PARTITIONS, open_store

    store = open_store(Path(sys.argv[1]))
    signer = Ed25519FileSigner.load(sys.argv[2])
    root = RootLedger(store, signer)
    shards = [ShardLedger(store, signer, epoch=EPOCH, partition=p) for p in PARTITIONS]
    while any(shard.pending_objects(limit=1) for shard in shards):
        for shard in shards:
            shard.catch_up(max_objects=1)
            print("checkpoint", shard.checkpoint().size, flush=True)
            root.update()
    time.sleep(5)  # alive until killed: the test kills it at some point of its work
    print("finished", flush=True)
    """
)


@pytest.mark.parametrize("checkpoints_seen", [1, 4, 9])
def test_a_ledger_killed_with_sigkill_resumes_to_the_same_tree(
    bare: Path,
    signer: Ed25519FileSigner,
    ledgered_template: Path,
    reference: dict[str, bytes],
    checkpoints_seen: int,
) -> None:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    process = subprocess.Popen(
        [sys.executable, "-c", SIGKILL_LEDGER, str(bare), str(ledgered_template / "ledger.key")],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert process.stdout is not None
    for _ in range(checkpoints_seen):  # then it goes on writing, and dies somewhere in that
        assert process.stdout.readline().startswith(b"checkpoint"), process.stderr
    process.send_signal(signal.SIGKILL)
    _out, err = process.communicate(timeout=30)
    assert process.returncode == -signal.SIGKILL, err.decode()

    audit_archive(open_store(bare), signer.verifier())  # what it left verifies as far as it got
    ledger_all(open_store(bare), signer, objects_per_checkpoint=2)
    assert_same_tree(bare, reference)
    audit_archive(open_store(bare), signer.verifier())


def test_a_stored_tile_with_other_bytes_stops_the_ledger(bare: Path, signer: Ed25519FileSigner) -> None:
    store = open_store(bare)
    shard = ShardLedger(store, signer, epoch=EPOCH, partition=0)
    shard.catch_up()
    shard.checkpoint()
    tile = bare / ledger_prefix(shard.origin) / "tile" / "0" / "001"
    overwrite(tile, bytes(len(tile.read_bytes())))
    resumed = ShardLedger(store, signer, epoch=EPOCH, partition=0)
    # resuming reads the partial tiles; rebuilding from scratch must rewrite the full one
    shutil.rmtree(bare / ledger_prefix(shard.origin) / "checkpoint")
    with pytest.raises(LedgerConflict):
        resumed.catch_up()


# -- the log of logs --------------------------------------------------------------------------------


def test_two_root_writers_agree_through_their_claims(bare: Path, signer: Ed25519FileSigner) -> None:
    store = open_store(bare)
    shard0 = ShardLedger(store, signer, epoch=EPOCH, partition=0)
    shard0.catch_up(max_objects=2)
    shard0.checkpoint()
    old_owner, new_owner = RootLedger(store, signer), RootLedger(store, signer)
    assert old_owner.update() is not None
    assert new_owner.latest is not None  # loaded now: it will be stale below

    shard1 = ShardLedger(store, signer, epoch=EPOCH, partition=1)
    shard1.catch_up()
    shard1.checkpoint()
    shard0.catch_up()
    shard0.checkpoint()
    first = old_owner.update()
    second = new_owner.update()  # its claim for the same leaves loses; it adopts the winner's
    assert first is not None
    assert second is not None
    assert (second.size, second.note) == (first.size, first.note)
    report = audit_archive(store, signer.verifier())
    assert report.root is not None
    assert report.root.size == first.size


def test_a_new_key_starts_new_logs_and_both_verify(
    bare: Path, signer: Ed25519FileSigner, tmp_path: Path
) -> None:
    store = open_store(bare)
    ledger_all(store, signer)
    rotated = Ed25519FileSigner.generate(tmp_path / "rotated.key", LOG_NAME)
    ledger_all(store, rotated)
    old, new = LedgerView(store, signer.verifier()), LedgerView(store, rotated.verifier())
    assert old.root_origin != new.root_origin
    assert old.shard_origin(EPOCH, 0) != new.shard_origin(EPOCH, 0)
    for key in (signer, rotated):
        report = audit_archive(store, key.verifier())
        assert report.records == 2 * 606
    with pytest.raises(ObjectNotFound):
        store.get(f"{ledger_prefix(new.shard_origin(EPOCH, 0))}checkpoint/{0:020d}")
