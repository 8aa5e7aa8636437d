# shellcheck shell=bash disable=SC2034  # the variables are used by the scripts sourcing this
# Shared settings for infra/kafka/*.sh. Source it; do not run it.
# Every setting can be overridden from the environment.

KAFKA_INFRA_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

: "${TRACEWATCH_HOME:=$(cd "$KAFKA_INFRA_DIR/../.." && pwd)/.tracewatch}"
[[ "$TRACEWATCH_HOME" == /* ]] || TRACEWATCH_HOME="$PWD/$TRACEWATCH_HOME"
: "${KAFKA_HOST:=127.0.0.1}"                # address of both listeners (and advertised)
: "${KAFKA_PORT:=9092}"                     # client (PLAINTEXT) listener
: "${KAFKA_CONTROLLER_PORT:=9095}"          # KRaft controller listener (9093 is Alertmanager's)
: "${KAFKA_HEAP:=-Xms256m -Xmx512m}"
# Other JVM flags. C1-only JIT + SerialGC: ~1 s faster start and less RSS; fine for a dev/test broker.
: "${KAFKA_JVM_OPTS:=-XX:+UseSerialGC -XX:TieredStopAtLevel=1 -XX:+ExitOnOutOfMemoryError -Djava.awt.headless=true}"
: "${KAFKA_CDS:=1}"                         # 1: use/create an AppCDS archive of the broker's classes (~1.5 s faster start)
: "${KAFKA_READY_TIMEOUT:=60}"              # seconds wait-ready.sh waits
: "${KAFKA_STOP_TIMEOUT:=30}"               # seconds stop.sh waits after SIGTERM before SIGKILL
: "${KAFKA_NUM_PARTITIONS:=1}"              # default partitions of auto-created topics
: "${KAFKA_AUTO_CREATE_TOPICS:=true}"
: "${KAFKA_STATE_DIR:=$TRACEWATCH_HOME/kafka}"
[[ "$KAFKA_STATE_DIR" == /* ]] || KAFKA_STATE_DIR="$PWD/$KAFKA_STATE_DIR"

if [[ -n "${JAVA_HOME:-}" && -x "$JAVA_HOME/bin/java" ]]; then
  : "${JAVA:=$JAVA_HOME/bin/java}"
else
  : "${JAVA:=java}"
fi
: "${MVN:=mvn}"
# python for the readiness probe: the system one starts faster than a pyenv shim.
if [[ -z "${KAFKA_PYTHON:-}" ]]; then
  if [[ -x /usr/bin/python3 ]]; then KAFKA_PYTHON=/usr/bin/python3; else KAFKA_PYTHON="$(command -v python3 || true)"; fi
fi

KAFKA_POM="$KAFKA_INFRA_DIR/pom.xml"
KAFKA_LOG4J_CONFIG="$KAFKA_INFRA_DIR/log4j2.xml"
KAFKA_TOOLS_LOG4J_CONFIG="$KAFKA_INFRA_DIR/log4j2-tools.xml"
: "${KAFKA_LIB_DIR:=$KAFKA_STATE_DIR/lib}"  # the jars; a second broker may share the first one's
[[ "$KAFKA_LIB_DIR" == /* ]] || KAFKA_LIB_DIR="$PWD/$KAFKA_LIB_DIR"
KAFKA_LIB_MARKER="$KAFKA_LIB_DIR/.complete"
KAFKA_DATA_DIR="$KAFKA_STATE_DIR/data"
KAFKA_LOG_DIR="$KAFKA_STATE_DIR/logs"
KAFKA_LOG_FILE="$KAFKA_LOG_DIR/server.log"
KAFKA_OUT_FILE="$KAFKA_LOG_DIR/kafka.out"    # JVM stdout/stderr (crashes, JVM warnings)
KAFKA_CONFIG="$KAFKA_STATE_DIR/server.properties"
KAFKA_PID_FILE="$KAFKA_STATE_DIR/kafka.pid"
KAFKA_CDS_DIR="$KAFKA_STATE_DIR/cds"

export TRACEWATCH_HOME KAFKA_HOST KAFKA_PORT KAFKA_CONTROLLER_PORT KAFKA_HEAP KAFKA_JVM_OPTS \
  KAFKA_CDS KAFKA_READY_TIMEOUT KAFKA_STOP_TIMEOUT KAFKA_NUM_PARTITIONS KAFKA_AUTO_CREATE_TOPICS \
  KAFKA_STATE_DIR KAFKA_LIB_DIR JAVA MVN KAFKA_PYTHON

kafka_log() { printf 'kafka: %s\n' "$*"; }
kafka_err() { printf 'kafka: %s\n' "$*" >&2; }

# sha256 of the pom: lib/ is complete when its marker holds this.
kafka_pom_hash() { sha256sum "$KAFKA_POM" | cut -c1-64; }

# Is $1 a live (non-zombie) process?
kafka_alive() {
  local stat
  kill -0 "$1" 2>/dev/null || return 1
  read -r stat <"/proc/$1/stat" 2>/dev/null || return 1
  stat="${stat##*) }"
  [[ -n "$stat" && "${stat:0:1}" != Z ]]
}

# Is $1 a live process that is *our* broker (kafka.Kafka with our server.properties)?
kafka_is_our_broker() {
  local pid="$1" args
  [[ "$pid" =~ ^[0-9]+$ ]] || return 1
  kafka_alive "$pid" || return 1
  mapfile -d '' args <"/proc/$pid/cmdline" 2>/dev/null || return 1
  local n=${#args[@]}
  ((n >= 2)) && [[ "${args[n-2]}" == kafka.Kafka && "${args[n-1]}" == "$KAFKA_CONFIG" ]]
}

# Prints the pid of the running broker of this KAFKA_STATE_DIR, or returns 1.
# Uses the pid file; falls back to looking in /proc for our exact command line (pid file lost).
kafka_running_pid() {
  local pid="" f
  if [[ -f "$KAFKA_PID_FILE" ]]; then
    pid="$(tr -dc '0-9' <"$KAFKA_PID_FILE" 2>/dev/null || true)"
    if kafka_is_our_broker "$pid"; then echo "$pid"; return 0; fi
  fi
  while IFS= read -r f; do
    pid="${f#/proc/}"; pid="${pid%/cmdline}"
    if kafka_is_our_broker "$pid"; then echo "$pid"; return 0; fi
  done < <(grep -alsF -- "$KAFKA_CONFIG" /proc/[0-9]*/cmdline 2>/dev/null || true)
  return 1
}

# TCP connect check (no JVM): kafka_port_open [host] [port]
kafka_port_open() {
  local host="${1:-$KAFKA_HOST}" port="${2:-$KAFKA_PORT}"
  # shellcheck disable=SC2016  # expanded by the inner bash
  timeout 2 bash -c 'exec 3<>"/dev/tcp/$1/$2"' _ "$host" "$port" 2>/dev/null
}

# Real Kafka protocol check: ApiVersions + Metadata, the broker must list itself (i.e. be unfenced).
kafka_protocol_ready() {
  if [[ -n "$KAFKA_PYTHON" ]]; then
    "$KAFKA_PYTHON" "$KAFKA_INFRA_DIR/kafka_probe.py" "$KAFKA_HOST" "$KAFKA_PORT" >/dev/null 2>&1
  else
    # no python: fall back to the broker's own "started" log line after a successful connect
    kafka_port_open "$KAFKA_HOST" "$KAFKA_PORT" && grep -q 'Kafka Server started' "$KAFKA_LOG_FILE" 2>/dev/null
  fi
}

kafka_log_tail() {
  local n="${1:-30}"
  if [[ -s "$KAFKA_OUT_FILE" ]]; then
    echo "---- last $n lines of $KAFKA_OUT_FILE ----"
    tail -n "$n" "$KAFKA_OUT_FILE"
  fi
  echo "---- last $n lines of $KAFKA_LOG_FILE ----"
  tail -n "$n" "$KAFKA_LOG_FILE" 2>/dev/null || echo "(no $KAFKA_LOG_FILE)"
  echo "----"
}
