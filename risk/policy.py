"""Risk policies: rule weights, sensitive tables, thresholds and allow-lists per identity kind.

A policy file is YAML with a ``defaults`` section that applies to every identity kind and a
``kinds`` section whose entries are merged over it (HUMAN and UNKNOWN usually just use the
defaults). A user's file is merged over the shipped ``default_policy.yaml``, so it only needs
the keys it changes: mappings merge key by key, lists replace. Within one policy a kind's
``allow`` entries are added to the default ones, since an allow-list names exceptions.
"""

from __future__ import annotations

import fnmatch
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from risk.model import RULES

IDENTITY_KINDS = ("UNKNOWN", "SERVICE_ACCOUNT", "CI_JOB", "SCANNER", "AI_AGENT", "HUMAN")
US_PER_HOUR = 3_600_000_000


class PolicyError(ValueError):
    """A policy document is malformed; the message names the offending key."""


@dataclass(frozen=True)
class BehaviourParams:
    """Knobs of the per-identity behaviour signals (see risk.behaviour)."""

    warmup: int = 20
    sigma: float = 4.0
    full_sigma: float = 6.0
    alpha: float = 0.05
    min_std: float = 0.5
    min_rows: int = 1000
    min_bytes: int = 1_048_576
    first_target_after: int = 20
    max_targets: int = 512
    hours_warmup: int = 20
    unusual_hour_share: float = 0.02
    burst_warmup: int = 10
    burst_min_per_minute: int = 60
    bulk_findings: int = 100
    bulk_findings_by_type: Mapping[str, int] = field(default_factory=dict)
    max_sessions: int = 32

    def bulk_threshold(self, entity_type: str) -> int:
        return self.bulk_findings_by_type.get(entity_type, self.bulk_findings)


@dataclass(frozen=True)
class AllowEntry:
    """Suppresses matching rules for matching events; an empty criterion matches anything."""

    rules: tuple[str, ...]
    principals: tuple[str, ...] = ()
    targets: tuple[str, ...] = ()
    subjects: tuple[str, ...] = ()
    hours_utc: tuple[tuple[int, int], ...] = ()

    def matches(self, rule_id: str, principal: str, target: str, subject: str | None, hour: int) -> bool:
        if not _any_glob(self.rules, rule_id):
            return False
        if self.principals and not _any_glob(self.principals, principal):
            return False
        if self.targets and not _any_glob(self.targets, target):
            return False
        if self.subjects and (subject is None or not _any_glob(self.subjects, subject)):
            return False
        return not self.hours_utc or any(_in_window(hour, start, end) for start, end in self.hours_utc)


def _any_glob(patterns: tuple[str, ...], value: str) -> bool:
    return any(fnmatch.fnmatchcase(value, pattern) for pattern in patterns)


def _in_window(hour: int, start: int, end: int) -> bool:
    # [start, end) in UTC hours; a window such as [22, 4] wraps past midnight.
    return start <= hour < end if start <= end else hour >= start or hour < end


@dataclass(frozen=True)
class KindPolicy:
    """The resolved policy for one identity kind: everything a scorer needs, already merged."""

    kind: str
    threshold: int
    weights: Mapping[str, float]
    sensitive_tags: frozenset[str]
    table_tags: tuple[tuple[tuple[str, ...], frozenset[str]], ...]
    bulk_page_size: int
    behaviour: BehaviourParams
    allow: tuple[AllowEntry, ...] = ()
    _sensitive_cache: dict[str, bool] = field(default_factory=dict, compare=False, repr=False)

    def weight(self, rule_id: str) -> float:
        return self.weights.get(rule_id, 0.0)

    def is_sensitive_table(self, qualified_name: str) -> bool:
        """Whether a table (``name``, ``schema.name`` or ``catalog.schema.name``) is tagged sensitive.

        A pattern is matched part by part against the same number of trailing name parts, so
        ``customers`` matches the table in any schema and ``billing.customers`` only that one.
        """
        cached = self._sensitive_cache.get(qualified_name)
        if cached is None:
            parts = tuple(qualified_name.lower().split("."))
            cached = any(
                tags & self.sensitive_tags and _parts_match(pattern, parts)
                for pattern, tags in self.table_tags
            )
            if len(self._sensitive_cache) < 10_000:  # bounded: table names come from user input
                self._sensitive_cache[qualified_name] = cached
        return cached

    def is_allowed(self, rule_id: str, principal: str, target: str, subject: str | None, hour: int) -> bool:
        return any(entry.matches(rule_id, principal, target, subject, hour) for entry in self.allow)


def _parts_match(pattern: tuple[str, ...], parts: tuple[str, ...]) -> bool:
    if len(pattern) > len(parts):
        return False
    tail = parts[len(parts) - len(pattern) :]
    return all(fnmatch.fnmatchcase(part, glob) for part, glob in zip(tail, pattern, strict=True))


@dataclass(frozen=True)
class Policy:
    """Resolved policies per identity kind; kinds without a section use ``default``."""

    default: KindPolicy
    kinds: Mapping[str, KindPolicy]

    def for_kind(self, kind: str) -> KindPolicy:
        return self.kinds.get(kind, self.default)


# --- loading ---------------------------------------------------------------------------------

_TOP_KEYS = {"version", "defaults", "kinds"}
_SECTION_KEYS = {
    "threshold",
    "weights",
    "sensitive_tags",
    "table_tags",
    "bulk_page_size",
    "behaviour",
    "allow",
}
_ALLOW_KEYS = {"rules", "principals", "targets", "subjects", "hours_utc"}


@lru_cache(maxsize=1)
def _shipped() -> dict[str, Any]:
    text = resources.files("risk").joinpath("default_policy.yaml").read_text(encoding="utf-8")
    return _load_yaml(text, "default_policy.yaml")


def default_policy() -> Policy:
    """The policy shipped with Blackbox."""
    return _resolve(_shipped())


def load_policy(path: Path) -> Policy:
    """A policy file merged over the shipped defaults."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise PolicyError(f"cannot read policy {path.name}: {exc.strerror}") from exc
    return parse_policy(text, source=path.name)


def parse_policy(text: str, source: str = "<policy>") -> Policy:
    """A policy document (YAML text) merged over the shipped defaults."""
    return policy_from_dict(_load_yaml(text, source))


def policy_from_dict(document: Mapping[str, Any]) -> Policy:
    """A policy document (already parsed) merged over the shipped defaults."""
    _check_string_keys(document, "policy")
    return _resolve(_merge(_shipped(), document))


def _load_yaml(text: str, source: str) -> dict[str, Any]:
    try:
        document = yaml.load(text, Loader=yaml.CSafeLoader) if yaml.__with_libyaml__ else yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise PolicyError(f"{source}: not valid YAML: {exc}") from exc
    except (ValueError, RecursionError) as exc:  # a constructor's: "2001-02-30" is no date
        raise PolicyError(f"{source}: not valid YAML: {type(exc).__name__}: {exc}") from exc
    if document is None:
        return {}
    if not isinstance(document, dict):
        raise PolicyError(f"{source}: a policy is a mapping at the top level")
    return document


def _check_string_keys(node: Any, where: str) -> None:
    """YAML reads `2024:` or `on:` as a number or a boolean; every key here is a name."""
    if isinstance(node, dict):
        for key, value in node.items():
            if not isinstance(key, str):
                raise PolicyError(f"{where}: key {key!r} is not a string (quote it)")
            _check_string_keys(value, f"{where}.{key}")
    elif isinstance(node, list):
        for index, item in enumerate(node):
            _check_string_keys(item, f"{where}[{index}]")


def _merge(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in over.items():
        current = merged.get(key)
        if isinstance(current, Mapping) and isinstance(value, Mapping):
            merged[key] = _merge(current, value)
        else:
            merged[key] = value
    return merged


def _resolve(document: Mapping[str, Any]) -> Policy:
    _check_keys(document, _TOP_KEYS, "policy")
    if document.get("version", 1) != 1:
        raise PolicyError(f"policy version {document.get('version')!r} is not supported (expected 1)")
    defaults = _mapping(document.get("defaults", {}), "defaults")
    kinds = _mapping(document.get("kinds", {}), "kinds")
    default = _section("default", defaults)
    missing = sorted(set(RULES) - set(default.weights))
    if missing:
        raise PolicyError(f"defaults.weights lacks a weight for {', '.join(missing)}")
    resolved: dict[str, KindPolicy] = {}
    for kind, raw_section in kinds.items():
        if kind not in IDENTITY_KINDS:
            raise PolicyError(f"kinds.{kind}: not an identity kind ({', '.join(IDENTITY_KINDS)})")
        section = _mapping(raw_section or {}, f"kinds.{kind}")
        merged = _merge(defaults, section)
        merged["allow"] = [
            *_list(defaults.get("allow", []), "defaults.allow"),
            *_list(section.get("allow", []), f"kinds.{kind}.allow"),
        ]
        resolved[kind] = _section(kind, merged)
    return Policy(default=default, kinds=resolved)


def _section(kind: str, raw: Mapping[str, Any]) -> KindPolicy:
    where = "defaults" if kind == "default" else f"kinds.{kind}"
    _check_keys(raw, _SECTION_KEYS, where)
    threshold = raw.get("threshold", 70)
    if not isinstance(threshold, int) or isinstance(threshold, bool) or not 0 <= threshold <= 100:
        raise PolicyError(f"{where}.threshold must be an integer 0-100")
    weights: dict[str, float] = {}
    for rule_id, weight in _mapping(raw.get("weights", {}), f"{where}.weights").items():
        if rule_id not in RULES:
            raise PolicyError(f"{where}.weights.{rule_id}: unknown rule id")
        if not _usable_as_float(weight) or not 0.0 <= float(weight) <= 1.0:
            raise PolicyError(f"{where}.weights.{rule_id} must be a number between 0 and 1")
        weights[rule_id] = float(weight)
    tags = _strings(raw.get("sensitive_tags", []), f"{where}.sensitive_tags")
    table_tags = tuple(
        (tuple(str(pattern).lower().split(".")), frozenset(_strings(table, f"{where}.table_tags.{pattern}")))
        for pattern, table in _mapping(raw.get("table_tags", {}), f"{where}.table_tags").items()
    )
    page = raw.get("bulk_page_size", 1000)
    if not isinstance(page, int) or page < 1:
        raise PolicyError(f"{where}.bulk_page_size must be a positive integer")
    allow = tuple(
        _allow_entry(entry, f"{where}.allow[{index}]")
        for index, entry in enumerate(_list(raw.get("allow", []), f"{where}.allow"))
    )
    return KindPolicy(
        kind=kind,
        threshold=threshold,
        weights=weights,
        sensitive_tags=frozenset(tag.lower() for tag in tags),
        table_tags=table_tags,
        bulk_page_size=page,
        behaviour=_behaviour(_mapping(raw.get("behaviour", {}), f"{where}.behaviour"), f"{where}.behaviour"),
        allow=allow,
    )


def _behaviour(raw: Mapping[str, Any], where: str) -> BehaviourParams:
    defaults = BehaviourParams()
    values: dict[str, Any] = {}
    for key, value in raw.items():
        if not hasattr(defaults, key):
            raise PolicyError(f"{where}.{key}: unknown key")
        expected = getattr(defaults, key)
        if key == "bulk_findings_by_type":
            by_type = _mapping(value, f"{where}.{key}")
            if not all(isinstance(n, int) and n > 0 for n in by_type.values()):
                raise PolicyError(f"{where}.{key} values must be positive integers")
            values[key] = dict(by_type)
        elif isinstance(expected, float) and _usable_as_float(value):
            values[key] = float(value)
        elif isinstance(expected, int) and isinstance(value, int) and not isinstance(value, bool):
            values[key] = value
        else:
            raise PolicyError(f"{where}.{key} must be a {type(expected).__name__}")
        if key != "bulk_findings_by_type" and values[key] < 0:
            raise PolicyError(f"{where}.{key} must not be negative")
    return BehaviourParams(**values)


def _usable_as_float(value: object) -> bool:
    """A finite number float() takes. Ints are checked as ints: compiled, an int narrowed to
    `int | float` is unboxed as a float, and one too large for that raises TypeError."""
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return abs(value) < 10**300
    return isinstance(value, float) and math.isfinite(value)


def _allow_entry(raw: Any, where: str) -> AllowEntry:
    entry = _mapping(raw, where)
    _check_keys(entry, _ALLOW_KEYS, where)
    rules = tuple(_strings(entry.get("rules", []), f"{where}.rules"))
    if not rules:
        raise PolicyError(f"{where}.rules: an allow entry names the rules it suppresses")
    for pattern in rules:
        if not any(fnmatch.fnmatchcase(rule_id, pattern) for rule_id in RULES):
            raise PolicyError(f"{where}.rules: {pattern!r} matches no rule id")
    hours: list[tuple[int, int]] = []
    for window in _list(entry.get("hours_utc", []), f"{where}.hours_utc"):
        if (
            not isinstance(window, list)
            or len(window) != 2
            or not all(isinstance(h, int) and 0 <= h <= 24 for h in window)
        ):
            raise PolicyError(f"{where}.hours_utc: each window is [start, end) in whole UTC hours 0-24")
        hours.append((window[0], window[1]))
    return AllowEntry(
        rules=rules,
        principals=tuple(_strings(entry.get("principals", []), f"{where}.principals")),
        targets=tuple(_strings(entry.get("targets", []), f"{where}.targets")),
        subjects=tuple(_strings(entry.get("subjects", []), f"{where}.subjects")),
        hours_utc=tuple(hours),
    )


def _check_keys(raw: Mapping[str, Any], allowed: set[str], where: str) -> None:
    unknown = sorted(str(key) for key in raw if key not in allowed)
    if unknown:
        raise PolicyError(
            f"{where}: unknown key {', '.join(unknown)} (expected {', '.join(sorted(allowed))})"
        )


def _mapping(raw: Any, where: str) -> Mapping[str, Any]:
    if not isinstance(raw, Mapping):
        raise PolicyError(f"{where} must be a mapping")
    return raw


def _list(raw: Any, where: str) -> list[Any]:
    if not isinstance(raw, list):
        raise PolicyError(f"{where} must be a list")
    return raw


def _strings(raw: Any, where: str) -> list[str]:
    items = _list(raw, where)
    if not all(isinstance(item, str) for item in items):
        raise PolicyError(f"{where} must be a list of strings")
    return items
