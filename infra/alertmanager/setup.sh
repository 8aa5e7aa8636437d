#!/usr/bin/env bash
# Prepare a local Prometheus Alertmanager under $TRACEWATCH_HOME/alertmanager:
#   1. install Debian's prometheus-alertmanager package if the binary is missing (needs root),
#      then stop/disable the service the package's postinst may have started (it would hold :9093),
#   2. create the state dirs (data/, logs/),
#   3. validate the config file with `amtool check-config`.
# Idempotent; safe to run concurrently (flock).
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=env.sh
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"

mkdir -p "$ALERTMANAGER_STATE_DIR" "$ALERTMANAGER_DATA_DIR" "$ALERTMANAGER_LOG_DIR"

exec 9>"$ALERTMANAGER_STATE_DIR/.setup.lock"
flock -w 600 9 || { am_err "timed out waiting for another setup.sh"; exit 1; }

manual_install_hint() {
  am_err "install it by hand, as root:"
  am_err "    apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y $ALERTMANAGER_PACKAGE"
  am_err "(or set ALERTMANAGER_BIN/AMTOOL to an existing alertmanager/amtool binary)"
}

# ---------------------------------------------------------------- 1. package
installed_now=0
if [[ ! -x "$ALERTMANAGER_BIN" || ! -x "$AMTOOL" ]]; then
  missing="$ALERTMANAGER_BIN"; [[ -x "$ALERTMANAGER_BIN" ]] && missing="$AMTOOL"
  if [[ "$(id -u)" != 0 ]]; then
    am_err "$missing not found, and cannot install $ALERTMANAGER_PACKAGE: not root (uid $(id -u))"
    manual_install_hint; exit 1
  fi
  command -v apt-get >/dev/null 2>&1 || { am_err "$missing not found, and there is no apt-get"; manual_install_hint; exit 1; }
  apt_log="$ALERTMANAGER_LOG_DIR/apt-install.log"
  am_log "$missing not found: installing $ALERTMANAGER_PACKAGE with apt-get (log: $apt_log) ..."
  t0=$SECONDS
  : >"$apt_log"
  if ! apt-get update -qq >>"$apt_log" 2>&1; then
    am_err "FAILED: apt-get update -qq"; cat "$apt_log" >&2; manual_install_hint; exit 1
  fi
  if ! DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$ALERTMANAGER_PACKAGE" >>"$apt_log" 2>&1; then
    am_err "FAILED: DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $ALERTMANAGER_PACKAGE"
    cat "$apt_log" >&2; manual_install_hint; exit 1
  fi
  if [[ ! -x "$ALERTMANAGER_BIN" || ! -x "$AMTOOL" ]]; then
    am_err "apt-get installed $ALERTMANAGER_PACKAGE but $ALERTMANAGER_BIN / $AMTOOL are still missing"
    manual_install_hint; exit 1
  fi
  installed_now=1
  am_log "installed $ALERTMANAGER_PACKAGE $(dpkg-query -W -f='${Version}' "$ALERTMANAGER_PACKAGE" 2>/dev/null || echo '?') in $((SECONDS - t0)) s"
fi

# The package ships a systemd unit and an /etc/init.d script; its postinst enables and starts
# them (on a host with systemd, or without a policy-rc.d that forbids it). That instance listens
# on :9093 (+ gossip on :9094) as user prometheus and would block ours: stop it, disable it at boot.
case "$ALERTMANAGER_STOP_PACKAGE_SERVICE" in
  1) am_stop_package_service ;;
  auto) if ((installed_now)); then am_stop_package_service; fi ;;
  *) ;;
esac

# ---------------------------------------------------------------- 3. config check
[[ -f "$ALERTMANAGER_CONFIG" ]] || { am_err "config file not found: $ALERTMANAGER_CONFIG"; exit 1; }
if ! check_out="$("$AMTOOL" check-config "$ALERTMANAGER_CONFIG" 2>&1)"; then
  am_err "invalid config $ALERTMANAGER_CONFIG:"; printf '%s\n' "$check_out" >&2; exit 1
fi
