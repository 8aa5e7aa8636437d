#!/usr/bin/env bash
# Stop Alertmanager: SIGTERM, wait up to ALERTMANAGER_STOP_TIMEOUT (20 s), then SIGKILL.
# Idempotent: exit 0 when it is not running. Removes the pid file.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=env.sh
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"

if ! pid="$(am_running_pid)"; then
  rm -f "$ALERTMANAGER_PID_FILE"
  am_log "not running"
  exit 0
fi

am_log "stopping (pid $pid) ..."
t0=$(date +%s%N)
kill -TERM "$pid" 2>/dev/null || true
deadline=$((SECONDS + ALERTMANAGER_STOP_TIMEOUT))
while am_alive "$pid" && ((SECONDS < deadline)); do
  sleep 0.1
done

if am_alive "$pid"; then
  am_err "still running after ${ALERTMANAGER_STOP_TIMEOUT} s: sending SIGKILL"
  kill -KILL "$pid" 2>/dev/null || true
  deadline=$((SECONDS + 10))
  while am_alive "$pid" && ((SECONDS < deadline)); do sleep 0.1; done
  if am_alive "$pid"; then am_err "pid $pid survived SIGKILL"; exit 1; fi
  rm -f "$ALERTMANAGER_PID_FILE"
  am_log "killed"
  exit 0
fi

rm -f "$ALERTMANAGER_PID_FILE"
am_log "stopped in $(( ($(date +%s%N) - t0) / 1000000 )) ms"
