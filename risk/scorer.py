"""Scoring: rule and behaviour hits combined into one 0-100 score with reasons.

Combination: each distinct rule that fired contributes its policy weight w (times the hit's
scale for graded behaviour signals), and

    score = round(100 * (1 - Π(1 - w_i)))

so independent pieces of evidence compound without ever passing 100: one rule of weight 0.7
scores 70, two of 0.5 score 75, a rule of weight 1.0 alone scores 100. A rule firing twice in
one event counts once. Allow-listed rules and rules of weight 0 contribute nothing and are not
listed among the reasons; reasons are ordered by contribution, then rule id.

`RiskScorer.score` is the pure step (state in, state out); `StatefulScorer` is the adapter that
caches identity states in memory, loads and hands back changed ones for durable storage (the
worker keeps them in the index, keyed by `identity_key`), and is the seal step's scorer
(`score(event, findings)`, `is_alert`, `prepare`; `streams.score.Scorer`).
"""

from __future__ import annotations

import logging
import traceback
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import PurePath
from typing import Any

from risk import behaviour
from risk.behaviour import IdentityState
from risk.model import FAILED_RULE, Hit
from risk.policy import US_PER_HOUR, KindPolicy, Policy, default_policy
from risk.rules import command_line, http_hits, kubernetes_hits, shell_hits
from risk.sql import analyze, dialect_for, sql_hits
from schemas.bodies import COMMAND, HTTP_EXCHANGE, KUBERNETES_API_CALL, QUERY, TERMINAL_INPUT, WORKER_REQUESTS

logger = logging.getLogger(__name__)


class StateUnavailable(Exception):
    """A loader's answer when the durable store cannot be read now (the index is down).

    The identity is then scored on a fresh state, which is *not* handed back for storing:
    stored, it would be the newest row and replace the identity's whole history with one batch.
    It is forgotten after the batch (`take_changes`), so the next batch reads the store again.
    """


# Reads an identity's stored state (`IdentityState.to_dict` form) by `identity_key`, or None for
# an identity never stored; raises `StateUnavailable` when the store cannot be read.
StateLoader = Callable[[str], Mapping[str, Any] | None]
# Several identities at once: the stored states of those that have one.
BulkStateLoader = Callable[[list[str]], Mapping[str, Mapping[str, Any]]]


def combine(weights: Iterable[float]) -> int:
    """100 * (1 - Π(1 - w)), rounded half up, within 0-100."""
    remaining = 1.0
    for weight in weights:
        remaining *= 1.0 - min(1.0, max(0.0, weight))
    # The epsilon keeps 1 - (1 - 0.7) = 0.69999... from rounding to 69.
    return min(100, max(0, int(100.0 * (1.0 - remaining) + 0.5 + 1e-9)))


def identity_key(event: Mapping[str, Any]) -> str:
    """Whose history an event belongs to: the principal as vouched for by its issuer."""
    identity = event["identity"]
    return f"{identity.get('issuer') or ''}|{identity['principal']}"


class RiskScorer:
    """Scores events under a policy. Holds no state of its own."""

    def __init__(self, policy: Policy | None = None) -> None:
        self.policy = policy or default_policy()

    def score(
        self, event: Mapping[str, Any], findings: list[Mapping[str, Any]], state: IdentityState | None
    ) -> tuple[dict[str, Any] | None, IdentityState]:
        """The Risk of ``event`` ({"score", "reasons"}) and the identity's state after it.

        Pure: ``state`` (None for an identity never seen) is not modified. The risk is None
        only for the worker's requests (IdleTimeout, OutputFlush), which no identity performed.
        """
        new_state = state.copy() if state is not None else IdentityState()
        return self.score_owned(event, findings, new_state), new_state

    def score_owned(
        self, event: Mapping[str, Any], findings: list[Mapping[str, Any]], state: IdentityState
    ) -> dict[str, Any] | None:
        """`score` for a caller that owns ``state``: updates it in place instead of copying."""
        body_name, body = event["body"]
        if body_name in WORKER_REQUESTS:
            return None
        policy = self.policy.for_kind(str(event["identity"]["kind"]))
        # The rules first: they parse what the identity sent (SQL, pod specs, shell lines, URLs),
        # and an input none of them foresaw must neither stop the worker nor pass as harmless. A
        # rule that raises is a reason of its own. The identity's history (rows, hours, targets)
        # is updated after the rules, so a rule that failed does not leave it half-updated; only
        # the keystrokes of a line a shell rule failed on are gone from the line being typed.
        try:
            hits = _rule_hits(event, body_name, body, state, policy)
        except MemoryError:
            raise
        except Exception as exc:  # any failure on content becomes a reason
            hits = [_failure("rules", exc)]
        try:
            hits.extend(behaviour.assess(state, event, findings, policy.behaviour))
        except MemoryError:
            raise
        except Exception as exc:
            hits.append(_failure("behaviour", exc))
        return _risk(event, hits, policy)

    def threshold(self, event: Mapping[str, Any]) -> int:
        """Score at or above which ``event`` is an alert, under its identity kind's policy."""
        return self.policy.for_kind(str(event["identity"]["kind"])).threshold

    def is_alert(self, event: Mapping[str, Any], risk: Mapping[str, Any] | None) -> bool:
        return risk is not None and int(risk["score"]) >= self.threshold(event)


def _rule_hits(
    event: Mapping[str, Any],
    body_name: str,
    body: Mapping[str, Any],
    state: IdentityState,
    policy: KindPolicy,
) -> list[Hit]:
    if body_name == QUERY:
        target = event["target"]
        facts = analyze(
            str(body.get("statement") or ""),
            dialect_for(target.get("kind")),
            body.get("database") or target.get("database"),
        )
        return sql_hits(facts, policy.is_sensitive_table)
    if body_name == KUBERNETES_API_CALL:
        return kubernetes_hits(body)
    if body_name == HTTP_EXCHANGE:
        return http_hits(body, policy.bulk_page_size)
    if body_name == COMMAND:
        return shell_hits(command_line([str(arg) for arg in body.get("argv") or ()]))
    if body_name == TERMINAL_INPUT:
        hits: list[Hit] = []
        for line in behaviour.take_lines(state, str(event["session_id"]), body.get("data") or b""):
            hits.extend(shell_hits(line))
        return hits
    return []


def _failure(part: str, error: Exception) -> Hit:
    """The reason an event gets when scoring it raised. It names the error's type and where it
    was raised, never the error's text, which may quote the event."""
    frames = traceback.extract_tb(error.__traceback__)
    where = f" at {PurePath(frames[-1].filename).name}:{frames[-1].lineno}" if frames else ""
    logger.error("risk %s failed on an event: %s%s", part, type(error).__name__, where)
    what = f"{type(error).__name__}{where}"
    return Hit(FAILED_RULE, f"Risk {part} could not be evaluated on this event ({what})")


def _risk(event: Mapping[str, Any], hits: list[Hit], policy: KindPolicy) -> dict[str, Any]:
    if not hits:  # most events: nothing to weigh, and nothing of the event needs reading
        return {"score": 0, "reasons": []}
    principal = str(event["identity"]["principal"])
    target = str(event["target"]["name"])
    hour = (int(event["event_time"]) // US_PER_HOUR) % 24
    best: dict[str, tuple[float, Hit]] = {}
    for hit in hits:
        weight = policy.weight(hit.rule_id) * hit.scale
        if weight <= 0.0 or policy.is_allowed(hit.rule_id, principal, target, hit.subject, hour):
            continue
        current = best.get(hit.rule_id)
        if current is None or weight > current[0]:
            best[hit.rule_id] = (weight, hit)
    ordered = sorted(best.values(), key=lambda item: (-item[0], item[1].rule_id))
    return {
        "score": combine(weight for weight, _ in ordered),
        "reasons": [{"rule_id": hit.rule_id, "message": hit.message} for _, hit in ordered],
    }


class StatefulScorer:
    """Identity states in memory, ``score(event, findings)`` for the seal step (the worker's scorer:
    `streams.score.Scorer`, and its identity states' `streams.behaviour_store.PersistentScorerState`).

    Memory is a cache of at most ``max_identities`` states (least recently seen forgotten). With a
    ``loader``, an identity missing from memory is read from durable storage (in the worker, the
    index: `streams.behaviour_store`) instead of starting afresh, and `take_changes` hands back
    what changed since the last call for the caller to store. Feeding the same event twice
    counts it twice, which the seal step avoids by scoring only the events it chains.
    """

    def __init__(
        self,
        policy: Policy | None = None,
        max_identities: int = 100_000,
        *,
        loader: StateLoader | None = None,
    ) -> None:
        self.scorer = RiskScorer(policy)
        self.max_identities = max_identities
        self.loader = loader
        self.bulk_loader: BulkStateLoader | None = None
        self._states: OrderedDict[str, IdentityState] = OrderedDict()
        self._changed: set[str] = set()
        self._evicted: dict[str, dict[str, Any]] = {}
        self._provisional: set[str] = set()  # scored on a fresh state: the store could not be read

    def score(self, event: dict[str, Any], findings: Sequence[Mapping[str, Any]]) -> dict[str, Any] | None:
        key = identity_key(event)
        state = self._states.pop(key, None)
        if state is None:
            state = self._load(key)
        try:
            return self.scorer.score_owned(event, list(findings), state)
        finally:
            # Even when scoring raised: a state popped and not put back would be missing from
            # `take_changes` while still marked changed.
            self._changed.add(key)
            self._remember(key, state)

    def _remember(self, key: str, state: IdentityState) -> None:
        """Keep ``state`` as the most recently seen, forgetting the least recent beyond the cap."""
        self._states[key] = state
        while len(self._states) > self.max_identities:
            forgotten, forgotten_state = self._states.popitem(last=False)
            if forgotten in self._provisional:
                self._provisional.discard(forgotten)
                self._changed.discard(forgotten)
            elif forgotten in self._changed:  # still to be stored: keep its last form until then
                self._evicted[forgotten] = forgotten_state.to_dict()
                self._changed.discard(forgotten)

    def is_alert(self, event: Mapping[str, Any], risk: Mapping[str, Any] | None) -> bool:
        return self.scorer.is_alert(event, risk)

    def prepare(self, events: Iterable[Mapping[str, Any]]) -> None:
        """Bring the identities of ``events`` into memory with one `bulk_loader` call, instead of
        one `loader` call each when they are scored. Malformed events are left to the seal step."""
        if self.bulk_loader is None:
            return
        keys = set()
        for event in events:
            try:
                key = identity_key(event)
            except (KeyError, TypeError, AttributeError):
                continue
            if key not in self._states and key not in self._evicted:
                keys.add(key)
        if not keys:
            return
        try:
            stored = self.bulk_loader(sorted(keys))
        except StateUnavailable:
            stored = {}
            self._provisional.update(keys)
        for key in sorted(keys):
            self._remember(key, _state_from(key, stored.get(key)))

    def take_changes(self) -> dict[str, dict[str, Any]]:
        """Identities scored since the last call, each with its state in plain form. Identities
        scored on a fresh state because the store could not be read are left out, and forgotten."""
        changes = self._evicted
        for key in self._provisional:
            self._changed.discard(key)
            self._states.pop(key, None)
        self._provisional.clear()
        changes.update((key, self._states[key].to_dict()) for key in self._changed)
        self._changed.clear()
        self._evicted = {}
        return changes

    def use_loader(self, loader: StateLoader, bulk_loader: BulkStateLoader | None = None) -> None:
        self.loader = loader
        self.bulk_loader = bulk_loader

    def _load(self, key: str) -> IdentityState:
        # Evicted with changes not yet taken: that is newer than anything stored.
        stored: Mapping[str, Any] | None = self._evicted.pop(key, None)
        if stored is None and self.loader is not None:
            try:
                stored = self.loader(key)
            except StateUnavailable:
                self._provisional.add(key)
        return _state_from(key, stored)

    def state(self, key: str) -> IdentityState | None:
        return self._states.get(key)

    def snapshot(self) -> dict[str, dict[str, Any]]:
        """Every identity's state in plain form, keyed by `identity_key`."""
        return {key: state.to_dict() for key, state in self._states.items()}

    def restore(self, snapshot: Mapping[str, Mapping[str, Any]]) -> None:
        """Replace every state with ``snapshot``'s (changes not yet taken are dropped with them)."""
        self._states = OrderedDict((key, IdentityState.from_dict(value)) for key, value in snapshot.items())
        self._changed.clear()
        self._evicted = {}
        self._provisional.clear()


def _state_from(key: str, stored: Mapping[str, Any] | None) -> IdentityState:
    """The identity's state from its stored form; a fresh one when there is none."""
    if stored is None:
        return IdentityState()
    try:
        return IdentityState.from_dict(stored)
    except ValueError as exc:
        # An old or damaged state costs only the identity's history, never the event.
        logger.warning("identity %s: stored behaviour state unusable (%s); starting afresh", key, exc)
        return IdentityState()


@dataclass(frozen=True)
class SessionRiskSummary:
    """Risk over a whole session: the highest and summed event scores, and what fired."""

    max_score: int = 0
    total_score: int = 0
    events: int = 0
    alerts: int = 0
    rules: Mapping[str, int] = field(default_factory=dict)  # rule id -> events it fired on

    def add(self, risk: Mapping[str, Any] | None, threshold: int = 70) -> SessionRiskSummary:
        """This summary with one more event's risk (None: an unscored event) folded in."""
        if risk is None:
            return self
        score = int(risk["score"])
        rules = dict(self.rules)
        for reason in risk["reasons"]:
            rules[reason["rule_id"]] = rules.get(reason["rule_id"], 0) + 1
        return SessionRiskSummary(
            max_score=max(self.max_score, score),
            total_score=self.total_score + score,
            events=self.events + 1,
            alerts=self.alerts + (score >= threshold),
            rules=rules,
        )

    @classmethod
    def of(cls, risks: Iterable[Mapping[str, Any] | None], threshold: int = 70) -> SessionRiskSummary:
        summary = cls()
        for risk in risks:
            summary = summary.add(risk, threshold)
        return summary

    def to_dict(self) -> dict[str, Any]:
        return {
            "max_score": self.max_score,
            "total_score": self.total_score,
            "events": self.events,
            "alerts": self.alerts,
            "rules": dict(sorted(self.rules.items())),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SessionRiskSummary:
        return cls(
            max_score=int(data["max_score"]),
            total_score=int(data["total_score"]),
            events=int(data["events"]),
            alerts=int(data["alerts"]),
            rules={str(k): int(v) for k, v in data["rules"].items()},
        )
