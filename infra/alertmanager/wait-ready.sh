#!/usr/bin/env bash
# Wait until Alertmanager is ready: GET /-/ready answers 200 (config loaded, API serving).
# Timeout: $1 or ALERTMANAGER_READY_TIMEOUT (default 30 s).
# Exit 1 with the log tail on timeout, or at once if the process is gone.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=env.sh
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"

timeout_s="${1:-$ALERTMANAGER_READY_TIMEOUT}"
start_ns=$(date +%s%N)
deadline=$((SECONDS + timeout_s))

while :; do
  if ! pid="$(am_running_pid)"; then
    am_err "Alertmanager process is not running (died or never started)"
    am_log_tail 30 >&2
    rm -f "$ALERTMANAGER_PID_FILE"
    exit 1
  fi
  if am_ready; then
    am_log "ready on $ALERTMANAGER_URL (pid $pid, waited $(( ($(date +%s%N) - start_ns) / 1000000 )) ms)"
    exit 0
  fi
  if ((SECONDS >= deadline)); then
    am_err "not ready after ${timeout_s} s ($ALERTMANAGER_URL/-/ready; pid $pid still running)"
    am_log_tail 30 >&2
    exit 1
  fi
  sleep 0.1
done
