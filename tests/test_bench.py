"""`blackbox bench pipeline` runs end to end on a small load (the figures themselves are for the
README and the notes, measured on a quiet machine, not asserted here)."""

from __future__ import annotations

import pytest

from blackbox.bench import run_pipeline_bench

pytestmark = [pytest.mark.kafka, pytest.mark.clickhouse, pytest.mark.slow]


@pytest.mark.parametrize(
    ("seal_only", "decode_processes"),
    # The second worker decodes in a child process, ahead of each batch: every record must
    # still be sealed, or the run times out.
    [(True, 0), (True, 1), (False, 0)],
)
def test_the_pipeline_benchmark_measures_both_runs(seal_only: bool, decode_processes: int) -> None:
    report = run_pipeline_bench(
        events=2_000,
        events_per_message=50,
        sessions=20,
        seal_only=seal_only,
        decode_processes=decode_processes,
    )
    assert report.events == 2_000
    assert report.seal_only is seal_only
    assert report.ceiling_seconds > 0
    assert report.pipeline_seconds > 0
    text = report.render()
    assert "pipeline / ceiling" in text
    assert ("seal only" in text) is seal_only
