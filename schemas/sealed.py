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


# Bodies of one field, ``data``: terminal output and input, the bulk of all events.
SINGLE_DATA_BODIES = frozenset({TERMINAL_OUTPUT, TERMINAL_INPUT})


# --- masked bodies -------------------------------------------------------------------------------

_INT_RANGE = (-(1 << 31), 1 << 31)
_LONG_RANGE = (-(1 << 63), 1 << 63)


def _checked_long(value: Any, bounds: tuple[int, int]) -> bytes:
    if type(value) is not int or not bounds[0] <= value < bounds[1]:
        raise TypeError(f"not an Avro integer: {type(value).__name__}")
    return _long(value)


def _write(node: Shape, value: Any, out: list[bytes]) -> None:
    kind = node.kind
    if kind == STRING:
        if type(value) is not str:
            raise TypeError(f"not a string: {type(value).__name__}")
        out.append(_bytes(value.encode()))
    elif kind == OPTIONAL:
        assert node.item is not None
        if value is None:
            out.append(b"\x00" if node.null_first else b"\x02")
        else:
            out.append(b"\x02" if node.null_first else b"\x00")
            _write(node.item, value, out)
    elif kind == LONG:
        out.append(_checked_long(value, _LONG_RANGE))
    elif kind == RECORD:
        if type(value) is not dict:
            raise TypeError(f"not a record: {type(value).__name__}")
        if "-type" in value:
            # fastavro reads this key as the record's name when it picks a union's branch
            raise TypeError("a record naming its type")
        for name, field_type, has_default, default in node.fields:
            if name in value:
                _write(field_type, value[name], out)
            elif has_default:
                _write(field_type, default, out)
            else:
                raise KeyError(f"no value for field {name!r}")
    elif kind == ARRAY:
        assert node.item is not None
        if type(value) is not list:
            raise TypeError(f"not an array: {type(value).__name__}")
        if value:
            out.append(_long(len(value)))
            for item in value:
                _write(node.item, item, out)
        out.append(_NULL)
    elif kind == MAP:
        assert node.item is not None
        if type(value) is not dict:
            raise TypeError(f"not a map: {type(value).__name__}")
        if value:
            out.append(_long(len(value)))
            for key, item in value.items():
                if type(key) is not str:
                    raise TypeError(f"a map key that is not a string: {type(key).__name__}")
                out.append(_bytes(key.encode()))
                _write(node.item, item, out)
        out.append(_NULL)
    elif kind == BYTES:
        if type(value) is not bytes:
            raise TypeError(f"not bytes: {type(value).__name__}")
        out.append(_bytes(value))
    elif kind == BOOLEAN:
        if type(value) is not bool:
            raise TypeError(f"not a boolean: {type(value).__name__}")
        out.append(b"\x01" if value else b"\x00")
    elif kind == INT:
        out.append(_checked_long(value, _INT_RANGE))
    elif kind == ENUM:
        out.append(_long(node.symbols[value]))
    elif value is not None:  # null
        raise TypeError(f"not null: {type(value).__name__}")


class BodyWriter:
    """Re-encodes a SessionEvent whose body the masker changed, byte-identical to fastavro.

    The generic writer costs ~13 µs per event, most of it fastavro's fixed cost and the envelope,
    which masking never changes. The body is the event's last field, so a masked event is the
    original's bytes up to its body, then the new body: this writer encodes only the two bodies
    (the old one tells where the body starts, and that the layout is the one assumed). Body types
    whose schema has a shape it does not write (a union other than [null, T], a logical type),
    and values it does not take, are left to the generic writer (`with_body` says None).
    tests/test_sealed_encoding.py holds it to fastavro on every example event.
    """

    def __init__(self, branches: list[Any], named: dict[str, Any]) -> None:
        self._branches: dict[str, tuple[bytes, Shape]] = {}
        for index, branch in enumerate(branches):
            try:
                self._branches[branch["name"]] = (_long(index), shape_of(branch, named))
            except UnsupportedShape:
                continue

    @classmethod
    def for_event_schema(cls, event_schema: Any) -> BodyWriter | None:
        """A writer for this parsed SessionEvent schema, or None unless its last field is a body
        union of named records."""
        fields = event_schema.get("fields") if isinstance(event_schema, dict) else None
        if not fields or fields[-1].get("name") != "body" or not isinstance(fields[-1].get("type"), list):
            return None
        branches = fields[-1]["type"]
        if not all(isinstance(branch, dict) and branch.get("type") == "record" for branch in branches):
            return None
        return cls(branches, dict(event_schema.get("__named_schemas", {})))

    def encode(self, body: Any) -> bytes:
        """The body's encoding as the event's last field: union branch, then the record.
        ``body`` is ``(full name, record)``, the only form the generic writer takes for it."""
        if type(body) is not tuple or len(body) != 2 or type(body[0]) is not str:
            raise TypeError("a body is a (name, record) tuple")
        name, value = body
        found = self._branches.get(name)
        if found is None:
            raise UnsupportedShape(f"body type {name!r}")
        out = [found[0]]
        _write(found[1], value, out)
        return b"".join(out)

    def with_body(self, event_bytes: bytes, old: Any, new: Any) -> bytes | None:
        """``event_bytes`` (the encoding of an event with body ``old``) with body ``new`` instead;
        None when this writer cannot tell, and the generic writer must."""
        try:
            old_tail = self.encode(old)
            new_tail = self.encode(new)
        except (ValueError, TypeError, KeyError, AttributeError, UnicodeError, RecursionError):
            return None
        if not event_bytes.endswith(old_tail):
            return None
        return event_bytes[: len(event_bytes) - len(old_tail)] + new_tail
