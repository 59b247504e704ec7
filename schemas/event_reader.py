"""Reads SessionEvents written with the current schema, at about half fastavro's cost.

fastavro walks the schema for every value and reads each varint one ``read(1)`` call at a
time: ~11 µs per event here, the largest single cost of the seal worker. Two facts about the
messages gateways send make most of that avoidable:

- the events of one message belong to one session, and nearly always repeat its gateway,
  identity, target and attributes byte for byte: that envelope is decoded when it changes (once
  per message, as a rule), and every event whose bytes repeat it shares the decoded value;
- every event starts with two strings and two longs, and half of all events carry terminal
  input or output, a body of one ``bytes`` field: those are read here, straight from the
  message.

A changed envelope and every other body go to fastavro, positioned on the same bytes. The
values are equal to fastavro's, field for field (tests/test_event_reader.py compares them on
generated events and on corrupted messages); events of one message may share envelope objects,
so they are read-only, as the seal step treats them anyway.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import Any

import fastavro
from fastavro.schema import SchemaParseException, parse_schema

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
