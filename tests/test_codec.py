"""Single-object encoding, fingerprints and schema evolution."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
from fastavro.schema import parse_schema

from schemas import (
    BATCH_SCHEMA,
    EVENT_SCHEMA,
    NotSingleObject,
    SchemaError,
    SchemaRegistry,
    UnknownFingerprint,
    default_registry,
)
from schemas.codec import AVRO_DIR, canonical_form, reads_unchanged
from tests.eventdata import body, make_event

REGISTRY = default_registry()


def crc64_avro(data: bytes) -> int:
    """CRC-64-AVRO written from the Avro specification, independent of fastavro."""
    empty = 0xC15D213AA4D7A795
    table = []
    for i in range(256):
        fp = i
        for _ in range(8):
            fp = (fp >> 1) ^ (empty & -(fp & 1))
        table.append(fp)
    fp = empty
    for byte in data:
        fp = (fp >> 8) ^ table[(fp ^ byte) & 0xFF]
    return fp


def test_message_is_marker_fingerprint_and_body() -> None:
    message = REGISTRY.encode(EVENT_SCHEMA, make_event("s-1", 0))
    assert message[:2] == b"\xc3\x01"
    expected = crc64_avro(canonical_form(REGISTRY.schema(EVENT_SCHEMA)).encode()).to_bytes(8, "little")
    assert message[2:10] == expected
    assert REGISTRY.decode(message).value["session_id"] == "s-1"


def test_fingerprint_covers_referenced_types_inline() -> None:
    # EventBatch refers to SessionEvent by name; its canonical form must define it inline.
    canonical = canonical_form(REGISTRY.schema(BATCH_SCHEMA))
    assert '"name":"dev.blackbox.v1.SessionEvent"' in canonical
    assert REGISTRY.fingerprint_of(BATCH_SCHEMA) == crc64_avro(canonical.encode()).to_bytes(8, "little")


def test_decode_events_keeps_each_events_canonical_bytes() -> None:
    events = [make_event("s-1", seq) for seq in range(5)]
    decoded = REGISTRY.decode_events(REGISTRY.encode(BATCH_SCHEMA, {"session_id": "s-1", "events": events}))
    assert decoded.batch_session_id == "s-1"
    assert [e["seq"] for e, _ in decoded.events] == list(range(5))
    for event, raw in decoded.events:
        assert raw == REGISTRY.encode_body(EVENT_SCHEMA, event)


def test_terminal_input_and_output_stay_distinct() -> None:
    event = make_event("s-1", 0, body("TerminalInput", data=b"ls\r"))
    decoded = REGISTRY.decode(REGISTRY.encode(EVENT_SCHEMA, event)).value
    assert decoded["body"][0] == "dev.blackbox.v1.TerminalInput"


@pytest.mark.parametrize(
    ("message", "error", "text"),
    [
        (b"", NotSingleObject, "C3 01"),
        (b"garbage bytes that are not avro", NotSingleObject, "C3 01"),
        (b"\xc3\x01" + bytes(8) + b"\x00", UnknownFingerprint, "unknown schema fingerprint"),
    ],
)
def test_bad_messages_raise_clear_errors(message: bytes, error: type[Exception], text: str) -> None:
    with pytest.raises(error, match=text):
        REGISTRY.decode_events(message)


def test_truncated_and_trailing_bytes_are_errors() -> None:
    message = REGISTRY.encode(EVENT_SCHEMA, make_event("s-1", 0))
    with pytest.raises(SchemaError):
        REGISTRY.decode_events(message[:-3])
    with pytest.raises(SchemaError, match="trailing"):
        REGISTRY.decode_events(message + b"\x00")


# -- evolution ---------------------------------------------------------------------------


def _raw(name: str) -> dict[str, Any]:
    return dict(json.loads((AVRO_DIR / name).read_text()))


def _registry(event_schema: dict[str, Any], history: list[dict[str, Any]] | None = None) -> SchemaRegistry:
    def family(event: dict[str, Any]) -> dict[str, Any]:
        named: dict[str, Any] = {}
        parsed_event = parse_schema(copy.deepcopy(event), named_schemas=named)
        parsed_batch = parse_schema(_raw("event_batch.avsc"), named_schemas=named)
        return {EVENT_SCHEMA: parsed_event, BATCH_SCHEMA: parsed_batch}

    return SchemaRegistry(family(event_schema), [family(h) for h in history or []])


def _newer_event_schema() -> dict[str, Any]:
    """What a later release might ship: a new envelope field with a default and a new body."""
    schema = _raw("session_event.avsc")
    schema["fields"].insert(
        5, {"name": "tenant", "type": "string", "default": "default", "doc": "added in a later version"}
    )
    body_field = next(f for f in schema["fields"] if f["name"] == "body")
    body_field["type"].append(
        {"type": "record", "name": "FileTransfer", "fields": [{"name": "path", "type": "string"}]}
    )
    return schema


def test_current_reader_reads_a_newer_writers_events() -> None:
    newer = _registry(_newer_event_schema())
    reader = _registry(_raw("session_event.avsc"), history=[_newer_event_schema()])
    event = {**make_event("s-1", 0), "tenant": "acme"}
    decoded = reader.decode_events(newer.encode(EVENT_SCHEMA, event))
    ((value, raw),) = decoded.events
    assert "tenant" not in value  # dropped: the reader does not know it
    assert value["body"] == event["body"]
    assert raw == REGISTRY.encode_body(EVENT_SCHEMA, value)  # re-encoded in the reader's schema


def test_newer_reader_reads_current_writers_events_with_defaults() -> None:
    newer_reader = _registry(_newer_event_schema(), history=[_raw("session_event.avsc")])
    message = REGISTRY.encode(EVENT_SCHEMA, make_event("s-1", 0))
    ((value, _),) = newer_reader.decode_events(message).events
    assert value["tenant"] == "default"


def test_a_body_type_the_reader_does_not_know_is_a_clear_error() -> None:
    newer = _registry(_newer_event_schema())
    reader = _registry(_raw("session_event.avsc"), history=[_newer_event_schema()])
    event = {
        **make_event("s-1", 0),
        "tenant": "acme",
        "body": ("dev.blackbox.v1.FileTransfer", {"path": "/etc"}),
    }
    with pytest.raises(SchemaError):
        reader.decode_events(newer.encode(EVENT_SCHEMA, event))


def test_history_directory_is_loaded(tmp_path: Path) -> None:
    avro = tmp_path / "avro"
    (avro / "history" / "v2").mkdir(parents=True)
    for name in ("session_event.avsc", "event_batch.avsc", "sealed_record.avsc", "sealed_batch.avsc"):
        (avro / name).write_text((AVRO_DIR / name).read_text())
    (avro / "history" / "v2" / "session_event.avsc").write_text(json.dumps(_newer_event_schema()))
    registry = SchemaRegistry.from_directory(avro)
    newer = _registry(_newer_event_schema())
    message = newer.encode(EVENT_SCHEMA, {**make_event("s-1", 0), "tenant": "x"})
    assert registry.decode_events(message).events[0][0]["session_id"] == "s-1"


def test_events_of_the_first_schema_version_are_read_with_the_same_bytes() -> None:
    """Gateways built against v1 (before the worker's OutputFlush body was appended) go on
    working, and their events hash the same: appending a union branch changes no encoding."""
    v1_dir = AVRO_DIR / "history" / "v1"
    v1 = _registry(json.loads((v1_dir / "session_event.avsc").read_text()))
    assert v1.fingerprint_of(EVENT_SCHEMA) != REGISTRY.fingerprint_of(EVENT_SCHEMA)
    event = make_event("s-1", 3, body("TerminalOutput", data=b"hello\r\n"))
    message = v1.encode(BATCH_SCHEMA, {"session_id": "s-1", "events": [event]})
    assert not REGISTRY.resolves(v1.fingerprint_of(BATCH_SCHEMA))  # the fast path: no re-encoding
    ((value, raw),) = REGISTRY.decode_events(message).events
    assert value == event
    assert raw == v1.encode_body(EVENT_SCHEMA, event)
    assert raw == message[-len(raw) - 1 : -1]  # the message's own bytes (a zero count ends the array)


def test_only_appended_union_branches_and_enum_symbols_read_unchanged() -> None:
    current = json.loads(canonical_form(REGISTRY.schema(EVENT_SCHEMA)))
    body = next(f for f in current["fields"] if f["name"] == "body")
    kind = next(f for f in current["fields"] if f["name"] == "identity")["type"]["fields"][1]["type"]
    assert reads_unchanged(current, current)

    fewer_bodies = copy.deepcopy(current)
    next(f for f in fewer_bodies["fields"] if f["name"] == "body")["type"] = body["type"][:-1]
    assert reads_unchanged(fewer_bodies, current)  # an older writer: its branches keep their index
    assert not reads_unchanged(current, fewer_bodies)  # a newer one may write a branch unknown here

    moved = copy.deepcopy(current)
    next(f for f in moved["fields"] if f["name"] == "body")["type"] = body["type"][1:] + body["type"][:1]
    assert not reads_unchanged(moved, current)  # the same branches, other indexes

    fewer_kinds = copy.deepcopy(current)
    next(f for f in fewer_kinds["fields"] if f["name"] == "identity")["type"]["fields"][1]["type"] = {
        **kind,
        "symbols": kind["symbols"][:-1],
    }
    assert reads_unchanged(fewer_kinds, current)
    assert not reads_unchanged(json.loads(canonical_form(parse_schema(_newer_event_schema()))), current)
    newer = _registry(_newer_event_schema()).fingerprint_of(EVENT_SCHEMA)
    assert _registry(_raw("session_event.avsc"), history=[_newer_event_schema()]).resolves(newer)
