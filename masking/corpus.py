"""A labeled corpus of realistic session output, generated deterministically from a seed.

Each document is what a terminal, a query or an API call shows in practice (psql tables, kubectl
Secrets in YAML and JSON, ``env``, application logs, FHIR Patient resources, CSV exports, mysql,
``git log``, ``kubectl get pods -o wide``, credentials files) with planted sensitive values of
every entity type, labelled with their exact span, and look-alikes that must survive masking:
UUIDs, hashes, timestamps, order numbers, versions, pod names, 16-digit numbers failing Luhn,
invalid SSNs, 10-digit numbers failing the NPI check.

Values are made up by a seeded generator; none is a real person's. Spans are character offsets.
"""

from __future__ import annotations

import base64
import json
import random
import string
from dataclasses import dataclass
from typing import Any

from masking.detectors import (
    ADDRESS,
    AWS_ACCESS_KEY,
    AWS_SECRET_KEY,
    CREDIT_CARD,
    DATE_OF_BIRTH,
    EMAIL_ADDRESS,
    GITHUB_TOKEN,
    IBAN_CODE,
    IBAN_LENGTHS,
    IP_ADDRESS,
    JWT,
    K8S_SECRET,
    MEDICAL_RECORD_NUMBER,
    PASSWORD,
    PERSON,
    PHONE_NUMBER,
    PRIVATE_KEY,
    SECRET,
    SLACK_TOKEN,
    STRIPE_KEY,
    US_NPI,
    US_SSN,
    luhn_ok,
)

UUID = "UUID"
HASH = "HASH"
TIMESTAMP = "TIMESTAMP"
ORDER_NUMBER = "ORDER_NUMBER"
VERSION = "VERSION"
POD_NAME = "POD_NAME"
NON_LUHN_16 = "NON_LUHN_16"
INVALID_SSN = "INVALID_SSN"
NON_NPI_10 = "NON_NPI_10"
LOOKALIKE_KINDS = (
    UUID,
    HASH,
    TIMESTAMP,
    ORDER_NUMBER,
    VERSION,
    POD_NAME,
    NON_LUHN_16,
    INVALID_SSN,
    NON_NPI_10,
)


@dataclass(frozen=True)
class Label:
    kind: str  # an entity type, or a look-alike kind
    start: int
    end: int


@dataclass(frozen=True)
class Document:
    kind: str
    text: str
    labels: tuple[Label, ...]  # sensitive values: must be masked
    lookalikes: tuple[Label, ...]  # must stay intact


class _Builder:
    def __init__(self) -> None:
        self.parts: list[str] = []
        self.size = 0
        self.labels: list[Label] = []
        self.lookalikes: list[Label] = []

    def add(self, text: str) -> _Builder:
        self.parts.append(text)
        self.size += len(text)
        return self

    def pii(self, kind: str, value: str) -> _Builder:
        self.labels.append(Label(kind, self.size, self.size + len(value)))
        return self.add(value)

    def keep(self, kind: str, value: str) -> _Builder:
        self.lookalikes.append(Label(kind, self.size, self.size + len(value)))
        return self.add(value)

    def build(self, kind: str) -> Document:
        return Document(kind, "".join(self.parts), tuple(self.labels), tuple(self.lookalikes))


_FIRST = (
    "Ada",
    "Alan",
    "Grace",
    "Linus",
    "Margaret",
    "Dennis",
    "Barbara",
    "Ken",
    "Frances",
    "Edsger",
    "Radia",
    "Tim",
    "Katherine",
    "Donald",
    "Hedy",
    "John",
    "Mary",
    "José",
    "Zoë",
    "Björn",
    "Aiko",
    "Chidi",
    "Priya",
    "Mateo",
    "Olga",
    "Noah",
    "Emma",
    "Liam",
    "Sofia",
    "Omar",
)
_LAST = (
    "Lovelace",
    "Turing",
    "Hopper",
    "Torvalds",
    "Hamilton",
    "Ritchie",
    "Liskov",
    "Thompson",
    "Allen",
    "Dijkstra",
    "Perlman",
    "Berners-Lee",
    "Johnson",
    "Knuth",
    "Lamarr",
    "Smith",
    "O'Brien",
    "García",
    "Müller",
    "Nakamura",
    "Okafor",
    "Sharma",
    "Rossi",
    "Ivanova",
    "Williams",
    "Brown",
    "Novak",
    "Haddad",
)
_STREETS = (
    "Oak Street",
    "Maple Avenue",
    "Elm Road",
    "Cedar Lane",
    "Pine Court",
    "Main Street",
    "Washington Blvd",
    "Lakeview Drive",
    "Sunset Terrace",
    "Hillcrest Way",
)
_CITIES = (
    ("Springfield", "IL"),
    ("Portland", "OR"),
    ("Austin", "TX"),
    ("Madison", "WI"),
    ("Denver", "CO"),
    ("Boston", "MA"),
    ("Raleigh", "NC"),
    ("Tucson", "AZ"),
)
_DOMAINS = (
    "gmail.com",
    "outlook.com",
    "acme-corp.io",
    "mercy-hospital.org",
    "example.co.uk",
    "posteo.de",
    "fastmail.com",
    "university.edu",
)
_WORDS = (
    "request",
    "completed",
    "retrying",
    "upstream",
    "cache",
    "miss",
    "hit",
    "queue",
    "worker",
    "flushed",
    "batch",
    "scheduled",
    "connection",
    "closed",
    "timeout",
    "rebalanced",
    "checkpoint",
    "compacted",
)
_B32 = string.ascii_uppercase + "234567"
_ALNUM = string.ascii_letters + string.digits
_B64 = _ALNUM + "+/"
_B64URL = _ALNUM + "-_"


class _Values:
    """Generators of plausible values, valid where a checksum applies."""

    def __init__(self, rng: random.Random) -> None:
        self.r = rng

    def choice(self, seq: tuple[str, ...]) -> str:
        return self.r.choice(seq)

    def digits(self, n: int, first: str = "0123456789") -> str:
        return self.r.choice(first) + "".join(self.r.choice(string.digits) for _ in range(n - 1))

    def text(self, n: int, alphabet: str = _ALNUM) -> str:
        return "".join(self.r.choice(alphabet) for _ in range(n))

    # -- sensitive ---------------------------------------------------------------------------
    def first(self) -> str:
        return self.choice(_FIRST)

    def last(self) -> str:
        return self.choice(_LAST)

    def person(self) -> str:
        return f"{self.first()} {self.last()}"

    def email(self, name: str | None = None) -> str:
        local = (name or self.person()).lower().replace(" ", ".").replace("'", "")
        local = local.encode("ascii", "ignore").decode() or "user"
        return f"{local}{self.r.randint(1, 99)}@{self.choice(_DOMAINS)}"

    def phone(self) -> str:
        area, exch, line = self.digits(3, "23456789"), self.digits(3, "23456789"), self.digits(4)
        fmt = self.r.randrange(9)
        return [
            f"({area}) {exch}-{line}",
            f"{area}-{exch}-{line}",
            f"{area}.{exch}.{line}",
            f"+1 {area} {exch} {line}",
            f"+1-{area}-{exch}-{line}",
            f"+44 20 {self.digits(4)} {self.digits(4)}",
            f"+49 30 {self.digits(8, '123456789')}",
            f"+33 1 {self.digits(2)} {self.digits(2)} {self.digits(2)} {self.digits(2)}",
            f"+4915{self.digits(9)}",
        ][fmt]

    def card_digits(self) -> str:
        prefix, length = self.r.choice(
            [
                ("4", 16),
                ("51", 16),
                ("55", 16),
                ("2221", 16),
                ("34", 15),
                ("37", 15),
                ("6011", 16),
                ("4", 13),
                ("35", 16),
            ]
        )
        body = prefix + self.digits(length - len(prefix) - 1)
        for check in string.digits:
            if luhn_ok((body + check).encode()):
                return body + check
        raise AssertionError("unreachable")

    def card(self) -> str:
        d = self.card_digits()
        style = self.r.randrange(3)
        if style == 0 or len(d) == 13:
            return d
        sep = " " if style == 1 else "-"
        if len(d) == 15:
            return sep.join((d[:4], d[4:10], d[10:]))
        return sep.join(d[i : i + 4] for i in range(0, len(d), 4))

    def ssn(self, dashed: bool = True) -> str:
        area = self.r.choice([a for a in range(1, 900) if a != 666])
        s = f"{area:03d}{self.r.randint(1, 99):02d}{self.r.randint(1, 9999):04d}"
        return f"{s[:3]}-{s[3:5]}-{s[5:]}" if dashed else s

    def npi(self) -> str:
        body = self.digits(9, "12")
        for check in string.digits:
            if luhn_ok(("80840" + body + check).encode()):
                return body + check
        raise AssertionError("unreachable")

    def iban(self, grouped: bool | None = None) -> str:
        country = self.r.choice(["DE", "GB", "FR", "NL", "ES", "IT", "CH"])
        length = IBAN_LENGTHS[country.encode()]
        if country in {"GB", "NL"}:
            bban = self.text(4, string.ascii_uppercase) + self.digits(length - 8)
        elif country == "IT":
            bban = self.text(1, string.ascii_uppercase) + self.digits(length - 5)
        else:
            bban = self.digits(length - 4)
        rearranged = bban + country + "00"
        num = int("".join(str(int(c, 36)) for c in rearranged))
        iban = f"{country}{98 - num % 97:02d}{bban}"
        if grouped if grouped is not None else self.r.random() < 0.5:
            return " ".join(iban[i : i + 4] for i in range(0, len(iban), 4))
        return iban

    def ipv4(self) -> str:
        first = self.r.choice([10, 172, 192, 34, 52, 81, 203])
        return f"{first}.{self.r.randint(0, 255)}.{self.r.randint(0, 255)}.{self.r.randint(1, 254)}"

    def ipv6(self) -> str:
        groups = [f"{self.r.randint(0, 0xFFFF):x}" for _ in range(8)]
        if self.r.random() < 0.5:
            return "2001:db8:" + ":".join(groups[2:])
        return f"2001:db8:{groups[2]}::{groups[5]}:{groups[6]}"

    def aws_key_id(self) -> str:
        return self.r.choice(["AKIA", "ASIA"]) + self.text(16, _B32)

    def aws_secret(self) -> str:
        while True:
            value = self.text(40, _B64)
            if (
                any(c.isupper() for c in value)
                and any(c.islower() for c in value)
                and any(c.isdigit() for c in value)
            ):
                return value

    def github(self) -> str:
        if self.r.random() < 0.2:
            return "github_pat_" + self.text(22) + "_" + self.text(59)
        return self.r.choice(["ghp_", "gho_", "ghs_"]) + self.text(36)

    def slack(self) -> str:
        return f"xox{self.r.choice('bpa')}-{self.digits(11)}-{self.digits(12)}-{self.text(24)}"

    def stripe(self) -> str:
        return self.r.choice(["sk_live_", "rk_live_", "sk_test_"]) + self.text(24)

    def jwt(self) -> str:
        def part(obj: dict[str, Any]) -> str:
            return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()

        header = part({"alg": "HS256", "typ": "JWT"})
        payload = part(
            {
                "sub": self.digits(8),
                "name": self.person().encode("ascii", "ignore").decode(),
                "iat": self.r.randint(1_600_000_000, 1_800_000_000),
            }
        )
        return f"{header}.{payload}.{self.text(43, _B64URL)}"

    def pem_body(self) -> str:
        lines = [self.text(64, _B64) for _ in range(self.r.randint(4, 12))]
        return "\n".join([*lines, self.text(self.r.randint(8, 60), _B64) + "=="])

    def password(self) -> str:
        return self.text(self.r.randint(10, 20), _ALNUM + "!#%^*_-")

    def secret_b64(self) -> str:
        raw = self.text(self.r.randint(6, 30), _ALNUM + "!-_").encode()
        return base64.b64encode(raw).decode()

    def dob(self) -> str:
        y, m, d = self.r.randint(1935, 2005), self.r.randint(1, 12), self.r.randint(1, 28)
        return self.r.choice([f"{y:04d}-{m:02d}-{d:02d}", f"{m:02d}/{d:02d}/{y:04d}"])

    def mrn(self) -> str:
        return self.r.choice(
            [
                f"MRN-{self.digits(7)}",
                self.digits(8),
                f"A{self.digits(7)}",
                f"{self.digits(3)}-{self.digits(4)}",
            ]
        )

    def address(self) -> str:
        city, state = self.r.choice(_CITIES)
        zip_code = self.digits(5, "123456789")
        return f"{self.r.randint(10, 9999)} {self.choice(_STREETS)}, {city}, {state} {zip_code}"

    # -- look-alikes ---------------------------------------------------------------------------
    def uuid(self) -> str:
        h = self.text(32, "0123456789abcdef")
        return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{self.r.choice('89ab')}{h[17:20]}-{h[20:]}"

    def sha(self, n: int = 40) -> str:
        return self.text(n, "0123456789abcdef")

    def timestamp(self) -> str:
        y, mo, d = self.r.randint(2021, 2026), self.r.randint(1, 12), self.r.randint(1, 28)
        h, mi, s = self.r.randint(0, 23), self.r.randint(0, 59), self.r.randint(0, 59)
        style = self.r.randrange(4)
        if style == 0:
            return f"{y}-{mo:02d}-{d:02d}T{h:02d}:{mi:02d}:{s:02d}.{self.digits(3)}Z"
        if style == 1:
            return f"{y}-{mo:02d}-{d:02d} {h:02d}:{mi:02d}:{s:02d}"
        if style == 2:
            return str(self.r.randint(1_600_000_000, 1_800_000_000))
        return str(self.r.randint(1_600_000_000_000, 1_800_000_000_000))

    def order(self) -> str:
        return self.r.choice(
            [
                f"ORD-{self.r.randint(2020, 2026)}-{self.digits(6)}",
                f"#{self.digits(9, '123456789')}",
                f"PO-{self.digits(5)}",
                f"INV{self.digits(8)}",
            ]
        )

    def version(self) -> str:
        v = f"{self.r.randint(0, 12)}.{self.r.randint(0, 40)}.{self.r.randint(0, 30)}"
        return self.r.choice([v, "v" + v, v + "-rc." + str(self.r.randint(1, 5))])

    def pod(self, app: str | None = None) -> str:
        app = app or self.r.choice(["web", "api", "worker", "billing"])
        return f"{app}-{self.text(9, 'bcdf6789')}-{self.text(5, 'bcdfghjklmnpqrstvwxz2456789')}"

    def non_luhn16(self) -> str:
        while True:
            d = self.r.choice("456") + self.digits(15)
            if not luhn_ok(d.encode()):
                return d if self.r.random() < 0.6 else " ".join(d[i : i + 4] for i in range(0, 16, 4))

    def invalid_ssn(self) -> str:
        return self.r.choice(
            [
                f"000-{self.digits(2, '123456789')}-{self.digits(4, '123456789')}",
                f"666-{self.digits(2, '123456789')}-{self.digits(4, '123456789')}",
                f"9{self.digits(2)}-{self.digits(2, '123456789')}-{self.digits(4, '123456789')}",
                f"{self.digits(3, '12345678')}-00-{self.digits(4, '123456789')}",
                f"{self.digits(3, '12345678')}-{self.digits(2, '123456789')}-0000",
            ]
        )

    def non_npi10(self) -> str:
        while True:
            d = self.digits(10, "12")
            if not luhn_ok(("80840" + d).encode()):
                return d


# --- document kinds ------------------------------------------------------------------------------


def _psql(v: _Values) -> Document:
    b = _Builder()
    b.add("orders=> SELECT id, order_no, first_name, last_name, email, phone, ssn, date_of_birth, tracking\n")
    b.add("orders->   FROM customers JOIN orders USING (customer_id) LIMIT 6;\n")
    cols = ["id", "order_no", "first_name", "last_name", "email", "phone", "ssn", "date_of_birth", "tracking"]
    rows = []
    for i in range(v.r.randint(3, 6)):
        first, last = v.first(), v.last()
        rows.append(
            [
                (None, str(i + 1)),
                (ORDER_NUMBER, v.order()),
                (PERSON, first),
                (PERSON, last),
                (EMAIL_ADDRESS, v.email(f"{first} {last}")),
                (PHONE_NUMBER, v.phone()),
                (US_SSN, v.ssn(dashed=v.r.random() < 0.8)),
                (DATE_OF_BIRTH, v.dob()),
                (NON_LUHN_16, v.non_luhn16()),
            ]
        )
    widths = [max(len(c), *(len(r[k][1]) for r in rows)) for k, c in enumerate(cols)]
    b.add("|".join(f" {c.ljust(w)} " for c, w in zip(cols, widths, strict=True)).rstrip() + "\n")
    b.add("+".join("-" * (w + 2) for w in widths) + "\n")
    for row in rows:
        for k, ((kind, value), w) in enumerate(zip(row, widths, strict=True)):
            b.add("|" if k else "")
            b.add(" ")
            _put(b, kind, value)
            b.add(" " * (w - len(value) + 1) if k < len(row) - 1 else "")
        b.add("\n")
    b.add(f"({len(rows)} rows)\n\n")
    return b.build("psql")


def _put(b: _Builder, kind: str | None, value: str) -> None:
    if kind is None:
        b.add(value)
    elif kind in LOOKALIKE_KINDS:
        b.keep(kind, value)
    else:
        b.pii(kind, value)


def _psql_expanded(v: _Values) -> Document:
    b = _Builder()
    b.add("clinic=# \\x\nExpanded display is on.\nclinic=# SELECT * FROM patients WHERE id = 42;\n")
    b.add("-[ RECORD 1 ]-+-------------------------------\n")
    fields: list[tuple[str, str | None, str]] = [
        ("id", None, "42"),
        ("mrn", MEDICAL_RECORD_NUMBER, v.mrn()),
        ("full_name", PERSON, v.person()),
        ("birth_date", DATE_OF_BIRTH, v.dob()),
        ("home_address", ADDRESS, v.address()),
        ("npi", US_NPI, v.npi()),
        ("updated_at", TIMESTAMP, v.timestamp()),
        ("visit_id", UUID, v.uuid()),
    ]
    for key, kind, value in fields:
        b.add(f"{key.ljust(13)} | ")
        _put(b, kind, value)
        b.add("\n")
    b.add("\n")
    return b.build("psql-expanded")


def _mysql(v: _Values) -> Document:
    b = _Builder()
    b.add("mysql> SELECT id, customer_name, card_number, iban, created_at FROM payments LIMIT 4;\n")
    cols = ["id", "customer_name", "card_number", "iban", "created_at"]
    rows = [
        [
            (None, str(100 + i)),
            (PERSON, v.person()),
            (CREDIT_CARD, v.card_digits()),
            (IBAN_CODE, v.iban(grouped=False)),
            (TIMESTAMP, v.timestamp()),
        ]
        for i in range(4)
    ]
    widths = [max(len(c), *(len(r[k][1]) for r in rows)) for k, c in enumerate(cols)]
    border = "+" + "+".join("-" * (w + 2) for w in widths) + "+\n"
    b.add(border)
    b.add("|" + "|".join(f" {c.ljust(w)} " for c, w in zip(cols, widths, strict=True)) + "|\n")
    b.add(border)
    for row in rows:
        b.add("|")
        for (kind, value), w in zip(row, widths, strict=True):
            b.add(" ")
            _put(b, kind, value)
            b.add(" " * (w - len(value) + 1) + "|")
        b.add("\n")
    b.add(border)
    b.add("4 rows in set (0.01 sec)\n\n")
    return b.build("mysql")


def _kubectl_secret_yaml(v: _Values) -> Document:
    b = _Builder()
    name = v.r.choice(["db-credentials", "api-keys", "payment-gateway", "smtp-relay"])
    b.add(f"$ kubectl get secret {name} -n prod -o yaml\napiVersion: v1\ndata:\n")
    for key in v.r.sample(["password", "username", "api-key", "DATABASE_URL", "tls.key", "token"], 3):
        b.add(f"  {key}: ")
        b.pii(K8S_SECRET, v.secret_b64())
        b.add("\n")
    b.add("kind: Secret\nmetadata:\n  annotations:\n    deploy.example.io/revision: ")
    b.keep(VERSION, v.version())
    b.add('\n  creationTimestamp: "')
    b.keep(TIMESTAMP, v.timestamp())
    b.add(f'"\n  name: {name}\n  namespace: prod\n  resourceVersion: "{v.digits(8, "123456789")}"\n  uid: ')
    b.keep(UUID, v.uuid())
    b.add("\ntype: Opaque\n")
    if v.r.random() < 0.5:
        b.add(
            "---\napiVersion: v1\nkind: Secret\nmetadata:\n  name: app-config\nstringData:\n  DB_PASSWORD: "
        )
        b.pii(K8S_SECRET, v.password())
        b.add("\n  SMTP_USER: ")
        b.pii(K8S_SECRET, "mailer")
        b.add("\ntype: Opaque\n")
    return b.build("kubectl-secret-yaml")


def _kubectl_secret_json(v: _Values) -> Document:
    b = _Builder()
    b.add('$ kubectl get secret stripe -o json\n{\n    "apiVersion": "v1",\n    "data": {\n')
    keys = v.r.sample(["api_key", "webhook_secret", "password", "client_id"], 3)
    for i, key in enumerate(keys):
        b.add(f'        "{key}": "')
        b.pii(K8S_SECRET, v.secret_b64())
        b.add('"' + ("," if i < len(keys) - 1 else "") + "\n")
    b.add('    },\n    "kind": "Secret",\n    "metadata": {\n        "creationTimestamp": "')
    b.keep(TIMESTAMP, v.timestamp())
    b.add('",\n        "name": "stripe",\n        "namespace": "billing",\n        "uid": "')
    b.keep(UUID, v.uuid())
    b.add('"\n    },\n    "type": "Opaque"\n}\n')
    return b.build("kubectl-secret-json")


def _env(v: _Values) -> Document:
    b = _Builder()
    b.add("$ env | sort\n")
    entries: list[tuple[str, list[tuple[str | None, str]]]] = [
        ("APP_VERSION", [(VERSION, v.version())]),
        ("AWS_ACCESS_KEY_ID", [(AWS_ACCESS_KEY, v.aws_key_id())]),
        ("AWS_SECRET_ACCESS_KEY", [(AWS_SECRET_KEY, v.aws_secret())]),
        ("BUILD_ID", [(UUID, v.uuid())]),
        (
            "DATABASE_URL",
            [
                (None, "postgres://orders_app:"),
                (PASSWORD, v.password()),
                (None, "@db-primary.prod.svc.cluster.local:5432/orders"),
            ],
        ),
        ("GIT_COMMIT", [(HASH, v.sha())]),
        ("GITHUB_TOKEN", [(GITHUB_TOKEN, v.github())]),
        ("HOME", [(None, "/home/app")]),
        ("HOSTNAME", [(POD_NAME, v.pod())]),
        ("JWT_SIGNING_KEY", [(SECRET, v.text(32))]),
        ("PATH", [(None, "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin")]),
        ("PGPASSWORD", [(PASSWORD, v.password())]),
        ("SLACK_BOT_TOKEN", [(SLACK_TOKEN, v.slack())]),
        ("STRIPE_SECRET_KEY", [(STRIPE_KEY, v.stripe())]),
        ("SUPPORT_PHONE", [(PHONE_NUMBER, v.phone())]),
    ]
    for key, pieces in entries:
        b.add(f"{key}=")
        for kind, value in pieces:
            _put(b, kind, value)
        b.add("\n")
    return b.build("env")


def _logs(v: _Values) -> Document:
    b = _Builder()
    b.add(f"$ kubectl logs {v.pod('billing')} --tail=20\n")
    for _ in range(v.r.randint(8, 16)):
        b.keep(TIMESTAMP, v.timestamp())
        b.add(f" {v.r.choice(['INFO', 'WARN', 'DEBUG', 'ERROR'])} [")
        b.keep(POD_NAME, v.pod("billing"))
        b.add("] request_id=")
        b.keep(UUID, v.uuid())
        event = v.r.randrange(14)
        if event == 0:
            b.add(" charged card=")
            b.pii(CREDIT_CARD, v.card())
            b.add(" order=")
            b.keep(ORDER_NUMBER, v.order())
        elif event == 1:
            b.add(" login ok user=")
            b.pii(EMAIL_ADDRESS, v.email())
            b.add(" from ")
            b.pii(IP_ADDRESS, v.ipv4() if v.r.random() < 0.7 else v.ipv6())
        elif event == 2:
            b.add(" sms sent to ")
            b.pii(PHONE_NUMBER, v.phone())
        elif event == 3:
            b.add(" payout iban=")
            b.pii(IBAN_CODE, v.iban())
            b.add(" ref ")
            b.keep(NON_LUHN_16, v.non_luhn16())
        elif event == 4:
            b.add(' upstream call headers={"Authorization": "Bearer ')
            b.pii(JWT, v.jwt())
            b.add('"}')
        elif event == 5:
            b.add(" loaded config db.password=")
            b.pii(PASSWORD, v.password())
            b.add(" pool=20")
        elif event == 6:
            b.add(" deployed build ")
            b.keep(HASH, v.sha(v.r.choice([7, 12, 40, 64])))
            b.add(" version ")
            b.keep(VERSION, v.version())
        elif event == 7:
            b.add(" verification failed ssn=")
            b.keep(INVALID_SSN, v.invalid_ssn())
            b.add(" reason=invalid_range")
        elif event == 8:
            b.add(" prescriber npi: ")
            b.pii(US_NPI, v.npi())
            b.add(" checked, batch ")
            b.keep(NON_NPI_10, v.non_npi10())
        elif event == 9:
            b.add(" identity check ssn=")
            b.pii(US_SSN, v.ssn())
            b.add(" ok")
        elif event == 10:
            b.add(" webhook secret=")
            b.pii(SECRET, v.text(24))
            b.add(" rotated at ")
            b.keep(TIMESTAMP, v.timestamp())
        elif event == 11:
            b.add(" cache key ")
            b.keep(HASH, v.sha(64))
            b.add(f" {v.r.choice(_WORDS)} in {v.r.randint(1, 900)}ms")
        elif event == 12:
            b.add(" shipment ")
            b.keep(ORDER_NUMBER, v.order())
            b.add(" tracking ")
            b.keep(NON_NPI_10, v.non_npi10())
        else:
            b.add(f" {v.r.choice(_WORDS)} {v.r.choice(_WORDS)} took {v.r.randint(1, 5000)}ms")
        b.add("\n")
    return b.build("logs")


def _fhir(v: _Values) -> Document:
    b = _Builder()
    first, last = v.first(), v.last()
    b.add("$ curl -s https://fhir.mercy-hospital.org/r4/Patient/")
    b.keep(UUID, v.uuid())
    b.add(' | jq .\n{\n  "resourceType": "Patient",\n  "id": "')
    b.keep(UUID, v.uuid())
    b.add('",\n  "meta": {\n    "versionId": "3",\n    "lastUpdated": "')
    b.keep(TIMESTAMP, v.timestamp())
    b.add(
        '"\n  },\n  "identifier": [\n    {\n'
        '      "system": "https://mercy-hospital.org/fhir/mrn",\n      "value": "'
    )
    b.pii(MEDICAL_RECORD_NUMBER, v.mrn())
    b.add('"\n    },\n    {\n      "system": "http://hl7.org/fhir/sid/us-ssn",\n      "value": "')
    b.pii(US_SSN, v.ssn())
    b.add('"\n    }\n  ],\n  "name": [\n    {\n      "use": "official",\n      "family": "')
    b.pii(PERSON, last)
    b.add('",\n      "given": [\n        "')
    b.pii(PERSON, first)
    b.add('"\n      ]\n    }\n  ],\n  "telecom": [\n    {\n      "system": "phone",\n      "value": "')
    b.pii(PHONE_NUMBER, v.phone())
    b.add('"\n    },\n    {\n      "system": "email",\n      "value": "')
    b.pii(EMAIL_ADDRESS, v.email(f"{first} {last}"))
    b.add('"\n    }\n  ],\n  "birthDate": "')
    y, m, d = v.r.randint(1935, 2005), v.r.randint(1, 12), v.r.randint(1, 28)
    b.pii(DATE_OF_BIRTH, f"{y:04d}-{m:02d}-{d:02d}")
    city, state = v.r.choice(_CITIES)
    b.add('",\n  "address": [\n    {\n      "use": "home",\n      "line": [\n        "')
    b.pii(ADDRESS, f"{v.r.randint(10, 9999)} {v.choice(_STREETS)}")
    b.add('"\n      ],\n      "city": "')
    b.pii(ADDRESS, city)
    b.add(f'",\n      "state": "{state}",\n      "postalCode": "')
    b.pii(ADDRESS, v.digits(5, "123456789"))
    b.add('"\n    }\n  ],\n  "generalPractitioner": [\n    {\n      "identifier": {\n')
    b.add('        "system": "http://hl7.org/fhir/sid/us-npi",\n        "value": "')
    b.pii(US_NPI, v.npi())
    b.add('"\n      }\n    }\n  ]\n}\n')
    return b.build("fhir")


def _csv(v: _Values) -> Document:
    b = _Builder()
    b.add("$ head -6 exports/customers.csv\n")
    b.add(
        "customer_id,order_no,first_name,last_name,email,phone,date_of_birth,street_address,card_number,iban,created_at\n"
    )
    for _ in range(5):
        address = v.address()
        row: list[tuple[str | None, str]] = [
            (UUID, v.uuid()),
            (ORDER_NUMBER, v.order()),
            (PERSON, v.first()),
            (PERSON, v.last()),
            (EMAIL_ADDRESS, v.email()),
            (PHONE_NUMBER, v.phone()),
            (DATE_OF_BIRTH, v.dob()),
            (ADDRESS, address),
            (CREDIT_CARD, v.card_digits()),
            (IBAN_CODE, v.iban(grouped=False)),
            (TIMESTAMP, v.timestamp()),
        ]
        for k, (kind, value) in enumerate(row):
            b.add("," if k else "")
            quoted = "," in value
            b.add('"' if quoted else "")
            _put(b, kind, value)
            b.add('"' if quoted else "")
        b.add("\n")
    return b.build("csv")


def _pods(v: _Values) -> Document:
    b = _Builder()
    b.add(
        "$ kubectl get pods -o wide\n"
        "NAME                        READY   STATUS    RESTARTS   AGE   IP             NODE\n"
    )
    for _ in range(v.r.randint(3, 6)):
        b.keep(POD_NAME, v.pod())
        b.add(f"   1/1     Running   {v.r.randint(0, 3)}          {v.r.randint(1, 40)}d   ")
        b.pii(IP_ADDRESS, v.ipv4())
        b.add(f"   ip-10-0-{v.r.randint(0, 9)}-{v.r.randint(1, 200)}.ec2.internal\n")
    return b.build("kubectl-pods")


def _git_log(v: _Values) -> Document:
    b = _Builder()
    b.add("$ git log -3 --format='%H %an <%ae> %s'\n")
    for _ in range(3):
        b.keep(HASH, v.sha())
        name = v.person()
        b.add(f" {name} <")
        b.pii(EMAIL_ADDRESS, v.email(name))
        b.add("> release ")
        b.keep(VERSION, v.version())
        b.add("\n")
    return b.build("git-log")


def _credentials(v: _Values) -> Document:
    b = _Builder()
    b.add("$ cat ~/.aws/credentials\n[default]\naws_access_key_id = ")
    b.pii(AWS_ACCESS_KEY, v.aws_key_id())
    b.add("\naws_secret_access_key = ")
    b.pii(AWS_SECRET_KEY, v.aws_secret())
    b.add("\n$ cat ~/.ssh/id_rsa\n-----BEGIN RSA PRIVATE KEY-----\n")
    b.pii(PRIVATE_KEY, v.pem_body())
    b.add(
        "\n-----END RSA PRIVATE KEY-----\n$ cat config/app.yml\nsmtp:\n  host: smtp.mailgun.org\n  password: "
    )
    b.pii(PASSWORD, v.password())
    b.add("\nstripe:\n  api_key: ")
    b.pii(STRIPE_KEY, v.stripe())
    b.add("\n  webhook_token: ")
    b.pii(SECRET, v.text(32))
    b.add("\n")
    return b.build("credentials")


def _build_log(v: _Values) -> Document:
    """Routine output with nothing to mask: CI build steps, with versions, hashes and timings."""
    b = _Builder()
    b.add("$ make build\n")
    for _ in range(v.r.randint(10, 25)):
        step = v.r.randrange(6)
        b.add("[")
        b.keep(TIMESTAMP, v.timestamp())
        b.add("] ")
        if step == 0:
            b.add("Step 4/12 : RUN pip install -r requirements.txt\n ---> Running in ")
            b.keep(HASH, v.sha(12))
        elif step == 1:
            b.add("Collecting fastavro==")
            b.keep(VERSION, v.version())
            b.add(f" ({v.r.randint(100, 9000)} kB)")
        elif step == 2:
            b.add("sha256:")
            b.keep(HASH, v.sha(64))
            b.add(f" {v.r.randint(1, 300)}.{v.r.randint(0, 9)}MB / {v.r.randint(300, 900)}.0MB")
        elif step == 3:
            b.add("test_checkout.py::test_order[")
            b.keep(ORDER_NUMBER, v.order())
            b.add(f"] PASSED [{v.r.randint(1, 99)}%]")
        elif step == 4:
            b.add("deploy ")
            b.keep(POD_NAME, v.pod())
            b.add(" rollout id ")
            b.keep(UUID, v.uuid())
        else:
            b.add(
                f"{v.r.choice(_WORDS)} {v.r.choice(_WORDS)} {v.r.choice(_WORDS)} in {v.r.randint(1, 900)}ms"
            )
        b.add("\n")
    return b.build("build-log")


def _source(v: _Values) -> Document:
    """`cat` of a source file: code, comments, identifiers, numbers; nothing to mask."""
    b = _Builder()
    b.add("$ cat src/orders/service.py\n")
    for i in range(v.r.randint(15, 40)):
        kind = v.r.randrange(5)
        w1, w2 = v.r.choice(_WORDS), v.r.choice(_WORDS)
        if kind == 0:
            b.add(f"def {w1}_{w2}(self, order_id: str, retries: int = {i}) -> None:\n")
        elif kind == 1:
            b.add(f"    # {w1} the {w2} before retrying (see #{v.r.randint(100, 9999)})\n")
        elif kind == 2:
            b.add(f"    timeout = {v.r.randint(1, 600)}.{v.r.randint(0, 9)}  # seconds\n")
        elif kind == 3:
            b.add(f'    logger.info("{w1} %s in %d ms", order_id, elapsed)\n')
        else:
            b.add(f"    return self._{w1}[{v.r.randint(0, 64)}:{v.r.randint(64, 4096)}]\n")
    return b.build("source")


def _ls(v: _Values) -> Document:
    b = _Builder()
    b.add("$ ls -la /var/log/app\ntotal " + str(v.r.randint(100, 9000)) + "\n")
    for _ in range(v.r.randint(6, 20)):
        b.add(
            f"-rw-r--r-- 1 app app {v.r.randint(0, 99999999):>9} Mar {v.r.randint(1, 28):>2} "
            f"{v.r.randint(0, 23):02d}:{v.r.randint(0, 59):02d} "
        )
        b.add(v.r.choice(["app", "access", "error", "audit"]) + "-")
        b.keep(TIMESTAMP, v.timestamp())
        b.add(".log\n")
    return b.build("ls")


_KINDS = (
    _psql,
    _psql_expanded,
    _mysql,
    _kubectl_secret_yaml,
    _kubectl_secret_json,
    _env,
    _logs,
    _fhir,
    _csv,
    _pods,
    _git_log,
    _credentials,
    _build_log,
    _ls,
)
_ROUTINE = (_build_log, _ls, _source)


def generate(seed: int, count: int) -> list[Document]:
    """``count`` documents, cycling through every kind, the same for the same seed."""
    rng = random.Random(seed)
    values = _Values(rng)
    return [_KINDS[i % len(_KINDS)](values) for i in range(count)]


_PROMPT = "\x1b[01;32mdeploy@bastion\x1b[00m:\x1b[01;34m~\x1b[00m$ "


def terminal_bytes(seed: int, size: int, *, sensitive_share: float = 1.0) -> bytes:
    """About ``size`` bytes of terminal output: corpus documents as a session prints them (CRLF
    line ends, a coloured prompt before each command), for throughput measurements.

    ``sensitive_share`` is the fraction of documents drawn from all kinds; the rest are routine
    output (builds, listings, git, pod lists), as in a typical session where most of what scrolls
    by has nothing to mask."""
    out: list[bytes] = []
    total = 0
    rng = random.Random(seed)
    values = _Values(rng)
    i = 0
    while total < size:
        kind = _KINDS[i % len(_KINDS)] if rng.random() < sensitive_share else rng.choice(_ROUTINE)
        doc = kind(values)
        i += 1
        text = doc.text.removeprefix("$ ")
        chunk = (_PROMPT + text.replace("\n", "\r\n")).encode()
        out.append(chunk)
        total += len(chunk)
    return b"".join(out)
