"""The modules of the seal path that the build compiles to C with mypyc, and the guard that keeps
a stale compiled module from running in place of its edited source.

Decoding, masking, scoring and sealing run once per event, and most of their time goes to
Python's own overhead (calls, attribute lookups, small loops) between the regex scans and hash
calls that already run in C. mypyc compiles these type-checked modules, unchanged, to extension
modules; measured on the benchmark's load: decoding -37%, masking -30%, scoring -39% per event.
The source stays the only truth: without a C compiler, or with ``BLACKBOX_NO_COMPILE=1`` at
install, the same modules run interpreted, and ``BLACKBOX_INTERPRETED=1`` at run time makes a
compiled install run them interpreted (for profilers, which see no compiled frames).

In a checkout the compiled modules sit next to their sources, and Python imports an extension
module before a ``.py`` of the same name; editing a source without rebuilding would silently run
the old code. So the build records each source's SHA-256 in ``compiled_sources.json`` beside this
file, and ``use_current_sources`` (called when ``blackbox`` is imported, which each package
holding a compiled module does first) checks it: when any
source changed since the build, *all* of them run interpreted (a compiled module calls its
compiled neighbours directly, so mixing would still run old code), with a warning on stderr.

Standard library only: ``setup.py`` reads ``MODULES`` before any dependency is installed.
"""

from __future__ import annotations

import hashlib
import importlib.abc
import importlib.machinery
import importlib.util
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

MODULES: tuple[str, ...] = (
    "schemas.shapes",
    "schemas.codec",
    "schemas.event_reader",
    "schemas.sealed",
    "ledger.chain",
    "masking.detectors",
    "masking.context",
    "masking.engine",
    "masking.event_masker",
    "masking.policy",
    "masking.prefilter",
    "risk.model",
    "risk.policy",
    "risk.rules",
    "risk.sql",
    "risk.behaviour",
    "risk.scorer",
    "streams.validate",
    "streams.decode",
    "streams.seal",
)

MANIFEST = "compiled_sources.json"
_ROOT = Path(__file__).resolve().parent.parent  # the directory holding the top-level packages


def source_path(module: str, root: Path = _ROOT) -> Path:
    return root.joinpath(*module.split(".")).with_suffix(".py")


def source_digests(root: Path = _ROOT) -> dict[str, str]:
    """SHA-256 of each compiled module's source, as the build records it."""
    return {module: hashlib.sha256(source_path(module, root).read_bytes()).hexdigest() for module in MODULES}


def _compiled_file(module: str, root: Path = _ROOT) -> Path | None:
    source = source_path(module, root)
    for suffix in importlib.machinery.EXTENSION_SUFFIXES:
        candidate = source.with_suffix(suffix)
        if candidate.exists():
            return candidate
    return None


def compiled_modules(root: Path = _ROOT) -> list[str]:
    """The modules of ``MODULES`` that have a compiled extension next to their source."""
    return [module for module in MODULES if _compiled_file(module, root) is not None]


def stale_modules(root: Path = _ROOT) -> list[str]:
    """Compiled modules whose source is not the one they were built from (all of them when the
    build left no record)."""
    compiled = compiled_modules(root)
    if not compiled:
        return []
    try:
        recorded = json.loads((root / "blackbox" / MANIFEST).read_text())
    except (OSError, ValueError):
        return compiled
    current = source_digests(root)
    return [module for module in compiled if recorded.get(module) != current[module]]


class _SourceFirst(importlib.abc.MetaPathFinder):
    """Imports the compiled modules from their ``.py`` files, ahead of the extension modules."""

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname not in MODULES:
            return None
        source = source_path(fullname)
        return importlib.util.spec_from_file_location(fullname, source) if source.exists() else None


_decided: list[str] = []  # the first decision of this process (later calls repeat it)


def use_current_sources() -> str:
    """Run the compiled modules from their sources when asked to or when the build is stale.
    Returns how they run: "compiled", "interpreted" (not built, or asked to) or "stale"."""
    if not _decided:
        _decided.append(_decide())
    return _decided[0]


def _decide() -> str:
    forced = os.environ.get("BLACKBOX_INTERPRETED", "") not in ("", "0")
    stale = [] if forced else stale_modules()
    if not forced and not stale:
        return "compiled" if compiled_modules() else "interpreted"
    loaded = [module for module in MODULES if module in sys.modules]
    if loaded:
        # Too late to swap them; say so rather than run two versions side by side.
        print(f"blackbox: {', '.join(loaded)} imported before the compiled-module check", file=sys.stderr)
    sys.meta_path.insert(0, _SourceFirst())
    if forced:
        return "interpreted"
    print(
        f"blackbox: compiled modules older than their sources ({', '.join(stale)}); running all "
        "of them interpreted, which is slower. Rebuild with `make setup`.",
        file=sys.stderr,
    )
    return "stale"
