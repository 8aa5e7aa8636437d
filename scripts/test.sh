#!/usr/bin/env bash
# README's second command: set everything up from scratch and run the whole suite.
# Lint (ruff), types (mypy), the pure tests, then the integration tests against a
# real Kafka broker started by infra/kafka (pytest's session fixture starts it and
# stops it again if it was not already running) and an embedded ClickHouse (chDB).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

bash scripts/setup.sh
echo "== ruff"
.venv/bin/ruff check tracewatch tests bench
.venv/bin/ruff format --check tracewatch tests bench
echo "== mypy"
.venv/bin/mypy
echo "== pytest (pure, then integration)"
.venv/bin/pytest -m "not integration" -q
.venv/bin/pytest -m integration -q -s "$@"
