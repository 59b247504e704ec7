"""Masking in the seal step: sensitive values appear nowhere downstream — not in the archive,
the index, the DLQ reasons or the API — while findings and blind indexes are kept."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import pyarrow as pa
import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from api.auth import TokenVerifier, generate_ed25519_keypair, mint_token
from ledger.chain import verify_chain
from masking.engine import MaskingEngine, blind_index
from masking.event_masker import EventMasker
from masking.policy import load_default_policy
from replay.reader import SessionReader
from schemas import BATCH_SCHEMA, default_registry
from schemas.bodies import INPUT_TAIL_ATTRIBUTE, OUTPUT_TAIL_ATTRIBUTE, SECRET_PROMPT_ATTRIBUTE
from storage.index import ChdbIndex, Index
from storage.objectstore import LocalWormStore, Retention
from streams.app import idle_timeout_event, output_flush_event
from streams.pipeline import PipelineConfig, SealPipeline, SourceMessage
from streams.seal import SealStep, SessionState
from tests.eventdata import TRAP, body, end, make_event, output, trap_masker
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


class HeldSession:
    """A masking pipeline over one session's messages, with a clock the test moves."""

    def __init__(self, tmp_path: Path, index: Index, session_id: str = "s-held") -> None:
        self.tmp_path = tmp_path
        self.store = LocalWormStore(tmp_path / "archive", retention=None)
        self.index = index
        self.session_id = session_id
        self.now = 1000.0

    def worker(self, masker: EventMasker | None = None) -> SealPipeline:
        """A new worker (a new masker: what a restarted process has)."""
        masker = masker or EventMasker(MaskingEngine(load_default_policy(), KEY))
        return SealPipeline(
            REGISTRY,
            SealStep(REGISTRY, masker=masker),
            self.store,
            self.index,
            PipelineConfig(),
            clock=lambda: self.now,
        )

    def message(self, offset: int, *events: dict[str, Any], partition: int = 0) -> SourceMessage:
        value = REGISTRY.encode(BATCH_SCHEMA, {"session_id": self.session_id, "events": list(events)})
        return SourceMessage("events", partition, offset, self.session_id.encode(), value)

    def records(self) -> list[dict[str, Any]]:
        return [value for _, value in read_archive(self.store).by_session()[self.session_id]]

    def sibling(self, session_id: str) -> HeldSession:
        """Another session in the same partition, archive and index."""
        return HeldSession(self.tmp_path, self.index, session_id)

    def start_holding(self, worker: SealPipeline) -> tuple[SourceMessage, SessionState]:
        """Seal a first event that ends in what may be the start of an address (so the masker
        holds it); returns its message and the session's state, as the worker's flush timer sees it."""
        held = self.message(0, make_event(self.session_id, 0, output("bye ada@lovelace.org")))
        assert worker.process([held]).held == {(0, 0)}
        [flush] = worker.overdue_flushes(0)
        state = flush.state
        return held, state


@pytest.fixture
def session(tmp_path: Path) -> Iterator[HeldSession]:
    with ChdbIndex(tmp_path / "index") as index:
        index.migrate()
        yield HeldSession(tmp_path, index)


def test_bytes_the_masker_held_survive_a_crash(session: HeldSession) -> None:
    """The message whose tail the masker holds stays unacknowledged; after a crash it comes again,
    and the new worker's masker holds the same bytes for the session's next event."""
    first = session.message(0, make_event("s-held", 0, output("bye ada@lovelace.org")))  # may grow
    second = session.message(1, make_event("s-held", 1, end()))
    before = session.worker().process([first])
    assert before.held == {(0, 0)}  # not to be acknowledged: the tail is only in memory

    restarted = session.worker()  # the first worker died; Kafka delivers from the last commit
    after = restarted.process([first, second])
    assert after.skipped_messages == 1
    assert after.held == frozenset()  # the tail is archived now: everything can be acknowledged
    records = session.records()
    session_end = records[-2]["event"]
    assert session_end["body"][0].endswith("SessionEnd")
    assert base64.b64decode(session_end["attributes"][OUTPUT_TAIL_ATTRIBUTE]) == b"*" * 16
    assert [record["event"]["body"][1]["data"] for record in records[:1]] == [b"bye "]


def test_bytes_held_too_long_are_asked_for_once_and_put_on_record(session: HeldSession) -> None:
    worker = session.worker()
    held = worker.process([session.message(0, make_event("s-held", 0, output("bye ada@lovelace.org")))])
    assert held.held == {(0, 0)}
    assert worker.overdue_flushes(15) == []  # held for no time yet
    session.now += 20
    [flush] = worker.overdue_flushes(15)
    state = flush.state
    assert (state.session_id, state.last_seq) == ("s-held", 0)
    assert worker.overdue_flushes(15) == []  # asked once for this point of the session
    flushed = worker.process([session.message(1, output_flush_event(state, 15))])
    assert flushed.held == frozenset()
    session.now += 20
    assert worker.overdue_flushes(15) == []
    flush = session.records()[-1]
    assert flush["event"]["body"][0].endswith("OutputFlush")
    assert base64.b64decode(flush["event"]["attributes"][OUTPUT_TAIL_ATTRIBUTE]) == b"*" * 16


def test_a_flush_seen_again_after_a_crash_is_not_held_twice(session: HeldSession) -> None:
    """After a crash the new worker reads again from the held message: it must flush again where
    the first worker did, or it would hold the flushed bytes once more and record them twice."""
    first = session.worker()
    held, state = session.start_holding(first)
    flush = session.message(1, output_flush_event(state, 15))
    first.process([flush])

    restarted = session.worker()  # the first died before its commit went past offset 1
    later = [
        session.message(2, make_event("s-held", 1, output("more\r\n"))),
        session.message(3, make_event("s-held", 2, end())),
    ]
    outcome = restarted.process([held, flush, *later])
    assert outcome.skipped_messages == 2
    records = session.records()
    assert [r["kind"] for r in records] == ["EVENT", "EVENT", "EVENT", "EVENT", "SEAL"]
    assert records[2]["event"]["body"][1]["data"] == b"more\r\n"
    assert OUTPUT_TAIL_ATTRIBUTE not in records[3]["event"]["attributes"]


def test_a_stale_flush_seen_again_after_a_crash_flushes_nothing(session: HeldSession) -> None:
    first = session.worker()
    held, state = session.start_holding(first)
    resize = session.message(1, make_event("s-held", 1, body("TerminalResize", cols=100, rows=30)))
    stale = session.message(2, output_flush_event(state, 15))
    assert first.process([resize, stale]).held == {(0, 0)}  # the flush came too late

    restarted = session.worker()
    outcome = restarted.process([held, resize, stale, session.message(3, make_event("s-held", 2, end()))])
    assert outcome.skipped_messages == 3
    records = session.records()
    assert [r["kind"] for r in records] == ["EVENT", "EVENT", "EVENT", "SEAL"]
    assert base64.b64decode(records[2]["event"]["attributes"][OUTPUT_TAIL_ATTRIBUTE]) == b"*" * 16


def test_the_last_event_retried_after_an_idle_seal_is_a_duplicate_not_a_dead_letter(
    session: HeldSession,
) -> None:
    last = make_event("s-held", 0, output("bye ada@lovelace.org"))
    first = session.worker()
    first.process([session.message(0, last)])
    [state] = first.idle_sessions(0)
    first.process([session.message(1, idle_timeout_event(state, 60))])
    for worker in (first, session.worker()):  # from memory, and from the index after a restart
        retried = worker.process([session.message(2, last)])
        assert retried.dead_letters == []
        assert retried.duplicates == 1


def test_a_revoked_partition_leaves_no_masker_state_behind(session: HeldSession) -> None:
    """Sessions of a lost partition end with its next owner: their stream state (context lines,
    table headers), held or not, must not stay here for ever."""
    masker = EventMasker(MaskingEngine(load_default_policy(), KEY))
    worker = session.worker(masker)
    other = session.sibling("s-other").message(0, make_event("s-other", 0), partition=1)
    worker.process([session.message(0, make_event("s-held", 0, output("name | email\r\n"))), other])
    assert masker.open_sessions == 2
    worker.forget_partition(0)
    assert masker.open_sessions == 1  # the other partition's session is still this worker's


def test_a_flush_after_a_refused_event_is_repeated_after_a_crash(session: HeldSession) -> None:
    """An event refused into the DLQ does not make a later flush stale; recovery must agree with
    sealing on that, or it would hold the flushed bytes again and record them twice."""
    first = session.worker()
    held, state = session.start_holding(first)
    refused = session.message(1, make_event("s-held", 1, output("xyz"), at_us=1))  # a bad time
    flush = session.message(2, output_flush_event(state, 15))
    resize = session.message(3, make_event("s-held", 1, body("TerminalResize", cols=100, rows=30)))
    outcome = first.process([refused, flush, resize])
    assert len(outcome.dead_letters) == 1
    assert outcome.held == frozenset()  # the flush put the bytes on record

    restarted = session.worker()  # the first died before its commit went past offset 0
    ending = session.message(4, make_event("s-held", 2, output("\r\n")), make_event("s-held", 3, end()))
    restarted.process([held, refused, flush, resize, ending])
    records = session.records()
    assert [r["kind"] for r in records] == ["EVENT", "EVENT", "EVENT", "EVENT", "EVENT", "SEAL"]
    assert records[3]["event"]["body"][1]["data"] == b"\r\n"  # not the flushed bytes a second time


def test_a_flush_does_not_put_off_the_idle_seal(session: HeldSession) -> None:
    """A session's idle time runs from its gateway's last event, not from the worker's flush."""
    worker = session.worker()
    worker.process([session.message(0, make_event("s-held", 0, output("bye ada@lovelace.org")))])
    session.now += 20
    [flush] = worker.overdue_flushes(15)
    state = flush.state
    worker.process([session.message(1, output_flush_event(state, 15))])
    session.now += 1780  # 1800 s after the gateway's last event, 1780 after the flush
    assert [s.session_id for s in worker.idle_sessions(1800)] == ["s-held"]


def test_a_password_typed_across_a_crash_after_its_prompt_stays_masked(session: HeldSession) -> None:
    """Only the masker knows that a prompt asked for a password: the message that printed it
    stays unacknowledged until the answer's Enter, so that a new worker sees the prompt again
    and masks what is typed after it."""
    first = session.worker()
    prompt = session.message(0, make_event("s-held", 0, output("[sudo] password for ada: ")))
    typed = session.message(1, make_event("s-held", 1, body("TerminalInput", data=b"hunt")))
    assert first.process([prompt]).held == {(0, 0)}  # before any keystroke
    assert first.process([typed]).held == {(0, 0)}  # still the prompt's message

    restarted = session.worker()  # Kafka delivers again from offset 0
    rest = [
        session.message(2, make_event("s-held", 2, body("TerminalInput", data=b"er2\r"))),
        session.message(3, make_event("s-held", 3, output("\r\nok\r\n"))),
    ]
    assert restarted.process([prompt, typed, *rest]).held == frozenset()
    ending = restarted.process([session.message(4, make_event("s-held", 4, end()))])
    assert ending.held == frozenset()
    records = session.records()
    assert b"hunter2" not in b"".join(repr(r).encode() for r in records)
    entered = records[2]["event"]["body"][1]["data"]
    assert entered == b"*******\r"  # the whole password, masked at its Enter


def _flush_prompt(session: HeldSession, worker: SealPipeline, offset: int) -> SourceMessage:
    """What the worker's flush timer sends for a session whose password prompt is open."""
    session.now += 20
    asked = {flush.state.session_id: flush for flush in worker.overdue_flushes(15)}
    flush = asked[session.session_id]
    assert flush.secret_prompt
    request = output_flush_event(flush.state, 15, secret_prompt=True, held_from=flush.held_from)
    return session.message(offset, request)


def _keys(session: HeldSession, offset: int, seq: int, typed: bytes) -> SourceMessage:
    return session.message(offset, make_event(session.session_id, seq, body("TerminalInput", data=typed)))


def _recorded_input(session: HeldSession) -> bytes:
    """Every keystroke on record, as recorded, with the tails flushes and endings carried."""
    records = [r for r in session.records() if r["event"] is not None]
    typed = [
        r["event"]["body"][1]["data"] for r in records if r["event"]["body"][0].endswith("TerminalInput")
    ]
    tails = [base64.b64decode(r["event"]["attributes"].get(INPUT_TAIL_ATTRIBUTE, "")) for r in records]
    return b"".join(typed + tails)


def test_a_flush_puts_an_open_prompt_on_record_and_the_commit_moves_on(session: HeldSession) -> None:
    """An unanswered prompt held its message, and every later message of the partition, until
    the session went on or was sealed idle. A flush now puts the open prompt on record and the
    hold moves on to the flush's own message; the next flush moves it on again."""
    worker = session.worker()
    other = session.sibling("s-other")
    prompt = session.message(0, make_event("s-held", 0, output("[sudo] password for ada: ")))
    assert worker.process([prompt, other.message(1, make_event("s-other", 0, output("ok\r\n")))]).held == {
        (0, 0)
    }
    first_flush = _flush_prompt(session, worker, 2)
    assert worker.process([first_flush]).held == {(0, 2)}
    assert session.records()[-1]["event"]["attributes"][SECRET_PROMPT_ATTRIBUTE] == "open"
    second_flush = _flush_prompt(session, worker, 3)
    assert worker.process([second_flush]).held == {(0, 3)}
    answer = session.message(4, make_event("s-held", 1, body("TerminalInput", data=b"hunter2\r")))
    assert worker.process([answer]).held == frozenset()
    assert session.records()[-1]["event"]["body"][1]["data"] == b"*******\r"


@pytest.mark.parametrize("typed_before_the_flush", [b"", b"hunt"])
def test_a_password_typed_after_a_crash_behind_a_recorded_prompt_stays_masked(
    session: HeldSession, typed_before_the_flush: bytes
) -> None:
    """After the crash, Kafka delivers from the flush's message only: the prompt's own message
    is not read again. The flush tells the new worker that what is typed next is the secret."""
    worker = session.worker()
    prompt = session.message(0, make_event("s-held", 0, output("Password: ")))
    messages = [prompt]
    if typed_before_the_flush:
        messages.append(
            session.message(1, make_event("s-held", 1, body("TerminalInput", data=typed_before_the_flush)))
        )
    worker.process(messages)
    flush = _flush_prompt(session, worker, 2)
    assert worker.process([flush]).held == {(0, 2)}

    restarted = session.worker()  # committed up to the flush's message; delivered from there on
    seq = len(messages)
    rest = [
        session.message(3, make_event("s-held", seq, body("TerminalInput", data=b"er2"))),
        session.message(4, make_event("s-held", seq + 1, output("\x07"))),  # a bell while typing
        session.message(5, make_event("s-held", seq + 2, body("TerminalInput", data=b"xyz\r"))),
        session.message(6, make_event("s-held", seq + 3, end())),
    ]
    outcome = restarted.process([flush, *rest])
    assert outcome.skipped_messages == 1
    assert outcome.held == frozenset()
    recorded = _recorded_input(session)
    for part in (b"hunt", b"er2", b"xyz"):
        assert part not in recorded
    records = [r for r in session.records() if r["event"] is not None]
    entered = [r for r in records if r["event"]["body"][0].endswith("TerminalInput")][-1]
    assert entered["event"]["body"][1]["data"] == b"******\r"
    assert [f["entity_type"] for f in entered["findings"]] == ["PASSWORD"]


def test_a_crash_window_from_another_sessions_hold_between_the_prompt_and_its_flush(
    session: HeldSession,
) -> None:
    """Another session's hold keeps the window open before the flush, but after the prompt: the
    prompt is not delivered again, the half-typed password is, and then the flush, which alone
    tells the new worker that what comes next is the secret."""
    worker = session.worker()
    other = session.sibling("s-other")
    prompt = session.message(0, make_event("s-held", 0, output("Password: ")))
    others_held = other.message(1, make_event("s-other", 0, output("bye ada@lovelace.org")))
    typed = _keys(session, 2, 1, b"hunt")
    assert worker.process([prompt, others_held, typed]).held == {(0, 0), (0, 1)}
    flush = _flush_prompt(session, worker, 3)
    assert worker.process([flush]).held == {(0, 1), (0, 3)}

    restarted = session.worker()  # delivered again from offset 1
    rest = [_keys(session, 4, 2, b"er2\r"), session.message(5, make_event("s-held", 3, end()))]
    restarted.process([others_held, typed, flush, *rest])
    assert b"hunt" not in _recorded_input(session)
    assert b"er2" not in _recorded_input(session)


def test_a_flush_request_that_does_not_say_the_prompt_is_open_does_not_move_the_hold(
    session: HeldSession,
) -> None:
    """Only what is delivered again counts: the record of a flush may say the prompt is open, but
    if its request does not, a worker meeting the request after a crash would not know."""
    worker = session.worker()
    prompt = session.message(0, make_event("s-held", 0, output("Password: ")))
    assert worker.process([prompt]).held == {(0, 0)}
    session.now += 20
    [flush] = worker.overdue_flushes(15)
    assert flush.secret_prompt
    silent = session.message(1, output_flush_event(flush.state, 15))  # e.g. from an older worker
    assert worker.process([silent]).held == {(0, 0)}
    assert session.records()[-1]["event"]["attributes"][SECRET_PROMPT_ATTRIBUTE] == "open"


def test_nothing_is_asked_to_flush_for_a_revoked_partition(session: HeldSession) -> None:
    """The holds and the masker's prompts are read in one call (`overdue_flushes`): a partition
    revoked before it has nothing left to ask about, and none is asked with a stale prompt."""
    worker = session.worker()
    assert worker.process([session.message(0, make_event("s-held", 0, output("Password: ")))]).held == {
        (0, 0)
    }
    worker.forget_partition(0)
    session.now += 20
    assert worker.overdue_flushes(15) == []


def test_a_stale_prompt_flush_after_other_events_does_not_move_the_hold(session: HeldSession) -> None:
    """Events of another kind come between the flushes; the second request is stale, ignored by
    sealing and not fed again in recovery: the hold stays where the prompt's state is."""
    worker = session.worker()
    other = session.sibling("s-other")

    def command(offset: int, seq: int) -> SourceMessage:
        return session.message(
            offset, make_event("s-held", seq, body("Command", argv=["x"], cwd=None, exit_code=None))
        )

    worker.process([session.message(0, make_event("s-held", 0, output("Password: ")))])
    first_flush = _flush_prompt(session, worker, 1)
    assert worker.process([first_flush]).held == {(0, 1)}
    first_command = command(2, 1)
    assert worker.process([first_command]).held == {(0, 1)}
    stale_flush = _flush_prompt(session, worker, 4)
    second_command = command(3, 2)  # overtakes the request
    later = other.message(5, make_event("s-other", 0, output("ok\r\n")))
    assert worker.process([second_command, stale_flush, later]).held == {(0, 1)}

    redelivered = [first_flush, first_command, second_command, stale_flush, later]
    restarted = session.worker()  # delivered again from offset 1
    assert restarted.process(redelivered).held == {(0, 1)}
    again = session.worker()  # and once more
    rest = [_keys(session, 6, 3, b"hunter2\r"), session.message(7, make_event("s-held", 4, end()))]
    again.process([*redelivered, *rest])
    assert b"hunter2" not in _recorded_input(session)


def test_a_stale_flush_asked_at_a_recorded_flushs_point_is_not_repeated_after_a_crash(
    session: HeldSession,
) -> None:
    """An open prompt is flushed again and again at the same point of its session. The second
    request came after the answer, so sealing ignored it; recovery must not take it for the
    first, recorded one and let go of bytes the masker held after the answer."""
    worker = session.worker()
    worker.process([session.message(0, make_event("s-held", 0, output("Password: ")))])
    assert worker.process([_flush_prompt(session, worker, 1)]).held == {(0, 1)}
    second_flush = _flush_prompt(session, worker, 4)  # asked; the answer overtakes it
    answer = session.message(2, make_event("s-held", 1, body("TerminalInput", data=b"pw\r")))
    prompt_line = session.message(3, make_event("s-held", 2, output("\r\n$ ec")))
    assert worker.process([answer, prompt_line]).held == {(0, 3)}  # "ec" may still grow
    assert worker.process([second_flush]).held == {(0, 3)}  # stale: ignored
    other = session.sibling("s-other")  # archived after it: the crash finds it done, not to seal
    later = other.message(5, make_event("s-other", 0, output("ok\r\n")))
    assert worker.process([later]).held == {(0, 3)}

    restarted = session.worker()  # delivered again from offset 3
    rest = [
        session.message(6, make_event("s-held", 3, output("ho hi\r\n"))),
        session.message(7, make_event("s-held", 4, end())),
    ]
    assert restarted.process([prompt_line, second_flush, later, *rest]).skipped_messages == 3
    records = [r for r in session.records() if r["event"] is not None]
    shown = b"".join(
        r["event"]["body"][1]["data"] for r in records if r["event"]["body"][0].endswith("TerminalOutput")
    )
    assert shown.endswith(b"$ echo hi\r\n")


class _DiesBeforeIndexing:
    """An index whose events insert fails once armed: the worker dies after an archive object
    is written and before its index rows are, so recovery indexes the object again, every
    record of it at the object's first offset."""

    def __init__(self, index: Index) -> None:
        self._index = index
        self.armed = False

    def insert(self, table: str, rows: pa.Table, *, dedup_token: str | None = None) -> None:
        if self.armed and table == "events":
            raise RuntimeError("the worker died")
        self._index.insert(table, rows, dedup_token=dedup_token)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._index, name)


def _dying_worker(session: HeldSession) -> tuple[SealPipeline, _DiesBeforeIndexing]:
    index = _DiesBeforeIndexing(session.index)
    masker = EventMasker(MaskingEngine(load_default_policy(), KEY))
    worker = SealPipeline(
        REGISTRY,
        SealStep(REGISTRY, masker=masker),
        session.store,
        cast(Index, index),
        PipelineConfig(),
        clock=lambda: session.now,
    )
    return worker, index


def test_a_prompt_flush_in_an_object_indexed_again_is_repeated_after_a_crash(session: HeldSession) -> None:
    """The flush is not the first message of its archive object, and the worker died before
    indexing it: recovery must still find it on record and tell the new masker about the prompt,
    or the bell after it would end the secret and the password be typed in the clear."""
    worker, index = _dying_worker(session)
    other = session.sibling("s-other")
    prompt = session.message(0, make_event("s-held", 0, output("Password: ")))
    assert worker.process([prompt]).held == {(0, 0)}
    batch = [
        other.message(1, make_event("s-other", 0, output("ok\r\n"))),
        _flush_prompt(session, worker, 2),
        session.message(3, make_event("s-held", 1, output("\x07"))),
    ]
    index.armed = True
    with pytest.raises(RuntimeError):
        worker.process(batch)

    restarted = session.worker()  # nothing of the batch was acknowledged: from offset 0
    rest = [_keys(session, 4, 2, b"hunter2\r"), session.message(5, make_event("s-held", 3, end()))]
    assert restarted.process([prompt, *batch, *rest]).skipped_messages == 4
    assert b"hunter2" not in _recorded_input(session)


def test_held_bytes_flushed_in_an_object_indexed_again_are_recorded_once(session: HeldSession) -> None:
    """A plain flush, not first in its archive object, and the worker died before indexing it:
    recovery must find it on record, or the new masker would hold its bytes and record them again."""
    worker, index = _dying_worker(session)
    other = session.sibling("s-other")
    held = session.message(0, make_event("s-held", 0, output("bye ada@lovelace.org")))
    assert worker.process([held]).held == {(0, 0)}
    [flush] = worker.overdue_flushes(0)
    request = session.message(2, output_flush_event(flush.state, 15, held_from=flush.held_from))
    batch = [other.message(1, make_event("s-other", 0, output("ok\r\n"))), request]
    index.armed = True
    with pytest.raises(RuntimeError):
        worker.process(batch)

    restarted = session.worker()
    rest = [
        session.message(3, make_event("s-held", 1, output(" more\r\n"))),
        session.message(4, make_event("s-held", 2, end())),
    ]
    restarted.process([held, *batch, *rest])
    records = [r for r in session.records() if r["event"] is not None]
    shown = [
        r["event"]["body"][1]["data"] for r in records if r["event"]["body"][0].endswith("TerminalOutput")
    ]
    tails = [base64.b64decode(r["event"]["attributes"].get(OUTPUT_TAIL_ATTRIBUTE, "")) for r in records]
    assert b"".join(shown + tails).count(b"*" * 16) == 1


def test_a_second_copy_of_a_recorded_flush_behind_a_keystroke_is_not_repeated_after_a_crash(
    session: HeldSession,
) -> None:
    """The same request twice (a producer's retry, or a restarted worker asking about the same
    hold): the first is sealed, the second comes after a keystroke and is ignored. Both carry the
    recorded id; recovery must repeat only the first, or it would let go of the keystrokes held."""
    worker = session.worker()
    worker.process([session.message(0, make_event("s-held", 0, output("Password: ")))])
    flush = _flush_prompt(session, worker, 1)
    assert worker.process([flush]).held == {(0, 1)}
    typed = _keys(session, 2, 1, b"hun")
    copy = SourceMessage(flush.topic, flush.partition, 3, flush.key, flush.value)
    later = session.sibling("s-other").message(4, make_event("s-other", 0, output("ok\r\n")))
    worker.process([typed])
    assert worker.process([copy, later]).held == {(0, 1)}  # the copy: stale, ignored

    restarted = session.worker()  # delivered again from offset 1
    rest = [_keys(session, 5, 2, b"ter2\r"), session.message(6, make_event("s-held", 3, end()))]
    restarted.process([flush, typed, copy, later, *rest])
    assert _recorded_input(session) == b"*******\r"


def test_an_ignored_idle_request_before_a_prompt_flush_does_not_hide_the_flush_in_recovery(
    session: HeldSession,
) -> None:
    """A request sealing ignored (here an idle seal at a seq the session had not reached, as a
    gateway could send) must not count as an event the chain took when recovery decides which
    flushes were stale, or the prompt's flush after it would be skipped."""
    worker = session.worker()
    other = session.sibling("s-other")
    prompt = session.message(0, make_event("s-held", 0, output("Password: ")))
    others_held = other.message(1, make_event("s-other", 0, output("bye ada@lovelace.org")))
    ignored = session.message(2, make_event("s-held", 1, body("IdleTimeout", last_seq=1, idle_seconds=1)))
    worker.process([prompt, others_held, ignored])
    flush = _flush_prompt(session, worker, 3)
    worker.process([flush])
    bell = session.message(4, make_event("s-held", 1, output("\x07")))
    worker.process([bell])

    restarted = session.worker()  # delivered again from offset 1 (the other session's hold)
    rest = [_keys(session, 5, 2, b"hunter2\r"), session.message(6, make_event("s-held", 3, end()))]
    restarted.process([others_held, ignored, flush, bell, *rest])
    assert b"hunter2" not in _recorded_input(session)


def _gateway_flush(
    session: HeldSession, offset: int, event_id: str, *, last_seq: int, seq: int, prompt: bool
) -> SourceMessage:
    """A flush request as a gateway could write it on the events topic."""
    request = make_event(
        session.session_id, seq, body("OutputFlush", last_seq=last_seq, held_seconds=15), event_id=event_id
    )
    if prompt:
        request["attributes"] = {SECRET_PROMPT_ATTRIBUTE: "open"}
    return session.message(offset, request)


def test_a_forged_copy_of_a_recorded_flush_is_not_repeated_in_recovery(session: HeldSession) -> None:
    """A gateway reuses the id of a flush on record with other content that sealing ignored (a
    seq the session never reached). Recovery must not take it for the recorded one: it would
    skip the later prompt and let the password through."""
    worker = session.worker()
    first = session.message(0, make_event("s-held", 0, output("$ ")))
    recorded = _gateway_flush(session, 1, "gw-x", last_seq=0, seq=0, prompt=True)
    enter = _keys(session, 2, 1, b"\r")
    copy = _gateway_flush(session, 3, "gw-x", last_seq=10**9, seq=0, prompt=False)
    prompt = session.message(4, make_event("s-held", 2, output("\r\nPassword: ")))
    worker.process([first, recorded, enter, copy, prompt])

    restarted = session.worker()  # the commit had not moved yet
    restarted.process([first, recorded, enter, copy, prompt, _keys(session, 5, 3, b"hunter2\r")])
    assert b"hunter2" not in _recorded_input(session)


def test_a_copy_of_a_recorded_flush_at_another_seq_does_not_lose_keystrokes_in_recovery(
    session: HeldSession,
) -> None:
    """A gateway reuses a recorded flush's id at a seq sealing ignores: recovery must not repeat it
    and let go of the half-typed password the masker holds."""
    worker = session.worker()
    prompt = session.message(0, make_event("s-held", 0, output("Password: ")))
    recorded = _gateway_flush(session, 1, "gw-y", last_seq=0, seq=0, prompt=True)
    typed = _keys(session, 2, 1, b"hun")
    copy = _gateway_flush(session, 3, "gw-y", last_seq=1, seq=0, prompt=True)  # ignored: seq is not 1
    worker.process([prompt, recorded, typed, copy])

    restarted = session.worker()
    rest = [_keys(session, 4, 2, b"ter2\r"), session.message(5, make_event("s-held", 3, end()))]
    restarted.process([prompt, recorded, typed, copy, *rest])
    assert _recorded_input(session) == b"*******\r"


def test_a_fork_first_in_the_redelivered_window_stays_out_of_the_rebuilt_stream(session: HeldSession) -> None:
    """Another session's conflicting repeat of an event chained before the window was masked
    alone when sealed; recovery must not feed it into that session's rebuilt stream, or its
    unfinished last token would reach the record again with the session's next event."""
    other = session.sibling("s-other")
    first = session.worker()
    first.process([other.message(0, make_event("s-other", 0, output("done\r\n")))])
    held = session.message(1, make_event("s-held", 0, output("bye ada@lovelace.org")))
    fork = other.message(2, make_event("s-other", 0, output("bye bob@example.o"), event_id="x"))
    assert first.process([held, fork]).held == {(0, 1)}  # the fork, masked alone, holds nothing

    restarted = session.worker()  # Kafka delivers again from offset 1
    later = other.message(3, make_event("s-other", 1, output("rg\r\n")))
    restarted.process([held, fork, later])
    records = [value for _, value in read_archive(other.store).by_session()["s-other"]]
    assert [r["kind"] for r in records] == ["EVENT", "FORK", "EVENT"]
    assert records[2]["event"]["body"][1]["data"] == b"rg\r\n"  # nothing of the fork before it


def test_late_and_fork_events_are_masked_alone_whatever_the_worker_remembers(session: HeldSession) -> None:
    """Whether a terminal event continues its session's stream follows from the chain alone: a
    LATE or FORK event is masked on its own even by a worker that has not seen the session yet
    (after a restart), so it never holds bytes that only that worker's memory has."""
    query = body("Query", statement="select 1", parameters=[], database=None)
    session.worker().process(
        [
            session.message(0, make_event("s-held", 0, output("ok\r\n"))),
            session.message(1, make_event("s-held", 2, query)),  # seq 1 is missing: a gap
        ]
    )
    fresh = session.worker()  # a restart: no stream state for the session
    late = session.message(2, make_event("s-held", 1, output("bye ada@lovelace.org")))
    fork = session.message(3, make_event("s-held", 0, output("bye bob@example.o"), event_id="x"))
    assert fresh.process([late, fork]).held == frozenset()
    fresh.process([session.message(4, make_event("s-held", 3, output("rg\r\n")))])
    records = session.records()
    assert [r["kind"] for r in records] == ["EVENT", "GAP", "EVENT", "LATE", "FORK", "EVENT"]
    assert records[3]["event"]["body"][1]["data"] == b"bye " + b"*" * 16  # whole, on its own
    assert records[5]["event"]["body"][1]["data"] == b"rg\r\n"  # nothing of the fork before it


# --- content masking raises on ------------------------------------------------------------------


def test_an_event_masking_fails_on_is_dead_lettered_and_nothing_of_it_stays_in_the_stream(
    session: HeldSession,
) -> None:
    """The event goes to the DLQ as it came; its session's stream is as before it, so the bytes
    held from the event before come out with the event after, and nothing of the refused one."""
    events = [
        make_event("s-held", 0, output("bye ada@lovelace.org")),  # the address may go on: held
        make_event("s-held", 1, output(TRAP + b" grace@hopper.org\r\nnext: ")),
        make_event("s-held", 2, output(" and more\r\n")),
        make_event("s-held", 3, end()),
    ]
    outcome = session.worker(trap_masker(KEY)).process(
        [session.message(offset, event) for offset, event in enumerate(events)]
    )
    (letter,) = outcome.dead_letters
    assert letter.source.offset == 1
    assert letter.reason.startswith(
        "invalid: masking failed on this event: ValueError at tests/eventdata.py:"
    )
    assert "grace" not in letter.reason  # the error's own message quotes the event
    assert REGISTRY.decode(letter.value).value == events[1]  # the original, to replay later
    assert outcome.held == frozenset()
    records = session.records()
    assert [r["kind"] for r in records] == ["EVENT", "GAP", "EVENT", "EVENT", "SEAL"]
    assert records[2]["event"]["body"][1]["data"] == b"*" * 16 + b" and more\r\n"
    archived = b"".join(repr(r).encode() for r in records)
    assert b"trap" not in archived
    assert b"grace" not in archived
    assert b"next" not in archived
    verify_chain("s-held", read_archive(session.store).by_session()["s-held"], require_seal=True)


def _refused_prompt_then_password(session: HeldSession) -> tuple[SourceMessage, list[SourceMessage]]:
    refused = session.message(0, make_event("s-held", 0, output(TRAP + b"\r\n[sudo] password for ada: ")))
    rest = [
        session.message(2, make_event("s-held", 1, body("TerminalInput", data=b"hunter2\r"))),
        session.message(3, make_event("s-held", 2, output("\r\nok\r\n"))),
        session.message(4, make_event("s-held", 3, end())),
    ]
    return refused, rest


def _typed_on_record(session: HeldSession, seq: int = 1) -> tuple[bytes, list[str]]:
    (typed,) = [r for r in session.records() if r["kind"] == "EVENT" and r["source_seq"] == seq]
    return typed["event"]["body"][1]["data"], [f["entity_type"] for f in typed["findings"]]


def test_what_is_typed_after_output_masking_failed_on_is_masked_whole(session: HeldSession) -> None:
    """Output nobody could read may have been a password prompt: the line typed next is masked
    as a password (fail closed), prompt or not."""
    refused, rest = _refused_prompt_then_password(session)
    outcome = session.worker(trap_masker(KEY)).process([refused, *rest])
    assert [letter.source.offset for letter in outcome.dead_letters] == [0]
    assert _typed_on_record(session) == (b"*******\r", ["PASSWORD"])


def test_failing_closed_survives_a_crash(session: HeldSession) -> None:
    """The refused output's message is held while the session fails closed; after a crash it
    comes again, already behind the archive, and recovery fails closed again."""
    refused, rest = _refused_prompt_then_password(session)
    other = session.sibling("s-other").message(1, make_event("s-other", 0, output("ok\r\n")))
    first = session.worker(trap_masker(KEY))
    assert first.process([refused, other]).held == {(0, 0)}  # the open "prompt" holds it

    restarted = session.worker(trap_masker(KEY))  # Kafka delivers again from offset 0
    outcome = restarted.process([refused, other, *rest])
    assert outcome.skipped_messages == 2  # both archived already (the refused one to the DLQ)
    assert outcome.dead_letters == []
    assert outcome.held == frozenset()
    assert _typed_on_record(session) == (b"*******\r", ["PASSWORD"])


def test_a_password_half_typed_before_a_refused_event_is_still_recorded_masked(
    session: HeldSession,
) -> None:
    """Masking the refused keystrokes had got as far as taking the password's first half out
    of the session's state; putting the state back keeps that half for the next Enter."""
    messages = [
        session.message(0, make_event("s-held", 0, output("Password: "))),
        _keys(session, 1, 1, b"hunt"),
        _keys(session, 2, 2, b"er2\r" + TRAP),
        _keys(session, 3, 3, b"\r"),
        session.message(4, make_event("s-held", 4, end())),
    ]
    outcome = session.worker(trap_masker(KEY)).process(messages)
    assert [letter.source.offset for letter in outcome.dead_letters] == [2]
    assert _recorded_input(session) == b"****\r"
    (entered,) = [r for r in session.records() if r["source_seq"] == 3]
    assert [f["entity_type"] for f in entered["findings"]] == ["PASSWORD"]


@pytest.mark.parametrize("restarted_with", ["the same masker", "a masker that no longer fails"])
def test_failing_closed_survives_a_crash_behind_the_chains_head(
    session: HeldSession, restarted_with: str
) -> None:
    """The refused output is followed by one the chain takes, so after the crash it is behind the
    chain's head. Recovery replays it as refused because the chain has no record of it, even when
    masking it now goes through: the context from before the window that made it fail is gone, or
    a fix was deployed (what one does about a masking failure in the DLQ)."""
    refused = [
        session.message(0, make_event("s-held", 0, output(TRAP[:-1]))),  # "<<trap>": taken
        session.message(1, make_event("s-held", 1, output(b">\r\n[sudo] password for ada: "))),
        session.message(2, make_event("s-held", 2, output("\x07"))),  # a bell: the chain moves on
    ]
    first = session.worker(trap_masker(KEY))
    assert first.process(refused[:1]).held == frozenset()  # acknowledged: not delivered again
    outcome = first.process(refused[1:])
    assert [letter.source.offset for letter in outcome.dead_letters] == [1]
    assert outcome.held == {(0, 1)}

    masker = trap_masker(KEY) if restarted_with == "the same masker" else None
    rest = [_keys(session, 3, 3, b"hunter2\r"), session.message(4, make_event("s-held", 4, end()))]
    after = session.worker(masker).process([*refused[1:], *rest])
    assert after.skipped_messages == 2
    assert after.dead_letters == []
    assert _typed_on_record(session, seq=3) == (b"*******\r", ["PASSWORD"])


def test_a_refused_events_bytes_stay_out_of_the_record_after_a_crash(session: HeldSession) -> None:
    messages = [
        session.message(0, make_event("s-held", 0, output(TRAP[:-1]))),
        session.message(1, make_event("s-held", 1, output(b">\r\nREFUSED grace@hopper.org"))),
        session.message(2, make_event("s-held", 2, output(b""))),
        session.message(3, make_event("s-held", 3, output(b" done\r\n"))),
        session.message(4, make_event("s-held", 4, end())),
    ]
    first = session.worker(trap_masker(KEY))
    first.process(messages[:1])
    first.process(messages[1:3])
    session.worker(trap_masker(KEY)).process(messages[1:])
    archived = b"".join(repr(r).encode() for r in session.records())
    assert b"REFUSED" not in archived
    assert b"grace" not in archived
    assert _typed_on_record(session, seq=3) == (b" done\r\n", [])


def test_keystrokes_held_when_output_fails_closed_are_masked_with_the_line_in_order(
    session: HeldSession,
) -> None:
    """Every keystroke's echo is an output event: one refused while the typed token is held back
    makes the whole line a secret, held keystrokes first."""
    messages = [
        _keys(session, 0, 0, b"export AWS_ACCESS_KEY_ID=AKIAIOSFOD"),  # "AWS_…FOD" may go on: held
        session.message(1, make_event("s-held", 1, output(TRAP))),
        _keys(session, 2, 2, b"NN7EXAMPLE\r"),
        session.message(3, make_event("s-held", 3, end())),
    ]
    session.worker(trap_masker(KEY)).process(messages)
    assert _recorded_input(session) == b"export " + b"*" * 38 + b"\r"
    assert _typed_on_record(session, seq=2)[1] == ["PASSWORD"]


def test_a_session_masking_refused_every_event_of_stops_holding_its_partition_when_idle(
    session: HeldSession,
) -> None:
    """It has no chain to flush into or seal: after the idle timeout (from its last event) its
    message no longer holds back the partition's commits, and the masker still fails closed."""
    worker = session.worker(trap_masker(KEY))
    assert worker.process([session.message(0, make_event("s-held", 0, output(TRAP)))]).held == {(0, 0)}
    session.now += 30
    refused_again = session.message(1, make_event("s-held", 1, output(TRAP + b"\r\nPassword: ")))
    assert worker.process([refused_again]).held == {(0, 0)}  # the earliest message still
    session.now += 59
    assert worker.idle_sessions(60) == []
    assert worker.held_messages() == {(0, 0)}  # 89 s after the first event, 59 after the last
    session.now += 1
    assert worker.idle_sessions(60) == []  # nothing to seal: no chain
    assert worker.held_messages() == frozenset()
    other = session.sibling("s-other")
    assert worker.process([other.message(2, make_event("s-other", 0, output("ok\r\n")))]).held == frozenset()
    worker.process([_keys(session, 3, 2, b"hunter2\r"), session.message(4, make_event("s-held", 3, end()))])
    assert _typed_on_record(session, seq=2) == (b"*******\r", ["PASSWORD"])


@pytest.mark.parametrize("crash", [False, True])
def test_events_chained_late_are_not_replayed_as_refused_after_a_crash(
    session: HeldSession, crash: bool
) -> None:
    """Recovery's view of how far a chain was is a lower bound, so a LATE event (masked alone by
    sealing) can come up in the window: it is not a refused one, and nothing fails closed."""
    other = session.sibling("s-other")
    batch = [
        other.message(0, make_event("s-other", 0, output("ok\r\n"))),
        other.message(1, make_event("s-other", 2, output("x\r\n"))),  # seq 1 missing: GAP
        session.message(2, make_event("s-held", 0, output("bye ada@lovelace.org"))),  # held
        other.message(3, make_event("s-other", 1, output("late line\r\n"))),  # LATE
    ]
    rest = [
        _keys(other, 4, 3, b"ls -la\r"),
        session.message(5, make_event("s-held", 1, end())),
        other.message(6, make_event("s-other", 4, end())),
    ]
    worker = session.worker()
    assert worker.process(batch).held == {(0, 2)}
    if crash:
        worker = session.worker()  # Kafka delivers again from offset 2
        assert worker.process([batch[2], batch[3], *rest]).skipped_messages == 2
    else:
        worker.process(rest)
    assert [r["kind"] for r in other.records()] == ["EVENT", "GAP", "EVENT", "LATE", "EVENT", "EVENT", "SEAL"]
    assert _typed_on_record(other, seq=3) == (b"ls -la\r", [])
