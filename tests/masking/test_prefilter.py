"""The prefilter only skips detectors that would find nothing: same output with and without it.

These run against the real Hyperscan (a dependency); a machine without it masks without the
prefilter, which is the other side of every comparison here.
"""

from __future__ import annotations

import random
import threading

import pytest

from masking import MaskingEngine, load_default_policy
from masking.context import KEY_NAMES, ContextScanner
from masking.corpus import generate, terminal_bytes
from masking.detectors import SHAPE, ContentScanner, Span, _has_npi_label
from masking.prefilter import GATE_ALL, GATE_CONTEXT_KEY, GATE_NPI_LABEL, Prefilter, load
from tests.masking.conftest import KEY


@pytest.fixture(scope="module")
def prefilter() -> Prefilter:
    loaded = load(list(KEY_NAMES))
    assert loaded is not None, "hyperscan is a dependency: it must load here"
    return loaded


def _texts() -> list[bytes]:
    """Every corpus document, alone and glued to its neighbours, and stretches of terminal output
    (routine and sensitive), cut at places that split values."""
    docs = [doc.text.encode("utf-8", "surrogatepass") for doc in generate(8, 900)]
    glued = [b"\n".join(docs[i : i + 7]) for i in range(0, len(docs), 7)]
    output = terminal_bytes(9, 600_000, sensitive_share=0.3)
    rng = random.Random(3)
    cuts: list[bytes] = []
    start = 0
    while start < len(output):
        end = start + rng.randrange(1, 6000)
        cuts.append(output[start:end])
        start = end
    return docs + glued + cuts


def test_a_detector_the_prefilter_skips_finds_nothing(prefilter: Prefilter) -> None:
    content = ContentScanner()
    context = ContextScanner()
    skipped_some = 0
    for text in _texts():
        gate = prefilter(text)
        lower, shape = text.lower(), text.translate(SHAPE)
        everything: list[Span] = []
        gated: list[Span] = []
        assert content.scan(text, lower, shape, gated, gate) == content.scan(text, lower, shape, everything)
        assert gated == everything
        if not gate & GATE_CONTEXT_KEY:
            assert context.hits(lower) == []
        if not gate & GATE_NPI_LABEL:
            assert not _has_npi_label(lower)
        skipped_some += gate != GATE_ALL
    assert skipped_some > 1000  # the comparison above is not vacuous


def test_every_text_masks_the_same_with_and_without_it() -> None:
    """Short texts too (a field, a line of output): each goes through the pass."""
    with_it = MaskingEngine(load_default_policy(), KEY)
    without = MaskingEngine(load_default_policy(), KEY, prefilter=False)
    docs = [doc.text.encode("utf-8", "surrogatepass") for doc in generate(11, 300)]
    lines = [line for doc in docs for line in doc.splitlines(keepends=True)]
    found = 0
    for text in docs + lines + [b"", b"4", b"@", b"::"]:
        masked = with_it.mask_bytes(text, "body.data")
        assert masked == without.mask_bytes(text, "body.data")
        found += len(masked[1])
    assert found > 500  # there was something to mask


@pytest.mark.parametrize("chunk", [37, 180, 700, 1500, 4096, 9000])
@pytest.mark.parametrize("share", [0.1, 1.0])
def test_streams_mask_the_same_with_and_without_it(chunk: int, share: float) -> None:
    with_it = MaskingEngine(load_default_policy(), KEY)
    without = MaskingEngine(load_default_policy(), KEY, prefilter=False)
    assert with_it.uses_prefilter
    assert not without.uses_prefilter
    data = terminal_bytes(21, 400_000, sensitive_share=share)

    def masked(engine: MaskingEngine) -> list[object]:
        stream = engine.stream()
        out: list[object] = [stream.feed(data[i : i + chunk]) for i in range(0, len(data), chunk)]
        out.append(stream.flush())
        return out

    assert masked(with_it) == masked(without)
    whole = with_it.mask_bytes(data, "body.data")
    assert whole == without.mask_bytes(data, "body.data")
    assert whole[1]  # there was something to mask


def test_it_can_be_turned_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BLACKBOX_MASKING_PREFILTER", "0")
    assert load(list(KEY_NAMES)) is None
    assert not MaskingEngine(load_default_policy(), KEY).uses_prefilter


def test_threads_scan_at_once(prefilter: Prefilter) -> None:
    """Hyperscan's scratch space is per scan in progress: each thread has its own."""
    text = terminal_bytes(5, 200_000, sensitive_share=1.0)
    expected = prefilter(text)
    results: list[int] = []
    errors: list[BaseException] = []

    def scan() -> None:
        try:
            results.extend(prefilter(text) for _ in range(50))
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=scan) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert results == [expected] * 200
