"""Policy files: the shipped default, matching by connection and identity kind, and clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from masking.detectors import ALL_ENTITIES
from masking.policy import PolicyError, load_default_policy, load_policy

POLICY = """
version: 1
default:
  entities: all
  allow:
    values: [noreply@corp.example.com]
policies:
  - name: inventory-scanners
    match:
      connections: ["inventory-*"]
      identity_kinds: [SCANNER]
    disable: [IP_ADDRESS]
    custom:
      - name: EMPLOYEE_ID
        pattern: '\\bEMP-[0-9]{6}\\b'
  - name: ci-on-analytics
    match:
      connections: [analytics]
    entities: [EMAIL_ADDRESS, US_SSN]
    allow:
      patterns: ['.*@test\\.example\\.com']
"""


def test_default_policy_masks_everything() -> None:
    policies = load_default_policy()
    assert policies.default.entities == ALL_ENTITIES
    assert policies.resolve("any-db", "AI_AGENT") is policies.default
    assert not policies.default.allows("ada@lovelace.org")


def test_resolution_by_connection_and_kind(tmp_path: Path) -> None:
    path = tmp_path / "masking.yaml"
    path.write_text(POLICY)
    policies = load_policy(path)
    scanners = policies.resolve("inventory-eu", "SCANNER")
    assert scanners.name == "inventory-scanners"
    assert "IP_ADDRESS" not in scanners.entities
    assert "EMPLOYEE_ID" in scanners.entities
    assert scanners.allows("NoReply@corp.example.com")  # inherited from default, case-insensitive
    assert policies.resolve("inventory-eu", "HUMAN").name == "default"
    analytics = policies.resolve("analytics", "CI_JOB")
    assert analytics.entities == {"EMAIL_ADDRESS", "US_SSN"}
    assert analytics.allows("bot@test.example.com")
    assert not analytics.allows("noreply@corp.example.com")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("version: 1\ndefault: {entities: [EMAIL]}\n", "unknown entity types ['EMAIL']"),
        ("version: 2\n", "unsupported version 2"),
        ("version: 1\nextra: 1\n", "unknown top-level keys ['extra']"),
        ("version: 1\ndefault: {allow: {patterns: ['(']}}\n", "allow.patterns[0] is not a valid regex"),
        ("version: 1\npolicies: [{name: a}]\n", "policy 'a': 'match' is required"),
        (
            "version: 1\npolicies: [{name: a, match: {identity_kinds: [ROBOT]}}]\n",
            "unknown identity kinds ['ROBOT']",
        ),
        (
            "version: 1\npolicies:\n- {name: a, match: {connections: x}}\n"
            "- {name: a, match: {connections: y}}\n",
            "duplicate policy name",
        ),
        ("version: 1\ndefault: {custom: [{name: lower, pattern: x}]}\n", "upper-case entity name"),
        ("version: 1\ndefault: {custom: [{name: US_SSN, pattern: x}]}\n", "built-in entity"),
        ("version: 1\ndefault: {custom: [{name: EMPTY, pattern: 'a*'}]}\n", "matches the empty string"),
        ("version: 1\ndefault: {custom: [{name: BAD, pattern: '[a-'}]}\n", "'pattern' is not a valid regex"),
        ("version: 1\ndefault: {match: {connections: x}}\n", "the default policy has no 'match'"),
        ("version: 1\ndefault:\n  entities: [\n", "not valid YAML at line"),
        ("- a\n- b\n", "expected a mapping"),
        # Errors below re.error and yaml.YAMLError, each a traceback before.
        ("version: 1\ndefault: {custom: [{name: BIG, pattern: 'a{99999999999}'}]}\n", "not a usable regex"),
        (
            "version: 1\ndefault: {custom: [{name: DEEP, pattern: '"
            + "(" * 2000
            + "a"
            + ")" * 2000
            + "'}]}\n",
            "not a usable regex (RecursionError)",
        ),
        ('version: 1\ndefault: {custom: [{name: HALF, pattern: "\\ud800"}]}\n', "not valid Unicode"),
        ("version: 1\ndefault: {allow: {values: [2001-02-30]}}\n", "not valid YAML"),
    ],
)
def test_errors_say_where_and_why(text: str, message: str) -> None:
    with pytest.raises(PolicyError) as info:
        load_policy("site.yaml", text=text)
    assert message in str(info.value)
    assert str(info.value).startswith("site.yaml")


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(PolicyError, match="cannot read policy file"):
        load_policy(tmp_path / "nope.yaml")
