#!/usr/bin/env bash
# Wait until the broker really answers Kafka requests: TCP connect, then ApiVersions + Metadata
# listing the broker itself (kafka_probe.py). Timeout: $1 or KAFKA_READY_TIMEOUT (default 60 s).
# Exit 1 with the log tail on timeout, or at once if the broker process is gone.
set -euo pipefail
# shellcheck source=env.sh
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"

timeout_s="${1:-$KAFKA_READY_TIMEOUT}"
start_ns=$(date +%s%N)
deadline=$((SECONDS + timeout_s))

while :; do
  if ! pid="$(kafka_running_pid)"; then
    kafka_err "broker process is not running (died or never started)"
    kafka_log_tail 30 >&2
    rm -f "$KAFKA_PID_FILE"
    exit 1
  fi
  if kafka_port_open && kafka_protocol_ready; then
    kafka_log "ready on ${KAFKA_HOST}:${KAFKA_PORT} (pid $pid, waited $(( ($(date +%s%N) - start_ns) / 1000000 )) ms)"
    exit 0
  fi
  if ((SECONDS >= deadline)); then
    kafka_err "not ready after ${timeout_s} s (pid $pid still running)"
    kafka_log_tail 30 >&2
    exit 1
  fi
  sleep 0.25
done
