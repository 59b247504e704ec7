"""Builds the seal path's modules (``blackbox/compiled.py`` lists them) to C extensions with
mypyc. Everything else about the distribution is in pyproject.toml.

``BLACKBOX_NO_COMPILE=1`` installs them as plain Python, as does a machine without mypyc or a C
compiler: the package works the same, only slower.
"""

from __future__ import annotations

import json
import os
import runpy
from pathlib import Path
from typing import Any

from setuptools import setup
from setuptools.command.build_ext import build_ext
from setuptools.errors import CCompilerError, CompileError, ExecError, PlatformError

ROOT = Path(__file__).resolve().parent
COMPILED = runpy.run_path(str(ROOT / "blackbox" / "compiled.py"))


class BuildAndRecord(build_ext):
    """Builds the extensions, then records which sources they were built from: the guard in
    ``blackbox.compiled`` runs a module's source instead of its extension once that changes."""

    def run(self) -> None:
        try:
            super().run()
        except (CCompilerError, CompileError, ExecError, PlatformError) as exc:
            print(f"setup: compiling the seal path's modules failed ({exc}); they stay interpreted")
            return
        if not self.extensions:
            return
        target = ROOT if self.inplace else Path(self.build_lib)
        manifest = target / "blackbox" / COMPILED["MANIFEST"]
        manifest.parent.mkdir(parents=True, exist_ok=True)
        manifest.write_text(json.dumps(COMPILED["source_digests"](ROOT), indent=1, sort_keys=True) + "\n")


def compiled_extensions() -> list[Any]:
    if os.environ.get("BLACKBOX_NO_COMPILE", "") not in ("", "0"):
        return []
    try:
        from mypyc.build import mypycify  # noqa: PLC0415  (only needed to compile)
    except ImportError:
        print("setup: mypyc is not installed; the seal path's modules stay interpreted")
        return []
    sources = [str(COMPILED["source_path"](module, ROOT).relative_to(ROOT)) for module in COMPILED["MODULES"]]
    # The project's own mypy settings load the pydantic plugin, which the isolated build
    # environment lacks; the packages these modules import are not there either, so their types
    # are Any (which compiles to the same calls into them).
    options = ["--config-file", os.devnull, "--ignore-missing-imports", "--python-version", "3.11"]
    return list(mypycify(options + sources, opt_level="3"))


setup(ext_modules=compiled_extensions(), cmdclass={"build_ext": BuildAndRecord})
