"""asciicast v1/v2/v3 import: the shared recordings parse, output bytes are exact, times are
right, and malformed files fail with a line and a reason."""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path

import pytest

from ingest.asciicast import AsciicastError, import_asciicast, parse_asciicast, read_asciicast, session_events
from ingest.events import SessionEvent, make_identity, make_target
from schemas import EVENT_SCHEMA, default_registry
from schemas.bodies import SESSION_END, SESSION_START, TERMINAL_INPUT, TERMINAL_OUTPUT, TERMINAL_RESIZE
from tests.fixtures.kafka import create_topics
from tests.test_emitter import by_session, consume

# GPL-licensed test data from asciinema, kept outside this repository on purpose: the checkout's
# parent directory holds shared/ beside it.
VECTORS = Path(__file__).resolve().parents[2] / "shared" / "vectors" / "asciicast"
CASTS = sorted(VECTORS.glob("*.cast"))
V1 = sorted(VECTORS.glob("*.json"))
T0 = 1509091818 * 1_000_000


def test_shared_vectors_are_there() -> None:
    assert len(CASTS) >= 5, f"asciicast vectors expected in {VECTORS}"
    assert V1, f"asciicast v1 vectors expected in {VECTORS}"


def _events(path: Path) -> list[SessionEvent]:
    return session_events(
        read_asciicast(path), identity=make_identity("importer"), target=make_target("host"), clock=lambda: T0
    )


def _of(events: list[SessionEvent], name: str) -> list[SessionEvent]:
    return [e for e in events if e["body"][0] == name]


def _recorded(path: Path, code: str) -> str:
    """The recording's strings of one event code, read independently of the parser."""
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".json":
        return "".join(frame[1] for frame in json.loads(text)["stdout"]) if code == "o" else ""
    rows = [json.loads(line) for line in text.splitlines()[1:] if line.strip() and not line.startswith("#")]
    return "".join(row[2] for row in rows if row[1] == code)


@pytest.mark.parametrize("path", CASTS + V1, ids=lambda p: p.name)
def test_vector_imports_exactly(path: Path) -> None:
    events = _events(path)
    registry = default_registry()
    assert events[0]["body"][0] == SESSION_START
    assert events[-1]["body"][0] == SESSION_END
    assert [e["seq"] for e in events] == list(range(len(events)))
    times = [e["event_time"] for e in events]
    assert times == sorted(times)
    # Output bytes are the recorded strings' exact UTF-8, so re-rendering reproduces them.
    output = b"".join(e["body"][1]["data"] for e in _of(events, TERMINAL_OUTPUT))
    assert output == _recorded(path, "o").encode("utf-8")
    typed = b"".join(e["body"][1]["data"] for e in _of(events, TERMINAL_INPUT))
    assert typed == _recorded(path, "i").encode("utf-8")
    for event in events:
        assert registry.decode(registry.encode(EVENT_SCHEMA, event)).value == event


@pytest.mark.parametrize("version", [2, 3])
def test_full_recording_header_resize_and_times(version: int) -> None:
    events = _events(VECTORS / f"full-v{version}.cast")
    start = events[0]["body"][1]
    assert start["terminal"] == {"cols": 100, "rows": 50}
    assert start["term"] == "xterm-256color"
    assert events[0]["event_time"] == T0  # the header's timestamp
    assert events[0]["attributes"]["command"] == "/bin/bash"
    [resize] = _of(events, TERMINAL_RESIZE)
    assert resize["body"][1] == {"cols": 80, "rows": 40}
    offsets = [e["event_time"] - T0 for e in events[1:-1]]
    if version == 2:  # offsets from the start
        assert offsets == [1, 1_000_000, 2_300_000, 5_600_001, 10_500_000]
    else:  # intervals since the previous event, summed
        assert offsets == [1, 1_000_001, 1_300_001, 2_900_002, 13_400_002]
    assert events[-1]["event_time"] - T0 == offsets[-1]
    assert events[-1]["body"][1] == {"reason": "closed", "exit_code": None}


def test_demo_recording_times_are_offsets_from_the_header() -> None:
    events = _events(VECTORS / "demo.cast")
    assert events[0]["body"][1]["terminal"] == {"cols": 75, "rows": 18}
    assert events[1]["event_time"] == T0 + 89_436
    assert len(_of(events, TERMINAL_INPUT)) == 9


def test_without_a_timestamp_the_session_starts_now() -> None:
    events = _events(VECTORS / "minimal-v3.cast")
    assert events[0]["event_time"] == T0  # the injected clock
    assert events[1]["event_time"] == T0 + 1_230_000


V3_WITH_EXIT = "\n".join(
    [
        '{"version": 3, "term": {"cols": 80, "rows": 24, "type": "xterm-kitty"}, "timestamp": 1700000000}',
        "# comment lines are ignored",
        '[0.5, "o", "$ "]',
        '[1.0, "i", "exit\\r"]',
        '[0.25, "m", "chapter"]',
        '[0.25, "o", "bye\\r\\n"]',
        '[0.1, "x", "3"]',
        "",
    ]
)


def test_v3_exit_markers_and_comments() -> None:
    recording = parse_asciicast(V3_WITH_EXIT)
    assert recording.exit_code == 3
    events = session_events(recording, identity=make_identity("a"), target=make_target("t"))
    assert [e["body"][0].rsplit(".", 1)[1] for e in events] == [
        "SessionStart",
        "TerminalOutput",
        "TerminalInput",
        "TerminalOutput",
        "SessionEnd",
    ]
    assert events[0]["body"][1]["term"] == "xterm-kitty"
    assert events[-1]["body"][1] == {"reason": "exit", "exit_code": 3}
    assert events[-1]["event_time"] == 1_700_000_000_000_000 + 2_100_000


H2 = '{"version": 2, "width": 80, "height": 24}'
H3 = '{"version": 3, "term": {"cols": 80, "rows": 24}}'


@pytest.mark.parametrize(
    ("text", "line", "reason"),
    [
        ("", 1, "empty file"),
        ("{not json", 1, "not valid JSON"),
        ('{"version": 4, "width": 1, "height": 1}', 1, "unsupported asciicast version 4"),
        ('{"version": 2, "height": 24}', 1, "width must be a positive integer"),
        ('{"version": 2, "width": 80, "height": 0}', 1, "height must be a positive integer"),
        ('{"version": 3, "width": 80, "height": 24}', 1, 'needs a "term" object'),
        ('{"version": 2, "width": 80, "height": 24, "timestamp": "yesterday"}', 1, "timestamp"),
        (H2 + '\n[1.0, "o", "a"]\n[1.0, "o"]', 3, "3-element array"),
        (H2 + '\n[1.0, "o", "a"]\n[0.5, "o", "b"]', 3, "goes backwards"),
        (H2 + '\n["1.0", "o", "a"]', 2, "non-negative number"),
        (H2 + '\n[1.0, "o", 5]', 2, "must be strings"),
        (H2 + '\n[1.0, "r", "80 by 24"]', 2, "COLSxROWS"),
        (H2 + '\n[1.0, "o", "a"]\n[1.0, "o", "b"\n', 3, "not valid JSON"),
        (H2 + "\n# v2 has no comments", 2, "not valid JSON"),
        (H3 + '\n[-0.5, "o", "a"]', 2, "non-negative number"),
        (H3 + '\n[1, "x", "zero"]', 2, "exit status"),
        ('{"version": 1, "width": 80, "height": 24}', 1, "no stdout array"),
    ],
)
def test_malformed_input_names_line_and_reason(text: str, line: int, reason: str) -> None:
    with pytest.raises(AsciicastError, match=reason) as caught:
        parse_asciicast(text, source="bad.cast")
    assert caught.value.line == line
    assert str(caught.value).startswith(f"bad.cast:{line}: ")


def test_invalid_utf8_names_its_line() -> None:
    with pytest.raises(AsciicastError, match="not UTF-8") as caught:
        parse_asciicast(H2.encode() + b'\n[1.0, "o", "ok"]\n[2.0, "o", "\xff"]\n')
    assert caught.value.line == 3


def test_v1_frame_errors_name_the_frame() -> None:
    doc = {"version": 1, "width": 80, "height": 24, "stdout": [[0.1, "a"], ["x", "b"]]}
    with pytest.raises(AsciicastError, match=r"stdout\[1\]"):
        parse_asciicast(json.dumps(doc))


def test_unknown_event_codes_are_skipped() -> None:
    recording = parse_asciicast(H3 + '\n[0.1, "o", "a"]\n[0.1, "z", "future"]\n[0.1, "o", "b"]')
    assert recording.output == "ab"
    assert recording.events[-1].offset_us == 300_000  # the skipped event's interval still counts


@pytest.mark.kafka
def test_import_sends_one_session(kafka_bootstrap: str) -> None:
    topic = f"test-import-{uuid.uuid4().hex[:10]}"
    create_topics(kafka_bootstrap, topic)
    session_id = import_asciicast(
        VECTORS / "demo.cast",
        identity="agent:claude-ops",
        identity_kind="AI_AGENT",
        target="build-host",
        target_kind="SSH",
        bootstrap=kafka_bootstrap,
        topic=topic,
    )
    expected = len(_events(VECTORS / "demo.cast"))
    messages = asyncio.run(consume(kafka_bootstrap, topic, expected))
    events = by_session(messages)[session_id]
    assert len(events) == expected
    assert len(messages) == 1
    assert events[0]["identity"]["kind"] == "AI_AGENT"
    assert events[0]["target"]["kind"] == "SSH"
    output = b"".join(e["body"][1]["data"] for e in _of(events, TERMINAL_OUTPUT))  # type: ignore[arg-type]
    assert output == _recorded(VECTORS / "demo.cast", "o").encode()


def test_import_refuses_a_bad_file_before_sending(tmp_path: Path) -> None:
    bad = tmp_path / "bad.cast"
    bad.write_text(H2 + "\n[1.0]\n")
    with pytest.raises(AsciicastError, match=r"bad\.cast:2: "):
        import_asciicast(bad, identity="x", target="y", bootstrap="127.0.0.1:9")
