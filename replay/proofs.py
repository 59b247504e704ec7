"""Proofs from the stored ledger: inclusion of a record, consistency of two checkpoints, and the
per-record proof file an auditor can verify alone with the log's public key.

The proof file is c2sp.org/tlog-proof@v1, its ``extra`` line carrying the record's exact Avro
bytes (base64), from which the verifier rebuilds the leaf entry (`ledger.log.LeafEntry`)::

    c2sp.org/tlog-proof@v1
    extra <base64 of the record's Avro bytes>
    index <leaf index>
    <base64 proof hash, from the leaf's sibling up>
    ...
    <empty line>
    <the signed checkpoint, verbatim>

Verification raises `VerificationFailed`, whose fields say which log, leaf, session, record and
check; checks are numbered in the code.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import logging
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from ledger.checkpoint import Checkpoint, CheckpointError, open_checkpoint
from ledger.log import (
    MISSING,
    LeafEntry,
    ObjectMarker,
    SignedCheckpoint,
    checkpoint_key,
    entry_for_record,
    latest_checkpoint,
    ledger_prefix,
    log_base,
    log_key_id,
    marker_key,
    origin_verifier,
    read_checkpoint,
    root_origin,
    shard_origin,
)
from ledger.merkle import ConsistencyProof, InclusionProof, ProofError, leaf_hash, verify_consistency
from ledger.signer import Verifier
from ledger.tiles import TILE_WIDTH, BundleID, TileError, TileReader, read_bundle
from replay import queries
from replay.errors import ArchiveUnavailable, EvidenceCorrupt, InvalidQuery, ReplayError
from replay.reader import SessionReader, VerifyFailure
from storage.archive import ArchivedRecord, parse_object_key
from storage.index import Index
from storage.objectstore import ObjectNotFound, ObjectStore, ObjectStoreError

logger = logging.getLogger(__name__)

PROOF_HEADER = "c2sp.org/tlog-proof@v1"
PROOF_SUFFIX = ".tlog-proof"


class VerificationFailed(ReplayError):
    """Evidence failed a check. Says where as precisely as is known: the log (origin), the leaf,
    the session and record, the archive object or ledger path, and which numbered check."""

    def __init__(
        self,
        check: str,
        detail: str,
        *,
        origin: str | None = None,
        leaf: int | None = None,
        session_id: str | None = None,
        record_index: int | None = None,
        seq: int | None = None,
        object_key: str | None = None,
        path: str | None = None,
    ) -> None:
        self.check = check
        self.detail = detail
        self.origin = origin
        self.leaf = leaf
        self.session_id = session_id
        self.record_index = record_index
        self.seq = seq
        self.object_key = object_key
        self.path = path
        super().__init__(self.describe())

    def __reduce__(self) -> tuple[Any, ...]:
        # Keyword-only fields: the default (cls, args) would lose them across processes.
        fields = {name: getattr(self, name) for name in _WHERE}
        return (_rebuild_failure, (self.check, self.detail, fields))

    def location(self) -> str:
        parts = []
        if self.origin is not None:
            parts.append(f"log {self.origin}")
        if self.leaf is not None:
            parts.append(f"leaf {self.leaf}")
        if self.session_id is not None:
            record = f"session {self.session_id}"
            if self.record_index is not None:
                record += f" record {self.record_index}"
            if self.seq is not None:
                record += f" (seq {self.seq})"
            parts.append(record)
        if self.object_key is not None:
            parts.append(f"object {self.object_key}")
        if self.path is not None:
            parts.append(f"at {self.path}")
        return ", ".join(parts)

    def describe(self) -> str:
        where = self.location()
        return f"{self.check}: {self.detail}" + (f" [{where}]" if where else "")


_WHERE = ("origin", "leaf", "session_id", "record_index", "seq", "object_key", "path")


def _rebuild_failure(check: str, detail: str, fields: dict[str, Any]) -> VerificationFailed:
    return VerificationFailed(check, detail, **fields)


# -- the proof file ---------------------------------------------------------------------------


@dataclass(frozen=True)
class RecordProof:
    """One record, its leaf index, its inclusion proof and the signed checkpoint it leads to."""

    record: bytes
    leaf_index: int
    hashes: tuple[bytes, ...]
    checkpoint_note: bytes

    def text(self) -> str:
        lines = [
            PROOF_HEADER,
            "extra " + base64.b64encode(self.record).decode("ascii"),
            f"index {self.leaf_index}",
            *(base64.b64encode(item).decode("ascii") for item in self.hashes),
            "",
        ]
        return "\n".join(lines) + "\n" + self.checkpoint_note.decode("utf-8")

    @classmethod
    def parse(cls, text: str) -> RecordProof:
        """Checks the framing only (`verify_record_proof` checks the contents):
        1. the header line; 2. an extra line with the record; 3. the index line, decimal without
        leading zeros; 4. base64 proof hashes until an empty line; 5. a checkpoint note follows."""
        lines = text.split("\n")
        if not lines or lines[0] != PROOF_HEADER:  # 1
            raise VerificationFailed("proof.format", f"first line must be {PROOF_HEADER!r}")
        if len(lines) < 3 or not lines[1].startswith("extra "):  # 2
            raise VerificationFailed("proof.format", "no extra line carrying the record")
        record = _b64(lines[1][len("extra ") :], "extra")
        index_text = lines[2].removeprefix("index ")  # 3
        if not lines[2].startswith("index ") or not (
            index_text == "0" or (index_text.isdigit() and index_text[0] != "0" and index_text.isascii())
        ):
            raise VerificationFailed("proof.format", f"bad index line {lines[2]!r}")
        hashes: list[bytes] = []
        position = 3
        while position < len(lines) and lines[position]:  # 4
            hashes.append(_b64(lines[position], f"proof hash {len(hashes)}"))
            position += 1
        if position >= len(lines) - 1:  # 5
            raise VerificationFailed("proof.format", "no checkpoint after the proof hashes")
        note = "\n".join(lines[position + 1 :]).encode("utf-8")
        return cls(record, int(index_text), tuple(hashes), note)


def _b64(text: str, what: str) -> bytes:
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise VerificationFailed("proof.format", f"{what} is not base64") from exc
    if base64.b64encode(raw).decode("ascii") != text:
        raise VerificationFailed("proof.format", f"{what} is not canonical base64")
    return raw


@dataclass(frozen=True)
class ProvenRecord:
    """What a verified proof establishes."""

    origin: str
    tree_size: int
    leaf_index: int
    entry: LeafEntry


def open_log_checkpoint(note: bytes, public_key: Verifier, *, what: str = "checkpoint") -> Checkpoint:
    """A checkpoint of any log of ``public_key`` (its origin under the key's name and id), verified.

    Checks: 1. the note text is a checkpoint; 2. its origin belongs to this key's logs (so
    rotating the key, which changes the origin, can never pass an old log off as a new one);
    3. the log's key signed it under that origin (ledger.checkpoint.open_checkpoint).
    """
    text, sep, _ = note.decode("utf-8", errors="replace").partition("\n\n")
    try:  # 1
        checkpoint = Checkpoint.parse(text + "\n" if sep else text)
    except CheckpointError as exc:
        raise VerificationFailed(f"{what}.{exc.check}", exc.detail) from exc
    base = log_base(public_key.name, log_key_id(public_key)) + "/"
    if not checkpoint.origin.startswith(base):  # 2
        raise VerificationFailed(
            f"{what}.origin",
            f"origin {checkpoint.origin!r} is not a log of key {public_key.name}+{log_key_id(public_key)}",
            origin=checkpoint.origin,
        )
    try:  # 3
        opened, _ = open_checkpoint(
            note, [origin_verifier(public_key, checkpoint.origin)], origin=checkpoint.origin
        )
    except CheckpointError as exc:
        raise VerificationFailed(f"{what}.{exc.check}", exc.detail, origin=checkpoint.origin) from exc
    return opened


def verify_record_proof(proof: RecordProof, public_key: Verifier) -> ProvenRecord:
    """Verify a proof file's contents with nothing but the log's public key.

    Checks:
      1. the checkpoint is signed by the log's key for a log of that key (`open_log_checkpoint`);
      2. the record's bytes start like a sealed record (session, index, kind), giving its entry;
      3. the inclusion proof leads from that entry's leaf hash at the index to the checkpoint's root.
    """
    checkpoint = open_log_checkpoint(proof.checkpoint_note, public_key)  # 1
    try:  # 2
        entry = entry_for_record(proof.record)
    except ValueError as exc:
        raise VerificationFailed(
            "proof.record", f"extra data is not a sealed record: {exc}", origin=checkpoint.origin
        ) from exc
    try:  # 3
        InclusionProof(proof.leaf_index, checkpoint.size, proof.hashes).verify(
            leaf_hash(entry.encode()), checkpoint.root_hash
        )
    except ProofError as exc:
        raise VerificationFailed(
            f"proof.inclusion.{exc.check}",
            exc.detail,
            origin=checkpoint.origin,
            leaf=proof.leaf_index,
            session_id=entry.session_id,
            record_index=entry.index,
        ) from exc
    return ProvenRecord(checkpoint.origin, checkpoint.size, proof.leaf_index, entry)


# -- reading stored logs ----------------------------------------------------------------------


class LedgerView:
    """The logs of one public key in one store, read-only. Every checkpoint it hands out has had its
    signature verified; tiles and bundles are as stored (proofs built from them are verified
    against those checkpoints by whoever uses them)."""

    def __init__(self, store: ObjectStore, public_key: Verifier) -> None:
        self.store = store
        self.public_key = public_key
        self.key_id = log_key_id(public_key)
        self.root_origin = root_origin(public_key.name, self.key_id)
        self._readers: dict[tuple[str, int], TileReader] = {}
        self._lock = threading.Lock()

    def shard_origin(self, epoch: str, partition: int) -> str:
        return shard_origin(self.public_key.name, self.key_id, epoch, partition)

    def shard_of_object(self, object_key: str) -> str:
        parsed = parse_object_key(object_key)
        if parsed is None:
            raise EvidenceCorrupt(
                "", "the index names an object that is no archive object", object_key=object_key
            )
        epoch, partition, _, _ = parsed
        return self.shard_origin(epoch, partition)

    def read(self, origin: str, path: str) -> bytes:
        return self.store.get(ledger_prefix(origin) + path)

    def latest(self, origin: str) -> SignedCheckpoint | None:
        try:
            return latest_checkpoint(self.store, origin, self.public_key)
        except CheckpointError as exc:
            raise VerificationFailed(f"checkpoint.{exc.check}", exc.detail, origin=origin) from exc

    def checkpoint_at(self, origin: str, size: int) -> SignedCheckpoint:
        key = checkpoint_key(origin, size)
        try:
            return read_checkpoint(self.store, key, self.public_key, origin)
        except ObjectNotFound:
            raise VerificationFailed(
                "checkpoint.missing", f"no checkpoint of size {size}", origin=origin, path=key
            ) from None
        except CheckpointError as exc:
            raise VerificationFailed(f"checkpoint.{exc.check}", exc.detail, origin=origin, path=key) from exc

    def checkpoint_keys(self, origin: str) -> list[str]:
        prefix = f"{ledger_prefix(origin)}checkpoint/"
        return list(self.store.list_keys(prefix))

    def shard_origins(self) -> list[str]:
        """Shards registered with the log of logs."""
        prefix = f"{ledger_prefix(self.root_origin)}shards/"
        return sorted(self.store.get(key).decode("utf-8") for key in self.store.list_keys(prefix))

    def tiles(self, origin: str, size: int) -> TileReader:
        """A reader of the tree of ``size``, kept for the next proof of the same tree (a session's
        proofs share most of their tiles)."""
        with self._lock:  # the API asks from many threads; tiles are read outside this lock
            reader = self._readers.get((origin, size))
            if reader is None:
                reader = TileReader(lambda path: self.read(origin, path), size, missing=MISSING)
                if len(self._readers) >= 16:
                    self._readers.pop(next(iter(self._readers)))
                self._readers[(origin, size)] = reader
            return reader

    def bundle(self, origin: str, index: int, size: int) -> list[bytes]:
        """Entries of bundle ``index`` as it stands in the tree of ``size``."""
        width = min(size - index * TILE_WIDTH, TILE_WIDTH)
        return read_bundle(lambda path: self.read(origin, path), BundleID(index, width), missing=MISSING)

    def entries(self, origin: str, size: int, start: int = 0) -> Iterator[tuple[int, bytes]]:
        """(leaf index, entry bytes) from ``start`` to ``size``."""
        for index in range(start // TILE_WIDTH, (size + TILE_WIDTH - 1) // TILE_WIDTH):
            for offset, entry in enumerate(self.bundle(origin, index, size)):
                leaf = index * TILE_WIDTH + offset
                if leaf >= start:
                    yield leaf, entry

    def marker(self, origin: str, object_key: str) -> ObjectMarker | None:
        try:
            return ObjectMarker.decode(self.store.get(marker_key(origin, object_key)))
        except ObjectNotFound:
            return None

    def inclusion_proof(self, origin: str, leaf: int, size: int) -> InclusionProof:
        return InclusionProof(leaf, size, tuple(self.tiles(origin, size).inclusion_proof(leaf)))

    def consistency_proof(self, origin: str, size1: int, size2: int) -> ConsistencyProof:
        if size1 == size2:
            return ConsistencyProof(size1, size2, ())
        return ConsistencyProof(size1, size2, tuple(self.tiles(origin, size2).consistency_proof(size1)))

    def verify_consistent(self, old: Checkpoint, new: Checkpoint) -> None:
        """That ``new`` extends ``old`` (same log): a rollback or fork is VerificationFailed.

        Checks: 1. same origin; 2. the log did not shrink; 3. an RFC 6962 consistency proof built
        from the stored tiles of ``new`` leads from ``old``'s root to ``new``'s root.
        """
        origin = new.origin
        if old.origin != new.origin:  # 1
            raise VerificationFailed("consistency.origin", f"{old.origin} is another log", origin=origin)
        if old.size > new.size:  # 2
            raise VerificationFailed(
                "consistency.rollback",
                f"the log has {new.size} leaves, a checkpoint signed earlier has {old.size}",
                origin=origin,
                leaf=new.size,
            )
        if old.size == 0:
            return
        try:  # 3
            proof = self.consistency_proof(origin, old.size, new.size)
            verify_consistency(old.size, new.size, proof.hashes, old.root_hash, new.root_hash)
        except TileError as exc:
            raise VerificationFailed(f"tile.{exc.check}", exc.detail, origin=origin, path=exc.path) from exc
        except ProofError as exc:
            raise VerificationFailed(
                f"consistency.{exc.check}",
                f"checkpoint {old.size} is not a prefix of checkpoint {new.size}: {exc.detail}",
                origin=origin,
            ) from exc

    def record_proof(
        self, origin: str, leaf: int, record: bytes, checkpoint: SignedCheckpoint
    ) -> RecordProof:
        proof = self.inclusion_proof(origin, leaf, checkpoint.size)
        return RecordProof(record, leaf, proof.hashes, checkpoint.note)


# -- per session, for the API ------------------------------------------------------------------

InclusionStatus = Literal["included", "pending"]


@dataclass(frozen=True)
class RecordInclusion:
    """One record of a session and where the ledger has it. ``pending``: not yet covered by a
    signed checkpoint (the ledger lags the archive by a few seconds)."""

    index: int
    record_hash: bytes
    status: InclusionStatus
    origin: str
    leaf_index: int | None = None
    tree_size: int | None = None
    proof: tuple[bytes, ...] = ()


@dataclass(frozen=True)
class SessionProofs:
    """A session's records with their inclusion proofs, the checkpoints they lead to (one per
    shard the session's records are in; usually one) and the verdict."""

    session_id: str
    checkpoints: dict[str, SignedCheckpoint]
    records: list[RecordInclusion]
    valid: bool
    checks: tuple[str, ...] = ()
    failure: VerifyFailure | None = None

    @property
    def included(self) -> int:
        return sum(1 for record in self.records if record.status == "included")


@dataclass(frozen=True)
class LatestCheckpoints:
    root: SignedCheckpoint | None
    shards: list[SignedCheckpoint] = field(default_factory=list)


class ProofService:
    """Inclusion proofs for indexed sessions: the index says which archive objects hold a session's
    records, the ledger's object markers say which leaves, and the tiles give the proofs, each
    verified against the latest signed checkpoint before it is handed out."""

    def __init__(self, index: Index, store: ObjectStore, public_key: Verifier) -> None:
        self._index = index
        self._reader = SessionReader(index, store)
        self.view = LedgerView(store, public_key)

    def latest_checkpoints(self) -> LatestCheckpoints:
        try:
            root = self.view.latest(self.view.root_origin)
            shards = [
                cp for origin in self.view.shard_origins() if (cp := self.view.latest(origin)) is not None
            ]
        except ObjectStoreError as exc:
            raise ArchiveUnavailable(f"object store unavailable: {exc}") from exc
        return LatestCheckpoints(root, shards)

    def session_proofs(
        self, session_id: str, records: Sequence[ArchivedRecord] | None = None
    ) -> SessionProofs:
        """Every record of the session with its inclusion proof, and a verdict.

        Checks, in order, per archive object holding the session's records:
          1. ledger.checkpoint: its shard's latest checkpoint is signed by the log's key;
          2. ledger.marker: the object is ledgered at a leaf range that holds these records;
          3. ledger.inclusion: each covered record's leaf (rebuilt from its archived bytes) is in
             the checkpointed tree, by a proof from the stored tiles.
        A record newer than the checkpoint is ``pending``, not a failure. ``records``: the
        session's records if already read (links are the chain verdict's business), else they
        are read here.
        """
        try:
            if records is None:
                records = self._reader.records(session_id)
            segments = queries.session_segments(self._index, session_id)
            return self._prove_records(session_id, records, segments)
        except ObjectStoreError as exc:
            raise ArchiveUnavailable(f"object store unavailable: {exc}") from exc

    def _prove_records(
        self, session_id: str, records: Sequence[ArchivedRecord], segments: Sequence[queries.SegmentRow]
    ) -> SessionProofs:
        checkpoints: dict[str, SignedCheckpoint] = {}
        markers: dict[str, ObjectMarker | None] = {}
        inclusions: list[RecordInclusion] = []

        def failed(check: str, detail: str, index: int | None) -> SessionProofs:
            logger.error("ledger proofs of %s: %s failed at record %s: %s", session_id, check, index, detail)
            return SessionProofs(
                session_id, checkpoints, inclusions, False, (), VerifyFailure(check, detail, index)
            )

        uncovered: set[str] = set()
        for record in records:
            index = int(record.value["index"])
            digest = hashlib.sha256(record.raw).digest()
            key = next(seg.object_key for seg in segments if seg.first_index <= index <= seg.last_index)
            origin = self.view.shard_of_object(key)
            if origin not in checkpoints and origin not in uncovered:
                try:  # 1
                    latest = self.view.latest(origin)
                except VerificationFailed as exc:
                    return failed("ledger.checkpoint", exc.describe(), index)
                if latest is None:
                    uncovered.add(origin)
                else:
                    checkpoints[origin] = latest
            if key not in markers:
                markers[key] = self.view.marker(origin, key)
            marker = markers[key]
            checkpoint = checkpoints.get(origin)
            if marker is None or checkpoint is None:
                inclusions.append(RecordInclusion(index, digest, "pending", origin))
                continue
            leaf = marker.leaf_of(session_id, index)
            if leaf is None:  # 2
                return failed("ledger.marker", f"object {key} is ledgered without this record", index)
            if leaf >= checkpoint.size:
                inclusions.append(RecordInclusion(index, digest, "pending", origin, leaf))
                continue
            try:  # 3
                proof = self.view.inclusion_proof(origin, leaf, checkpoint.size)
                entry = entry_for_record(record.raw, digest)
                proof.verify(leaf_hash(entry.encode()), checkpoint.checkpoint.root_hash)
            except (ProofError, TileError, ValueError) as exc:
                return failed("ledger.inclusion", f"leaf {leaf} of {origin}: {exc}", index)
            inclusions.append(
                RecordInclusion(index, digest, "included", origin, leaf, checkpoint.size, proof.hashes)
            )
        checks = ("ledger.checkpoint", "ledger.marker", "ledger.inclusion")
        return SessionProofs(session_id, checkpoints, inclusions, True, checks)

    def record_proof(self, session_id: str, index: int) -> RecordProof | None:
        """The proof file of one record, or None while no checkpoint covers it. Reads the one
        archive block that holds the record and proves that record alone."""
        try:
            record = self._reader.record(session_id, index)
            if record is None:
                raise InvalidQuery(f"session {session_id!r} has no record {index}")
            segments = queries.session_segments(self._index, session_id, from_index=index)
            proofs = self._prove_records(session_id, [record], segments)
        except ObjectStoreError as exc:
            raise ArchiveUnavailable(f"object store unavailable: {exc}") from exc
        if proofs.failure is not None:
            raise VerificationFailed(
                proofs.failure.check, proofs.failure.detail, session_id=session_id, record_index=index
            )
        inclusion = proofs.records[0]
        if inclusion.status != "included" or inclusion.leaf_index is None:
            return None
        checkpoint = proofs.checkpoints[inclusion.origin]
        return RecordProof(record.raw, inclusion.leaf_index, inclusion.proof, checkpoint.note)


def leaf_entries(records: Sequence[bytes]) -> list[bytes]:
    """The leaf entries of records given by their exact bytes, in order."""
    return [entry_for_record(raw).encode() for raw in records]


__all__ = [
    "PROOF_HEADER",
    "PROOF_SUFFIX",
    "LatestCheckpoints",
    "LedgerView",
    "ProofService",
    "ProvenRecord",
    "RecordInclusion",
    "RecordProof",
    "SessionProofs",
    "VerificationFailed",
    "leaf_entries",
    "open_log_checkpoint",
    "verify_record_proof",
]
