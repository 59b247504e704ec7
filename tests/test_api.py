"""The HTTP API end to end: FastAPI's TestClient over a real index (chdb) and the WORM directory
store, filled with sealed sessions. Nothing is mocked; misbehaving stores are wrappers that
fail the way real ones do."""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from fastapi.testclient import TestClient

from api import TokenVerifier, create_app, generate_ed25519_keypair, mint_token
from api.access_log import AccessLog
from ingest.asciicast import parse_asciicast, session_events
from ingest.events import make_identity, make_target
from replay import SessionReader, SessionSummary
from schemas import EVENT_SCHEMA, default_registry
from storage.index import Index
from storage.objectstore import LocalWormStore, ObjectStore
from streams.pipeline import PipelineConfig, SealPipeline, SourceMessage
from streams.seal import SealStep
from tests.access import RecordingAccessLog
from tests.test_reader import (
    T0,
    BitFlipStore,
    FlakyStore,
    chain_records,
    terminal_session,
    write_sessions,
)

pytestmark = pytest.mark.clickhouse

VECTORS = Path(__file__).resolve().parents[2] / "shared" / "vectors" / "asciicast"
SESSION_PATHS = [
    "/api/v1/sessions/{id}",
    "/api/v1/sessions/{id}/events",
    "/api/v1/sessions/{id}/asciicast",
    "/api/v1/sessions/{id}/verify",
]
SPLIT_OUTPUT = ["żółw ".encode()[:1], "żółw ".encode()[1:], "日本\r\n".encode()]


def seal_sessions(store: ObjectStore, index: Index, sessions: Sequence[list[dict[str, Any]]]) -> None:
    """The sessions through the real seal step and sinks, as the worker would write them."""
    registry = default_registry()
    pipeline = SealPipeline(registry, SealStep(registry), store, index, PipelineConfig())
    messages = [
        SourceMessage("events", 0, offset, event["session_id"].encode(), registry.encode(EVENT_SCHEMA, event))
        for offset, event in enumerate(event for events in sessions for event in events)
    ]
    outcome = pipeline.process(messages)
    assert not outcome.dead_letters, outcome.dead_letters


@pytest.fixture(scope="module")
def keys() -> tuple[bytes, bytes]:
    return generate_ed25519_keypair()


@pytest.fixture(scope="module")
def verifier(keys: tuple[bytes, bytes]) -> TokenVerifier:
    return TokenVerifier(public_key_pem=keys[1], issuer="blackbox-dev", audience="blackbox")


@pytest.fixture
def auditor(keys: tuple[bytes, bytes]) -> dict[str, str]:
    return {"Authorization": "Bearer " + mint_token(keys[0], role="auditor", subject="ana")}


@pytest.fixture
def store(tmp_path: Path) -> LocalWormStore:
    return LocalWormStore(tmp_path / "worm", retention=None)


@pytest.fixture
def sessions(store: LocalWormStore, index: Index) -> list[list[dict[str, Any]]]:
    """Four sessions a minute apart: s0 (oldest) .. s3 (newest); s1 and s3 by a CI job."""
    events = [
        terminal_session(
            f"s{n}",
            principal="deploy-bot" if n % 2 else "alice",
            kind="CI_JOB" if n % 2 else "HUMAN",
            target="orders-db" if n < 2 else "cluster-1",
            target_kind="POSTGRES" if n < 2 else "KUBERNETES",
            start_us=T0 + n * 60_000_000,
            output=SPLIT_OUTPUT,
        )
        for n in range(4)
    ]
    seal_sessions(store, index, events)
    return events


@pytest.fixture
def make_client(store: LocalWormStore, index: Index, verifier: TokenVerifier) -> Callable[..., TestClient]:
    def make(
        reader_store: ObjectStore | None = None,
        reader: SessionReader | None = None,
        health: dict[str, Callable[[], object]] | None = None,
        access_log: AccessLog | None = None,
    ) -> TestClient:
        reader = reader or SessionReader(index, reader_store or store)
        app = create_app(reader, verifier, extra_health_checks=health, access_log=access_log)
        # Server exceptions become responses, as in production, so 500s can be asserted on.
        return TestClient(app, raise_server_exceptions=False)

    return make


@pytest.fixture
def client(make_client: Callable[..., TestClient], sessions: Any) -> Iterator[TestClient]:
    with make_client() as test_client:
        yield test_client


def _error(response: Any) -> dict[str, Any]:
    body: dict[str, Any] = response.json()
    assert set(body) >= {"error", "message"}
    assert "Traceback" not in response.text
    return body


# -- auth -------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/api/v1/sessions", *SESSION_PATHS])
def test_every_route_needs_a_token(client: TestClient, path: str) -> None:
    response = client.get(path.format(id="s1"))
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == 'Bearer realm="blackbox"'
    assert _error(response)["error"] == "unauthenticated"


def test_bad_tokens_are_401_and_missing_role_is_403(client: TestClient, keys: tuple[bytes, bytes]) -> None:
    key = serialization.load_pem_private_key(keys[0], password=None)
    claims = {"sub": "ana", "role": "auditor", "iss": "blackbox-dev", "aud": "blackbox"}
    expired = jwt.encode({**claims, "exp": int(time.time()) - 600}, key, algorithm="EdDSA")  # type: ignore[arg-type]
    stranger = mint_token(generate_ed25519_keypair()[0], role="auditor", subject="mallory")
    for header in ("Basic YW5hOnB3", "Bearer not-a-jwt", f"Bearer {expired}", f"Bearer {stranger}"):
        response = client.get("/api/v1/sessions", headers={"Authorization": header})
        assert response.status_code == 401, header
        assert response.headers["WWW-Authenticate"].startswith("Bearer")
        _error(response)
    expired_response = client.get("/api/v1/sessions", headers={"Authorization": f"Bearer {expired}"})
    assert 'error="invalid_token"' in expired_response.headers["WWW-Authenticate"]
    assert "expired" in expired_response.json()["message"]

    viewer = mint_token(keys[0], role="viewer", subject="vic")
    response = client.get("/api/v1/sessions", headers={"Authorization": f"Bearer {viewer}"})
    assert response.status_code == 403
    assert _error(response)["error"] == "forbidden"

    admin = mint_token(keys[0], role="admin", subject="root")
    assert client.get("/api/v1/sessions", headers={"Authorization": f"Bearer {admin}"}).status_code == 200


# -- sessions ---------------------------------------------------------------------------------


def test_search_newest_first_with_filters_and_paging(client: TestClient, auditor: dict[str, str]) -> None:
    response = client.get("/api/v1/sessions", headers=auditor)
    assert response.status_code == 200
    page = response.json()
    assert [s["session_id"] for s in page["items"]] == ["s3", "s2", "s1", "s0"]
    assert page["next_cursor"] is None
    newest = page["items"][0]
    assert newest["started_at"] == "2024-05-01T12:03:00.000000Z"
    assert newest["last_event_at"] == "2024-05-01T12:03:01.000000Z"
    assert newest["identity"] == {
        "principal": "deploy-bot",
        "kind": "CI_JOB",
        "issuer": "https://idp.example",
        "groups": ["ops"],
    }
    assert newest["target"]["kind"] == "KUBERNETES"
    assert newest["sealed"] is True
    assert len(newest["head_hash"]) == 64

    def ids(**params: Any) -> list[str]:
        reply = client.get("/api/v1/sessions", params=params, headers=auditor)
        assert reply.status_code == 200, reply.text
        return [s["session_id"] for s in reply.json()["items"]]

    assert ids(principal="deploy-bot") == ["s3", "s1"]
    assert ids(identity_kind="HUMAN") == ["s2", "s0"]
    assert ids(target="orders-db", target_kind="POSTGRES") == ["s1", "s0"]
    assert ids(since="2024-05-01T12:01:00Z", until="2024-05-01T12:03:00Z") == ["s2", "s1"]
    assert ids(since="2024-05-01T14:01:00+02:00") == ["s3", "s2", "s1"]  # offsets are honoured

    seen, cursor = [], None
    while True:
        params = {"limit": 3, **({"cursor": cursor} if cursor else {})}
        reply = client.get("/api/v1/sessions", params=params, headers=auditor).json()
        seen.append([s["session_id"] for s in reply["items"]])
        cursor = reply["next_cursor"]
        if cursor is None:
            break
    assert seen == [["s3", "s2", "s1"], ["s0"]]


def test_get_session_and_unknown_sessions(client: TestClient, auditor: dict[str, str]) -> None:
    response = client.get("/api/v1/sessions/s1", headers=auditor)
    assert response.status_code == 200
    assert response.json()["session_id"] == "s1"
    for path in SESSION_PATHS:
        response = client.get(path.format(id="no-such-session"), headers=auditor)
        assert response.status_code == 404, path
        assert _error(response)["error"] == "session_not_found"


# -- records, replay, verification ------------------------------------------------------------


def test_events_endpoint(client: TestClient, auditor: dict[str, str]) -> None:
    response = client.get("/api/v1/sessions/s2/events", headers=auditor)
    assert response.status_code == 200
    body = response.json()
    assert body["next_after_index"] is None
    events = body["events"]
    assert [e["index"] for e in events] == list(range(len(events)))
    assert events[0]["body_type"] == "SessionStart"
    assert events[0]["prev_hash"] == "00" * 32
    assert all(e["prev_hash"] == p["record_hash"] for p, e in itertools.pairwise(events))
    outputs = [e for e in events if e["body_type"] == "TerminalOutput"]
    # The first output event ends inside "ż": readable text plus the exact bytes.
    assert outputs[0]["body"]["data_base64"] == "xQ=="
    assert outputs[2]["body"] == {"data": "日本\r\n"}
    assert events[-1]["kind"] == "SEAL"

    page = client.get("/api/v1/sessions/s2/events", params={"after_index": 1, "limit": 2}, headers=auditor)
    assert [e["index"] for e in page.json()["events"]] == [2, 3]
    assert page.json()["next_after_index"] == 3
    seals = client.get("/api/v1/sessions/s2/events", params={"kind": "SEAL"}, headers=auditor).json()
    assert [e["kind"] for e in seals["events"]] == ["SEAL"]


def _cast(text: str) -> tuple[dict[str, Any], list[list[Any]]]:
    lines = text.split("\n")
    assert lines[-1] == ""
    return json.loads(lines[0]), [json.loads(line) for line in lines[1:-1]]


def test_asciicast_endpoint_reproduces_the_output(client: TestClient, auditor: dict[str, str]) -> None:
    response = client.get("/api/v1/sessions/s0/asciicast", headers=auditor)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/x-asciicast")
    header, events = _cast(response.text)
    assert (header["version"], header["width"], header["height"]) == (2, 100, 30)
    assert "".join(e[2] for e in events if e[1] == "o") == b"".join(SPLIT_OUTPUT).decode()
    assert [e[1:] for e in events if e[1] == "r"] == [["r", "120x40"]]


def test_asciicast_of_an_asciinema_recording(
    make_client: Callable[..., TestClient], store: LocalWormStore, index: Index, auditor: dict[str, str]
) -> None:
    path = VECTORS / "demo.cast"
    if not path.exists():
        pytest.fail(
            "asciicast vectors not found beside the checkout"
            + " (the shared test data must sit beside the checkout)"
        )
    recording = parse_asciicast(path.read_bytes())
    events = session_events(
        recording,
        identity=make_identity("rec", "HUMAN"),
        target=make_target("laptop", "SSH"),
        session_id="demo",
    )
    seal_sessions(store, index, [[dict(e) for e in events]])
    with make_client() as client:
        response = client.get("/api/v1/sessions/demo/asciicast", headers=auditor)
    header, cast_events = _cast(response.text)
    assert (header["width"], header["height"]) == (recording.header.cols, recording.header.rows)
    assert "".join(e[2] for e in cast_events if e[1] == "o") == recording.output


def test_verify_endpoint_passes_intact_and_flags_tampered(
    make_client: Callable[..., TestClient],
    store: LocalWormStore,
    index: Index,
    sessions: Any,
    auditor: dict[str, str],
) -> None:
    def rewrite(position: int, value: dict[str, Any]) -> None:
        if position == 1:
            value["event"]["body"] = (value["event"]["body"][0], {"data": b"harmless\r\n"})

    write_sessions(store, index, [chain_records(terminal_session("tampered"), edit=rewrite)], "p9/tampered")
    with make_client() as client:
        intact = client.get("/api/v1/sessions/s1/verify", headers=auditor).json()
        tampered = client.get("/api/v1/sessions/tampered/verify", headers=auditor).json()
        replay = client.get("/api/v1/sessions/tampered/asciicast", headers=auditor)
    assert intact["valid"] is True, intact
    assert intact["sealed"] is True
    assert intact["failure"] is None
    assert intact["checks"] == ["chain", "index.record_count", "index.head_hash"]
    assert tampered["valid"] is False
    assert tampered["failure"]["check"] == "chain.prev_hash"
    assert tampered["failure"]["index"] == 2
    assert replay.status_code == 503
    assert _error(replay)["error"] == "evidence_corrupt"


def test_corrupt_or_unreachable_evidence_is_503(
    make_client: Callable[..., TestClient], sessions: Any, auditor: dict[str, str], store: LocalWormStore
) -> None:
    with make_client(reader_store=BitFlipStore(store)) as client:
        response = client.get("/api/v1/sessions/s1/events", headers=auditor)
        assert response.status_code == 503
        assert _error(response)["error"] == "evidence_corrupt"
        verdict = client.get("/api/v1/sessions/s1/verify", headers=auditor).json()
        assert (verdict["valid"], verdict["failure"]["check"]) == (False, "archive")
    with make_client(reader_store=FlakyStore(store)) as client:
        response = client.get("/api/v1/sessions/s1/asciicast", headers=auditor)
        assert response.status_code == 503
        assert response.headers["Retry-After"]
        assert _error(response)["error"] == "archive_unavailable"


# -- input validation and failure hygiene -----------------------------------------------------


@pytest.mark.parametrize(
    ("path", "params", "status"),
    [
        ("/api/v1/sessions", {"limit": 0}, 422),
        ("/api/v1/sessions", {"limit": 501}, 422),
        ("/api/v1/sessions", {"limit": "ten"}, 422),
        ("/api/v1/sessions", {"since": "yesterday"}, 422),
        ("/api/v1/sessions", {"until": "2024-13-45T99:00:00Z"}, 422),
        ("/api/v1/sessions", {"cursor": "bm90IGEgY3Vyc29y"}, 400),
        ("/api/v1/sessions", {"cursor": "%%%"}, 400),
        ("/api/v1/sessions", {"identity_kind": "ROBOT"}, 400),
        ("/api/v1/sessions", {"since": "2024-05-02T00:00:00Z", "until": "2024-05-01T00:00:00Z"}, 400),
        ("/api/v1/sessions", {"principal": "x" * 1000}, 422),
        ("/api/v1/sessions/s1/events", {"after_index": -1}, 422),
        ("/api/v1/sessions/s1/events", {"limit": 100_000}, 422),
        ("/api/v1/sessions/s1/events", {"kind": "NOPE"}, 400),
        ("/api/v1/sessions/s1/asciicast", {"include_input": "maybe"}, 422),
        ("/api/v1/sessions/" + "x" * 300, {}, 422),
    ],
)
def test_bad_parameters_are_4xx(
    client: TestClient, auditor: dict[str, str], path: str, params: dict[str, Any], status: int
) -> None:
    response = client.get(path, params=params, headers=auditor)
    assert response.status_code == status, response.text
    body = _error(response)
    assert body["message"]


def test_unexpected_errors_do_not_leak(
    make_client: Callable[..., TestClient], index: Index, store: LocalWormStore, auditor: dict[str, str]
) -> None:
    class BrokenReader(SessionReader):
        def get_session(self, session_id: str) -> SessionSummary:
            raise RuntimeError("password=hunter2 in a stack frame")

    with make_client(reader=BrokenReader(index, store)) as client:
        response = client.get("/api/v1/sessions/s1", headers=auditor)
    assert response.status_code == 500
    assert _error(response)["error"] == "internal_error"
    assert "hunter2" not in response.text


def test_unknown_route_is_a_json_404(client: TestClient, auditor: dict[str, str]) -> None:
    response = client.get("/api/v1/nope", headers=auditor)
    assert response.status_code == 404
    assert _error(response)["error"] == "not_found"


def test_healthz(make_client: Callable[..., TestClient], store: LocalWormStore) -> None:
    with make_client() as client:
        response = client.get("/healthz")  # no token needed
        assert response.status_code == 200
        assert response.json() == {"status": "ok", "checks": {"index": "ok", "object_store": "ok"}}

    def kafka_down() -> object:
        raise ConnectionError("broker unreachable")

    with make_client(reader_store=FlakyStore(store), health={"kafka": kafka_down}) as client:
        response = client.get("/healthz")
    assert response.status_code == 503
    assert response.json() == {
        "status": "unavailable",
        "checks": {
            "index": "ok",
            "object_store": "unavailable: ObjectStoreUnavailable",
            "kafka": "unavailable: ConnectionError",
        },
    }


def test_openapi_document_is_served(client: TestClient) -> None:
    document = client.get("/api/v1/openapi.json").json()
    assert "/api/v1/sessions/{session_id}/verify" in document["paths"]


@pytest.mark.parametrize(
    "path",
    ["/api/v1/checkpoints/latest", "/api/v1/sessions/s1/proofs", "/api/v1/sessions/s1/records/0/proof"],
)
def test_ledger_routes_of_an_api_without_the_ledger_say_so(
    client: TestClient, auditor: dict[str, str], path: str
) -> None:
    assert client.get(path).status_code == 401  # still behind the token
    response = client.get(path, headers=auditor)
    assert response.status_code == 404
    assert response.json()["error"] == "not_found"
    assert "ledger is not enabled" in response.json()["message"]


# -- reads on record (invariant 7) --------------------------------------------------------------


def test_reads_of_session_content_are_recorded_before_they_are_answered(
    make_client: Callable[..., TestClient], sessions: Any, auditor: dict[str, str]
) -> None:
    access_log = RecordingAccessLog()
    with make_client(access_log=access_log) as client:
        assert client.get("/api/v1/sessions", headers=auditor).status_code == 200
        assert client.get("/api/v1/sessions/s1", headers=auditor).status_code == 200
        assert access_log.reads == []  # listings and summaries are not session content
        events = client.get("/api/v1/sessions/s1/events?limit=2", headers=auditor)
        cast = client.get("/api/v1/sessions/s2/asciicast", headers=auditor)
        metrics = client.get("/metrics").text
    assert events.status_code == 200
    assert cast.status_code == 200
    assert events.json()["session_id"] == "s1"
    assert "blackbox_access_log_reads_recorded_total 2" in metrics
    reads = [(who, r.session_id, r.url, r.response_bytes) for who, r in access_log.reads]
    assert reads == [
        ("ana", "s1", "/api/v1/sessions/s1/events?limit=2", len(events.content)),
        ("ana", "s2", "/api/v1/sessions/s2/asciicast", len(cast.content)),
    ]


def test_a_read_that_cannot_be_recorded_is_refused_without_content(
    make_client: Callable[..., TestClient], sessions: Any, auditor: dict[str, str]
) -> None:
    with make_client(access_log=RecordingAccessLog(refuse=True)) as client:
        response = client.get("/api/v1/sessions/s1/events", headers=auditor)
    assert response.status_code == 503
    assert _error(response)["error"] == "access_not_recorded"
    assert response.headers["Retry-After"]
    assert "日本" not in response.text  # none of the session's output
