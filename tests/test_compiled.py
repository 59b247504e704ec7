"""The compiled seal path (blackbox/compiled.py): a build runs only while it matches its sources."""

from __future__ import annotations

import importlib.machinery
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from blackbox import compiled
from blackbox.compiled import MANIFEST, MODULES, source_digests, source_path, stale_modules

EXTENSION = importlib.machinery.EXTENSION_SUFFIXES[0]


@pytest.fixture
def built_tree(tmp_path: Path) -> Path:
    """A copy of the compiled modules' sources with an extension file beside each and the build's
    record of the sources, as an in-place build leaves them."""
    for module in MODULES:
        target = source_path(module, tmp_path)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source_path(module), target)
        target.with_suffix(EXTENSION).write_bytes(b"")
    (tmp_path / "blackbox").mkdir(exist_ok=True)
    (tmp_path / "blackbox" / MANIFEST).write_text(json.dumps(source_digests(tmp_path)))
    return tmp_path


def test_a_build_of_the_current_sources_is_not_stale(built_tree: Path) -> None:
    assert stale_modules(built_tree) == []


def test_an_edited_source_makes_its_module_stale(built_tree: Path) -> None:
    source = source_path("masking.engine", built_tree)
    source.write_text(source.read_text() + "\n# edited\n")
    assert stale_modules(built_tree) == ["masking.engine"]


def test_without_the_build_record_every_compiled_module_is_stale(built_tree: Path) -> None:
    (built_tree / "blackbox" / MANIFEST).unlink()
    assert stale_modules(built_tree) == list(MODULES)


def test_sources_without_a_build_are_not_stale(built_tree: Path) -> None:
    for module in MODULES:
        source_path(module, built_tree).with_suffix(EXTENSION).unlink()
    assert stale_modules(built_tree) == []


def _module_files(env: dict[str, str]) -> dict[str, str]:
    """How a fresh interpreter imports the compiled modules: "so" or "py" for each."""
    script = (
        "import blackbox, importlib, json\n"
        f"modules = {list(MODULES)!r}\n"
        "print(json.dumps({m: importlib.import_module(m).__file__.rsplit('.', 1)[-1] for m in modules}))"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True, timeout=120
    )
    return dict(json.loads(done.stdout))


def test_blackbox_interpreted_runs_every_module_from_its_source() -> None:
    env = {**os.environ, "BLACKBOX_INTERPRETED": "1"}
    assert set(_module_files(env).values()) == {"py"}


def test_this_checkout_runs_the_seal_path_compiled_unless_told_otherwise() -> None:
    """`make setup` compiles the seal path; the benchmarks' figures are for compiled code. Under
    ``BLACKBOX_INTERPRETED=1`` (the second pass of `make test`) the same tests run from source."""
    env = {key: value for key, value in os.environ.items() if key != "BLACKBOX_INTERPRETED"}
    if os.environ.get("BLACKBOX_NO_COMPILE", "") not in ("", "0"):  # installed without compiling
        assert compiled.compiled_modules() == []
        assert set(_module_files(env).values()) == {"py"}
        return
    assert compiled.compiled_modules() == list(MODULES), "run `make setup` to compile the seal path"
    assert stale_modules() == []
    assert set(_module_files(env).values()) == {"so"}
    assert compiled.use_current_sources() == (
        "interpreted" if os.environ.get("BLACKBOX_INTERPRETED") else "compiled"
    )
