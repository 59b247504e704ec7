"""The Masker the seal step calls: masks every kind of session event body.

Terminal output and input are streams (per session, in seq order); everything else is masked
event by event. An event with nothing to mask is returned as the same object, which the seal step
reads as "unchanged" and keeps the bytes it arrived with.
"""

from __future__ import annotations

import base64
import logging
import re
from dataclasses import dataclass, field
from typing import Any

from masking.context import entity_for_key, value_ok
from masking.detectors import PASSWORD, SECRET, Span, has
from masking.engine import Finding, MaskingEngine, StreamPoint, TerminalStreamMasker, mask_bytes
from masking.policy import Policy
from schemas.bodies import (
    APPROVAL_DECIDED,
    APPROVAL_REQUESTED,
    COMMAND,
    HTTP_EXCHANGE,
    IDLE_TIMEOUT,
    INPUT_TAIL_ATTRIBUTE,
    KUBERNETES_API_CALL,
    OUTPUT_FLUSH,
    OUTPUT_TAIL_ATTRIBUTE,
    POLICY_DECISION,
    QUERY,
    QUERY_RESULT,
    SECRET_PROMPT_ATTRIBUTE,
    SESSION_END,
    SESSION_START,
    TERMINAL_INPUT,
    TERMINAL_OUTPUT,
)

logger = logging.getLogger(__name__)

# Free-text fields of the other bodies (people write names and numbers into reasons and comments).
_TEXT_FIELDS = {
    SESSION_START: ("purpose",),
    APPROVAL_REQUESTED: ("reason",),
    APPROVAL_DECIDED: ("comment",),
    POLICY_DECISION: ("reason",),
}

# A prompt after which the user types a secret with echo off: sudo, ssh, psql, mysql, gpg...
_SECRET_PROMPT = re.compile(
    rb"(?i)(?:password|passphrase|passcode|pin|token|secret|otp|verification code)[^\n]{0,60}[:?]\s*\Z"
)
_SECRET_FLAGS = frozenset(
    {
        "--password",
        "--passwd",
        "--pass",
        "--token",
        "--secret",
        "--api-key",
        "--apikey",
        "--access-token",
        "--client-secret",
        "--secret-key",
        "--auth-token",
        "--bearer-token",
        "--private-key-passphrase",
    }
)
_MYSQL_LIKE = frozenset({"mysql", "mysqldump", "mysqladmin", "mariadb", "mariadb-dump"})
_INSERT = re.compile(rb"(?is)\binsert\s+into\s+[\w.\"`]+\s*\(([^)]*)\)\s*values\s*")
_SQL_TUPLE_ITEM = re.compile(rb"'((?:[^']|'')*)'|(\$\d+|\?|%s|:\w+)|([^,()\s]+)")
# A bound parameter compared to a column: ``email = $1``, ``"u".ssn LIKE $2``. Read from the
# parameter's "$" backwards (on the reversed statement): a pattern that starts with the column
# name has no literal to skip to, and was tried at every byte (5 µs for a one-line statement).
# Reversed, the operators are matched longest first ("!=" before "="), as the forward pattern
# found them; the word boundary LIKE needs before it comes after it ("ekil\b"), and the one it
# needs after it always holds, as blanks or the "$" come next.
_PARAMETER = re.compile(rb"\$(\d+)")
_COMPARED_REVERSED = re.compile(rb"(?i)\s*(?:=!|><|=|ekili\b|ekil\b)\s*([\w.\"]*)")
_COLUMN_START = re.compile(rb"[A-Za-z_]")


@dataclass
class _Session:
    policy: Policy
    output: TerminalStreamMasker
    input: TerminalStreamMasker
    last_seq: int = -1
    secret_input: bytearray = field(default_factory=bytearray)
    secret_entry: bool = False
    prompt_answered: bool = False  # the password prompt on the current line has had its Enter

    def save(self) -> _SessionPoint:
        return (
            self.last_seq,
            bytes(self.secret_input),
            self.secret_entry,
            self.prompt_answered,
            self.output.save(),
            self.input.save(),
        )

    def restore(self, point: _SessionPoint) -> None:
        self.last_seq, secret_input, self.secret_entry, self.prompt_answered, output, typed = point
        self.secret_input[:] = secret_input
        self.output.restore(output)
        self.input.restore(typed)


_SessionPoint = tuple[int, bytes, bool, bool, StreamPoint, StreamPoint]
# The bodies whose masking reads or changes a session's stream state.
_STREAM_BODIES = frozenset({TERMINAL_OUTPUT, TERMINAL_INPUT, SESSION_END, IDLE_TIMEOUT, OUTPUT_FLUSH})


class EventMasker:
    """Implements ``streams.mask.Masker`` over whole events.

    Terminal streams are masked per session, in order of ``seq`` (see ``TerminalStreamMasker`` for
    the carry-over tradeoff). Events that arrive out of order (a LATE fill of a gap, a FORK) are
    masked on their own, without touching the stream. At ``SessionEnd`` the streams are flushed;
    bytes still held (an unfinished last token) are masked and attached to the SessionEnd event
    as ``attributes[OUTPUT_TAIL_ATTRIBUTE]`` and ``attributes[INPUT_TAIL_ATTRIBUTE]`` (base64), so
    nothing the terminal printed or the user typed is dropped. The worker's IdleTimeout, which
    ends a session without a SessionEnd, gets the same, and so does its OutputFlush, which puts
    bytes held too long on record while the session goes on (its streams keep their context),
    and an open password prompt with them (`SECRET_PROMPT_ATTRIBUTE`).
    """

    def __init__(self, engine: MaskingEngine, *, max_hold: int = 8192) -> None:
        self._engine = engine
        self._max_hold = max_hold
        self._sessions: dict[str, _Session] = {}
        self._policies: dict[tuple[str, str], Policy] = {}

    @property
    def open_sessions(self) -> int:
        return len(self._sessions)

    def end_session(self, session_id: str) -> bytes:
        """Forget a session's stream state; returns its held output, masked (usually empty)."""
        session = self._sessions.pop(session_id, None)
        if session is None:
            return b""
        tail, _ = session.output.flush()
        return tail

    def prompt_open(self, session_id: str) -> bool:
        """Whether what the session types next is a secret: a password prompt is unanswered, or
        its answer is being typed. The prompt is only in memory (it decides that what is typed
        next is a password), so the message that printed it must come again after a crash, like
        held bytes."""
        session = self._sessions.get(session_id)
        return session is not None and (
            bool(session.secret_input) or session.secret_entry or self._unanswered_prompt(session)
        )

    def holds_bytes(self, session_id: str) -> bool:
        """Whether the session's streams hold bytes back for its next event."""
        session = self._sessions.get(session_id)
        return session is not None and bool(session.output.held or session.input.held or session.secret_input)

    @staticmethod
    def _unanswered_prompt(session: _Session) -> bool:
        return not session.prompt_answered and bool(_SECRET_PROMPT.search(session.output.current_line()))

    def mask(self, event: dict[str, Any], *, alone: bool = False) -> tuple[dict[str, Any], list[Finding]]:
        """See `streams.mask.Masker.mask`: when masking raises, the session's streams are put back
        as they were before the event, and an output event the stream should have taken fails
        closed: what is typed next, up to Enter, is masked as a password, since the output that
        could not be read may have been a password prompt."""
        if event["body"][0] not in _STREAM_BODIES:
            return self._mask(event, alone=alone)  # no session state: nothing to put back
        session_id = event["session_id"]
        session = self._sessions.get(session_id)
        point = session.save() if session is not None else None
        try:
            return self._mask(event, alone=alone)
        except Exception:
            self._refused(event, session, point, alone=alone)
            raise

    def replay_refused(self, event: dict[str, Any]) -> None:
        """See `streams.mask.Masker.replay_refused`."""
        session = self._sessions.get(event["session_id"])
        point = session.save() if session is not None else None
        try:
            self.mask(event)
        except MemoryError:
            raise
        except Exception:
            return  # failing again, as expected: put back, and failing closed, as at the refusal
        logger.warning("an event masking refused was masked without error when delivered again")
        self._refused(event, session, point, alone=False)

    def _refused(
        self, event: dict[str, Any], session: _Session | None, point: _SessionPoint | None, *, alone: bool
    ) -> None:
        """Masking refused ``event``: its session as before it (``session`` at ``point``, or none),
        failing closed if the event was output its stream should have taken."""
        session_id = event["session_id"]
        if session is None or point is None:
            self._sessions.pop(session_id, None)
        else:
            self._sessions[session_id] = session  # a SessionEnd had taken it out
            session.restore(point)
        in_order = session is None or event["seq"] > session.last_seq
        if event["body"][0] == TERMINAL_OUTPUT and not alone and in_order:
            failing_closed = self._session(session_id, self._policy(event))
            # Keystrokes held back (a token not finished) are the start of that line: masked with
            # it, in order, rather than after it and in clear.
            failing_closed.secret_input += failing_closed.input.take_held()
            failing_closed.secret_entry = True

    def _mask(self, event: dict[str, Any], *, alone: bool) -> tuple[dict[str, Any], list[Finding]]:
        body_type, fields = event["body"]
        policy = self._policy(event)
        if body_type in (TERMINAL_OUTPUT, TERMINAL_INPUT):
            return self._terminal(event, body_type, fields, policy, alone=alone)
        if body_type in (SESSION_END, IDLE_TIMEOUT):  # the worker's idle seal ends a session too
            return self._release_held(event, self._sessions.pop(event["session_id"], None), ending=True)
        if body_type == OUTPUT_FLUSH:
            session = self._sessions.get(event["session_id"])
            if event["attributes"].get(SECRET_PROMPT_ATTRIBUTE):
                # The worker that asked for this flush had a password prompt of the session open
                # (a request is sealed only if the session did nothing since). What is typed next
                # is the secret, until Enter, even across output: a worker that restarted after
                # the prompt's message was acknowledged learns it here, and every worker, with or
                # without a crash, does the same from here on.
                session = session or self._session(event["session_id"], policy)
                session.secret_entry = True
            return self._release_held(event, session, ending=False)
        findings: list[Finding] = []
        new_fields: dict[str, Any] | None = None
        if body_type == QUERY_RESULT:
            new_fields = self._query_result(fields, policy, findings)
        elif body_type == QUERY:
            new_fields = self._query(fields, policy, findings)
        elif body_type == KUBERNETES_API_CALL:
            new_fields = self._text_fields(fields, ("request_body", "response_body"), policy, findings)
        elif body_type == HTTP_EXCHANGE:
            new_fields = self._http(fields, policy, findings)
        elif body_type == COMMAND:
            new_fields = self._command(fields, policy, findings)
        elif body_type in _TEXT_FIELDS:
            new_fields = self._text_fields(fields, _TEXT_FIELDS[body_type], policy, findings)
        if new_fields is None:
            return event, []
        return {**event, "body": (body_type, new_fields)}, findings

    def _policy(self, event: dict[str, Any]) -> Policy:
        key = (event["target"]["name"], event["identity"]["kind"])
        policy = self._policies.get(key)
        if policy is None:
            policy = self._policies[key] = self._engine.policy_for(*key)
        return policy

    # --- terminal -----------------------------------------------------------------------------

    def _session(self, session_id: str, policy: Policy) -> _Session:
        session = self._sessions.get(session_id)
        if session is None:
            session = self._sessions[session_id] = _Session(
                policy=policy,
                output=TerminalStreamMasker(self._engine, policy=policy, max_hold=self._max_hold),
                input=TerminalStreamMasker(self._engine, policy=policy, max_hold=self._max_hold),
            )
        return session

    def _terminal(
        self, event: dict[str, Any], body_type: str, fields: dict[str, Any], policy: Policy, *, alone: bool
    ) -> tuple[dict[str, Any], list[Finding]]:
        data: bytes = fields["data"]
        session = self._session(event["session_id"], policy)
        seq = event["seq"]
        if alone or seq <= session.last_seq:
            # Out of order (LATE or FORK): mask alone; the stream has moved on.
            out, findings = self._engine.mask_bytes(data, "body.data", policy=session.policy)
        else:
            session.last_seq = seq
            if body_type == TERMINAL_OUTPUT:
                session.prompt_answered = False  # the current line may be a new prompt
                out, findings = session.output.feed(data)
            else:
                out, findings = self._input(session, data)
        if out == data and not findings:
            return event, []
        return {**event, "body": (body_type, {**fields, "data": out})}, findings

    def _input(self, session: _Session, data: bytes) -> tuple[bytes, list[Finding]]:
        """Keystrokes. After a password prompt (echo off), hold them until Enter and mask them as
        one PASSWORD; otherwise mask them as a stream like output."""
        if (
            not session.secret_entry
            and session.input.held == 0
            and _SECRET_PROMPT.search(session.output.current_line())
        ):
            session.secret_entry = True
        if not session.secret_entry:
            return session.input.feed(data)
        end = min((i for i in (data.find(b"\r"), data.find(b"\n")) if i >= 0), default=-1)
        if end < 0:
            session.secret_input += data
            return b"", []
        secret = bytes(session.secret_input) + data[:end]
        session.secret_input.clear()
        session.secret_entry = False
        session.prompt_answered = True  # until more output comes: the prompt line stays current
        masked, findings = self._password(secret, session.policy, "body.data")
        rest, more = session.input.feed(data[end:])
        for f in more:
            f["start"] += len(secret)
            f["end"] += len(secret)
        return masked + rest, findings + more

    def _password(self, secret: bytes, policy: Policy, path: str) -> tuple[bytes, list[Finding]]:
        """Keystrokes typed with echo off, masked whole as one PASSWORD (unless allowed)."""
        if not secret or PASSWORD not in policy.entities or policy.allows(secret.decode("utf-8", "replace")):
            return secret, []
        finding = Finding(
            entity_type=PASSWORD,
            field=path,
            start=0,
            end=len(secret),
            blind_index=self._engine.blind_index(PASSWORD, secret),
        )
        return mask_bytes(secret), [finding]

    def _release_held(
        self, event: dict[str, Any], session: _Session | None, *, ending: bool
    ) -> tuple[dict[str, Any], list[Finding]]:
        """``event`` carrying, masked, whatever the session's streams held back: the output's
        unfinished last token, keystrokes of an unfinished token or of a password being typed.
        A session that goes on (not ``ending``) keeps its streams' context: a password prompt
        held back and released still masks what is typed after it."""
        if session is None:
            return event, []
        added: dict[str, str] = {}
        findings: list[Finding] = []
        output_tail, output_findings = session.output.flush() if ending else session.output.release()
        if output_tail:
            added[OUTPUT_TAIL_ATTRIBUTE] = base64.b64encode(output_tail).decode("ascii")
            findings += _moved_to(output_findings, f"attributes.{OUTPUT_TAIL_ATTRIBUTE}")
        input_tail, input_findings = session.input.flush() if ending else session.input.release()
        field = f"attributes.{INPUT_TAIL_ATTRIBUTE}"
        if session.secret_input:
            # Typed after a password prompt, not yet ended by Enter: still the password. The rest
            # of it, if the session goes on, is held and masked as a password of its own.
            secret, secret_findings = self._password(bytes(session.secret_input), session.policy, field)
            session.secret_input.clear()
            for f in secret_findings:
                f["start"] += len(input_tail)
                f["end"] += len(input_tail)
            input_tail += secret
            input_findings += secret_findings
        if input_tail:
            added[INPUT_TAIL_ATTRIBUTE] = base64.b64encode(input_tail).decode("ascii")
            findings += _moved_to(input_findings, field)
        if not ending and (session.secret_entry or self._unanswered_prompt(session)):
            # On record too: what is typed next is the secret (the request may say so already).
            added[SECRET_PROMPT_ATTRIBUTE] = "open"
        if not added:
            return event, []
        return {**event, "attributes": {**event.get("attributes", {}), **added}}, findings

    # --- queries ------------------------------------------------------------------------------

    def _mask_value(
        self, value: str, entity: str | None, path: str, policy: Policy
    ) -> tuple[str, list[Finding]]:
        """A value whose column header or bound parameter names an entity is masked whole, when
        it is plausibly that entity; any other value is scanned like text."""
        if entity is not None and value_ok(entity, value.strip().encode("utf-8", "surrogatepass")):
            return self._engine.mask_whole(value, entity, path, policy=policy)
        return self._engine.mask_text(value, path, policy=policy)

    def _query_result(
        self, fields: dict[str, Any], policy: Policy, findings: list[Finding]
    ) -> dict[str, Any] | None:
        columns: list[str] = fields.get("columns") or []
        entities = [entity_for_key(c) for c in columns]
        rows: list[list[str | None]] = fields.get("rows") or []
        new_rows: list[list[str | None]] | None = None
        for r, row in enumerate(rows):
            new_row: list[str | None] | None = None
            for c, cell in enumerate(row):
                if not cell:
                    continue
                entity = entities[c] if c < len(entities) else None
                masked, found = self._mask_value(cell, entity, f"body.rows[{r}][{c}]", policy)
                if found:
                    findings.extend(found)
                    if new_row is None:
                        new_row = list(row)
                    new_row[c] = masked
            if new_row is not None:
                if new_rows is None:
                    new_rows = [list(x) for x in rows[:r]]
                new_rows.append(new_row)
            elif new_rows is not None:
                new_rows.append(list(row))
        new_fields: dict[str, Any] | None = None
        if new_rows is not None:
            new_fields = {**fields, "rows": new_rows}
        error = fields.get("error")
        if error:
            masked_error, found = self._engine.mask_text(error, "body.error", policy=policy)
            if found:
                findings.extend(found)
                new_fields = {**(new_fields or fields), "error": masked_error}
        return new_fields

    def _query(
        self, fields: dict[str, Any], policy: Policy, findings: list[Finding]
    ) -> dict[str, Any] | None:
        statement: str = fields["statement"]
        raw = statement.encode("utf-8", "surrogatepass")
        literals, param_entities = _sql_context(raw)
        new_fields: dict[str, Any] | None = None
        masked, found = self._engine.mask_text(statement, "body.statement", policy=policy, extra=literals)
        if found:
            findings.extend(found)
            new_fields = {**fields, "statement": masked}
        params: list[str | None] = fields.get("parameters") or []
        new_params: list[str | None] | None = None
        for i, value in enumerate(params):
            if not value:
                continue
            entity = param_entities.get(i + 1)
            masked_value, found = self._mask_value(value, entity, f"body.parameters[{i}]", policy)
            if found:
                findings.extend(found)
                if new_params is None:
                    new_params = list(params)
                new_params[i] = masked_value
        if new_params is not None:
            new_fields = {**(new_fields or fields), "parameters": new_params}
        return new_fields

    # --- HTTP, Kubernetes, commands -----------------------------------------------------------

    def _text_fields(
        self, fields: dict[str, Any], names: tuple[str, ...], policy: Policy, findings: list[Finding]
    ) -> dict[str, Any] | None:
        new_fields: dict[str, Any] | None = None
        for name in names:
            value = fields.get(name)
            if not value:
                continue
            masked, found = self._engine.mask_text(value, f"body.{name}", policy=policy)
            if found:
                findings.extend(found)
                new_fields = {**(new_fields or fields), name: masked}
        return new_fields

    def _http(self, fields: dict[str, Any], policy: Policy, findings: list[Finding]) -> dict[str, Any] | None:
        new_fields = self._text_fields(fields, ("url", "request_body", "response_body"), policy, findings)
        for name in ("request_headers", "response_headers"):
            headers: dict[str, str] = fields.get(name) or {}
            new_headers: dict[str, str] | None = None
            for header, value in headers.items():
                if not value:
                    continue
                path = f"body.{name}.{header}"
                entity = entity_for_key(header)
                if entity in (SECRET, PASSWORD):
                    scheme = value.split(" ", 1)[0] if header.lower().endswith("authorization") else ""
                    keep = len(scheme) + 1 if scheme and " " in value else 0
                    masked_rest, found = self._engine.mask_whole(value[keep:], entity, path, policy=policy)
                    for f in found:
                        f["start"] += keep
                        f["end"] += keep
                    masked = value[:keep] + masked_rest
                else:
                    masked, found = self._engine.mask_text(value, path, policy=policy)
                if found:
                    findings.extend(found)
                    if new_headers is None:
                        new_headers = dict(headers)
                    new_headers[header] = masked
            if new_headers is not None:
                new_fields = {**(new_fields or fields), name: new_headers}
        return new_fields

    def _command(
        self, fields: dict[str, Any], policy: Policy, findings: list[Finding]
    ) -> dict[str, Any] | None:
        argv: list[str] = fields.get("argv") or []
        program = argv[0].rsplit("/", 1)[-1] if argv else ""
        new_argv: list[str] | None = None
        secret_next: str | None = None
        for i, arg in enumerate(argv):
            path = f"body.argv[{i}]"
            found: list[Finding] = []
            masked = arg
            if secret_next is not None and arg:
                masked, found = self._engine.mask_whole(arg, secret_next, path, policy=policy)
                secret_next = None
            elif program in _MYSQL_LIKE and arg.startswith("-p") and len(arg) > 2:
                head, value = arg[:2], arg[2:]
                masked_value, found = self._engine.mask_whole(value, PASSWORD, path, policy=policy)
                for f in found:
                    f["start"] += 2
                    f["end"] += 2
                masked = head + masked_value
            else:
                secret_next = _flag_entity(arg, program, argv[i - 1] if i else "")
                if secret_next is None or "=" in arg:
                    masked, found = self._engine.mask_text(arg, path, policy=policy)
                if program == "curl" and i and argv[i - 1] in ("-u", "--user") and ":" in arg:
                    user, _, password = arg.partition(":")
                    masked_pw, found = self._engine.mask_whole(password, PASSWORD, path, policy=policy)
                    for f in found:
                        f["start"] += len(user) + 1
                        f["end"] += len(user) + 1
                    masked = user + ":" + masked_pw
            if found:
                findings.extend(found)
                if new_argv is None:
                    new_argv = list(argv)
                new_argv[i] = masked
        if new_argv is None:
            return None
        return {**fields, "argv": new_argv}


def _flag_entity(arg: str, program: str, previous: str) -> str | None:
    """The entity of the value that follows a flag such as ``--password`` or ``--first-name``."""
    if not arg.startswith("--") or "=" in arg:
        if program == "sshpass" and arg == "-p":
            return PASSWORD
        return None
    if arg in _SECRET_FLAGS:
        return SECRET if "token" in arg or "key" in arg or "secret" in arg else PASSWORD
    return entity_for_key(arg[2:])


def _sql_context(statement: bytes) -> tuple[list[Span], dict[int, str]]:
    """Literals of ``INSERT ... (cols) VALUES (...)`` in sensitive columns, and the entity of each
    ``$n`` parameter compared to or inserted into such a column."""
    spans: list[Span] = []
    params: dict[int, str] = {}
    # Neither pattern has a literal to skip to, so they are tried at every byte; most statements
    # lack the "$" or the "insert ... (" they need, which memchr and one search rule out first.
    if has(statement, b"$"):
        _param_compares(statement, params)
    if not has(statement, b"(") or not has(statement.lower(), b"insert"):
        return spans, params
    for m in _INSERT.finditer(statement):
        columns = [entity_for_key(c.strip().strip(b'"`')) for c in m.group(1).split(b",")]
        if not any(columns):
            continue
        pos = m.end()
        while pos < len(statement) and statement[pos : pos + 1] == b"(":
            close = _tuple_end(statement, pos)
            items = list(_SQL_TUPLE_ITEM.finditer(statement, pos + 1, close))
            for item, entity in zip(items, columns, strict=False):
                if entity is None:
                    continue
                if item.group(1) is not None and value_ok(entity, item.group(1)):
                    spans.append(Span(item.start(1), item.end(1), entity))
                elif item.group(2) is not None and item.group(2).startswith(b"$"):
                    _note_param(params, item.group(2)[1:], entity)
            pos = close + 1
            while pos < len(statement) and statement[pos : pos + 1] in (b",", b" ", b"\n", b"\t", b"\r"):
                pos += 1
    return spans, params


def _param_compares(statement: bytes, params: dict[int, str]) -> None:
    for column, digits in compared_parameters(statement):
        entity = entity_for_key(column.rsplit(b".", 1)[-1].strip(b'"'))
        if entity is not None:
            _note_param(params, digits, entity)


def compared_parameters(statement: bytes) -> list[tuple[bytes, bytes]]:
    """(column, parameter number) of each ``column <op> $n`` (op ``= <> != LIKE ILIKE``); the
    column is the name's characters (``\\w . "``) from the first letter or ``_``."""
    reversed_statement = statement[::-1]
    compared: list[tuple[bytes, bytes]] = []
    for parameter in _PARAMETER.finditer(statement):
        before = _COMPARED_REVERSED.match(reversed_statement, len(statement) - parameter.start())
        if before is None:
            continue
        name = before.group(1)[::-1]
        start = _COLUMN_START.search(name)
        if start is not None:
            compared.append((name[start.start() :], parameter.group(1)))
    return compared


def _note_param(params: dict[int, str], digits: bytes, entity: str) -> None:
    # A placeholder of thousands of digits names no parameter (PostgreSQL stops at 65535) and
    # is more than int() takes.
    if len(digits) <= 6:
        params[int(digits)] = entity


def _tuple_end(statement: bytes, start: int) -> int:
    in_quote = False
    for i in range(start + 1, len(statement)):
        c = statement[i]
        if c == 0x27:
            in_quote = not in_quote
        elif c == 0x29 and not in_quote:
            return i
    return len(statement)


def _moved_to(findings: list[Finding], field: str) -> list[Finding]:
    for f in findings:
        f["field"] = field
    return findings
