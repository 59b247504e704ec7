#!/usr/bin/env bash
# Installs everything Blackbox needs on a fresh Debian machine with Python 3.11:
# a virtualenv with the project and its test tools, and Debian's chromium for browser tests.
# Safe to run again: each step is skipped when already done.
set -euo pipefail
cd "$(dirname "$0")/.."

python=${PYTHON:-python3.11}
command -v "$python" >/dev/null 2>&1 || python=python3
if ! "$python" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'; then
  echo "setup: Python 3.11 is required ($python is $("$python" --version 2>&1))" >&2
  exit 1
fi

if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv"
  "$python" -m venv .venv
fi

# Reinstall only when the dependency list changed. The install also compiles the seal path's
# modules (setup.py, blackbox/compiled.py); compile them again alone when one of them changed.
stamp=.venv/.blackbox-installed
wanted=$(cat pyproject.toml setup.py | sha256sum | cut -d' ' -f1)
compiled_stamp=.venv/.blackbox-compiled
compiled_wanted=$(.venv/bin/python -c 'import json, runpy
print(json.dumps(runpy.run_path("blackbox/compiled.py")["source_digests"](), sort_keys=True))' | sha256sum | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$wanted" ]; then
  echo "setup: installing Blackbox and its test tools into .venv (compiling takes a minute or two)"
  .venv/bin/python -m pip install --quiet --upgrade pip
  .venv/bin/python -m pip install --quiet -e ".[test]"
  echo "$wanted" > "$stamp"
  echo "$compiled_wanted" > "$compiled_stamp"
elif [ ! -f "$compiled_stamp" ] || [ "$(cat "$compiled_stamp")" != "$compiled_wanted" ]; then
  echo "setup: compiling the seal path's changed modules (mypyc, a minute or two)"
  .venv/bin/python -m pip install --quiet --no-deps -e .
  echo "$compiled_wanted" > "$compiled_stamp"
fi

# The web UI's terminal player (npm asciinema-player, pinned by api/web/package-lock.json; never
# committed). Both the dev stack and the browser tests need it.
lock=api/web/package-lock.json
player_stamp=api/web/node_modules/.blackbox-installed
if [ ! -f "$player_stamp" ] || [ "$(cat "$player_stamp")" != "$(sha256sum "$lock" | cut -d' ' -f1)" ]; then
  if ! command -v npm >/dev/null 2>&1; then
    echo "setup: npm is needed for the web UI's player (apt-get install npm)" >&2
    exit 1
  fi
  echo "setup: installing the web UI's terminal player (npm ci)"
  npm ci --prefix api/web --no-audit --no-fund --loglevel=error
  sha256sum "$lock" | cut -d' ' -f1 > "$player_stamp"
fi

if [ "${BLACKBOX_SETUP_BROWSER:-1}" = 1 ] && [ ! -x /usr/bin/chromium ]; then
  echo "setup: installing Debian's chromium for the browser tests"
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq chromium >/dev/null
fi
