"""The risk-scoring slot of the seal step; until scoring lands, records carry no risk."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol


class Scorer(Protocol):
    def score(self, event: dict[str, Any], findings: Sequence[Mapping[str, Any]]) -> dict[str, Any] | None:
        """A Risk value ({"score": 0-100, "reasons": [...]}) or None when not scored."""
        ...


class NoScoring:
    def score(self, event: dict[str, Any], findings: Sequence[Mapping[str, Any]]) -> dict[str, Any] | None:
        return None
