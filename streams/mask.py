"""The masking slot of the seal step: what the seal step needs from a masker.

The engine lives in the `masking` package (`masking.event_masker.EventMasker` implements this
protocol); `NoMasking` passes events through, for tests of the chain alone.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol


class Masker(Protocol):
    def mask(
        self, event: dict[str, Any], *, alone: bool = False
    ) -> tuple[dict[str, Any], Sequence[Mapping[str, Any]]]:
        """The event with sensitive values replaced, and one finding per replaced value.

        Returns the very same object when nothing was replaced. ``alone``: the chain did not
        take the event in order (LATE, FORK), so a terminal event is masked on its own and its
        session's stream is left as it was.

        May raise on content nobody foresaw; the seal step then refuses the event. The masker is
        then as it was before the event, except that it may fail closed (treat what the session
        types next as a secret): nothing of a refused event stays in a stream, to come out with
        the session's next event."""
        ...

    def replay_refused(self, event: dict[str, Any]) -> None:
        """An event `mask` raised on (so sealing refused it), delivered again after a crash: leave
        the masker as the refusal left it."""
        ...

    def end_session(self, session_id: str) -> bytes:
        """Forget the session's stream state (its chain was sealed)."""
        ...

    def prompt_open(self, session_id: str) -> bool:
        """Whether what the session types next is a secret: a password prompt is unanswered, or
        its answer is being typed."""
        ...

    def holds_bytes(self, session_id: str) -> bool:
        """Whether the session's streams hold bytes back for its next event (an unfinished token
        of output, or keystrokes of a line not yet ended)."""
        ...


class NoMasking:
    def mask(
        self, event: dict[str, Any], *, alone: bool = False
    ) -> tuple[dict[str, Any], Sequence[Mapping[str, Any]]]:
        return event, []

    def replay_refused(self, event: dict[str, Any]) -> None:
        return None

    def end_session(self, session_id: str) -> bytes:
        return b""

    def prompt_open(self, session_id: str) -> bool:
        return False

    def holds_bytes(self, session_id: str) -> bool:
        return False
