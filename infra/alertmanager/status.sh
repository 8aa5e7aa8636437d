#!/usr/bin/env bash
# Print whether Alertmanager runs. Exit 0 when running, 3 when stopped.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=env.sh
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"

if pid="$(am_running_pid)"; then
  if am_ready; then
    state="ready"
  elif am_port_open "$ALERTMANAGER_HOST" "$ALERTMANAGER_PORT"; then
    state="port open, not ready yet"
  else
    state="starting, port not open yet"
  fi
  echo "alertmanager: running (pid $pid, $ALERTMANAGER_URL, cluster ${ALERTMANAGER_CLUSTER:-disabled}, $state)"
  exit 0
fi
echo "alertmanager: stopped ($ALERTMANAGER_URL, state dir $ALERTMANAGER_STATE_DIR)"
exit 3
