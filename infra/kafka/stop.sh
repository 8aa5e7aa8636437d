#!/usr/bin/env bash
# Stop the broker: SIGTERM, wait up to KAFKA_STOP_TIMEOUT (30 s), then SIGKILL.
# Idempotent: exit 0 when it is not running. Removes the pid file.
set -euo pipefail
# shellcheck source=env.sh
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"

keep_cds_dump() {  # a class archive written at exit is only trusted after a clean exit
  local f
  for f in "$KAFKA_CDS_DIR"/*.dumping; do
    [[ -e "$f" ]] || continue
    if [[ "$1" == clean && -s "$f" ]]; then mv -f "$f" "${f%.dumping}"; else rm -f "$f"; fi
  done
}

if ! pid="$(kafka_running_pid)"; then
  rm -f "$KAFKA_PID_FILE"
  kafka_log "not running"
  exit 0
fi

kafka_log "stopping broker (pid $pid) ..."
t0=$(date +%s%N)
kill -TERM "$pid" 2>/dev/null || true
deadline=$((SECONDS + KAFKA_STOP_TIMEOUT))
while kafka_alive "$pid" && ((SECONDS < deadline)); do
  sleep 0.2
done

if kafka_alive "$pid"; then
  kafka_err "still running after ${KAFKA_STOP_TIMEOUT} s: sending SIGKILL"
  kill -KILL "$pid" 2>/dev/null || true
  deadline=$((SECONDS + 10))
  while kafka_alive "$pid" && ((SECONDS < deadline)); do sleep 0.1; done
  if kafka_alive "$pid"; then kafka_err "pid $pid survived SIGKILL"; exit 1; fi
  keep_cds_dump killed
  rm -f "$KAFKA_PID_FILE"
  kafka_log "killed"
  exit 0
fi

keep_cds_dump clean
rm -f "$KAFKA_PID_FILE"
kafka_log "stopped in $(( ($(date +%s%N) - t0) / 1000000 )) ms"
