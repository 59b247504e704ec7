"""Masking policies: which entity types to mask, what to leave alone, which extra patterns to mask.

A policy file holds a ``default`` policy and an ordered list of ``policies``, each matched by
connection name (glob) and identity kind; the first match wins, the default applies otherwise.
Fields a policy leaves out are taken from the default. The shipped ``default_policy.yaml`` masks
every built-in entity for everyone.

Errors name the file, the policy and the field, never a value from the data.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, AnyStr

import yaml

from masking.detectors import ALL_ENTITIES

IDENTITY_KINDS = frozenset({"UNKNOWN", "SERVICE_ACCOUNT", "CI_JOB", "SCANNER", "AI_AGENT", "HUMAN"})
_ENTITY_NAME = re.compile(r"^[A-Z][A-Z0-9_]{1,63}$")
_POLICY_KEYS = frozenset({"name", "match", "entities", "disable", "allow", "custom"})


class PolicyError(ValueError):
    """A policy file that cannot be used, with where and why."""


@dataclass(frozen=True)
class CustomEntity:
    """A named regex the policy adds to the built-in detectors."""

    name: str
    pattern: re.Pattern[bytes]


@dataclass(frozen=True)
class Policy:
    name: str
    entities: frozenset[str] = ALL_ENTITIES
    allow_values: frozenset[str] = frozenset()
    allow_patterns: tuple[re.Pattern[str], ...] = ()
    custom: tuple[CustomEntity, ...] = ()
    connections: tuple[str, ...] = ()
    identity_kinds: frozenset[str] = frozenset()
    # Lower-cased allow values, for case-insensitive entities such as emails.
    _allow_folded: frozenset[str] = field(default=frozenset(), repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_allow_folded", frozenset(v.casefold() for v in self.allow_values))

    def matches(self, connection: str, identity_kind: str) -> bool:
        if self.connections and not any(fnmatch.fnmatchcase(connection, g) for g in self.connections):
            return False
        return not self.identity_kinds or identity_kind in self.identity_kinds

    def allows(self, value: str) -> bool:
        """True when the value is on the allow-list and must stay visible."""
        if not self.allow_values and not self.allow_patterns:
            return False
        stripped = value.strip()
        if stripped in self.allow_values or stripped.casefold() in self._allow_folded:
            return True
        return any(p.fullmatch(stripped) for p in self.allow_patterns)


@dataclass(frozen=True)
class PolicySet:
    default: Policy
    policies: tuple[Policy, ...] = ()

    def resolve(self, connection: str, identity_kind: str) -> Policy:
        for policy in self.policies:
            if policy.matches(connection, identity_kind):
                return policy
        return self.default


def load_policy(source: str | Path, *, text: str | None = None) -> PolicySet:
    """Load a policy file (or ``text``, named ``source`` in errors)."""
    where = str(source)
    if text is None:
        try:
            text = Path(source).read_text(encoding="utf-8")
        except OSError as exc:
            raise PolicyError(f"{where}: cannot read policy file ({exc.strerror})") from None
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        raise PolicyError(f"{where}: not valid YAML{at}") from None
    except (ValueError, RecursionError) as exc:  # a constructor's: "2001-02-30" is no date
        raise PolicyError(f"{where}: not valid YAML ({type(exc).__name__}: {exc})") from None
    return parse_policy(doc, where)


def load_default_policy() -> PolicySet:
    text = resources.files("masking").joinpath("default_policy.yaml").read_text(encoding="utf-8")
    return load_policy("masking/default_policy.yaml", text=text)


def parse_policy(doc: Any, where: str = "<policy>") -> PolicySet:
    if not isinstance(doc, Mapping):
        raise PolicyError(f"{where}: expected a mapping with 'version', 'default' and 'policies'")
    unknown = set(doc) - {"version", "default", "policies"}
    if unknown:
        raise PolicyError(f"{where}: unknown top-level keys {sorted(map(str, unknown))}")
    if doc.get("version", 1) != 1:
        raise PolicyError(f"{where}: unsupported version {doc.get('version')!r} (expected 1)")
    base = Policy(name="default")
    default = _parse_one(doc.get("default") or {}, base, f"{where}: default", is_default=True)
    raw_policies = doc.get("policies") or []
    if not isinstance(raw_policies, list):
        raise PolicyError(f"{where}: 'policies' must be a list")
    policies = []
    names = set()
    for i, raw in enumerate(raw_policies):
        label = f"{where}: policies[{i}]"
        if isinstance(raw, Mapping) and isinstance(raw.get("name"), str):
            label = f"{where}: policy {raw['name']!r}"
        policy = _parse_one(raw, default, label, is_default=False)
        if policy.name in names:
            raise PolicyError(f"{label}: duplicate policy name")
        names.add(policy.name)
        policies.append(policy)
    return PolicySet(default=default, policies=tuple(policies))


def _parse_one(raw: Any, base: Policy, label: str, *, is_default: bool) -> Policy:
    if not isinstance(raw, Mapping):
        raise PolicyError(f"{label}: expected a mapping")
    unknown = set(raw) - _POLICY_KEYS
    if unknown:
        raise PolicyError(f"{label}: unknown keys {sorted(map(str, unknown))}")
    name = raw.get("name", "default" if is_default else None)
    if not isinstance(name, str) or not name:
        raise PolicyError(f"{label}: 'name' is required")
    connections: tuple[str, ...] = ()
    kinds: frozenset[str] = frozenset()
    if "match" in raw:
        if is_default:
            raise PolicyError(f"{label}: the default policy has no 'match'")
        connections, kinds = _parse_match(raw["match"], label)
    elif not is_default:
        raise PolicyError(f"{label}: 'match' is required (connections and/or identity_kinds)")

    custom = base.custom if "custom" not in raw else _parse_custom(raw["custom"], label)
    custom_names = {c.name for c in custom}
    entities = (
        base.entities if "entities" not in raw else _parse_entities(raw["entities"], label, custom_names)
    )
    entities = entities | custom_names
    if "disable" in raw:
        entities = entities - _parse_entities(raw["disable"], f"{label}: disable", custom_names)
    allow_values, allow_patterns = base.allow_values, base.allow_patterns
    if "allow" in raw:
        allow_values, allow_patterns = _parse_allow(raw["allow"], label)
    return Policy(
        name=name,
        entities=frozenset(entities),
        allow_values=allow_values,
        allow_patterns=allow_patterns,
        custom=custom,
        connections=connections,
        identity_kinds=kinds,
    )


def _string_list(value: Any, label: str) -> list[str]:
    if isinstance(value, str):
        return [value]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise PolicyError(f"{label}: expected a string or a list of strings")
    return list(value)


def _parse_match(raw: Any, label: str) -> tuple[tuple[str, ...], frozenset[str]]:
    if not isinstance(raw, Mapping) or not raw:
        raise PolicyError(f"{label}: 'match' must map 'connections' and/or 'identity_kinds'")
    unknown = set(raw) - {"connections", "identity_kinds"}
    if unknown:
        raise PolicyError(f"{label}: unknown match keys {sorted(map(str, unknown))}")
    connections = tuple(_string_list(raw.get("connections", []), f"{label}: match.connections"))
    kinds = frozenset(
        k.upper() for k in _string_list(raw.get("identity_kinds", []), f"{label}: match.identity_kinds")
    )
    bad = kinds - IDENTITY_KINDS
    if bad:
        raise PolicyError(f"{label}: unknown identity kinds {sorted(bad)} (known: {sorted(IDENTITY_KINDS)})")
    return connections, kinds


def _parse_entities(raw: Any, label: str, custom_names: set[str]) -> frozenset[str]:
    if raw == "all":
        return ALL_ENTITIES
    names = _string_list(raw, f"{label}: entities")
    known = ALL_ENTITIES | custom_names
    unknown = [n for n in names if n not in known]
    if unknown:
        raise PolicyError(f"{label}: unknown entity types {unknown} (known: {sorted(known)})")
    return frozenset(names)


def _parse_allow(raw: Any, label: str) -> tuple[frozenset[str], tuple[re.Pattern[str], ...]]:
    if not isinstance(raw, Mapping):
        raise PolicyError(f"{label}: 'allow' must map 'values' and/or 'patterns'")
    unknown = set(raw) - {"values", "patterns"}
    if unknown:
        raise PolicyError(f"{label}: unknown allow keys {sorted(map(str, unknown))}")
    values = frozenset(_string_list(raw.get("values", []), f"{label}: allow.values"))
    patterns = []
    for i, source in enumerate(_string_list(raw.get("patterns", []), f"{label}: allow.patterns")):
        patterns.append(_compiled(source, f"{label}: allow.patterns[{i}]"))
    return values, tuple(patterns)


def _compiled(source: AnyStr, where: str) -> re.Pattern[AnyStr]:
    try:
        return re.compile(source)
    except re.error as exc:
        raise PolicyError(f"{where} is not a valid regex ({exc.msg})") from None
    # What re.error does not cover: a repeat count past the C limit, nesting deeper than the stack.
    except (OverflowError, RecursionError) as exc:
        raise PolicyError(f"{where} is not a usable regex ({type(exc).__name__})") from None


def _parse_custom(raw: Any, label: str) -> tuple[CustomEntity, ...]:
    if not isinstance(raw, list):
        raise PolicyError(f"{label}: 'custom' must be a list of {{name, pattern}}")
    out = []
    for i, item in enumerate(raw):
        where = f"{label}: custom[{i}]"
        if not isinstance(item, Mapping) or set(item) - {"name", "pattern"}:
            raise PolicyError(f"{where}: expected a mapping with 'name' and 'pattern'")
        name, source = item.get("name"), item.get("pattern")
        if not isinstance(name, str) or not _ENTITY_NAME.match(name):
            raise PolicyError(f"{where}: 'name' must be an upper-case entity name such as EMPLOYEE_ID")
        if name in ALL_ENTITIES:
            raise PolicyError(f"{where}: {name} is a built-in entity; pick another name")
        if not isinstance(source, str) or not source:
            raise PolicyError(f"{where}: 'pattern' must be a non-empty regex")
        try:
            encoded = source.encode()
        except UnicodeEncodeError:
            raise PolicyError(f"{where}: 'pattern' is not valid Unicode (a lone surrogate)") from None
        pattern = _compiled(encoded, f"{where}: 'pattern'")
        if pattern.match(b""):
            raise PolicyError(f"{where}: 'pattern' matches the empty string")
        out.append(CustomEntity(name, pattern))
    return tuple(out)
