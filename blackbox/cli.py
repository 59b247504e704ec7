"""`blackbox`: one command line for the dev stack, the production processes and the tools."""

from __future__ import annotations

import argparse
import asyncio
import io
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import cast

from pydantic import ValidationError

from blackbox.settings import ConfigurationError
from blackbox.verify_cmd import add_verify_parser

logger = logging.getLogger(__name__)

DEFAULT_DATA_DIR = Path(".blackbox")


class CommandError(Exception):
    """A problem the user can fix; printed without a traceback."""


def _bootstrap(args: argparse.Namespace) -> str:
    if args.bootstrap:
        return str(args.bootstrap)
    from blackbox.devstack import StackNotRunning, read_stack  # noqa: PLC0415

    try:
        return read_stack(args.data_dir).bootstrap
    except StackNotRunning as exc:
        raise CommandError(f"{exc}; or pass --bootstrap HOST:PORT") from None


def _add_stack_target(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--data-dir", type=Path, default=DEFAULT_DATA_DIR, help="data dir of a running dev stack"
    )
    parser.add_argument("--bootstrap", help="Kafka bootstrap servers (instead of a dev stack's)")
    parser.add_argument("--topic", default="blackbox.events")


def cmd_dev(args: argparse.Namespace) -> int:
    from blackbox.devstack import run_dev_stack  # noqa: PLC0415

    run_dev_stack(
        args.data_dir,
        api_port=args.port,
        broker_port=args.broker_port,
        demo=not args.no_demo,
        s3_endpoint=args.s3_endpoint,
        partitions=args.partitions,
    )
    return 0


def cmd_worker(args: argparse.Namespace) -> int:
    from blackbox.settings import Settings  # noqa: PLC0415
    from blackbox.topics import ensure_topics  # noqa: PLC0415
    from blackbox.wiring import build_worker, open_archive, open_migrated_index  # noqa: PLC0415
    from streams.app import run_worker  # noqa: PLC0415

    settings = Settings()
    if args.create_topics:
        topics = (settings.events_topic, settings.sealed_topic, settings.dlq_topic, settings.alerts_topic)
        asyncio.run(ensure_topics(settings.kafka_bootstrap, settings.topic_partitions, topics))
    store = open_archive(settings)
    index = open_migrated_index(settings)
    worker = build_worker(settings, store, index)
    try:
        run_worker(worker.app, loglevel=settings.log_level)
    finally:
        worker.close()
        index.close()
    return 0


def cmd_api(args: argparse.Namespace) -> int:
    import uvicorn  # noqa: PLC0415

    from api.app import create_app  # noqa: PLC0415
    from blackbox.settings import Settings  # noqa: PLC0415
    from blackbox.wiring import (  # noqa: PLC0415
        build_token_verifier,
        open_access_log,
        open_archive,
        open_migrated_index,
        open_proofs,
    )
    from replay.reader import SessionReader  # noqa: PLC0415

    settings = Settings()
    verifier = build_token_verifier(settings)
    index = open_migrated_index(settings)
    access_log = None
    try:
        store = open_archive(settings)
        proofs = open_proofs(settings, index, store)
        access_log = open_access_log(settings)
        app = create_app(SessionReader(index, store), verifier, proofs=proofs, access_log=access_log)
        uvicorn.run(app, host=args.host or settings.api_host, port=args.port or settings.api_port)
    finally:
        if access_log is not None:
            access_log.close()  # ends the auditors' sessions
        index.close()
    return 0


def cmd_token(args: argparse.Namespace) -> int:
    from api.auth import mint_token  # noqa: PLC0415
    from blackbox.devstack import dev_token  # noqa: PLC0415

    if args.private_key:
        token = mint_token(
            args.private_key.read_bytes(), role=args.role, subject=args.subject, ttl_seconds=args.ttl
        )
    else:
        if not (args.data_dir / "keys").exists():
            raise CommandError(
                f"no dev keys under {args.data_dir}; start `blackbox dev` or pass --private-key"
            )
        token = dev_token(args.data_dir, role=args.role, subject=args.subject, ttl_seconds=args.ttl)
    print(token)
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    from ingest.asciicast import AsciicastError, import_asciicast  # noqa: PLC0415

    try:
        session_id = import_asciicast(
            args.file,
            identity=args.identity,
            identity_kind=args.identity_kind,
            target=args.target,
            target_kind=args.target_kind,
            bootstrap=_bootstrap(args),
            topic=args.topic,
            session_id=args.session_id,
        )
    except AsciicastError as exc:
        raise CommandError(str(exc)) from None
    except FileNotFoundError:
        raise CommandError(f"no such file: {args.file}") from None
    print(session_id)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from ingest.demo import emit_demo  # noqa: PLC0415

    sessions = asyncio.run(emit_demo(_bootstrap(args), topic=args.topic, count_each=args.count))
    for session_id in sessions:
        print(session_id)
    return 0


def cmd_mask(args: argparse.Namespace) -> int:
    """stdin → masked stdout as a stream, with the worker's engine and policy; nothing else on stdout."""
    from blackbox.settings import Settings  # noqa: PLC0415
    from blackbox.wiring import blind_index_key  # noqa: PLC0415
    from masking.engine import MaskingEngine  # noqa: PLC0415
    from masking.policy import PolicyError, load_default_policy, load_policy  # noqa: PLC0415

    policy_file = args.policy
    settings = Settings(environment="dev", data_dir=args.data_dir)
    try:
        policy = load_policy(policy_file) if policy_file else load_default_policy()
    except PolicyError as exc:
        raise CommandError(f"masking policy: {exc}") from None
    engine = MaskingEngine(policy, blind_index_key(settings))
    stream = engine.stream(policy=policy.resolve(args.connection, args.identity_kind))
    source, sink = cast(io.BufferedReader, sys.stdin.buffer), sys.stdout.buffer
    findings = 0
    while chunk := source.read1(64 * 1024):
        masked, found = stream.feed(chunk)
        findings += len(found)
        sink.write(masked)
        sink.flush()
    masked, found = stream.flush()
    findings += len(found)
    sink.write(masked)
    sink.flush()
    logger.info("masked %d value(s)", findings)
    return 0


def cmd_score(args: argparse.Namespace) -> int:
    """Events as Avro-JSON lines on stdin → one JSON line per event with its score and reasons."""
    from blackbox.settings import Settings  # noqa: PLC0415
    from blackbox.wiring import build_masker  # noqa: PLC0415
    from risk.cli import main as score_main  # noqa: PLC0415
    from risk.policy import PolicyError, load_policy  # noqa: PLC0415

    settings = Settings(environment="dev", data_dir=args.data_dir)
    try:
        policy = load_policy(args.policy) if args.policy else None
    except PolicyError as exc:
        raise CommandError(f"risk policy: {exc}") from None
    # Scored as in the worker: masked first, so that masking findings feed the bulk-PII signal.
    return score_main(sys.stdin, sys.stdout, stderr=sys.stderr, policy=policy, masker=build_masker(settings))


def cmd_bench(args: argparse.Namespace) -> int:
    from blackbox.bench import run_pipeline_bench  # noqa: PLC0415

    report = run_pipeline_bench(
        events=args.events,
        events_per_message=args.events_per_message,
        sessions=args.sessions,
        decode_processes=args.decode_processes,
        seal_only=args.seal_only,
        seal_process=args.seal_process,
        rounds=args.rounds,
        progress=lambda line: print(line, file=sys.stderr, flush=True),
    )
    print(report.render())
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="blackbox", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    dev = commands.add_parser("dev", help="run the whole embedded stack with demo data")
    dev.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR)
    dev.add_argument("--port", type=int, default=8080, help="API port (default 8080)")
    dev.add_argument(
        "--broker-port", type=int, help="Kafka port of the embedded broker (default: a free one)"
    )
    dev.add_argument("--no-demo", action="store_true", help="do not load the demo sessions")
    dev.add_argument("--s3-endpoint", help="archive to this S3 endpoint (bucket with Object Lock) instead")
    dev.add_argument("--partitions", type=int, default=4)
    dev.set_defaults(handler=cmd_dev)

    worker = commands.add_parser("worker", help="run the seal worker (settings from BLACKBOX_* variables)")
    worker.add_argument("--create-topics", action="store_true", help="create missing topics first")
    worker.set_defaults(handler=cmd_worker)

    api = commands.add_parser("api", help="run the HTTP API (settings from BLACKBOX_* variables)")
    api.add_argument("--host")
    api.add_argument("--port", type=int)
    api.set_defaults(handler=cmd_api)

    token = commands.add_parser("token", help="mint a token for a dev stack; prints only the token")
    token.add_argument("--role", default="auditor", choices=["auditor", "admin"])
    token.add_argument("--subject", default="dev-auditor")
    token.add_argument("--ttl", type=int, default=12 * 3600, help="lifetime in seconds")
    token.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR)
    token.add_argument("--private-key", type=Path, help="Ed25519 private key (PEM) instead of the dev key")
    token.set_defaults(handler=cmd_token)

    imp = commands.add_parser("import", help="import an asciinema recording as a terminal session")
    imp.add_argument("file", type=Path)
    imp.add_argument("--identity", required=True, help="the principal that ran the session")
    imp.add_argument(
        "--identity-kind",
        default="HUMAN",
        choices=["UNKNOWN", "SERVICE_ACCOUNT", "CI_JOB", "SCANNER", "AI_AGENT", "HUMAN"],
    )
    imp.add_argument("--target", required=True, help="connection name the session reached")
    imp.add_argument(
        "--target-kind", default="SSH", choices=["OTHER", "POSTGRES", "MYSQL", "KUBERNETES", "SSH", "HTTP"]
    )
    imp.add_argument("--session-id")
    _add_stack_target(imp)
    imp.set_defaults(handler=cmd_import)

    demo = commands.add_parser("demo", help="emit the demo sessions")
    demo.add_argument("--count", type=int, default=1, help="sessions of each kind")
    _add_stack_target(demo)
    demo.set_defaults(handler=cmd_demo)

    mask = commands.add_parser("mask", help="mask stdin to stdout as a stream (same engine as the worker)")
    mask.add_argument("--policy", type=Path, help="masking policy YAML (default: the shipped policy)")
    mask.add_argument("--connection", default="*", help="connection name the policy is resolved for")
    mask.add_argument("--identity-kind", default="UNKNOWN")
    mask.add_argument(
        "--data-dir", type=Path, default=DEFAULT_DATA_DIR, help="where the dev blind-index key lives"
    )
    mask.set_defaults(handler=cmd_mask)

    score = commands.add_parser("score", help="score events given as Avro-JSON lines on stdin")
    score.add_argument("--policy", type=Path, help="risk policy YAML merged over the shipped defaults")
    score.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR, help="dev blind-index key location")
    score.set_defaults(handler=cmd_score)

    add_verify_parser(commands)

    bench = commands.add_parser("bench", help="benchmarks")
    bench.add_argument("which", choices=["pipeline"])
    bench.add_argument("--events", type=int, default=200_000)
    bench.add_argument("--events-per-message", type=int, default=100)
    bench.add_argument("--sessions", type=int, default=200)
    bench.add_argument(
        "--rounds", type=int, default=3, help="ceiling-and-pipeline rounds; the report gives medians"
    )
    bench.add_argument("--decode-processes", type=int, default=0, help="the worker's decoder processes")
    where = bench.add_mutually_exclusive_group()
    where.add_argument(
        "--seal-process",
        dest="seal_process",
        action="store_const",
        const=True,
        help="the worker seals in a process of its own (BLACKBOX_SEAL_PROCESS; its CPU is counted);"
        " the default with two cores or more",
    )
    where.add_argument(
        "--in-worker",
        dest="seal_process",
        action="store_const",
        const=False,
        help="the worker seals in its pipeline thread, not in a seal process; the default with one core",
    )
    bench.add_argument(
        "--seal-only", action="store_true", help="the worker without masking and scoring (the bare seal path)"
    )
    bench.set_defaults(handler=cmd_bench)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        return int(args.handler(args))
    except CommandError as exc:
        print(f"blackbox: {exc}", file=sys.stderr)
        return 2
    except ValidationError as exc:
        print(f"blackbox: invalid settings:\n{exc}", file=sys.stderr)
        return 2
    except ConfigurationError as exc:
        print(f"blackbox: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
