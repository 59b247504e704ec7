"""`blackbox bench pipeline` runs end to end on a small load (the figures themselves are for the
README and the notes, measured on a quiet machine, not asserted here)."""

from __future__ import annotations

import pytest

from blackbox.bench import run_pipeline_bench

pytestmark = [pytest.mark.kafka, pytest.mark.clickhouse, pytest.mark.slow]


@pytest.mark.parametrize("seal_only", [True, False])
def test_the_pipeline_benchmark_measures_both_runs(seal_only: bool) -> None:
    report = run_pipeline_bench(events=2_000, events_per_message=50, sessions=20, seal_only=seal_only)
    assert report.events == 2_000
    assert report.seal_only is seal_only
    assert report.ceiling_seconds > 0
    assert report.pipeline_seconds > 0
    text = report.render()
    assert "pipeline / ceiling" in text
    assert ("seal only" in text) is seal_only
