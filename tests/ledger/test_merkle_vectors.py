"""Every inclusion and consistency vector of transparency-dev/merkle (see vectors/README.md)."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest

from ledger.merkle import ProofError, verify_consistency, verify_inclusion

VECTORS = Path(__file__).parent / "vectors" / "merkle"


def _load(kind: str) -> list[Any]:
    files = sorted((VECTORS / kind).rglob("*.json"))
    return [pytest.param(json.loads(f.read_text()), id=str(f.relative_to(VECTORS))) for f in files]


def _b64(value: str) -> bytes:
    return base64.b64decode(value, validate=True)


def _proof(probe: dict[str, Any]) -> list[bytes]:
    return [_b64(h) for h in probe["proof"] or []]


INCLUSION = _load("inclusion")
CONSISTENCY = _load("consistency")


def test_every_vector_is_collected() -> None:
    # 98 + 98 probes upstream; a silently skipped directory would weaken conformance.
    assert len(INCLUSION) == 98
    assert len(CONSISTENCY) == 98
    assert sum(not p.values[0]["wantErr"] for p in INCLUSION) == 6
    assert sum(not p.values[0]["wantErr"] for p in CONSISTENCY) == 6


@pytest.mark.parametrize("probe", INCLUSION)
def test_inclusion_vector(probe: dict[str, Any]) -> None:
    args = (_b64(probe["leafHash"]), probe["leafIdx"], probe["treeSize"], _proof(probe), _b64(probe["root"]))
    if probe["wantErr"]:
        with pytest.raises(ProofError):
            verify_inclusion(*args)
    else:
        verify_inclusion(*args)


@pytest.mark.parametrize("probe", CONSISTENCY)
def test_consistency_vector(probe: dict[str, Any]) -> None:
    args = (probe["size1"], probe["size2"], _proof(probe), _b64(probe["root1"]), _b64(probe["root2"]))
    if probe["wantErr"]:
        with pytest.raises(ProofError):
            verify_consistency(*args)
    else:
        verify_consistency(*args)
