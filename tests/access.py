"""An `AccessLog` that keeps reads in memory, for API tests.

It stands in for `api.access_log.KafkaAccessLog`, which tests/test_access_log.py runs against
the real broker.
"""

from __future__ import annotations

from api.access_log import AccessNotRecorded, ContentRead
from api.auth import Principal


class RecordingAccessLog:
    """Stands in for `KafkaAccessLog` (tests/test_access_log.py runs that on the real broker)."""

    def __init__(self, refuse: bool = False) -> None:
        self.refuse = refuse
        self.reads: list[tuple[str, ContentRead]] = []

    def record(self, caller: Principal, read: ContentRead) -> None:
        if self.refuse:
            raise AccessNotRecorded("the access log cannot record this read now (EmitError)")
        self.reads.append((caller.subject, read))

    def gauges(self) -> dict[str, float]:
        return {"blackbox_access_log_reads_recorded_total": len(self.reads)}
