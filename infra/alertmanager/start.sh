#!/usr/bin/env bash
# Start Alertmanager in the background (runs setup.sh first), then wait until it is ready
# (wait-ready.sh). Exit 0 if it is already running.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=env.sh
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"

"$AM_INFRA_DIR/setup.sh"

# One start at a time per state dir (a concurrent start.sh then finds it starting).
exec 8>"$ALERTMANAGER_STATE_DIR/.start.lock"
flock -w 120 8 || { am_err "timed out waiting for another start.sh"; exit 1; }

if pid="$(am_running_pid)"; then
  echo "$pid" >"$ALERTMANAGER_PID_FILE"
  if am_ready; then
    am_log "already running (pid $pid, $ALERTMANAGER_URL)"
    exit 0
  fi
  am_log "already starting (pid $pid); waiting for it"
  exec 8>&-
  exec "$AM_INFRA_DIR/wait-ready.sh"
fi

if am_port_open "$ALERTMANAGER_HOST" "$ALERTMANAGER_PORT"; then
  am_err "${ALERTMANAGER_HOST}:${ALERTMANAGER_PORT} is already in use by another process (not this Alertmanager: $ALERTMANAGER_STATE_DIR)"
  owner="$(am_port_owner)"; [[ -n "$owner" ]] && am_err "listener: $owner"
  pkg_pids="$(am_package_service_pids | tr '\n' ' ')"
  if [[ -n "${pkg_pids// /}" ]]; then
    am_err "an Alertmanager started by the Debian package's service is running (pid ${pkg_pids% })."
    am_err "stop it with: ALERTMANAGER_STOP_PACKAGE_SERVICE=1 $AM_INFRA_DIR/setup.sh"
    am_err "(= systemctl disable --now $ALERTMANAGER_PACKAGE, or /etc/init.d/$ALERTMANAGER_PACKAGE stop + kill)"
  fi
  am_err "or use another port: ALERTMANAGER_PORT=... $0"
  exit 1
fi
if [[ -n "$ALERTMANAGER_CLUSTER" ]] && am_port_open "${ALERTMANAGER_CLUSTER%:*}" "${ALERTMANAGER_CLUSTER##*:}"; then
  am_err "cluster address $ALERTMANAGER_CLUSTER is already in use"
  exit 1
fi

# Fresh log for every start (alertmanager.log.1 is the newest old one, 5 kept), so a
# failure's log tail is never a previous run's.
for i in 4 3 2 1; do
  if [[ -f "$ALERTMANAGER_LOG_FILE.$i" ]]; then mv -f "$ALERTMANAGER_LOG_FILE.$i" "$ALERTMANAGER_LOG_FILE.$((i + 1))"; fi
done
if [[ -f "$ALERTMANAGER_LOG_FILE" ]]; then mv -f "$ALERTMANAGER_LOG_FILE" "$ALERTMANAGER_LOG_FILE.1"; fi

read -ra extra_args <<<"$ALERTMANAGER_EXTRA_ARGS"

rm -f "$ALERTMANAGER_PID_FILE"
printf '==== %s start.sh: launching %s\n' "$(date -u +%FT%TZ)" "$ALERTMANAGER_BIN" >"$ALERTMANAGER_LOG_FILE"
cd "$ALERTMANAGER_STATE_DIR"
launcher=(nohup)
if command -v setsid >/dev/null 2>&1; then
  launcher+=(setsid)   # own session: not killed along with the caller's process group
fi
"${launcher[@]}" "$ALERTMANAGER_BIN" \
  --config.file="$ALERTMANAGER_CONFIG" \
  --storage.path="$ALERTMANAGER_DATA_DIR" \
  --web.listen-address="${ALERTMANAGER_HOST}:${ALERTMANAGER_PORT}" \
  --cluster.listen-address="$ALERTMANAGER_CLUSTER" \
  "${extra_args[@]}" \
  >>"$ALERTMANAGER_LOG_FILE" 2>&1 </dev/null 8>&- 9>&- &
pid=$!
echo "$pid" >"$ALERTMANAGER_PID_FILE"
for _ in $(seq 1 40); do   # let nohup/setsid exec into the binary before anyone checks the pid
  if am_is_ours "$pid" || ! am_alive "$pid"; then break; fi
  sleep 0.05
done
am_log "started (pid $pid), log: $ALERTMANAGER_LOG_FILE"

exec 8>&-
exec "$AM_INFRA_DIR/wait-ready.sh"
