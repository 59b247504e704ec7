"""schemas.event_reader must read exactly what fastavro reads, and refuse what fastavro refuses."""

from __future__ import annotations

import io
import json
import random
from pathlib import Path
from typing import Any

import fastavro
import pytest

from ingest.demo import demo_sessions, example_events, generate_load
from schemas import BATCH_SCHEMA, EVENT_SCHEMA, SchemaError, SchemaRegistry, default_registry
from schemas.codec import AVRO_DIR, HEADER_SIZE
from schemas.event_reader import READ_OPTIONS, EventReader, read_bytes, read_long
from tests.eventdata import body, make_event, output

REGISTRY = default_registry()


def _generic(message: bytes) -> Any:
    """What fastavro alone makes of a whole message (with the message's own schema, not event by
    event): (events, end offset), or the exception it raises."""
    single = message[2:HEADER_SIZE] == REGISTRY.fingerprint_of(EVENT_SCHEMA)
    stream = io.BytesIO(message)
    stream.seek(HEADER_SIZE)
    try:
        value: Any = fastavro.schemaless_reader(
            stream, REGISTRY.schema(EVENT_SCHEMA if single else BATCH_SCHEMA), None, **READ_OPTIONS
        )
    except Exception as exc:  # any failure is an outcome to compare
        return exc
    return ([value] if single else value["events"]), stream.tell()


def _same(left: Any, right: Any) -> bool:
    """Equal, and of the same types and dict key order at every level (``==`` ignores both)."""
    if type(left) is not type(right):
        return False
    if isinstance(left, dict):
        return list(left) == list(right) and all(_same(left[key], right[key]) for key in left)
    if isinstance(left, list | tuple):
        return len(left) == len(right) and all(map(_same, left, right))
    return bool(left == right)


def _fast(message: bytes) -> Any:
    try:
        return REGISTRY.decode_events(message)
    except SchemaError as exc:
        return exc


def _batch(events: list[dict[str, Any]]) -> bytes:
    return REGISTRY.encode(BATCH_SCHEMA, {"session_id": events[0]["session_id"], "events": events})


def _messages() -> list[bytes]:
    """Batches and single events of every body type, demo sessions and generated load."""
    examples = [dict(event) for event in example_events().values()]
    messages = [REGISTRY.encode(EVENT_SCHEMA, event) for event in examples]
    messages.append(_batch(examples))
    sessions = [[dict(event) for event in session] for session in demo_sessions(seed=3, start_us=0)]
    sessions += [[dict(event) for event in batch] for batch in generate_load(6, 40, seed=5)]
    for session in sessions:
        messages.extend(_batch(session[i : i + 25]) for i in range(0, len(session), 25))
    return messages


MESSAGES = _messages()


def test_the_registry_uses_the_event_reader() -> None:
    assert isinstance(REGISTRY._event_reader, EventReader)


def test_reads_every_message_as_fastavro_does() -> None:
    for message in MESSAGES:
        outcome = _generic(message)
        assert not isinstance(outcome, Exception)
        expected, end = outcome
        assert end == len(message)
        decoded = REGISTRY.decode_events(message)
        assert _same([event for event, _ in decoded.events], expected)
        # Each event's bytes are exactly its own encoding.
        for event, raw in decoded.events:
            assert raw == REGISTRY.encode_body(EVENT_SCHEMA, event)


def test_a_changed_envelope_is_read_again_and_a_repeated_one_is_shared() -> None:
    events = [
        make_event("s-1", 0, principal="alice"),
        make_event("s-1", 1, principal="alice"),
        make_event("s-1", 2, principal="bob", target="billing"),
        make_event(
            "s-1",
            3,
            body("Query", statement="select 1", parameters=[], database=None),
            principal="bob",
            target="billing",
        ),
        make_event("s-1", 4, principal="alice"),
    ]
    decoded = [event for event, _ in REGISTRY.decode_events(_batch(events)).events]
    assert decoded == events
    assert decoded[1]["identity"] is decoded[0]["identity"]
    assert decoded[2]["identity"] is not decoded[1]["identity"]
    assert decoded[3]["target"] is decoded[2]["target"]
    assert decoded[4]["identity"] is not decoded[0]["identity"]  # changed back: decoded again


def test_a_batch_of_several_array_blocks() -> None:
    """Avro writers may split an array into blocks, with a negative count and a byte size."""
    events = [make_event("s-2", seq) for seq in range(5)]
    encoded = [REGISTRY.encode_body(EVENT_SCHEMA, event) for event in events]
    session = b"s-2"
    first, second = encoded[:2], encoded[2:]
    body_bytes = b"".join(
        (
            _long(len(session)),
            session,
            _long(len(first)),
            *first,
            _long(-len(second)),
            _long(len(b"".join(second))),
            *second,
            _long(0),
        )
    )
    message = REGISTRY.encode_single(body_bytes, BATCH_SCHEMA)
    decoded = REGISTRY.decode_events(message)
    assert decoded.batch_session_id == "s-2"
    assert [event for event, _ in decoded.events] == events
    assert [raw for _, raw in decoded.events] == encoded
    assert not isinstance(_generic(message), Exception)


def _long(value: int) -> bytes:
    """Avro's zigzag varint, written out independently of the code under test."""
    unsigned = (value << 1) ^ (value >> 63)
    out = bytearray()
    while unsigned >= 0x80:
        out.append(unsigned & 0x7F | 0x80)
        unsigned >>= 7
    out.append(unsigned)
    return bytes(out)


def _corrupted(rng: random.Random, message: bytes) -> bytes:
    data = bytearray(message)
    change = rng.random()
    if change < 0.3:
        return bytes(data[: rng.randrange(HEADER_SIZE, len(data))])
    if change < 0.6:
        data[rng.randrange(HEADER_SIZE, len(data))] = rng.randrange(256)
    elif change < 0.8:
        position = rng.randrange(HEADER_SIZE, len(data))
        data[position:position] = rng.randbytes(rng.randint(1, 3))
    else:
        del data[rng.randrange(HEADER_SIZE, len(data))]
    return bytes(data)


def test_corrupted_messages_are_refused_or_read_as_fastavro_reads_them() -> None:
    rng = random.Random(11)
    refused = agreed = stricter = 0
    for _ in range(6000):
        message = _corrupted(rng, rng.choice(MESSAGES))
        generic, fast = _generic(message), _fast(message)
        if isinstance(generic, Exception) or generic[1] != len(message):
            assert isinstance(fast, SchemaError), "fastavro refuses this message, the reader must too"
            refused += 1
        elif isinstance(fast, SchemaError):
            # Stricter than fastavro only where fastavro reads nonsense: a negative union branch
            # (Python's negative indexing picks a branch from the end) or a varint wider than 64
            # bits (fastavro's unsigned arithmetic wraps it). What fastavro read then does not
            # encode back to the bytes it was read from.
            assert "union branch" in str(fast) or "64 bits" in str(fast), str(fast)
            assert b"".join(REGISTRY.encode_body(EVENT_SCHEMA, event) for event in generic[0]) not in message
            stricter += 1
        else:
            assert _same([event for event, _ in fast.events], generic[0])
            agreed += 1
    # Both kinds of outcome were exercised, not only one of them.
    assert refused > 1000
    assert agreed > 100
    assert stricter < agreed / 10


def test_every_body_type_is_read_by_the_reader_itself() -> None:
    """No body type of the current schema falls back to fastavro (its shape is walked)."""
    reader = REGISTRY._event_reader
    assert reader is not None
    shapes = zip(reader._branch_names, reader._shapes, strict=True)
    assert [name for name, shape in shapes if shape is None] == []


def test_each_byte_of_each_example_changed_is_read_as_fastavro_reads_it() -> None:
    """Every body shape, each of its bytes replaced by values that are a boolean's other truths,
    a negative enum index or union branch, a long's continuation: read or refused as fastavro
    does (random corruption of long batches rarely lands on a boolean or an enum)."""
    compared = 0
    for event in example_events().values():
        message = REGISTRY.encode(EVENT_SCHEMA, dict(event))
        for position in range(HEADER_SIZE, len(message)):
            for value in (0x00, 0x01, 0x02, 0x03, 0x05, 0x7F, 0x80):
                changed = message[:position] + bytes([value]) + message[position + 1 :]
                generic, fast = _generic(changed), _fast(changed)
                if isinstance(generic, Exception) or generic[1] != len(changed):
                    assert isinstance(fast, SchemaError), changed
                elif isinstance(fast, SchemaError):
                    assert "union branch" in str(fast) or "64 bits" in str(fast), str(fast)
                else:
                    assert _same([event for event, _ in fast.events], generic[0]), changed
                    compared += 1
    assert compared > 1000


@pytest.mark.parametrize(
    ("value", "encoding"),
    [
        (0, b"\x00"),
        (-1, b"\x01"),
        (63, b"\x7e"),
        (64, b"\x80\x01"),
        (-65, b"\x81\x01"),
        (2**63 - 1, b"\xfe" + b"\xff" * 8 + b"\x01"),
        (-(2**63), b"\xff" * 9 + b"\x01"),
    ],
)
def test_read_long(value: int, encoding: bytes) -> None:
    assert read_long(b"x" + encoding + b"y", 1) == (value, 1 + len(encoding))


def test_read_long_refuses_what_is_not_a_64_bit_varint() -> None:
    with pytest.raises(ValueError, match="more than 10 bytes"):
        read_long(b"\xff" * 11, 0)
    with pytest.raises(ValueError, match="wider than 64 bits"):
        read_long(b"\xff" * 9 + b"\x7f", 0)
    with pytest.raises(IndexError):
        read_long(b"\x80\x80", 0)


def test_read_bytes_refuses_a_length_beyond_the_data_or_negative() -> None:
    assert read_bytes(b"\x06abcd", 0) == (b"abc", 4)
    with pytest.raises(EOFError):
        read_bytes(b"\x0aabcd", 0)
    with pytest.raises(EOFError):
        read_bytes(b"\x03abcd", 0)


def test_a_schema_of_another_layout_is_declined() -> None:
    event_schema = REGISTRY.schema(EVENT_SCHEMA)
    fields = event_schema["fields"]
    assert EventReader.for_schema({**event_schema, "fields": [fields[1], fields[0], *fields[2:]]}) is None
    assert EventReader.for_schema({**event_schema, "fields": fields[:-1]}) is None
    time_as_timestamp = {**fields[3], "type": {"type": "long", "logicalType": "timestamp-micros"}}
    assert (
        EventReader.for_schema({**event_schema, "fields": [*fields[:3], time_as_timestamp, *fields[4:]]})
        is None
    )
    # fastavro returns the body of a one-branch union without its name.
    one_branch = {**fields[-1], "type": fields[-1]["type"][1:2]}
    assert EventReader.for_schema({**event_schema, "fields": [*fields[:-1], one_branch]}) is None


def test_a_registry_of_a_declined_layout_reads_with_fastavro(tmp_path: Path) -> None:
    avro = tmp_path / "avro"
    avro.mkdir()
    for name in ("session_event.avsc", "event_batch.avsc", "sealed_record.avsc", "sealed_batch.avsc"):
        (avro / name).write_text((AVRO_DIR / name).read_text())
    raw = json.loads((AVRO_DIR / "session_event.avsc").read_text())
    raw["fields"][0], raw["fields"][1] = raw["fields"][1], raw["fields"][0]  # session_id first
    (avro / "session_event.avsc").write_text(json.dumps(raw))
    registry = SchemaRegistry.from_directory(avro)
    assert registry._event_reader is None

    events = [make_event("s-3", 0), make_event("s-3", 1, output(b"\x1b[1mbold\x1b[0m"))]
    message = registry.encode(BATCH_SCHEMA, {"session_id": "s-3", "events": events})
    decoded = registry.decode_events(message)
    assert decoded.batch_session_id == "s-3"
    assert [event for event, _ in decoded.events] == events
    assert [raw for _, raw in decoded.events] == [registry.encode_body(EVENT_SCHEMA, e) for e in events]
    single = registry.encode(EVENT_SCHEMA, events[1])
    assert registry.decode_events(single).events == [(events[1], single[HEADER_SIZE:])]
    with pytest.raises(SchemaError, match="trailing bytes"):
        registry.decode_events(message + b"\x00")
