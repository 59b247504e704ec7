"""The Avro types of event bodies as a tree ready to walk, for the hand-written body writer
(`schemas.sealed.BodyWriter`) and reader (`schemas.event_reader.EventReader`).

Both handle the shapes the event schema uses and nothing else: a union other than [null, T], a
logical type, a fixed, a float or double, a recursive record raise `UnsupportedShape`, and the
generic fastavro path then reads or writes that body type.
"""

from __future__ import annotations

from typing import Any, Final

NULL: Final = 0
BOOLEAN: Final = 1
INT: Final = 2
LONG: Final = 3
BYTES: Final = 4
STRING: Final = 5
ENUM: Final = 6
ARRAY: Final = 7
MAP: Final = 8
RECORD: Final = 9
OPTIONAL: Final = 10
_PRIMITIVES = {"null": NULL, "boolean": BOOLEAN, "int": INT, "long": LONG, "bytes": BYTES, "string": STRING}


class UnsupportedShape(ValueError):
    """A schema shape the hand-written writer and reader do not take (fastavro then does)."""


class Shape:
    """One type of a body's schema: its kind and what that kind needs."""

    __slots__ = ("fields", "item", "kind", "null_first", "symbol_names", "symbols")

    def __init__(self, kind: int) -> None:
        self.kind = kind
        self.item: Shape | None = None  # array items, map values, the optional's other branch
        self.fields: list[tuple[str, Shape, bool, Any]] = []  # name, type, has a default, default
        self.symbols: dict[str, int] = {}  # an enum's symbols and their indexes
        self.symbol_names: list[str] = []  # and in order
        self.null_first = True  # an optional's union: ["null", T] rather than [T, "null"]


def shape_of(schema: Any, named: dict[str, Any], building: frozenset[str] = frozenset()) -> Shape:
    """The shape of a parsed schema (``named``: its named types). ``building``: the records whose
    fields are being built, to refuse a recursive type (which a walk would follow without end)
    instead of recursing."""
    if isinstance(schema, str):
        if schema in _PRIMITIVES:
            return Shape(_PRIMITIVES[schema])
        if schema not in named:
            raise UnsupportedShape(f"unknown type {schema!r}")
        if schema in building:
            raise UnsupportedShape(f"recursive type {schema!r}")
        return shape_of(named[schema], named, building)
    if isinstance(schema, list):
        # Optional values only: branch 0 or 1, null for None, as fastavro writes and reads them.
        if len(schema) != 2 or "null" not in schema:
            raise UnsupportedShape("a union other than [null, T]")
        shape = Shape(OPTIONAL)
        shape.null_first = schema[0] == "null"
        shape.item = shape_of(schema[1] if shape.null_first else schema[0], named, building)
        return shape
    kind = schema.get("type")
    if "logicalType" in schema:
        raise UnsupportedShape(f"logical type {schema['logicalType']!r}")
    if isinstance(kind, str) and kind in _PRIMITIVES:
        return Shape(_PRIMITIVES[kind])
    if kind == "enum":
        shape = Shape(ENUM)
        shape.symbol_names = list(schema["symbols"])
        shape.symbols = {symbol: index for index, symbol in enumerate(shape.symbol_names)}
        return shape
    if kind in ("array", "map"):
        shape = Shape(ARRAY if kind == "array" else MAP)
        shape.item = shape_of(schema["items" if kind == "array" else "values"], named, building)
        return shape
    if kind == "record":
        shape = Shape(RECORD)
        inside = building | {schema["name"]}
        shape.fields = [
            (field["name"], shape_of(field["type"], named, inside), "default" in field, field.get("default"))
            for field in schema["fields"]
        ]
        return shape
    raise UnsupportedShape(f"type {kind!r}")
