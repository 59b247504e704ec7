"""One pass over a text that tells which detectors can match in it at all.

Each content detector (`masking.detectors.ContentScanner`) is its own regex scan, and the key
search of contextual detection (`masking.context.ContextScanner.hits`) is another. On a long text
with nothing of their kind (most terminal output) each scan still reads every byte, and a dozen
such passes are most of the cost of masking it. Hyperscan (Intel's multi-pattern regex engine, in
its open-source fork Vectorscan) matches all their triggers in one pass; a detector whose trigger
is absent is skipped.

The detectors stay the only judges of what is masked. Each trigger below is a *superset* of its
detector: every text the detector finds anything in matches the trigger (they are the detector's
regex with lookarounds dropped and bounded repeats shortened to their minimum). So gating changes
no output, only what is scanned; `tests/masking/test_prefilter.py` checks that on the corpus and
on every chunk boundary. Short texts (event fields, a line of output) are checked too: the pass
costs less there than the substring tests and context key search it spares.

Detectors whose triggers occur in nearly every chunk of output are not gated: numbers (the
numeric forms: timestamps are everywhere) and IPv6 ("::" in code and logs). The same pass tells
the numbers' detector whether the text has an NPI label anywhere: without one, a bare ten-digit
number (an epoch timestamp, most often) is never a candidate.

Without Hyperscan (not installed, a CPU without SSSE3, ``BLACKBOX_MASKING_PREFILTER=0``) every
detector runs, as before; the output is the same.
"""

from __future__ import annotations

import logging
import os
import re
import threading
from typing import Any, Final

logger = logging.getLogger(__name__)

# Detector bits. `GATE_ALL` runs every detector.
GATE_PLUS_PHONE: Final = 1 << 0
GATE_IPV4: Final = 1 << 1
GATE_IBAN: Final = 1 << 2
GATE_EMAIL: Final = 1 << 3
GATE_URL_PASSWORD: Final = 1 << 4
GATE_AWS_KEY: Final = 1 << 5
GATE_GITHUB: Final = 1 << 6
GATE_STRIPE: Final = 1 << 7
GATE_SLACK: Final = 1 << 8
GATE_JWT: Final = 1 << 9
GATE_PEM: Final = 1 << 10
GATE_SQL_PASSWORD: Final = 1 << 11
GATE_CONTEXT_KEY: Final = 1 << 12
GATE_NPI_LABEL: Final = 1 << 13  # not a detector: the numbers' detector asks whether one is there
GATE_FHIR_SYSTEM: Final = 1 << 14  # FHIR identifiers' "system" (`masking.context.identifier_values`)
GATE_ALL: Final = (1 << 15) - 1
# What reads the lower-cased text: without any of them (and no multi-line context open), a long
# text is not lower-cased at all.
GATE_LOWER_READERS: Final = GATE_CONTEXT_KEY | GATE_SQL_PASSWORD | GATE_NPI_LABEL | GATE_FHIR_SYSTEM

_BLANK = rb"[ \t\n\r\x0b\x0c]"  # Python's \s on bytes
_NOT_BLANK = rb" \t\n\r\x0b\x0c"

# (bit, trigger, caseless). Each trigger is a superset of its detector's regex: see the module doc.
_TRIGGERS: tuple[tuple[int, bytes, bool], ...] = (
    (GATE_PLUS_PHONE, rb"\+[0-9][0-9 ().\-]{6}", False),
    (GATE_IPV4, rb"[0-9]\.[0-9]{1,3}\.[0-9]{1,3}\.[0-9]", False),
    (GATE_IBAN, rb"[A-Z]{2}[0-9]{2} ?[A-Z0-9]{4} ?[A-Z0-9]{4}", False),
    (GATE_EMAIL, rb"@[A-Za-z0-9][A-Za-z0-9.\-]*\.[A-Za-z]{2}", False),
    (GATE_URL_PASSWORD, rb"://[^" + _NOT_BLANK + rb":/@?#'\"<>]+:[^" + _NOT_BLANK + rb"/'\"<>]+@", False),
    (GATE_AWS_KEY, rb"A[KS]IA[A-Z0-9]{16}", False),
    (GATE_GITHUB, rb"gh[pousr]_[A-Za-z0-9]{36}|github_pat_[A-Za-z0-9_]{22}", False),
    (GATE_STRIPE, rb"[sr]k_(?:live|test)_[A-Za-z0-9]{10}", False),
    (GATE_SLACK, rb"xox[baprs]-[A-Za-z0-9\-]{10}", False),
    (GATE_JWT, rb"eyJ[A-Za-z0-9_\-]{5}[A-Za-z0-9_\-]*\.[A-Za-z0-9_\-]{5}", False),
    (GATE_PEM, rb"-----BEGIN [A-Z0-9 ]*PRIVATE KEY", False),
    (GATE_NPI_LABEL, rb"npi|national provider|prescriber", True),
    (GATE_FHIR_SYSTEM, rb"\"system\"", True),
    (GATE_SQL_PASSWORD, rb"password" + _BLANK + rb"+'|identified" + _BLANK + rb"+by" + _BLANK + rb"+'", True),
)


def _key_trigger(keys: list[bytes]) -> bytes:
    """A key name, an optional quote, blanks, then a separator: what the reversed key search
    (`masking.context`) finds, read forwards."""
    names = b"|".join(re.escape(key) for key in sorted(keys, key=len, reverse=True))
    return rb"(?:" + names + rb")[\"']?[ \t\r]*[=:|,\n\t]"


def _on_match(pattern: int, start: int, end: int, flags: int, found: list[int]) -> None:
    found.append(pattern)


class Prefilter:
    """The compiled triggers. Thread-safe: each thread scans with its own scratch space."""

    def __init__(self, hyperscan: Any, keys: list[bytes]) -> None:
        triggers = [*_TRIGGERS, (GATE_CONTEXT_KEY, _key_trigger(keys), True)]
        self._hs = hyperscan
        self._db = hyperscan.Database(mode=hyperscan.HS_MODE_BLOCK)
        self._db.compile(
            expressions=[trigger for _, trigger, _ in triggers],
            ids=[bit.bit_length() - 1 for bit, _, _ in triggers],
            flags=[
                hyperscan.HS_FLAG_SINGLEMATCH | (hyperscan.HS_FLAG_CASELESS if caseless else 0)
                for _, _, caseless in triggers
            ],
        )
        self._scratch = threading.local()

    def __call__(self, text: bytes) -> int:
        """The bits of the detectors that can match in ``text``."""
        scratch = getattr(self._scratch, "space", None)
        if scratch is None:
            scratch = self._scratch.space = self._hs.Scratch(self._db)
        found: list[int] = []
        self._db.scan(text, match_event_handler=_on_match, context=found, scratch=scratch)
        gate = 0
        for pattern in found:
            gate |= 1 << pattern
        return gate


def load(keys: list[bytes]) -> Prefilter | None:
    """The prefilter for these context keys, or None when Hyperscan cannot run here."""
    if os.environ.get("BLACKBOX_MASKING_PREFILTER", "1") == "0":
        return None
    try:
        import hyperscan  # noqa: PLC0415 - optional: masking works without it
    except ImportError:
        logger.info("hyperscan is not installed: masking runs every detector on every text")
        return None
    try:
        return Prefilter(hyperscan, keys)
    except hyperscan.error as exc:  # e.g. a CPU Hyperscan does not support
        logger.warning("hyperscan unusable here (%s): masking runs every detector on every text", exc)
        return None
