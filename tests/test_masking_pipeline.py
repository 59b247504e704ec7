"""Masking in the seal step: sensitive values appear nowhere downstream — not in the archive,
the index, the DLQ reasons or the API — while findings and blind indexes are kept."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from api.auth import TokenVerifier, generate_ed25519_keypair, mint_token
from masking.engine import MaskingEngine, blind_index
from masking.event_masker import TAIL_ATTRIBUTE, EventMasker
from masking.policy import load_default_policy
from replay.reader import SessionReader
from schemas import BATCH_SCHEMA, default_registry
from storage.index import ChdbIndex, Index
from storage.objectstore import LocalWormStore, Retention
from streams.pipeline import PipelineConfig, SealPipeline, SourceMessage
from streams.seal import SealStep
from tests.eventdata import body, end, make_event, output
from tests.stack import read_archive

pytestmark = pytest.mark.clickhouse

REGISTRY = default_registry()
KEY = b"k" * 32

EMAIL = "jane.roe@example.org"
CARD = "4111 1111 1111 1111"
AWS_KEY = "AKIAIOSFODNN7EXAMPLE"
SECRET_B64 = "c3VwZXItc2VjcmV0LXBhc3N3b3Jk"  # base64 of a password, as kubectl prints it
PASSWORD = "hunter2-Correct-Horse"
SENSITIVE = [EMAIL, CARD, AWS_KEY, SECRET_B64, PASSWORD, "4111111111111111"]


def session_events() -> list[dict[str, Any]]:
    sid = "s-mask"
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "db"},
        "data": {"password": SECRET_B64},
    }
    return [
        make_event(
            sid,
            0,
            body(
                "Query",
                statement=f"SELECT * FROM users WHERE email = '{EMAIL}'",
                parameters=[],
                database=None,
            ),
        ),
        make_event(
            sid,
            1,
            body(
                "QueryResult",
                columns=["id", "email", "card"],
                rows=[["1", EMAIL, CARD]],
                row_count=1,
                truncated=False,
                duration_us=None,
                error=None,
            ),
        ),
        make_event(
            sid,
            2,
            body(
                "KubernetesApiCall",
                verb="get",
                resource="secrets",
                namespace="prod",
                name="db",
                subresource=None,
                status_code=200,
                request_body=None,
                response_body=json.dumps(secret),
            ),
        ),
        # a value split across two terminal output events
        make_event(sid, 3, output(f"export AWS_ACCESS_KEY_ID={AWS_KEY[:9]}")),
        make_event(sid, 4, output(f"{AWS_KEY[9:]}\r\n$ psql postgres://app:{PASSWORD}@db/prod\r\n")),
        make_event(sid, 5, end()),
    ]


@pytest.fixture
def sealed(tmp_path: Path) -> Any:
    store = LocalWormStore(tmp_path / "archive", retention=Retention("COMPLIANCE", 1))
    with ChdbIndex(tmp_path / "index") as index:
        index.migrate()
        masker = EventMasker(MaskingEngine(load_default_policy(), KEY))
        sealer = SealPipeline(REGISTRY, SealStep(REGISTRY, masker=masker), store, index, PipelineConfig())
        events = session_events()
        value = REGISTRY.encode(BATCH_SCHEMA, {"session_id": "s-mask", "events": events})
        outcome = sealer.process([SourceMessage("events", 0, 0, b"s-mask", value)])
        yield store, index, outcome


def _contains_plaintext(data: str | bytes) -> list[str]:
    text = data if isinstance(data, str) else data.decode("utf-8", "replace")
    return [value for value in SENSITIVE if value in text]


def test_archive_holds_no_plaintext_and_lists_findings(sealed: Any) -> None:
    store, _, outcome = sealed
    assert outcome.records == 7
    contents = read_archive(store)
    everything = b"".join(raw for raw, _ in contents.records)
    assert _contains_plaintext(everything) == []
    for key in store.list_keys(""):
        assert _contains_plaintext(store.get(key)) == []  # nor in the compressed object itself
    findings = [f for _, value in contents.records for f in value["findings"]]
    types = {f["entity_type"] for f in findings}
    assert {"EMAIL_ADDRESS", "CREDIT_CARD", "AWS_ACCESS_KEY"} <= types
    # a privacy officer can find the session by the blind index of a value, without the value stored
    assert blind_index(KEY, "EMAIL_ADDRESS", EMAIL.encode()) in {f["blind_index"] for f in findings}


def test_terminal_layout_is_kept(sealed: Any) -> None:
    store, _, _ = sealed
    records = read_archive(store).by_session()["s-mask"]
    terminal = b"".join(
        value["event"]["body"][1]["data"]
        for _, value in records
        if value["event"] and value["event"]["body"][0].endswith("TerminalOutput")
    )
    original = b"".join(
        e["body"][1]["data"] for e in session_events() if e["body"][0].endswith("TerminalOutput")
    )
    assert len(terminal) == len(original)
    assert terminal.count(b"\r\n") == original.count(b"\r\n")


def test_index_holds_no_plaintext(sealed: Any) -> None:
    _, index, _ = sealed
    index_: Index = index
    for table in ("events", "sessions", "segments", "archive_objects"):
        rows = index_.query(f"SELECT * FROM {table}").to_pylist()
        assert _contains_plaintext(repr(rows)) == [], table


def test_api_serves_no_plaintext(sealed: Any) -> None:
    store, index, _ = sealed
    private, public = generate_ed25519_keypair()
    app = create_app(SessionReader(index, store), TokenVerifier(public_key_pem=public, audience="blackbox"))
    token = mint_token(private, role="auditor", subject="auditor-1")
    client = TestClient(app)
    headers = {"Authorization": f"Bearer {token}"}
    for path in ("", "/events", "/asciicast", "/verify"):
        response = client.get(f"/api/v1/sessions/s-mask{path}", headers=headers)
        assert response.status_code == 200, response.text
        assert _contains_plaintext(response.text) == [], path
    assert _contains_plaintext(client.get("/api/v1/sessions", headers=headers).text) == []


def test_dead_letter_reasons_never_echo_values(tmp_path: Path) -> None:
    store = LocalWormStore(tmp_path / "archive", retention=Retention("COMPLIANCE", 1))
    with ChdbIndex(tmp_path / "index") as index:
        index.migrate()
        masker = EventMasker(MaskingEngine(load_default_policy(), KEY))
        sealer = SealPipeline(REGISTRY, SealStep(REGISTRY, masker=masker), store, index, PipelineConfig())
        bad = make_event(EMAIL, 0)  # the session id itself is an email address; the key differs
        value = REGISTRY.encode(BATCH_SCHEMA, {"session_id": EMAIL, "events": [bad]})
        outcome = sealer.process([SourceMessage("events", 0, 0, b"other", value)])
    assert len(outcome.dead_letters) == 1
    assert _contains_plaintext(outcome.dead_letters[0].reason) == []


def test_bytes_the_masker_held_survive_a_crash(tmp_path: Path) -> None:
    """The message whose tail the masker holds stays unacknowledged; after a crash it comes again,
    and the new worker's masker holds the same bytes for the session's next event."""
    store = LocalWormStore(tmp_path / "archive", retention=None)

    def worker(index: Index) -> SealPipeline:
        masker = EventMasker(MaskingEngine(load_default_policy(), KEY))
        return SealPipeline(REGISTRY, SealStep(REGISTRY, masker=masker), store, index, PipelineConfig())

    def message(offset: int, *events: dict[str, Any]) -> SourceMessage:
        value = REGISTRY.encode(BATCH_SCHEMA, {"session_id": "s-held", "events": list(events)})
        return SourceMessage("events", 0, offset, b"s-held", value)

    first = message(0, make_event("s-held", 0, output("bye ada@lovelace.org")))  # could still grow
    second = message(1, make_event("s-held", 1, end()))
    with ChdbIndex(tmp_path / "index") as index:
        index.migrate()
        before = worker(index).process([first])
        assert before.held == {(0, 0)}  # not to be acknowledged: the tail is only in memory

        restarted = worker(index)  # the first worker died; Kafka delivers from the last commit
        after = restarted.process([first, second])
        assert after.skipped_messages == 1
        assert after.held == frozenset()  # the tail is archived now: everything can be acknowledged
    records = [value for _, value in read_archive(store).records]
    session_end = records[-2]["event"]
    assert session_end["body"][0].endswith("SessionEnd")
    assert base64.b64decode(session_end["attributes"][TAIL_ATTRIBUTE]) == b"*" * 16
    assert [record["event"]["body"][1]["data"] for record in records[:1]] == [b"bye "]
