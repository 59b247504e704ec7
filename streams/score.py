"""The risk-scoring slot of the seal step: what it needs from a scorer.

The engine lives in the `risk` package (rules over parsed SQL, Kubernetes calls, shell lines and
HTTP, plus per-identity behaviour); the worker wires it in. `NoScoring` leaves records unscored.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Protocol


class AlertThreshold(Protocol):
    def is_alert(self, event: Mapping[str, Any], risk: Mapping[str, Any] | None) -> bool:
        """Whether the scored event goes to the alerts topic (its identity kind's threshold)."""
        ...


class Scorer(AlertThreshold, Protocol):
    def score(self, event: dict[str, Any], findings: Sequence[Mapping[str, Any]]) -> dict[str, Any] | None:
        """A Risk value ({"score": 0-100, "reasons": [...]}) or None when not scored."""
        ...

    def prepare(self, events: Iterable[Mapping[str, Any]]) -> None:
        """About to score ``events``: fetch what they need in one go (not one read per identity)."""
        ...


class NoScoring:
    def score(self, event: dict[str, Any], findings: Sequence[Mapping[str, Any]]) -> dict[str, Any] | None:
        return None

    def is_alert(self, event: Mapping[str, Any], risk: Mapping[str, Any] | None) -> bool:
        return False

    def prepare(self, events: Iterable[Mapping[str, Any]]) -> None:
        return None
