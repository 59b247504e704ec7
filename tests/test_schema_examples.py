"""schemas/examples/: one Avro-JSON event per body type, readable with fastavro.json_reader,
and each survives single-object encoding unchanged. Regenerate with
``python -m ingest.demo --write-examples schemas/examples``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import fastavro
import pytest

from ingest.demo import example_events, example_name
from schemas import EVENT_SCHEMA, default_registry
from schemas.bodies import BODY_TYPES

EXAMPLES = Path(__file__).resolve().parents[1] / "schemas" / "examples"
NAMES = sorted(example_name(body) for body in BODY_TYPES)


def _read(path: Path) -> dict[str, Any]:
    schema = default_registry().schema(EVENT_SCHEMA)
    with path.open(encoding="utf-8") as source:
        [record] = list(fastavro.json_reader(source, schema))
    assert isinstance(record, dict)
    # json_reader returns a union's value without its branch, and TerminalOutput and
    # TerminalInput have the same fields: take the branch name from the JSON encoding itself.
    [branch] = json.loads(path.read_text(encoding="utf-8"))["body"]
    return {**record, "body": (branch, record["body"])}


def test_one_example_per_body_type() -> None:
    assert sorted(p.stem for p in EXAMPLES.glob("*.json")) == NAMES


@pytest.mark.parametrize("name", NAMES)
def test_example_round_trips(name: str) -> None:
    registry = default_registry()
    event = _read(EXAMPLES / f"{name}.json")
    assert example_name(event["body"][0]) == name
    decoded = registry.decode(registry.encode(EVENT_SCHEMA, event))
    assert decoded.schema_name == EVENT_SCHEMA
    assert decoded.value == event


@pytest.mark.parametrize("name", NAMES)
def test_example_file_is_current(name: str) -> None:
    # The files are generated from ingest.demo.example_events; a difference means one of the two
    # was edited alone.
    assert _read(EXAMPLES / f"{name}.json") == example_events()[name]
