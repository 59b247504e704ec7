"""The seal step as a pure function: chain rules, determinism, and state derived from records."""

from __future__ import annotations

import base64
import json
import typing
from typing import Any

import pytest

from ledger.chain import GENESIS, ChainBroken, verify_chain
from masking.engine import MaskingEngine
from masking.event_masker import EventMasker
from masking.policy import load_default_policy
from replay.asciicast import render_asciicast
from schemas import EVENT_SCHEMA, default_registry
from schemas.bodies import INPUT_TAIL_ATTRIBUTE, OUTPUT_TAIL_ATTRIBUTE
from schemas.sealed import encode_sealed_record
from streams.app import idle_timeout_event, output_flush_event
from streams.seal import (
    RecordFields,
    SealedRecord,
    SealingFailed,
    SealStep,
    SessionSealed,
    SessionState,
    carries_gateway_event,
    replay_state,
)
from streams.sealer import RecordRow, holding_of, record_row
from streams.validate import InvalidEvent
from tests.eventdata import TRAP, body, end, make_event, output, trap_masker

REGISTRY = default_registry()


class Chain:
    """Feeds events through the seal step the way the pipeline does, keeping every record."""

    def __init__(self, session_id: str = "s-1") -> None:
        self.step = SealStep(REGISTRY)
        self.state = SessionState(session_id, partition=0)
        self.records: list[SealedRecord] = []
        self.digests: dict[int, bytes] = {}
        self.outcomes: list[str] = []

    def feed(self, event: dict[str, Any]) -> list[str]:
        result = self.step(
            event,
            REGISTRY.encode_body(EVENT_SCHEMA, event),
            self.state,
            lambda _sid, seq: self.digests.get(seq),
            message_key=event["session_id"].encode(),
        )
        for record in result.records:
            if carries_gateway_event(record.value):
                self.digests[record.value["source_seq"]] = record.value["event_digest"]
        self.state = result.state
        self.records.extend(result.records)
        self.outcomes.append(result.outcome)
        return [record.value["kind"] for record in result.records]

    def archived(self) -> list[tuple[bytes, dict[str, Any]]]:
        return [
            (record.raw, REGISTRY.decode_body("dev.blackbox.v1.SealedRecord", record.raw))
            for record in self.records
        ]


def test_events_chain_in_order_and_end_seals() -> None:
    chain = Chain()
    assert chain.feed(make_event("s-1", 0)) == ["EVENT"]
    assert chain.feed(make_event("s-1", 1)) == ["EVENT"]
    assert chain.feed(make_event("s-1", 2, end())) == ["EVENT", "SEAL"]
    first, _, _, seal = (record.value for record in chain.records)
    assert first["prev_hash"] == GENESIS
    assert seal["seal"]["record_count"] == 3
    assert seal["seal"]["head_hash"] == chain.records[2].hash
    assert seal["seal"]["last_seq"] == 2
    summary = verify_chain("s-1", chain.archived(), require_seal=True)
    assert summary.record_count == 4
    assert summary.sealed


def test_identical_duplicate_is_dropped() -> None:
    chain = Chain()
    event = make_event("s-1", 0)
    chain.feed(event)
    assert chain.feed(dict(event)) == []
    assert chain.outcomes[-1] == "duplicate"
    assert chain.state.next_index == 1


def test_conflicting_duplicate_is_chained_as_a_fork() -> None:
    chain = Chain()
    chain.feed(make_event("s-1", 0, output("ls\r\n")))
    assert chain.feed(make_event("s-1", 0, output("rm -rf /\r\n"))) == ["FORK"]
    assert chain.state.fork_count == 1
    assert verify_chain("s-1", chain.archived()).forks == 1


def test_gap_is_recorded_and_a_late_event_fills_it() -> None:
    chain = Chain()
    chain.feed(make_event("s-1", 0))
    assert chain.feed(make_event("s-1", 3)) == ["GAP", "EVENT"]
    gap = chain.records[1].value["gap"]
    assert (gap["first_seq"], gap["last_seq"]) == (1, 2)
    assert chain.state.missing == ((1, 2),)
    assert chain.feed(make_event("s-1", 2)) == ["LATE"]
    assert chain.state.missing == ((1, 1),)
    # the late event, sent again, is now an identical duplicate
    assert chain.feed(make_event("s-1", 2)) == []


def test_first_event_with_nonzero_seq_opens_with_a_gap() -> None:
    chain = Chain()
    assert chain.feed(make_event("s-1", 5)) == ["GAP", "EVENT"]
    assert chain.records[0].value["gap"] == {"first_seq": 0, "last_seq": 4}


def test_sealed_session_refuses_new_events_but_drops_retried_ones() -> None:
    chain = Chain()
    chain.feed(make_event("s-1", 0))
    closing = make_event("s-1", 1, end())
    chain.feed(closing)
    assert chain.feed(dict(closing)) == []  # a gateway retrying its last message is harmless
    with pytest.raises(SessionSealed, match="sealed"):
        chain.feed(make_event("s-1", 2))


def test_idle_timeout_seals_only_when_nothing_followed() -> None:
    chain = Chain()
    chain.feed(make_event("s-1", 0))
    stale = idle_timeout_event(chain.state, 60)
    chain.feed(make_event("s-1", 1))
    assert chain.feed(stale) == []
    assert chain.outcomes[-1] == "request_ignored"
    assert chain.feed(idle_timeout_event(chain.state, 60)) == ["SEAL"]
    assert chain.records[-1].value["seal"]["reason"] == "idle_timeout"
    assert chain.state.sealed


def masking_chain() -> Chain:
    chain = Chain()
    chain.step = SealStep(REGISTRY, masker=EventMasker(MaskingEngine(load_default_policy(), b"k" * 32)))
    return chain


def test_the_last_event_sent_again_after_an_idle_seal_is_a_duplicate() -> None:
    """The idle seal's record carries the held output under the last event's seq; a gateway
    retrying that last event must still be recognised as a duplicate, not refused as a fork."""
    chain = masking_chain()
    last = make_event("s-1", 0, output("bye ada@lovelace.org"))
    chain.feed(last)
    assert chain.feed(idle_timeout_event(chain.state, 60)) == ["EVENT", "SEAL"]
    assert chain.feed(dict(last)) == []
    assert chain.outcomes[-1] == "duplicate"


def test_an_output_flush_puts_held_bytes_on_record_and_the_session_goes_on() -> None:
    chain = masking_chain()
    chain.feed(make_event("s-1", 0, output("bye ada@lovelace.org")))
    assert holding_of(chain.step, "s-1").output
    stale = output_flush_event(chain.state, 15)
    assert chain.feed(output_flush_event(chain.state, 15)) == ["EVENT"]
    flush = chain.records[-1].value
    assert base64.b64decode(flush["event"]["attributes"][OUTPUT_TAIL_ATTRIBUTE]) == b"*" * 16
    assert [finding["field"] for finding in flush["findings"]] == [f"attributes.{OUTPUT_TAIL_ATTRIBUTE}"]
    assert flush["risk"] is None  # a request of the worker, not something the identity did
    assert not holding_of(chain.step, "s-1").output
    assert not chain.state.sealed
    assert chain.feed(stale) == []  # asked twice: nothing is held any more
    assert chain.outcomes[-1] == "request_ignored"
    assert chain.feed(make_event("s-1", 0, output("bye ada@lovelace.org"))) == []  # a retry
    assert chain.outcomes[-1] == "duplicate"
    assert chain.feed(make_event("s-1", 1, output("more\r\n"))) == ["EVENT"]
    assert chain.records[-1].value["event"]["body"][1]["data"] == b"more\r\n"  # the tail is not repeated
    assert chain.feed(make_event("s-1", 2, end())) == ["EVENT", "SEAL"]
    verify_chain("s-1", chain.archived(), require_seal=True)
    screen = render_asciicast([record.value for record in chain.records])
    assert "".join(json.loads(line)[2] for line in screen.splitlines()[1:]) == "bye " + "*" * 16 + "more\r\n"


def test_an_output_flush_after_newer_events_is_ignored() -> None:
    chain = masking_chain()
    chain.feed(make_event("s-1", 0, output("bye ada@lovelace.org")))
    stale = output_flush_event(chain.state, 15)
    chain.feed(make_event("s-1", 1, body("TerminalResize", cols=100, rows=30)))  # still holding
    assert holding_of(chain.step, "s-1").output
    assert chain.feed(stale) == []
    assert chain.outcomes[-1] == "request_ignored"
    assert holding_of(chain.step, "s-1").output


def test_a_request_not_at_the_sessions_last_seq_is_ignored() -> None:
    """Worker requests come through the gateways' topic: one claiming a later seq than the one it
    asks about (forged) must not move the chain on, or the next honest event would be a FORK."""
    chain = masking_chain()
    chain.feed(make_event("s-1", 0, output("bye ada@lovelace.org")))
    forged = {**output_flush_event(chain.state, 15), "seq": 7}
    assert chain.feed(forged) == []
    assert chain.outcomes[-1] == "request_ignored"
    assert chain.feed(make_event("s-1", 1, output("more\r\n"))) == ["EVENT"]


def test_a_prompt_released_by_a_flush_still_masks_the_password_typed_after_it() -> None:
    """The prompt ends without a space, so the masker holds it; a pause past the hold limit puts
    it on record, and what the user then types must still be masked as the password."""
    chain = masking_chain()
    chain.feed(make_event("s-1", 0, output("ada@host:~$ sudo ls\r\nPassword:")))
    assert holding_of(chain.step, "s-1").output
    assert chain.feed(output_flush_event(chain.state, 15)) == ["EVENT"]
    chain.feed(make_event("s-1", 1, body("TerminalInput", data=b"hunter2-Correct-Horse\r")))
    typed = chain.records[-1].value
    assert typed["event"]["body"][1]["data"] == b"*" * 21 + b"\r"
    assert [finding["entity_type"] for finding in typed["findings"]] == ["PASSWORD"]
    assert b"hunter2" not in b"".join(record.raw for record in chain.records)


def test_a_flush_keeps_a_tables_header_for_its_next_rows() -> None:
    chain = masking_chain()
    header = " id | patient_name   | mrn\r\n----+----------------+---------\r\n"
    chain.feed(make_event("s-1", 0, output(header + "  1 | Ada Lovelace   | A123")))
    chain.feed(output_flush_event(chain.state, 15))
    chain.feed(make_event("s-1", 1, output("4567\r\n  2 | Grace Hopper   | B7654321\r\n")))
    rows = chain.records[-1].value["event"]["body"][1]["data"]
    assert b"Grace Hopper" not in rows
    assert b"B7654321" not in rows


def test_keystrokes_held_at_the_end_are_kept_and_a_typed_password_stays_masked() -> None:
    chain = masking_chain()
    chain.feed(make_event("s-1", 0, output("[sudo] password for ada: ")))
    chain.feed(make_event("s-1", 1, body("TerminalInput", data=b"hunter2")))  # no Enter yet
    assert chain.records[-1].value["event"]["body"][1]["data"] == b""
    assert chain.feed(make_event("s-1", 2, end())) == ["EVENT", "SEAL"]
    ending = chain.records[-2].value
    assert base64.b64decode(ending["event"]["attributes"][INPUT_TAIL_ATTRIBUTE]) == b"*" * 7
    assert [finding["entity_type"] for finding in ending["findings"]] == ["PASSWORD"]
    assert b"hunter2" not in b"".join(record.raw for record in chain.records)


def test_an_idle_seal_keeps_the_output_the_masker_held_back() -> None:
    chain = masking_chain()
    chain.feed(make_event("s-1", 0, output("bye ada@lovelace.org")))  # the address could still grow
    assert chain.records[-1].value["event"]["body"][1]["data"] == b"bye "
    assert chain.feed(idle_timeout_event(chain.state, 60)) == ["EVENT", "SEAL"]
    idle = chain.records[-2].value
    assert base64.b64decode(idle["event"]["attributes"][OUTPUT_TAIL_ATTRIBUTE]) == b"*" * 16
    assert [finding["entity_type"] for finding in idle["findings"]] == ["EMAIL_ADDRESS"]
    assert chain.records[-1].value["seal"]["record_count"] == 2
    verify_chain("s-1", chain.archived(), require_seal=True)
    screen = render_asciicast([record.value for record in chain.records])
    assert "bye " + "*" * 16 in "".join(json.loads(line)[2] for line in screen.splitlines()[1:])


def test_sealing_is_deterministic() -> None:
    events = [make_event("s-1", 0), make_event("s-1", 2), make_event("s-1", 1), make_event("s-1", 3, end())]
    first, second = Chain(), Chain()
    for event in events:
        first.feed(event)
        second.feed(dict(event))
    assert [r.raw for r in first.records] == [r.raw for r in second.records]


def test_state_rebuilt_from_archived_records_equals_the_live_state() -> None:
    chain = Chain()
    for event in [
        make_event("s-1", 0),
        make_event("s-1", 4),
        make_event("s-1", 2),
        make_event("s-1", 5, end()),
    ]:
        chain.feed(event)
    rebuilt = replay_state(SessionState("s-1", 0), chain.archived())
    assert rebuilt == chain.state
    assert rebuilt.identity == chain.state.identity


def test_seal_does_not_mutate_the_state_it_was_given() -> None:
    chain = Chain()
    chain.feed(make_event("s-1", 0))
    before = chain.state
    snapshot = before.copy()
    chain.step(
        make_event("s-1", 1),
        REGISTRY.encode_body(EVENT_SCHEMA, make_event("s-1", 1)),
        before,
        lambda *_: None,
    )
    assert before == snapshot


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"session_id": ""}, "session_id"),
        ({"seq": -1}, "seq"),
        ({"event_time": 1_700_000_000}, "event_time"),
        ({"event_id": ""}, "event_id"),
        ({"body": body("TerminalResize", cols=0, rows=24)}, "terminal size"),
    ],
)
def test_invalid_events_are_refused_with_the_rule(change: dict[str, Any], message: str) -> None:
    event = {**make_event("s-1", 0), **change}
    with pytest.raises(InvalidEvent, match=message):
        SealStep(REGISTRY)(
            event, REGISTRY.encode_body(EVENT_SCHEMA, event), SessionState("s-1", 0), lambda *_: None
        )


def test_message_key_must_match_the_session() -> None:
    event = make_event("s-1", 0)
    with pytest.raises(InvalidEvent, match="message key"):
        SealStep(REGISTRY)(
            event,
            REGISTRY.encode_body(EVENT_SCHEMA, event),
            SessionState("s-1", 0),
            lambda *_: None,
            message_key=b"s-2",
        )


def test_an_event_masking_fails_on_is_refused_and_the_batch_goes_on() -> None:
    step = SealStep(REGISTRY, masker=trap_masker(b"k" * 32))
    # seq 1 is missing: the refused seq 2 must not leave a GAP record behind (nothing is chained
    # for a refused event), and seq 3 then records the gap 1..2.
    events = [
        make_event("s-1", 0),
        make_event("s-1", 2, output(TRAP + b" ada@lovelace.org")),
        make_event("s-1", 3),
    ]
    result = step.seal_batch(
        [(event, REGISTRY.encode_body(EVENT_SCHEMA, event)) for event in events],
        SessionState("s-1", 0),
        lambda *_: None,
    )
    ((position, error),) = result.refused
    assert position == 1
    assert isinstance(error, SealingFailed)
    assert str(error).startswith("masking failed on this event: ValueError at tests/eventdata.py:")
    assert "lovelace" not in str(error)
    kinds = [(record.value["kind"], record.value["source_seq"]) for record in result.records]
    assert kinds == [("EVENT", 0), ("GAP", None), ("EVENT", 3)]
    assert [record.value["gap"] for record in result.records if record.value["kind"] == "GAP"] == [
        {"first_seq": 1, "last_seq": 2}
    ]


def test_recovery_leaves_the_masker_as_a_refusal_did() -> None:
    step = SealStep(REGISTRY, masker=trap_masker(b"k" * 32))
    # Fed again as if the chain had taken it: it fails again, and the session fails closed.
    assert step.rewarm(make_event("s-1", 2, output(TRAP)), b"s-1") is False
    assert step.prompt_open("s-1")
    assert not step.holds_bytes("s-1")
    assert step.rewarm(make_event("s-1", 3, output("x")), b"s-1") is True
    # Known refused (past the chain's head) but masked without error now: nothing of it stays,
    # and the session fails closed as the refusal made it.
    assert step.rewarm(make_event("s-2", 0, output("bye ada@lovelace.org")), b"s-2", refused=True) is False
    assert not step.holds_bytes("s-2")
    assert step.prompt_open("s-2")


def test_values_that_broke_the_compiled_masker_are_sealed() -> None:
    """Each raised in the compiled build (an IPv6 address at offset 0) or in both (a parameter
    number past int()'s digit limit); both builds run this test (Makefile)."""
    chain = Chain()
    chain.step = SealStep(REGISTRY, masker=EventMasker(MaskingEngine(load_default_policy(), b"k" * 32)))
    statement = "SELECT * FROM users WHERE ssn = $" + "9" * 5000
    chain.feed(make_event("s-1", 0, output("::1\tlocalhost\nfe80::1 gw\n")))
    chain.feed(make_event("s-1", 1, body("Query", statement=statement, parameters=["x"], database=None)))
    chain.feed(
        make_event(
            "s-1",
            2,
            body(
                "QueryResult",
                columns=["ip"],
                rows=[["::1"], ["2001:db8::7"]],
                row_count=2,
                truncated=False,
                duration_us=None,
                error=None,
            ),
        )
    )
    assert chain.outcomes == ["sealed"] * 3
    values = [record.value["event"]["body"][1] for record in chain.records]
    # Loopback names no one and stays; a link-local or global address is masked.
    assert values[0]["data"] == b"::1\tlocalhost\n" + b"*" * len("fe80::1") + b" gw\n"
    assert values[2]["rows"] == [["::1"], ["*" * len("2001:db8::7")]]


def test_a_masked_event_is_recorded_in_the_generic_writers_bytes() -> None:
    """Masked bodies are spliced onto the event's own bytes (`schemas.sealed.BodyWriter`); the
    record must hold what encoding the masked event from scratch gives, for every body kind."""
    chain = Chain()
    chain.step = SealStep(REGISTRY, masker=EventMasker(MaskingEngine(load_default_policy(), b"k" * 32)))
    email = "jane.doe@example.com"
    bodies = [
        output(f"user={email}\n"),
        body("Query", statement=f"SELECT 1 WHERE email = '{email}'", parameters=[email], database=None),
        body(
            "QueryResult",
            columns=["id", "email"],
            rows=[["1", email], ["2", None]],
            row_count=2,
            truncated=False,
            duration_us=5,
            error=None,
        ),
        body(
            "HttpExchange",
            method="GET",
            url=f"https://api.example.com/users?email={email}",
            status_code=200,
            request_headers={"Accept": "application/json"},
            request_body=None,
            response_headers={"x-user": email},
            response_body=f'{{"email": "{email}"}}',
            duration_us=10,
        ),
    ]
    for seq, event_body in enumerate(bodies):
        chain.feed(make_event("s-1", seq, event_body))
    assert chain.outcomes == ["sealed"] * len(bodies)
    for record in chain.records:
        masked = record.value["event"]
        assert record.value["findings"], "every event carried the email"
        assert record.raw == encode_sealed_record(record.value, REGISTRY.encode_body(EVENT_SCHEMA, masked))
        assert email.encode() not in record.raw


def _chain_of_three() -> list[tuple[bytes, dict[str, Any]]]:
    chain = Chain()
    for seq in range(3):
        chain.feed(make_event("s-1", seq))
    chain.feed(make_event("s-1", 3, end()))
    return chain.archived()


def test_verify_chain_finds_an_edited_record() -> None:
    records = _chain_of_three()
    raw, _ = records[1]
    edited = raw.replace(b"line 1", b"line X")
    assert edited != raw
    records[1] = (edited, REGISTRY.decode_body("dev.blackbox.v1.SealedRecord", edited))
    with pytest.raises(ChainBroken) as caught:
        verify_chain("s-1", records)
    assert (caught.value.index, caught.value.check) == (2, "prev_hash")


def test_verify_chain_finds_a_dropped_or_swapped_record() -> None:
    records = _chain_of_three()
    with pytest.raises(ChainBroken, match="expected record 1") as dropped:
        verify_chain("s-1", [records[0], *records[2:]])
    assert dropped.value.check == "index"
    with pytest.raises(ChainBroken) as swapped:
        verify_chain("s-1", [records[0], records[2], records[1], records[3]])
    assert swapped.value.check == "index"


def test_verify_chain_requires_the_seal_when_asked() -> None:
    records = _chain_of_three()
    with pytest.raises(ChainBroken) as caught:
        verify_chain("s-1", records[:-1], require_seal=True)
    assert caught.value.check == "unsealed"


def test_record_rows_name_the_record_fields_in_their_order() -> None:
    # Two spellings of one layout (a plain tuple to pickle, its names for the worker): a field
    # added to one and not the other, or moved, would shift every index column after it.
    named = typing.get_type_hints(RecordRow)
    assert list(named.values()) == list(typing.get_args(RecordFields))
    event = make_event("s-row", 7, ("Query", {"statement": "SELECT 1", "parameters": []}), event_id="e-7")
    value = {
        "session_id": "s-row",
        "index": 3,
        "kind": "EVENT",
        "source_seq": 7,
        "prev_hash": b"p" * 32,
        "event_digest": b"d" * 32,
        "event": event,
        "risk": {"score": 42, "reasons": []},
        "findings": [{}, {}],
    }
    row = record_row(b"raw", b"h" * 32, value)
    assert (row.raw, row.hash, row.record_index) == (b"raw", b"h" * 32, 3)
    assert (row.kind, row.source_seq) == ("EVENT", 7)
    assert (row.prev_hash, row.event_digest, row.event_id) == (b"p" * 32, b"d" * 32, "e-7")
    assert (row.event_time, row.body_type, row.summary) == (event["event_time"], "Query", "SELECT 1")
    assert (row.risk_score, row.finding_count) == (42, 2)
    assert (row.gateway_event, row.worker_request) == (True, False)
