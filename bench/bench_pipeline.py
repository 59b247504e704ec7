"""End-to-end pipeline benchmark; the same as `blackbox bench pipeline`.

.venv/bin/python bench/bench_pipeline.py [EVENTS] [EVENTS_PER_MESSAGE]
"""

from __future__ import annotations

import logging
import sys

from blackbox.bench import run_pipeline_bench

if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)
    events = int(sys.argv[1]) if len(sys.argv) > 1 else 200_000
    per_message = int(sys.argv[2]) if len(sys.argv) > 2 else 100
    print(run_pipeline_bench(events=events, events_per_message=per_message).render())
