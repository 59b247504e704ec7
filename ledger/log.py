"""The ledger: one RFC 6962 Merkle log per shard of the archive, and a log of those logs.

**Shards.** The seal worker writes, per source partition, archive objects whose keys sort by
offset (`{epoch}/p{partition:05d}/{first:020d}-{last:020d}.avro`). That key order, then block
order inside an object, then record order inside a block, is the shard's leaf order. It is a
function of the archive alone, so a ledger that restarts (or a second one racing it) derives the
same leaves, tiles, bundles and, Ed25519 being deterministic, byte-identical signed checkpoints.
`SealedBatch` messages only wake the ledger up; a lost one delays nothing but a checkpoint.

**Leaf entry** (what an entry bundle holds; leaf hash = SHA-256(0x00 ‖ entry)), big-endian:

    offset  size  field
    0       1     format, 0x01
    1       1     record kind (index into RECORD_KINDS: EVENT, GAP, LATE, FORK, SEAL)
    2       4     record length in bytes
    6       8     record index in its session's chain
    14      32    record hash = SHA-256(the record's exact Avro bytes)
    46      2     session id length n
    48      n     session id, UTF-8

The entry commits to the record by hash, so the record is stored once (in the archive). Its
length lets a verifier cut an archive block into records without decoding Avro, which is what
makes verifying a million records take seconds; identity and kind let it name what is missing
when the archive and the log disagree. A session's SEAL leaf commits (through the record hash)
to the session's record count and head.

**Origins and keys.** A shard's origin is ``<name>/<key id>/<epoch>/p<partition:05d>``, the log of
logs' is ``<name>/<key id>/root``, where name and key id are the signing key's (the key id is the
note key id of the key under its own name, 8 hex digits). Each log signs its checkpoints with the
same Ed25519 key under the log's origin as key name, as C2SP recommends. Rotating the key
therefore starts new origins: the new logs are rebuilt from the start of the archive and signed
by the new key, while the old logs stay verifiable with the old public key.

**Storage** (all write-once; ``P`` = ``ledger/<origin>/``):

    P tile/<L>/<N>[.p/<W>], P tile/entries/<N>[.p/<W>]   C2SP tlog-tiles
    P checkpoint/<size:020d>     signed checkpoint; the latest is the highest key, never a mutable file
    P position/<size:020d>       the archive key whose last record is leaf size-1 (written first)
    P objects/<first>-<last>.json  where an archive object's records sit among the leaves
    ledger/<root origin>/shards/<epoch>/p<partition:05d>  registry of shards, for the log of logs
    ledger/<root origin>/leaves/<start:020d>   the root's leaves, claimed before they are built

Write order makes a crash at any point harmless: full tiles and bundles as they complete, then
at checkpoint time the partial ones and the position, the signed checkpoint last. A restart
resumes from the latest checkpoint and rewrites whatever followed it, byte for byte.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import re
import struct
import threading
import zlib
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass

import zstandard

from ledger.checkpoint import Checkpoint, CheckpointError, open_checkpoint, sign_checkpoint
from ledger.merkle import HASH_SIZE
from ledger.note import ed25519_key_id
from ledger.signer import Signer, Verifier
from ledger.tiles import TILE_WIDTH, BundleID, TileBuilder, read_bundle
from schemas.sealed import RECORD_KINDS
from storage.archive import (
    SYNC_SIZE,
    ArchiveFormatError,
    iter_blocks,
    object_prefix,
    parse_header,
    parse_object_key,
)
from storage.objectstore import ObjectNotFound, ObjectStore

logger = logging.getLogger(__name__)

LEDGER_PREFIX = "ledger/"
ENTRY_FORMAT = 1
ROOT_ENTRY_FORMAT = 1
ROOT_NAME = "root"
MISSING = (ObjectNotFound,)

ENTRY_HEAD = struct.Struct(">BBIQ32sH")
_ROOTENTRY_HEAD = struct.Struct(">BQ32s32sH")
_SIZE_KEY = re.compile(r"[0-9]{20}")
_PAGE = 1000  # an S3 list page
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*(?:/[A-Za-z0-9][A-Za-z0-9._-]*)*")
_EPOCH = re.compile(r"[A-Za-z0-9_.-]{1,64}")
_KIND_BYTES = frozenset(2 * kind for kind in range(len(RECORD_KINDS)))  # zigzag of each enum index
_HASH_LENGTH_BYTE = 2 * HASH_SIZE  # zigzag(32): prev_hash's length prefix
_sha256 = hashlib.sha256


class LedgerError(Exception):
    """The ledger cannot go on from what is stored; not worth retrying as is."""


class LedgerConflict(LedgerError):
    """A write-once object holds other bytes than this ledger derives for it: the store was
    written by something else (tampering, or a ledger with another notion of the archive)."""


# -- names ------------------------------------------------------------------------------------


def log_key_id(signer_or_verifier: Signer | Verifier) -> str:
    """The 8 hex digits of the key under its own name: the part of every origin that a new key changes."""
    return f"{ed25519_key_id(signer_or_verifier.name, signer_or_verifier.public_key):08x}"


def log_base(name: str, key_id: str) -> str:
    if not _NAME.fullmatch(name):
        raise ValueError(f"log name {name!r} must be path segments of letters, digits, '.', '_' and '-'")
    return f"{name}/{key_id}"


def shard_origin(name: str, key_id: str, epoch: str, partition: int) -> str:
    if not _EPOCH.fullmatch(epoch) or epoch in (ROOT_NAME, LEDGER_PREFIX.rstrip("/")) or set(epoch) == {"."}:
        # "root" is the log of logs' name, and archive keys under "ledger/" would mix with the ledger's
        raise ValueError(f"epoch {epoch!r} cannot name a shard")
    if not 0 <= partition <= 99_999:
        raise ValueError(f"partition {partition} is out of range")
    return f"{log_base(name, key_id)}/{epoch}/p{partition:05d}"


def root_origin(name: str, key_id: str) -> str:
    return f"{log_base(name, key_id)}/{ROOT_NAME}"


def ledger_prefix(origin: str) -> str:
    return f"{LEDGER_PREFIX}{origin}/"


def size_key(size: int) -> str:
    return f"{size:020d}"


def checkpoint_key(origin: str, size: int) -> str:
    return f"{ledger_prefix(origin)}checkpoint/{size_key(size)}"


def position_key(origin: str, size: int) -> str:
    return f"{ledger_prefix(origin)}position/{size_key(size)}"


def marker_key(origin: str, archive_key: str) -> str:
    return f"{ledger_prefix(origin)}objects/{archive_key.rsplit('/', 1)[-1].removesuffix('.avro')}.json"


def registry_key(root: str, epoch: str, partition: int) -> str:
    return f"{ledger_prefix(root)}shards/{object_prefix(epoch, partition)}".rstrip("/")


class OriginSigner:
    """The log's Ed25519 key under the name of one origin (C2SP: the key name matches the origin)."""

    def __init__(self, signer: Signer, origin: str) -> None:
        self._signer = signer
        self._name = origin
        self._key_id = ed25519_key_id(origin, signer.public_key)

    @property
    def name(self) -> str:
        return self._name

    @property
    def key_id(self) -> int:
        return self._key_id

    def sign(self, message: bytes) -> bytes:
        return self._signer.sign(message)


def origin_verifier(public_key: Verifier, origin: str) -> Verifier:
    """The verifier of one origin's checkpoints, from the log's public key."""
    return Verifier(origin, public_key.public_key)


# -- leaf entries -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LeafEntry:
    """What a shard leaf says about one sealed record (see the module docstring for the bytes)."""

    session_id: str
    index: int
    kind: int
    length: int
    record_hash: bytes

    @property
    def kind_name(self) -> str:
        return RECORD_KINDS[self.kind] if self.kind < len(RECORD_KINDS) else f"kind#{self.kind}"

    def encode(self) -> bytes:
        return encode_entry(
            self.session_id.encode("utf-8"), self.index, self.kind, self.length, self.record_hash
        )

    @classmethod
    def decode(cls, data: bytes) -> LeafEntry:
        """Raises ValueError when ``data`` is not exactly one well-formed entry."""
        if len(data) < ENTRY_HEAD.size:
            raise ValueError(f"entry is {len(data)} bytes, shorter than its {ENTRY_HEAD.size}-byte head")
        version, kind, length, index, digest, sid_length = ENTRY_HEAD.unpack_from(data)
        if version != ENTRY_FORMAT:
            raise ValueError(f"entry format {version}, expected {ENTRY_FORMAT}")
        if kind >= len(RECORD_KINDS):
            raise ValueError(f"entry names record kind {kind}, which does not exist")
        if len(data) != ENTRY_HEAD.size + sid_length:
            raise ValueError(
                f"entry is {len(data)} bytes, its session id says {ENTRY_HEAD.size + sid_length}"
            )
        session_id = data[ENTRY_HEAD.size :].decode("utf-8")  # UnicodeDecodeError is a ValueError
        return cls(session_id, index, kind, length, digest)


def encode_entry(session_id: bytes, index: int, kind: int, length: int, record_hash: bytes) -> bytes:
    """A leaf entry's bytes (`LeafEntry.encode`), for a caller that has the parts at hand."""
    return ENTRY_HEAD.pack(ENTRY_FORMAT, kind, length, index, record_hash, len(session_id)) + session_id


def zigzag_long(n: int) -> bytes:
    """Avro's encoding of a long."""
    value = (n << 1) ^ (n >> 63)
    out = bytearray()
    while value & ~0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def read_long(data: bytes, position: int) -> tuple[int, int]:
    """An Avro long at ``position``; returns it and the position after it. ValueError if malformed."""
    shift = value = 0
    while True:
        if position >= len(data):
            raise ValueError("truncated varint")
        byte = data[position]
        position += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return (value >> 1) ^ -(value & 1), position
        shift += 7
        if shift > 63:
            raise ValueError("varint too long")


@dataclass(frozen=True, slots=True)
class RecordHead:
    """The leading fields of a SealedRecord's Avro bytes: enough to place and chain it."""

    session_id: str
    index: int
    kind: int
    prev_hash: bytes
    length: int  # bytes up to the end of prev_hash


def read_record_head(data: bytes, start: int = 0) -> RecordHead:
    """session_id, index, kind and prev_hash, the first four fields of sealed_record.avsc.
    Raises ValueError when the bytes cannot start a SealedRecord."""
    sid_length, position = read_long(data, start)
    if sid_length < 0 or position + sid_length > len(data):
        raise ValueError("session id runs past the data")
    session_id = data[position : position + sid_length].decode("utf-8")
    index, position = read_long(data, position + sid_length)
    kind, position = read_long(data, position)
    if not 0 <= kind < len(RECORD_KINDS):
        raise ValueError(f"record kind {kind} does not exist")
    hash_length, position = read_long(data, position)
    if hash_length != HASH_SIZE or position + HASH_SIZE > len(data):
        raise ValueError(f"prev_hash is {hash_length} bytes, not {HASH_SIZE}")
    return RecordHead(
        session_id, index, kind, data[position : position + HASH_SIZE], position + HASH_SIZE - start
    )


def entry_for_record(raw: bytes, record_hash: bytes | None = None) -> LeafEntry:
    """The leaf entry of a record, from its exact bytes."""
    head = read_record_head(raw)
    digest = record_hash if record_hash is not None else _sha256(raw).digest()
    return LeafEntry(head.session_id, head.index, head.kind, len(raw), digest)


def record_prefix(session_id: str, index: int) -> bytes:
    """The first bytes of any SealedRecord of this session at this index."""
    sid = session_id.encode("utf-8")
    return zigzag_long(len(sid)) + sid + _index_bytes(index)


# Chain indexes as Avro longs: a session's first records are most of them, so look those up.
_SMALL_INDEXES = tuple(zigzag_long(n) for n in range(4096))


def _index_bytes(index: int) -> bytes:
    return _SMALL_INDEXES[index] if 0 <= index < len(_SMALL_INDEXES) else zigzag_long(index)


# -- root entries -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RootEntry:
    """A leaf of the log of logs: one shard checkpoint, by its size, root and the hash of the
    signed note as stored. Big-endian: format 0x01, size u64, root 32, note SHA-256 32, origin
    length u16, origin UTF-8."""

    origin: str
    size: int
    root_hash: bytes
    note_hash: bytes

    def encode(self) -> bytes:
        origin = self.origin.encode("utf-8")
        head = _ROOTENTRY_HEAD.pack(ROOT_ENTRY_FORMAT, self.size, self.root_hash, self.note_hash, len(origin))
        return head + origin

    @classmethod
    def decode(cls, data: bytes) -> RootEntry:
        if len(data) < _ROOTENTRY_HEAD.size:
            raise ValueError(f"root entry is {len(data)} bytes, shorter than its head")
        version, size, root_hash, note_hash, origin_length = _ROOTENTRY_HEAD.unpack_from(data)
        if version != ROOT_ENTRY_FORMAT:
            raise ValueError(f"root entry format {version}, expected {ROOT_ENTRY_FORMAT}")
        if len(data) != _ROOTENTRY_HEAD.size + origin_length:
            raise ValueError("root entry length does not match its origin length")
        return cls(data[_ROOTENTRY_HEAD.size :].decode("utf-8"), size, root_hash, note_hash)

    @classmethod
    def of(cls, checkpoint: Checkpoint, note: bytes) -> RootEntry:
        return cls(checkpoint.origin, checkpoint.size, checkpoint.root_hash, _sha256(note).digest())


def encode_frames(items: Sequence[bytes]) -> bytes:
    """Length-prefixed (uint16) items, the entry bundle framing without the 256 limit."""
    return b"".join(len(item).to_bytes(2, "big") + item for item in items)


def decode_frames(data: bytes) -> list[bytes]:
    items: list[bytes] = []
    position = 0
    while position < len(data):
        if position + 2 > len(data):
            raise ValueError("truncated frame length")
        length = int.from_bytes(data[position : position + 2], "big")
        position += 2
        if position + length > len(data):
            raise ValueError("frame runs past the end")
        items.append(data[position : position + length])
        position += length
    return items


# -- archive objects --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RawBlock:
    """One block of an archive object, decompressed but not decoded."""

    offset: int
    length: int
    count: int
    payload: bytes


def raw_blocks(data: bytes) -> Iterator[RawBlock]:
    """The blocks of a whole archive object (storage.archive format), without decoding records."""
    header = parse_header(data)
    if header.codec not in ("zstandard", "null", "deflate"):
        raise ArchiveFormatError(f"unsupported codec {header.codec!r}")
    zstd = zstandard.ZstdDecompressor()  # one per object: making one costs more than a small block
    position = header.length
    while position < len(data):
        try:
            count, after_count = read_long(data, position)
            size, after_size = read_long(data, after_count)
        except ValueError as exc:
            raise ArchiveFormatError(f"block at byte {position}: {exc}") from exc
        end = after_size + size + SYNC_SIZE
        if count <= 0 or size < 0 or end > len(data):
            raise ArchiveFormatError(f"block at byte {position} is truncated or malformed")
        if data[end - SYNC_SIZE : end] != header.sync:
            raise ArchiveFormatError(f"block at byte {position} does not end with the object's sync marker")
        try:
            payload = _decompress(header.codec, zstd, data[after_size : after_size + size])
        except (zstandard.ZstdError, zlib.error) as exc:
            raise ArchiveFormatError(f"block at byte {position} does not decompress: {exc}") from exc
        yield RawBlock(position, end - position, count, payload)
        position = end


def _decompress(codec: str, zstd: zstandard.ZstdDecompressor, payload: bytes) -> bytes:
    if codec == "zstandard":
        return zstd.decompress(payload, max_output_size=1 << 31)
    if codec == "deflate":
        return zlib.decompress(payload, -15)
    return payload


@dataclass(frozen=True, slots=True)
class LedgeredBlock:
    """One session's run of records in an archive object, as the ledger cut it."""

    offset: int
    length: int
    session_id: str
    first_index: int
    records: tuple[bytes, ...]
    entries: tuple[bytes, ...]  # the leaf entry of each record (its hash among them), in order


def split_block(payload: bytes, count: int) -> tuple[list[bytes], list[bytes], list[int]] | None:
    """Cut a block's records apart by following their hash chain; None if the chain does not lead.
    Returns the records, their hashes and their kinds.

    Avro records carry no length, and decoding one with fastavro costs ~30 µs. But record k+1
    starts with its session id, its index, its kind and then SHA-256 of record k: a boundary
    is a position where those bytes follow and the hash of everything since the last boundary
    is what they say. The hash is the record hash the ledger needs anyway. Content cannot fake a
    boundary by accident; only someone who can predict a record's exact bytes, including the
    gateway's timestamp and ids, could plant one, and then the bytes are still committed to,
    just cut elsewhere (`verify --deep` decodes every record and would name it).
    """
    try:
        head = read_record_head(payload, 0)
    except ValueError:
        return None
    records: list[bytes] = []
    hashes: list[bytes] = []
    kinds = [head.kind]
    start = 0
    minimum = head.length  # a record is at least its head long
    sid = head.session_id.encode("utf-8")
    session_prefix = zigzag_long(len(sid)) + sid
    for offset in range(1, count):
        following = session_prefix + _index_bytes(head.index + offset)
        search = start + minimum
        while True:
            candidate = payload.find(following, search)
            if candidate < 0:
                return None
            at = candidate + len(following)
            if (
                payload[at : at + 1] in _KIND_PREFIXES
                and payload[at + 1 : at + 2] == _HASH_PREFIX
                and len(payload) >= at + 2 + HASH_SIZE
            ):
                digest = _sha256(payload[start:candidate]).digest()
                if payload[at + 2 : at + 2 + HASH_SIZE] == digest:
                    break
            search = candidate + 1
        records.append(payload[start:candidate])
        hashes.append(digest)
        kinds.append(payload[at] >> 1)  # zigzag of a small enum index
        start = candidate
        minimum = len(following) + 2 + HASH_SIZE
    last = payload[start:]
    records.append(last)
    hashes.append(_sha256(last).digest())
    return records, hashes, kinds


_KIND_PREFIXES = frozenset(bytes([value]) for value in _KIND_BYTES)
_HASH_PREFIX = bytes([_HASH_LENGTH_BYTE])


def _chained_entries(records: list[bytes], hashes: list[bytes], kinds: list[int]) -> list[bytes]:
    """Leaf entries of records cut along their chain (`split_block`): the cut has read each
    record's session id, index and kind already, so no head is parsed again."""
    head = read_record_head(records[0])
    sid = head.session_id.encode("utf-8")
    return [
        encode_entry(sid, head.index + position, kind, len(raw), digest)
        for position, (raw, digest, kind) in enumerate(zip(records, hashes, kinds, strict=True))
    ]


def split_object(data: bytes) -> list[LedgeredBlock]:
    """Every block of an archive object, cut into records (see `split_block`); a block the chain
    does not cut is decoded with fastavro instead, so what the ledger commits to is never a guess."""
    blocks: list[LedgeredBlock] = []
    decoded: list[list[bytes]] | None = None
    for number, block in enumerate(raw_blocks(data)):
        split = split_block(block.payload, block.count)
        if split is None:
            if decoded is None:
                logger.info("archive block %d does not split along its chain; decoding the object", number)
                decoded = [[record.raw for record in records] for _, records in iter_blocks(data)]
            records = decoded[number]
            hashes = [_sha256(raw).digest() for raw in records]
            try:
                # Each record's own head: a block that does not chain is the forensic case, where
                # nothing about its records may be assumed.
                entries = [entry_for_record(raw, d).encode() for raw, d in zip(records, hashes, strict=True)]
            except ValueError as exc:
                raise ArchiveFormatError(f"block {number} holds a record that is not sealed: {exc}") from exc
        else:
            records, hashes, kinds = split
            entries = _chained_entries(records, hashes, kinds)
        if len(records) != block.count:
            raise ArchiveFormatError(
                f"block {number} holds {len(records)} records, its header says {block.count}"
            )
        try:
            head = read_record_head(records[0])
        except ValueError as exc:
            raise ArchiveFormatError(f"block {number} does not start with a sealed record: {exc}") from exc
        blocks.append(
            LedgeredBlock(
                block.offset,
                block.length,
                head.session_id,
                head.index,
                tuple(records),
                tuple(entries),
            )
        )
    return blocks


# -- stored checkpoints -----------------------------------------------------------------------


@dataclass(frozen=True)
class SignedCheckpoint:
    """A checkpoint as stored: its key, the signed note's exact bytes, and what they say."""

    key: str
    note: bytes
    checkpoint: Checkpoint

    @property
    def size(self) -> int:
        return self.checkpoint.size


def latest_key(store: ObjectStore, prefix: str, known: str = "") -> str | None:
    """The highest ``prefix<20-digit number>`` key, without listing them all.

    ``known`` is a key already known to exist (the last answer): only keys after it are listed.
    One page answers for a young log or a recent ``known``; beyond that, a galloping then binary
    search asks "which is the first key at or above N?" about 2·log2(N) times.
    """
    page: list[str] = []
    for key in store.list_keys(prefix, known):
        page.append(key)
        if len(page) >= _PAGE:
            break
    numbered = [key for key in page if _SIZE_KEY.fullmatch(key[len(prefix) :])]
    if len(page) < _PAGE:
        return numbered[-1] if numbered else (known or None)

    def at_or_above(n: int) -> int | None:
        for key in store.list_keys(prefix, prefix + size_key(n - 1) if n > 0 else ""):
            if _SIZE_KEY.fullmatch(key[len(prefix) :]):
                return int(key[len(prefix) :])
        return None

    low = int(numbered[-1][len(prefix) :]) if numbered else 0  # a key numbered low exists
    step = _PAGE
    while (found := at_or_above(low + step)) is not None:
        low, step = found, step * 2
    high = low + step - 1  # no key at or above low + step
    while low < high:
        middle = (low + high + 1) // 2
        found = at_or_above(middle)
        if found is None:
            high = middle - 1
        else:
            low = found
    return prefix + size_key(low)


def read_checkpoint(store: ObjectStore, key: str, verifier: Verifier, origin: str) -> SignedCheckpoint:
    """A stored checkpoint, its signature verified under ``origin`` (CheckpointError if not)."""
    note = store.get(key)
    checkpoint, _ = open_checkpoint(note, [origin_verifier(verifier, origin)], origin=origin)
    if key.rsplit("/", 1)[-1] != size_key(checkpoint.size):
        raise CheckpointError("key", f"{key} holds a checkpoint of size {checkpoint.size}")
    return SignedCheckpoint(key, note, checkpoint)


def latest_checkpoint(
    store: ObjectStore, origin: str, verifier: Verifier, known: str = ""
) -> SignedCheckpoint | None:
    """The highest-sized checkpoint of ``origin``, verified (``known``: see `latest_key`)."""
    key = latest_key(store, f"{ledger_prefix(origin)}checkpoint/", known)
    return None if key is None else read_checkpoint(store, key, verifier, origin)


@functools.cache
def _put_pool(concurrency: int) -> ThreadPoolExecutor:
    # One pool per concurrency, for the process: a ledger puts a few objects per archive object,
    # and starting threads for each call cost more than the puts on a fast store.
    return ThreadPoolExecutor(concurrency, thread_name_prefix="blackbox-ledger-put")


def put_exact_all(store: ObjectStore, items: Iterable[tuple[str, bytes]]) -> None:
    """`put_exact` of every (key, data), up to ``store.put_concurrency`` at a time. Returns once
    every put has finished; raises the first failure (the others have finished or failed too)."""
    items = list(items)
    if store.put_concurrency <= 1 or len(items) <= 1:
        for key, data in items:
            put_exact(store, key, data)
        return
    pool = _put_pool(store.put_concurrency)
    puts = [pool.submit(put_exact, store, key, data) for key, data in items]
    wait(puts)
    for put in puts:
        put.result()


def put_exact(store: ObjectStore, key: str, data: bytes) -> bool:
    """Write-once put that also accepts an identical existing object; True if this call created it.
    Anything else already under the key is LedgerConflict."""
    if store.put_if_absent(key, data):
        return True
    existing = store.get(key)
    if existing != data:
        raise LedgerConflict(f"{key} already holds {len(existing)} other bytes than the {len(data)} derived")
    return False


# -- a shard ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ObjectMarker:
    """Where one archive object's records sit among a shard's leaves (``objects/<name>.json``).

    Not signed: a locator for proofs, checked against the leaves whenever it is used.
    ``blocks`` are (session id, first record index, record count, byte offset, byte length).
    """

    archive_key: str
    first_leaf: int
    leaf_count: int
    header_length: int
    blocks: tuple[tuple[str, int, int, int, int], ...]

    def encode(self) -> bytes:
        body = {
            "archive_key": self.archive_key,
            "blocks": [list(block) for block in self.blocks],
            "first_leaf": self.first_leaf,
            "header_length": self.header_length,
            "leaf_count": self.leaf_count,
        }
        return json.dumps(body, sort_keys=True, separators=(",", ":")).encode("utf-8")

    @classmethod
    def decode(cls, data: bytes) -> ObjectMarker:
        body = json.loads(data)
        blocks = tuple(
            (str(sid), int(first), int(count), int(offset), int(length))
            for sid, first, count, offset, length in body["blocks"]
        )
        return cls(
            str(body["archive_key"]),
            int(body["first_leaf"]),
            int(body["leaf_count"]),
            int(body["header_length"]),
            blocks,
        )

    def leaf_of(self, session_id: str, index: int) -> int | None:
        """The leaf index of a record of this object, or None if the object does not hold it."""
        leaf = self.first_leaf
        for sid, first, count, _, _ in self.blocks:
            if sid == session_id and first <= index < first + count:
                return leaf + index - first
            leaf += count
        return None


class ShardLedger:
    """The Merkle log of one shard (epoch, partition). Synchronous and not thread-safe: the agent
    calls it from one thread at a time (it holds `lock` around each call).

    Any exception leaves the in-memory state unknown, so it is dropped: the next call resumes from
    the store, where everything derived is either absent or identical to what a rerun writes.
    """

    def __init__(self, store: ObjectStore, signer: Signer, *, epoch: str, partition: int) -> None:
        self.store = store
        self.epoch = epoch
        self.partition = partition
        self._key_id = log_key_id(signer)
        self.origin = shard_origin(signer.name, self._key_id, epoch, partition)
        self.root_origin = root_origin(signer.name, self._key_id)
        self._signer = OriginSigner(signer, self.origin)
        self._verifier = Verifier(signer.name, signer.public_key)
        self._prefix = ledger_prefix(self.origin)
        self._archive_prefix = object_prefix(epoch, partition)
        self.lock = threading.Lock()
        self._builder: TileBuilder | None = None
        self._last_object = ""
        self._latest: SignedCheckpoint | None = None
        self._registered = False

    # -- state --------------------------------------------------------------------------------

    @property
    def size(self) -> int:
        """Leaves appended so far (loading the stored state if needed)."""
        return self._state().size

    @property
    def last_object(self) -> str:
        self._state()
        return self._last_object

    @property
    def latest(self) -> SignedCheckpoint | None:
        self._state()
        return self._latest

    def root(self) -> bytes:
        return self._state().root()

    def _read(self, path: str) -> bytes:
        return self.store.get(self._prefix + path)

    def _state(self) -> TileBuilder:
        if self._builder is None:
            self._builder = self._resume()
        return self._builder

    def _resume(self) -> TileBuilder:
        latest = latest_checkpoint(self.store, self.origin, self._verifier)
        self._latest = latest
        if latest is None:
            self._last_object = ""
            return TileBuilder()
        size = latest.size
        try:
            self._last_object = self.store.get(position_key(self.origin, size)).decode("utf-8")
        except ObjectNotFound:
            raise LedgerError(f"{self.origin}: checkpoint {size} has no position record") from None
        builder = TileBuilder.resume(size, self._read, missing=MISSING)
        if builder.root() != latest.checkpoint.root_hash:
            raise LedgerError(f"{self.origin}: stored tiles do not give checkpoint {size}'s root")
        logger.info("%s: resumed at %d leaves after %s", self.origin, size, self._last_object)
        return builder

    def _forget(self) -> None:
        self._builder = None
        self._latest = None

    # -- growing ------------------------------------------------------------------------------

    def pending_objects(self, limit: int | None = None) -> list[str]:
        """Archive objects of this shard not ledgered yet, in leaf order."""
        self._state()
        keys: list[str] = []
        for key in self.store.list_keys(self._archive_prefix, self._last_object):
            if parse_object_key(key) is None:
                continue  # not the seal worker's (a stray upload); the auditor reports it
            keys.append(key)
            if limit is not None and len(keys) >= limit:
                break
        return keys

    def catch_up(self, *, max_objects: int | None = None) -> int:
        """Append the records of every archive object written since the last one ledgered;
        return how many leaves were added. Full tiles and bundles are written as they fill."""
        try:
            builder = self._state()
            added = 0
            for key in self.pending_objects(max_objects):
                added += self._append_object(builder, key)
            return added
        except BaseException:
            self._forget()
            raise

    def _append_object(self, builder: TileBuilder, key: str) -> int:
        data = self.store.get(key)
        blocks = split_object(data)
        first_leaf = builder.size
        marker = ObjectMarker(
            key,
            first_leaf,
            sum(len(block.records) for block in blocks),
            parse_header(data).length,
            tuple((b.session_id, b.first_index, len(b.records), b.offset, b.length) for b in blocks),
        )
        put_exact(self.store, marker_key(self.origin, key), marker.encode())
        for block in blocks:
            builder.extend(block.entries)
        put_exact_all(self.store, ((self._prefix + tile.path, data) for tile, data in builder.take_full()))
        self._last_object = key
        return marker.leaf_count

    def checkpoint(self) -> SignedCheckpoint | None:
        """Sign and store a checkpoint of the current size, with its partial tiles; None while the
        log is empty. Republishing an unchanged size rewrites identical bytes (a no-op)."""
        try:
            builder = self._state()
            size = builder.size
            if size == 0:
                return None
            put_exact_all(self.store, ((self._prefix + tile.path, data) for tile, data in builder.partials()))
            put_exact(self.store, position_key(self.origin, size), self._last_object.encode("utf-8"))
            checkpoint = Checkpoint(self.origin, size, builder.root())
            note = sign_checkpoint(checkpoint, self._signer)
            key = checkpoint_key(self.origin, size)
            if put_exact(self.store, key, note):
                logger.debug("%s: checkpoint %d", self.origin, size)
            if not self._registered:
                put_exact(
                    self.store,
                    registry_key(self.root_origin, self.epoch, self.partition),
                    self.origin.encode(),
                )
                self._registered = True
            self._latest = SignedCheckpoint(key, note, checkpoint)
            return self._latest
        except BaseException:
            self._forget()
            raise


# -- the log of logs --------------------------------------------------------------------------


class RootLedger:
    """The log whose leaves are shard checkpoints, so that dropping or rolling back a whole shard
    (its archive objects and its ledger together) contradicts a signed root checkpoint.

    Which shard checkpoints become leaves depends on timing, so unlike a shard this log is not a
    function of the archive. Two writers (an old and a new owner during a rebalance) therefore
    *claim* each run of leaves first: ``leaves/<start>`` is created once, and a writer that
    finds it taken adopts what it holds. Tiles, bundles and checkpoints are then functions of the
    claims, identical whoever writes them.
    """

    def __init__(self, store: ObjectStore, signer: Signer) -> None:
        self.store = store
        self._key_id = log_key_id(signer)
        self.name = signer.name
        self.origin = root_origin(signer.name, self._key_id)
        self._signer = OriginSigner(signer, self.origin)
        self._verifier = Verifier(signer.name, signer.public_key)
        self._prefix = ledger_prefix(self.origin)
        self.lock = threading.Lock()
        self._builder: TileBuilder | None = None
        self._recorded: dict[str, int] = {}  # shard origin → size of its checkpoint last made a leaf
        self._latest: SignedCheckpoint | None = None
        self._shards: dict[str, str] = {}  # registry key → shard origin
        self._known: dict[str, str] = {}  # shard origin → its latest checkpoint key seen

    @property
    def latest(self) -> SignedCheckpoint | None:
        self._state()
        return self._latest

    def _read(self, path: str) -> bytes:
        return self.store.get(self._prefix + path)

    def _state(self) -> TileBuilder:
        if self._builder is None:
            self._builder = self._resume()
        return self._builder

    def _resume(self) -> TileBuilder:
        latest = latest_checkpoint(self.store, self.origin, self._verifier)
        self._latest = latest
        self._recorded = {}
        if latest is None:
            builder = TileBuilder()
        else:
            builder = TileBuilder.resume(latest.size, self._read, missing=MISSING)
            # The most recent leaves tell which shard checkpoints are in already; older ones
            # would at worst be recorded once more, which is harmless.
            last = BundleID((latest.size - 1) // TILE_WIDTH, (latest.size - 1) % TILE_WIDTH + 1)
            for entry in read_bundle(self._read, last, missing=MISSING):
                decoded = RootEntry.decode(entry)
                self._recorded[decoded.origin] = max(self._recorded.get(decoded.origin, 0), decoded.size)
        self._apply_claims(builder)
        return builder

    def _apply_claims(self, builder: TileBuilder) -> None:
        """Append the leaves of claims made after the latest checkpoint (by us before a crash, or by
        another writer)."""
        prefix = f"{self._prefix}leaves/"
        start_after = prefix + size_key(builder.size - 1) if builder.size else ""
        for key in self.store.list_keys(prefix, start_after):
            start = int(key[len(prefix) :])
            if start != builder.size:
                raise LedgerConflict(f"{key}: claim starts at {start}, the log has {builder.size} leaves")
            self._append(builder, [RootEntry.decode(item) for item in decode_frames(self.store.get(key))])

    def _append(self, builder: TileBuilder, entries: list[RootEntry]) -> None:
        builder.extend([entry.encode() for entry in entries])
        for entry in entries:
            self._recorded[entry.origin] = max(self._recorded.get(entry.origin, 0), entry.size)
        put_exact_all(self.store, ((self._prefix + tile.path, data) for tile, data in builder.take_full()))

    def shard_origins(self, epoch: str | None = None) -> list[str]:
        """The shards registered for this key (of one epoch, if given)."""
        prefix = f"{self._prefix}shards/"
        for key in self.store.list_keys(prefix, max(self._shards, default="")):
            self._shards[key] = self.store.get(key).decode("utf-8")
        wanted = prefix if epoch is None else f"{prefix}{epoch}/"
        return sorted(origin for key, origin in self._shards.items() if key.startswith(wanted))

    def update(self, epoch: str | None = None) -> SignedCheckpoint | None:
        """Record each shard's latest checkpoint that is not a leaf yet, then checkpoint the root.

        ``epoch``: look at that epoch's shards only. Older epochs' shards no longer grow (their
        topic is gone), so the agent looks at them only now and then, not on every update.
        """
        try:
            builder = self._state()
            fresh: list[RootEntry] = []
            for origin in self.shard_origins(epoch):
                try:
                    latest = latest_checkpoint(
                        self.store, origin, self._verifier, self._known.get(origin, "")
                    )
                except CheckpointError as exc:
                    # Never vouch for a checkpoint our key did not sign; the other shards go on.
                    logger.error("%s: latest checkpoint does not verify (%s); not recorded", origin, exc)
                    continue
                if latest is None:
                    continue
                self._known[origin] = latest.key
                if latest.size > self._recorded.get(origin, 0):
                    fresh.append(RootEntry.of(latest.checkpoint, latest.note))
            if fresh:
                claim = f"{self._prefix}leaves/{size_key(builder.size)}"
                if not self.store.put_if_absent(claim, encode_frames([entry.encode() for entry in fresh])):
                    logger.info(
                        "%s: leaves from %d were claimed by another writer", self.origin, builder.size
                    )
                self._apply_claims(builder)  # ours, or theirs (then ours wait for the next update)
            return self._checkpoint(builder)
        except BaseException:
            self._builder = None
            self._latest = None
            raise

    def _checkpoint(self, builder: TileBuilder) -> SignedCheckpoint | None:
        size = builder.size
        if size == 0:
            return None
        if self._latest is not None and self._latest.size == size:
            return self._latest
        put_exact_all(self.store, ((self._prefix + tile.path, data) for tile, data in builder.partials()))
        checkpoint = Checkpoint(self.origin, size, builder.root())
        note = sign_checkpoint(checkpoint, self._signer)
        key = checkpoint_key(self.origin, size)
        put_exact(self.store, key, note)
        self._latest = SignedCheckpoint(key, note, checkpoint)
        return self._latest
