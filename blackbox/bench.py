"""`blackbox bench pipeline`: sealed events per second end to end, against a ceiling measured in the same run.

Both runs use a fresh Tansu broker on this machine and the same generated sessions, emitted
through the SDK while the consumer runs, and both are timed from the first emit to the last
confirmed output:

- ceiling: a plain aiokafka loop that consumes, decodes every event, and produces the decoded
  batches to another topic — the least any processor of these messages must do — in a process
  of its own, like the worker;
- pipeline: the real seal worker (`blackbox worker`, Faust) in its own process, sealing into a
  local WORM archive and chdb; an event counts once its record is published on
  blackbox.sealed, which happens only after the archive object and index rows are durable.

A run is several rounds, each a ceiling and a pipeline on a broker of its own; the report gives
every round and the medians. Two processes sharing two cores swing by a fifth from one minute to
the next here, so one round's ratio says little; a round's two runs share its conditions.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from blackbox.broker import TansuBroker
from blackbox.compiled import use_current_sources
from blackbox.settings import Settings, seals_in_a_process
from blackbox.topics import ensure_topics
from ingest.demo import generate_load
from ingest.emitter import Emitter
from schemas import default_registry

PARTITIONS = 4


def _thread_cpu_seconds(pid: int) -> dict[int, float] | None:
    """CPU seconds (user + system) of each thread of ``pid`` and of its child processes (a seal
    process, decoder processes) so far; None without /proc."""
    ticks = os.sysconf("SC_CLK_TCK")
    threads: dict[int, float] = {}
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return None
    for task in tasks:
        try:
            with open(f"/proc/{pid}/task/{task}/stat", "rb") as stat:
                fields = stat.read().rsplit(b")", 1)[1].split()
        except OSError:
            continue  # the thread ended between the listing and the read
        try:
            with open(f"/proc/{pid}/task/{task}/children", "rb") as listing:
                children = [int(child) for child in listing.read().split()]
        except OSError:
            children = []  # ended meanwhile, or a kernel without the file: its own CPU still counts
        # utime and stime: fields 14 and 15 of stat(5), 12 and 13 after the ")" that ends comm
        threads[int(task)] = (int(fields[11]) + int(fields[12])) / ticks
        for child in children:
            threads.update(_thread_cpu_seconds(child) or {})
    return threads


def _cpu_between(before: dict[int, float] | None, after: dict[int, float] | None) -> float | None:
    """CPU seconds all threads spent between two `_thread_cpu_seconds` readings."""
    if before is None or after is None:
        return None
    # A thread that started meanwhile counts from zero; one that ended took its time with it
    # (the worker's threads live as long as it does, so this loses nothing that matters).
    return sum(seconds - before.get(tid, 0.0) for tid, seconds in after.items())


@dataclass(frozen=True)
class BenchReport:
    """One round: the same events through the ceiling loop and through the worker."""

    events: int
    events_per_message: int
    emit_seconds: float
    ceiling_seconds: float
    pipeline_seconds: float
    seal_only: bool = False
    # CPU the worker spent while the clock ran, all threads of its process and of its child
    # processes; None where /proc cannot tell. Near one core busy, a worker without a seal
    # process is bound by its interpreter lock, whichever thread holds it.
    worker_cpu_seconds: float | None = None
    seal_process: bool = False

    @property
    def ceiling_rate(self) -> float:
        return self.events / self.ceiling_seconds

    @property
    def pipeline_rate(self) -> float:
        return self.events / self.pipeline_seconds

    @property
    def ratio(self) -> float:
        return self.pipeline_rate / self.ceiling_rate


@dataclass(frozen=True)
class BenchSummary:
    """The rounds of one run, each a ceiling and a pipeline measured back to back."""

    rounds: tuple[BenchReport, ...]

    @property
    def events(self) -> int:
        return self.rounds[0].events

    @property
    def seal_only(self) -> bool:
        return self.rounds[0].seal_only

    @property
    def ceiling_rate(self) -> float:
        return statistics.median(r.ceiling_rate for r in self.rounds)

    @property
    def pipeline_rate(self) -> float:
        return statistics.median(r.pipeline_rate for r in self.rounds)

    @property
    def ratio(self) -> float:
        """The median of the rounds' ratios (each against the ceiling of its own round)."""
        return statistics.median(r.ratio for r in self.rounds)

    def render(self) -> str:
        first = self.rounds[0]
        worker = "seal only (no masking, no scoring)" if first.seal_only else "mask, score, chain, ledger"
        worker += "; sealing in a process of its own" if first.seal_process else "; sealing in the worker"
        lines = [
            f"events: {first.events} in messages of {first.events_per_message} ({PARTITIONS} partitions),"
            f" {len(self.rounds)} round(s)",
            f"worker: {worker}; seal path {use_current_sources()}",
            "round   emit only   ceiling (consume → decode → produce)   pipeline (emit → sealed,"
            " archived, indexed)   pipeline / ceiling   worker CPU µs/event",
        ]
        for number, r in enumerate(self.rounds, 1):
            lines.append(
                f"{number:>5} {r.events / r.emit_seconds:>11,.0f} {r.ceiling_rate:>38,.0f}"
                f" {r.pipeline_rate:>44,.0f} {r.ratio:>20.3f} {_worker_cpu(r):>21}"
            )
        lines += [
            f"median {'':>10} {self.ceiling_rate:>38,.0f} {self.pipeline_rate:>44,.0f} {self.ratio:>20.3f}",
            "events/s; targets: ≥ 20,000 events/s end to end and ≥ 0.50 of the ceiling. Worker CPU: the"
            " worker's threads and child processes while the clock ran, per event, and the cores they"
            " kept busy",
        ]
        return "\n".join(lines)


def _worker_cpu(report: BenchReport) -> str:
    if report.worker_cpu_seconds is None:
        return "unknown"
    per_event = report.worker_cpu_seconds / report.events * 1e6
    return f"{per_event:.0f} ({report.worker_cpu_seconds / report.pipeline_seconds:.2f} cores)"


# Sessions the benchmark's events are spread over (1,000 events each at the default 200,000).
PIPELINE_SESSIONS = 200


def generated_sessions(events: int, sessions: int, seed: int = 7) -> list[list[dict[str, Any]]]:
    """The benchmark's load: ``events`` spread over ``sessions`` generated sessions."""
    per_session = max(2, events // sessions)
    return [[dict(event) for event in batch] for batch in generate_load(sessions, per_session, seed=seed)]


async def _emit(bootstrap: str, topic: str, sessions: list[list[dict[str, Any]]], per_message: int) -> float:
    started = time.monotonic()
    async with Emitter(bootstrap, topic, max_batch_events=per_message, linger_ms=5) as emitter:
        for events in sessions:
            await emitter.emit_many(events)
    return time.monotonic() - started


async def _ceiling(bootstrap: str, source: str, sink: str, events: int, ready: Callable[[], None]) -> float:
    """monotonic() when every event was consumed, decoded and its batch produced."""
    registry = default_registry()
    consumer = AIOKafkaConsumer(
        source,
        bootstrap_servers=bootstrap,
        group_id=None,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5, max_batch_size=1 << 20)
    await consumer.start()
    await producer.start()
    seen = 0
    try:
        ready()
        pending = []
        while seen < events:
            batches = await consumer.getmany(timeout_ms=200, max_records=2000)
            for messages in batches.values():
                for message in messages:
                    decoded = registry.decode_events(message.value)
                    seen += len(decoded.events)
                    pending.append(
                        await producer.send(sink, b"".join(raw for _, raw in decoded.events), key=message.key)
                    )
        await asyncio.gather(*pending)
    finally:
        await consumer.stop()
        await producer.stop()
    return time.monotonic()


async def _count_sealed(
    bootstrap: str, topic: str, records: int, alive: Callable[[], bool], limit_seconds: float = 600.0
) -> float:
    """monotonic() when ``records`` records were published on ``topic`` (counted from the first)."""
    registry = default_registry()
    deadline = time.monotonic() + limit_seconds
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, group_id=None, auto_offset_reset="earliest"
    )
    await consumer.start()
    seen = 0
    try:
        while seen < records:
            if not alive():
                raise RuntimeError("the worker died during the benchmark")
            if time.monotonic() > deadline:
                raise TimeoutError(f"only {seen} of {records} records sealed after {limit_seconds:.0f}s")
            batches = await consumer.getmany(timeout_ms=200)
            for messages in batches.values():
                for message in messages:
                    blocks = registry.decode(message.value).value["blocks"]
                    seen += sum(len(block["record_hashes"]) for block in blocks)
    finally:
        await consumer.stop()
    return time.monotonic()


def _run_ceiling(bootstrap: str, source: str, sink: str, events: int, connection: Connection) -> None:
    finished = asyncio.run(_ceiling(bootstrap, source, sink, events, lambda: connection.send("ready")))
    connection.send(finished)


class _CeilingProcess:
    """The ceiling loop in a process of its own, as the worker is: sharing the emitter's
    process (and its GIL) would hold the ceiling down and flatter the ratio."""

    def __init__(
        self, bootstrap: str, source: str, sink: str, events: int, limit_seconds: float = 600.0
    ) -> None:
        context = multiprocessing.get_context("spawn")
        self._connection, child = context.Pipe(duplex=False)
        self._process = context.Process(
            target=_run_ceiling, args=(bootstrap, source, sink, events, child), daemon=True
        )
        self._limit = limit_seconds

    def __enter__(self) -> _CeilingProcess:
        self._process.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._process.is_alive():
            self._process.terminate()
        self._process.join(10)

    def _receive(self) -> Any:
        deadline = time.monotonic() + self._limit
        while not self._connection.poll(0.2):
            if not self._process.is_alive():
                raise RuntimeError(f"the ceiling process died (exit code {self._process.exitcode})")
            if time.monotonic() > deadline:
                raise TimeoutError(f"the ceiling run took longer than {self._limit:.0f}s")
        return self._connection.recv()

    def wait_ready(self) -> None:
        self._receive()

    def finished_at(self) -> float:
        return float(self._receive())


def _start_worker(
    bootstrap: str, work: Path, run: str, *, decode_processes: int, seal_only: bool, seal_process: bool
) -> subprocess.Popen[bytes]:
    # The worker's settings are the benchmark's alone; only how the seal path runs (compiled or
    # not, blackbox/compiled.py) passes through, so that both can be measured.
    passed = ("BLACKBOX_INTERPRETED",)
    env = {k: v for k, v in os.environ.items() if not k.startswith("BLACKBOX_") or k in passed}
    env.update(
        {
            "BLACKBOX_ENVIRONMENT": "dev",
            "BLACKBOX_KAFKA_BOOTSTRAP": bootstrap,
            "BLACKBOX_EVENTS_TOPIC": f"events-{run}",
            "BLACKBOX_SEALED_TOPIC": f"sealed-{run}",
            "BLACKBOX_DLQ_TOPIC": f"dlq-{run}",
            "BLACKBOX_CONSUMER_GROUP": f"bench-{run}",
            "BLACKBOX_KAFKA_SESSION_TIMEOUT_SECONDS": "6",
            "BLACKBOX_ARCHIVE_URL": f"file://{work / 'archive'}",
            "BLACKBOX_INDEX_URL": f"chdb://{work / 'index'}",
            "BLACKBOX_DATA_DIR": str(work),
            "BLACKBOX_LOG_LEVEL": "WARNING",
            "BLACKBOX_DECODE_PROCESSES": str(decode_processes),
            "BLACKBOX_MASKING_ENABLED": str(not seal_only).lower(),
            "BLACKBOX_SCORING_ENABLED": str(not seal_only).lower(),
            "BLACKBOX_SEAL_PROCESS": str(seal_process).lower(),
        }
    )
    log = (work / "worker.log").open("ab")
    try:
        return subprocess.Popen(
            [sys.executable, "-m", "blackbox.cli", "worker"], env=env, stdout=log, stderr=subprocess.STDOUT
        )
    finally:
        log.close()


async def _pipeline(
    bootstrap: str,
    work: Path,
    sessions: list[list[dict[str, Any]]],
    per_message: int,
    *,
    decode_processes: int,
    seal_only: bool,
    seal_process: bool,
) -> tuple[float, float | None]:
    """Seconds from the first emit to the last record sealed, and the worker's CPU meanwhile."""
    run = uuid.uuid4().hex[:8]
    await ensure_topics(bootstrap, PARTITIONS, (f"events-{run}", f"sealed-{run}", f"dlq-{run}"))
    worker = _start_worker(
        bootstrap,
        work,
        run,
        decode_processes=decode_processes,
        seal_only=seal_only,
        seal_process=seal_process,
    )
    try:

        def alive() -> bool:
            return worker.poll() is None

        # Warm up: the worker joins its group and seals one session before the clock starts.
        warmup = generated_sessions(10, 1, seed=8)
        await _emit(bootstrap, f"events-{run}", warmup, per_message)
        await _count_sealed(bootstrap, f"sealed-{run}", sum(len(s) + 1 for s in warmup), alive)
        expected = sum(len(s) + 1 for s in warmup + sessions)
        cpu_before = _thread_cpu_seconds(worker.pid)
        started = time.monotonic()
        counting = asyncio.ensure_future(_count_sealed(bootstrap, f"sealed-{run}", expected, alive))
        await _emit(bootstrap, f"events-{run}", sessions, per_message)
        finished = await counting
        return finished - started, _cpu_between(cpu_before, _thread_cpu_seconds(worker.pid))
    finally:
        worker.send_signal(signal.SIGTERM)
        try:
            worker.wait(30)
        except subprocess.TimeoutExpired:
            worker.kill()


async def _round(
    sessions: list[list[dict[str, Any]]],
    per_message: int,
    work: Path,
    *,
    decode_processes: int,
    seal_only: bool,
    seal_process: bool,
) -> BenchReport:
    total = sum(len(s) for s in sessions)
    with TansuBroker(log_file=work / "tansu.log") as broker:
        await ensure_topics(broker.bootstrap, PARTITIONS, ("ceiling.in", "ceiling.out"))
        with _CeilingProcess(broker.bootstrap, "ceiling.in", "ceiling.out", total) as ceiling:
            await asyncio.to_thread(ceiling.wait_ready)
            started = time.monotonic()
            emit_seconds = await _emit(broker.bootstrap, "ceiling.in", sessions, per_message)
            ceiling_seconds = await asyncio.to_thread(ceiling.finished_at) - started
        pipeline_seconds, worker_cpu = await _pipeline(
            broker.bootstrap,
            work,
            sessions,
            per_message,
            decode_processes=decode_processes,
            seal_only=seal_only,
            seal_process=seal_process,
        )
    return BenchReport(
        total,
        per_message,
        emit_seconds,
        ceiling_seconds,
        pipeline_seconds,
        seal_only,
        worker_cpu,
        seal_process,
    )


def run_pipeline_bench(
    events: int = 200_000,
    events_per_message: int = 100,
    sessions: int = PIPELINE_SESSIONS,
    *,
    decode_processes: int = 0,
    seal_only: bool = False,
    seal_process: bool | None = None,
    rounds: int = 3,
    progress: Callable[[str], None] | None = None,
) -> BenchSummary:
    """``seal_only``: the worker without masking and scoring (the foundation's seal path).
    ``seal_process``: where the worker seals (None: as the worker would by default, by the
    cores). ``progress`` hears about every round as it ends."""
    if rounds < 1:
        raise ValueError("a benchmark needs at least one round")
    # Where the worker will seal, decided as it decides (without masking and scoring: in its thread).
    seal_process = seals_in_a_process(
        Settings(
            environment="dev",
            seal_process=seal_process,
            masking_enabled=not seal_only,
            scoring_enabled=not seal_only,
        )
    )
    generated = generated_sessions(events, sessions)
    reports: list[BenchReport] = []
    for number in range(1, rounds + 1):
        with tempfile.TemporaryDirectory(prefix="blackbox-bench-") as directory:
            report = asyncio.run(
                _round(
                    generated,
                    events_per_message,
                    Path(directory),
                    decode_processes=decode_processes,
                    seal_only=seal_only,
                    seal_process=seal_process,
                )
            )
        reports.append(report)
        if progress is not None:
            progress(
                f"round {number}/{rounds}: ceiling {report.ceiling_rate:,.0f} events/s, "
                f"pipeline {report.pipeline_rate:,.0f} events/s ({report.ratio:.3f})"
            )
    return BenchSummary(tuple(reports))
