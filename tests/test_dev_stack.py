"""`blackbox dev` as a user runs it: the embedded stack in one process, reached by the CLI and
HTTP. An asciicast imported through the SDK comes back from the API with the same output."""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from blackbox.broker import free_port
from ingest.asciicast import read_asciicast

pytestmark = [pytest.mark.kafka, pytest.mark.clickhouse, pytest.mark.slow]

VECTORS = Path(__file__).resolve().parents[2] / "shared" / "vectors" / "asciicast"


def _blackbox(*args: str, data_dir: Path) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "blackbox.cli", *args, "--data-dir", str(data_dir)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


@pytest.fixture(scope="module")
def dev_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    data_dir = tmp_path_factory.mktemp("dev")
    port = free_port()
    log = (data_dir / "dev.log").open("wb")
    env = {k: v for k, v in os.environ.items() if not k.startswith("BLACKBOX_")}
    process = subprocess.Popen(
        [sys.executable, "-m", "blackbox.cli", "dev", "--data-dir", str(data_dir), "--port", str(port)],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
    )
    try:
        deadline = time.monotonic() + 90
        while not (data_dir / "stack.json").exists():
            assert process.poll() is None, (data_dir / "dev.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "the dev stack did not start in 90 s"
            time.sleep(0.2)
        stack = json.loads((data_dir / "stack.json").read_text())
        token = _blackbox("token", data_dir=data_dir).strip()
        yield {"data_dir": data_dir, "api": stack["api_url"], "token": token, "process": process}
    finally:
        process.send_signal(signal.SIGINT)  # what Ctrl-C sends
        try:
            code = process.wait(60)
        except subprocess.TimeoutExpired:
            process.kill()
            code = process.wait()
        log.close()
    assert code == 0, (data_dir / "dev.log").read_text()[-3000:]
    assert not (data_dir / "stack.json").exists(), "stack.json must go when the stack stops"


def _get(stack: dict[str, Any], path: str, **params: Any) -> httpx.Response:
    return httpx.get(
        f"{stack['api']}{path}",
        params=params,
        headers={"Authorization": f"Bearer {stack['token']}"},
        timeout=30,
    )


def _wait_sealed(stack: dict[str, Any], session_id: str, timeout: float = 60.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        response = _get(stack, f"/api/v1/sessions/{session_id}")
        if response.status_code == 200 and response.json()["sealed"]:
            return dict(response.json())
        assert time.monotonic() < deadline, f"session {session_id} not sealed: {response.text}"
        time.sleep(0.5)


def test_token_is_the_only_output(dev_stack: dict[str, Any]) -> None:
    assert dev_stack["token"].count(".") == 2
    assert "\n" not in dev_stack["token"]


def test_demo_sessions_are_loaded_and_sealed(dev_stack: dict[str, Any]) -> None:
    deadline = time.monotonic() + 60
    while True:
        items = _get(dev_stack, "/api/v1/sessions").json()["items"]
        kinds = {item["identity"]["kind"] for item in items if item["sealed"]}
        if {"CI_JOB", "SERVICE_ACCOUNT", "AI_AGENT", "SCANNER"} <= kinds:
            break
        assert time.monotonic() < deadline, items
        time.sleep(0.5)
    for item in items:
        if item["target"]["name"] == "blackbox-api":
            continue  # an auditor's reads (see the access test), open while the stack runs
        verdict = _get(dev_stack, f"/api/v1/sessions/{item['session_id']}/verify").json()
        assert verdict["valid"], verdict
        assert verdict["sealed"]


@pytest.mark.parametrize("vector", ["demo.cast", "full-v2.cast", "full-v3.cast", "minimal-v3.cast"])
def test_imported_asciicast_replays_with_the_original_output(dev_stack: dict[str, Any], vector: str) -> None:
    path = VECTORS / vector
    session_id = _blackbox(
        "import",
        str(path),
        "--identity",
        "ci-runner",
        "--target",
        "build-host",
        data_dir=dev_stack["data_dir"],
    ).strip()
    summary = _wait_sealed(dev_stack, session_id)
    assert summary["identity"]["principal"] == "ci-runner"

    response = _get(dev_stack, f"/api/v1/sessions/{session_id}/asciicast")
    assert response.status_code == 200
    lines = response.text.splitlines()
    header = json.loads(lines[0])
    assert header["version"] == 2
    replayed = [json.loads(line) for line in lines[1:]]
    original = read_asciicast(path)
    assert "".join(data for _, code, data in replayed if code == "o") == original.output
    resizes = [data for _, code, data in replayed if code == "r"]
    assert resizes == [event.data for event in original.events if event.code == "r"]
    times = [time_ for time_, _, _ in replayed]
    assert times == sorted(times)


def test_metrics_count_requests_and_sealed_events(dev_stack: dict[str, Any]) -> None:
    _get(dev_stack, "/api/v1/sessions")
    text = httpx.get(f"{dev_stack['api']}/metrics", timeout=30).text
    assert 'route="/api/v1/sessions",status="200"' in text
    events = next(line for line in text.splitlines() if line.startswith("blackbox_worker_events_total "))
    assert float(events.split()[1]) > 0


def _demo_session_ids(stack: dict[str, Any]) -> list[str]:
    _wait_for_demo(stack)
    return [item["session_id"] for item in _get(stack, "/api/v1/sessions").json()["items"]]


def _wait_for_demo(stack: dict[str, Any]) -> None:
    deadline = time.monotonic() + 60
    while True:
        items = _get(stack, "/api/v1/sessions").json()["items"]
        if sum(item["sealed"] for item in items) >= 4:
            return
        assert time.monotonic() < deadline, items
        time.sleep(0.5)


def _wait_included(stack: dict[str, Any], session_id: str, timeout: float = 30.0) -> dict[str, Any]:
    """The session's verdict once a signed checkpoint covers every record (about a second)."""
    deadline = time.monotonic() + timeout
    while True:
        verdict: dict[str, Any] = _get(stack, f"/api/v1/sessions/{session_id}/verify").json()
        ledger = verdict["ledger"]
        assert ledger is not None, "the dev stack runs with the ledger on"
        if ledger["pending"] == 0 and ledger["included"] == verdict["record_count"]:
            return verdict
        assert time.monotonic() < deadline, verdict
        time.sleep(0.5)


def test_every_demo_record_is_proven_under_a_signed_checkpoint(dev_stack: dict[str, Any]) -> None:
    for session_id in _demo_session_ids(dev_stack):
        verdict = _wait_included(dev_stack, session_id)
        assert verdict["valid"], verdict
        assert all(
            record["status"] == "included" and record["proof"] for record in verdict["ledger"]["records"]
        )

    latest = _get(dev_stack, "/api/v1/checkpoints/latest").json()
    assert latest["shards"]
    assert all(shard["size"] > 0 for shard in latest["shards"])
    assert all(shard["note"].startswith(shard["origin"] + "\n") for shard in latest["shards"])

    metrics = httpx.get(f"{dev_stack['api']}/metrics", timeout=30).text
    checkpoints = next(
        line for line in metrics.splitlines() if line.startswith("blackbox_ledger_checkpoints_total ")
    )
    assert float(checkpoints.split()[1]) > 0


def _verify(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "blackbox.cli", "verify", "--quiet", *args],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_the_dev_archive_and_a_proof_file_verify_offline_with_the_public_key(
    dev_stack: dict[str, Any], tmp_path: Path
) -> None:
    session_id = _demo_session_ids(dev_stack)[0]
    _wait_included(dev_stack, session_id)
    public_key = dev_stack["data_dir"] / "keys" / "ledger.key.pub"
    archive = dev_stack["data_dir"] / "archive"

    whole = _verify(str(archive), "--public-key", str(public_key))
    assert whole.returncode == 0, whole.stdout + whole.stderr
    one = _verify(str(archive), "--public-key", str(public_key), "--session", session_id)
    assert one.returncode == 0, one.stdout + one.stderr
    assert session_id in one.stdout

    response = _get(dev_stack, f"/api/v1/sessions/{session_id}/records/0/proof")
    assert response.status_code == 200, response.text
    proof = tmp_path / "record-0.tlog-proof"
    proof.write_text(response.text)
    alone = _verify("--proof", str(proof), "--public-key", str(public_key))
    assert alone.returncode == 0, alone.stdout + alone.stderr

    header, extra, rest = response.text.split("\n", 2)
    record = bytearray(base64.b64decode(extra.removeprefix("extra ")))
    record[-1] ^= 0x01  # one bit of the record the auditor was handed
    proof.write_text(f"{header}\nextra {base64.b64encode(record).decode()}\n{rest}")
    edited = _verify("--proof", str(proof), "--public-key", str(public_key))
    assert edited.returncode == 1, edited.stdout + edited.stderr
    assert edited.stdout.startswith("FAILED")


def test_an_auditors_reads_are_sealed_into_a_session_of_their_own(dev_stack: dict[str, Any]) -> None:
    """Invariant 7: reading a session's records leaves a chained, searchable record of the read."""
    demo = _get(dev_stack, "/api/v1/sessions", identity_kind="CI_JOB").json()["items"][0]["session_id"]
    assert _get(dev_stack, f"/api/v1/sessions/{demo}/events").status_code == 200
    deadline = time.monotonic() + 60
    while True:
        found = _get(dev_stack, "/api/v1/sessions", principal="dev-auditor", target="blackbox-api").json()
        reads = []
        for item in found["items"]:
            records = _get(dev_stack, f"/api/v1/sessions/{item['session_id']}/events").json()["events"]
            reads += [r["attributes"]["read_session_id"] for r in records if r["body_type"] == "HttpExchange"]
        if demo in reads:
            break
        assert time.monotonic() < deadline, found
        time.sleep(0.5)
    [access] = found["items"]
    assert access["identity"]["kind"] == "HUMAN"
    verdict = _get(dev_stack, f"/api/v1/sessions/{access['session_id']}/verify").json()
    assert verdict["failure"] is None, verdict  # its chain holds (it is open: the auditor reads on)
