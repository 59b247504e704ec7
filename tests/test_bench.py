"""`blackbox bench pipeline` runs end to end on a small load (the figures themselves are for the
README and the notes, measured on a quiet machine, not asserted here)."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from blackbox.bench import (
    BenchReport,
    BenchSummary,
    _cpu_between,
    _thread_cpu_seconds,
    run_pipeline_bench,
)


@pytest.mark.parametrize(
    ("seal_only", "decode_processes"),
    # The second worker decodes in a child process, ahead of each batch: every record must
    # still be sealed, or the run times out.
    [(True, 0), (True, 1), (False, 0)],
)
@pytest.mark.kafka
@pytest.mark.clickhouse
@pytest.mark.slow
def test_the_pipeline_benchmark_measures_both_runs(seal_only: bool, decode_processes: int) -> None:
    heard: list[str] = []
    report = run_pipeline_bench(
        events=2_000,
        events_per_message=50,
        sessions=20,
        seal_only=seal_only,
        decode_processes=decode_processes,
        rounds=1 if decode_processes else 2,
        progress=heard.append,
    )
    assert len(report.rounds) == len(heard) == (1 if decode_processes else 2)
    assert heard[0].startswith(f"round 1/{len(report.rounds)}: ceiling ")
    assert report.events == 2_000
    assert report.seal_only is seal_only
    assert all(r.ceiling_seconds > 0 and r.pipeline_seconds > 0 for r in report.rounds)
    text = report.render()
    assert "pipeline / ceiling" in text
    assert ("seal only" in text) is seal_only


def round_of(ceiling_seconds: float, pipeline_seconds: float) -> BenchReport:
    return BenchReport(1_000, 100, 0.5, ceiling_seconds, pipeline_seconds, seal_only=True)


def test_the_summary_gives_medians_and_each_round_against_its_own_ceiling() -> None:
    summary = BenchSummary((round_of(1.0, 2.0), round_of(2.0, 2.0), round_of(1.0, 4.0)))
    assert summary.ceiling_rate == 1_000
    assert summary.pipeline_rate == 500
    # ratios 0.5, 1.0, 0.25: the median of the rounds' ratios, not the ratio of the medians
    assert summary.ratio == 0.5
    text = summary.render()
    assert "3 round(s)" in text
    assert text.count("\n") == 7
    assert "median" in text.splitlines()[-2]


def test_a_benchmark_needs_a_round() -> None:
    with pytest.raises(ValueError, match="at least one round"):
        run_pipeline_bench(events=10, rounds=0)


def test_worker_cpu_counts_every_thread() -> None:
    before = {1: 2.0, 2: 5.0}
    after = {1: 2.5, 2: 6.5, 3: 0.25}  # thread 3 started while the clock ran
    assert _cpu_between(before, after) == 2.25
    assert _cpu_between(None, after) is None
    report = BenchReport(1_000, 100, 0.5, 1.0, 2.0, worker_cpu_seconds=2.25)
    assert "2250 (1.12 cores)" in BenchSummary((report,)).render()  # µs per event, cores busy
    assert "unknown" in BenchSummary((round_of(1.0, 2.0),)).render()


def test_thread_cpu_is_read_for_a_live_process() -> None:
    threads = _thread_cpu_seconds(os.getpid())
    assert threads is not None
    assert threading.get_native_id() in threads
    spin_until = time.process_time() + 0.05
    while time.process_time() < spin_until:
        pass
    later = _thread_cpu_seconds(os.getpid())
    assert later is not None
    assert later[threading.get_native_id()] > threads[threading.get_native_id()]


def test_the_seal_step_benchmark_seals_its_whole_load() -> None:
    """bench/bench_seal_step.py runs on a small load, and stops if any event was not sealed."""
    script = Path(__file__).resolve().parent.parent / "bench" / "bench_seal_step.py"
    run = subprocess.run(
        [sys.executable, str(script), "--events", "600", "--rounds", "1"],
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr
    phases = {line.split()[0]: float(line.split()[1]) for line in run.stdout.splitlines()[1:]}
    assert set(phases) == {"decode", "seal", "pickle", "total"}
    assert phases["seal"] > 0
