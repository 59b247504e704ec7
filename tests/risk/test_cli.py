"""`blackbox score` (risk.cli.main): Avro JSON lines in, one result line per event out."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import fastavro

from risk.cli import main
from risk.corpus import corpus
from schemas import EVENT_SCHEMA, default_registry

CORPUS = corpus()
EXAMPLES = Path(__file__).resolve().parents[2] / "schemas" / "examples"


def avro_json(events: list[dict[str, Any]]) -> str:
    out = io.StringIO()
    fastavro.json_writer(out, default_registry().schema(EVENT_SCHEMA), events)
    return out.getvalue()


def run(text: str, **kwargs: Any) -> tuple[int, list[dict[str, Any]], str]:
    stdout, stderr = io.StringIO(), io.StringIO()
    code = main(io.StringIO(text), stdout, stderr=stderr, **kwargs)
    return code, [json.loads(line) for line in stdout.getvalue().splitlines()], stderr.getvalue()


def test_shipped_examples_are_scored() -> None:
    lines = [path.read_text().strip() for path in sorted(EXAMPLES.glob("*.json"))]
    code, results, errors = run("\n".join(lines) + "\n")
    assert (code, errors) == (0, "")
    assert len(results) == len(lines)
    for result in results:
        assert set(result) == {"event_id", "session_id", "seq", "score", "reasons"}
    idle = [r for r, line in zip(results, lines, strict=True) if "IdleTimeout" in line]
    assert idle
    assert all(r["score"] is None and r["reasons"] == [] for r in idle)


def test_state_carries_across_the_stream() -> None:
    bastion = [e.event for e in CORPUS if e.scenario == "human-bastion"]
    code, results, _ = run(avro_json(bastion))
    assert code == 0
    flagged = {reason["rule_id"] for result in results for reason in result["reasons"]}
    # Keystrokes are assembled across events; output is judged against the identity's earlier sessions.
    assert {"shell.history_tampering", "behaviour.bytes_spike"} <= flagged
    assert "behaviour.bulk_sensitive_data" not in flagged  # findings come from masking; none here


def test_a_masker_feeds_its_findings_to_the_scorer() -> None:
    class CountDigits:
        def mask(self, event: dict[str, Any]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
            _, body = event["body"]
            data = body.get("data", b"")
            findings = [
                {"entity_type": "DIGIT", "field": "data", "start": i, "end": i + 1}
                for i, ch in enumerate(data)
                if 48 <= ch <= 57
            ]
            return event, findings

    event = CORPUS[0].event | {"body": ("dev.blackbox.v1.TerminalOutput", {"data": b"1" * 150})}
    code, (result,), _ = run(avro_json([event]), masker=CountDigits())
    assert code == 0
    assert [r["rule_id"] for r in result["reasons"]] == ["behaviour.bulk_sensitive_data"]


def test_bad_lines_are_reported_with_their_number_and_skipped() -> None:
    good = avro_json([CORPUS[0].event]).strip()
    text = (
        "\n".join([good, "not json", '{"event_id": "x"}', "", good.replace('"CI_JOB"', '"ROBOT"'), good])
        + "\n"
    )
    code, results, errors = run(text)
    assert code == 1
    assert len(results) == 2
    lines = errors.splitlines()
    assert [line.split(":", 1)[0] for line in lines] == ["line 2", "line 3", "line 5"]
    assert "invalid JSON" in lines[0]
    assert all("skipped" in line for line in lines)


def test_bytes_use_the_avro_json_latin1_form() -> None:
    event = CORPUS[0].event | {"body": ("dev.blackbox.v1.TerminalInput", {"data": b"history -c\r"})}
    text = avro_json([event])
    assert '"history -c\\r"' in text
    code, (result,), _ = run(text)
    assert code == 0
    assert [r["rule_id"] for r in result["reasons"]] == ["shell.history_tampering"]


def test_values_of_the_wrong_type_are_bad_lines() -> None:
    # fastavro's JSON reader passes these; the masker and scorer would fail on them.
    good = json.loads(avro_json([CORPUS[0].event]))
    no_target = json.loads(json.dumps(good))
    no_target["target"]["name"] = None
    float_seq = good | {"seq": 2.0}
    numeric_session = good | {"session_id": 7}
    lines = [json.dumps(line) for line in (no_target, float_seq, numeric_session, good)]
    code, results, errors = run("\n".join(lines) + "\n")
    assert code == 1
    assert len(results) == 1
    reported = errors.splitlines()
    assert [line.split(":", 1)[0] for line in reported] == ["line 1", "line 2", "line 3"]
    assert "Target.name is not a valid string" in reported[0]
    assert "seq is not a valid long" in reported[1]


def test_an_event_the_scorer_fails_on_is_reported_and_the_stream_goes_on() -> None:
    class Failing:
        def mask(self, event: dict[str, Any]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
            if event["seq"] == 0:
                raise ValueError("secret-value-42 is not a number")
            return event, []

    first = CORPUS[0].event | {"seq": 0}
    second = CORPUS[0].event | {"seq": 1}
    code, results, errors = run(avro_json([first, second]), masker=Failing())
    assert code == 1
    assert [result["seq"] for result in results] == [1]
    assert errors.startswith("line 1: skipped, scoring it failed (ValueError)")
    assert "secret-value-42" not in errors
