"""The command line as a user meets it: exit codes, and nothing but the result on stdout."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from blackbox.broker import free_port
from ledger.signer import Ed25519FileSigner

SECRETS = ["jane.roe@example.org", "4111 1111 1111 1111", "AKIAIOSFODNN7EXAMPLE"]


def run(*args: str, stdin: bytes = b"", tmp_path: Path) -> subprocess.CompletedProcess[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BLACKBOX_")}
    return subprocess.run(
        [sys.executable, "-m", "blackbox.cli", *args, "--data-dir", str(tmp_path)],
        input=stdin,
        capture_output=True,
        env=env,
        timeout=120,
        check=False,
    )


def test_mask_streams_stdin_to_stdout_and_prints_nothing_else(tmp_path: Path) -> None:
    text = (
        "$ psql -c 'select * from customers'\n"
        f" 1 | {SECRETS[0]} | {SECRETS[1]}\n"
        f"export AWS_ACCESS_KEY_ID={SECRETS[2]}\n"
        "build 2024.11.3 finished in 12s\n"
    ).encode()
    result = run("mask", stdin=text, tmp_path=tmp_path)
    assert result.returncode == 0, result.stderr.decode()
    assert len(result.stdout) == len(text)  # masks keep the length
    out = result.stdout.decode()
    for secret in SECRETS:
        assert secret not in out
    assert "build 2024.11.3 finished in 12s" in out
    assert out.splitlines()[0] == "$ psql -c 'select * from customers'"


def test_token_without_a_dev_stack_is_a_clear_error(tmp_path: Path) -> None:
    result = run("token", tmp_path=tmp_path / "nothing-here")
    assert result.returncode == 2
    assert result.stdout == b""
    assert b"no dev keys" in result.stderr


def test_import_of_a_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    result = run(
        "import",
        str(tmp_path / "missing.cast"),
        "--identity",
        "x",
        "--target",
        "y",
        "--bootstrap",
        "127.0.0.1:1",
        tmp_path=tmp_path,
    )
    assert result.returncode == 2
    assert b"missing.cast" in result.stderr


def run_production_api(tmp_path: Path, settings: dict[str, str]) -> subprocess.CompletedProcess[bytes]:
    """`blackbox api` in production mode, configured by ``settings`` on top of a minimal valid set."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("BLACKBOX_")}
    env.update(
        {
            "BLACKBOX_ENVIRONMENT": "production",
            "BLACKBOX_JWT_JWKS_URL": "https://idp.example/jwks",
            "BLACKBOX_BLIND_INDEX_KEY": "0123456789abcdef" * 4,
            "BLACKBOX_ARCHIVE_URL": f"file://{tmp_path / 'archive'}",
            "BLACKBOX_INDEX_URL": f"chdb://{tmp_path / 'index'}",
            **settings,
        }
    )
    return subprocess.run(
        [sys.executable, "-m", "blackbox.cli", "api", "--port", "0"],
        capture_output=True,
        env=env,
        timeout=120,
        check=False,
    )


def test_an_api_without_the_ledger_public_key_is_a_clear_error(tmp_path: Path) -> None:
    """Production API with the ledger on and a key file that is not there: exit 2, no traceback."""
    result = run_production_api(tmp_path, {"BLACKBOX_LEDGER_PUBLIC_KEY_FILE": str(tmp_path / "missing.pub")})
    assert result.returncode == 2, result.stderr.decode()[-2000:]
    assert b"no ledger public key at" in result.stderr
    assert b"Traceback" not in result.stderr


def test_an_api_that_cannot_record_reads_does_not_start(tmp_path: Path) -> None:
    """Reads of session content are served only once on record: with no broker to record them on,
    the API says so and how to choose otherwise, instead of serving reads unaudited."""
    settings = {"BLACKBOX_LEDGER_ENABLED": "false", "BLACKBOX_KAFKA_BOOTSTRAP": f"127.0.0.1:{free_port()}"}
    result = run_production_api(tmp_path, settings)
    assert result.returncode == 2, result.stderr.decode()[-2000:]
    assert b"cannot record auditors' reads" in result.stderr
    assert b"BLACKBOX_AUDIT_READS=false" in result.stderr
    assert b"Traceback" not in result.stderr


def test_verify_of_a_missing_archive_exits_2(tmp_path: Path) -> None:
    key = tmp_path / "ledger.pub"
    key.write_text(Ed25519FileSigner.generate(tmp_path / "ledger.key", "blackbox.local").vkey + "\n")
    result = subprocess.run(
        [sys.executable, "-m", "blackbox.cli", "verify", str(tmp_path / "nowhere"), "--public-key", str(key)],
        capture_output=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 2
    assert result.stdout == b""
    assert b"no archive directory at" in result.stderr
    assert b"Traceback" not in result.stderr


def test_a_bad_policy_file_is_a_clear_error(tmp_path: Path) -> None:
    masking = tmp_path / "masking.yaml"
    masking.write_text("version: 1\ndefault: {custom: [{name: BIG, pattern: 'a{99999999999}'}]}\n")
    risk = tmp_path / "risk.yaml"
    risk.write_text("defaults:\n  table_tags:\n    2024: [pii]\n")
    for command, policy, message in (
        ("mask", masking, b"masking policy: "),
        ("score", risk, b"risk policy: "),
    ):
        result = run(command, "--policy", str(policy), tmp_path=tmp_path)
        assert result.returncode == 2, result.stderr.decode()
        assert result.stdout == b""
        assert result.stderr.splitlines()[-1].startswith(b"blackbox: " + message), result.stderr.decode()
        assert b"Traceback" not in result.stderr
