"""A hand-written encoder for SealedRecord, byte-identical to the generic Avro writer.

fastavro spends ~10 µs per call before it writes a byte, and a SealedRecord nests a whole
SessionEvent behind a union that the generic writer must match branch by branch. The seal step
already holds the event's encoding (it hashed it), so it assembles the record around those
bytes instead. tests/test_sealed_encoding.py checks this against fastavro for every field
shape; the field order below must follow sealed_record.avsc.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from schemas.bodies import TERMINAL_INPUT, TERMINAL_OUTPUT

RECORD_KINDS = ("EVENT", "GAP", "LATE", "FORK", "SEAL")
_KIND_INDEX = {kind: index for index, kind in enumerate(RECORD_KINDS)}
_NULL = b"\x00"
_PRESENT = b"\x02"  # union branch 1, zigzag encoded


def _zigzag_varint(n: int) -> bytes:
    value = (n << 1) ^ (n >> 63)
    out = bytearray()
    while value & ~0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


# Findings' offsets and most counts are small: their encodings are looked up, not computed
# (a record with findings encodes a handful of longs per finding).
_SMALL = tuple(_zigzag_varint(n) for n in range(8192))


def _long(n: int) -> bytes:
    return _SMALL[n] if 0 <= n < 8192 else _zigzag_varint(n)


def _bytes(data: bytes) -> bytes:
    return _long(len(data)) + data


@lru_cache(maxsize=4096)
def _string(text: str) -> bytes:
    # Records repeat few strings (session ids, entity types, field paths, rule ids and messages).
    return _bytes(text.encode())


def _optional_long(n: int | None) -> bytes:
    return _NULL if n is None else _PRESENT + _long(n)


def _optional_bytes(data: bytes | None) -> bytes:
    return _NULL if data is None else _PRESENT + _bytes(data)


def _array(items: list[Any], encode_item: Any) -> bytes:
    if not items:
        return _NULL
    return _long(len(items)) + b"".join(encode_item(item) for item in items) + _NULL


def _finding(finding: dict[str, Any]) -> bytes:
    return b"".join(
        (
            _string(finding["entity_type"]),
            _string(finding["field"]),
            _long(finding["start"]),
            _long(finding["end"]),
            _bytes(finding["blind_index"]),
        )
    )


def _reason(reason: dict[str, Any]) -> bytes:
    return _string(reason["rule_id"]) + _string(reason["message"])


def encode_sealed_record(value: dict[str, Any], event_bytes: bytes | None) -> bytes:
    """Avro binary of ``value`` (a SealedRecord); ``event_bytes`` is the encoding of value["event"]."""
    gap = value.get("gap")
    seal = value.get("seal")
    risk = value.get("risk")
    return b"".join(
        (
            _string(value["session_id"]),
            _long(value["index"]),
            _long(_KIND_INDEX[value["kind"]]),
            _bytes(value["prev_hash"]),
            _optional_long(value.get("source_seq")),
            _optional_bytes(value.get("event_digest")),
            _NULL if event_bytes is None else _PRESENT + event_bytes,
            _NULL if gap is None else _PRESENT + _long(gap["first_seq"]) + _long(gap["last_seq"]),
            _NULL
            if seal is None
            else _PRESENT
            + _string(seal["reason"])
            + _long(seal["record_count"])
            + _long(seal["last_seq"])
            + _bytes(seal["head_hash"]),
            _array(value.get("findings") or [], _finding),
            _NULL if risk is None else _PRESENT + _long(risk["score"]) + _array(risk["reasons"], _reason),
        )
    )


# The last field of a SessionEvent is its body, and these bodies hold one field, ``data``: the
# event's encoding ends with that field, so a masked copy is the same prefix and the new data.
SINGLE_DATA_BODIES = frozenset({TERMINAL_OUTPUT, TERMINAL_INPUT})


def with_terminal_data(event_bytes: bytes, old_data: bytes, new_data: bytes) -> bytes:
    """The encoding of a SessionEvent with a terminal body whose ``data`` changes from
    ``old_data`` to ``new_data``, everything else equal; ``event_bytes`` encodes the original.

    The seal step re-encodes every event the masker changed; for terminal output, the bulk of
    them, this splice costs a fraction of the generic writer's ~10 µs. Raises ValueError when
    ``event_bytes`` does not end with ``old_data`` as its last field.
    """
    tail = _bytes(old_data)
    if not event_bytes.endswith(tail):
        raise ValueError("the event's encoding does not end with its terminal data")
    return event_bytes[: len(event_bytes) - len(tail)] + _bytes(new_data)
