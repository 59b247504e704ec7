"""Shortcuts taken for speed give the same answers as the plain forms they replace."""

from __future__ import annotations

import random
import re

import pytest

from masking.context import (
    _CSV_FIELD,
    _KEY_INFO,
    _KEY_TAIL,
    _SEPARATORS_AS_EQUALS,
    _csv_cells,
    _reversed_key_matches,
)
from masking.corpus import generate, terminal_bytes
from masking.detectors import (
    AWS_SECRET_KEY,
    PASSWORD,
    PHONE_NUMBER,
    PRIVATE_KEY,
    SHAPE,
    SHORT_TEXT,
    ContentScanner,
    Span,
)
from masking.engine import _ANSI, _Stripped
from masking.event_masker import compared_parameters

# What the reversed key scan was before separators were rewritten as "=": one class of all six.
_ONE_CLASS = re.compile(rb"[=:|,\t\n]" + _KEY_TAIL)


def _key_matches_plain(lower: bytes) -> list[tuple[int, int, int, int]]:
    return [(m.start(), m.end(), m.start(1), m.end(1)) for m in _ONE_CLASS.finditer(lower[::-1])]


def _key_matches_fast(lower: bytes) -> list[tuple[int, int, int, int]]:
    rev = bytearray(lower.translate(_SEPARATORS_AS_EQUALS))
    rev.reverse()
    return [(m.start(), m.end(), m.start(1), m.end(1)) for m in _reversed_key_matches(rev)]


def test_reversed_key_scan_with_tabs_and_blanks() -> None:
    rng = random.Random(1)
    keys = list(_KEY_INFO)
    pieces = [b"\t", b" ", b"\t\t", b"\r", b"'", b'"', b":", b"=", b"|", b",", b"\n", b"x", b"_", b"-"]
    for _ in range(3000):
        parts = [
            rng.choice(keys) if rng.random() < 0.5 else rng.choice(pieces) * rng.randrange(1, 4)
            for _ in range(rng.randrange(1, 12))
        ]
        text = b"".join(parts)
        assert _key_matches_fast(text) == _key_matches_plain(text), text


def test_reversed_key_scan_on_terminal_output() -> None:
    data = terminal_bytes(7, 200_000, sensitive_share=0.5).lower()
    data = data.replace(b"  ", b"\t ")  # terminal output here has no tabs; give it some
    for i in range(0, len(data), 4096):
        chunk = data[i : i + 4096]
        assert _key_matches_fast(chunk) == _key_matches_plain(chunk)


def test_csv_cells_match_the_field_regex() -> None:
    rng = random.Random(2)
    alphabet = b'ab1 ,\t,,  x-"\r\xc3\xa9;|'
    for _ in range(20000):
        line = bytes(rng.choice(alphabet) for _ in range(rng.randrange(0, 25)))
        line = line.replace(b"\r", b"") if rng.random() < 0.7 else line
        line = line.replace(b'"', b"") if rng.random() < 0.7 else line
        before = rng.choice([b"", b"name,ssn\n"])
        data = before + line + rng.choice([b"", b"\n", b"\r\n"])
        ls, le = len(before), len(before) + len(line)
        plain = [
            (m.start(1), m.end(1)) if m.group(1) is not None else (m.start(2), m.end(2))
            for m in _CSV_FIELD.finditer(data, ls, le)
        ]
        assert _csv_cells(data, ls, le, line) == plain, data


def _offset_maps(raw: bytes) -> tuple[bytes, list[int]]:
    """Clean text and, for each clean byte, its raw offset: the map built the slow way."""
    clean = bytearray()
    to_raw: list[int] = []
    pos = 0
    for m in _ANSI.finditer(raw):
        clean += raw[pos : m.start()]
        to_raw.extend(range(pos, m.start()))
        pos = m.end()
    clean += raw[pos:]
    to_raw.extend(range(pos, len(raw)))
    return bytes(clean), to_raw


@pytest.mark.parametrize("seed", range(5))
def test_stripped_offsets(seed: int) -> None:
    rng = random.Random(seed)
    escapes = [b"\x1b[0m", b"\x1b[01;32m", b"\x1b]0;title\x07", b"\x1b(B", b"\x1b"]
    for _ in range(300):
        raw = b"".join(
            rng.choice(escapes)
            if rng.random() < 0.3
            else bytes([rng.choice(b"ab c\n")]) * rng.randrange(1, 4)
            for _ in range(rng.randrange(0, 15))
        )
        stripped = _Stripped(raw)
        clean, to_raw = _offset_maps(raw)
        assert stripped.clean == clean
        for p in range(len(clean)):
            assert stripped.to_raw(p) == to_raw[p]
            # Escapes end exactly before the clean byte they precede.
            assert stripped.to_clean(to_raw[p]) == p
        assert stripped.to_raw(len(clean)) == len(raw)
        for r in range(len(raw) + 1):
            expected = next((p for p, at in enumerate(to_raw) if at >= r), len(clean))
            assert stripped.to_clean(r) == expected
        for s in range(len(clean)):
            for e in range(s + 1, len(clean) + 1):
                covered = [i for r in stripped.raw_ranges(s, e) for i in range(*r)]
                assert covered == to_raw[s:e]


def _scan(data: bytes) -> list[Span]:
    out: list[Span] = []
    ContentScanner().scan(data, data.lower(), data.translate(SHAPE), out)
    return out


def test_short_texts_find_what_long_texts_find() -> None:
    """Below ``SHORT_TEXT`` bytes the scanner tests for each pattern's literal first; padded past
    that length, the same text must give the same spans."""
    for doc in generate(11, 300):
        text = doc.text.encode("utf-8", "surrogatepass")
        if len(text) > SHORT_TEXT or b"PRIVATE KEY" in text:
            continue  # an unterminated key body runs to the end of the text, padding included
        padded = text + b"\n" + b" " * (SHORT_TEXT + 1)
        assert _scan(text) == _scan(padded)


# The forward pattern that `compared_parameters` replaced: tried at every byte of a statement.
_FORWARD_PARAMETER_COMPARE = re.compile(
    rb"(?i)([A-Za-z_][\w.\"]*)\s*(?:=|<>|!=|\blike\b|\bilike\b)\s*\$(\d+)"
)


def test_compared_parameters_match_the_forward_pattern() -> None:
    rng = random.Random(3)
    pieces = [
        b"email", b"u.ssn", b'"t".dob', b"_x", b"1", b"a1", b" ", b"\n", b"=", b"==", b"<>", b"!=",
        b"!", b"<", b">", b"like", b"LIKE", b"ilike", b"xlike", b"$", b"$1", b"$23", b"$0", b".",
        b'"', b"(", b",", b"'", b"\xc3\xa9", b"where ", b"and ",
    ]  # fmt: skip
    for _ in range(30000):
        statement = b"".join(rng.choice(pieces) for _ in range(rng.randrange(1, 14)))
        plain = [(m.group(1), m.group(2)) for m in _FORWARD_PARAMETER_COMPARE.finditer(statement)]
        assert compared_parameters(statement) == plain, statement
    statement = b'SELECT id FROM users WHERE email = $1 AND u."last_name" ILIKE $2 OR id<>$3'
    assert compared_parameters(statement) == [(b"email", b"1"), (b'u."last_name"', b"2"), (b"id", b"3")]


def _spans_ending_after(spans: list[Span], start: int) -> list[tuple[int, int, str]]:
    return sorted((span.start, span.end, span.entity) for span in spans if span.end > start)


# Values a scan from a line start must still find from the lines before it: a number spanning a
# line break, an AWS secret key printed after its key id, a PEM body, a SQL password after its
# keyword; and a refused number candidate spanning a line break, which keeps its digits from
# starting another (an NPI here).
_ACROSS_LINES = [
    (b"call (415)\n555-0132 now", PHONE_NUMBER),
    (b"415-\n555-0132", PHONE_NUMBER),
    (b"AKIAIOSFODNN7EXAMPLE\n wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", AWS_SECRET_KEY),
    (b"-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEA7b3x", PRIVATE_KEY),
    (b"ALTER ROLE x PASSWORD\n'hunter2'", PASSWORD),
    (b"id 555\n123 1234 567 893", None),
]


@pytest.mark.parametrize(("text", "entity"), _ACROSS_LINES)
def test_values_across_lines_are_found_from_the_last_line(text: bytes, entity: str | None) -> None:
    last_line = text.rindex(b"\n") + 1
    found: list[Span] = []
    ContentScanner().scan(text, text.lower(), None, found, lines_from=last_line)
    assert [span.entity for span in found if span.end > last_line] == ([entity] if entity else [])


@pytest.mark.parametrize("seed", range(3))
def test_from_a_line_start_the_scanner_finds_what_it_finds_in_the_whole_text(seed: int) -> None:
    """The stream masker has the content detectors start at the line it has not emitted whole
    (`lines_from`); numbers and the detectors that read across lines read the lines before it
    too. From that line on, every value found in the whole text is found, and no other."""
    scanner = ContentScanner()
    texts = [doc.text.encode("utf-8", "surrogatepass") for doc in generate(20 + seed, 200)]
    output = terminal_bytes(seed, 100_000, sensitive_share=0.5)
    texts += [output[i : i + 3000] for i in range(0, len(output), 3000)]
    texts += [text for text, _ in _ACROSS_LINES]
    checked = 0
    for text in texts:
        lower = text.lower()
        whole: list[Span] = []
        scanner.scan(text, lower, None, whole)
        for start in (i + 1 for i, byte in enumerate(text[:-1]) if byte == 0x0A):
            from_line: list[Span] = []
            scanner.scan(text, lower, None, from_line, lines_from=start)
            assert _spans_ending_after(from_line, start) == _spans_ending_after(whole, start), (text, start)
            checked += 1
    assert checked > 4000
