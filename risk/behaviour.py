"""Per-identity behaviour: each identity is compared with its own history, not with a global norm.

`IdentityState` is everything remembered about one identity (a plain dict away from a Faust
table row). `assess` judges an event against that state and then folds the event into it.
Time is the event's ``event_time``, never the clock, so replaying the same events in the same
order gives the same hits and the same state.

Sizes (rows, bytes, request rates) are heavy-tailed, so their history is an exponentially
weighted mean and variance of ``log1p(value)``: "k sigma above" then means "a large factor above
what this identity usually does", and a floor on the standard deviation keeps a perfectly
regular history from flagging small wobbles. Once warm, a value enters the history clipped to
two standard deviations around the mean (a Huber-style update), so a burst or a run of dumps
cannot make itself look normal while it lasts, and a run of empty answers cannot widen the
history until nothing stands out; a lasting change of habit still moves the mean, slowly.
A graded signal uses half its policy weight at ``sigma`` and all of it at ``full_sigma``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from risk.model import Hit
from risk.policy import US_PER_HOUR, BehaviourParams
from risk.rules import feed_keystrokes
from schemas.bodies import (
    COMMAND,
    HTTP_EXCHANGE,
    KUBERNETES_API_CALL,
    QUERY,
    QUERY_RESULT,
    SESSION_END,
    TERMINAL_OUTPUT,
)

STATE_VERSION = 1
US_PER_MINUTE = 60_000_000
# The hour histogram is halved when it holds more sessions than this, so habits can change.
HOURS_CAP = 500.0
# Values enter the history clipped this many standard deviations around the mean.
CLIP_SIGMAS = 2.0
# What counts as a request for burst detection: terminal output and keystrokes are not.
_REQUESTS = {QUERY, KUBERNETES_API_CALL, HTTP_EXCHANGE, COMMAND}


@dataclass(slots=True)
class Ewma:
    """Exponentially weighted mean and variance (West's incremental form)."""

    mean: float = 0.0
    var: float = 0.0
    n: int = 0

    def update(self, value: float, alpha: float, clip: tuple[float, float] | None = None) -> None:
        """Fold in ``value``, first clipped into ``clip`` (low, high) when given."""
        if clip is not None:
            value = min(max(value, clip[0]), clip[1])
        # Until 1/alpha observations are in, a plain running mean: the first value is no anchor.
        weight = max(alpha, 1.0 / (self.n + 1))
        diff = value - self.mean
        increment = weight * diff
        self.mean += increment
        self.var = (1.0 - weight) * (self.var + diff * increment)
        self.n += 1

    def sigmas(self, value: float, min_std: float) -> float:
        return (value - self.mean) / max(math.sqrt(self.var), min_std)

    def clip(self, params: BehaviourParams, warm: int) -> tuple[float, float] | None:
        """Bounds for the next update (mean ± 2 std); None while fewer than ``warm`` are in."""
        if self.n < warm:
            return None
        spread = CLIP_SIGMAS * max(math.sqrt(self.var), params.min_std)
        return self.mean - spread, self.mean + spread


@dataclass(slots=True)
class SessionMark:
    """What is tracked per open session of an identity."""

    hour: int = -1  # hour of day this session added to the histogram; -1 if none
    new_target: bool = False
    findings: int = 0
    out_bytes: int = 0
    out_level: int = 0  # 1 once output passed sigma, 2 once it passed twice that
    ended: bool = False
    pending: str = ""  # terminal input typed since the last Enter


@dataclass(slots=True)
class IdentityState:
    """Everything the scorer remembers about one identity. Serialise with `to_dict`."""

    events: int = 0
    channels: dict[str, Ewma] = field(default_factory=dict)
    targets: dict[str, None] = field(default_factory=dict)  # insertion order = least recently used first
    hours: list[float] = field(default_factory=lambda: [0.0] * 24)
    minute: int = -1
    minute_count: int = 0
    prev_minute_count: int = 0
    sessions: dict[str, SessionMark] = field(default_factory=dict)

    def copy(self) -> IdentityState:
        return IdentityState(
            events=self.events,
            channels={name: Ewma(e.mean, e.var, e.n) for name, e in self.channels.items()},
            targets=dict(self.targets),
            hours=list(self.hours),
            minute=self.minute,
            minute_count=self.minute_count,
            prev_minute_count=self.prev_minute_count,
            sessions={
                sid: SessionMark(
                    m.hour, m.new_target, m.findings, m.out_bytes, m.out_level, m.ended, m.pending
                )
                for sid, m in self.sessions.items()
            },
        )

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-compatible form (for the index's identity_behaviour table or a file)."""
        return {
            "version": STATE_VERSION,
            "events": self.events,
            "channels": {name: [e.mean, e.var, e.n] for name, e in self.channels.items()},
            "targets": list(self.targets),
            "hours": list(self.hours),
            "burst": [self.minute, self.minute_count, self.prev_minute_count],
            "sessions": {
                sid: {
                    "hour": m.hour,
                    "new_target": m.new_target,
                    "findings": m.findings,
                    "out_bytes": m.out_bytes,
                    "out_level": m.out_level,
                    "ended": m.ended,
                    "pending": m.pending,
                }
                for sid, m in self.sessions.items()
            },
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> IdentityState:
        """Inverse of `to_dict`; raises ValueError on a state of another version or shape."""
        if data.get("version") != STATE_VERSION:
            raise ValueError(f"identity state version {data.get('version')!r} is not {STATE_VERSION}")
        try:
            minute, count, prev = (int(v) for v in data["burst"])
            hours = [float(h) for h in data["hours"]]
            if len(hours) != 24:
                raise ValueError("hours must have 24 entries")
            return cls(
                events=int(data["events"]),
                channels={
                    str(name): Ewma(float(mean), float(var), int(n))
                    for name, (mean, var, n) in data["channels"].items()
                },
                targets=dict.fromkeys(str(t) for t in data["targets"]),
                hours=hours,
                minute=minute,
                minute_count=count,
                prev_minute_count=prev,
                sessions={
                    str(sid): SessionMark(
                        hour=int(m["hour"]),
                        new_target=bool(m["new_target"]),
                        findings=int(m["findings"]),
                        out_bytes=int(m["out_bytes"]),
                        out_level=int(m["out_level"]),
                        ended=bool(m["ended"]),
                        pending=str(m["pending"]),
                    )
                    for sid, m in data["sessions"].items()
                },
            )
        except (KeyError, TypeError, AttributeError) as exc:
            raise ValueError(f"malformed identity state: {exc!r}") from exc


def observe(
    state: IdentityState, event: Mapping[str, Any], findings: list[Mapping[str, Any]], params: BehaviourParams
) -> tuple[list[Hit], IdentityState]:
    """Pure form of `assess`: the hits, and a new state; ``state`` is left as it was."""
    new_state = state.copy()
    return assess(new_state, event, findings, params), new_state


def assess(
    state: IdentityState, event: Mapping[str, Any], findings: list[Mapping[str, Any]], params: BehaviourParams
) -> list[Hit]:
    """Behaviour hits for ``event``, judged against ``state`` before the event; then records it.

    Mutates ``state``: pass one you own (`observe` copies first).
    """
    time_us = int(event["event_time"])
    hour = (time_us // US_PER_HOUR) % 24
    body_name, body = event["body"]
    mark = _session_mark(state, event, params, hour)
    hits: list[Hit] = []
    if mark.new_target:
        hits.append(
            Hit(
                "behaviour.first_target", f"first access to target {event['target']['name']} by this identity"
            )
        )
    unusual = _unusual_hour(state, mark, hour, params)
    if unusual is not None:
        hits.append(unusual)
    if body_name in _REQUESTS:
        burst = _burst(state, time_us, params)
        if burst is not None:
            hits.append(burst)
    if body_name == QUERY_RESULT and not body.get("error"):
        rows = int(body.get("row_count") or 0)
        hits.extend(_spike(state, params, "rows", rows))
        size = sum(len(c) for c in body.get("columns") or ()) + sum(
            len(cell) for row in body.get("rows") or () for cell in row if cell
        )
        hits.extend(_spike(state, params, "bytes.query", size))
    elif body_name in (KUBERNETES_API_CALL, HTTP_EXCHANGE):
        channel = "bytes.k8s" if body_name == KUBERNETES_API_CALL else "bytes.http"
        size = len(body.get("response_body") or "")
        hits.extend(_spike(state, params, channel, size))
    elif body_name == TERMINAL_OUTPUT:
        mark.out_bytes += len(body.get("data") or b"")
        session_spike = _session_output(state, mark, params)
        if session_spike is not None:
            hits.append(session_spike)
    elif body_name == SESSION_END and not mark.ended:
        _close(state, mark, params)
    bulk = _bulk_findings(mark, findings, params)
    if bulk is not None:
        hits.append(bulk)
    state.events += 1
    return hits


def take_lines(state: IdentityState, session_id: str, data: bytes) -> list[str]:
    """Lines completed by terminal input ``data`` in a session; mutates ``state``."""
    mark = state.sessions.get(session_id)
    if mark is None:
        mark = state.sessions[session_id] = SessionMark()
    lines, mark.pending = feed_keystrokes(mark.pending, data)
    return lines


def _session_mark(
    state: IdentityState, event: Mapping[str, Any], params: BehaviourParams, hour: int
) -> SessionMark:
    session_id = str(event["session_id"])
    mark = state.sessions.pop(session_id, None)
    # Re-inserted on every event: the dict is in least-recently-active order for eviction.
    mark = state.sessions[session_id] = mark if mark is not None else SessionMark()
    if mark.hour >= 0:
        return mark
    # A session is counted once: the histogram is of sessions, so a chatty one weighs no more.
    target = str(event["target"]["name"])
    mark.new_target = state.events >= params.first_target_after and target not in state.targets
    state.targets.pop(target, None)
    state.targets[target] = None
    while len(state.targets) > max(1, params.max_targets):
        del state.targets[next(iter(state.targets))]
    if sum(state.hours) >= HOURS_CAP:
        state.hours = [h / 2 for h in state.hours]
    state.hours[hour] += 1.0
    mark.hour = hour
    while len(state.sessions) > max(1, params.max_sessions):
        oldest_id = next(iter(state.sessions))
        _close(state, state.sessions.pop(oldest_id), params)
    return mark


def _unusual_hour(state: IdentityState, mark: SessionMark, hour: int, params: BehaviourParams) -> Hit | None:
    # This session is in the histogram already and must not vouch for itself.
    total = sum(state.hours) - 1.0
    if total < params.hours_warmup:
        return None
    near = state.hours[(hour - 1) % 24] + state.hours[hour] + state.hours[(hour + 1) % 24]
    if (mark.hour - hour) % 24 in (0, 1, 23):
        near = max(0.0, near - 1.0)
    share = near / total
    if share >= params.unusual_hour_share:
        return None
    return Hit(
        "behaviour.unusual_hour",
        f"active at {hour:02d}:00 UTC; {share:.0%} of this identity's sessions were within an hour of that",
    )


def _burst(state: IdentityState, time_us: int, params: BehaviourParams) -> Hit | None:
    minute = time_us // US_PER_MINUTE
    if state.minute < 0:
        state.minute = minute
    elif minute > state.minute:
        history = _rate(state)
        history.update(
            math.log1p(state.minute_count), params.alpha, history.clip(params, params.burst_warmup)
        )
        state.prev_minute_count = state.minute_count if minute == state.minute + 1 else 0
        state.minute, state.minute_count = minute, 0
    # An event older than the current minute (clock skew between gateways) counts in the current one.
    state.minute_count += 1
    elapsed = (time_us % US_PER_MINUTE) / US_PER_MINUTE if minute == state.minute else 1.0
    rate = state.minute_count + state.prev_minute_count * (1.0 - elapsed)
    history = _rate(state)
    if history.n < params.burst_warmup or rate < params.burst_min_per_minute:
        return None
    sigmas = history.sigmas(math.log1p(rate), params.min_std)
    if sigmas < params.sigma:
        return None
    return Hit(
        "behaviour.burst",
        f"{rate:.0f} requests in the last minute; this identity usually makes about "
        f"{math.expm1(history.mean):.0f} a minute when active",
        scale=_scale(sigmas, params),
    )


def _rate(state: IdentityState) -> Ewma:
    return state.channels.setdefault("rate", Ewma())


def _spike(state: IdentityState, params: BehaviourParams, channel: str, value: int) -> list[Hit]:
    """Rows (channel "rows") or bytes (channels "bytes.*") of one event against their history."""
    rule_id, unit, floor = (
        ("behaviour.rows_spike", "rows", params.min_rows)
        if channel == "rows"
        else ("behaviour.bytes_spike", "bytes", params.min_bytes)
    )
    history = state.channels.setdefault(channel, Ewma())
    value = max(value, 0)  # a gateway's negative row count or size means nothing, not an error
    logged = math.log1p(value)
    hits: list[Hit] = []
    if history.n >= params.warmup and value >= floor:
        sigmas = history.sigmas(logged, params.min_std)
        if sigmas >= params.sigma:
            hits.append(
                Hit(
                    rule_id,
                    f"returned {value:,} {unit}; this identity usually gets about "
                    f"{math.expm1(history.mean):,.0f} ({sigmas:.1f} sigma above its history)",
                    scale=_scale(sigmas, params),
                )
            )
    history.update(logged, params.alpha, history.clip(params, params.warmup))
    return hits


def _session_output(state: IdentityState, mark: SessionMark, params: BehaviourParams) -> Hit | None:
    """A terminal session's output so far against this identity's past sessions' totals.

    Output arrives in small chunks, so a dump shows only in the running total. It is reported
    when it passes sigma and again when it passes full_sigma (full weight), not on every chunk.
    """
    history = state.channels.get("bytes.session")
    if (
        mark.out_level >= 2
        or history is None
        or history.n < params.warmup
        or mark.out_bytes < params.min_bytes
    ):
        return None
    sigmas = history.sigmas(math.log1p(mark.out_bytes), params.min_std)
    level = 2 if sigmas >= params.full_sigma else 1 if sigmas >= params.sigma else 0
    if level <= mark.out_level:
        return None
    mark.out_level = level
    return Hit(
        "behaviour.bytes_spike",
        f"this terminal session has printed {mark.out_bytes:,} bytes; this identity's sessions usually "
        f"print about {math.expm1(history.mean):,.0f}",
        scale=_scale(sigmas, params),
    )


def _close(state: IdentityState, mark: SessionMark, params: BehaviourParams) -> None:
    if not mark.ended and mark.out_bytes > 0:
        history = state.channels.setdefault("bytes.session", Ewma())
        history.update(math.log1p(mark.out_bytes), params.alpha, history.clip(params, params.warmup))
    mark.ended = True


def _bulk_findings(
    mark: SessionMark, findings: list[Mapping[str, Any]], params: BehaviourParams
) -> Hit | None:
    if not findings:
        return None
    by_type: dict[str, int] = {}
    for finding in findings:
        entity = str(finding.get("entity_type", "UNKNOWN"))
        by_type[entity] = by_type.get(entity, 0) + 1
    before = mark.findings
    mark.findings += len(findings)
    if len(findings) >= params.bulk_findings or any(
        count >= params.bulk_threshold(entity) for entity, count in by_type.items()
    ):
        return Hit(
            "behaviour.bulk_sensitive_data",
            f"{len(findings):,} masked values returned at once ({_by_count(by_type)})",
        )
    if before < params.bulk_findings <= mark.findings:
        return Hit(
            "behaviour.bulk_sensitive_data",
            f"this session has now returned {mark.findings:,} masked values (latest: {_by_count(by_type)})",
        )
    return None


def _by_count(by_type: Mapping[str, int]) -> str:
    """``EMAIL_ADDRESS 120, PERSON 7``: most frequent first. Only built for a hit: most events
    with findings raise none, and formatting was most of this check's cost."""
    return ", ".join(
        f"{entity} {count:,}" for entity, count in sorted(by_type.items(), key=lambda kv: (-kv[1], kv[0]))
    )


def _scale(sigmas: float, params: BehaviourParams) -> float:
    """0.5 at ``sigma``, rising linearly to 1.0 at ``full_sigma``."""
    span = params.full_sigma - params.sigma
    if span <= 0:
        return 1.0
    return min(1.0, 0.5 + 0.5 * (sigmas - params.sigma) / span)
