"""Archives for the ledger tests, written by the real seal pipeline (chdb index, WORM directory),
and helpers to ledger them and to tamper with them the way someone with the disk would."""

from __future__ import annotations

import os
import shutil
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from ledger.log import RootLedger, ShardLedger, SignedCheckpoint, split_object
from ledger.signer import Ed25519FileSigner
from schemas import BATCH_SCHEMA, SEALED_SCHEMA, default_registry
from storage.archive import build_object
from storage.index import ChdbIndex
from storage.objectstore import LocalWormStore, ObjectStore
from streams.pipeline import PipelineConfig, SealPipeline, SourceMessage
from streams.seal import SealStep
from tests.eventdata import end, make_event

REGISTRY = default_registry()
EPOCH = "e1"
LOG_NAME = "blackbox.test"
PARTITIONS = (0, 1)


def open_store(directory: Path) -> LocalWormStore:
    # No retention: the tests play an attacker who owns the disk, and delete files directly.
    return LocalWormStore(directory, retention=None)


@dataclass
class Workload:
    """Sessions per partition that each send one message per round; all but one end in the last."""

    rounds: int = 6
    sessions: int = 4
    events_per_message: int = 25

    def session_id(self, partition: int, number: int) -> str:
        return f"sess-p{partition}-{number}"

    def round(self, number: int, offsets: dict[int, int]) -> list[SourceMessage]:
        messages = []
        for partition in PARTITIONS:
            for session in range(self.sessions):
                session_id = self.session_id(partition, session)
                first = number * self.events_per_message
                events = [
                    make_event(session_id, seq) for seq in range(first, first + self.events_per_message)
                ]
                last_round = number == self.rounds - 1
                if last_round and session != self.sessions - 1:  # one session stays open
                    events.append(make_event(session_id, first + self.events_per_message, end()))
                value = REGISTRY.encode(BATCH_SCHEMA, {"session_id": session_id, "events": events})
                offset = offsets.get(partition, 0)
                offsets[partition] = offset + 1
                messages.append(SourceMessage("events", partition, offset, session_id.encode(), value))
        return messages


def seal_rounds(directory: Path, workload: Workload, rounds: range, offsets: dict[int, int]) -> None:
    """Run rounds through the real pipeline: one archive object per partition and round."""
    with ChdbIndex(directory / "index") as index:
        index.migrate()
        pipeline = SealPipeline(
            REGISTRY,
            SealStep(REGISTRY),
            open_store(directory / "archive"),
            index,
            PipelineConfig(epoch=EPOCH),
        )
        try:
            for number in rounds:
                outcome = pipeline.process(workload.round(number, offsets))
                assert not outcome.dead_letters, outcome.dead_letters
        finally:
            pipeline.close()


def ledger_all(
    store: ObjectStore, signer: Ed25519FileSigner, *, objects_per_checkpoint: int = 2
) -> dict[int, SignedCheckpoint]:
    """Ledger every partition, checkpointing every few objects as the agent would; then the root."""
    latest: dict[int, SignedCheckpoint] = {}
    for partition in PARTITIONS:
        shard = ShardLedger(store, signer, epoch=EPOCH, partition=partition)
        while shard.pending_objects(limit=1):
            shard.catch_up(max_objects=objects_per_checkpoint)
            signed = shard.checkpoint()
            assert signed is not None
            latest[partition] = signed
    RootLedger(store, signer).update()
    return latest


def copy_tree(source: Path, target: Path) -> Path:
    shutil.copytree(source, target, symlinks=True)
    return target


def overwrite(path: Path, data: bytes) -> None:
    """Replace a write-once file, as only someone with the disk could."""
    path.chmod(stat.S_IRUSR | stat.S_IWUSR)
    path.write_bytes(data)


def remove(path: Path) -> None:
    os.chmod(path, stat.S_IRUSR | stat.S_IWUSR)
    path.unlink()


def archive_keys(store: LocalWormStore, partition: int) -> list[str]:
    return list(store.list_keys(f"{EPOCH}/p{partition:05d}/"))


def rewrite_object(store: LocalWormStore, key: str, blocks: list[list[bytes]]) -> None:
    """Rebuild an archive object from (edited) records, self-consistent as an OCF file."""
    schema = REGISTRY.canonical_json(SEALED_SCHEMA)
    data = build_object(key, schema, [block for block in blocks if block]).data
    overwrite(store.root / key, data)


def object_records(store: LocalWormStore, key: str) -> list[list[bytes]]:
    return [list(block.records) for block in split_object(store.get(key))]


def all_files(directory: Path) -> Iterator[Path]:
    for path in sorted(directory.rglob("*")):
        if path.is_file():
            yield path
