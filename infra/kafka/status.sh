#!/usr/bin/env bash
# Print whether the broker runs. Exit 0 when running, 3 when stopped.
set -euo pipefail
# shellcheck source=env.sh
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"

if pid="$(kafka_running_pid)"; then
  if kafka_port_open && kafka_protocol_ready; then
    state="ready"
  elif kafka_port_open; then
    state="port open, not serving yet"
  else
    state="starting, port not open yet"
  fi
  echo "kafka: running (pid $pid, ${KAFKA_HOST}:${KAFKA_PORT}, controller ${KAFKA_HOST}:${KAFKA_CONTROLLER_PORT}, $state)"
  exit 0
fi
echo "kafka: stopped (${KAFKA_HOST}:${KAFKA_PORT}, state dir $KAFKA_STATE_DIR)"
exit 3
