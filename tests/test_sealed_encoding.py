"""The hand-written SealedRecord encoder must equal the generic Avro writer, byte for byte."""

from __future__ import annotations

import random
from typing import Any

import pytest

from schemas import EVENT_SCHEMA, SEALED_SCHEMA, default_registry
from schemas.sealed import RECORD_KINDS, SINGLE_DATA_BODIES, encode_sealed_record, with_terminal_data
from tests.eventdata import make_event

REGISTRY = default_registry()


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
    rng = random.Random(repr((body_type, lengths)))
    old, new = rng.randbytes(lengths[0]), rng.randbytes(lengths[1])
    event = make_event("s", 7)
    event["attributes"] = {"term": "xterm", "x": "y" * 70}
    event["body"] = (body_type, {"data": old})
    original = REGISTRY.encode_body(EVENT_SCHEMA, event)
    changed = {**event, "body": (body_type, {"data": new})}
    assert with_terminal_data(original, old, new) == REGISTRY.encode_body(EVENT_SCHEMA, changed)


def test_a_splice_on_bytes_that_do_not_end_with_the_data_is_refused() -> None:
    event = make_event("s", 7)
    event["body"] = ("dev.blackbox.v1.TerminalOutput", {"data": b"abc"})
    with pytest.raises(ValueError, match="does not end"):
        with_terminal_data(REGISTRY.encode_body(EVENT_SCHEMA, event), b"abd", b"xyz")
