"""The seal agent pauses the cyclic garbage collector for a batch, and only for a batch."""

from __future__ import annotations

import asyncio
import gc
import time
from collections.abc import Iterator

import pytest

from streams import app
from streams.app import collector_paused


@pytest.fixture(autouse=True)
def restore_collector() -> Iterator[None]:
    was_enabled = gc.isenabled()
    yield
    if was_enabled:
        gc.enable()
    else:
        gc.disable()


def test_the_collector_is_off_during_a_batch_and_on_again_after() -> None:
    gc.enable()
    with collector_paused():
        assert not gc.isenabled()
    assert gc.isenabled()


def test_a_failing_batch_turns_the_collector_back_on() -> None:
    gc.enable()
    with pytest.raises(RuntimeError), collector_paused():
        raise RuntimeError("the batch failed")
    assert gc.isenabled()


def test_a_collector_switched_off_before_stays_off() -> None:
    gc.disable()
    with collector_paused():
        pass
    assert not gc.isenabled()


def test_a_batch_that_outlasts_the_limit_gets_the_collector_back(monkeypatch: pytest.MonkeyPatch) -> None:
    # A batch waiting out an index outage must not keep the whole process from collecting.
    monkeypatch.setattr(app, "COLLECTOR_PAUSE_LIMIT_SECONDS", 0.05)
    gc.enable()
    seen: list[bool] = []

    def long_batch() -> str:
        with collector_paused():
            seen.append(gc.isenabled())
            time.sleep(0.3)
            seen.append(gc.isenabled())
        return "sealed"

    assert asyncio.run(app._sealed_in_thread(long_batch)) == "sealed"
    assert seen == [False, True]
    assert gc.isenabled()


def test_resuming_does_not_switch_on_a_collector_that_was_off_before() -> None:
    gc.disable()
    with collector_paused():
        app.resume_collector()
        assert not gc.isenabled()
    assert not gc.isenabled()
