"""The masking slot of the seal step.

Masking (issue "Masking and risk scoring") replaces personal, health and secret values before a
record is chained; until it lands, events pass through unchanged and no findings are listed.
"""

from __future__ import annotations

from typing import Any, Protocol


class Masker(Protocol):
    def mask(self, event: dict[str, Any]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """The event with sensitive values replaced, and one finding per replaced value."""
        ...


class NoMasking:
    def mask(self, event: dict[str, Any]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        return event, []
