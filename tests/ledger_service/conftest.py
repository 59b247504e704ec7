"""One sealed, ledgered archive per test run (the real pipeline on chdb), copied by each test."""

from __future__ import annotations

from pathlib import Path

import pytest

from ledger.signer import Ed25519FileSigner
from tests.ledger_service.archives import LOG_NAME, Workload, copy_tree, ledger_all, open_store, seal_rounds


@pytest.fixture(scope="session")
def ledgered_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``stage1/``: rounds 0-2 sealed and ledgered; ``final/``: rounds 0-5, ledgered since.
    Each holds ``archive/`` (the WORM directory) and ``index/`` (chdb); the key is in ``keys/``."""
    base = tmp_path_factory.mktemp("ledgered")
    signer = Ed25519FileSigner.generate(base / "ledger.key", LOG_NAME)
    (base / "ledger.pub").write_text(signer.vkey + "\n")
    work = base / "final"
    workload = Workload()
    offsets: dict[int, int] = {}
    seal_rounds(work, workload, range(3), offsets)
    ledger_all(open_store(work / "archive"), signer)
    copy_tree(work, base / "stage1")
    seal_rounds(work, workload, range(3, workload.rounds), offsets)
    ledger_all(open_store(work / "archive"), signer)
    return base


@pytest.fixture
def signer(ledgered_template: Path) -> Ed25519FileSigner:
    return Ed25519FileSigner.load(ledgered_template / "ledger.key")


@pytest.fixture
def public_key_file(ledgered_template: Path) -> Path:
    return ledgered_template / "ledger.pub"


@pytest.fixture
def archive(ledgered_template: Path, tmp_path: Path) -> Path:
    """A private copy of the final archive directory (with its index next to it)."""
    return copy_tree(ledgered_template / "final", tmp_path / "final") / "archive"
