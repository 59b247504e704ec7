"""Offline verification of an archive and its ledger with nothing but the log's public key.

`audit_archive` checks everything, `audit_session` one session, `audit_proof` one proof file.
Each raises `replay.proofs.VerificationFailed` at the first failure, naming the log, leaf,
session, record, object or ledger path and the check; the checks are numbered below and in the
code, and their names are what the error's ``check`` says.

Whole archive, per shard (a shard is one epoch and partition of the archive, and its log):
  1. checkpoint.*: every stored checkpoint is signed by the log's key under the shard's origin and
     stored under its own size;
  2. tile.*: every tile of the latest checkpoint's tree is consistent with its signed root
     (`ledger.tiles.verify_tiles`);
  3. bundle.*: every entry bundle's leaf hashes are the verified level-0 tile's, and each entry
     is well formed;
  4. checkpoint.consistency: each checkpoint's root is the root of the first ``size`` verified
     leaves, so every checkpoint is a prefix of the latest (the same as a consistency proof
     between each successive pair, for a fraction of the hashing);
  5. archive.*: the archive objects, in key order, hold exactly the ledgered records in leaf
     order: each record has the entry's session, index and kind (``archive.record_identity``:
     deleted, inserted or reordered records), its length, and its hash (``archive.record_hash``:
     an edited record); blocks hold nothing else; the covered records end on an object boundary;
     and the archive does not end before the latest checkpoint (``archive.missing``);
  6. chain.*: every session's hash chain (the rules of `ledger.chain.verify_chain`), across objects
     and shards.
Then the log of logs:
  7. root.checkpoint.*, root.tile.*, root.bundle.*, root.checkpoint.consistency: as 1-4;
  8. root.shard_checkpoint: every shard checkpoint the root recorded is still stored, byte for byte,
     so a shard dropped or rolled back whole (its archive and its log) is detected;
And, given a checkpoint the auditor kept from an earlier run (root or shard):
  9. consistency.*: that log has not shrunk, and the kept checkpoint is a prefix of the current one.

Records written after the latest checkpoint are reported as not yet covered, not as failures; so
is a missing log of logs (a new deployment, or one deleted: only a kept checkpoint can tell).

Speed: a block is checked whole with list operations (`_Auditor._block_fast`); only a block that
fails is checked again record by record (`_Auditor._block_slow`), which names the failure. The
hashing is the least the checks need: each record once, each leaf entry once, the tree once.
"""

from __future__ import annotations

import hashlib
import io
import logging
import multiprocessing
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_EXCEPTION, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from functools import cache, partial
from itertools import accumulate
from typing import Any, NoReturn

import fastavro

from ledger.chain import GENESIS, ChainBroken, verify_chain
from ledger.checkpoint import Checkpoint
from ledger.log import (
    ENTRY_FORMAT,
    ENTRY_HEAD,
    LEDGER_PREFIX,
    MISSING,
    LeafEntry,
    ObjectMarker,
    RootEntry,
    SignedCheckpoint,
    ledger_prefix,
    raw_blocks,
    read_record_head,
    record_prefix,
    zigzag_long,
)
from ledger.merkle import EMPTY_ROOT, HASH_SIZE, CompactRange, ProofError, leaf_hash, node_hash
from ledger.signer import Verifier
from ledger.tiles import (
    TILE_WIDTH,
    BundleID,
    TileError,
    TileReader,
    decode_bundle,
    read_bundle,
    read_bundle_bytes,
    verify_tiles,
)
from replay.proofs import (
    LedgerView,
    ProvenRecord,
    RecordProof,
    VerificationFailed,
    open_log_checkpoint,
    verify_record_proof,
)
from schemas.sealed import RECORD_KINDS
from storage.archive import ArchiveFormatError, ArchiveHeader, iter_blocks, parse_header
from storage.objectstore import ObjectNotFound, ObjectStore

logger = logging.getLogger(__name__)

# (stage, done, total): called often during long runs; cheap callers only.
Progress = Callable[[str, int, int], None]

_SEAL = RECORD_KINDS.index("SEAL")
_ENTRY_HEAD = ENTRY_HEAD
# What follows a record's index: its kind (zigzag of the enum position) and prev_hash's length (32).
_KIND_TAILS = tuple(bytes((2 * kind, 2 * HASH_SIZE)) for kind in range(len(RECORD_KINDS)))
# verify_chain's words, so that both verifiers say the same thing about the same break
_UNLINKED = "does not match the previous record's hash"
_AFTER_SEAL = "record follows the session's SEAL record"
_BAD_SEAL = "seal record's count or head does not match the chain"
_sha256 = hashlib.sha256


def _no_progress(stage: str, done: int, total: int) -> None:
    return None


# -- reports ----------------------------------------------------------------------------------


@dataclass
class ShardReport:
    origin: str
    epoch: str
    partition: int
    checkpoints: int = 0
    size: int = 0  # leaves under the latest checkpoint
    root_hash: bytes = b""
    objects: int = 0
    records: int = 0
    record_bytes: int = 0
    uncovered_objects: int = 0
    uncovered_records: int = 0


@dataclass
class AuditReport:
    shards: list[ShardReport] = field(default_factory=list)
    root: SignedCheckpoint | None = None
    root_checkpoints: int = 0
    sessions: int = 0
    sealed_sessions: int = 0
    kept: Checkpoint | None = None
    seconds: float = 0.0

    @property
    def records(self) -> int:
        return sum(shard.records for shard in self.shards)

    @property
    def record_bytes(self) -> int:
        return sum(shard.record_bytes for shard in self.shards)

    @property
    def uncovered_records(self) -> int:
        return sum(shard.uncovered_records for shard in self.shards)

    def summary(self) -> str:
        lines = [
            f"OK: {self.records} records of {self.sessions} sessions ({self.sealed_sessions} sealed) "
            f"in {len(self.shards)} shard(s) match their signed logs ({self.seconds:.1f}s)"
        ]
        for shard in self.shards:
            lines.append(
                f"  {shard.origin}: {shard.size} leaves, {shard.checkpoints} checkpoints, "
                f"{shard.objects} archive objects, root {shard.root_hash.hex()}"
            )
            if shard.uncovered_records:
                lines.append(
                    f"    not yet covered by a checkpoint: {shard.uncovered_records} records in "
                    f"{shard.uncovered_objects} newer objects (not verified)"
                )
        if self.root is not None:
            lines.append(
                f"  {self.root.checkpoint.origin}: {self.root.size} shard checkpoints recorded, "
                f"{self.root_checkpoints} checkpoints"
            )
        elif any(shard.checkpoints for shard in self.shards):
            # Not yet written (a new deployment), or deleted: only a kept checkpoint can tell.
            lines.append(
                "  WARNING: no log of logs; dropped shards cannot be detected without a kept checkpoint"
            )
        if self.kept is not None:
            lines.append(f"  consistent with the kept checkpoint {self.kept.origin} @ {self.kept.size}")
        return "\n".join(lines)


# -- session chains across objects and shards --------------------------------------------------


@dataclass
class _Run:
    """A session's consecutive records within one shard, as far as they have been read."""

    origin: str
    first_index: int
    first_prev: bytes
    first_leaf: int
    next_index: int
    head: bytes
    sealed: bool


class _Chains:
    """Checks every session's chain while records stream by (numbered as in verify_chain).

    Within a shard a session's records must follow each other; a session may continue in another
    shard (the events topic was recreated or repartitioned), so runs are stitched at the end.
    """

    def __init__(self) -> None:
        self.runs: dict[str, list[_Run]] = {}
        self._current: dict[str, _Run] = {}  # session → its run in the shard being read

    def start_shard(self) -> None:
        self._current = {}

    @staticmethod
    def fail(check: str, detail: str, run: _Run, session_id: str, *, index: int, leaf: int) -> NoReturn:
        raise VerificationFailed(
            f"chain.{check}", detail, origin=run.origin, leaf=leaf, session_id=session_id, record_index=index
        )

    def add(self, origin: str, leaf: int, entry: LeafEntry, *, prev: bytes, seal: Any) -> None:
        """One record: its ledger entry, its prev_hash, and the seal field of a SEAL record."""
        session_id, index = entry.session_id, entry.index
        run = self._current.get(session_id)
        if run is None:
            run = _Run(origin, index, prev, leaf, index, prev, False)
            self._current[session_id] = run
            self.runs.setdefault(session_id, []).append(run)
        if index != run.next_index:  # 2
            self.fail("index", f"expected record {run.next_index}", run, session_id, index=index, leaf=leaf)
        if prev != run.head:  # 3
            self.fail("prev_hash", _UNLINKED, run, session_id, index=index, leaf=leaf)
        if run.sealed:  # 4
            self.fail("after_seal", _AFTER_SEAL, run, session_id, index=index, leaf=leaf)
        if seal is not None:  # 5
            if seal["record_count"] != index or seal["head_hash"] != run.head:
                self.fail("seal", _BAD_SEAL, run, session_id, index=index, leaf=leaf)
            run.sealed = True
        run.head = entry.record_hash
        run.next_index = index + 1

    def add_run(
        self,
        origin: str,
        first_leaf: int,
        session_id: str,
        *,
        first_index: int,
        count: int,
        prev: bytes,
        head: bytes,
        seal: tuple[Any, bytes] | None,
    ) -> bool:
        """A block's records at once, already linked among themselves: checks 2-5 at its edges
        (``seal``: the SEAL record's seal field and the head before it, when the block ends with
        one). False, recording nothing, when any check fails: `add` per record then says which."""
        run = self._current.get(session_id)
        if run is not None and (run.next_index != first_index or run.head != prev or run.sealed):
            return False
        if seal is not None and (
            seal[0]["record_count"] != first_index + count - 1 or seal[0]["head_hash"] != seal[1]
        ):
            return False
        if run is None:
            run = _Run(origin, first_index, prev, first_leaf, first_index, prev, False)
            self._current[session_id] = run
            self.runs.setdefault(session_id, []).append(run)
        run.next_index = first_index + count
        run.head = head
        run.sealed = seal is not None
        return True

    def stitch(self) -> tuple[int, int]:
        """Join each session's runs in index order; return (sessions, sealed sessions)."""
        sealed = 0
        for session_id, runs in self.runs.items():
            runs.sort(key=lambda run: run.first_index)
            head, expected, closed = GENESIS, 0, False
            for run in runs:
                at = {"index": run.first_index, "leaf": run.first_leaf}
                if run.first_index != expected:  # 2
                    detail = f"expected record {expected}: records {expected}.. are in no shard"
                    if run.first_index < expected:
                        detail = f"records from {run.first_index} on are in two shards"
                    self.fail("index", detail, run, session_id, **at)
                if run.first_prev != head:  # 3
                    self.fail("prev_hash", _UNLINKED, run, session_id, **at)
                if closed:  # 4
                    self.fail("after_seal", _AFTER_SEAL, run, session_id, **at)
                head, expected, closed = run.head, run.next_index, run.sealed
            sealed += closed
        return len(self.runs), sealed


# -- a log's tree: checkpoints, tiles, bundles -------------------------------------------------


def _split_bundle(data: bytes, width: int) -> list[bytes] | None:
    """A bundle's entries (`ledger.tiles.decode_bundle` without its messages); None if malformed."""
    try:
        return decode_bundle(data, BundleID(0, width))
    except TileError:
        return None


def _prefix_root(upper: CompactRange, tail: Sequence[bytes]) -> bytes:
    """The root of a tree whose first leaves are the full bundles in ``upper`` (level-8 nodes) and
    whose last ``len(tail)`` < 256 leaves have the hashes ``tail``: the complete subtrees of both,
    left to right, folded from the right (RFC 6962's split, read off the size's binary digits)."""
    parts = [node for _, _, node in upper.nodes()]
    if tail:
        rest = CompactRange()
        rest.extend(tail)
        parts.extend(node for _, _, node in rest.nodes())
    if not parts:
        return EMPTY_ROOT
    result = parts[-1]
    for left in reversed(parts[:-1]):
        result = node_hash(left, result)
    return result


class _EntryStream:
    """The verified entries of a log in leaf order, handed out in runs of any length."""

    def __init__(self, bundles: Iterator[tuple[int, list[bytes]]]) -> None:
        self._bundles = bundles
        self._buffer: list[bytes] = []
        self._position = 0
        self.next_leaf = 0

    def take(self, count: int) -> list[bytes]:
        """The next ``count`` entries, or fewer where the log ends."""
        out = self._buffer[self._position : self._position + count]
        self._position += len(out)
        while len(out) < count:
            bundle = next(self._bundles, None)
            if bundle is None:
                break
            self._buffer, self._position = bundle[1], 0
            more = self._buffer[: count - len(out)]
            self._position = len(more)
            out.extend(more)
        self.next_leaf += len(out)
        return out

    def drain(self) -> None:
        for _ in self._bundles:  # runs the remaining checks 3-4
            pass


class _LogTree:
    """Checks 1-4 for one log (shard or root): its checkpoints, tiles and entry bundles. Yields the
    entries of the latest checkpoint's tree, each already tied to the signed root."""

    def __init__(self, view: LedgerView, origin: str, check_prefix: str, progress: Progress) -> None:
        self.view = view
        self.origin = origin
        self.check_prefix = check_prefix
        self.progress = progress
        self.checkpoints: list[SignedCheckpoint] = []

    def fail(self, check: str, detail: str, **where: Any) -> VerificationFailed:
        return VerificationFailed(f"{self.check_prefix}{check}", detail, origin=self.origin, **where)

    @property
    def latest(self) -> SignedCheckpoint | None:
        return self.checkpoints[-1] if self.checkpoints else None

    def read(self, path: str) -> bytes:
        return self.view.read(self.origin, path)

    def open_checkpoints(self) -> list[SignedCheckpoint]:
        keys = self.view.checkpoint_keys(self.origin)
        for number, key in enumerate(keys):  # 1
            size_text = key.rsplit("/", 1)[-1]
            if not size_text.isdigit() or len(size_text) != 20:
                raise self.fail("checkpoint.key", "not a checkpoint key", path=key)
            try:
                self.checkpoints.append(self.view.checkpoint_at(self.origin, int(size_text)))
            except VerificationFailed as exc:
                raise self.fail(exc.check, exc.detail, path=key) from exc
            self.progress(f"{self.origin} checkpoints", number + 1, len(keys))
        return self.checkpoints

    def check_tiles(self) -> None:
        latest = self.latest
        if latest is None:
            return
        total = latest.size
        try:  # 2
            verify_tiles(
                self.read,
                latest.size,
                latest.checkpoint.root_hash,
                entries=False,
                missing=MISSING,
                progress=lambda done, size: self.progress(f"{self.origin} tiles", done, total),
            )
        except TileError as exc:
            raise self.fail(
                f"tile.{exc.check}", exc.detail, path=ledger_prefix(self.origin) + exc.path
            ) from exc

    def bundles(self) -> Iterator[tuple[int, list[bytes]]]:
        """(first leaf, entries) of each bundle of the latest tree, checks 3 and 4 on the way.

        Run after `check_tiles`: the tiles are then tied to the signed root, so a bundle whose
        leaf hashes are its level-0 tile's is too. A checkpoint's root at size n is rebuilt from
        the verified level-8 nodes before n (from the level-1 tiles) and the leaf hashes of n's
        bundle: no tree is hashed twice.
        """
        latest = self.latest
        if latest is None:
            return
        size = latest.size
        reader = TileReader(self.read, size, missing=MISSING)
        pending = list(self.checkpoints[:-1])  # each must be a prefix of the leaves
        pending.reverse()  # pop() from the smallest
        upper = CompactRange()  # the full bundles' subtrees (level 8), from the verified tiles
        sha = _sha256
        leaf_prefix = b"\x00"
        for bundle_index in range((size + TILE_WIDTH - 1) // TILE_WIDTH):
            width = min(size - bundle_index * TILE_WIDTH, TILE_WIDTH)
            first = bundle_index * TILE_WIDTH
            bundle = BundleID(bundle_index, width)
            path = ledger_prefix(self.origin) + bundle.path
            try:  # 3
                entries = _split_bundle(self.read(bundle.path), width)
            except ObjectNotFound:
                entries = None
            if entries is None:  # gone, partial-and-gone, or malformed: read_bundle says which
                try:
                    entries = read_bundle(self.read, bundle, missing=MISSING)
                except TileError as exc:
                    raise self.fail(f"bundle.{exc.check}", exc.detail, path=path) from exc
            hashes = [sha(leaf_prefix + entry).digest() for entry in entries]
            try:
                same = b"".join(hashes) == reader.tile_bytes(0, bundle_index)
            except TileError:
                same = False
            if not same:
                tile = reader.tile_hashes(0, bundle_index)  # raises a missing or short tile as before
                offset = next(i for i, (a, b) in enumerate(zip(hashes, tile, strict=True)) if a != b)
                raise self.fail(
                    "bundle.leaf_hash",
                    "entry does not hash to the (verified) level-0 tile's leaf hash",
                    leaf=first + offset,
                    path=path,
                )
            while pending and pending[-1].size <= first + width:  # 4
                checkpoint = pending.pop()
                if _prefix_root(upper, hashes[: checkpoint.size - first]) != checkpoint.checkpoint.root_hash:
                    raise self.fail(
                        "checkpoint.consistency",
                        f"checkpoint {checkpoint.size} is not a prefix of checkpoint {size}",
                        path=checkpoint.key,
                    )
            if width == TILE_WIDTH:
                upper.append(reader.node_hash(8, bundle_index))
            yield first, entries


# -- the archive --------------------------------------------------------------------------------


def archive_shards(store: ObjectStore) -> dict[tuple[str, int], list[str]]:
    """(epoch, partition) → the seal worker's archive object keys, in order. Top-level folders
    are found by jumping past each one, so the ledger's own millions of keys are never listed."""
    shards: dict[tuple[str, int], list[str]] = {}
    cursor = ""
    while True:
        first = next(iter(store.list_keys("", cursor)), None)
        if first is None:
            return shards
        top = first.split("/", 1)[0]
        if top + "/" != LEDGER_PREFIX and "/" in first:
            for key in store.list_keys(top + "/"):
                parts = key.split("/")
                if (
                    len(parts) == 3
                    and parts[1].startswith("p")
                    and parts[1][1:].isdigit()
                    and parts[2].endswith(".avro")
                ):
                    shards.setdefault((top, int(parts[1][1:])), []).append(key)
        cursor = top + "0"  # "0" sorts right after "/": past every key under top/


class _Auditor:
    def __init__(self, store: ObjectStore, public_key: Verifier, progress: Progress, deep: bool) -> None:
        self.store = store
        self.public_key = public_key
        self.view = LedgerView(store, public_key)
        self.progress = progress
        self.deep = deep
        self.chains = _Chains()
        self.shard_checkpoints: dict[str, list[SignedCheckpoint]] = {}

    # -- one shard ----------------------------------------------------------------------------

    def audit_shard(self, epoch: str, partition: int, keys: Sequence[str]) -> ShardReport:
        origin = self.view.shard_origin(epoch, partition)
        report = ShardReport(origin, epoch, partition)
        tree = _LogTree(self.view, origin, "", self.progress)
        checkpoints = tree.open_checkpoints()  # 1
        self.shard_checkpoints[origin] = checkpoints
        report.checkpoints = len(checkpoints)
        self.chains.start_shard()
        latest = tree.latest
        if latest is None:
            report.uncovered_objects = len(keys)
            report.uncovered_records = sum(self._count_records(key) for key in keys)
            return report
        report.size, report.root_hash = latest.size, latest.checkpoint.root_hash
        tree.check_tiles()  # 2
        entries = _EntryStream(tree.bundles())  # 3, 4 as they are read
        for key in keys:
            if entries.next_leaf == latest.size:
                report.uncovered_objects += 1
                report.uncovered_records += self._count_records(key)
                continue
            self._audit_object(origin, key, entries, size=latest.size, report=report)  # 5, 6
            report.objects += 1
            self.progress(f"{origin} records", entries.next_leaf, latest.size)
            if entries.next_leaf == latest.size:
                self._check_boundary(origin, latest, key)
        if entries.next_leaf < latest.size:  # 5: the archive ends before the log
            leaf = entries.next_leaf
            missing = entries.take(1)
            where: dict[str, Any] = {}
            if missing:
                entry = LeafEntry.decode(missing[0])
                where = {"session_id": entry.session_id, "record_index": entry.index}
            raise VerificationFailed(
                "archive.missing",
                f"the signed log has {latest.size} leaves, the archive holds only {leaf}: "
                "the records from this leaf on were removed",
                origin=origin,
                leaf=leaf,
                **where,
            )
        entries.drain()
        return report

    def _check_boundary(self, origin: str, latest: SignedCheckpoint, key: str) -> None:
        """The latest checkpoint ends with the object its position record names (a hint written
        with it; a mismatch means objects were renamed or merged)."""
        try:
            named = self.view.read(origin, f"position/{latest.key.rsplit('/', 1)[-1]}").decode("utf-8")
        except ObjectNotFound:
            return
        if named != key:
            raise VerificationFailed(
                "archive.boundary",
                f"checkpoint {latest.size} was signed after object {named}, the archive's is {key}",
                origin=origin,
                leaf=latest.size - 1,
                object_key=key,
            )

    def _count_records(self, key: str) -> int:
        try:
            return sum(block.count for block in raw_blocks(self.store.get(key)))
        except ArchiveFormatError:
            return 0

    def _audit_object(
        self, origin: str, key: str, entries: _EntryStream, *, size: int, report: ShardReport
    ) -> None:
        """Checks 5 and 6 for one archive object, block by block."""
        data = self.store.get(key)
        try:
            blocks = list(raw_blocks(data))
            header = parse_header(data)
        except ArchiveFormatError as exc:
            raise VerificationFailed(
                "archive.format", str(exc), origin=origin, leaf=entries.next_leaf, object_key=key
            ) from exc
        decoded: list[list[bytes]] | None = None
        if self.deep:
            decoded = [[record.raw for record in records] for _, records in iter_blocks(data)]
        for number, block in enumerate(blocks):
            first_leaf = entries.next_leaf
            run = entries.take(block.count)
            ok = (
                len(run) == block.count
                and self._block_fast(origin, first_leaf, header, block.payload, run)
                and (decoded is None or decoded[number] == _cut(block.payload, run))
            )
            if not ok:  # find and name the first failure, record by record
                self._block_slow(
                    origin, key, header, block.payload, run, first_leaf=first_leaf, size=size, number=number
                )
                if decoded is not None and decoded[number] != _cut(block.payload, run):
                    raise VerificationFailed(
                        "archive.record_boundary",
                        "the ledger cut this block elsewhere than Avro decoding does",
                        origin=origin,
                        leaf=first_leaf,
                        object_key=key,
                    )
            report.records += block.count
            report.record_bytes += len(block.payload)

    def _block_fast(
        self, origin: str, first_leaf: int, header: ArchiveHeader, payload: bytes, run: list[bytes]
    ) -> bool:
        """Checks 5 and 6 for a whole block in list operations; False means "look closer", and
        nothing has been recorded then. A block is one session's consecutive records, so the
        entries of a sound block share a session id and count up, and their records tile it."""
        count = len(run)
        head_size = _ENTRY_HEAD.size
        versions, kinds, lengths, indexes, hashes, _ = zip(*map(_ENTRY_HEAD.unpack_from, run), strict=True)
        sid = run[0][head_size:]
        first_index = indexes[0]
        if (
            [entry[head_size:] for entry in run].count(sid) != count
            or indexes != tuple(range(first_index, first_index + count))
            or versions.count(ENTRY_FORMAT) != count
            or max(kinds) >= len(RECORD_KINDS)
        ):
            return False
        ends = list(accumulate(lengths))
        if ends[-1] != len(payload):
            return False
        starts = [0, *ends[:-1]]
        sid_prefix = zigzag_long(len(sid)) + sid
        # What follows the session id: the index, the kind and prev_hash's length, from a table
        # of EVENT records (nearly all of them), patched where another kind stands.
        table = _event_tails()
        if first_index + count <= len(table):
            tails = table[first_index : first_index + count]
        else:
            tails = tuple(zigzag_long(i) + _KIND_TAILS[0] for i in range(first_index, first_index + count))
        if kinds.count(0) != count:
            tails = tuple(
                zigzag_long(first_index + offset) + _KIND_TAILS[kind] if kind else tail
                for offset, (tail, kind) in enumerate(zip(tails, kinds, strict=True))
            )
        heads = [sid_prefix + tail for tail in tails]
        sha = _sha256
        digests = [sha(payload[start:end]).digest() for start, end in zip(starts, ends, strict=True)]
        if digests != list(hashes):
            return False
        # Each record's identity and prev_hash, compared in place: its head, then the digest of the
        # record before it (the first record's prev_hash is whatever it says; add_run checks it).
        prev = payload[len(heads[0]) : len(heads[0]) + HASH_SIZE]
        expected = [head + digest for head, digest in zip(heads, [prev, *digests[:-1]], strict=True)]
        if not all(map(payload.startswith, expected, starts)):
            return False
        seals = kinds.count(_SEAL)
        if seals and (seals > 1 or kinds[-1] != _SEAL):
            return False
        seal = _seal_of(header, payload[starts[-1] :]) if seals else None
        return self.chains.add_run(
            origin,
            first_leaf,
            sid.decode("utf-8"),
            first_index=first_index,
            count=count,
            prev=prev,
            head=digests[-1],
            seal=(seal, digests[-2] if count > 1 else prev) if seal is not None else None,
        )

    def _block_slow(
        self,
        origin: str,
        key: str,
        header: ArchiveHeader,
        payload: bytes,
        run: list[bytes],
        *,
        first_leaf: int,
        size: int,
        number: int,
    ) -> None:
        """Checks 5 and 6 record by record, raising at the first failure with its location."""
        position = 0
        for offset, raw_entry in enumerate(run):
            at = first_leaf + offset
            try:
                entry = LeafEntry.decode(raw_entry)
            except ValueError as exc:
                raise VerificationFailed("bundle.entry", str(exc), origin=origin, leaf=at) from exc
            expected = record_prefix(entry.session_id, entry.index) + _KIND_TAILS[entry.kind]
            if payload[position : position + len(expected)] != expected:
                raise self._identity_failure(origin, at, key, entry, payload=payload, position=position)
            end = position + entry.length
            if end > len(payload):
                raise VerificationFailed(
                    "archive.record_length",
                    f"ledgered as {entry.length} bytes, the block has {len(payload) - position} left",
                    origin=origin,
                    leaf=at,
                    session_id=entry.session_id,
                    record_index=entry.index,
                    object_key=key,
                )
            raw = payload[position:end]
            if _sha256(raw).digest() != entry.record_hash:
                raise VerificationFailed(
                    "archive.record_hash",
                    "the archived record's bytes are not the ones ledgered (edited)",
                    origin=origin,
                    leaf=at,
                    session_id=entry.session_id,
                    record_index=entry.index,
                    seq=_seq_of(header, raw),
                    object_key=key,
                )
            seal = _seal_of(header, raw) if entry.kind == _SEAL else None
            self.chains.add(
                origin, at, entry, prev=raw[len(expected) : len(expected) + HASH_SIZE], seal=seal
            )  # 6
            position = end
        leaf = first_leaf + len(run)
        if leaf >= size and position < len(payload):
            raise VerificationFailed(
                "archive.boundary",
                f"the latest checkpoint ({size} leaves) ends inside this object",
                origin=origin,
                leaf=leaf,
                object_key=key,
            )
        if position != len(payload):
            raise VerificationFailed(
                "archive.block",
                f"block {number} holds {len(payload) - position} bytes beyond its ledgered records",
                origin=origin,
                leaf=leaf - 1,
                object_key=key,
            )

    @staticmethod
    def _identity_failure(
        origin: str, leaf: int, key: str, entry: LeafEntry, *, payload: bytes, position: int
    ) -> VerificationFailed:
        try:
            head = read_record_head(payload, position)
            found = f"session {head.session_id} record {head.index} ({RECORD_KINDS[head.kind]})"
        except ValueError:
            found = "bytes that do not start a sealed record"
        return VerificationFailed(
            "archive.record_identity",
            f"the log has session {entry.session_id} record {entry.index} ({entry.kind_name}) here, "
            f"the archive has {found}: records were deleted, inserted or reordered",
            origin=origin,
            leaf=leaf,
            session_id=entry.session_id,
            record_index=entry.index,
            object_key=key,
        )

    # -- the log of logs ----------------------------------------------------------------------

    def audit_root(self) -> tuple[SignedCheckpoint | None, int, list[tuple[int, RootEntry]]]:
        tree = _LogTree(self.view, self.view.root_origin, "root.", self.progress)
        checkpoints = tree.open_checkpoints()  # 7
        tree.check_tiles()
        entries: list[tuple[int, RootEntry]] = []
        for first, bundle in tree.bundles():
            for leaf, raw in enumerate(bundle, start=first):
                try:
                    entries.append((leaf, RootEntry.decode(raw)))
                except ValueError as exc:
                    raise tree.fail("bundle.entry", str(exc), leaf=leaf) from exc
        return tree.latest, len(checkpoints), entries

    def check_root_entries(self, entries: list[tuple[int, RootEntry]]) -> None:
        """8: every shard checkpoint the root recorded is still there, byte for byte."""
        sizes = {origin: {cp.size: cp for cp in cps} for origin, cps in self.shard_checkpoints.items()}
        for number, (leaf, entry) in enumerate(entries):
            stored = sizes.get(entry.origin, {}).get(entry.size)
            if stored is None:
                have = sorted(sizes.get(entry.origin, {}))
                state = f"its latest is {have[-1]}" if have else "the shard has no checkpoints at all"
                raise VerificationFailed(
                    "root.shard_checkpoint",
                    f"the log of logs recorded shard checkpoint {entry.size}, which is gone ({state}): "
                    "the shard was dropped or rolled back",
                    origin=entry.origin,
                    leaf=entry.size,
                    path=f"{self.view.root_origin} leaf {leaf}",
                )
            if (
                _sha256(stored.note).digest() != entry.note_hash
                or stored.checkpoint.root_hash != entry.root_hash
            ):
                raise VerificationFailed(
                    "root.shard_checkpoint",
                    f"shard checkpoint {entry.size} is not the one the log of logs recorded",
                    origin=entry.origin,
                    path=stored.key,
                )
            self.progress(f"{self.view.root_origin} entries", number + 1, len(entries))

    # -- a kept checkpoint --------------------------------------------------------------------

    def check_kept(self, note: bytes, current: dict[str, SignedCheckpoint | None]) -> Checkpoint:
        """9: the log of the kept checkpoint still extends it."""
        kept = open_log_checkpoint(note, self.public_key, what="kept")
        latest = current.get(kept.origin)
        if latest is None:
            latest = self.view.latest(kept.origin)
        if latest is None:
            raise VerificationFailed(
                "consistency.rollback",
                f"the kept checkpoint has {kept.size} leaves, the log has no checkpoint at all",
                origin=kept.origin,
            )
        self.view.verify_consistent(kept, latest.checkpoint)
        return kept


def _decode(header: ArchiveHeader, raw: bytes) -> Any:
    """One record decoded with the archive's writer schema (records that are decoded at all are
    few: SEAL records here, a single session's in `audit_session`)."""
    value: Any = fastavro.schemaless_reader(
        io.BytesIO(raw), header.schema, None, return_record_name=True, return_record_name_override=True
    )
    return value


@cache
def _event_tails() -> tuple[bytes, ...]:
    """What follows the session id in EVENT record i (index, kind, prev_hash length), for the
    first 16384 indexes, built once."""
    return tuple(zigzag_long(i) + _KIND_TAILS[0] for i in range(1 << 14))


def _cut(payload: bytes, run: list[bytes]) -> list[bytes]:
    """A block cut into records by the ledgered lengths."""
    out, position = [], 0
    for entry in run:
        length = _ENTRY_HEAD.unpack_from(entry)[2]
        out.append(payload[position : position + length])
        position += length
    return out


def _seal_of(header: ArchiveHeader, raw: bytes) -> Any:
    """The seal field of a SEAL record."""
    return _decode(header, raw)["seal"] or {"record_count": -1, "head_hash": b""}


def _seq_of(header: ArchiveHeader, raw: bytes) -> int | None:
    try:
        seq = _decode(header, raw).get("source_seq")
    except Exception:  # an edited record need not decode; the seq is only a courtesy
        return None
    return int(seq) if seq is not None else None


def audit_archive(
    store: ObjectStore,
    public_key: Verifier,
    *,
    kept_checkpoint: bytes | None = None,
    progress: Progress | None = None,
    deep: bool = False,
    jobs: int = 1,
    reopen: Callable[[], ObjectStore] | None = None,
) -> AuditReport:
    """Verify the whole archive and its ledger (checks 1-9 of the module docstring).

    ``kept_checkpoint``: a signed checkpoint (root or shard) saved from an earlier audit or from
    /api/v1/checkpoints/latest; a log that no longer extends it was rolled back.
    ``deep``: also decode every record with Avro and compare the ledger's cuts (slow).
    ``jobs``: shards verified in that many processes at once (forked; each opens its own store
    with ``reopen``, default: shares ``store``, right for a directory, not for an S3 client).
    Shards are independent until their sessions' chains are joined, which happens here after.
    The failure reported is the first in shard order either way.
    """
    started = time.perf_counter()
    progress = progress or _no_progress
    auditor = _Auditor(store, public_key, progress, deep)
    report = AuditReport()
    root, report.root_checkpoints, root_entries = auditor.audit_root()  # 7
    report.root = root
    shards = archive_shards(store)
    for origin in {entry.origin for _, entry in root_entries} | set(auditor.view.shard_origins()):
        named = _shard_of(auditor.view, origin)
        if named is None:
            raise VerificationFailed("root.shard_origin", "not a shard of this log", origin=origin)
        shards.setdefault(named, [])
    jobs_list = [(epoch, partition, keys) for (epoch, partition), keys in sorted(shards.items())]
    if jobs > 1 and len(jobs_list) > 1:
        results = _audit_shards_in_processes(
            jobs_list, reopen or (lambda: store), public_key, deep=deep, jobs=jobs, progress=progress
        )
    else:
        results = []
        for epoch, partition, keys in jobs_list:  # 1-6
            shard = auditor.audit_shard(epoch, partition, keys)
            results.append((shard, {}, auditor.shard_checkpoints[shard.origin]))
    for shard, runs, checkpoints in results:
        report.shards.append(shard)
        auditor.shard_checkpoints[shard.origin] = checkpoints
        for session_id, session_runs in runs.items():
            auditor.chains.runs.setdefault(session_id, []).extend(session_runs)
    report.sessions, report.sealed_sessions = auditor.chains.stitch()  # 6, across shards
    auditor.check_root_entries(root_entries)  # 8
    if kept_checkpoint is not None:  # 9
        current: dict[str, SignedCheckpoint | None] = {auditor.view.root_origin: root}
        for origin, checkpoints in auditor.shard_checkpoints.items():
            current[origin] = checkpoints[-1] if checkpoints else None
        report.kept = auditor.check_kept(kept_checkpoint, current)
    report.seconds = time.perf_counter() - started
    return report


def _shard_of(view: LedgerView, origin: str) -> tuple[str, int] | None:
    """(epoch, partition) of a shard origin of this key, or None."""
    head, _, partition_part = origin.rpartition("/")
    epoch = head.rpartition("/")[2]
    if not partition_part.startswith("p") or not partition_part[1:].isdigit():
        return None
    try:
        named = (epoch, int(partition_part[1:]))
        return named if view.shard_origin(*named) == origin else None
    except ValueError:
        return None


_ShardResult = tuple[ShardReport, dict[str, list[_Run]], list[SignedCheckpoint]]
_job_context: tuple[ObjectStore, Verifier, bool, Any] | None = None
_PROGRESS_SECONDS = 0.25


def _start_job(reopen: Callable[[], ObjectStore], public_key: Verifier, deep: bool, counters: Any) -> None:
    global _job_context  # noqa: PLW0603  (one per worker process, set once by the pool)
    _job_context = (reopen(), public_key, deep, counters)


def _audit_shard_job(number: int, epoch: str, partition: int, keys: list[str]) -> _ShardResult:
    assert _job_context is not None
    store, public_key, deep, counters = _job_context

    def report(stage: str, done: int, total: int) -> None:
        # Records checked and the shard's size, in the slots of shard ``number``, for the parent
        # to sum into one progress line.
        if stage.endswith(" records"):
            counters[2 * number], counters[2 * number + 1] = done, total

    auditor = _Auditor(store, public_key, report, deep)
    shard = auditor.audit_shard(epoch, partition, keys)
    return shard, auditor.chains.runs, auditor.shard_checkpoints[shard.origin]


def _audit_shards_in_processes(
    jobs_list: list[tuple[str, int, list[str]]],
    reopen: Callable[[], ObjectStore],
    public_key: Verifier,
    *,
    deep: bool,
    jobs: int,
    progress: Progress,
) -> list[_ShardResult]:
    # fork: the children inherit the code, the store factory and the shared progress counters as
    # they are; nothing is pickled but each shard's name going in and its report coming out.
    context = multiprocessing.get_context("fork")
    workers = min(jobs, len(jobs_list))
    counters = context.Array("q", 2 * len(jobs_list), lock=False)
    with ProcessPoolExecutor(
        workers, mp_context=context, initializer=_start_job, initargs=(reopen, public_key, deep, counters)
    ) as pool:
        futures = [pool.submit(_audit_shard_job, number, *job) for number, job in enumerate(jobs_list)]
        try:
            pending = set(futures)
            while pending:
                _, pending = wait(pending, timeout=_PROGRESS_SECONDS, return_when=FIRST_EXCEPTION)
                progress("records", sum(counters[0::2]), sum(counters[1::2]))
                failed = next((n for n, future in enumerate(futures) if _failed(future)), None)
                if failed is not None:
                    # The report names the first failure in shard order: only earlier shards can
                    # still change it, so later ones are not started (or waited for).
                    for future in futures[failed + 1 :]:
                        future.cancel()
                    pending = {future for future in futures[:failed] if not future.done()}
            return [future.result() for future in futures]  # raises the first failure in shard order
        finally:
            for future in futures:
                future.cancel()


def _failed(future: Future[_ShardResult]) -> bool:
    return future.done() and not future.cancelled() and future.exception() is not None


# -- one session --------------------------------------------------------------------------------


@dataclass
class SessionAuditReport:
    session_id: str
    records: int
    sealed: bool
    origins: list[str]
    checkpoints: list[Checkpoint]
    kept: Checkpoint | None = None

    def summary(self) -> str:
        where = ", ".join(f"{cp.origin} @ {cp.size}" for cp in self.checkpoints)
        state = "sealed" if self.sealed else "open"
        lines = [f"OK: session {self.session_id}: {self.records} records ({state}), each included in {where}"]
        if self.kept is not None:
            lines.append(f"  consistent with the kept checkpoint {self.kept.origin} @ {self.kept.size}")
        return "\n".join(lines)


def audit_session(
    store: ObjectStore,
    public_key: Verifier,
    session_id: str,
    *,
    kept_checkpoint: bytes | None = None,
    progress: Progress | None = None,
) -> SessionAuditReport:
    """Verify one session without the index.

    Checks:
      1. ledger.checkpoint: each shard's latest checkpoint is signed by the log's key;
      2. ledger.inclusion: each of the session's leaves (found by scanning the entry bundles) is
         in the checkpointed tree, by a proof from the stored tiles;
      3. ledger.marker: each leaf's archive object and block are found through the object markers;
      4. archive.*: each archived record has the ledgered identity, length and hash;
      5. chain.*: the records form the session's chain from record 0 (`ledger.chain.verify_chain`);
      6. consistency.*: with a kept checkpoint, as in `audit_archive`.
    """
    progress = progress or _no_progress
    view = LedgerView(store, public_key)
    root = view.latest(view.root_origin)
    found = _find_session(view, root, session_id, progress)  # 1
    if not found:
        raise VerificationFailed(
            "ledger.session", "no signed log holds a record of this session", session_id=session_id
        )
    for leaf in found:  # 2
        try:
            proof = view.inclusion_proof(leaf.origin, leaf.leaf, leaf.checkpoint.size)
            proof.verify(leaf_hash(leaf.entry.encode()), leaf.checkpoint.checkpoint.root_hash)
        except (ProofError, TileError) as exc:
            raise VerificationFailed("ledger.inclusion", str(exc), **leaf.where()) from exc
    records = _read_session_records(view, found, progress)  # 3, 4
    try:  # 5
        chain = verify_chain(session_id, records)
    except ChainBroken as exc:
        at = next((leaf for leaf in found if leaf.entry.index == exc.index), None)
        raise VerificationFailed(
            f"chain.{exc.check}",
            exc.detail,
            origin=at.origin if at else None,
            leaf=at.leaf if at else None,
            session_id=session_id,
            record_index=exc.index,
        ) from exc
    checkpoints = {leaf.checkpoint.key: leaf.checkpoint.checkpoint for leaf in found}
    report = SessionAuditReport(
        session_id,
        chain.record_count,
        chain.sealed,
        sorted({leaf.origin for leaf in found}),
        list(checkpoints.values()),
    )
    if kept_checkpoint is not None:  # 6
        auditor = _Auditor(store, public_key, progress, deep=False)
        report.kept = auditor.check_kept(kept_checkpoint, {view.root_origin: root})
    return report


@dataclass(frozen=True)
class _SessionLeaf:
    origin: str
    leaf: int
    entry: LeafEntry
    checkpoint: SignedCheckpoint

    def where(self) -> dict[str, Any]:
        return {
            "origin": self.origin,
            "leaf": self.leaf,
            "session_id": self.entry.session_id,
            "record_index": self.entry.index,
        }


def _find_session(
    view: LedgerView, root: SignedCheckpoint | None, session_id: str, progress: Progress
) -> list[_SessionLeaf]:
    """The session's leaves in every shard the registry or the log of logs names, in index order."""
    origins = set(view.shard_origins())
    if root is not None:
        origins.update(RootEntry.decode(raw).origin for _, raw in view.entries(view.root_origin, root.size))
    found: list[_SessionLeaf] = []
    needle = session_id.encode("utf-8")
    for origin in sorted(origins):
        latest = view.latest(origin)
        if latest is None:
            continue
        bundles = (latest.size + TILE_WIDTH - 1) // TILE_WIDTH
        for index in range(bundles):
            bundle = BundleID(index, min(latest.size - index * TILE_WIDTH, TILE_WIDTH))
            try:
                data, stored = read_bundle_bytes(partial(view.read, origin), bundle, missing=MISSING)
                # Decoding only bundles that mention the session keeps the scan cheap.
                entries = decode_bundle(data, stored)[: bundle.width] if needle in data else []
            except TileError as exc:
                raise VerificationFailed(
                    f"bundle.{exc.check}", exc.detail, origin=origin, path=exc.path
                ) from exc
            for offset, raw in enumerate(entries):  # the filter above only skips bundles cheaply
                entry = LeafEntry.decode(raw)
                if entry.session_id == session_id:
                    found.append(_SessionLeaf(origin, index * TILE_WIDTH + offset, entry, latest))
            progress(f"{origin} scan", min((index + 1) * TILE_WIDTH, latest.size), latest.size)
    found.sort(key=lambda leaf: leaf.entry.index)
    return found


def _read_session_records(
    view: LedgerView, found: list[_SessionLeaf], progress: Progress
) -> list[tuple[bytes, Any]]:
    """The session's archived records, by ranged reads of the blocks the markers name, cut by the
    ledgered lengths and checked against the ledgered hashes; decoded for the chain check."""
    by_index = {leaf.entry.index: leaf for leaf in found}
    marker_keys: dict[str, list[str]] = {}
    done: set[int] = set()
    records: list[tuple[bytes, Any]] = []
    for leaf in found:
        if leaf.entry.index in done:
            continue
        marker = _marker_for_leaf(view, leaf.origin, leaf.leaf, marker_keys)
        if marker is None:  # 3
            raise VerificationFailed("ledger.marker", "no object marker covers this leaf", **leaf.where())
        block = next(
            (
                b
                for b in marker.blocks
                if b[0] == leaf.entry.session_id and b[1] <= leaf.entry.index < b[1] + b[2]
            ),
            None,
        )
        if block is None:
            raise VerificationFailed(
                "ledger.marker", f"{marker.archive_key} has no block of this record", **leaf.where()
            )
        _, first, count, offset, length = block
        key = marker.archive_key
        try:
            header_bytes = view.store.get_range(key, 0, marker.header_length)
            header = parse_header(header_bytes)
            payload = next(raw_blocks(header_bytes + view.store.get_range(key, offset, length))).payload
        except (ObjectNotFound, ArchiveFormatError, StopIteration) as exc:
            raise VerificationFailed(
                "archive.format", f"cannot read the block: {exc}", object_key=key, **leaf.where()
            ) from exc
        position = 0
        for index in range(first, first + count):
            at = by_index.get(index)
            if at is None:
                raise VerificationFailed(
                    "ledger.missing",
                    "the archive block holds a record no log has",
                    object_key=key,
                    **leaf.where(),
                )
            expected = record_prefix(at.entry.session_id, index) + _KIND_TAILS[at.entry.kind]
            if payload[position : position + len(expected)] != expected:  # 4
                raise _Auditor._identity_failure(
                    at.origin, at.leaf, key, at.entry, payload=payload, position=position
                )
            raw = payload[position : position + at.entry.length]
            if len(raw) != at.entry.length or _sha256(raw).digest() != at.entry.record_hash:
                raise VerificationFailed(
                    "archive.record_hash",
                    "the archived record is not the one ledgered (edited)",
                    object_key=key,
                    **at.where(),
                )
            value = _decode(header, raw)
            records.append((raw, value))
            done.add(index)
            position += at.entry.length
        progress("session records", len(done), len(found))
    return records


def _marker_for_leaf(
    view: LedgerView, origin: str, leaf: int, cache: dict[str, list[str]]
) -> ObjectMarker | None:
    """The object marker whose leaf range holds ``leaf``: markers sort like their leaves, so a
    binary search reads about log2(objects) of them."""
    if origin not in cache:
        cache[origin] = list(view.store.list_keys(f"{ledger_prefix(origin)}objects/"))
    keys = cache[origin]
    low, high = 0, len(keys) - 1
    while low <= high:
        middle = (low + high) // 2
        marker = ObjectMarker.decode(view.store.get(keys[middle]))
        if leaf < marker.first_leaf:
            high = middle - 1
        elif leaf >= marker.first_leaf + marker.leaf_count:
            low = middle + 1
        else:
            return marker
    return None


# -- one proof file -----------------------------------------------------------------------------


@dataclass
class ProofReport:
    proven: ProvenRecord
    current: Checkpoint | None = None

    def summary(self) -> str:
        entry = self.proven.entry
        line = (
            f"OK: session {entry.session_id} record {entry.index} ({entry.kind_name}, "
            f"hash {entry.record_hash.hex()}) is leaf {self.proven.leaf_index} of "
            f"{self.proven.origin} @ {self.proven.tree_size}"
        )
        if self.current is not None:
            line += f"\n  and the log still includes it at its current size {self.current.size}"
        return line


def audit_proof(
    text: str, public_key: Verifier, *, store: ObjectStore | None = None, kept_checkpoint: bytes | None = None
) -> ProofReport:
    """Verify a proof file (`replay.proofs.verify_record_proof`); with the archive's ``store``,
    also that the log's current checkpoint extends the proof's (the record was not rolled away)."""
    proof = RecordProof.parse(text)
    proven = verify_record_proof(proof, public_key)
    report = ProofReport(proven)
    if store is not None:
        view = LedgerView(store, public_key)
        proof_checkpoint = open_log_checkpoint(proof.checkpoint_note, public_key)
        latest = view.latest(proven.origin)
        if latest is None:
            raise VerificationFailed(
                "consistency.rollback", "the log has no checkpoint any more", origin=proven.origin
            )
        view.verify_consistent(proof_checkpoint, latest.checkpoint)
        report.current = latest.checkpoint
        if kept_checkpoint is not None:
            _Auditor(store, public_key, _no_progress, deep=False).check_kept(kept_checkpoint, {})
    return report


__all__ = [
    "AuditReport",
    "Progress",
    "ProofReport",
    "SessionAuditReport",
    "ShardReport",
    "VerificationFailed",
    "archive_shards",
    "audit_archive",
    "audit_proof",
    "audit_session",
]
