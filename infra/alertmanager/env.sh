# shellcheck shell=bash disable=SC2034  # the variables are used by the scripts sourcing this
# Shared settings for infra/alertmanager/*.sh. Source it; do not run it.
# Every setting can be overridden from the environment.

AM_INFRA_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

: "${TRACEWATCH_HOME:=$(cd "$AM_INFRA_DIR/../.." && pwd)/.tracewatch}"
[[ "$TRACEWATCH_HOME" == /* ]] || TRACEWATCH_HOME="$PWD/$TRACEWATCH_HOME"
: "${ALERTMANAGER_HOST:=127.0.0.1}"          # --web.listen-address host (API, /metrics, /-/ready)
: "${ALERTMANAGER_PORT:=9093}"               # --web.listen-address port
# --cluster.listen-address. Empty (the default) disables HA gossip: no port 9094, no peer
# settling, and no "no private IP found" failure on hosts with only public/loopback addresses.
# Set e.g. ALERTMANAGER_CLUSTER=127.0.0.1:9094 to enable it.
: "${ALERTMANAGER_CLUSTER:=}"
: "${ALERTMANAGER_CONFIG:=$AM_INFRA_DIR/alertmanager.yml}"   # --config.file
[[ "$ALERTMANAGER_CONFIG" == /* ]] || ALERTMANAGER_CONFIG="$PWD/$ALERTMANAGER_CONFIG"
: "${ALERTMANAGER_EXTRA_ARGS:=}"             # more flags, split on whitespace (e.g. --log.level=debug)
: "${ALERTMANAGER_READY_TIMEOUT:=30}"        # seconds wait-ready.sh waits
: "${ALERTMANAGER_STOP_TIMEOUT:=20}"         # seconds stop.sh waits after SIGTERM before SIGKILL
# Stop an instance started by the Debian package's service (it would hold :9093):
#   auto = only right after setup.sh installed the package, 1 = whenever found, 0 = never.
: "${ALERTMANAGER_STOP_PACKAGE_SERVICE:=auto}"
: "${ALERTMANAGER_BIN:=/usr/bin/prometheus-alertmanager}"
: "${AMTOOL:=/usr/bin/amtool}"
: "${ALERTMANAGER_STATE_DIR:=$TRACEWATCH_HOME/alertmanager}"
[[ "$ALERTMANAGER_STATE_DIR" == /* ]] || ALERTMANAGER_STATE_DIR="$PWD/$ALERTMANAGER_STATE_DIR"

ALERTMANAGER_PACKAGE=prometheus-alertmanager
ALERTMANAGER_URL="http://${ALERTMANAGER_HOST}:${ALERTMANAGER_PORT}"
ALERTMANAGER_DATA_DIR="$ALERTMANAGER_STATE_DIR/data"   # --storage.path (silences, notification log)
ALERTMANAGER_LOG_DIR="$ALERTMANAGER_STATE_DIR/logs"
ALERTMANAGER_LOG_FILE="$ALERTMANAGER_LOG_DIR/alertmanager.log"   # stdout+stderr of the server
ALERTMANAGER_PID_FILE="$ALERTMANAGER_STATE_DIR/alertmanager.pid"

export TRACEWATCH_HOME ALERTMANAGER_HOST ALERTMANAGER_PORT ALERTMANAGER_CLUSTER ALERTMANAGER_CONFIG \
  ALERTMANAGER_EXTRA_ARGS ALERTMANAGER_READY_TIMEOUT ALERTMANAGER_STOP_TIMEOUT \
  ALERTMANAGER_STOP_PACKAGE_SERVICE ALERTMANAGER_BIN AMTOOL ALERTMANAGER_STATE_DIR ALERTMANAGER_URL

am_log() { printf 'alertmanager: %s\n' "$*"; }
am_err() { printf 'alertmanager: %s\n' "$*" >&2; }

# Is $1 a live (non-zombie) process?
am_alive() {
  local stat
  kill -0 "$1" 2>/dev/null || return 1
  read -r stat <"/proc/$1/stat" 2>/dev/null || return 1
  stat="${stat##*) }"
  [[ -n "$stat" && "${stat:0:1}" != Z ]]
}

# Prints the NUL-split argv of pid $1 into the array named am_args.
am_read_args() {
  am_args=()
  mapfile -d '' am_args <"/proc/$1/cmdline" 2>/dev/null
}

# Is argv[0] of pid $1 an Alertmanager binary?
am_is_alertmanager() {
  [[ "$1" =~ ^[0-9]+$ ]] || return 1
  am_alive "$1" || return 1
  am_read_args "$1" || return 1
  ((${#am_args[@]} >= 1)) || return 1
  [[ "${am_args[0]}" == "$ALERTMANAGER_BIN" || "${am_args[0]##*/}" == prometheus-alertmanager ]]
}

# Is $1 a live process that is *our* Alertmanager (started with our --storage.path)?
am_is_ours() {
  am_is_alertmanager "$1" || return 1
  local a
  for a in "${am_args[@]}"; do
    [[ "$a" == "--storage.path=$ALERTMANAGER_DATA_DIR" ]] && return 0
  done
  return 1
}

# Prints the pid of the running Alertmanager of this ALERTMANAGER_STATE_DIR, or returns 1.
# Uses the pid file; falls back to /proc (pid file lost).
am_running_pid() {
  local pid="" f
  if [[ -f "$ALERTMANAGER_PID_FILE" ]]; then
    pid="$(tr -dc '0-9' <"$ALERTMANAGER_PID_FILE" 2>/dev/null || true)"
    if am_is_ours "$pid"; then echo "$pid"; return 0; fi
  fi
  while IFS= read -r f; do
    pid="${f#/proc/}"; pid="${pid%/cmdline}"
    if am_is_ours "$pid"; then echo "$pid"; return 0; fi
  done < <(grep -alsF -- "--storage.path=$ALERTMANAGER_DATA_DIR" /proc/[0-9]*/cmdline 2>/dev/null || true)
  return 1
}

# Pids of Alertmanagers started by the Debian package's service (systemd unit or
# /etc/init.d script): the package runs the binary with ARGS from /etc/default (empty by
# default), so they have no --storage.path flag, unlike ours.
am_package_service_pids() {
  local f pid a ours
  for f in /proc/[0-9]*/cmdline; do
    pid="${f#/proc/}"; pid="${pid%/cmdline}"
    am_is_alertmanager "$pid" 2>/dev/null || continue
    ours=0
    for a in "${am_args[@]}"; do [[ "$a" == --storage.path=* ]] && ours=1; done
    ((ours)) || echo "$pid"
  done
}

# Stop (and disable at boot) the package's own service and kill what is left of it.
am_stop_package_service() {
  local pids pid
  mapfile -t pids < <(am_package_service_pids)
  if [[ -d /run/systemd/system ]] && command -v systemctl >/dev/null 2>&1; then
    if systemctl disable --now "$ALERTMANAGER_PACKAGE.service" >/dev/null 2>&1; then
      am_log "disabled + stopped the package's systemd service ($ALERTMANAGER_PACKAGE.service)"
    fi
  elif command -v update-rc.d >/dev/null 2>&1 && [[ -x "/etc/init.d/$ALERTMANAGER_PACKAGE" ]]; then
    # no systemd: the postinst went through invoke-rc.d (the init.d script); disable it at boot
    update-rc.d "$ALERTMANAGER_PACKAGE" disable >/dev/null 2>&1 || true
  fi
  ((${#pids[@]})) || return 0
  for pid in "${pids[@]}"; do
    am_read_args "$pid" || true
    am_log "stopping the instance started by the package's service (pid $pid: ${am_args[*]:-?})"
  done
  if [[ -x "/etc/init.d/$ALERTMANAGER_PACKAGE" ]]; then
    "/etc/init.d/$ALERTMANAGER_PACKAGE" stop >/dev/null 2>&1 || true
  fi
  for pid in "${pids[@]}"; do
    if am_alive "$pid"; then kill -TERM "$pid" 2>/dev/null || true; fi
  done
  local deadline=$((SECONDS + 10))
  for pid in "${pids[@]}"; do
    while am_alive "$pid" && ((SECONDS < deadline)); do sleep 0.1; done
    if am_alive "$pid"; then kill -KILL "$pid" 2>/dev/null || true; sleep 0.2; fi
    if am_alive "$pid"; then am_err "could not stop pid $pid"; return 1; fi
  done
  am_log "stopped (${#pids[@]} process(es))"
}

# TCP connect check: am_port_open [host] [port]
am_port_open() {
  local host="${1:-$ALERTMANAGER_HOST}" port="${2:-$ALERTMANAGER_PORT}"
  # shellcheck disable=SC2016  # expanded by the inner bash
  timeout 2 bash -c 'exec 3<>"/dev/tcp/$1/$2"' _ "$host" "$port" 2>/dev/null
}

# Who listens on our port (for error messages).
am_port_owner() {
  if command -v ss >/dev/null 2>&1; then
    ss -Hltnp "sport = :$ALERTMANAGER_PORT" 2>/dev/null || true
  fi
}

# HTTP GET $1 (a path), body to stdout; fails on connect errors and non-2xx answers.
am_http_get() {
  if command -v curl >/dev/null 2>&1; then
    curl -fsS --max-time 3 "$ALERTMANAGER_URL$1"
  else
    python3 - "$ALERTMANAGER_URL$1" <<'EOF'
import sys, urllib.request
with urllib.request.urlopen(sys.argv[1], timeout=3) as r:
    sys.stdout.write(r.read().decode())
EOF
  fi
}

# Ready = GET /-/ready answers 200 (config loaded, API serving).
am_ready() { am_http_get /-/ready >/dev/null 2>&1; }

am_log_tail() {
  local n="${1:-30}"
  echo "---- last $n lines of $ALERTMANAGER_LOG_FILE ----"
  tail -n "$n" "$ALERTMANAGER_LOG_FILE" 2>/dev/null || echo "(no $ALERTMANAGER_LOG_FILE)"
  echo "----"
}
