"""The streaming terminal masker: values split across chunks at every offset, ANSI sequences inside
and around values, lengths kept, the same output for the same chunks."""

from __future__ import annotations

import base64
import random
from dataclasses import replace
from typing import Any

import pytest

from masking import EventMasker, MaskingEngine, TerminalStreamMasker
from masking.corpus import terminal_bytes
from masking.engine import incomplete_escape
from masking.policy import PolicySet
from schemas.bodies import OUTPUT_TAIL_ATTRIBUTE

# (context before, value, context after, entity): a few values of each type as a terminal shows them.
VALUES = [
    (b"user ", b"ada.lovelace@example.org", b" logged in\r\n", "EMAIL_ADDRESS"),
    (b"call ", b"(415) 555-0132", b" now\r\n", "PHONE_NUMBER"),
    (b"tel ", b"+44 20 7946 0958", b"\r\n", "PHONE_NUMBER"),
    (b"paid with ", b"4111 1111 1111 1111", b" ok\r\n", "CREDIT_CARD"),
    (b"amex ", b"378282246310005", b"\r\n", "CREDIT_CARD"),
    (b"ssn ", b"123-45-6789", b"\r\n", "US_SSN"),
    (b"iban ", b"DE89 3704 0044 0532 0130 00", b"\r\n", "IBAN_CODE"),
    (b"from ", b"192.168.10.254", b":5432\r\n", "IP_ADDRESS"),
    (b"from ", b"2001:db8:85a3::8a2e:370:7334", b" port 22\r\n", "IP_ADDRESS"),
    (b"NPI ", b"1234567893", b"\r\n", "US_NPI"),
    (b"AWS_ACCESS_KEY_ID=", b"AKIAIOSFODNN7EXAMPLE", b"\r\n", "AWS_ACCESS_KEY"),
    (b"GITHUB_TOKEN=", b"ghp_abcdefghijklmnopqrstuvwxyz0123456789", b"\r\n", "GITHUB_TOKEN"),
    (
        b"jwt ",
        b"eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U",
        b"\r\n",
        "JWT",
    ),
    (b"postgres://app:", b"hunter2hunter2", b"@db:5432/app\r\n", "PASSWORD"),
    (b"password: ", b"correct-horse-battery", b"\r\n", "PASSWORD"),
    (b"first_name: ", b"Ada Augusta", b"\r\n", "PERSON"),
    (b"dob=", b"1815-12-10", b" mrn=MRN-0048213\r\n", "DATE_OF_BIRTH"),
    (b"data:\r\n  password: ", b"Y29ycmVjdCBob3JzZQ==", b"\r\nkind: Secret\r\n", "K8S_SECRET"),
]


def run(engine: MaskingEngine, chunks: list[bytes]) -> tuple[bytes, list[dict[str, Any]]]:
    stream = engine.stream()
    out, findings, total = [], [], 0
    for chunk in [*chunks, None]:
        piece, found = stream.feed(chunk) if chunk is not None else stream.flush()
        for f in found:
            findings.append({**f, "start": f["start"] + total, "end": f["end"] + total})
        out.append(piece)
        total += len(piece)
    return b"".join(out), findings


@pytest.mark.parametrize(
    ("before", "value", "after", "entity"), VALUES, ids=[v[3] + str(i) for i, v in enumerate(VALUES)]
)
def test_value_split_at_every_offset(
    engine: MaskingEngine, before: bytes, value: bytes, after: bytes, entity: str
) -> None:
    data = before + value + after
    whole, whole_findings = engine.mask_bytes(data, "body.data")
    assert value not in whole
    assert entity in [f["entity_type"] for f in whole_findings]
    for cut in range(1, len(data)):
        out, findings = run(engine, [data[:cut], data[cut:]])
        assert out == whole, cut
        assert len(out) == len(data)
        assert [(f["entity_type"], f["start"], f["end"], f["blind_index"]) for f in findings] == [
            (f["entity_type"], f["start"], f["end"], f["blind_index"]) for f in whole_findings
        ], cut


def test_value_split_into_single_bytes(engine: MaskingEngine) -> None:
    data = b"".join(b + v + a for b, v, a, _ in VALUES)
    whole, whole_findings = engine.mask_bytes(data, "body.data")
    out, findings = run(engine, [data[i : i + 1] for i in range(len(data))])
    assert out == whole
    assert len(findings) == len(whole_findings)


def test_split_across_three_chunks(engine: MaskingEngine) -> None:
    data = b"paid with 4111 1111 1111 1111 ok\r\n"
    whole, _ = engine.mask_bytes(data, "body.data")
    for a in range(1, len(data) - 1):
        for b in range(a + 1, len(data)):
            assert run(engine, [data[:a], data[a:b], data[b:]])[0] == whole


ANSI_CASES = [
    b"\x1b[01;31m\x1b[Kada@lovelace.org\x1b[m\x1b[K\r\n",  # grep --color around the value
    b"card 4111\x1b[1m 1111 \x1b[0m1111 1111\r\n",  # SGR inside the value
    b"ssn 123-\x1b]0;title\x07" + b"45-6789\r\n",  # an OSC window title inside the value
    b"mail ada\x1b[32m@\x1b[0mlovelace.org and \x1b[31m(415) 555-0132\x1b[0m\r\n",
    b"\x1b[2J\x1b[Hpassword: \x1b[7mhunter2hunter2\x1b[27m\r\n",
]


@pytest.mark.parametrize("data", ANSI_CASES)
def test_ansi_does_not_hide_values(engine: MaskingEngine, data: bytes) -> None:
    whole, findings = engine.mask_bytes(data, "body.data")
    assert findings
    assert len(whole) == len(data)
    # Escape sequences are kept byte for byte; only value characters change.
    for seq in (b"\x1b[01;31m", b"\x1b[1m", b"\x1b]0;title\x07", b"\x1b[32m", b"\x1b[7m", b"\x1b[27m"):
        assert data.count(seq) == whole.count(seq)
    for secret in (b"lovelace.org", b"1111", b"6789", b"555-0132", b"hunter2"):
        assert secret not in whole
    for cut in range(1, len(data)):
        assert run(engine, [data[:cut], data[cut:]])[0] == whole, cut


def test_multibyte_values_keep_byte_length(engine: MaskingEngine) -> None:
    data = "first_name: Zoë Müller-日本\r\n".encode()
    whole, _findings = engine.mask_bytes(data, "body.data")
    assert len(whole) == len(data)
    assert whole.decode() == "first_name: **×**×*****＊＊\r\n"
    for cut in range(1, len(data)):  # cuts inside a UTF-8 character too
        assert run(engine, [data[:cut], data[cut:]])[0] == whole, cut


def test_table_and_yaml_context_across_chunks(engine: MaskingEngine) -> None:
    data = (
        b" id | first_name | ssn\r\n----+------------+-------------\r\n"
        + b"".join(b"  %d | Person%d    | 123-45-%04d\r\n" % (i, i, 1000 + i) for i in range(50))
        + b"(50 rows)\r\n\r\napiVersion: v1\r\ndata:\r\n  password: aHVudGVyMg==\r\n"
        + b"  token: dG9rZW4tdG9rZW4=\r\nkind: Secret\r\n"
    )
    whole, findings = engine.mask_bytes(data, "body.data")
    assert len(findings) == 102
    rng = random.Random(3)
    for _ in range(20):
        cuts = sorted(rng.sample(range(1, len(data)), 12))
        chunks = [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True)]
        assert run(engine, chunks)[0] == whole


@pytest.mark.parametrize(
    ("lines", "expected"),
    [
        # A phone number broken over two output events: the first line went out as it was (line
        # by line output holds nothing back), the part on the second is masked.
        ([b"call (415)\n", b"555-0132 now\n"], b"call (415)\n******** now\n"),
        ([b"call 415-\n", b"555-0132\n"], b"call 415-\n********\n"),
        # Not an NPI: read with the line above, its first group belongs to a refused candidate.
        ([b"id 555\n", b"123 1234 567 893\n"], b"id 555\n123 1234 567 893\n"),
        (
            [b"AKIAIOSFODNN7EXAMPLE\n", b" wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY\n"],
            b"*" * 20 + b"\n " + b"*" * 40 + b"\n",
        ),
    ],
)
def test_output_lines_are_read_with_the_lines_before(
    engine: MaskingEngine, lines: list[bytes], expected: bytes
) -> None:
    """Each event a line: the lines already emitted are context the next one is read with."""
    assert run(engine, lines)[0] == expected


def test_random_chunking_of_a_session_is_deterministic(engine: MaskingEngine) -> None:
    data = terminal_bytes(5, 120_000)
    whole, whole_findings = engine.mask_bytes(data, "body.data")
    rng = random.Random(9)
    for _ in range(3):
        chunks, pos = [], 0
        while pos < len(data):
            n = rng.choice([1, 3, 64, 500, 4096, 9000])
            chunks.append(data[pos : pos + n])
            pos += n
        out, findings = run(engine, chunks)
        assert out == whole
        assert sorted((f["start"], f["blind_index"]) for f in findings) == sorted(
            (f["start"], f["blind_index"]) for f in whole_findings
        )
        assert run(engine, chunks) == (out, findings)


def test_hold_back_is_small_and_bounded(engine: MaskingEngine) -> None:
    stream = TerminalStreamMasker(engine, max_hold=64)
    out, _ = stream.feed(b"$ ls\r\nfile_a  file_b\r\n$ ")
    assert out == b"$ ls\r\nfile_a  file_b\r\n$ "
    assert stream.held == 0
    out, _ = stream.feed(b"echo partial-tok")
    assert stream.held == len(b"partial-tok")
    stream.feed(b"x" * 500)
    assert stream.held <= 64
    assert stream.flush()[0]
    assert stream.held == 0


# --- per-session streams in the EventMasker ----------------------------------------------------

NS = "dev.blackbox.v1."


def ev(seq: int, kind: str, session: str = "s1", **fields: Any) -> dict[str, Any]:
    return {
        "event_id": f"{session}-{seq}",
        "session_id": session,
        "seq": seq,
        "event_time": seq,
        "gateway": {"id": "gw", "product": "t", "version": "0"},
        "identity": {"principal": "p", "kind": "HUMAN", "issuer": None, "groups": []},
        "target": {"name": "bastion", "kind": "SSH", "host": None, "database": None},
        "attributes": {},
        "body": (NS + kind, fields),
    }


def test_event_masker_streams_per_session(engine: MaskingEngine) -> None:
    masker = EventMasker(engine)
    a1, fa1 = masker.mask(ev(0, "TerminalOutput", "a", data=b"card 4111 1111 "))
    b1, _ = masker.mask(ev(0, "TerminalOutput", "b", data=b"hello 4111 "))
    a2, fa2 = masker.mask(ev(1, "TerminalOutput", "a", data=b"1111 1111\r\n"))
    b2, fb2 = masker.mask(ev(1, "TerminalOutput", "b", data=b"world\r\n"))
    assert a1["body"][1]["data"] + a2["body"][1]["data"] == b"card " + b"*" * 19 + b"\r\n"
    assert b1["body"][1]["data"] + b2["body"][1]["data"] == b"hello 4111 world\r\n"
    assert fa1 == []
    assert [f["entity_type"] for f in fa2] == ["CREDIT_CARD"]
    assert fb2 == []
    late, _ = masker.mask(ev(0, "TerminalOutput", "a", data=b"ssn 123-45-6789\r\n"))  # out of order: alone
    assert late["body"][1]["data"] == b"ssn ***********\r\n"
    assert masker.open_sessions == 2
    assert masker.end_session("b") == b""
    assert masker.open_sessions == 1


def test_session_end_keeps_the_held_tail(engine: MaskingEngine) -> None:
    masker = EventMasker(engine)
    out, _ = masker.mask(ev(0, "TerminalOutput", data=b"bye ada@lovelace.org"))
    assert out["body"][1]["data"] == b"bye "
    end, findings = masker.mask(ev(1, "SessionEnd", reason="closed", exit_code=0))
    assert base64.b64decode(end["attributes"][OUTPUT_TAIL_ATTRIBUTE]) == b"*" * 16
    assert findings[0]["field"] == f"attributes.{OUTPUT_TAIL_ATTRIBUTE}"
    assert masker.open_sessions == 0
    plain = ev(2, "SessionEnd", session="other", reason="closed", exit_code=0)
    assert masker.mask(plain)[0] is plain


def test_typed_password_after_prompt_is_masked(engine: MaskingEngine) -> None:
    masker = EventMasker(engine)
    masker.mask(ev(0, "TerminalOutput", data=b"[sudo] password for ada: "))
    outs = [
        masker.mask(ev(i + 1, "TerminalInput", data=bytes([c])))[0]["body"][1]["data"]
        for i, c in enumerate(b"hunter2")
    ]
    final, findings = masker.mask(ev(9, "TerminalInput", data=b"\r"))
    assert outs == [b""] * 7
    assert final["body"][1]["data"] == b"*******\r"
    assert [f["entity_type"] for f in findings] == ["PASSWORD"]
    nxt, _ = masker.mask(ev(10, "TerminalInput", data=b"l"))
    assert nxt["body"][1]["data"] == b"l" or nxt["body"][1]["data"] == b""


def test_an_idle_timeout_ends_the_stream_like_a_session_end(engine: MaskingEngine) -> None:
    masker = EventMasker(engine)
    masker.mask(ev(0, "TerminalOutput", data=b"bye ada@lovelace.org"))
    idle, findings = masker.mask(ev(0, "IdleTimeout", last_seq=0, idle_seconds=1800))
    assert base64.b64decode(idle["attributes"][OUTPUT_TAIL_ATTRIBUTE]) == b"*" * 16
    assert findings[0]["field"] == f"attributes.{OUTPUT_TAIL_ATTRIBUTE}"
    assert masker.open_sessions == 0


def test_a_typed_password_follows_the_policy(engine: MaskingEngine) -> None:
    """A policy that does not mask PASSWORD, or allows the value, leaves the keystrokes as typed."""
    for policy in (
        replace(engine.policies.default, entities=engine.policies.default.entities - {"PASSWORD"}),
        replace(engine.policies.default, allow_values=frozenset({"hunter2"})),
    ):
        masker = EventMasker(MaskingEngine(PolicySet(policy), b"k" * 32))
        masker.mask(ev(0, "TerminalOutput", data=b"[sudo] password for ada: "))
        for i, c in enumerate(b"hunter2"):
            masker.mask(ev(i + 1, "TerminalInput", data=bytes([c])))
        final, findings = masker.mask(ev(9, "TerminalInput", data=b"\r"))
        assert final["body"][1]["data"] == b"hunter2\r"
        assert findings == []


@pytest.mark.parametrize(
    "chunks",
    [
        [b"abc \x1b]0;ti", b"tle", b"\x07 done\n"],  # a title (OSC) cut at the release
        [b"ls --color \x1b[3", b"1mred\x1b[0m\n"],  # a colour (CSI) cut at the release
        [b"bye ada@lovelace.o", b"rg and more\n"],  # a value cut at the release
    ],
)
def test_a_release_emits_every_byte_once(engine: MaskingEngine, chunks: list[bytes]) -> None:
    """A flush mid-session releases what is held and the stream goes on: together the pieces are
    the stream, each byte once (an escape sequence cut at the release stays held until whole)."""
    masker = engine.stream()
    first, *rest = chunks
    out, _ = masker.feed(first)
    released, _ = masker.release()
    out += released
    cut = incomplete_escape(first)
    assert masker.held == (len(first) - cut if cut >= 0 else 0)
    for chunk in rest:
        out += masker.feed(chunk)[0]
    out += masker.flush()[0]
    assert len(out) == sum(len(chunk) for chunk in chunks)
    if b"@" not in first:
        assert out == b"".join(chunks)  # nothing here to mask
