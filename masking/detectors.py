"""Content detectors: values recognised by their own shape, checked by checksum where one exists.

Everything works on bytes. Terminal output arrives as bytes and the bytes regex engine is markedly
faster than the str one; text fields are encoded once by the engine. Speed comes from three habits:

1. Every regex starts with a literal (``000``, ``@``, ``eyJ``, ``-----BEGIN ``...) so that the
   regex engine skips through the text in C and only tries a match where the literal occurs. A
   leading character class or lookbehind would make it try at every position (measured 5-10x
   slower on log output).
2. Digit patterns run on a *shape* of the text (digits → ``0``, letters → ``a``, made by one
   ``bytes.translate``), which turns "four digits" into the literal ``0000``.
3. Regexes only propose candidates; checksums, ranges and context are checked in Python, once
   per candidate, and candidates are rare.

Contextual entities (a key, header or label names the value) live in ``masking.context``.
"""

from __future__ import annotations

import hmac
import ipaddress
import re
import string
import unicodedata
from hashlib import sha256
from typing import NamedTuple

from masking.prefilter import (
    GATE_ALL,
    GATE_AWS_KEY,
    GATE_EMAIL,
    GATE_GITHUB,
    GATE_IBAN,
    GATE_IPV4,
    GATE_JWT,
    GATE_NPI_LABEL,
    GATE_PEM,
    GATE_PLUS_PHONE,
    GATE_SLACK,
    GATE_SQL_PASSWORD,
    GATE_STRIPE,
    GATE_URL_PASSWORD,
)

# Entity names: Presidio's where Presidio has one, descriptive upper-case names otherwise.
EMAIL_ADDRESS = "EMAIL_ADDRESS"
PHONE_NUMBER = "PHONE_NUMBER"
CREDIT_CARD = "CREDIT_CARD"
US_SSN = "US_SSN"
IBAN_CODE = "IBAN_CODE"
IP_ADDRESS = "IP_ADDRESS"
US_NPI = "US_NPI"
AWS_ACCESS_KEY = "AWS_ACCESS_KEY"
AWS_SECRET_KEY = "AWS_SECRET_KEY"  # noqa: S105 - an entity name
GITHUB_TOKEN = "GITHUB_TOKEN"  # noqa: S105 - an entity name
SLACK_TOKEN = "SLACK_TOKEN"  # noqa: S105 - an entity name
STRIPE_KEY = "STRIPE_KEY"
JWT = "JWT"
PRIVATE_KEY = "PRIVATE_KEY"
PASSWORD = "PASSWORD"  # noqa: S105 - an entity name
SECRET = "SECRET"  # noqa: S105 - an entity name
K8S_SECRET = "K8S_SECRET"  # noqa: S105 - an entity name
PERSON = "PERSON"
DATE_OF_BIRTH = "DATE_OF_BIRTH"
MEDICAL_RECORD_NUMBER = "MEDICAL_RECORD_NUMBER"
ADDRESS = "ADDRESS"

STRUCTURED_ENTITIES = frozenset(
    {EMAIL_ADDRESS, PHONE_NUMBER, CREDIT_CARD, US_SSN, IBAN_CODE, IP_ADDRESS, US_NPI}
)
SECRET_ENTITIES = frozenset(
    {
        AWS_ACCESS_KEY,
        AWS_SECRET_KEY,
        GITHUB_TOKEN,
        SLACK_TOKEN,
        STRIPE_KEY,
        JWT,
        PRIVATE_KEY,
        PASSWORD,
        SECRET,
        K8S_SECRET,
    }
)
CONTEXTUAL_ENTITIES = frozenset({PERSON, DATE_OF_BIRTH, MEDICAL_RECORD_NUMBER, ADDRESS})
ALL_ENTITIES = STRUCTURED_ENTITIES | SECRET_ENTITIES | CONTEXTUAL_ENTITIES


class Span(NamedTuple):
    """A detected value: byte offsets [start, end) and its entity type."""

    start: int
    end: int
    entity: str


# --- shape -------------------------------------------------------------------------------------


def _shape_table() -> bytes:
    table = bytearray(range(256))
    for c in b"0123456789":
        table[c] = ord("0")
    for c in b"ABCDEFGHIJKLMNOPQRSTUVWXYZ":
        table[c] = ord("A")  # upper case kept apart: IBANs start with two capitals
    for c in b"abcdefghijklmnopqrstuvwxyz_":
        table[c] = ord("a")
    for c in range(0x80, 0x100):
        table[c] = ord("a")  # UTF-8 bytes of non-ASCII letters belong to words too
    return bytes(table)


SHAPE = _shape_table()
# Digits "0", word characters "a", everything else a space: token boundaries become a literal.
FLAT = bytes(c if c in b"0aA" else 0x20 for c in SHAPE)
_NON_DIGITS = bytes(c for c in range(256) if not 0x30 <= c <= 0x39)
# Bytes that are not alphanumeric when read as Latin-1 (what ``chr(byte).isalnum()`` says).
_NOT_ALNUM = bytes(c for c in range(256) if not chr(c).isalnum())


def has(data: bytes, part: bytes) -> bool:
    """``part in data``, at half the cost: bytes' ``in`` first tries ``part`` as an int and
    formats a TypeError before it searches, which in a short text costs more than the search
    (the detectors make a dozen such tests per text)."""
    return data.find(part) != -1


def digits_of(value: bytes) -> bytes:
    return value.translate(None, _NON_DIGITS)


# --- validators --------------------------------------------------------------------------------

_DOUBLED = (0, 2, 4, 6, 8, 1, 3, 5, 7, 9)


def luhn_ok(digits: bytes) -> bool:
    total = 0
    for i, c in enumerate(reversed(digits)):
        d = c - 48
        total += _DOUBLED[d] if i & 1 else d
    return total % 10 == 0


def card_ok(digits: bytes, *, in_context: bool = False) -> bool:
    """13-19 digits, Luhn, and (outside a card context) an issuer prefix that card networks use.

    The prefix check is what keeps 13-digit epoch-millisecond timestamps (starting with 1) and
    random order numbers from being masked as cards when they happen to pass Luhn (1 in 10 do).
    """
    if not 13 <= len(digits) <= 19:
        return False
    if not in_context:
        first = digits[0]
        if first == 0x32:  # 2: Mastercard 2221-2720, Mir 2200-2204
            head = int(digits[:4])
            if not (2221 <= head <= 2720 or 2200 <= head <= 2204):
                return False
        elif first not in b"3456":
            return False
    return luhn_ok(digits)


def ssn_ok(digits: bytes) -> bool:
    """US SSN ranges: area not 000, 666 or 9xx; group not 00; serial not 0000."""
    if len(digits) != 9:
        return False
    area = digits[:3]
    if area in (b"000", b"666") or area[0] == 0x39:
        return False
    return digits[3:5] != b"00" and digits[5:] != b"0000"


def npi_ok(digits: bytes) -> bool:
    """10 digits starting with 1 or 2; Luhn over the number prefixed with 80840 (CMS spec)."""
    return len(digits) == 10 and digits[0] in b"12" and luhn_ok(b"80840" + digits)


# ISO 13616 lengths, SWIFT registry.
IBAN_LENGTHS: dict[bytes, int] = {
    b"AD": 24,
    b"AE": 23,
    b"AL": 28,
    b"AT": 20,
    b"AZ": 28,
    b"BA": 20,
    b"BE": 16,
    b"BG": 22,
    b"BH": 22,
    b"BI": 27,
    b"BR": 29,
    b"BY": 28,
    b"CH": 21,
    b"CR": 22,
    b"CY": 28,
    b"CZ": 24,
    b"DE": 22,
    b"DJ": 27,
    b"DK": 18,
    b"DO": 28,
    b"EE": 20,
    b"EG": 29,
    b"ES": 24,
    b"FI": 18,
    b"FK": 18,
    b"FO": 18,
    b"FR": 27,
    b"GB": 22,
    b"GE": 22,
    b"GI": 23,
    b"GL": 18,
    b"GR": 27,
    b"GT": 28,
    b"HR": 21,
    b"HU": 28,
    b"IE": 22,
    b"IL": 23,
    b"IQ": 23,
    b"IS": 26,
    b"IT": 27,
    b"JO": 30,
    b"KW": 30,
    b"KZ": 20,
    b"LB": 28,
    b"LC": 32,
    b"LI": 21,
    b"LT": 20,
    b"LU": 20,
    b"LV": 21,
    b"LY": 25,
    b"MC": 27,
    b"MD": 24,
    b"ME": 22,
    b"MK": 19,
    b"MN": 20,
    b"MR": 27,
    b"MT": 31,
    b"MU": 30,
    b"NI": 28,
    b"NL": 18,
    b"NO": 15,
    b"OM": 23,
    b"PK": 24,
    b"PL": 28,
    b"PS": 29,
    b"PT": 25,
    b"QA": 29,
    b"RO": 24,
    b"RS": 22,
    b"RU": 33,
    b"SA": 24,
    b"SC": 31,
    b"SD": 18,
    b"SE": 24,
    b"SI": 19,
    b"SK": 24,
    b"SM": 27,
    b"SO": 23,
    b"ST": 25,
    b"SV": 28,
    b"TL": 23,
    b"TN": 24,
    b"TR": 26,
    b"UA": 29,
    b"VA": 22,
    b"VG": 24,
    b"XK": 20,
    b"YE": 30,
}


def iban_ok(compact: bytes) -> bool:
    """Country length and the ISO 7064 mod-97 check over the rearranged, letter-expanded number."""
    if IBAN_LENGTHS.get(compact[:2]) != len(compact) or not compact[2:4].isdigit():
        return False
    rearranged = compact[4:] + compact[:4]
    expanded = "".join(str(c - 55) if c >= 0x41 else chr(c) for c in rearranged)
    return int(expanded) % 97 == 1


def ipv4_ok(candidate: bytes) -> bool:
    """Four decimal octets 0-255 without leading zeros; 0.0.0.0 names no host."""
    return _IPV4.fullmatch(candidate) is not None and candidate != b"0.0.0.0"


def ipv6_ok(candidate: bytes) -> bool:
    try:
        address = ipaddress.IPv6Address(candidate.decode("ascii"))
    except ValueError:
        return False
    return not (address.is_loopback or address.is_unspecified)


def us_phone_ok(digits: bytes) -> bool:
    """NANP: area code and exchange both start with 2-9 (an optional leading 1 is the country code)."""
    if len(digits) == 11 and digits[0] == 0x31:
        digits = digits[1:]
    return len(digits) == 10 and digits[0] >= 0x32 and digits[3] >= 0x32


# --- normalisation for blind indexes ------------------------------------------------------------

_WS = re.compile(r"\s+")
_DATE_FORMATS: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"^(\d{4})[-/.](\d{1,2})[-/.](\d{1,2})"), "ymd"),
    (re.compile(r"^(\d{1,2})[-/.](\d{1,2})[-/.](\d{4})$"), "mdy"),
)
_MONTHS = {
    m: i + 1
    for i, m in enumerate(
        ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
    )
}
_TEXT_DATE = re.compile(
    r"^(?:(\d{1,2})\s+([a-z]{3})[a-z]*\.?,?\s+(\d{4})|([a-z]{3})[a-z]*\.?\s+(\d{1,2}),?\s+(\d{4}))$"
)


def _normalise_date(text: str) -> str:
    low = text.strip().lower()
    for pattern, order in _DATE_FORMATS:
        m = pattern.match(low)
        if m:
            a, b, c = map(int, m.groups())
            y, mo, d = (a, b, c) if order == "ymd" else (c, a, b)
            return f"{y:04d}-{mo:02d}-{d:02d}"
    m = _TEXT_DATE.match(low)
    if m:
        if m.group(1):
            d, mon, y = int(m.group(1)), m.group(2), int(m.group(3))
        else:
            mon, d, y = m.group(4), int(m.group(5)), int(m.group(6))
        if mon in _MONTHS:
            return f"{y:04d}-{_MONTHS[mon]:02d}-{d:02d}"
    return _WS.sub(" ", low)


def normalise(entity: str, value: bytes) -> bytes:
    """The canonical form a value is blind-indexed under, so that a privacy officer who computes
    the index of "John.Doe@Example.com" or "4111-1111-1111-1111" finds every spelling of it."""
    if entity in (CREDIT_CARD, US_SSN, US_NPI):
        return digits_of(value)
    if entity == PHONE_NUMBER:
        digits = digits_of(value)
        if len(digits) == 10 and not value.lstrip().startswith(b"+"):
            return b"1" + digits  # NANP national form → E.164 digits
        return digits
    if entity == EMAIL_ADDRESS:
        return value.strip().lower()
    if entity == IBAN_CODE:
        return value.upper().replace(b" ", b"").replace(b"-", b"")
    if entity == IP_ADDRESS:
        if not has(value, b":"):
            return value.strip()  # IPv4 as detected: already canonical (no leading zeros)
        try:
            return str(ipaddress.ip_address(value.decode("ascii").strip())).encode()
        except (ValueError, UnicodeDecodeError):
            return value.strip().lower()
    if entity == MEDICAL_RECORD_NUMBER:
        return value.upper().translate(None, _NOT_ALNUM)
    text = value.decode("utf-8", "replace")
    if entity == DATE_OF_BIRTH:
        return _normalise_date(text).encode()
    if entity in (PERSON, ADDRESS):
        # Runs of whitespace become one space, none at the ends (split() knows the same
        # whitespace as the regex ``\s``, and is faster than a substitution).
        return " ".join(unicodedata.normalize("NFKC", text).casefold().split()).encode()
    return value.strip()


def blind_index(key: bytes, entity: str, value: bytes) -> bytes:
    """HMAC-SHA256 under ``key`` of the normalised value: searchable without storing the value."""
    return hmac.digest(key, normalise(entity, value), sha256)


class BlindIndexer:
    """``blind_index`` with the key's HMAC pads hashed once: per value, two hash copies and two
    updates instead of a fresh HMAC (a third of the cost; the engine computes one per finding)."""

    __slots__ = ("_inner", "_outer")

    def __init__(self, key: bytes) -> None:
        block = (sha256(key).digest() if len(key) > 64 else key).ljust(64, b"\0")
        self._inner = sha256(bytes(b ^ 0x36 for b in block))
        self._outer = sha256(bytes(b ^ 0x5C for b in block))

    def __repr__(self) -> str:
        return "BlindIndexer(<key>)"

    def __call__(self, entity: str, value: bytes) -> bytes:
        inner = self._inner.copy()
        inner.update(normalise(entity, value))
        outer = self._outer.copy()
        outer.update(inner.digest())
        return outer.digest()


# --- the content scanner -------------------------------------------------------------------------

# All patterns below run on the shape (digits are "0", capitals "A", other word characters "a").
# Each starts with a literal; the boundary lookbehind comes after it so the literal stays a prefix.
# Numbers run on " " + the text translated by FLAT, where every separator is a space: the
# literal " 000" then only occurs where a number of three or more digits starts (a lookbehind for
# the boundary would have to come after the literal, and the engine would try every "000" inside
# longer numbers too). Which separators the original had is checked on the original bytes.
# (Per-form literals checked with ``in`` first were slower: FLAT text is so repetitive that
# substring search loses its skips.) Most tries fail (" 123 ms"), so the alternatives are grouped
# by their first character and each branch starts with a literal, which the regex engine rejects
# without entering the branch; the form is named by an empty group at the end of its branch.
_NUMERIC_FORMS = (
    rb"\x20000(?:"
    rb"\x20(?:00\x200000(?P<ssn>)|\x20?000\x200000(?P<phone>))"
    rb"|0(?:LONG(?P<long>)"
    rb"|\x20000\x20000(?P<npi>)"
    rb"|(?:\x200000\x200000\x200000(?:\x200{1,3})?|\x20000000\x200{4,5})(?P<card>))"
    rb")(?![0aA])"
)
# "long": ten digits (a bare NPI, or an epoch timestamp) or 13 to 19 (a card without separators).
_NUMERIC = re.compile(_NUMERIC_FORMS.replace(b"LONG", rb"0{6}(?:0{3,9})?"))
# For a text with no NPI label anywhere, where a bare ten-digit number is never one: timestamps,
# common in output, then do not even match.
_NUMERIC_NO_NPI = re.compile(_NUMERIC_FORMS.replace(b"LONG", rb"0{9,15}"))
_PLUS_PHONE = re.compile(rb"\+0[0\x20().-]{6,20}0(?![aA0]|[-.]0)")
# Possessive runs: giving back a digit (or hex character) would leave one where the pattern needs
# a "." or ":", so it cannot help; without the "+" the engine still tries, at every "." and ":".
_IPV4_TAIL = re.compile(rb"\.0{1,3}+\.0{1,3}+\.0{1,3}+(?![aA0]|\.0)")
# On the original bytes (word characters spelled out: what the shape writes as 0, a or A), so that
# a long text where the prefilter leaves nothing else to do on the shape is not translated at all.
_IPV6_TRIGGER = re.compile(
    rb":(?::|W{1,4}+:W{1,4}+:W{1,4}+:W{1,4}+:W{1,4}+:)".replace(b"W", rb"[0-9A-Za-z_\x80-\xff]")
)
_IBAN = re.compile(rb"AA00(?<![aA0]AA00)(?:\x20?[A0]{4}){2,7}(?:\x20?[A0]{1,3})?(?![aA0])")

_IPV4 = re.compile(
    rb"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])(?:\.(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])){3}"
)

# These run on the original bytes.
_HEX = frozenset(b"0123456789abcdefABCDEF:.")
_EMAIL_DOMAIN = re.compile(
    rb"@((?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+([A-Za-z]{2,24}))(?![A-Za-z0-9-]|\.[A-Za-z0-9])"
)
# 1 for bytes an email's local part may hold, 0 elsewhere: the local part ends at the '@' and
# starts after the last 0, found with one translate and rfind instead of a backwards regex.
_EMAIL_LOCAL_MAP = bytes(
    1 if chr(c) in string.ascii_letters + string.digits + "!#$%&'*+/=?^_`{|}~.-" else 0 for c in range(256)
)
# Generic TLDs seen in real addresses; any two-letter country code is accepted as well. Hostnames
# such as "ubuntu@ip-10-0-1-5.ec2.internal" in shell prompts are therefore not emails.
_TLDS = frozenset(
    b"com org net edu gov mil int info biz name pro aero coop museum mobi jobs travel io dev app ai co "
    b"me cloud tech online site xyz shop store blog email health care clinic hospital bank finance "
    b"insurance law news media agency solutions services systems network digital global company email "
    b"page team work life live world today group center support zone".split()
)
_AWS_KEY_ID = re.compile(rb"A(?<![A-Za-z0-9/+]A)(?:KIA|SIA)[A-Z0-9]{16}(?![A-Za-z0-9])")
_AWS_SECRET_NEAR = re.compile(rb"(?<![A-Za-z0-9/+=])[A-Za-z0-9/+]{40}(?![A-Za-z0-9/+=])")
_GITHUB = re.compile(
    rb"g(?<![A-Za-z0-9_]g)(?:h[pousr]_[A-Za-z0-9]{36,251}|ithub_pat_[A-Za-z0-9_]{22,250})(?![A-Za-z0-9_])"
)
_SLACK = re.compile(rb"xox(?<![A-Za-z0-9]xox)[baprs]-[A-Za-z0-9-]{10,250}(?![A-Za-z0-9-])")
_STRIPE = re.compile(rb"k_(?<=[sr]k_)(?:live|test)_[A-Za-z0-9]{10,247}(?![A-Za-z0-9])")
_JWT = re.compile(
    rb"eyJ(?<![A-Za-z0-9_-]eyJ)[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]*(?![A-Za-z0-9_.-])"
)
_NPI = re.compile(rb"npi")
# The detectors that read the shape of the text.
_SHAPE_READERS = GATE_PLUS_PHONE | GATE_IPV4 | GATE_IBAN
# Up to this length a substring test beats starting a regex scan (measured on terminal output).
SHORT_TEXT = 1024
_PEM_BEGIN = re.compile(rb"-----BEGIN ([A-Z0-9]+ ){0,3}PRIVATE KEY( BLOCK)?-----")
_URL_PASSWORD = re.compile(rb"://[^\s:/@?#'\"<>]{1,128}:([^\s/'\"<>]{1,256})@(?=[A-Za-z0-9\[])")
_SQL_PASSWORD = re.compile(rb"password\s+'((?:[^'\r\n]|'')*)'")
_SQL_IDENTIFIED = re.compile(rb"identified\s+by\s+'((?:[^'\r\n]|'')*)'")
PLACEHOLDERS = frozenset(
    b"* ** *** **** ***** ****** ******** xxx xxxx xxxxxx xxxxxxxx redacted [redacted] <redacted> "
    b"null none nil undefined true false - -- ... <password> <secret> <token> password secret token".split()
)


def is_placeholder(value: bytes) -> bool:
    v = value.strip().lower()
    if not v or v in PLACEHOLDERS:
        return True
    if v.startswith((b"${", b"$(", b"{{", b"<%")) or (v.startswith(b"<") and v.endswith(b">")):
        return True
    return v.strip(b"*x") == b"" or v.strip(b"\xe2\x96\x88") == b""


class ContentScanner:
    """Finds structured identifiers and secrets by content. Stateless; one instance is shared."""

    def scan(
        self,
        data: bytes,
        lower: bytes,
        shape: bytes | None,
        out: list[Span],
        gate: int = GATE_ALL,
        *,
        lines_from: int = 0,
    ) -> int:
        """Append spans to ``out``. Returns the offset of an unterminated PEM private key body
        (the stream masker keeps masking until its END line), or -1. ``shape`` is
        ``data.translate(SHAPE)``, or None to make it here only if a detector needs it. ``gate``:
        the detectors that can match at all (`masking.prefilter`); the others are skipped, and
        ``lower`` (``data.lower()``) is only read by those in `GATE_LOWER_READERS`.

        ``lines_from``: a line start before which the text is only context (the stream masker
        has emitted those lines already). Numbers, and the detectors that read across lines
        (`_across_lines`), read the whole text; the others find values within a line, and start
        at that line.

        Every regex starts with a literal, which the regex engine scans for in C. In a long text
        a pre-check pays only for a single rare byte (``in`` is then memchr, ~5x faster than that
        scan); for longer literals ``in`` costs as much as the regex itself. A short text is
        another matter: there the fixed cost of starting a scan dominates, and ``in`` is cheaper.
        """
        # In a short text (most event fields) each pattern runs only if a literal every match
        # contains is there; in a long one the regex scan is the cheaper search, so it just runs.
        short = len(data) <= SHORT_TEXT
        if shape is None and (short or gate & _SHAPE_READERS):
            shape = data.translate(SHAPE)
        # Numbers read across lines: a line break is a separator to their candidates, so a phone
        # number may span two lines ("(415)\n555-0132"), and a candidate refused for its line
        # break still keeps its digits from starting another.
        if not short or (shape is not None and has(shape, b"000")):
            # The prefilter, when it ran, also found out whether the text has an NPI label.
            self._numeric(data, lower, out, None if gate == GATE_ALL else bool(gate & GATE_NPI_LABEL))
        if lines_from:
            local: list[Span] = []
            line_shape = shape[lines_from:] if shape is not None else None
            self._line_local(data[lines_from:], lower[lines_from:], line_shape, local, gate)
            out.extend(Span(span.start + lines_from, span.end + lines_from, span.entity) for span in local)
        else:
            self._line_local(data, lower, shape, out, gate)
        return self._across_lines(data, lower, out, gate)

    def _line_local(self, data: bytes, lower: bytes, shape: bytes | None, out: list[Span], gate: int) -> None:
        """The detectors whose values, and what decides them, lie within one line (``shape``:
        the text's shape if the caller made it)."""
        short = len(data) <= SHORT_TEXT
        if shape is None and (short or gate & _SHAPE_READERS):
            shape = data.translate(SHAPE)
        if shape is not None and gate & GATE_PLUS_PHONE and has(data, b"+"):
            for m in _PLUS_PHONE.finditer(shape):
                s = m.start()
                if s and shape[s - 1] in b"aA0":
                    continue
                digits = digits_of(data[s : m.end()])
                if (
                    8 <= len(digits) <= 15
                    and digits[0] != 0x30
                    and (digits[0] != 0x31 or us_phone_ok(digits))
                ):
                    out.append(Span(s, m.end(), PHONE_NUMBER))
        if shape is not None and gate & GATE_IPV4 and (not short or has(shape, b".0")):
            for m in _IPV4_TAIL.finditer(shape):
                s = m.start()
                while s > 0 and m.start() - s < 3 and shape[s - 1] == 0x30:
                    s -= 1
                if s == m.start() or (s > 0 and shape[s - 1] in b"aA0."):
                    continue
                if ipv4_ok(data[s : m.end()]):
                    out.append(Span(s, m.end(), IP_ADDRESS))
        if has(data, b":"):
            self._ipv6(data, out)
        if shape is not None and gate & GATE_IBAN and (not short or has(shape, b"AA00")):
            for m in _IBAN.finditer(shape):
                compact = data[m.start() : m.end()].replace(b" ", b"")
                if iban_ok(compact):
                    out.append(Span(m.start(), m.end(), IBAN_CODE))
        if has(data, b"@"):
            if gate & GATE_EMAIL:
                self._emails(data, out)
            if gate & GATE_URL_PASSWORD and (not short or has(data, b"://")):
                for m in _URL_PASSWORD.finditer(data):
                    if not is_placeholder(m.group(1)):
                        out.append(Span(m.start(1), m.end(1), PASSWORD))
        if has(data, b"_"):
            if gate & GATE_GITHUB and (not short or has(data, b"gh") or has(data, b"github_pat_")):
                out.extend(Span(m.start(), m.end(), GITHUB_TOKEN) for m in _GITHUB.finditer(data))
            if gate & GATE_STRIPE and (not short or has(data, b"k_")):
                for m in _STRIPE.finditer(data):
                    s = m.start() - 1
                    if s == 0 or not data[s - 1 : s].isalnum():
                        out.append(Span(s, m.end(), STRIPE_KEY))
        if gate & GATE_SLACK and (not short or has(data, b"xox")):
            out.extend(Span(m.start(), m.end(), SLACK_TOKEN) for m in _SLACK.finditer(data))
        if gate & GATE_JWT and has(data, b"J"):  # eyJ
            out.extend(Span(m.start(), m.end(), JWT) for m in _JWT.finditer(data))

    def _across_lines(self, data: bytes, lower: bytes, out: list[Span], gate: int) -> int:
        """The detectors, besides numbers, that read across lines: a PEM body up to its END line,
        an AWS secret key printed after its key id, a SQL password after its keyword; the PEM
        body's offset if it is not ended, else -1."""
        short = len(data) <= SHORT_TEXT
        if gate & GATE_AWS_KEY and (not short or has(data, b"IA")):  # AKIA, ASIA
            for m in _AWS_KEY_ID.finditer(data):
                out.append(Span(m.start(), m.end(), AWS_ACCESS_KEY))
                # A secret access key printed next to its key id (credentials CSV, `aws configure`).
                near = _AWS_SECRET_NEAR.search(data, m.end(), m.end() + 200)
                if near is not None and _looks_random(near.group()):
                    out.append(Span(near.start(), near.end(), AWS_SECRET_KEY))
        pem_open = -1
        if gate & GATE_PEM and has(data, b"K"):  # PRIVATE KEY
            pem_open = self._pem(data, out)
        if gate & GATE_SQL_PASSWORD and has(data, b"'"):
            for rx in (_SQL_PASSWORD, _SQL_IDENTIFIED):
                for m in rx.finditer(lower):
                    if m.end(1) > m.start(1):
                        out.append(Span(m.start(1), m.end(1), PASSWORD))
        return pem_open

    def _numeric(self, data: bytes, lower: bytes, out: list[Span], npi_label: bool | None = None) -> None:
        """``npi_label``: whether ``lower`` has an NPI label (None: not known yet)."""
        n = len(data)
        pattern = _NUMERIC_NO_NPI if npi_label is False else _NUMERIC
        for m in pattern.finditer(b" " + data.translate(FLAT)):
            s, e = m.start(), m.end() - 1  # offsets in data (the flat text has one leading space)
            form = m.lastgroup or ""
            first = data[s]
            # Most candidates are epoch timestamps (ten or thirteen digits starting with 1): no
            # card network starts with 1, and a bare ten-digit number is as likely a timestamp as
            # an NPI; only an "NPI" label earlier on its line makes it one (``_number`` looks
            # there once the text as a whole has passed the cheaper test).
            if form == "long":
                if e - s != 10:
                    if first not in b"23456":
                        continue
                    form = "card"
                elif first not in b"12":
                    continue
                else:
                    if npi_label is None:
                        npi_label = _has_npi_label(lower)
                    if not npi_label:
                        continue
            # A number that continues with "-" or "." and more digits is something else (a
            # version, a longer identifier); so is one glued to a preceding "digits-".
            if e + 1 < n and data[e] in b"-." and 0x30 <= data[e + 1] <= 0x39:
                continue
            if s >= 2 and data[s - 1] in b"-." and 0x30 <= data[s - 2] <= 0x39 and form != "phone":
                continue
            self._number(data, lower, (s, e), form, out)

    def _number(self, data: bytes, lower: bytes, span: tuple[int, int], form: str, out: list[Span]) -> None:
        s, e = span
        first = data[s]
        if form == "long":
            line = lower[max(0, s - 80, lower.rfind(b"\n", 0, s) + 1) : s]
            if _has_npi_label(line) and npi_ok(data[s:e]):
                out.append(Span(s, e, US_NPI))
            return
        if form == "card":
            if first in b"23456" and _same_separators(data, s, e) and card_ok(digits_of(data[s:e])):
                out.append(Span(s, e, CREDIT_CARD))
        elif form == "npi":
            if first in b"12" and _same_separators(data, s, e) and npi_ok(digits_of(data[s:e])):
                out.append(Span(s, e, US_NPI))
        elif form == "ssn":
            if data[s + 3] == data[s + 6] and data[s + 3] in b"- " and ssn_ok(digits_of(data[s:e])):
                out.append(Span(s, e, US_SSN))
        elif s >= 1 and data[s - 1] == 0x28 and data[s + 3] == 0x29:  # "(415) 555-0132"
            if data[e - 5] in b"-. ":
                self._phone(data, s - 1, e, out)
        elif data[s + 3] == data[e - 5] and data[s + 3] in b"-. ":
            self._phone(data, s, e, out)

    @staticmethod
    def _phone(data: bytes, s: int, e: int, out: list[Span]) -> None:
        if not us_phone_ok(digits_of(data[s:e])):
            return
        # Take in a leading country code written as "1-", "1 " or "+1 ".
        if s >= 2 and data[s - 2] == 0x31 and data[s - 1] in b" -.":
            t = s - 2
            if t >= 1 and data[t - 1] == 0x2B:
                t -= 1
            if t == 0 or not data[t - 1 : t].isalnum():
                s = t
        out.append(Span(s, e, PHONE_NUMBER))

    @staticmethod
    def _ipv6(data: bytes, out: list[Span]) -> None:
        pos = 0
        n = len(data)
        while True:
            m = _IPV6_TRIGGER.search(data, pos)
            if m is None:
                return
            s = m.start()
            while s > 0 and data[s - 1] in _HEX and m.start() - s < 45:
                s -= 1
            e = m.end()
            while e < n and data[e] in _HEX and e - s < 45:
                e += 1
            # Trailing ":" or "." belong to the sentence or to a port, not to the address.
            while e > s and data[e - 1] in b".":
                e -= 1
            cand = data[s:e]
            if cand.endswith(b":") and not cand.endswith(b"::"):
                cand = cand[:-1]
                e -= 1
            # Never a slice from -1: compiled (mypyc) bytes slices do not clamp a start past the end.
            before = data[s - 1 : s] if s else b""
            after = data[e : e + 1]
            inside_word = before.isalnum() or before in (b"_", b"-") or after.isalnum() or after == b"_"
            if not inside_word and cand.count(b":") >= 2 and ipv6_ok(cand):
                out.append(Span(s, e, IP_ADDRESS))
            pos = max(m.end(), e)

    @staticmethod
    def _emails(data: bytes, out: list[Span]) -> None:
        local_map = b""  # translated once, at the first address (output often has one per line)
        for m in _EMAIL_DOMAIN.finditer(data):
            tld = m.group(2).lower()
            if len(tld) != 2 and tld not in _TLDS:
                continue
            if not local_map:
                local_map = data.translate(_EMAIL_LOCAL_MAP)
            at = m.start()
            window_start = at - 64 if at > 64 else 0
            s = local_map.rfind(b"\x00", window_start, at) + 1 or window_start
            while s < at and data[s] in b".'=/|{}":
                s += 1  # a local part does not start with these; they are surrounding punctuation
            if s < at:
                out.append(Span(s, m.end(), EMAIL_ADDRESS))

    @staticmethod
    def _pem(data: bytes, out: list[Span]) -> int:
        for m in _PEM_BEGIN.finditer(data):
            nl = data.find(b"\n", m.end())
            body = m.end() if nl < 0 else nl + 1
            end = data.find(b"-----END ", body)
            if end < 0:
                out.append(Span(body, len(data), PRIVATE_KEY))
                return body
            if end > body:
                out.append(Span(body, end, PRIVATE_KEY))
        return -1


def _has_npi_label(lower: bytes) -> bool:
    # The regex engine finds a short literal about twice as fast as a substring test (which pays
    # off only for a single byte or a long needle).
    return _NPI.search(lower) is not None or has(lower, b"national provider") or has(lower, b"prescriber")


def _same_separators(data: bytes, s: int, e: int, allowed: bytes = b"- ") -> bool:
    """All non-digits of data[s:e] are one and the same separator from ``allowed`` (or none)."""
    seps = set(data[s:e].translate(None, b"0123456789"))
    return not seps or (len(seps) == 1 and seps <= set(allowed))


def _looks_random(value: bytes) -> bool:
    """A 40-character base64 secret has mixed case and digits; a path or a word run does not."""
    has_upper = any(0x41 <= c <= 0x5A for c in value)
    has_lower = any(0x61 <= c <= 0x7A for c in value)
    has_digit = any(0x30 <= c <= 0x39 for c in value)
    return has_upper and has_lower and has_digit
