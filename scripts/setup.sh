#!/usr/bin/env bash
# Create .venv (Python 3.11+) and install tracewatch into it, editable, with the dev tools.
# Idempotent: skips the install when pyproject.toml and constraints.txt have not changed.
# constraints.txt pins the versions the suite last passed with (regenerate it with
# `.venv/bin/pip freeze --exclude-editable > constraints.txt` after an upgrade).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

python="${PYTHON:-}"
if [[ -z "$python" ]]; then
  for candidate in python3.11 python3.12 python3.13 python3; do
    if command -v "$candidate" >/dev/null 2>&1 &&
       "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
      python="$candidate"; break
    fi
  done
fi
[[ -n "$python" ]] || { echo "setup: need Python 3.11 or newer (set PYTHON=/path/to/python3.11)" >&2; exit 1; }

if [[ ! -x .venv/bin/python ]]; then
  echo "setup: creating .venv with $("$python" --version)"
  "$python" -m venv .venv
fi
stamp=.venv/.tracewatch-installed
want="$(cat pyproject.toml constraints.txt | sha256sum | cut -d' ' -f1)"
if [[ "$(cat "$stamp" 2>/dev/null || true)" != "$want" ]]; then
  echo "setup: installing tracewatch and its dependencies into .venv (first time: about 2 minutes)"
  .venv/bin/python -m pip install --quiet --disable-pip-version-check --upgrade pip
  .venv/bin/python -m pip install --quiet --disable-pip-version-check -c constraints.txt -e ".[dev]"
  echo "$want" > "$stamp"
fi

# Headless Chromium for the dashboard's end-to-end test (tests/integration/test_dashboard.py):
# Debian's chromium package, installed when missing (needs root and apt-get); CI must have it.
if ! command -v chromium >/dev/null 2>&1; then
  chromium_hint="as root: apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y chromium"
  if [[ "$(id -u)" == 0 ]] && command -v apt-get >/dev/null 2>&1; then
    mkdir -p .tracewatch
    apt_log=.tracewatch/apt-chromium.log
    echo "setup: installing Debian's chromium for the dashboard test (log: $apt_log)"
    if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; } \
         >"$apt_log" 2>&1; then
      echo "setup: could not install chromium (see $apt_log); $chromium_hint" >&2
      [[ "${CI:-}" != true ]] || exit 1
    fi
  elif [[ "${CI:-}" == true ]]; then
    echo "setup: chromium is missing and cannot be installed here (not root, or no apt-get); $chromium_hint" >&2
    exit 1
  else
    echo "setup: chromium is missing, so the dashboard's browser test will fail; $chromium_hint" >&2
  fi
fi
echo "setup: ready ($(.venv/bin/tracewatch --version 2>/dev/null || echo tracewatch) in .venv)"
