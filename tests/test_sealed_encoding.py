"""The hand-written SealedRecord encoder must equal the generic Avro writer, byte for byte."""

from __future__ import annotations

import random
from typing import Any

import pytest

from ingest.demo import example_events
from schemas import EVENT_SCHEMA, SEALED_SCHEMA, SchemaError, default_registry
from schemas.sealed import (
    RECORD_KINDS,
    SINGLE_DATA_BODIES,
    BodyWriter,
    encode_sealed_record,
)
from tests.eventdata import make_event

REGISTRY = default_registry()
BODIES = BodyWriter.for_event_schema(REGISTRY.schema(EVENT_SCHEMA))
EXAMPLES = example_events()


def _random_record(rng: random.Random) -> dict[str, Any]:
    kind = rng.choice(RECORD_KINDS)
    with_event = rng.random() < 0.6
    return {
        "session_id": "s" * rng.randint(1, 300),
        "index": rng.choice([0, 1, 63, 64, 127, 128, 8191, 8192, 2**31, 2**62]),
        "kind": kind,
        "prev_hash": rng.randbytes(32),
        "source_seq": rng.choice([None, 0, -1, 5, 2**40]),
        "event_digest": rng.choice([None, rng.randbytes(32)]),
        "event": make_event("s", rng.randint(0, 1000)) if with_event else None,
        "gap": rng.choice([None, {"first_seq": rng.randint(0, 99), "last_seq": rng.randint(100, 10**6)}]),
        "seal": rng.choice(
            [
                None,
                {
                    "reason": "idle_timeout",
                    "record_count": rng.randint(0, 10**9),
                    "last_seq": -1,
                    "head_hash": rng.randbytes(32),
                },
            ]
        ),
        "findings": [
            {
                "entity_type": "EMAIL_ADDRESS",
                "field": "body.data",
                "start": rng.randint(0, 500),
                "end": rng.randint(500, 10_000),  # across the table of precomputed encodings
                "blind_index": rng.randbytes(32),
            }
            for _ in range(rng.choice([0, 0, 1, 3]))
        ],
        "risk": rng.choice(
            [
                None,
                {
                    "score": rng.randint(0, 100),
                    "reasons": [{"rule_id": "sql.ddl", "message": "DDL in production"}] * rng.randint(0, 2),
                },
            ]
        ),
    }


@pytest.mark.parametrize("seed", range(200))
def test_hand_encoder_matches_fastavro(seed: int) -> None:
    value = _random_record(random.Random(seed))
    event_bytes = REGISTRY.encode_body(EVENT_SCHEMA, value["event"]) if value["event"] else None
    generic = REGISTRY.encode_body(
        SEALED_SCHEMA,
        {**value, "event": ("dev.blackbox.v1.SessionEvent", value["event"]) if value["event"] else None},
    )
    assert encode_sealed_record(value, event_bytes) == generic


def test_field_order_is_what_the_encoder_assumes() -> None:
    names = [field["name"] for field in REGISTRY.schema(SEALED_SCHEMA)["fields"]]
    assert names == [
        "session_id",
        "index",
        "kind",
        "prev_hash",
        "source_seq",
        "event_digest",
        "event",
        "gap",
        "seal",
        "findings",
        "risk",
    ]


@pytest.mark.parametrize("body_type", sorted(SINGLE_DATA_BODIES))
@pytest.mark.parametrize("lengths", [(0, 0), (0, 5), (5, 0), (63, 63), (63, 64), (64, 63), (200, 8192)])
def test_terminal_data_splice_equals_the_generic_writer(body_type: str, lengths: tuple[int, int]) -> None:
    assert BODIES is not None
    rng = random.Random(repr((body_type, lengths)))
    old, new = rng.randbytes(lengths[0]), rng.randbytes(lengths[1])
    event = make_event("s", 7)
    event["attributes"] = {"term": "xterm", "x": "y" * 70}
    event["body"] = (body_type, {"data": old})
    original = REGISTRY.encode_body(EVENT_SCHEMA, event)
    changed = {**event, "body": (body_type, {"data": new})}
    assert BODIES.with_body(original, event["body"], changed["body"]) == REGISTRY.encode_body(
        EVENT_SCHEMA, changed
    )


def test_a_splice_on_bytes_that_do_not_end_with_the_data_is_refused() -> None:
    assert BODIES is not None
    event = make_event("s", 7)
    event["body"] = ("dev.blackbox.v1.TerminalOutput", {"data": b"abc"})
    old = ("dev.blackbox.v1.TerminalOutput", {"data": b"abd"})
    assert BODIES.with_body(REGISTRY.encode_body(EVENT_SCHEMA, event), old, event["body"]) is None


# --- masked bodies -------------------------------------------------------------------------------


def _masked_copy(value: Any, rng: random.Random) -> Any:
    """``value`` with every string and bytes value replaced, as masking might (other lengths too,
    across the one- and two-byte length encodings, some non-ASCII)."""
    if isinstance(value, str):
        return "".join(rng.choice("*xé█") for _ in range(rng.choice([0, 1, len(value), 63, 64, 200])))
    if isinstance(value, bytes):
        return rng.randbytes(rng.choice([0, len(value), 64, 300]))
    if isinstance(value, list):
        return [_masked_copy(item, rng) for item in value]
    if isinstance(value, dict):
        return {key: _masked_copy(item, rng) for key, item in value.items()}
    return value


def _encoded(event: dict[str, Any]) -> bytes:
    return REGISTRY.encode_body(EVENT_SCHEMA, event)


def test_the_body_writer_takes_every_body_type_of_the_current_schema() -> None:
    assert BODIES is not None
    for event in EXAMPLES.values():
        assert _encoded(event).endswith(BODIES.encode(event["body"]))


@pytest.mark.parametrize("name", sorted(EXAMPLES))
@pytest.mark.parametrize("seed", range(5))
def test_a_body_splice_equals_the_generic_writer(name: str, seed: int) -> None:
    assert BODIES is not None
    rng = random.Random(f"{name}:{seed}")
    event = EXAMPLES[name]
    body_type, body = event["body"]
    masked = {**event, "body": (body_type, _masked_copy(body, rng))}
    try:
        expected: bytes | None = _encoded(masked)
    except SchemaError:  # a changed enum symbol: the generic writer refuses, the splice declines
        expected = None
    assert BODIES.with_body(_encoded(event), event["body"], masked["body"]) == expected


def test_optional_fields_and_maps_splice_as_the_generic_writer_writes_them() -> None:
    assert BODIES is not None
    event = EXAMPLES["http_exchange"]
    body_type, body = event["body"]
    for changed in (
        {**body, "request_body": None, "response_body": None},
        {**body, "request_headers": {}, "response_headers": {"x-" + "h" * n: "v" * n for n in range(70)}},
    ):
        masked = {**event, "body": (body_type, changed)}
        assert BODIES.with_body(_encoded(event), event["body"], masked["body"]) == _encoded(masked)


@pytest.mark.parametrize(
    "wrong",
    [
        {"status_code": "200"},  # a string where the schema has an int
        {"status_code": 2**40},  # past an int's range
        {"method": None},  # null where null is not allowed
        {"method": b"GET"},  # bytes for a string
        {"request_headers": [("a", "b")]},  # a list for a map
        {"url": "\udc80"},  # not encodable as UTF-8
    ],
)
def test_a_value_the_body_writer_does_not_take_is_left_to_the_generic_writer(wrong: dict[str, Any]) -> None:
    assert BODIES is not None
    event = EXAMPLES["http_exchange"]
    body_type, body = event["body"]
    assert BODIES.with_body(_encoded(event), event["body"], (body_type, {**body, **wrong})) is None


def test_bytes_that_do_not_end_with_the_old_body_are_not_spliced() -> None:
    assert BODIES is not None
    event = EXAMPLES["query_result"]
    other = EXAMPLES["query"]
    assert BODIES.with_body(_encoded(other), event["body"], event["body"]) is None


def test_schema_shapes_the_body_writer_does_not_write_are_declined() -> None:
    union = {"type": "record", "name": "a.Odd", "fields": [{"name": "v", "type": ["string", "long"]}]}
    timestamp = {
        "type": "record",
        "name": "a.When",
        "fields": [{"name": "t", "type": {"type": "long", "logicalType": "timestamp-micros"}}],
    }
    plain = {"type": "record", "name": "a.Plain", "fields": [{"name": "v", "type": "string"}]}
    writer = BodyWriter([union, timestamp, plain], {})
    assert writer.encode(("a.Plain", {"v": "x"})) == b"\x04\x02x"  # branch 2, then the string
    for name, value in (("a.Odd", {"v": "x"}), ("a.When", {"t": 1})):
        assert writer.with_body(b"", (name, value), (name, value)) is None
    assert (
        BodyWriter.for_event_schema(
            {"type": "record", "name": "a.E", "fields": [{"name": "x", "type": "long"}]}
        )
        is None
    )


def test_bodies_the_generic_writer_refuses_are_not_spliced() -> None:
    """Found by fuzzing against fastavro: each of these gave bytes where fastavro raises."""
    assert BODIES is not None
    event = EXAMPLES["session_start"]
    body_type, body = event["body"]
    named = (body_type, {**body, "terminal": {"cols": 120, "rows": 32, "-type": "x"}})
    for new in (named, [body_type, body], (body_type, body, None), (None, body)):
        with pytest.raises(SchemaError):
            _encoded({**event, "body": new})
        assert BODIES.with_body(_encoded(event), event["body"], new) is None


def test_a_recursive_type_is_declined_not_followed() -> None:
    node = {"type": "record", "name": "a.Node", "fields": [{"name": "next", "type": ["null", "a.Node"]}]}
    leaf = {"type": "record", "name": "a.Leaf", "fields": [{"name": "v", "type": "long"}]}
    writer = BodyWriter([node, leaf], {"a.Node": node})
    assert writer.with_body(b"", ("a.Node", {"next": None}), ("a.Node", {"next": None})) is None
    assert writer.encode(("a.Leaf", {"v": -1})) == b"\x02\x01"
