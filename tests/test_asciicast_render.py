"""The asciicast v2 renderer: against asciinema's own recordings, and at its edges.

The recordings are asciinema's GPL test data, read from the shared folder beside the checkout
and never copied into this repository. Unit tests: nothing but Python.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest

from ingest.asciicast import Recording, parse_asciicast, session_events
from ingest.events import SessionBuilder, make_gateway, make_identity, make_target
from replay.asciicast import format_seconds, render_asciicast
from tests.test_reader import chain_records

VECTORS = Path(__file__).resolve().parents[2] / "shared" / "vectors" / "asciicast"
START_US = 1_700_000_000_000_000


def _vector_files() -> list[Path]:
    if not VECTORS.is_dir():
        return []
    return sorted(p for p in VECTORS.iterdir() if p.suffix in {".cast", ".json"})


def _parse_cast(text: str) -> tuple[dict[str, Any], list[list[Any]]]:
    """A deliberately small asciicast v2 reader: header line, then one event per line."""
    assert text.endswith("\n")
    lines = text.split("\n")[:-1]
    header = json.loads(lines[0])
    events = [json.loads(line) for line in lines[1:]]
    return header, events


def _events_of(recording: Recording, session_id: str = "cast-session") -> list[dict[str, Any]]:
    return [
        dict(event)
        for event in session_events(
            recording,
            identity=make_identity("ci-bot", "CI_JOB"),
            target=make_target("prod-db", "SSH"),
            session_id=session_id,
            clock=lambda: START_US,
        )
    ]


def _builder(session_id: str = "s") -> SessionBuilder:
    return SessionBuilder(
        session_id,
        make_identity("agent-7", "AI_AGENT"),
        make_target("shell", "SSH"),
        make_gateway("gw-1", "blackbox-recorder"),
        clock=lambda: START_US,
    )


@pytest.mark.parametrize("path", _vector_files(), ids=lambda p: p.name)
def test_vector_output_and_resizes_survive(path: Path) -> None:
    recording = parse_asciicast(path.read_bytes(), source=path.name)
    header, events = _parse_cast(render_asciicast(_events_of(recording)))

    assert header["version"] == 2
    assert (header["width"], header["height"]) == (recording.header.cols, recording.header.rows)
    if recording.header.term:
        assert header["env"] == {"TERM": recording.header.term}
    assert "".join(e[2] for e in events if e[1] == "o") == recording.output
    original_resizes = [(round(e.offset_us / 1e6, 6), e.data) for e in recording.events if e.code == "r"]
    assert [(e[0], e[2]) for e in events if e[1] == "r"] == original_resizes
    # Times are offsets from the session start, which the import placed at the recording's start.
    original_output_times = [round(e.offset_us / 1e6, 6) for e in recording.events if e.code == "o"]
    assert [e[0] for e in events if e[1] == "o"] == original_output_times
    times = [e[0] for e in events]
    assert times == sorted(times)
    assert not [e for e in events if e[1] == "i"], "input is off by default"


def test_vectors_are_present() -> None:
    if not VECTORS.is_dir():
        pytest.fail(
            f"asciicast vectors not found beside the checkout ({VECTORS.name} folder)"
            + " (the shared test data must sit beside the checkout)"
        )
    assert len(_vector_files()) >= 5


def test_input_events_only_when_asked() -> None:
    path = VECTORS / "full-v2.cast"
    if not path.exists():
        pytest.fail(f"asciicast vectors not found beside the checkout ({VECTORS})")
    recording = parse_asciicast(path.read_bytes())
    _, events = _parse_cast(render_asciicast(_events_of(recording), include_input=True))
    assert [(e[0], e[2]) for e in events if e[1] == "i"] == [(2.3, "\n")]


def test_utf8_split_across_events_is_reassembled_exactly() -> None:
    text = "żółć → 日本語 🎉 done\r\n" * 20
    data = text.encode()
    rng = random.Random(7)
    builder = _builder()
    events: list[Any] = [builder.start(cols=120, rows=30, term="xterm", at_us=START_US)]
    position = 0
    while position < len(data):
        size = rng.randint(1, 3)  # most multi-byte characters end up split
        events.append(builder.output(data[position : position + size], at_us=START_US + position))
        position += size
    header, cast_events = _parse_cast(render_asciicast(events))
    output = "".join(e[2] for e in cast_events if e[1] == "o")
    assert output == text
    assert "\ufffd" not in output
    assert (header["width"], header["height"], header["env"]) == (120, 30, {"TERM": "xterm"})


def test_truncated_character_at_the_end_is_flushed_as_replacement() -> None:
    builder = _builder()
    events = [builder.start(at_us=START_US), builder.output(b"ok \xe2\x82", at_us=START_US + 5)]
    _, cast_events = _parse_cast(render_asciicast(events))
    assert "".join(e[2] for e in cast_events if e[1] == "o") == "ok \ufffd"


def test_size_falls_back_to_first_resize_then_default() -> None:
    builder = _builder()
    with_resize = [builder.start(at_us=START_US), builder.resize(132, 43, at_us=START_US + 1)]
    header, events = _parse_cast(render_asciicast(with_resize))
    assert (header["width"], header["height"]) == (132, 43)
    assert events == [[0.000001, "r", "132x43"]]

    plain = [_builder().output(b"x", at_us=START_US)]
    header, _ = _parse_cast(render_asciicast(plain))
    assert (header["width"], header["height"]) == (80, 24)
    assert header["timestamp"] == START_US // 1_000_000


def test_times_never_go_backwards() -> None:
    builder = _builder()
    events = [
        builder.start(at_us=START_US),
        builder.output(b"a", at_us=START_US + 2_000_000),
        builder.output(b"b", at_us=START_US + 1_000_000),  # the gateway's clock stepped back
        builder.output(b"c", at_us=START_US + 3_500_000),
    ]
    _, cast_events = _parse_cast(render_asciicast(events))
    assert [e[0] for e in cast_events] == [2.0, 2.0, 3.5]


def test_sealed_records_render_like_their_events_and_skip_non_events() -> None:
    path = VECTORS / "demo.cast"
    if not path.exists():
        pytest.fail(f"asciicast vectors not found beside the checkout ({VECTORS})")
    events = _events_of(parse_asciicast(path.read_bytes()))
    records = chain_records(events)
    assert records[-1].value["kind"] == "SEAL"
    from_events = render_asciicast(events, title="t")
    assert render_asciicast(records, title="t") == from_events
    # A FORK carries a conflicting copy of an already chained event: evidence, not output.
    forged = {**events[3], "body": ("dev.blackbox.v1.TerminalOutput", {"data": b"rm -rf /"})}
    fork = {**records[3].value, "index": len(records), "kind": "FORK", "event": forged}
    assert render_asciicast([*(r.value for r in records), fork], title="t") == from_events


def test_empty_session_is_a_valid_header_only_cast() -> None:
    header, events = _parse_cast(render_asciicast([]))
    assert header == {"version": 2, "width": 80, "height": 24, "env": {}}
    assert events == []


def test_line_separators_stay_escaped() -> None:
    builder = _builder()
    cast = render_asciicast([builder.output("a\u2028b\x85c".encode(), at_us=START_US)])
    assert len(cast.splitlines()) == 2
    _, events = _parse_cast(cast)
    assert events[0][2] == "a\u2028b\x85c"


@pytest.mark.parametrize(
    ("micros", "text"),
    [(0, "0.0"), (1, "0.000001"), (89_436, "0.089436"), (1_500_000, "1.5"), (12_000_000, "12.0")],
)
def test_seconds_are_compact_and_exact(micros: int, text: str) -> None:
    assert format_seconds(micros) == text
