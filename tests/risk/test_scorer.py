"""The scorer on the labeled corpus (precision and recall), its combination rule, purity and adapters."""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

import pytest

from risk.behaviour import IdentityState
from risk.corpus import Example, corpus
from risk.model import FAILED_RULE, RULES
from risk.policy import parse_policy
from risk.scorer import RiskScorer, SessionRiskSummary, StatefulScorer, combine, identity_key
from schemas import EVENT_SCHEMA, default_registry
from streams.seal import SealStep, SessionState

CORPUS = corpus()


def evaluate(examples: list[Example]) -> tuple[Counter[str], list[str]]:
    """Counts of tp / fp / fn / tn over labeled events, and a line per mistake."""
    scorer = StatefulScorer()
    counts: Counter[str] = Counter()
    mistakes: list[str] = []
    for example in examples:
        risk = scorer.score(example.event, list(example.findings))
        if example.alert is None:
            continue
        assert risk is not None
        alerted = risk["score"] >= scorer.scorer.threshold(example.event)
        rules = [reason["rule_id"] for reason in risk["reasons"]]
        if example.alert and alerted and example.rule_id in rules:
            counts["tp"] += 1
        elif example.alert:
            counts["fn"] += 1
            mistakes.append(f"missed {example.scenario} {example.rule_id}: {risk}")
        elif alerted:
            counts["fp"] += 1
            mistakes.append(f"false alert {example.scenario} {example.event['body'][0]}: {risk}")
        else:
            counts["tn"] += 1
    return counts, mistakes


def test_corpus_precision_and_recall() -> None:
    counts, mistakes = evaluate(CORPUS)
    precision = counts["tp"] / (counts["tp"] + counts["fp"])
    recall = counts["tp"] / (counts["tp"] + counts["fn"])
    print(f"\ncorpus: {dict(counts)} precision={precision:.3f} recall={recall:.3f}")
    assert mistakes == []
    assert (precision, recall) == (1.0, 1.0)
    assert counts["tp"] >= 200
    assert counts["tn"] >= 3000


def test_corpus_has_a_risky_example_for_every_rule_that_can_alert() -> None:
    expected = {example.rule_id for example in CORPUS if example.alert}
    # No valid event makes a rule raise (each such input found was fixed); see the test below.
    assert expected == set(RULES) - {"sql.unparsed", FAILED_RULE}


def test_corpus_covers_every_identity_kind_with_benign_activity() -> None:
    kinds = {example.event["identity"]["kind"] for example in CORPUS if example.alert is False}
    assert {"CI_JOB", "SERVICE_ACCOUNT", "SCANNER", "AI_AGENT", "HUMAN"} <= kinds


def test_corpus_is_deterministic() -> None:
    again = corpus()
    assert [e.event for e in again] == [e.event for e in CORPUS]
    assert [(e.alert, e.rule_id) for e in again] == [(e.alert, e.rule_id) for e in CORPUS]


def test_corpus_events_are_valid_session_events() -> None:
    registry = default_registry()
    for example in CORPUS[::25]:
        registry.encode_body(EVENT_SCHEMA, example.event)


@pytest.mark.parametrize(
    ("weights", "score"),
    [
        ([], 0),
        ([0.7], 70),
        ([0.5, 0.5], 75),
        ([1.0], 100),
        ([0.3, 1.0], 100),
        ([0.05], 5),
        ([2.0, -1.0], 100),
    ],
)
def test_combine(weights: list[float], score: int) -> None:
    assert combine(weights) == score


def test_score_is_pure_and_matches_the_stateful_adapter() -> None:
    scorer = RiskScorer()
    stateful = StatefulScorer()
    states: dict[str, IdentityState] = {}
    for example in CORPUS[:1500]:
        key = identity_key(example.event)
        before = states.get(key)
        snapshot = json.dumps(before.to_dict()) if before is not None else None
        risk, states[key] = scorer.score(example.event, list(example.findings), before)
        if before is not None:
            assert json.dumps(before.to_dict()) == snapshot
        assert risk == stateful.score(example.event, list(example.findings))


def test_reasons_are_ordered_by_contribution_and_each_rule_counts_once() -> None:
    event = CORPUS[0].event | {
        "body": (
            "dev.blackbox.v1.Query",
            {
                "statement": "SELECT * FROM customers; DROP TABLE a; DROP TABLE b",
                "parameters": [],
                "database": None,
            },
        ),
        "identity": {"principal": "p", "kind": "HUMAN", "issuer": None, "groups": []},
    }
    risk, _ = RiskScorer().score(event, [], None)
    assert risk is not None
    assert [r["rule_id"] for r in risk["reasons"]] == ["sql.drop", "sql.select_star_sensitive"]
    assert risk["score"] == combine([0.8, 0.7])


def test_kind_policies_allow_lists_and_thresholds() -> None:
    base = CORPUS[0].event
    ddl = (
        "dev.blackbox.v1.Query",
        {"statement": "ALTER TABLE a ADD COLUMN b int", "parameters": [], "database": None},
    )

    def score(kind: str, policy_text: str = "", hour: int = 14) -> int:
        event = base | {
            "body": ddl,
            "identity": {"principal": "repo:acme/x", "kind": kind, "issuer": None, "groups": []},
            "event_time": 1_767_571_200_000_000 + hour * 3_600_000_000,
        }
        risk, _ = RiskScorer(parse_policy(policy_text)).score(event, [], None)
        assert risk is not None
        return int(risk["score"])

    assert score("CI_JOB") == 20
    assert score("AI_AGENT") == 70
    assert score("HUMAN") == 50
    assert score("UNKNOWN") == 50
    window = (
        "defaults:\n  allow:\n    - rules: [sql.*]\n"
        "      principals: ['repo:acme/*']\n      hours_utc: [[14, 16]]\n"
    )
    assert score("AI_AGENT", window) == 0
    assert score("AI_AGENT", window, hour=17) == 70
    assert score("HUMAN", "kinds:\n  HUMAN:\n    weights:\n      sql.ddl: 0\n") == 0
    strict = RiskScorer(parse_policy("kinds:\n  HUMAN:\n    threshold: 40\n"))
    human = base | {"identity": {"principal": "p", "kind": "HUMAN", "issuer": None, "groups": []}}
    assert strict.threshold(human) == 40
    assert strict.is_alert(human, {"score": 50, "reasons": []})
    assert not RiskScorer().is_alert(human, {"score": 50, "reasons": []})


def test_exfil_destinations_can_be_allow_listed() -> None:
    base = CORPUS[0].event
    event = base | {
        "body": (
            "dev.blackbox.v1.Command",
            {"argv": ["aws", "s3", "cp", "d.sql", "s3://acme-backups/"], "cwd": None, "exit_code": 0},
        )
    }
    risk, _ = RiskScorer().score(event, [], None)
    assert risk is not None
    assert risk["score"] == 75
    allowed = parse_policy(
        "defaults:\n  allow:\n    - rules: [shell.exfil_copy]\n      subjects: ['s3://acme-backups']\n"
    )
    risk, _ = RiskScorer(allowed).score(event, [], None)
    assert risk == {"score": 0, "reasons": []}


def test_idle_timeouts_are_not_scored() -> None:
    event = CORPUS[0].event | {"body": ("dev.blackbox.v1.IdleTimeout", {"last_seq": 3, "idle_seconds": 600})}
    risk, state = RiskScorer().score(event, [], None)
    assert risk is None
    assert state.events == 0


def test_session_summary() -> None:
    risks: list[dict[str, Any] | None] = [
        {"score": 20, "reasons": [{"rule_id": "sql.ddl", "message": "m"}]},
        None,
        {
            "score": 85,
            "reasons": [{"rule_id": "sql.drop", "message": "m"}, {"rule_id": "sql.ddl", "message": "m"}],
        },
        {"score": 0, "reasons": []},
    ]
    summary = SessionRiskSummary.of(risks, threshold=70)
    assert (summary.max_score, summary.total_score, summary.events, summary.alerts) == (85, 105, 3, 1)
    assert summary.rules == {"sql.ddl": 2, "sql.drop": 1}
    assert SessionRiskSummary.from_dict(json.loads(json.dumps(summary.to_dict()))) == summary


def test_stateful_scorer_snapshot_restore_and_bound() -> None:
    scorer = StatefulScorer(max_identities=3)
    for example in CORPUS[:2000]:
        scorer.score(example.event, list(example.findings))
    snapshot = json.loads(json.dumps(scorer.snapshot()))
    assert len(snapshot) == 3
    restored = StatefulScorer()
    restored.restore(snapshot)
    tail = CORPUS[2000:2300]
    assert [scorer.score(e.event, list(e.findings)) for e in tail] == [
        restored.score(e.event, list(e.findings)) for e in tail
    ]


def test_restoring_drops_changes_of_states_it_replaces() -> None:
    scorer = StatefulScorer()
    scorer.score(CORPUS[0].event, list(CORPUS[0].findings))
    scorer.restore({})  # the scored identity is gone, and so is its pending change
    assert scorer.take_changes() == {}


def test_the_seal_step_records_the_risk() -> None:
    registry = default_registry()
    step = SealStep(registry, scorer=StatefulScorer())
    event = CORPUS[0].event | {
        "session_id": "risk-seal-1",
        "seq": 0,
        "body": (
            "dev.blackbox.v1.Command",
            {"argv": ["cat", "/root/.aws/credentials"], "cwd": None, "exit_code": 0},
        ),
        "identity": {"principal": "p", "kind": "HUMAN", "issuer": None, "groups": []},
    }
    result = step(
        event,
        registry.encode_body(EVENT_SCHEMA, event),
        SessionState("risk-seal-1", partition=0),
        lambda _sid, _seq: None,
        message_key=b"risk-seal-1",
    )
    (record,) = result.records
    assert record.value["risk"] == {
        "score": 75,
        "reasons": [{"rule_id": "shell.credential_file_read", "message": "reads AWS credentials with cat"}],
    }


def test_an_identity_evicted_before_its_changes_were_taken_comes_back_with_them() -> None:
    stored: dict[str, Any] = {}
    scorer = StatefulScorer(max_identities=1, loader=stored.get)
    scorer.score(_event_of("alice"), [])
    scorer.score(_event_of("bob"), [])  # alice is evicted, her change not yet taken
    scorer.score(_event_of("alice"), [])
    state = scorer.state("|alice")
    assert state is not None
    assert state.events == 2  # both of alice's events, not a fresh state
    assert set(scorer.take_changes()) == {"|alice", "|bob"}


def _event_of(principal: str) -> dict[str, Any]:
    return CORPUS[0].event | {
        "identity": {"principal": principal, "kind": "HUMAN", "issuer": None, "groups": []}
    }


class _UnreadableQuery(dict[str, Any]):
    """A Query body whose statement raises when read: stands in for content a rule's parser was
    not written for, its error quoting the content as errors do."""

    def get(self, key: str, default: Any = None) -> Any:
        if key == "statement":
            raise ValueError("cannot parse: SELECT ssn FROM patients WHERE name = 'Ada Lovelace'")
        return super().get(key, default)


def test_an_event_scoring_fails_on_is_flagged_for_review_and_history_still_counts_it() -> None:
    scorer = StatefulScorer()
    body = _UnreadableQuery(statement="", parameters=[], database=None)
    event = CORPUS[0].event | {"body": ("dev.blackbox.v1.Query", body)}
    risk = scorer.score(event, [])
    assert risk is not None
    assert risk["score"] == 70  # the shipped weight: at the threshold, so it alerts
    assert scorer.scorer.is_alert(event, risk)
    ((reason),) = risk["reasons"]
    assert reason["rule_id"] == FAILED_RULE
    assert reason["message"].startswith("Risk rules could not be evaluated on this event (ValueError at ")
    assert "Lovelace" not in reason["message"]
    state = scorer.state(identity_key(event))
    assert state is not None
    assert state.events == 1  # the identity's history took the event in
