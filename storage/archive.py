"""The archive file format: Avro Object Container Files built from already-encoded records.

A sealed record's hash is taken over its Avro binary encoding, so the archive stores exactly
those bytes: the writer never re-encodes, and a reader can re-hash what it reads. Each object
holds one block per session, so that replaying a session reads only its blocks (byte ranges
kept in the index) plus the object's header, never a whole partition.

Objects are deterministic functions of their records: the sync marker is derived from the
object key and zstandard output is stable for a given input and level, so a batch replayed
after a crash produces the same bytes under the same key.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import fastavro
import zstandard
from fastavro.schema import parse_schema

MAGIC = b"Obj\x01"
SYNC_SIZE = 16
CODEC = "zstandard"
_ZSTD_LEVEL = 3


class ArchiveFormatError(ValueError):
    """Bytes that are not a well-formed archive object or block."""


def _zigzag(n: int) -> bytes:
    value = (n << 1) ^ (n >> 63)
    out = bytearray()
    while value & ~0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _read_long(buffer: bytes, position: int) -> tuple[int, int]:
    shift = 0
    value = 0
    while True:
        if position >= len(buffer):
            raise ArchiveFormatError("truncated varint")
        byte = buffer[position]
        position += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            break
        shift += 7
        if shift > 63:
            raise ArchiveFormatError("varint too long")
    return (value >> 1) ^ -(value & 1), position


def _avro_bytes(data: bytes) -> bytes:
    return _zigzag(len(data)) + data


def sync_marker(key: str) -> bytes:
    return hashlib.sha256(b"blackbox-archive-sync\x00" + key.encode()).digest()[:SYNC_SIZE]


@dataclass(frozen=True)
class BlockLocation:
    """Where one block sits inside an object: the range a reader fetches."""

    offset: int
    length: int
    record_count: int


@dataclass(frozen=True)
class BuiltObject:
    data: bytes
    header_length: int
    blocks: tuple[BlockLocation, ...]


def build_object(key: str, writer_schema_json: str, blocks: Sequence[Sequence[bytes]]) -> BuiltObject:
    """An OCF object whose blocks hold the given pre-encoded records, in order."""
    sync = sync_marker(key)
    header = io.BytesIO()
    header.write(MAGIC)
    metadata = {"avro.schema": writer_schema_json.encode(), "avro.codec": CODEC.encode()}
    header.write(_zigzag(len(metadata)))
    for name, value in metadata.items():  # dict order is insertion order: deterministic
        header.write(_avro_bytes(name.encode()))
        header.write(_avro_bytes(value))
    header.write(_zigzag(0))
    header.write(sync)
    out = io.BytesIO()
    out.write(header.getvalue())
    compressor = zstandard.ZstdCompressor(level=_ZSTD_LEVEL)
    locations = []
    for records in blocks:
        if not records:
            raise ValueError("an archive block needs at least one record")
        payload = compressor.compress(b"".join(records))
        start = out.tell()
        out.write(_zigzag(len(records)))
        out.write(_zigzag(len(payload)))
        out.write(payload)
        out.write(sync)
        locations.append(BlockLocation(start, out.tell() - start, len(records)))
    return BuiltObject(out.getvalue(), len(header.getvalue()), tuple(locations))


@dataclass(frozen=True)
class ArchiveHeader:
    schema_json: str
    codec: str
    sync: bytes
    length: int

    @property
    def schema(self) -> Any:
        return _parse_cached(self.schema_json)


@lru_cache(maxsize=32)
def _parse_cached(schema_json: str) -> Any:
    return parse_schema(json.loads(schema_json))


def parse_header(data: bytes) -> ArchiveHeader:
    """The header at the start of ``data`` (which may hold more than the header)."""
    if data[:4] != MAGIC:
        raise ArchiveFormatError("not an Avro object container (bad magic)")
    position = 4
    metadata: dict[str, bytes] = {}
    while True:
        count, position = _read_long(data, position)
        if count == 0:
            break
        if count < 0:  # a negative count is followed by the block's byte size
            count = -count
            _, position = _read_long(data, position)
        for _ in range(count):
            key_length, position = _read_long(data, position)
            key = data[position : position + key_length].decode()
            position += key_length
            value_length, position = _read_long(data, position)
            metadata[key] = data[position : position + value_length]
            position += value_length
    sync = data[position : position + SYNC_SIZE]
    if len(sync) != SYNC_SIZE:
        raise ArchiveFormatError("truncated header")
    if "avro.schema" not in metadata:
        raise ArchiveFormatError("header has no avro.schema")
    codec = metadata.get("avro.codec", b"null").decode()
    return ArchiveHeader(metadata["avro.schema"].decode(), codec, sync, position + SYNC_SIZE)


def _decompress(codec: str, payload: bytes) -> bytes:
    if codec == "zstandard":
        return zstandard.ZstdDecompressor().decompress(payload, max_output_size=1 << 31)
    if codec == "null":
        return payload
    if codec == "deflate":
        return zlib.decompress(payload, -15)
    raise ArchiveFormatError(f"unsupported codec {codec!r}")


@dataclass(frozen=True)
class ArchivedRecord:
    """One record as archived: its exact bytes (what its hash covers) and its decoded value."""

    raw: bytes
    value: Any


def read_block(header: ArchiveHeader, block: bytes) -> list[ArchivedRecord]:
    """Decode one block (count, size, payload, sync) into records with their exact bytes."""
    count, position = _read_long(block, 0)
    size, position = _read_long(block, position)
    payload = block[position : position + size]
    if len(payload) != size:
        raise ArchiveFormatError("truncated block")
    if block[position + size : position + size + SYNC_SIZE] != header.sync:
        raise ArchiveFormatError("block does not end with the object's sync marker")
    data = _decompress(header.codec, payload)
    stream = io.BytesIO(data)
    schema = header.schema
    records = []
    for _ in range(count):
        start = stream.tell()
        try:
            value = fastavro.schemaless_reader(
                stream, schema, None, return_record_name=True, return_record_name_override=True
            )
        except Exception as exc:
            raise ArchiveFormatError(f"undecodable record in block: {exc}") from exc
        records.append(ArchivedRecord(data[start : stream.tell()], value))
    if stream.tell() != len(data):
        raise ArchiveFormatError("block holds more bytes than its record count explains")
    return records


def iter_blocks(data: bytes) -> Iterator[tuple[BlockLocation, list[ArchivedRecord]]]:
    """Every block of a whole object, in order."""
    header = parse_header(data)
    position = header.length
    while position < len(data):
        count, after_count = _read_long(data, position)
        size, after_size = _read_long(data, after_count)
        end = after_size + size + SYNC_SIZE
        if end > len(data):
            raise ArchiveFormatError("truncated block at end of object")
        yield BlockLocation(position, end - position, count), read_block(header, data[position:end])
        position = end


# -- object keys ----------------------------------------------------------------------------------
# The seal worker writes one object per partition and batch, named by the offsets it covers, so a
# replay of the same offsets names the same object; the ledger shards by the same prefix.

_OBJECT_NAME = re.compile(r"([0-9]{20})-([0-9]{20})\.avro")


def object_prefix(epoch: str, partition: int) -> str:
    """Where one partition's objects live: ``{epoch}/p{partition:05d}/``."""
    return f"{epoch}/p{partition:05d}/"


def object_key(epoch: str, partition: int, first_offset: int, last_offset: int) -> str:
    return f"{object_prefix(epoch, partition)}{first_offset:020d}-{last_offset:020d}.avro"


def parse_object_key(key: str) -> tuple[str, int, int, int] | None:
    """(epoch, partition, first offset, last offset) of a seal worker's object key, or None for
    any other key (a stray upload, a ledger file)."""
    epoch, _, rest = key.partition("/")
    partition_part, _, name = rest.partition("/")
    match = _OBJECT_NAME.fullmatch(name)
    if not epoch or match is None or not partition_part.startswith("p") or not partition_part[1:].isdigit():
        return None
    return epoch, int(partition_part[1:]), int(match.group(1)), int(match.group(2))
