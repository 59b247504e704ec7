"""Masking tests need nothing but Python: one engine with the shipped default policy."""

from __future__ import annotations

import pytest

from masking import MaskingEngine, load_default_policy

KEY = b"test-blind-index-key-0123456789ab"


@pytest.fixture(scope="session")
def engine() -> MaskingEngine:
    return MaskingEngine(load_default_policy(), KEY)
