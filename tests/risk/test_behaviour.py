"""Per-identity behaviour: each identity against its own history, deterministic, serialisable."""

from __future__ import annotations

import json
from typing import Any

import pytest

from risk.behaviour import IdentityState, observe, take_lines
from risk.policy import BehaviourParams

NS = "dev.blackbox.v1."
T0 = 1_767_600_000_000_000  # Monday 5 January 2026, 08:00 UTC
HOUR = 3_600_000_000
DAY = 24 * HOUR
PARAMS = BehaviourParams()


def event(
    kind: str,
    fields: dict[str, Any],
    *,
    at: int,
    session: str = "s-1",
    target: str = "billing-postgres",
) -> dict[str, Any]:
    return {
        "event_id": f"{session}-{at}",
        "session_id": session,
        "seq": 0,
        "event_time": at,
        "gateway": {"id": "gw", "product": "test", "version": "0"},
        "identity": {"principal": "svc", "kind": "SERVICE_ACCOUNT", "issuer": None, "groups": []},
        "target": {"name": target, "kind": "POSTGRES", "host": None, "database": None},
        "attributes": {},
        "body": (NS + kind, fields),
    }


def result(rows: int, *, at: int, session: str = "s-1", target: str = "billing-postgres") -> dict[str, Any]:
    return event(
        "QueryResult",
        {
            "columns": ["id"],
            "rows": [["1"]] * min(rows, 5),
            "row_count": rows,
            "truncated": rows > 5,
            "duration_us": None,
            "error": None,
        },
        at=at,
        session=session,
        target=target,
    )


def feed(
    state: IdentityState, events: list[dict[str, Any]], findings: list[dict[str, Any]] | None = None
) -> tuple[list[str], IdentityState]:
    ids: list[str] = []
    for item in events:
        hits, state = observe(state, item, findings or [], PARAMS)
        ids += [hit.rule_id for hit in hits]
    return ids, state


def history(days: int = 25, per_day: int = 4, rows: int = 30) -> list[dict[str, Any]]:
    return [
        result(rows + (i % 7), at=T0 + day * DAY + i * 60_000_000, session=f"s-{day}")
        for day in range(days)
        for i in range(per_day)
    ]


def test_rows_spike_against_own_history_after_warm_up() -> None:
    ids, state = feed(IdentityState(), history())
    assert ids == []
    spike, _ = observe(state, result(400_000, at=T0 + 30 * DAY, session="s-x"), [], PARAMS)
    assert [hit.rule_id for hit in spike] == ["behaviour.rows_spike"]
    assert spike[0].scale == 1.0
    assert "400,000 rows" in spike[0].message


def test_no_spike_before_warm_up_or_below_the_floor() -> None:
    ids, _ = feed(IdentityState(), [*history(days=2, per_day=4), result(400_000, at=T0 + 3 * DAY)])
    assert "behaviour.rows_spike" not in ids
    ids, state = feed(IdentityState(), history(rows=1))
    hits, _ = observe(state, result(900, at=T0 + 30 * DAY), [], PARAMS)  # 300x usual, under min_rows
    assert hits == []


def test_a_spike_cannot_make_itself_normal() -> None:
    _, state = feed(IdentityState(), history())
    ids, _ = feed(
        state, [result(400_000, at=T0 + 30 * DAY + i * 1_000_000, session="s-x") for i in range(10)]
    )
    assert ids.count("behaviour.rows_spike") == 10


def test_first_target_only_once_the_identity_has_history() -> None:
    ids, _ = feed(IdentityState(), [result(5, at=T0, target="new-db")])
    assert ids == []
    _, state = feed(IdentityState(), history())
    other = [
        event(
            "Query",
            {"statement": "SELECT 1", "parameters": [], "database": None},
            at=T0 + 30 * DAY + i,
            session="s-new",
            target="other-db",
        )
        for i in range(3)
    ]
    ids, state = feed(state, other)
    assert ids == ["behaviour.first_target"] * 3  # every event of the first session there
    ids, _ = feed(state, [result(5, at=T0 + 31 * DAY, session="s-again", target="other-db")])
    assert ids == []


def test_unusual_hour_after_warm_up() -> None:
    _, state = feed(IdentityState(), history())  # sessions at 08:00 UTC
    ids, _ = feed(state, [result(30, at=T0 + 30 * DAY + 8 * HOUR + 5, session="s-late")])  # 16:00
    assert ids == ["behaviour.unusual_hour"]
    ids, _ = feed(state, [result(30, at=T0 + 30 * DAY + 30, session="s-usual")])
    assert ids == []


def test_burst_of_requests() -> None:
    query = {"statement": "SELECT 1", "parameters": [], "database": None}
    steady = [
        event("Query", query, at=T0 + minute * 60_000_000 + k * 15_000_000, session=f"s-{minute // 30}")
        for minute in range(60)
        for k in range(3)
    ]
    ids, state = feed(IdentityState(), steady)
    assert "behaviour.burst" not in ids
    start = T0 + 2 * DAY
    flagged: list[int] = []
    for i in range(900):
        hits, state = observe(
            state, event("Query", query, at=start + i * 50_000, session="s-burst"), [], PARAMS
        )
        if any(hit.rule_id == "behaviour.burst" for hit in hits):
            flagged.append(i)
    assert flagged[0] >= PARAMS.burst_min_per_minute - 1  # never below the absolute floor
    assert len(flagged) > 800


def test_bulk_findings_in_one_event_and_across_a_session() -> None:
    ssns = [{"entity_type": "US_SSN", "field": "rows", "start": 0, "end": 11}] * 150
    hits, state = observe(IdentityState(), result(150, at=T0), ssns, PARAMS)
    assert [hit.rule_id for hit in hits] == ["behaviour.bulk_sensitive_data"]
    assert "US_SSN 150" in hits[0].message
    few = [{"entity_type": "EMAIL_ADDRESS", "field": "data", "start": 0, "end": 5}] * 30
    ids: list[str] = []
    for i in range(5):
        hits, state = observe(
            state, event("TerminalOutput", {"data": b"x"}, at=T0 + i, session="s-2"), few, PARAMS
        )
        ids.append(",".join(hit.rule_id for hit in hits))
    assert ids == ["", "", "", "behaviour.bulk_sensitive_data", ""]  # crosses 100 on the 4th chunk


def test_per_type_thresholds() -> None:
    params = BehaviourParams(bulk_findings_by_type={"AWS_SECRET_KEY": 3})
    keys = [{"entity_type": "AWS_SECRET_KEY", "field": "data", "start": 0, "end": 40}] * 3
    hits, _ = observe(IdentityState(), result(3, at=T0), keys, params)
    assert [hit.rule_id for hit in hits] == ["behaviour.bulk_sensitive_data"]


def test_terminal_session_output_against_past_sessions() -> None:
    state = IdentityState()
    for day in range(25):
        session = f"t-{day}"
        for chunk in range(10):
            _, state = observe(
                state,
                event("TerminalOutput", {"data": b"y" * 2000}, at=T0 + day * DAY + chunk, session=session),
                [],
                PARAMS,
            )
        _, state = observe(
            state,
            event(
                "SessionEnd", {"reason": "closed", "exit_code": 0}, at=T0 + day * DAY + 99, session=session
            ),
            [],
            PARAMS,
        )
    ids, _ = feed(
        state,
        [
            event("TerminalOutput", {"data": b"z" * 1_000_000}, at=T0 + 40 * DAY + i, session="t-dump")
            for i in range(5)
        ],
    )
    assert ids.count("behaviour.bytes_spike") in (1, 2)  # reported at sigma and at full_sigma, not per chunk


def test_state_round_trips_through_plain_json() -> None:
    _, state = feed(IdentityState(), history())
    plain = json.loads(json.dumps(state.to_dict()))
    restored = IdentityState.from_dict(plain)
    assert restored.to_dict() == state.to_dict()
    follow = [result(400_000, at=T0 + 30 * DAY, session="s-x")]
    assert feed(restored, follow)[0] == feed(state, follow)[0]


def test_pending_input_survives_serialisation() -> None:
    state = IdentityState()
    assert take_lines(state, "s", b"histor") == []
    restored = IdentityState.from_dict(json.loads(json.dumps(state.to_dict())))
    assert take_lines(restored, "s", b"y -c\r") == ["history -c"]


def test_from_dict_refuses_other_versions_and_shapes() -> None:
    with pytest.raises(ValueError, match="version"):
        IdentityState.from_dict({"version": 99})
    with pytest.raises(ValueError, match="malformed"):
        IdentityState.from_dict({"version": 1, "events": 0})


def test_observe_is_pure_and_deterministic() -> None:
    events = [*history(days=22), result(400_000, at=T0 + 30 * DAY, session="s-x")]
    start = IdentityState()
    before = json.dumps(start.to_dict())
    first = feed(start, events)
    second = feed(IdentityState(), events)
    assert json.dumps(start.to_dict()) == before
    assert first[0] == second[0]
    assert first[1].to_dict() == second[1].to_dict()


def test_memory_is_bounded() -> None:
    params = BehaviourParams(max_targets=8, max_sessions=4)
    state = IdentityState()
    for i in range(100):
        _, state = observe(state, result(1, at=T0 + i, session=f"s-{i}", target=f"db-{i}"), [], params)
    assert len(state.targets) == 8
    assert len(state.sessions) <= 5


def test_a_negative_row_count_counts_as_none() -> None:
    ids, state = feed(IdentityState(), [*history(), result(-1, at=T0 + 40 * DAY)])
    assert "behaviour.rows_spike" not in ids
    assert state.channels["rows"].n == len(history()) + 1
