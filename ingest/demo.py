"""Demo sessions, the example event files, and a load generator, all through the event builder.

`demo_sessions` tells four realistic stories of machine identities (a CI job in psql, a
service account reading a Secret with kubectl, an AI agent in a shell, a scanner sweeping an
HTTP API), with the personal and secret data that masking must later catch. Given the same
``seed`` and ``start_us`` the output is identical, ids included: ids are drawn from a
generator seeded with both, so a replayed demo is a duplicate (dropped) and a demo at another
time is a new session (never a fork of an old one).

`generate_load` is for benchmarks: cheap events that share their payload objects.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import logging
import random
import re
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import fastavro

from ingest.emitter import DEFAULT_TOPIC, Emitter
from ingest.events import (
    Body,
    Gateway,
    Identity,
    SessionBuilder,
    SessionEvent,
    Target,
    make_gateway,
    make_identity,
    make_target,
    now_us,
)
from schemas import EVENT_SCHEMA, default_registry
from schemas.bodies import (
    BODY_TYPES,
    HTTP_EXCHANGE,
    IDLE_TIMEOUT,
    OUTPUT_FLUSH,
    QUERY,
    QUERY_RESULT,
    SESSION_END,
    SESSION_START,
    TERMINAL_INPUT,
    TERMINAL_OUTPUT,
)

logger = logging.getLogger(__name__)

_SECOND = 1_000_000
_MINUTE = 60 * _SECOND

_FIRST = ["maria", "jonas", "aiko", "lucas", "fatima", "noah", "elena", "omar", "sofia", "liam", "priya"]
_LAST = ["schmidt", "novak", "tanaka", "silva", "haddad", "berg", "rossi", "khan", "dubois", "meyer"]
_ALNUM = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
# No 0/O or 1/l/I: the alphabet generated passwords use.
_UNAMBIGUOUS = "abcdefghijkmnopqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789"
_POD_SUFFIX = "bcdfghjklmnpqrstvwxz2456789"  # what Kubernetes uses for generated names
_DOMAINS = ["example.com", "example.org", "mail.example.net"]
# Well-known payment-network test numbers: card-shaped, Luhn-valid, and charge nobody.
_TEST_CARDS = ["4111 1111 1111 1111", "5555 5555 5555 4444", "4012 8888 8888 1881", "3782 822463 10005"]

RESET = b"\x1b[0m"
GREEN = b"\x1b[1;32m"
BLUE = b"\x1b[1;34m"
YELLOW = b"\x1b[33m"
RED = b"\x1b[31m"


def _id_source(rng: random.Random) -> Callable[[], str]:
    """UUIDs (version 4 layout) drawn from ``rng``, so that ids are reproducible."""

    def next_id() -> str:
        return str(uuid.UUID(int=rng.getrandbits(128), version=4))

    return next_id


class _Timeline:
    """Gateway time for one scripted session: every event a little after the previous one."""

    def __init__(self, rng: random.Random, start_us: int) -> None:
        self._rng = rng
        self.now = start_us

    def __call__(self) -> int:
        return self.now

    def after(self, low_ms: int, high_ms: int) -> int:
        self.now += self._rng.randint(low_ms, high_ms) * 1000
        return self.now


def _person(rng: random.Random) -> tuple[str, str]:
    first, last = rng.choice(_FIRST), rng.choice(_LAST)
    return f"{first.title()} {last.title()}", f"{first}.{last}@{rng.choice(_DOMAINS)}"


def _secret(rng: random.Random, length: int, alphabet: str = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789") -> str:
    return "".join(rng.choice(alphabet) for _ in range(length))


def _psql_session(rng: random.Random, ids: Callable[[], str], start_us: int) -> list[SessionEvent]:
    clock = _Timeline(rng, start_us)
    run = rng.randint(1000, 99999)
    b = SessionBuilder(
        ids(),
        make_identity(
            f"github-actions:acme/billing-service:run/{run}",
            "CI_JOB",
            issuer="https://token.actions.githubusercontent.com",
            groups=["ci", "billing-deployers"],
        ),
        make_target("billing-postgres", "POSTGRES", host="billing-db.prod.internal:5432", database="billing"),
        make_gateway("hoop-gw-eu-1", "hoop", "1.31.2"),
        clock,
        event_ids=ids,
    )
    events = [
        b.start(
            "nightly data-quality check",
            client="psql (PostgreSQL) 16.3",
            source_address=f"10.20.{rng.randint(0, 9)}.{rng.randint(2, 250)}",
        )
    ]

    def ask(statement: str, parameters: list[str | None] | None = None) -> None:
        clock.after(200, 1500)
        events.append(b.query(statement, parameters or [], "billing"))

    def answer(columns: list[str], rows: list[list[str | None]], **extra: Any) -> None:
        clock.after(2, 80)
        events.append(b.query_result(columns, rows, duration_us=rng.randint(300, 90_000), **extra))

    ask("SELECT version();")
    answer(["version"], [["PostgreSQL 16.3 on x86_64-pc-linux-gnu, compiled by gcc 12.2.0, 64-bit"]])
    ask("SELECT count(*) FROM customers WHERE created_at > $1", ["2024-01-01"])
    answer(["count"], [[str(rng.randint(10_000, 90_000))]])
    ask("SELECT id, full_name, email, plan FROM customers ORDER BY created_at DESC LIMIT 5")
    customers: list[list[str | None]] = []
    for _ in range(5):
        name, email = _person(rng)
        plan = rng.choice(["free", "pro", "team"])
        customers.append([str(rng.randint(100_000, 999_999)), name, email, plan])
    answer(["id", "full_name", "email", "plan"], customers)
    customer_id = customers[0][0]
    ask(
        "SELECT customer_id, card_number, expires, billing_email FROM payment_methods WHERE customer_id = $1",
        [customer_id],
    )
    answer(
        ["customer_id", "card_number", "expires", "billing_email"],
        [
            [
                customer_id,
                rng.choice(_TEST_CARDS),
                f"{rng.randint(1, 12):02d}/{rng.randint(26, 30)}",
                customers[0][2],
            ]
        ],
    )
    ask("SELECT * FROM invoices_2019 LIMIT 1")
    answer([], [], error='relation "invoices_2019" does not exist')
    ask("SELECT id, email FROM customers WHERE email LIKE $1", ["%@example.org"])
    rows: list[list[str | None]] = [[str(rng.randint(100_000, 999_999)), _person(rng)[1]] for _ in range(3)]
    answer(["id", "email"], rows, row_count=rng.randint(40, 400), truncated=True)
    ask("UPDATE customers SET plan = 'pro' WHERE id = $1", [customer_id])
    answer([], [], row_count=1)
    clock.after(100, 900)
    events.append(b.end("client disconnected", 0))
    return events


def _kubectl_session(rng: random.Random, ids: Callable[[], str], start_us: int) -> list[SessionEvent]:
    clock = _Timeline(rng, start_us)
    namespace = "payments"
    b = SessionBuilder(
        ids(),
        make_identity(
            "system:serviceaccount:platform:deploy-bot",
            "SERVICE_ACCOUNT",
            issuer="https://oidc.eks.eu-west-1.amazonaws.com/id/EXAMPLED539D4633E53DE1B71EXAMPLE",
            groups=["system:serviceaccounts", "system:serviceaccounts:platform"],
        ),
        make_target("prod-eks", "KUBERNETES", host="https://prod-eks.k8s.internal:6443", database=namespace),
        make_gateway("teleport-proxy-2", "teleport", "16.1.0"),
        clock,
        event_ids=ids,
    )
    version = f"2.14.{rng.randint(0, 40)}"
    events = [
        b.start(
            f"deploy payments-api {version}",
            client="kubectl/v1.30.2 (linux/amd64)",
            source_address=f"10.40.{rng.randint(0, 9)}.{rng.randint(2, 250)}",
        )
    ]
    pods = [f"payments-api-{_secret(rng, 10, _POD_SUFFIX)}-{_secret(rng, 5, _POD_SUFFIX)}" for _ in range(3)]
    pod_list = {
        "apiVersion": "v1",
        "kind": "PodList",
        "items": [
            {"metadata": {"name": pod, "namespace": namespace}, "status": {"phase": "Running"}}
            for pod in pods
        ],
    }

    def call(verb: str, resource: str, name: str | None, status: int, body: Any = None, **extra: Any) -> None:
        clock.after(150, 2500)
        events.append(
            b.kubernetes(
                verb,
                resource,
                extra.pop("namespace", namespace),
                name,
                status,
                response_body=None if body is None else json.dumps(body),
                **extra,
            )
        )

    call("list", "pods", None, 200, pod_list)
    call(
        "get",
        "deployments",
        "payments-api",
        200,
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "payments-api", "namespace": namespace},
            "spec": {"replicas": 3},
            "status": {"readyReplicas": 3},
        },
    )
    password = _secret(rng, 24, _UNAMBIGUOUS)
    host = "payments-db.prod.internal"
    secret_data = {
        "username": "payments_app",
        "password": password,
        "url": f"postgres://payments_app:{password}@{host}:5432/payments",
    }
    call(
        "get",
        "secrets",
        "payments-db-credentials",
        200,
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "type": "Opaque",
            "metadata": {"name": "payments-db-credentials", "namespace": namespace},
            "data": {k: base64.b64encode(v.encode()).decode() for k, v in secret_data.items()},
        },
    )
    clock.after(1, 5)
    events.append(
        b.policy_decision(
            "secret-access",
            "REVIEW",
            "k8s.secrets.read.outside-deploy",
            "service account read a database Secret",
        )
    )
    patch = {
        "spec": {
            "template": {
                "spec": {
                    "containers": [
                        {"name": "payments-api", "image": f"registry.acme.example/payments-api:{version}"}
                    ]
                }
            }
        }
    }
    call(
        "patch",
        "deployments",
        "payments-api",
        200,
        {"kind": "Deployment", "metadata": {"name": "payments-api"}},
        request_body=json.dumps(patch),
    )
    for _ in range(rng.randint(2, 4)):
        call(
            "get",
            "deployments",
            "payments-api",
            200,
            {
                "kind": "Deployment",
                "status": {"updatedReplicas": rng.randint(1, 3), "readyReplicas": rng.randint(1, 3)},
            },
            subresource="status",
        )
    call(
        "list",
        "secrets",
        None,
        403,
        {
            "kind": "Status",
            "apiVersion": "v1",
            "status": "Failure",
            "reason": "Forbidden",
            "code": 403,
            "message": 'secrets is forbidden: User "system:serviceaccount:platform:deploy-bot" cannot list '
            'resource "secrets" in API group "" in the namespace "kube-system"',
        },
        namespace="kube-system",
    )
    clock.after(100, 600)
    events.append(b.end("completed", 0))
    return events


def _agent_session(rng: random.Random, ids: Callable[[], str], start_us: int) -> list[SessionEvent]:
    clock = _Timeline(rng, start_us)
    run = _secret(rng, 8, "0123456789abcdef")
    b = SessionBuilder(
        ids(),
        make_identity(
            f"agent:ops-copilot/run-{run}",
            "AI_AGENT",
            issuer="https://agents.acme.example",
            groups=["ai-agents", "build-readers"],
        ),
        make_target("build-runner-3", "SSH", host="build-runner-3.ci.internal"),
        make_gateway("blackbox-recorder-1", "blackbox-recorder", "0.1.0"),
        clock,
        event_ids=ids,
    )
    cwd = "/home/agent/app"
    prompt = GREEN + b"agent@build-runner-3" + RESET + b":" + BLUE + b"~/app" + RESET + b"$ "
    events = [
        b.start(
            "investigate failing nightly build",
            client="OpenSSH_9.6p1",
            source_address=f"10.50.{rng.randint(0, 9)}.{rng.randint(2, 250)}",
            cols=120,
            rows=32,
            term="xterm-256color",
        )
    ]
    clock.after(50, 200)
    motd = b"Welcome to Ubuntu 24.04 LTS (GNU/Linux 6.8.0-40-generic x86_64)\r\n\r\n"
    events.append(b.output(motd + prompt))

    def run_command(argv: list[str], output: bytes, exit_code: int = 0) -> None:
        line = " ".join(argv).encode()
        for chunk in (line[: len(line) // 2], line[len(line) // 2 :] + b"\r"):
            clock.after(40, 400)  # agents type in bursts, not a keystroke at a time
            events.append(b.input(chunk))
            events.append(b.output(chunk.replace(b"\r", b"\r\n")))
        clock.after(5, 300)
        events.append(b.output(output + prompt))
        events.append(b.command(argv, exit_code, cwd))

    listing = b"".join(
        [
            b"total 48\r\n",
            b"drwxr-xr-x 6 agent agent 4096 Mar  3 09:12 " + BLUE + b"." + RESET + b"\r\n",
            b"-rw------- 1 agent agent  312 Mar  3 09:12 .env\r\n",
            b"-rw-r--r-- 1 agent agent 1204 Mar  3 09:12 Makefile\r\n",
            b"drwxr-xr-x 4 agent agent 4096 Mar  3 09:12 " + BLUE + b"src" + RESET + b"\r\n",
            b"-rwxr-xr-x 1 agent agent 8820 Mar  3 09:12 " + GREEN + b"build.sh" + RESET + b"\r\n",
        ]
    )
    run_command(["ls", "-la"], listing)
    key_id = "AKIA" + _secret(rng, 16)
    secret_key = _secret(rng, 40, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789/+")
    db_password = _secret(rng, 20, _UNAMBIGUOUS)
    dotenv = (
        f"DATABASE_URL=postgres://app:{db_password}@db.ci.internal:5432/app\r\n"
        f"AWS_ACCESS_KEY_ID={key_id}\r\nAWS_SECRET_ACCESS_KEY={secret_key}\r\n"
        "LOG_LEVEL=debug\r\n"
    ).encode()
    run_command(["cat", ".env"], dotenv)
    failing = rng.randint(1000, 9999)
    run_json = json.dumps(
        {"total_count": 1, "workflow_runs": [{"id": failing, "name": "nightly", "conclusion": "failure"}]},
        indent=2,
    )
    run_command(
        ["curl", "-s", "https://api.github.com/repos/acme/app/actions/runs?per_page=1"],
        run_json.replace("\n", "\r\n").encode() + b"\r\n",
    )
    clock.after(500, 3000)
    events.append(b.resize(160, 40))
    log = b"".join(
        [
            YELLOW + b"warning" + RESET + b": unused variable `retries`\r\n",
            RED + b"error[E0425]" + RESET + b": cannot find value `cfg` in this scope\r\n",
            b"  --> src/worker.rs:88:17\r\n",
            RED + b"error" + RESET + b": could not compile `app` due to 1 previous error\r\n",
        ]
    )
    run_command(["./build.sh", "--release"], log, exit_code=101)
    request_id = str(uuid.UUID(int=rng.getrandbits(128), version=4))
    clock.after(200, 1500)
    events.append(b.approval_requested(request_id, "sudo systemctl restart app-worker", ["oncall-sre"]))
    clock.after(20_000, 90_000)
    events.append(b.approval_decided(request_id, True, "alice@acme.example", "restart only, no config"))
    run_command(["sudo", "systemctl", "restart", "app-worker"], b"")
    clock.after(300, 2000)
    events.append(b.input(b"exit\r"))
    events.append(b.output(b"exit\r\nlogout\r\nConnection to build-runner-3.ci.internal closed.\r\n"))
    clock.after(5, 50)
    events.append(b.end("exit", 0))
    return events


def _scanner_session(rng: random.Random, ids: Callable[[], str], start_us: int) -> list[SessionEvent]:
    clock = _Timeline(rng, start_us)
    b = SessionBuilder(
        ids(),
        make_identity(
            "scanner:zap-weekly", "SCANNER", issuer="https://ci.acme.example", groups=["security-scanners"]
        ),
        make_target("users-api", "HTTP", host="https://users-api.prod.internal"),
        make_gateway("blackbox-http-proxy-1", "blackbox-recorder", "0.1.0"),
        clock,
        event_ids=ids,
    )
    agent = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) ZAP/2.15.0"
    token = "eyJhbGciOiJSUzI1NiJ9." + _secret(rng, 48, _ALNUM)
    request_headers = {"User-Agent": agent, "Accept": "application/json", "Authorization": f"Bearer {token}"}
    json_headers = {"Content-Type": "application/json", "Server": "envoy"}
    events = [
        b.start(
            "weekly DAST sweep",
            client="ZAP/2.15.0",
            source_address=f"10.60.{rng.randint(0, 9)}.{rng.randint(2, 250)}",
        )
    ]
    base = "https://users-api.prod.internal/api/v1"
    for user_id in range(1, rng.randint(40, 60)):
        clock.after(20, 400)
        if rng.random() < 0.7:
            name, email = _person(rng)
            phone = f"+49 30 {rng.randint(1_000_000, 9_999_999)}"
            body = json.dumps({"id": user_id, "name": name, "email": email, "phone": phone})
            status = 200
        else:
            body, status = json.dumps({"error": "not found"}), 404
        events.append(
            b.http(
                "GET",
                f"{base}/users/{user_id}",
                status,
                request_headers=request_headers,
                response_headers=json_headers,
                response_body=body,
                duration_us=rng.randint(800, 40_000),
            )
        )
    probes = [
        ("GET", f"{base}/users?id=1%27%20OR%20%271%27%3D%271", 400, '{"error":"invalid id"}'),
        ("GET", f"{base}/../../etc/passwd", 404, '{"error":"not found"}'),
        ("GET", "https://users-api.prod.internal/admin", 403, '{"error":"forbidden"}'),
        ("POST", f"{base}/users", 401, '{"error":"missing scope users:write"}'),
    ]
    xss = '{"name":"<script>alert(1)</script>"}'
    for method, url, status, body in probes:
        clock.after(20, 400)
        events.append(
            b.http(
                method,
                url,
                status,
                request_headers=request_headers,
                request_body=xss if method == "POST" else None,
                response_headers=json_headers,
                response_body=body,
                duration_us=rng.randint(800, 40_000),
            )
        )
    clock.after(100, 500)
    events.append(b.end("scan complete"))
    return events


_STORIES = (_psql_session, _kubectl_session, _agent_session, _scanner_session)


def demo_sessions(seed: int, count_each: int = 1, start_us: int | None = None) -> list[list[SessionEvent]]:
    """``count_each`` sessions of each story, in story order per round; one event list per session.

    ``start_us`` defaults to an hour ago, so the demo looks recent in the dev stack; pass it
    for output that is identical on every call.
    """
    if start_us is None:
        start_us = now_us() - 60 * _MINUTE
    content = random.Random(seed)
    ids = _id_source(random.Random(f"blackbox-demo:{seed}:{start_us}"))
    sessions = []
    for round_ in range(count_each):
        for index, story in enumerate(_STORIES):
            begin = start_us + round_ * 4 * _MINUTE + index * _MINUTE + content.randint(0, 30) * _SECOND
            sessions.append(story(content, ids, begin))
    return sessions


async def emit_demo(
    bootstrap: str,
    *,
    seed: int = 0,
    count_each: int = 1,
    start_us: int | None = None,
    topic: str = DEFAULT_TOPIC,
    **emitter_options: Any,
) -> list[str]:
    """Emit `demo_sessions` and wait for delivery; returns the session ids."""
    sessions = demo_sessions(seed, count_each, start_us)
    async with Emitter(bootstrap, topic, **emitter_options) as emitter:
        for session in sessions:
            await emitter.emit_many(session)
    logger.info("emitted %d demo sessions (%d events)", len(sessions), emitter.events_emitted)
    return [session[0]["session_id"] for session in sessions]


def generate_load(
    n_sessions: int,
    events_per_session: int,
    seed: int = 0,
    *,
    start_us: int | None = None,
) -> Iterator[list[SessionEvent]]:
    """Sessions of synthetic events for benchmarks, one list per session.

    Cheap on purpose: the envelopes and bodies are shared objects (treat them as read-only),
    only ids, seq and time vary. Each session starts with a SessionStart and ends with a
    SessionEnd; between them terminal output, input, queries and HTTP exchanges.
    """
    if events_per_session < 2:
        raise ValueError("a session needs at least 2 events (start and end)")
    rng = random.Random(seed)
    base_us = now_us() if start_us is None else start_us
    gateway = make_gateway("load-gen-1", "blackbox-load", "0.1.0")
    identities = [
        make_identity(f"svc-load-{i}", kind)
        for i, kind in enumerate(["SERVICE_ACCOUNT", "CI_JOB", "AI_AGENT", "SCANNER"])
    ]
    targets = [
        make_target("load-postgres", "POSTGRES", host="db.load.internal", database="app"),
        make_target("load-ssh", "SSH", host="ssh.load.internal"),
        make_target("load-http", "HTTP", host="https://api.load.internal"),
    ]
    line = b"\x1b[32mINFO\x1b[0m worker-7 processed job 5521 in 12ms user=jane.doe@example.com\r\n"
    bodies: list[Body] = [
        (TERMINAL_OUTPUT, {"data": line}),
        (TERMINAL_OUTPUT, {"data": line * 8}),
        (TERMINAL_INPUT, {"data": b"ls -la /var/log\r"}),
        (
            QUERY,
            {
                "statement": "SELECT id, email FROM users WHERE id = $1",
                "parameters": ["42"],
                "database": "app",
            },
        ),
        (
            QUERY_RESULT,
            {
                "columns": ["id", "email"],
                "rows": [["42", "jane.doe@example.com"]],
                "row_count": 1,
                "truncated": False,
                "duration_us": 850,
                "error": None,
            },
        ),
        (
            HTTP_EXCHANGE,
            {
                "method": "GET",
                "url": "https://api.load.internal/api/v1/users/42",
                "status_code": 200,
                "request_headers": {"Accept": "application/json"},
                "request_body": None,
                "response_headers": {},
                "response_body": '{"id":42,"email":"jane.doe@example.com"}',
                "duration_us": 1200,
            },
        ),
    ]
    start: Body = (
        SESSION_START,
        {
            "purpose": "load test",
            "client": "blackbox-load",
            "source_address": None,
            "terminal": {"cols": 120, "rows": 40},
            "term": "xterm-256color",
        },
    )
    end: Body = (SESSION_END, {"reason": "closed", "exit_code": 0})
    no_attributes: dict[str, str] = {}
    last = events_per_session - 1
    for n in range(n_sessions):
        session_id = str(uuid.UUID(int=rng.getrandbits(128), version=4))
        prefix = session_id[:24]  # event ids: the session's UUID with the seq in its last group
        identity, target = identities[n % len(identities)], targets[n % len(targets)]
        t = base_us + n * 1000
        events: list[SessionEvent] = []
        for seq in range(events_per_session):
            body = start if seq == 0 else end if seq == last else bodies[(n + seq) % len(bodies)]
            events.append(
                {
                    "event_id": f"{prefix}{seq:012x}",
                    "session_id": session_id,
                    "seq": seq,
                    "event_time": t + seq * 1000,
                    "gateway": gateway,
                    "identity": identity,
                    "target": target,
                    "attributes": no_attributes,
                    "body": body,
                }
            )
        yield events


# -- example event files (schemas/examples/) -------------------------------------------------

EXAMPLE_TIME_US = 1_767_225_600_000_000  # 2026-01-01T00:00:00Z: examples never change by themselves


def example_name(record_name: str) -> str:
    """``dev.blackbox.v1.KubernetesApiCall`` → ``kubernetes_api_call`` (the example's file stem)."""
    short = record_name.rsplit(".", 1)[-1]
    return re.sub(r"(?<!^)(?=[A-Z])", "_", short).lower()


def example_events() -> dict[str, SessionEvent]:
    """One fixed event per body type, keyed by `example_name`; what schemas/examples/ holds."""
    ids = _id_source(random.Random("blackbox-examples"))
    times = iter(range(EXAMPLE_TIME_US, EXAMPLE_TIME_US + 10_000 * _SECOND, _SECOND))

    def clock() -> int:
        return next(times)

    gateway = make_gateway("blackbox-recorder-1", "blackbox-recorder", "0.1.0")

    def builder(identity: Identity, target: Target, gw: Gateway = gateway) -> SessionBuilder:
        return SessionBuilder(ids(), identity, target, gw, clock, event_ids=ids)

    agent = make_identity(
        "agent:ops-copilot/run-7f3a", "AI_AGENT", issuer="https://agents.acme.example", groups=["ai-agents"]
    )
    shell = builder(agent, make_target("build-runner-3", "SSH", host="build-runner-3.ci.internal"))
    ci = make_identity(
        "github-actions:acme/billing-service:run/4242",
        "CI_JOB",
        issuer="https://token.actions.githubusercontent.com",
    )
    db = builder(
        ci,
        make_target("billing-postgres", "POSTGRES", host="billing-db.prod.internal:5432", database="billing"),
        make_gateway("hoop-gw-eu-1", "hoop", "1.31.2"),
    )
    bot = make_identity(
        "system:serviceaccount:platform:deploy-bot", "SERVICE_ACCOUNT", groups=["system:serviceaccounts"]
    )
    cluster = make_target(
        "prod-eks", "KUBERNETES", host="https://prod-eks.k8s.internal:6443", database="payments"
    )
    k8s = builder(bot, cluster, make_gateway("teleport-proxy-2", "teleport", "16.1.0"))
    scanner = builder(
        make_identity("scanner:zap-weekly", "SCANNER"),
        make_target("users-api", "HTTP", host="https://users-api.prod.internal"),
    )
    secret = json.dumps(
        {
            "kind": "Secret",
            "metadata": {"name": "payments-db-credentials"},
            "data": {"password": base64.b64encode(b"correct-horse-battery").decode()},
        }
    )
    events = [
        shell.start(
            "investigate failing build",
            client="OpenSSH_9.6p1",
            source_address="10.50.3.17",
            cols=120,
            rows=32,
            term="xterm-256color",
            attributes={"ticket": "OPS-1234"},
        ),
        shell.output(GREEN + b"agent@build-runner-3" + RESET + b":~/app$ " + b"\xe2\x9c\x93 ok\r\n"),
        shell.input(b"ls -la\r"),
        shell.resize(160, 40),
        db.query("SELECT id, email FROM customers WHERE plan = $1", ["pro", None], "billing"),
        db.query_result(
            ["id", "email"],
            [["1001", "maria.schmidt@example.com"], ["1002", None]],
            row_count=2,
            duration_us=1830,
        ),
        k8s.kubernetes("get", "secrets", "payments", "payments-db-credentials", 200, response_body=secret),
        scanner.http(
            "GET",
            "https://users-api.prod.internal/api/v1/users/7",
            404,
            request_headers={"Accept": "application/json"},
            response_headers={"Content-Type": "application/json"},
            response_body='{"error":"not found"}',
            duration_us=2100,
        ),
        shell.command(["curl", "-s", "https://api.github.com/repos/acme/app"], 0, "/home/agent/app"),
        shell.approval_requested(
            "5b0c8e2e-6a57-4d0b-9c43-6f1f0a1d2e3f", "sudo systemctl restart app-worker", ["oncall-sre"]
        ),
        shell.approval_decided(
            "5b0c8e2e-6a57-4d0b-9c43-6f1f0a1d2e3f", True, "alice@acme.example", "restart only"
        ),
        k8s.policy_decision("secret-access", "REVIEW", "k8s.secrets.read", "service account read a Secret"),
        shell.end("exit", 0),
        # Only the Blackbox worker writes IdleTimeout and OutputFlush; the examples show their shape.
        db.event(IDLE_TIMEOUT, {"last_seq": 1, "idle_seconds": 900}),
        db.event(OUTPUT_FLUSH, {"last_seq": 2, "held_seconds": 15}),
    ]
    examples = {example_name(event["body"][0]): event for event in events}
    missing = {example_name(name) for name in BODY_TYPES} - set(examples)
    assert not missing, f"no example for {missing}"
    return examples


def write_examples(directory: Path) -> list[Path]:
    """Write each example as Avro JSON encoding (fastavro.json_writer), one file per body type."""
    schema = default_registry().schema(EVENT_SCHEMA)
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, event in sorted(example_events().items()):
        path = directory / f"{name}.json"
        with path.open("w", encoding="utf-8") as out:
            fastavro.json_writer(out, schema, [event])
        paths.append(path)
    return paths


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m ingest.demo", description=__doc__.split("\n")[0])
    parser.add_argument(
        "--write-examples",
        type=Path,
        metavar="DIR",
        help="write one Avro-JSON example event per body type into DIR",
    )
    parser.add_argument("--bootstrap", help="emit the demo sessions to this Kafka bootstrap server")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--count-each", type=int, default=1)
    args = parser.parse_args(argv)
    if args.write_examples:
        for path in write_examples(args.write_examples):
            print(path)
    if args.bootstrap:
        for session_id in asyncio.run(emit_demo(args.bootstrap, seed=args.seed, count_each=args.count_each)):
            print(session_id)


if __name__ == "__main__":
    main()
