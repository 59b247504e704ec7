"""Risk scoring throughput on the labeled corpus (risk.corpus).

Reports events per second for the scorer alone, cold (empty SQL parse and shell command-line
caches, no identity history) and warm (caches filled, as in a long-running worker; identity
history reset), and for `blackbox score` end to end (Avro JSON decoding included). Run:

    .venv/bin/python bench/bench_scoring.py [--repeat N] [--json]
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import time
from typing import Any

import fastavro

from risk import cli, rules, sql
from risk.corpus import Example, corpus
from risk.scorer import StatefulScorer
from schemas import EVENT_SCHEMA, default_registry


def score_all(examples: list[Example]) -> float:
    scorer = StatefulScorer()
    start = time.perf_counter()
    for example in examples:
        scorer.score(example.event, list(example.findings))
    return time.perf_counter() - start


def bench(repeat: int) -> dict[str, Any]:
    examples = corpus()
    events = len(examples)
    statements = sum(1 for e in examples if e.event["body"][0].endswith(".Query"))
    sql.clear_cache()
    rules.clear_cache()
    cold = score_all(examples)
    warm = min(score_all(examples) for _ in range(repeat))

    text = io.StringIO()
    fastavro.json_writer(text, default_registry().schema(EVENT_SCHEMA), [e.event for e in examples])
    lines = text.getvalue()
    start = time.perf_counter()
    code = cli.main(io.StringIO(lines), io.StringIO(), stderr=sys.stderr)
    end_to_end = time.perf_counter() - start
    assert code == 0
    return {
        "events": events,
        "sql_statements": statements,
        "corpus_mb": round(len(lines) / 1e6, 1),
        "cold_events_per_s": round(events / cold),
        "warm_events_per_s": round(events / warm),
        "warm_us_per_event": round(warm / events * 1e6, 1),
        "cli_events_per_s": round(events / end_to_end),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5, help="warm passes; the fastest is reported")
    parser.add_argument("--json", action="store_true", help="one JSON object instead of a table")
    args = parser.parse_args(argv)
    result = bench(args.repeat)
    if args.json:
        print(json.dumps(result))
    else:
        for key, value in result.items():
            print(f"{key:>20}  {value:,}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
