"""Settings refuse unsafe production choices at start."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from pydantic import ValidationError

from blackbox.settings import Settings, seals_in_a_process


def test_production_requires_a_token_key() -> None:
    with pytest.raises(ValidationError, match="JWT_PUBLIC_KEY_FILE or BLACKBOX_JWT_JWKS_URL"):
        Settings(environment="production")


def test_production_requires_a_blind_index_key(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="BLIND_INDEX_KEY"):
        Settings(environment="production", jwt_public_key_file=tmp_path / "key.pem")


def test_production_refuses_to_run_without_worm(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="REQUIRE_WORM=false"):
        Settings(environment="production", require_worm=False, jwt_public_key_file=tmp_path / "key.pem")


def test_settings_come_from_blackbox_variables(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("BLACKBOX_KAFKA_BOOTSTRAP", "kafka-1:9092")
    monkeypatch.setenv("BLACKBOX_JWT_JWKS_URL", "https://idp.example/jwks")
    monkeypatch.setenv("BLACKBOX_S3_SECRET_ACCESS_KEY", "not-printed")
    monkeypatch.setenv("BLACKBOX_BLIND_INDEX_KEY", "0123456789abcdef" * 4)
    monkeypatch.setenv("BLACKBOX_LEDGER_KEY_FILE", str(tmp_path / "ledger.key"))
    settings = Settings()
    assert settings.kafka_bootstrap == "kafka-1:9092"
    assert "not-printed" not in repr(settings)


def test_dev_allows_the_embedded_defaults() -> None:
    assert Settings(environment="dev", require_worm=False).require_worm is False


def test_production_requires_a_ledger_key_unless_the_ledger_is_off(tmp_path: Path) -> None:
    safe = {
        "environment": "production",
        "jwt_public_key_file": tmp_path / "key.pem",
        "blind_index_key": "0123456789abcdef" * 4,
    }
    with pytest.raises(ValidationError, match="BLACKBOX_LEDGER_KEY_FILE"):
        Settings(**safe)
    assert Settings(**safe, ledger_public_key_file=tmp_path / "ledger.pub").ledger_enabled
    assert not Settings(**safe, ledger_enabled=False).ledger_enabled


@pytest.mark.parametrize("epoch", ["root", "ledger", "..", "a/b"])
def test_an_epoch_that_would_collide_with_ledger_keys_is_refused(epoch: str) -> None:
    with pytest.raises(ValidationError, match="source_epoch"):
        Settings(environment="dev", source_epoch=epoch)


def test_a_ledger_log_name_must_be_path_segments() -> None:
    with pytest.raises(ValidationError, match="ledger_log_name"):
        Settings(environment="dev", ledger_log_name="a//b")


def test_production_refuses_to_store_unmasked_data(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="MASKING_ENABLED=false"):
        Settings(environment="production", masking_enabled=False, jwt_public_key_file=tmp_path / "key.pem")


@pytest.mark.parametrize(
    ("setting", "cores", "masking", "expected"),
    [
        (None, 2, True, True),  # unset: a process of its own with two cores
        (None, 1, True, False),  # ... and in the worker with one
        (False, 8, True, False),
        (True, 1, True, True),
        (None, 8, False, False),  # nothing to seal but the chain: the worker does it
    ],
)
def test_the_worker_seals_in_a_process_of_its_own_by_the_cores(
    monkeypatch: pytest.MonkeyPatch, setting: bool | None, cores: int, masking: bool, expected: bool
) -> None:
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(cores)))
    settings = Settings(
        environment="dev", seal_process=setting, masking_enabled=masking, scoring_enabled=masking
    )
    assert seals_in_a_process(settings) is expected
