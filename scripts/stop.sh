#!/usr/bin/env bash
# Stop the worker started by scripts/demo.sh (it drains and commits first), then the broker
# and Alertmanager.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
export TRACEWATCH_HOME="${TRACEWATCH_HOME:-$root/.tracewatch}"
run_file="$TRACEWATCH_HOME/worker.json"
if [[ -f "$run_file" ]]; then
  pid="$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["pid"])' "$run_file")"
  if kill -TERM "$pid" 2>/dev/null; then
    echo "stop: worker $pid stopping"
    for _ in $(seq 1 60); do kill -0 "$pid" 2>/dev/null || break; sleep 1; done
  fi
fi
bash infra/kafka/stop.sh
bash infra/alertmanager/stop.sh || true
