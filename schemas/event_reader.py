"""Reads SessionEvents written with the current schema, at a sixth of fastavro's cost or less.

fastavro walks the schema for every value and reads each varint one ``read(1)`` call at a
time: ~11 µs per event here, the largest single cost of the seal worker. Two facts about the
messages gateways send make most of that avoidable:

- the events of one message belong to one session, and nearly always repeat its gateway,
  identity, target and attributes byte for byte: that envelope is decoded when it changes (once
  per message, as a rule), and every event whose bytes repeat it shares the decoded value;
- every event starts with two strings and two longs, and half of all events carry terminal
  input or output, a body of one ``bytes`` field: those are read here, straight from the
  message;
- every other body is read here too, by walking its type's `schemas.shapes.Shape` over the
  message: ~2 µs for a query or an HTTP exchange where fastavro takes ~7.

A changed envelope, and a body type whose schema has a shape this reader does not walk, go to
fastavro, positioned on the same bytes. The values are equal to fastavro's, field for field
(tests/test_event_reader.py compares them on generated events and on corrupted messages);
events of one message may share envelope objects, so they are read-only, as the seal step
treats them anyway.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import Any

import fastavro
from fastavro.schema import SchemaParseException, parse_schema

from schemas.shapes import (
    ARRAY,
    BOOLEAN,
    BYTES,
    ENUM,
    INT,
    LONG,
    MAP,
    OPTIONAL,
    RECORD,
    STRING,
    Shape,
    UnsupportedShape,
    shape_of,
)

Event = dict[str, Any]
# The fields every event starts with, in order, and their Avro types.
HEAD_FIELDS = (("event_id", "string"), ("session_id", "string"), ("seq", "long"), ("event_time", "long"))
BODY_FIELD = "body"
# Readers return unions of several records as (full name, value) so that bodies with the same
# fields (TerminalOutput and TerminalInput) stay distinguishable; writers accept the same form.
# The codec reads with these options too, so this reader's values equal fastavro's.
READ_OPTIONS: dict[str, Any] = {"return_record_name": True, "return_record_name_override": True}


def read_long(data: bytes, position: int) -> tuple[int, int]:
    """A zigzag varint at ``position``: (value, position after it)."""
    byte = data[position]  # IndexError past the end
    if byte < 0x80:
        return (byte >> 1) ^ -(byte & 1), position + 1
    value = byte & 0x7F
    shift = 7
    while True:
        position += 1
        byte = data[position]
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            break
        shift += 7
        if shift > 63:
            raise ValueError("varint wider than 64 bits (more than 10 bytes)")
    if value >> 64:
        raise ValueError("varint wider than 64 bits")
    return (value >> 1) ^ -(value & 1), position + 1


def read_bytes(data: bytes, position: int) -> tuple[bytes, int]:
    """Avro bytes (a length, then the bytes) at ``position``: (value, position after it)."""
    size, position = read_long(data, position)
    end = position + size
    if size < 0 or end > len(data):
        raise EOFError(f"{size} bytes announced at offset {position}, {len(data) - position} left")
    return data[position:end], end


def read_value(shape: Shape, data: bytes, position: int) -> tuple[Any, int]:
    """The value of ``shape`` at ``position``, as fastavro reads it with `READ_OPTIONS`: (value,
    position after it). Where fastavro reads a corrupt encoding as something (a boolean byte
    other than 0 or 1, a negative enum index), this reads the same; it refuses what fastavro
    reads as nonsense only for an optional's union branch other than 0 or 1 and a varint wider
    than 64 bits."""
    kind = shape.kind
    if kind == STRING:
        raw, position = read_bytes(data, position)
        return raw.decode(), position
    if kind in (LONG, INT):
        return read_long(data, position)
    if kind == OPTIONAL:
        assert shape.item is not None
        branch, after = read_long(data, position)
        if branch == (1 if shape.null_first else 0):
            return read_value(shape.item, data, after)
        if branch == (0 if shape.null_first else 1):
            return None, after
        raise ValueError(f"union branch {branch} out of range at offset {position}")
    if kind == RECORD:
        record: dict[str, Any] = {}
        for name, field_shape, _, _ in shape.fields:
            record[name], position = read_value(field_shape, data, position)
        return record, position
    if kind == BYTES:
        return read_bytes(data, position)
    if kind == ARRAY:
        assert shape.item is not None
        items: list[Any] = []
        count, position = read_block_count(data, position)
        while count:
            for _ in range(count):
                item, position = read_value(shape.item, data, position)
                items.append(item)
            count, position = read_block_count(data, position)
        return items, position
    if kind == MAP:
        assert shape.item is not None
        entries: dict[str, Any] = {}
        count, position = read_block_count(data, position)
        while count:
            for _ in range(count):
                key, position = read_bytes(data, position)
                entries[key.decode()], position = read_value(shape.item, data, position)
            count, position = read_block_count(data, position)
        return entries, position
    if kind == BOOLEAN:
        return data[position] != 0, position + 1  # IndexError past the end
    if kind == ENUM:
        index, position = read_long(data, position)
        return shape.symbol_names[index], position  # a negative index counts from the end, as in fastavro
    return None, position  # null


def read_block_count(data: bytes, position: int) -> tuple[int, int]:
    """An array's or map's next block: how many items it has (0: the end), and where they start."""
    count, position = read_long(data, position)
    if count < 0:  # the block's size in bytes follows its count
        count = -count
        _, position = read_long(data, position)
    return count, position


def _is_single_bytes_record(schema: Any) -> bool:
    return (
        isinstance(schema, dict)
        and schema.get("type") == "record"
        and [(f["name"], f["type"]) for f in schema["fields"]] == [("data", "bytes")]
    )


class EventReader:
    """Reads the current SessionEvent schema's binary encoding; see the module's docstring.

    Built by `for_schema`, which declines (None) a schema whose layout this reader does not
    know, so that a future schema falls back to fastavro instead of being misread.
    """

    def __init__(self, event_schema: Any, named_schemas: dict[str, Any]) -> None:
        fields = event_schema["fields"]
        envelope = fields[len(HEAD_FIELDS) : -1]
        namespace = event_schema["name"].rpartition(".")[0]
        # Records of the envelope fields and of the body alone: fastavro reads each of them from
        # where it starts in the event (named types resolve through the event's own definitions).
        self._envelope = parse_schema(
            {"type": "record", "name": f"{namespace}.EventEnvelope", "fields": envelope}, dict(named_schemas)
        )
        self._body = parse_schema(
            {"type": "record", "name": f"{namespace}.EventBody", "fields": [fields[-1]]}, dict(named_schemas)
        )
        branches = fields[-1]["type"]
        self._branch_names = [branch["name"] for branch in branches]
        self._data_only = frozenset(i for i, branch in enumerate(branches) if _is_single_bytes_record(branch))
        self._shapes: list[Shape | None] = [_shape_or_none(branch, named_schemas) for branch in branches]

    @classmethod
    def for_schema(cls, event_schema: Any) -> EventReader | None:
        """A reader for this parsed SessionEvent schema, or None if its layout is not the one
        this reader knows: the head fields first, the body (a union of records) last."""
        fields = event_schema.get("fields", [])
        if len(fields) <= len(HEAD_FIELDS) + 1:
            return None
        head = tuple((field["name"], field["type"]) for field in fields[: len(HEAD_FIELDS)])
        body = fields[-1]
        if head != HEAD_FIELDS or body["name"] != BODY_FIELD or not isinstance(body["type"], list):
            return None
        # With one branch, fastavro returns the body without its name; this reader always names it.
        if len(body["type"]) < 2 or not all(
            isinstance(branch, dict) and branch.get("type") == "record" for branch in body["type"]
        ):
            return None
        try:
            return cls(event_schema, dict(event_schema.get("__named_schemas", {})))
        except SchemaParseException:  # the schema itself defines a name the reader's records take
            return None

    def read_events(self, message: bytes, position: int, count: int) -> tuple[list[tuple[Event, bytes]], int]:
        """``count`` events from ``position``: each with its exact bytes, and where they end."""
        stream = io.BytesIO(message)
        read: Callable[..., Any] = fastavro.schemaless_reader  # returns the record's dict here
        envelope_bytes = b""
        envelope: dict[str, Any] = {}
        data_only = self._data_only
        events: list[tuple[Event, bytes]] = []
        for _ in range(count):
            start = position
            raw, position = read_bytes(message, position)
            event_id = raw.decode()
            raw, position = read_bytes(message, position)
            session_id = raw.decode()
            seq, position = read_long(message, position)
            event_time, position = read_long(message, position)
            if envelope_bytes and message.startswith(envelope_bytes, position):
                position += len(envelope_bytes)
            else:
                stream.seek(position)
                envelope = read(stream, self._envelope, None, **READ_OPTIONS)
                envelope_bytes = message[position : stream.tell()]
                position = stream.tell()
            branch, after_branch = read_long(message, position)
            if branch in data_only:
                data, position = read_bytes(message, after_branch)
                body: Any = (self._branch_names[branch], {"data": data})
            elif not 0 <= branch < len(self._branch_names):
                raise ValueError(f"union branch {branch} out of range at offset {position}")
            elif (shape := self._shapes[branch]) is not None:
                body_value, position = read_value(shape, message, after_branch)
                body = (self._branch_names[branch], body_value)
            else:
                stream.seek(position)
                body = read(stream, self._body, None, **READ_OPTIONS)[BODY_FIELD]
                position = stream.tell()
            event: Event = {
                "event_id": event_id,
                "session_id": session_id,
                "seq": seq,
                "event_time": event_time,
            }
            event.update(envelope)
            event[BODY_FIELD] = body
            events.append((event, message[start:position]))
        return events, position


def _shape_or_none(branch: Any, named: dict[str, Any]) -> Shape | None:
    try:
        return shape_of(branch, named)
    except UnsupportedShape:
        return None
