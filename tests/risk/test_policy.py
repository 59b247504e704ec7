"""Risk policies: shipped defaults per identity kind, merging, validation, allow-lists, table tags."""

from __future__ import annotations

from pathlib import Path

import pytest

from risk.model import RULES
from risk.policy import AllowEntry, PolicyError, default_policy, load_policy, parse_policy, policy_from_dict


def test_shipped_defaults_cover_every_rule_and_kind() -> None:
    policy = default_policy()
    for kind in ("CI_JOB", "SERVICE_ACCOUNT", "SCANNER", "AI_AGENT", "HUMAN", "UNKNOWN"):
        resolved = policy.for_kind(kind)
        assert resolved.threshold == 70
        assert set(resolved.weights) == set(RULES)
    assert policy.for_kind("CI_JOB").weight("sql.ddl") < policy.for_kind("AI_AGENT").weight("sql.ddl")
    assert policy.for_kind("SCANNER").weight("http.admin_endpoint") < policy.default.weight(
        "http.admin_endpoint"
    )
    assert policy.for_kind("HUMAN") is policy.default


def test_a_site_policy_only_names_what_it_changes(tmp_path: Path) -> None:
    path = tmp_path / "risk.yaml"
    path.write_text(
        "defaults:\n"
        "  threshold: 60\n"
        "  table_tags:\n"
        "    crm.leads: [pii]\n"
        "kinds:\n"
        "  CI_JOB:\n"
        "    weights:\n"
        "      sql.drop: 0.1\n"
    )
    policy = load_policy(path)
    assert policy.default.threshold == 60
    assert policy.for_kind("CI_JOB").threshold == 60
    assert policy.for_kind("CI_JOB").weight("sql.drop") == 0.1
    assert policy.for_kind("CI_JOB").weight("sql.ddl") == 0.2  # shipped CI value kept
    assert policy.default.is_sensitive_table("crm.leads")
    assert policy.default.is_sensitive_table("customers")  # shipped tags kept


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("nonsense: 1\n", "unknown key nonsense"),
        ("version: 2\n", "version"),
        ("defaults:\n  weights:\n    sql.dll: 0.5\n", "unknown rule id"),
        ("defaults:\n  weights:\n    sql.ddl: 1.5\n", "between 0 and 1"),
        ("defaults:\n  threshold: 170\n", "threshold"),
        ("kinds:\n  ROBOT: {}\n", "not an identity kind"),
        ("defaults:\n  behaviour:\n    sigmaa: 3\n", "unknown key"),
        ("defaults:\n  behaviour:\n    sigma: fast\n", "must be a float"),
        ("defaults:\n  allow:\n    - principals: [x]\n", "names the rules"),
        ("defaults:\n  allow:\n    - rules: [nope.*]\n", "matches no rule id"),
        ("defaults:\n  allow:\n    - rules: [sql.ddl]\n      hours_utc: [[1, 2, 3]]\n", "hours_utc"),
        ("defaults: [1, 2]\n", "must be a mapping"),
        ("- just a list\n", "mapping at the top level"),
        ("defaults: {threshold: [}\n", "not valid YAML"),
        # YAML reads these keys as a number and a boolean; the date is no date.
        ("defaults:\n  table_tags:\n    2024: [pii]\n", "key 2024 is not a string"),
        ("defaults:\n  weights:\n    on: 0.5\n", "key True is not a string"),
        ("defaults:\n  behaviour:\n    1: 5\n", "key 1 is not a string"),
        ("kinds:\n  HUMAN:\n    allow: 5\n", "kinds.HUMAN.allow must be a list"),
        ("defaults:\n  behaviour:\n    sigma: " + "9" * 400 + "\n", "must be a float"),
        ("defaults:\n  weights:\n    sql.ddl: " + "9" * 400 + "\n", "between 0 and 1"),
        ("defaults:\n  weights:\n    sql.ddl: .nan\n", "between 0 and 1"),
        ("defaults:\n  sensitive_tags: [2001-02-30]\n", "not valid YAML"),
    ],
)
def test_invalid_policies_say_what_is_wrong(text: str, message: str) -> None:
    with pytest.raises(PolicyError, match=message):
        parse_policy(text)


def test_a_parsed_document_is_checked_as_a_file_is() -> None:
    with pytest.raises(PolicyError, match="key 7 is not a string"):
        policy_from_dict({"defaults": {"weights": {7: 0.5}}})


def test_missing_file_is_a_policy_error(tmp_path: Path) -> None:
    with pytest.raises(PolicyError, match="cannot read"):
        load_policy(tmp_path / "absent.yaml")


def test_kind_allow_entries_add_to_the_default_ones() -> None:
    policy = parse_policy(
        "defaults:\n  allow:\n    - rules: [sql.ddl]\n      principals: [dba-*]\n"
        "kinds:\n  CI_JOB:\n    allow:\n      - rules: [sql.drop]\n        targets: [scratch-*]\n"
    )
    ci = policy.for_kind("CI_JOB")
    assert ci.is_allowed("sql.ddl", "dba-bot", "prod", None, 3)
    assert ci.is_allowed("sql.drop", "ci", "scratch-7", None, 3)
    assert not ci.is_allowed("sql.drop", "ci", "prod", None, 3)
    assert not policy.default.is_allowed("sql.drop", "ci", "scratch-7", None, 3)


def test_allow_windows_wrap_past_midnight() -> None:
    entry = AllowEntry(rules=("sql.*",), hours_utc=((22, 4),))
    assert [entry.matches("sql.ddl", "p", "t", None, hour) for hour in (21, 22, 23, 0, 3, 4)] == [
        False,
        True,
        True,
        True,
        True,
        False,
    ]


def test_table_patterns_match_trailing_name_parts() -> None:
    policy = parse_policy(
        "defaults:\n  table_tags:\n    billing.cards: [pci]\n    'hr.*': [pii]\n    notes: [internal]\n"
    )
    tables = policy.default
    assert tables.is_sensitive_table("billing.cards")
    assert tables.is_sensitive_table("prod.billing.cards")
    assert not tables.is_sensitive_table("shop.cards_seen")
    assert tables.is_sensitive_table("hr.salaries")
    assert tables.is_sensitive_table("PUBLIC.Customers")
    assert not tables.is_sensitive_table("notes")  # tagged, but "internal" is not a sensitive tag
