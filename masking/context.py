"""Contextual detection: values that are sensitive because a key, column header or label says so.

``first_name: Ada``, ``"birthDate": "1815-12-10"``, ``PGPASSWORD=…``, a psql table whose header
has an ``ssn`` column, a CSV export, the ``data:`` block of a Kubernetes Secret in YAML or JSON.

Finding the keys is the costly part: dozens of key names, anywhere in the text. Scanning for them
forward means trying a many-branch alternation at most letters of the text. Instead we scan the
*reversed*, lower-cased text for a separator (``= : | , tab newline``) followed by a reversed key
name: separators are what the regex engine skips to, and most fail at the first letter. That one
pass is what keeps contextual detection cheap enough for terminal output.

Multi-line contexts (a table's rows, a YAML or JSON block, a PEM body) are a small state machine;
its state at each line start is recorded so the streaming masker can resume mid-document.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import NamedTuple

from masking.detectors import (
    ADDRESS,
    AWS_SECRET_KEY,
    CREDIT_CARD,
    DATE_OF_BIRTH,
    K8S_SECRET,
    MEDICAL_RECORD_NUMBER,
    PASSWORD,
    PERSON,
    PHONE_NUMBER,
    PRIVATE_KEY,
    SECRET,
    US_NPI,
    US_SSN,
    Span,
    card_ok,
    digits_of,
    has,
    is_placeholder,
    npi_ok,
    ssn_ok,
)

# How a key may be preceded and still count: letters (camelCase or run together: PGPASSWORD,
# clientSecret), or a "_", "-", "." compound (db_password, patient.first_name).
AFTER_LETTERS = 1
AFTER_JOINER = 2
_BOTH = AFTER_LETTERS | AFTER_JOINER
_DATA_BLOCK = "data"  # pseudo-entities for the Kubernetes Secret blocks
_STRING_DATA_BLOCK = "stringdata"

_KEYWORDS: tuple[tuple[str, str, int], ...] = (
    ("password", PASSWORD, _BOTH),
    ("passwd", PASSWORD, _BOTH),
    ("pwd", PASSWORD, AFTER_JOINER),
    ("pass", PASSWORD, AFTER_JOINER),
    ("passphrase", PASSWORD, _BOTH),
    ("passcode", PASSWORD, _BOTH),
    ("secret", SECRET, _BOTH),
    ("token", SECRET, _BOTH),
    ("api_key", SECRET, AFTER_JOINER),
    ("apikey", SECRET, _BOTH),
    ("access_key", SECRET, AFTER_JOINER),
    ("private_key", SECRET, AFTER_JOINER),
    ("secret_key", SECRET, AFTER_JOINER),
    ("signing_key", SECRET, AFTER_JOINER),
    ("encryption_key", SECRET, AFTER_JOINER),
    ("master_key", SECRET, AFTER_JOINER),
    ("authorization", SECRET, AFTER_JOINER),
    ("credential", SECRET, AFTER_JOINER),
    ("credentials", SECRET, AFTER_JOINER),
    ("cookie", SECRET, AFTER_JOINER),
    ("auth", SECRET, 0),
    ("aws_secret_access_key", AWS_SECRET_KEY, AFTER_JOINER),
    ("secret_access_key", AWS_SECRET_KEY, _BOTH),
    ("aws_secret_key", AWS_SECRET_KEY, AFTER_JOINER),
    ("first_name", PERSON, AFTER_JOINER),
    ("firstname", PERSON, _BOTH),
    ("last_name", PERSON, AFTER_JOINER),
    ("lastname", PERSON, _BOTH),
    ("full_name", PERSON, AFTER_JOINER),
    ("fullname", PERSON, _BOTH),
    ("given_name", PERSON, AFTER_JOINER),
    ("givenname", PERSON, _BOTH),
    ("family_name", PERSON, AFTER_JOINER),
    ("familyname", PERSON, _BOTH),
    ("middle_name", PERSON, AFTER_JOINER),
    ("surname", PERSON, _BOTH),
    ("patient_name", PERSON, AFTER_JOINER),
    ("customer_name", PERSON, AFTER_JOINER),
    ("contact_name", PERSON, AFTER_JOINER),
    ("cardholder_name", PERSON, AFTER_JOINER),
    ("cardholder", PERSON, AFTER_JOINER),
    ("person_name", PERSON, AFTER_JOINER),
    ("employee_name", PERSON, AFTER_JOINER),
    ("physician", PERSON, AFTER_JOINER),
    ("given", PERSON, 0),
    ("family", PERSON, 0),
    ("dob", DATE_OF_BIRTH, AFTER_JOINER),
    ("date_of_birth", DATE_OF_BIRTH, AFTER_JOINER),
    ("dateofbirth", DATE_OF_BIRTH, _BOTH),
    ("birth_date", DATE_OF_BIRTH, AFTER_JOINER),
    ("birthdate", DATE_OF_BIRTH, _BOTH),
    ("birthday", DATE_OF_BIRTH, AFTER_JOINER),
    ("born", DATE_OF_BIRTH, 0),
    ("mrn", MEDICAL_RECORD_NUMBER, _BOTH),
    ("medical_record_number", MEDICAL_RECORD_NUMBER, AFTER_JOINER),
    ("medicalrecordnumber", MEDICAL_RECORD_NUMBER, _BOTH),
    ("medical_record_no", MEDICAL_RECORD_NUMBER, 0),
    ("medical_record", MEDICAL_RECORD_NUMBER, AFTER_JOINER),
    ("address", ADDRESS, AFTER_JOINER),
    ("street", ADDRESS, AFTER_JOINER),
    ("street_address", ADDRESS, AFTER_JOINER),
    ("streetaddress", ADDRESS, _BOTH),
    ("address_line1", ADDRESS, AFTER_JOINER),
    ("address_line2", ADDRESS, AFTER_JOINER),
    ("address_line_1", ADDRESS, AFTER_JOINER),
    ("address_line_2", ADDRESS, AFTER_JOINER),
    ("address1", ADDRESS, AFTER_JOINER),
    ("address2", ADDRESS, AFTER_JOINER),
    ("ssn", US_SSN, _BOTH),
    ("social_security_number", US_SSN, AFTER_JOINER),
    ("socialsecuritynumber", US_SSN, _BOTH),
    ("social_security_no", US_SSN, 0),
    ("phone", PHONE_NUMBER, _BOTH),
    ("phone_number", PHONE_NUMBER, AFTER_JOINER),
    ("phonenumber", PHONE_NUMBER, _BOTH),
    ("mobile", PHONE_NUMBER, AFTER_JOINER),
    ("mobile_number", PHONE_NUMBER, AFTER_JOINER),
    ("telephone", PHONE_NUMBER, AFTER_JOINER),
    ("tel", PHONE_NUMBER, 0),
    ("fax", PHONE_NUMBER, AFTER_JOINER),
    ("cell_phone", PHONE_NUMBER, AFTER_JOINER),
    ("npi", US_NPI, _BOTH),
    ("npi_number", US_NPI, AFTER_JOINER),
    ("national_provider_identifier", US_NPI, AFTER_JOINER),
    ("card_number", CREDIT_CARD, AFTER_JOINER),
    ("cardnumber", CREDIT_CARD, _BOTH),
    ("cc_number", CREDIT_CARD, AFTER_JOINER),
    ("credit_card", CREDIT_CARD, AFTER_JOINER),
    ("creditcard", CREDIT_CARD, _BOTH),
    ("pan", CREDIT_CARD, 0),
    ("data", _DATA_BLOCK, 0),
    ("stringdata", _STRING_DATA_BLOCK, 0),
)

# "ip_address" and friends are network addresses, not where a person lives.
_NOT_POSTAL = frozenset(
    b"ip mac email e remote local server bind listen wallet host peer proxy gateway broadcast network "
    b"public private node pod internal external cluster lb endpoint web url callback return from to reply "
    b"sender recipient src dst source destination target client hw ipv4 ipv6 inet link contract".split()
)
# Keys inside a contextual JSON block whose values are codes, not the person or place.
_STRUCTURAL_KEYS = frozenset(
    b"use type system code resourcetype id period start end rank extension url coding".split()
)


def _variants(key: str) -> set[str]:
    out = {key}
    if "_" in key:
        out.add(key.replace("_", "-"))
        out.add(key.replace("_", ""))
    return out


_KEY_INFO: dict[bytes, tuple[str, int]] = {}
for _key, _entity, _flags in _KEYWORDS:
    for _variant in _variants(_key):
        # A run-together variant (firstname) may itself follow letters (patientfirstname).
        _extra = AFTER_LETTERS if "_" in _key and "_" not in _variant and "-" not in _variant else 0
        _KEY_INFO.setdefault(_variant.encode(), (_entity, _flags | _extra))


# Every key name the contextual detection knows (`masking.prefilter` looks for them in one pass).
KEY_NAMES: tuple[bytes, ...] = tuple(_KEY_INFO)


def _trie_regex(words: list[bytes]) -> bytes:
    trie: dict[int, dict[int, object]] = {}
    for word in words:
        node: dict[int, object] = trie  # type: ignore[assignment]
        for ch in word:
            node = node.setdefault(ch, {})  # type: ignore[assignment]
        node[-1] = {}

    def emit(node: dict[int, object]) -> bytes:
        alts = [re.escape(bytes([ch])) + emit(child) for ch, child in sorted(node.items()) if ch >= 0]  # type: ignore[arg-type]
        if not alts:
            return b""
        body = alts[0] if len(alts) == 1 else b"(?:" + b"|".join(alts) + b")"
        if -1 in node:
            return b"(?:" + body + b")?"
        return body

    return emit(trie)  # type: ignore[arg-type]


# In the reversed text: a separator, blanks (psql pads column names), an optional quote, then a
# reversed key name. The separators "= : | , newline" are all written as "=" first (one translate):
# a literal first character is found by a tight loop in the regex engine, a character class is
# tested byte by byte (3x slower on terminal output). Tab is both a separator and a blank, so it
# keeps its own pattern, run only when the text has a tab. No key starts with a blank or a quote,
# so giving either back cannot help a match: possessive quantifiers spare the engine the retries.
_KEY_TAIL = rb"[ \t\r]{0,64}+[\"']?+(" + _trie_regex([k[::-1] for k in _KEY_INFO]) + rb")"
_REVERSED_KEYS = re.compile(rb"=" + _KEY_TAIL)
_REVERSED_KEYS_TAB = re.compile(rb"\t" + _KEY_TAIL)
_SEPARATORS_AS_EQUALS = bytes.maketrans(b":|,\n", b"====")
_PSQL_RULE = re.compile(rb"^[\s|+]*-[-+|:=\s]*$")
_HEADER_CELL = re.compile(rb"^[A-Za-z_?][A-Za-z0-9_ .()/#?-]{0,63}$")
_CSV_FIELD = re.compile(rb'(?:^|(?<=,))[ \t]*(?:"((?:[^"]|"")*)"|([^,\r\n]*))', re.MULTILINE)
_TSV_FIELD = re.compile(rb"(?:^|(?<=\t))([^\t\r\n]*)", re.MULTILINE)
_JSON_TOKEN = re.compile(rb'"(?:[^"\\\r\n]|\\.)*"?|[\[\]{}]|\n')
_SECRET_KIND = re.compile(rb"kind\"?'?\s*:\s*\"?'?secret(?:list)?\b")
_NEXT_KEY = re.compile(rb"\s[A-Za-z_][A-Za-z0-9_.-]*(?:=|:\s)|\s{2,}|\t|\s\|")
_AUTH_SCHEME = re.compile(rb"(?:bearer|basic|token|digest|negotiate|aws4-hmac-sha256)\s+", re.IGNORECASE)
_BASE64 = re.compile(rb"^[A-Za-z0-9+/]+={0,2}$")
_KEY_PREFIX = re.compile(rb"^\s*[A-Za-z0-9_.-]*$")
# FHIR identifiers: the system URL (or the v2 type code "MR") says what the sibling value is.
_IDENTIFIER_SYSTEM = re.compile(
    rb"\"system\"\s*:\s*\"[^\"]*?(?:(mrn|medical[-_]?record)|(us-npi|/npi)|(us-ssn))[^\"]*\"|\"code\"\s*:\s*\"(mr)\""
)
_IDENTIFIER_VALUE = re.compile(rb"\"value\"\s*:\s*\"([^\"\\\r\n]{1,64})\"")


_SPACED = frozenset({PERSON, ADDRESS, DATE_OF_BIRTH})


class KeyHit(NamedTuple):
    key_start: int
    key_end: int
    sep: int
    entity: str


@dataclass(frozen=True, slots=True)
class TableState:
    """Inside a delimited table whose header named sensitive columns."""

    delim: int  # ord of "|", "," or "\t"
    columns: tuple[str | None, ...]
    bordered: bool
    confirmed: bool  # a psql header waits for its "----+----" rule line


@dataclass(frozen=True, slots=True)
class YamlBlockState:
    """Inside the indented children of a YAML key (Secret data, an address mapping...)."""

    entity: str
    indent: int
    secret_mode: int  # 0: contextual entity, 1: Secret data (base64 values), 2: stringData
    scalar_indent: int  # >= 0 while inside a "key: |" block scalar of a child at that indent


@dataclass(frozen=True, slots=True)
class JsonBlockState:
    """Inside a JSON object or array that a contextual key opened."""

    entity: str
    depth: int
    secret_mode: int


@dataclass(frozen=True, slots=True)
class PemState:
    """Inside the body of a PEM private key whose END line has not been seen yet."""


State = TableState | YamlBlockState | JsonBlockState | PemState | None
Checkpoints = list[tuple[int, State]]


def entity_for_key(name: str | bytes) -> str | None:
    """The contextual entity a key, column or header names (``patient_first_name`` → PERSON)."""
    raw = name.encode() if isinstance(name, str) else name
    key = raw.strip().strip(b"\"'").lower()
    if not key:
        return None
    n = len(key)
    # Try the longest keyword that ends the name, as the reversed scan does.
    for i in range(n):
        info = _KEY_INFO.get(key[i:])
        if info is None:
            continue
        entity, flags = info
        if _boundary_ok(key, i, flags, entity):
            return None if entity in (_DATA_BLOCK, _STRING_DATA_BLOCK) else entity
    return None


def _boundary_ok(text: bytes, start: int, flags: int, entity: str) -> bool:
    if start == 0:
        return True
    before = text[start - 1]
    if before in b"_-.":
        if not flags & AFTER_JOINER:
            return False
        if entity == ADDRESS:
            word_start = start - 1
            while word_start > 0 and (chr(text[word_start - 1]).isalnum()):
                word_start -= 1
            return text[word_start : start - 1].lower() not in _NOT_POSTAL
        return True
    if chr(before).isalnum():
        return bool(flags & AFTER_LETTERS)
    return True


def _csv_cells(data: bytes, ls: int, le: int, line: bytes) -> list[tuple[int, int]]:
    """Field spans of the CSV row data[ls:le] (``line``), leading blanks excluded."""
    if has(line, b'"') or has(line, b"\r"):
        return [
            (m.start(1), m.end(1)) if m.group(1) is not None else (m.start(2), m.end(2))
            for m in _CSV_FIELD.finditer(data, ls, le)
        ]
    # Without quotes (or a stray CR, which ends a field) a field runs to the next comma, which
    # ``split`` finds in C; this is what ``_CSV_FIELD`` matches on such a row.
    cells = []
    start = ls
    for field in line.split(b","):
        end = start + len(field)
        cells.append((end - len(field.lstrip(b" \t")), end))
        start = end + 1
    return cells


def _line_bounds(data: bytes, pos: int) -> tuple[int, int, bool]:
    """Start of the line holding ``pos``, end of its content (before CR/LF), whether it is complete."""
    start = data.rfind(b"\n", 0, pos) + 1
    nl = data.find(b"\n", pos)
    complete = nl >= 0
    end = nl if complete else len(data)
    if end > start and data[end - 1] == 0x0D:
        end -= 1
    return start, end, complete


def _strip(data: bytes, s: int, e: int) -> tuple[int, int]:
    while s < e and data[s] in b" \t":
        s += 1
    while e > s and data[e - 1] in b" \t\r":
        e -= 1
    return s, e


def value_ok(entity: str, value: bytes) -> bool:
    """Whether a value found by context is plausibly that entity (and not a placeholder)."""
    if is_placeholder(value):
        return False
    if entity == PERSON:
        return len(value) <= 120 and (not value.isascii() or any(chr(c).isalpha() for c in value))
    if entity in (DATE_OF_BIRTH, MEDICAL_RECORD_NUMBER):
        return len(value) <= 40 and any(0x30 <= c <= 0x39 for c in value)
    if entity == US_SSN:
        return _only(value, b"0123456789- .") and ssn_ok(digits_of(value))
    if entity == PHONE_NUMBER:
        return _only(value, b"0123456789-+ ().") and 7 <= len(digits_of(value)) <= 15
    if entity == US_NPI:
        return _only(value, b"0123456789- ") and npi_ok(digits_of(value))
    if entity == CREDIT_CARD:
        return _only(value, b"0123456789- ") and card_ok(digits_of(value), in_context=True)
    return True


def _only(value: bytes, allowed: bytes) -> bool:
    return not value.translate(None, allowed)


@dataclass(slots=True)
class _Pass:
    """One scan over one text: the inputs and where results go."""

    data: bytes
    lower: bytes
    out: list[Span]
    checkpoints: Checkpoints | None
    holds: list[int] | None
    secret_doc: bool | None = None  # does the text say "kind: Secret"? computed on first need


def _reversed_key_matches(rev: bytearray) -> list[re.Match[bytes]]:
    """Key matches in the reversed text, as one regex over all six separators would find them."""
    matches = list(_REVERSED_KEYS.finditer(rev))
    if rev.find(b"\t") == -1:
        return matches
    # A tab match inside another match is that match's run of blanks (it reaches the same key);
    # the combined regex would have resumed after the key and never tried it.
    merged: list[re.Match[bytes]] = []
    taken_to = 0
    for m in sorted(matches + list(_REVERSED_KEYS_TAB.finditer(rev)), key=lambda m: m.start()):
        if m.start() >= taken_to:
            merged.append(m)
            taken_to = m.end()
    return merged


class ContextScanner:
    """Key-, header- and block-driven detection. Stateless; one instance is shared."""

    def hits(self, lower: bytes) -> list[KeyHit]:
        n = len(lower)
        marked = lower.translate(_SEPARATORS_AS_EQUALS)
        if not has(marked, b"=") and not has(marked, b"\t"):
            return []  # no separator, no key (short field values usually have none)
        rev = bytearray(marked)
        rev.reverse()  # in place: faster than the copy a [::-1] slice makes byte by byte
        found: list[KeyHit] = []
        for m in _reversed_key_matches(rev):
            key_end = n - m.start(1)
            key_start = n - m.end(1)
            key = lower[key_start:key_end]
            info = _KEY_INFO.get(key)
            if info is None:
                continue
            entity, flags = info
            if not _boundary_ok(lower, key_start, flags, entity):
                # The longest key failed its boundary; a shorter keyword ending the same name may
                # pass (e.g. "x_api_key" → "api_key"), so try the suffixes.
                alt = self._shorter(lower, key_start, key_end)
                if alt is None:
                    continue
                key_start, entity = alt
            found.append(KeyHit(key_start, key_end, n - 1 - m.start(), entity))
        found.reverse()
        return found

    @staticmethod
    def _shorter(lower: bytes, key_start: int, key_end: int) -> tuple[int, str] | None:
        for i in range(key_start + 1, key_end):
            info = _KEY_INFO.get(lower[i:key_end])
            if info is not None and _boundary_ok(lower, i, info[1], info[0]):
                return i, info[0]
        return None

    def scan(
        self,
        data: bytes,
        lower: bytes,
        state: State,
        out: list[Span],
        *,
        checkpoints: Checkpoints | None = None,
        pem_open: int = -1,
        holds: list[int] | None = None,
        keys: bool = True,
    ) -> State:
        """Append contextual spans to ``out``; returns the state at the end of ``data``.

        ``checkpoints`` receives (line start, state) wherever the state changes or a multi-line
        context advances a line, so a caller can resume from any line start. ``holds`` receives
        offsets from which the text cannot be judged until more of it arrives (a JSON string at
        the very end: key or value?). ``keys``: False when no key can be in ``data``
        (`masking.prefilter`), which spares the search for them.
        """
        hits = self.hits(lower) if keys else []
        if pem_open >= 0:
            hits.append(KeyHit(pem_open, pem_open, pem_open, PRIVATE_KEY))
            hits.sort()
        if not hits and state is None:
            return None
        pos = 0
        hi = 0
        p = _Pass(data, lower, out, checkpoints, holds)
        while True:
            if state is not None:
                state, pos = self._advance(p, state, pos)
                if state is not None:
                    if checkpoints is not None:
                        checkpoints.append((len(data), state))
                    return state
                if checkpoints is not None:
                    checkpoints.append((pos, None))
                continue
            while hi < len(hits) and hits[hi].key_start < pos:
                hi += 1
            if hi >= len(hits):
                return None
            hit = hits[hi]
            hi += 1
            if hit.entity == PRIVATE_KEY:
                # The content scanner masked the open PEM body; remember that we are inside it.
                state, pos = PemState(), hit.sep
                continue
            new_state, resume = self._handle(p, hit)
            pos = max(pos, resume)
            if new_state is not None:
                state = new_state
                if checkpoints is not None:
                    checkpoints.append((pos, state))
        return None  # pragma: no cover - loop exits by return

    # --- single hits --------------------------------------------------------------------------

    def _handle(self, p: _Pass, hit: KeyHit) -> tuple[State, int]:
        data, out = p.data, p.out
        sep_char = data[hit.sep]
        if sep_char in b"=:":
            return self._key_value(p, hit)
        if sep_char == 0x7C:  # "|"
            line_start, line_end, _ = _line_bounds(data, hit.key_start)
            if data.count(b"|", line_start, line_end) == 1 and _KEY_PREFIX.match(
                data[line_start : hit.key_start]
            ):
                nxt = self._next_line(data, line_end)
                if nxt is None or not _PSQL_RULE.match(nxt):
                    # psql expanded display: "first_name | Ada"
                    s, e = _strip(data, hit.sep + 1, line_end)
                    self._emit(hit.entity, data, s, e, out)
                    return None, line_end
        return self._header(p, hit)

    @staticmethod
    def _next_line(data: bytes, line_end: int) -> bytes | None:
        nl = data.find(b"\n", line_end)
        if nl < 0:
            return None
        nxt_end = data.find(b"\n", nl + 1)
        if nxt_end < 0:
            return None  # the next line is not complete yet
        return data[nl + 1 : nxt_end].rstrip(b"\r")

    def _key_value(self, p: _Pass, hit: KeyHit) -> tuple[State, int]:
        data, out = p.data, p.out
        n = len(data)
        sep = hit.sep
        if data[sep] == 0x3D and sep + 1 < n and data[sep + 1] == 0x3D:
            return None, sep + 2  # "==" is a comparison, not an assignment
        j = sep + 1
        while j < n and data[j] in b" \t":
            j += 1
        entity = hit.entity
        block = entity in (_DATA_BLOCK, _STRING_DATA_BLOCK)
        if j >= n or data[j] in b"\r\n":
            if data[sep] != 0x3A or j >= n:
                return None, j
            if entity in (PASSWORD, SECRET, AWS_SECRET_KEY, US_SSN, PHONE_NUMBER, US_NPI, CREDIT_CARD):
                return None, j
            # YAML: the value is the indented block below the key.
            line_start = data.rfind(b"\n", 0, hit.key_start) + 1
            indent = 0
            while line_start + indent < hit.key_start and data[line_start + indent] in b" -":
                indent += 1
            nl = data.find(b"\n", j)
            mode = 0
            if block:
                mode, entity = (2 if entity == _STRING_DATA_BLOCK else 1), K8S_SECRET
            return YamlBlockState(entity, indent, mode, -1), nl + 1
        c = data[j]
        if c in b"{[" and data[sep] == 0x3A:
            mode = 0
            if block:
                if c != 0x7B:
                    return None, j
                mode, entity = (2 if entity == _STRING_DATA_BLOCK else 1), K8S_SECRET
            return JsonBlockState(entity, 0, mode), j
        if block:
            return None, j
        if c in b"\"'":
            close = j + 1
            while True:
                close = data.find(bytes([c]), close)
                if close < 0 or data[close - 1] != 0x5C:
                    break
                close += 1
            _, line_end, _ = _line_bounds(data, j)
            if close < 0 or close > line_end:
                close = line_end
            self._emit(entity, data, j + 1, close, out)
            return None, close
        _, line_end, _ = _line_bounds(data, j)
        if data[sep] == 0x3D and (entity not in _SPACED or not self._starts_line(data, hit.key_start)):
            # "key=value" (logfmt, URLs, command flags, env): the value is one token, except that
            # `env` prints names and addresses unquoted, spaces and all, one per line.
            e = j
            while e < line_end and data[e] not in b" \t,;&)}]\"'":
                e += 1
        else:
            # "key: value" (YAML, HTTP headers, labels): the rest of the line, up to another key.
            m = _NEXT_KEY.search(data, j, line_end)
            e = m.start() if m else line_end
            if entity == SECRET:
                auth = _AUTH_SCHEME.match(data, j, e)
                if auth:
                    j = auth.end()  # keep "Bearer" visible: the scheme says what kind of secret it was
            while e > j and data[e - 1] in b" \t,;\r":
                e -= 1
            if (
                e > j
                and data[e - 1] in b"}]"
                and data.find(data[e - 1 : e].replace(b"}", b"{").replace(b"]", b"["), j, e) < 0
            ):
                e -= 1  # the closing bracket of an enclosing JSON/flow value
            hashpos = data.find(b" #", j, e)
            if hashpos >= 0:
                e = hashpos
        self._emit(entity, data, j, e, out)
        return None, e

    @staticmethod
    def _starts_line(data: bytes, key_start: int) -> bool:
        line_start = data.rfind(b"\n", 0, key_start) + 1
        prefix = data[line_start:key_start].strip()
        return prefix in (b"", b"export", b"set", b"declare -x")

    @staticmethod
    def _emit(entity: str, data: bytes, s: int, e: int, out: list[Span]) -> None:
        s, e = _strip(data, s, e)
        if e > s and value_ok(entity, data[s:e]):
            out.append(Span(s, e, entity))

    # --- tables -------------------------------------------------------------------------------

    def _header(self, p: _Pass, hit: KeyHit) -> tuple[State, int]:
        data = p.data
        line_start, line_end, complete = _line_bounds(data, hit.key_start)
        not_header = None, hit.sep + 1
        if not complete:
            return not_header  # a header is only known once its line is complete
        line = data[line_start:line_end]
        next_start = data.find(b"\n", line_end) + 1
        delim = 0
        for candidate in b"|\t,":
            if candidate in line:
                delim = candidate
                break
        if not delim:
            return not_header
        cells = self._split_header(line, delim)
        if cells is None or len(cells) < 2:
            return not_header
        columns = tuple(entity_for_key(cell) for cell in cells)
        if not any(columns):
            return not_header
        bordered = line.strip().startswith(b"|") and delim == 0x7C
        return TableState(delim, columns, bordered, delim != 0x7C), next_start

    @staticmethod
    def _split_header(line: bytes, delim: int) -> list[bytes] | None:
        parts = line.split(bytes([delim]))
        stripped = line.strip()
        if delim == 0x7C and stripped.startswith(b"|") and stripped.endswith(b"|"):
            parts = parts[1:-1]
        cells = [p.strip().strip(b"\"'").strip() for p in parts]
        if not all(_HEADER_CELL.match(c) for c in cells):
            return None
        return cells

    def _table_line(self, p: _Pass, st: TableState, ls: int, le: int, *, complete: bool) -> bool:
        """Mask one row. False when the line is not a row of this table (the table has ended)."""
        data, out = p.data, p.out
        line = data[ls:le]
        stripped = line.strip()
        if not st.confirmed:
            return True  # caller handles the rule line
        if not stripped:
            return not complete
        if st.delim == 0x7C:
            if _PSQL_RULE.match(line) and has(line, b"-"):
                return True
            if stripped.startswith(b"(") and stripped.endswith((b"rows)", b"row)")):
                return False
            cells = self._split_cells_pipe(data, ls, le, st.bordered)
        elif st.delim == 0x2C:
            cells = _csv_cells(data, ls, le, line)
        else:
            cells = [(m.start(1), m.end(1)) for m in _TSV_FIELD.finditer(data, ls, le)]
        if len(cells) != len(st.columns) and (complete or len(cells) > len(st.columns)):
            return False
        for (s, e), entity in zip(cells, st.columns, strict=False):
            if entity is not None:
                self._emit(entity, data, s, e, out)
        return True

    @staticmethod
    def _split_cells_pipe(data: bytes, ls: int, le: int, bordered: bool) -> list[tuple[int, int]]:
        cells: list[tuple[int, int]] = []
        start = ls
        while True:
            bar = data.find(b"|", start, le)
            if bar < 0:
                cells.append((start, le))
                break
            cells.append((start, bar))
            start = bar + 1
        if bordered and len(cells) >= 2:
            cells = cells[1:-1] if data[cells[-1][0] : cells[-1][1]].strip() == b"" else cells[1:]
        return cells

    # --- multi-line states --------------------------------------------------------------------

    def _advance(self, p: _Pass, state: State, pos: int) -> tuple[State, int]:
        """Process lines from ``pos`` under ``state``; return (None, resume) when it ends, or
        (state, len(data)) when the text ends first."""
        data, out, checkpoints, holds = p.data, p.out, p.checkpoints, p.holds
        n = len(data)
        if isinstance(state, JsonBlockState):
            return self._json_block(p, state, pos)
        while pos < n:
            ls = pos
            _, le, complete = _line_bounds(data, ls)
            next_pos = (data.find(b"\n", le) + 1) if complete else n
            if checkpoints is not None:
                checkpoints.append((ls, state))
            if isinstance(state, TableState):
                if not state.confirmed:
                    if not complete:
                        return state, n
                    if _PSQL_RULE.match(data[ls:le]) and data.find(b"-", ls, le) != -1:
                        state = TableState(state.delim, state.columns, state.bordered, True)
                        pos = next_pos
                        continue
                    return None, ls
                if not self._table_line(p, state, ls, le, complete=complete):
                    return None, ls
                if not complete and holds is not None:
                    holds.append(ls)  # a partial row: a quoted CSV field may still hide a delimiter
            elif isinstance(state, YamlBlockState):
                state, ended = self._yaml_line(p, state, ls, le)
                if ended:
                    return None, ls
            elif isinstance(state, PemState):
                line = data[ls:le]
                if line.startswith(b"-----END"):
                    return None, ls
                s, e = _strip(data, ls, le)
                if e > s:
                    out.append(Span(s, e, PRIVATE_KEY))
            pos = next_pos
        return state, n

    def _yaml_line(self, p: _Pass, st: YamlBlockState, ls: int, le: int) -> tuple[YamlBlockState, bool]:
        data, lower, out = p.data, p.lower, p.out
        line = data[ls:le]
        content = line.lstrip(b" ")
        if not content:
            return st, False  # blank or not yet known: indentation decides nothing
        indent = len(line) - len(content)
        if indent <= st.indent and not (
            content.startswith(b"- ") and indent == st.indent and st.secret_mode == 0
        ):
            return st, True
        if st.scalar_indent >= 0:
            if indent > st.scalar_indent:
                s, e = _strip(data, ls + indent, le)
                if e > s:
                    out.append(Span(s, e, st.entity))
                return st, False
            st = YamlBlockState(st.entity, st.indent, st.secret_mode, -1)
        vs = ls + indent
        if content.startswith(b"- "):
            vs += 2
        colon = data.find(b": ", vs, le)
        if colon < 0 and data[vs:le].rstrip().endswith(b":"):
            return st, False  # a nested mapping key; its children come next
        if colon >= 0:
            key = lower[vs:colon].strip(b"\"' ")
            s, e = _strip(data, colon + 2, le)
            if st.secret_mode == 0 and key in _STRUCTURAL_KEYS:
                return st, False
        else:
            s, e = _strip(data, vs, le)
        value = data[s:e]
        if value in (b"|", b">", b"|-", b">-", b"|+", b">+"):
            return YamlBlockState(st.entity, st.indent, st.secret_mode, indent), False
        if len(value) >= 2 and value[0] in b"\"'" and value[-1] == value[0]:
            s, e = s + 1, e - 1
            value = data[s:e]
        if e <= s:
            return st, False
        if st.secret_mode == 1 and not self._secret_value(p, value):
            return st, False
        if st.secret_mode or value_ok(st.entity, value):
            out.append(Span(s, e, st.entity))
        return st, False

    @staticmethod
    def _secret_value(p: _Pass, value: bytes) -> bool:
        """A Secret's ``data`` value. When the text shows ``kind: Secret`` every value counts;
        otherwise (kubectl prints ``data`` before ``kind``) a base64 shape decides, which spares a
        ConfigMap's plain settings."""
        if p.secret_doc is None:
            p.secret_doc = _SECRET_KIND.search(p.lower) is not None
        if p.secret_doc:
            return True
        return (
            len(value) % 4 == 0
            and (len(value) >= 8 or value.endswith(b"="))
            and _BASE64.match(value) is not None
        )

    def _json_block(self, p: _Pass, st: JsonBlockState, pos: int) -> tuple[State, int]:
        data, lower, out, checkpoints, holds = p.data, p.lower, p.out, p.checkpoints, p.holds
        depth = st.depth
        n = len(data)
        skip_value = False
        for m in _JSON_TOKEN.finditer(data, pos):
            tok = m.group()
            first = tok[0]
            if first == 0x22:  # '"'
                e = m.end()
                while e < n and data[e] in b" \t\r\n":
                    e += 1
                if e == n and holds is not None:
                    holds.append(m.start())  # a key if a ":" follows; that is in the next chunk
                if e < n and data[e] == 0x3A:
                    skip_value = (
                        st.secret_mode == 0 and lower[m.start() + 1 : m.end() - 1] in _STRUCTURAL_KEYS
                    )
                    continue
                if depth == 0:
                    continue
                closed = len(tok) >= 2 and tok.endswith(b'"') and not tok.endswith(b'\\"')
                s, e2 = m.start() + 1, (m.end() - 1 if closed else m.end())
                value = data[s:e2]
                if not skip_value and e2 > s:
                    if st.secret_mode == 1:
                        if self._secret_value(p, value):
                            out.append(Span(s, e2, st.entity))
                    elif st.secret_mode == 2 or value_ok(st.entity, value):
                        out.append(Span(s, e2, st.entity))
                skip_value = False
            elif first in b"[{":
                depth += 1
            elif first in b"]}":
                depth -= 1
                skip_value = False
                if depth <= 0:
                    return None, m.end()
            elif checkpoints is not None:  # newline: the block goes on at the next line
                checkpoints.append((m.end(), JsonBlockState(st.entity, depth, st.secret_mode)))
        return JsonBlockState(st.entity, depth, st.secret_mode), n


def identifier_values(data: bytes, lower: bytes, out: list[Span]) -> None:
    """FHIR identifiers whose system or type code says MRN, NPI or SSN: mask the sibling
    ``value``, which carries no key of its own that would name it."""
    for m in _IDENTIFIER_SYSTEM.finditer(lower):
        entity = MEDICAL_RECORD_NUMBER if (m.group(1) or m.group(4)) else US_NPI if m.group(2) else US_SSN
        v = _IDENTIFIER_VALUE.search(data, m.end(), min(len(data), m.end() + 300))
        # The value must be in the same object: no other object opens in between.
        if v is None or data.find(b"{", m.end(), v.start()) != -1:
            continue
        if entity == MEDICAL_RECORD_NUMBER or value_ok(entity, v.group(1)):
            out.append(Span(v.start(1), v.end(1), entity))
