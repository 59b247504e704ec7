"""What the seal step costs per event, in one process, on the pipeline benchmark's load.

The pipeline benchmark (`blackbox bench pipeline`) gives events per second end to end; this one
says where a seal process's (or the worker's sealing thread's) time goes, per event: decoding
the messages, sealing them (mask, score, chain, with index rows and alerts: `seal_messages`),
and pickling the results as a seal process sends them to the worker. Each phase is timed over
the whole load, the best of ``--rounds`` (a fresh seal step each round, so no masker or identity
state carries over). Run:

    .venv/bin/python bench/bench_seal_step.py [--events 200000] [--per-message 100] [--rounds 3]
"""

from __future__ import annotations

import argparse
import gc
import sys
import tempfile
import time
from multiprocessing.reduction import ForkingPickler
from pathlib import Path

# Run as a script from a checkout: make the repository root importable, as pytest does for tests.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from blackbox.bench import PIPELINE_SESSIONS, generated_sessions
from blackbox.compiled import use_current_sources
from blackbox.settings import Settings
from blackbox.wiring import seal_parts
from schemas import BATCH_SCHEMA, default_registry
from streams.seal import SessionState
from streams.sealer import seal_messages


def _messages(events: int, per_message: int) -> tuple[list[tuple[bytes, bytes]], int]:
    """The load's gateway messages (key, value), and how many events they hold (about
    ``events``: every session gets the same number)."""
    registry = default_registry()
    messages = []
    sessions = generated_sessions(events, PIPELINE_SESSIONS)
    for session in sessions:
        session_id = session[0]["session_id"]
        for start in range(0, len(session), per_message):
            batch = {"session_id": session_id, "events": session[start : start + per_message]}
            messages.append((session_id.encode(), registry.encode(BATCH_SCHEMA, batch)))
    return messages, sum(map(len, sessions))


def one_round(messages: list[tuple[bytes, bytes]], data_dir: Path) -> dict[str, float]:
    """CPU seconds of each phase over all ``messages``."""
    parts = seal_parts(Settings(environment="dev", data_dir=data_dir))  # its blind-index key is there
    started = time.process_time()
    decoded = [(key, parts.registry.decode_events(value).events) for key, value in messages]
    decoding = time.process_time() - started
    states = {
        events[0][0]["session_id"]: SessionState(events[0][0]["session_id"], 0) for _, events in decoded
    }
    started = time.process_time()
    sealed = seal_messages(parts.step, decoded, states, lambda session_id, seq: None)
    sealing = time.process_time() - started
    # Figures for a load that was not sealed would mean nothing: every event is on record.
    refused = sum(len(message.refused) for message in sealed)
    on_record = sum(1 for message in sealed for row in message.rows() if row.gateway_event)
    if refused or on_record != sum(len(events) for _, events in decoded):
        raise SystemExit(f"the load was not sealed whole: {on_record:,} events chained, {refused:,} refused")
    started = time.process_time()
    ForkingPickler.dumps(sealed)
    pickling = time.process_time() - started
    return {"decode": decoding, "seal": sealing, "pickle": pickling}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--per-message", type=int, default=100, help="events per gateway message")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    messages, events = _messages(args.events, args.per_message)
    gc.disable()  # as the worker seals a batch: the cyclic collector waits until it is done
    with tempfile.TemporaryDirectory(prefix="blackbox-bench-") as data_dir:
        rounds = [one_round(messages, Path(data_dir)) for _ in range(args.rounds)]
    print(
        f"seal step ({use_current_sources()}), {events:,} events in {len(messages):,} messages,"
        f" CPU µs per event, best of {args.rounds}:"
    )
    total = 0.0
    for phase, meaning in (
        ("decode", "decode the messages"),
        ("seal", "mask, score, chain; index rows and alerts"),
        ("pickle", "pickle the results (a seal process only)"),
    ):
        best = min(r[phase] for r in rounds) / events * 1e6
        total += best
        print(f"  {phase:<8}{best:>7.1f}   {meaning}")
    print(f"  {'total':<8}{total:>7.1f}")


if __name__ == "__main__":
    main()
