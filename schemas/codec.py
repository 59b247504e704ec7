"""Avro single-object encoding (``C3 01`` + CRC-64-AVRO fingerprint + binary body).

Every message on a Blackbox topic names its writer schema by fingerprint, so a reader needs no
registry server: the registry here is built from the `.avsc` files shipped in this package,
current and historical. A message written with an older or newer schema is resolved into the
reader's (current) schema by Avro's resolution rules.
"""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import fastavro
from fastavro.schema import expand_schema, fingerprint, parse_schema, to_parsing_canonical_form

from schemas.event_reader import READ_OPTIONS, EventReader, read_block_count, read_bytes

logger = logging.getLogger(__name__)

SINGLE_OBJECT_MAGIC = b"\xc3\x01"
HEADER_SIZE = 10  # magic (2) + little-endian CRC-64-AVRO fingerprint (8)

NAMESPACE = "dev.blackbox.v1"
EVENT_SCHEMA = f"{NAMESPACE}.SessionEvent"
BATCH_SCHEMA = f"{NAMESPACE}.EventBatch"
SEALED_SCHEMA = f"{NAMESPACE}.SealedRecord"
SEALED_BATCH_SCHEMA = f"{NAMESPACE}.SealedBatch"

AVRO_DIR = Path(__file__).parent / "avro"

# Files whose named types others refer to come first; fastavro resolves names in parse order.
_LOAD_ORDER = ("session_event.avsc", "event_batch.avsc", "sealed_record.avsc", "sealed_batch.avsc")


class SchemaError(ValueError):
    """A message cannot be decoded or encoded with the known schemas."""


class NotSingleObject(SchemaError):
    """The bytes do not start with the Avro single-object marker."""


class UnknownFingerprint(SchemaError):
    """The writer schema's fingerprint is in no `.avsc` file this build knows."""


@dataclass(frozen=True)
class Decoded:
    """A decoded message: the reader schema it was resolved into, and its value."""

    schema_name: str
    value: Any


@dataclass(frozen=True)
class _WriterSchema:
    name: str
    fingerprint: bytes
    parsed: Any
    # The parsed current schema of the same name, or None when writer and reader are the same
    # schema: fastavro skips resolution entirely then, which is markedly faster.
    reader: Any


def canonical_form(parsed: Any) -> str:
    """Parsing Canonical Form with every named type defined inline at its first use.

    Schemas that refer to types from other files (SealedRecord → SessionEvent) must be expanded
    first: the canonical form, and so the fingerprint, is of the whole self-contained schema.
    """
    return str(to_parsing_canonical_form(expand_schema(parsed)))


def reads_unchanged(writer: Any, reader: Any) -> bool:
    """Whether bytes written with ``writer`` decode with ``reader`` as if it were the writer:
    the same schema up to branches appended to unions and symbols appended to enums (their
    indexes, and so every older datum's bytes, stay the same). Both in Parsing Canonical Form,
    as parsed JSON. Such a writer needs no resolution: its messages take the fast path."""
    if isinstance(writer, str) or isinstance(reader, str):
        return bool(writer == reader)
    if isinstance(writer, list) or isinstance(reader, list):
        return (
            isinstance(writer, list)
            and isinstance(reader, list)
            and len(writer) <= len(reader)
            and all(reads_unchanged(w, r) for w, r in zip(writer, reader, strict=False))
        )
    kind = writer.get("type")
    if kind != reader.get("type") or writer.get("name") != reader.get("name"):
        return False
    if kind == "record":
        fields, reader_fields = writer["fields"], reader["fields"]
        return len(fields) == len(reader_fields) and all(
            w["name"] == r["name"] and reads_unchanged(w["type"], r["type"])
            for w, r in zip(fields, reader_fields, strict=True)
        )
    if kind == "enum":
        symbols = writer["symbols"]
        return bool(reader["symbols"][: len(symbols)] == symbols)
    if kind == "array":
        return reads_unchanged(writer["items"], reader["items"])
    if kind == "map":
        return reads_unchanged(writer["values"], reader["values"])
    return bool(writer == reader)  # fixed, and primitives written as {"type": ...}


def _crc64_fingerprint(parsed: Any) -> bytes:
    return bytes.fromhex(fingerprint(canonical_form(parsed), "CRC-64-AVRO"))


def _fullname(raw: Mapping[str, Any]) -> str:
    name = str(raw["name"])
    namespace = raw.get("namespace")
    return name if "." in name or not namespace else f"{namespace}.{name}"


def _parse_family(files: Iterable[Path]) -> dict[str, Any]:
    """Parse a set of `.avsc` files that may refer to each other's named types."""
    named: dict[str, Any] = {}
    parsed: dict[str, Any] = {}
    for path in files:
        raw = json.loads(path.read_text())
        parsed[_fullname(raw)] = parse_schema(raw, named_schemas=named)
    return parsed


class SchemaRegistry:
    """Fingerprint → schema, built from `.avsc` files; encodes and decodes single objects."""

    def __init__(self, current: Mapping[str, Any], history: Iterable[Mapping[str, Any]] = ()) -> None:
        self._current = dict(current)
        # Events of the current schema (and of older ones read unchanged) skip fastavro's
        # generic reader for the most part; None if `EventReader` does not know the event
        # schema's layout (then fastavro reads everything).
        self._event_reader = (
            EventReader.for_schema(self._current[EVENT_SCHEMA]) if EVENT_SCHEMA in self._current else None
        )
        self._by_fingerprint: dict[bytes, _WriterSchema] = {}
        self._fingerprint_of: dict[str, bytes] = {}
        for name, parsed in self._current.items():
            fp = _crc64_fingerprint(parsed)
            self._fingerprint_of[name] = fp
            self._by_fingerprint[fp] = _WriterSchema(name, fp, parsed, None)
        for family in history:
            for name, parsed in family.items():
                fp = _crc64_fingerprint(parsed)
                if fp in self._by_fingerprint:
                    continue
                reader = self._current.get(name)
                if reader is None:
                    logger.warning("historical schema %s has no current version; skipped", name)
                    continue
                if reads_unchanged(json.loads(canonical_form(parsed)), json.loads(canonical_form(reader))):
                    # Older bytes are current bytes: read them as such, without resolution.
                    self._by_fingerprint[fp] = _WriterSchema(name, fp, reader, None)
                else:
                    self._by_fingerprint[fp] = _WriterSchema(name, fp, parsed, reader)

    @classmethod
    def from_directory(cls, directory: Path = AVRO_DIR) -> SchemaRegistry:
        """Current schemas from ``directory``; older versions from its ``history/vN`` folders."""
        current = _parse_family(directory / name for name in _LOAD_ORDER)
        history = []
        history_dir = directory / "history"
        if history_dir.is_dir():
            for version_dir in sorted(p for p in history_dir.iterdir() if p.is_dir()):
                files = [version_dir / n for n in _LOAD_ORDER if (version_dir / n).exists()]
                history.append(_parse_family(files))
        return cls(current, history)

    def schema(self, name: str) -> Any:
        """The parsed current schema called ``name``."""
        try:
            return self._current[name]
        except KeyError:
            raise SchemaError(f"no schema named {name!r}") from None

    def canonical_json(self, name: str) -> str:
        """The current schema ``name`` as self-contained canonical JSON (for file headers)."""
        return canonical_form(self.schema(name))

    def fingerprint_of(self, name: str) -> bytes:
        return self._fingerprint_of[name]

    def knows(self, fp: bytes) -> bool:
        return fp in self._by_fingerprint

    def resolves(self, fp: bytes) -> bool:
        """Whether messages of this writer are resolved into the current schema and their events
        encoded again (the slow path); False for the current schemas and for older ones whose
        bytes the current schemas read unchanged."""
        return self._by_fingerprint[fp].reader is not None

    def encode(self, name: str, value: Any) -> bytes:
        """Single-object encoding of ``value`` with the current schema ``name``."""
        out = io.BytesIO()
        out.write(SINGLE_OBJECT_MAGIC)
        out.write(self._fingerprint_of[name])
        try:
            fastavro.schemaless_writer(out, self._current[name], value)
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            raise SchemaError(f"cannot encode {name}: {exc}") from exc
        return out.getvalue()

    def encode_single(self, event_bytes: bytes, name: str = EVENT_SCHEMA) -> bytes:
        """Single-object framing around a body already encoded with the current schema ``name``."""
        return SINGLE_OBJECT_MAGIC + self._fingerprint_of[name] + event_bytes

    def encode_body(self, name: str, value: Any) -> bytes:
        """Plain Avro binary (no single-object header) with the current schema ``name``."""
        out = io.BytesIO()
        try:
            fastavro.schemaless_writer(out, self._current[name], value)
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            raise SchemaError(f"cannot encode {name}: {exc}") from exc
        return out.getvalue()

    def decode_body(self, name: str, data: bytes) -> Any:
        """Plain Avro binary written with the current schema ``name``."""
        try:
            return fastavro.schemaless_reader(io.BytesIO(data), self._current[name], None, **READ_OPTIONS)
        except Exception as exc:  # fastavro raises many types on corrupt input
            raise SchemaError(f"cannot decode {name}: {type(exc).__name__}: {exc}") from exc

    def decode_events(self, message: bytes) -> EventsMessage:
        """Decode a SessionEvent or EventBatch message, keeping each event's canonical bytes.

        The seal step hashes every event's canonical encoding. When the writer schema is the
        current one, those bytes are slices of the message itself, so nothing is re-encoded;
        an older or newer writer's events are resolved and re-encoded in the current schema.
        """
        writer = self._writer_of(message)
        if writer.name not in (EVENT_SCHEMA, BATCH_SCHEMA):
            raise SchemaError(f"{writer.name} is not an event message")
        if writer.reader is not None:
            value = self.decode(message).value
            events = [value] if writer.name == EVENT_SCHEMA else value["events"]
            encoded = [(event, self.encode_body(EVENT_SCHEMA, event)) for event in events]
            session = value["session_id"] if writer.name == BATCH_SCHEMA else None
            return EventsMessage(writer.name, session, encoded)
        try:
            if self._event_reader is None:
                result, end = self._read_generic(writer.name, message)
            elif writer.name == EVENT_SCHEMA:
                events, end = self._event_reader.read_events(message, HEADER_SIZE, 1)
                result = EventsMessage(writer.name, None, events)
            else:
                result, end = self._read_batch(message, self._event_reader)
        except SchemaError:
            raise
        except Exception as exc:  # corrupt bodies raise EOFError, UnicodeDecodeError, IndexError...
            raise SchemaError(f"undecodable {writer.name} body: {type(exc).__name__}: {exc}") from exc
        if end != len(message):
            raise SchemaError(f"{len(message) - end} trailing bytes after {writer.name} body")
        return result

    @staticmethod
    def _read_batch(message: bytes, reader: EventReader) -> tuple[EventsMessage, int]:
        raw_session_id, position = read_bytes(message, HEADER_SIZE)
        events: list[tuple[Any, bytes]] = []
        count, position = read_block_count(message, position)  # blocks, ended by a zero count
        while count:
            block, position = reader.read_events(message, position, count)
            events.extend(block)
            count, position = read_block_count(message, position)
        return EventsMessage(BATCH_SCHEMA, raw_session_id.decode(), events), position

    def _read_generic(self, name: str, message: bytes) -> tuple[EventsMessage, int]:
        """fastavro's reader, event by event (for an event schema `EventReader` declines)."""
        stream = io.BytesIO(message)
        stream.seek(HEADER_SIZE)
        event_schema = self._current[EVENT_SCHEMA]
        if name == EVENT_SCHEMA:
            event = fastavro.schemaless_reader(stream, event_schema, None, **READ_OPTIONS)
            return EventsMessage(name, None, [(event, message[HEADER_SIZE : stream.tell()])]), stream.tell()
        session_id = stream.read(_read_varint(stream)).decode()
        events: list[tuple[Any, bytes]] = []
        while True:
            count = _read_varint(stream)
            if count == 0:
                break
            if count < 0:
                count = -count
                _read_varint(stream)
            for _ in range(count):
                start = stream.tell()
                event = fastavro.schemaless_reader(stream, event_schema, None, **READ_OPTIONS)
                events.append((event, message[start : stream.tell()]))
        return EventsMessage(name, session_id, events), stream.tell()

    def _writer_of(self, message: bytes) -> _WriterSchema:
        if len(message) < HEADER_SIZE or message[:2] != SINGLE_OBJECT_MAGIC:
            raise NotSingleObject("not Avro single-object encoding (missing C3 01 marker)")
        fp = message[2:HEADER_SIZE]
        writer = self._by_fingerprint.get(fp)
        if writer is None:
            raise UnknownFingerprint(f"unknown schema fingerprint {fp.hex()}")
        return writer

    def decode(self, message: bytes) -> Decoded:
        """Decode a single-object message, resolving its writer schema into the current one."""
        writer = self._writer_of(message)
        stream = io.BytesIO(message)
        stream.seek(HEADER_SIZE)
        try:
            value = fastavro.schemaless_reader(stream, writer.parsed, writer.reader, **READ_OPTIONS)
        except Exception as exc:  # corrupt bodies raise EOFError, UnicodeDecodeError, IndexError...
            raise SchemaError(f"undecodable {writer.name} body: {type(exc).__name__}: {exc}") from exc
        if stream.tell() != len(message):
            raise SchemaError(f"{len(message) - stream.tell()} trailing bytes after {writer.name} body")
        return Decoded(writer.name, value)


@dataclass(frozen=True)
class EventsMessage:
    """The events of one message, each with its canonical Avro encoding (current schema)."""

    schema_name: str
    batch_session_id: str | None
    events: list[tuple[Any, bytes]]


def _read_varint(stream: io.BytesIO) -> int:
    shift = 0
    value = 0
    while True:
        chunk = stream.read(1)
        if not chunk:
            raise EOFError("truncated varint")
        byte = chunk[0]
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return (value >> 1) ^ -(value & 1)
        shift += 7
        if shift > 63:
            raise SchemaError("varint longer than 64 bits")


@lru_cache(maxsize=1)
def default_registry() -> SchemaRegistry:
    """The registry of the schemas shipped with this build (parsed once per process)."""
    return SchemaRegistry.from_directory()
