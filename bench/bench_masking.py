"""Masking benchmark: throughput on terminal output and quality per entity type on the labeled
corpus, for Blackbox's masking engine and, in the same run, Microsoft Presidio's analyzer.

    .venv/bin/python bench/bench_masking.py [--size-mb 8] [--docs 600] [--json out.json]

Throughput is bytes per CPU second of this process (``time.process_time``), i.e. per core, so
other load on the machine does not distort it; wall-clock figures are printed beside it.

Presidio needs a spaCy pipeline, and spaCy's trained models are downloaded from a model hub that
this environment cannot reach. Presidio runs here with a *blank* English spaCy pipeline (tokenizer
only), saved to a temporary directory and loaded through Presidio's ``NlpEngineProvider``: all its
pattern recognizers (email, phone, credit card, SSN, IBAN, IP, URL, dates, ...) run as usual, and
only the NER-based PERSON / LOCATION / NRP detection is inactive. That makes Presidio *faster* than
with a trained model (NER is its most expensive step), so the speed ratio below is conservative.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

# Run as a script from a checkout: make the repository root importable, as pytest does for tests.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

# How the masking engine runs (compiled or not) goes into the report.
from blackbox.compiled import use_current_sources
from masking import MaskingEngine, load_default_policy
from masking.corpus import LOOKALIKE_KINDS, Document, generate, terminal_bytes
from masking.detectors import CONTEXTUAL_ENTITIES, SECRET_ENTITIES, STRUCTURED_ENTITIES

KEY = b"bench-blind-index-key-0123456789"
SEED = 20240

Spans = list[tuple[int, int]]


def timed(fn: Callable[[], Any], repeat: int = 3) -> tuple[float, float]:
    """Best (CPU seconds, wall seconds) over ``repeat`` runs."""
    cpu, wall = float("inf"), float("inf")
    for _ in range(repeat):
        c0, w0 = time.process_time(), time.perf_counter()
        fn()
        cpu = min(cpu, time.process_time() - c0)
        wall = min(wall, time.perf_counter() - w0)
    return cpu, wall


def chunks_of(data: bytes, size: int) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


# --- quality ------------------------------------------------------------------------------------


def quality(docs: list[Document], detect: Callable[[str], Spans]) -> dict[str, Any]:
    """Recall per entity type (a label counts when every character of it is masked) and the share
    of look-alikes left untouched."""
    found: Counter[str] = Counter()
    total: Counter[str] = Counter()
    kept: Counter[str] = Counter()
    seen: Counter[str] = Counter()
    for doc in docs:
        masked = bytearray(len(doc.text))
        for start, end in detect(doc.text):
            masked[start:end] = b"\x01" * (end - start)
        for label in doc.labels:
            total[label.kind] += 1
            if all(masked[i] or doc.text[i] in "\r\n" for i in range(label.start, label.end)):
                found[label.kind] += 1
        for label in doc.lookalikes:
            seen[label.kind] += 1
            if not any(masked[label.start : label.end]):
                kept[label.kind] += 1
    recall = {k: found[k] / total[k] for k in sorted(total)}
    return {
        "recall": recall,
        "labels": dict(total),
        "lookalikes_kept": {k: kept[k] / seen[k] for k in sorted(seen)},
        "lookalikes_kept_all": sum(kept.values()) / max(1, sum(seen.values())),
        "recall_structured": _pooled(found, total, STRUCTURED_ENTITIES),
        "recall_secret": _pooled(found, total, SECRET_ENTITIES),
        "recall_contextual": _pooled(found, total, CONTEXTUAL_ENTITIES),
    }


def _pooled(found: Counter[str], total: Counter[str], kinds: frozenset[str]) -> float:
    return sum(found[k] for k in kinds) / max(1, sum(total[k] for k in kinds))


# --- Blackbox -----------------------------------------------------------------------------------


def bench_blackbox(args: argparse.Namespace, docs: list[Document]) -> dict[str, Any]:
    engine = MaskingEngine(load_default_policy(), KEY)
    # The same detectors without the one-pass prefilter (masking/prefilter.py), for comparison.
    unfiltered = MaskingEngine(load_default_policy(), KEY, prefilter=False)
    out: dict[str, Any] = {"throughput": {}, "prefilter": engine.uses_prefilter}
    for name, share in (
        ("typical session (1 command in 10 prints sensitive data)", 0.1),
        ("routine output only (builds, listings, source; nothing to mask)", 0.0),
        ("dense (every command prints sensitive data)", 1.0),
    ):
        data = terminal_bytes(SEED, int(args.size_mb * 1_000_000), sensitive_share=share)
        events = chunks_of(data, args.chunk)

        def stream(events: list[bytes] = events, engine: MaskingEngine = engine) -> None:
            masker = engine.stream()
            for chunk in events:
                masker.feed(chunk)
            masker.flush()

        big = chunks_of(data, 65536)

        def one_shot(big: list[bytes] = big) -> None:
            for chunk in big:
                engine.mask_bytes(chunk, "body.data")

        _, findings = engine.mask_bytes(data, "body.data")
        s_cpu, s_wall = timed(stream)
        o_cpu, o_wall = timed(one_shot)
        u_cpu, _ = timed(lambda: stream(engine=unfiltered))
        out["throughput"][name] = {
            "bytes": len(data),
            "findings_per_kb": round(len(findings) / (len(data) / 1000), 2),
            f"stream_{args.chunk}B_events_mb_s_cpu": round(len(data) / s_cpu / 1e6, 1),
            f"stream_{args.chunk}B_events_mb_s_wall": round(len(data) / s_wall / 1e6, 1),
            "one_shot_64KB_mb_s_cpu": round(len(data) / o_cpu / 1e6, 1),
            "one_shot_64KB_mb_s_wall": round(len(data) / o_wall / 1e6, 1),
            f"stream_{args.chunk}B_events_without_prefilter_mb_s_cpu": round(len(data) / u_cpu / 1e6, 1),
        }

    def detect(text: str) -> Spans:
        return [(f["start"], f["end"]) for f in engine.mask_text(text, "body.data")[1]]

    out["quality"] = quality(docs, detect)
    return out


# --- Presidio -----------------------------------------------------------------------------------


def presidio_analyzer() -> tuple[Any, str]:
    """Presidio's AnalyzerEngine on a blank spaCy pipeline, or (None, why not)."""
    try:
        import spacy  # noqa: PLC0415 - optional: only the benchmark needs Presidio
        import tldextract  # noqa: PLC0415
        from presidio_analyzer import AnalyzerEngine  # noqa: PLC0415
        from presidio_analyzer.nlp_engine import NlpEngineProvider  # noqa: PLC0415
    except ImportError as exc:
        return None, (
            f"presidio-analyzer is not installed ({exc.name} missing): "
            "pip install presidio-analyzer (it brings spacy, phonenumbers and tldextract)"
        )
    # The email recognizer asks tldextract, which by default fetches the public suffix list from
    # the internet; use the snapshot bundled with tldextract instead.
    tldextract.extract = tldextract.TLDExtract(suffix_list_urls=())
    logging.getLogger("presidio-analyzer").setLevel(logging.ERROR)
    model_dir = tempfile.mkdtemp(prefix="blank-spacy-en-")
    spacy.blank("en").to_disk(model_dir)
    provider = NlpEngineProvider(
        nlp_configuration={
            "nlp_engine_name": "spacy",
            "models": [{"lang_code": "en", "model_name": model_dir}],
        }
    )
    analyzer = AnalyzerEngine(nlp_engine=provider.create_engine(), supported_languages=["en"])
    return analyzer, f"blank spaCy 'en' pipeline (no NER), spaCy {spacy.__version__}"


def bench_presidio(args: argparse.Namespace, docs: list[Document]) -> dict[str, Any]:
    analyzer, how = presidio_analyzer()
    if analyzer is None:
        return {"ran": False, "why": how}
    text = terminal_bytes(SEED, int(args.presidio_kb * 1000), sensitive_share=0.1).decode("utf-8", "replace")
    pieces = [text[i : i + 65536] for i in range(0, len(text), 65536)]
    cpu, wall = timed(lambda: [analyzer.analyze(p, language="en") for p in pieces], repeat=1)
    size = len(text.encode())

    def detect(t: str) -> Spans:
        return [(r.start, r.end) for r in analyzer.analyze(t, language="en")]

    return {
        "ran": True,
        "nlp": how,
        "entities": sorted(analyzer.get_supported_entities(language="en")),
        "throughput": {
            "typical session, 64KB texts": {
                "bytes": size,
                "mb_s_cpu": round(size / cpu / 1e6, 3),
                "mb_s_wall": round(size / wall / 1e6, 3),
            }
        },
        "quality": quality(docs[: args.presidio_docs], detect),
        "quality_docs": min(len(docs), args.presidio_docs),
    }


# --- report -------------------------------------------------------------------------------------


def report(result: dict[str, Any]) -> str:
    lines = []
    ours = result["blackbox"]
    how = use_current_sources()
    prefilter = "hyperscan prefilter" if ours["prefilter"] else "no prefilter (hyperscan not available)"
    lines.append(
        f"== Blackbox masking: throughput (per core = bytes per CPU second; engine {how}, {prefilter}) =="
    )
    for name, t in ours["throughput"].items():
        lines.append(f"  {name}: {t['bytes'] / 1e6:.1f} MB, {t['findings_per_kb']} findings/KB")
        for key, value in t.items():
            if key.endswith(("_cpu", "_wall")):
                lines.append(f"    {key:38s} {value:8.1f} MB/s")
    pres = result["presidio"]
    lines.append("")
    header = f"  {'entity':24s} {'labels':>6s} {'blackbox':>9s}"
    if pres["ran"]:
        header += f" {'presidio':>9s}"
    lines.append(f"== Quality on {result['docs']} corpus documents (recall: label fully masked) ==")
    lines.append(header)
    q = ours["quality"]
    pq = pres.get("quality", {})
    for entity in q["recall"]:
        row = f"  {entity:24s} {q['labels'][entity]:6d} {q['recall'][entity]:9.3f}"
        if pres["ran"]:
            row += f" {pq['recall'].get(entity, 0.0):9.3f}"
        lines.append(row)
    for group in ("structured", "secret", "contextual"):
        row = f"  {'[' + group + ']':24s} {'':6s} {q['recall_' + group]:9.3f}"
        if pres["ran"]:
            row += f" {pq['recall_' + group]:9.3f}"
        lines.append(row)
    lines.append("  look-alikes left intact:")
    for kind in LOOKALIKE_KINDS:
        row = f"    {kind:22s} {'':6s} {q['lookalikes_kept'].get(kind, 0.0):9.3f}"
        if pres["ran"]:
            row += f" {pq['lookalikes_kept'].get(kind, 0.0):9.3f}"
        lines.append(row)
    row = f"    {'[all]':22s} {'':6s} {q['lookalikes_kept_all']:9.4f}"
    if pres["ran"]:
        row += f" {pq['lookalikes_kept_all']:9.4f}"
    lines.append(row)
    lines.append("")
    lines.append("== Targets (issue 3) ==")
    typical = next(iter(ours["throughput"].values()))
    stream_key = f"stream_{result['chunk']}B_events_mb_s_cpu"
    checks = [
        ("recall structured >= 0.99", q["recall_structured"] >= 0.99),
        ("recall secret >= 0.99", q["recall_secret"] >= 0.99),
        ("recall contextual >= 0.95", q["recall_contextual"] >= 0.95),
        ("look-alikes intact >= 0.995", q["lookalikes_kept_all"] >= 0.995),
        (f"typical terminal output >= 50 MB/s per core ({stream_key})", typical[stream_key] >= 50),
    ]
    if pres["ran"]:
        ratio_stream = typical[stream_key] / next(iter(pres["throughput"].values()))["mb_s_cpu"]
        ratio_big = typical["one_shot_64KB_mb_s_cpu"] / next(iter(pres["throughput"].values()))["mb_s_cpu"]
        checks.append(
            (f">= 50x Presidio (stream {ratio_stream:.0f}x, 64KB texts {ratio_big:.0f}x)", ratio_stream >= 50)
        )
    for name, ok in checks:
        lines.append(f"  [{'ok' if ok else 'MISSED'}] {name}")
    lines.append("")
    if pres["ran"]:
        t = next(iter(pres["throughput"].values()))
        lines.append(f"== Presidio {pres['nlp']} ==")
        lines.append(
            f"  throughput: {t['mb_s_cpu']:.3f} MB/s per core ({t['mb_s_wall']:.3f} wall), "
            f"quality on {pres['quality_docs']} documents"
        )
        lines.append("  Recall counts a label as found when any Presidio result covers it, whatever its type")
        lines.append(
            "  (an anonymizer masks every result). PERSON and LOCATION need spaCy NER, which a blank"
        )
        lines.append("  pipeline lacks; Presidio has no recognizers for secrets. Its UUID, DATE_TIME and")
        lines.append("  bank/licence-number recognizers are what mask the look-alikes.")
    else:
        lines.append(f"== Presidio did not run: {pres['why']} ==")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mb", type=float, default=8.0, help="terminal output per throughput run")
    parser.add_argument("--chunk", type=int, default=4096, help="bytes per TerminalOutput event")
    parser.add_argument("--docs", type=int, default=600, help="corpus documents for quality")
    parser.add_argument("--presidio-docs", type=int, default=200, help="corpus documents Presidio analyses")
    parser.add_argument("--presidio-kb", type=float, default=400, help="terminal output Presidio is timed on")
    parser.add_argument("--no-presidio", action="store_true")
    parser.add_argument("--json", type=Path, help="also write the figures as JSON")
    args = parser.parse_args()
    docs = generate(SEED, args.docs)
    result: dict[str, Any] = {"docs": args.docs, "chunk": args.chunk, "blackbox": bench_blackbox(args, docs)}
    result["presidio"] = (
        {"ran": False, "why": "--no-presidio given"} if args.no_presidio else bench_presidio(args, docs)
    )
    print(report(result))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
