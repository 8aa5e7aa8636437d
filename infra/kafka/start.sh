#!/usr/bin/env bash
# Start the single-node Kafka broker in the background (runs setup.sh first), then wait
# until it answers Kafka requests (wait-ready.sh). Exit 0 if it is already running.
set -euo pipefail
# shellcheck source=env.sh
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"

"$KAFKA_INFRA_DIR/setup.sh"

# One start at a time per state dir (a concurrent start.sh then finds the broker starting).
exec 8>"$KAFKA_STATE_DIR/.start.lock"
flock -w 120 8 || { kafka_err "timed out waiting for another start.sh"; exit 1; }

if pid="$(kafka_running_pid)"; then
  echo "$pid" >"$KAFKA_PID_FILE"
  if kafka_port_open; then
    kafka_log "already running (pid $pid, ${KAFKA_HOST}:${KAFKA_PORT})"
    exit 0
  fi
  kafka_log "already starting (pid $pid); waiting for it"
  exec 8>&-
  exec "$KAFKA_INFRA_DIR/wait-ready.sh"
fi

for port in "$KAFKA_PORT" "$KAFKA_CONTROLLER_PORT"; do
  if kafka_port_open "$KAFKA_HOST" "$port"; then
    kafka_err "${KAFKA_HOST}:${port} is already in use by another process (not this broker: $KAFKA_STATE_DIR)"
    exit 1
  fi
done

# --- AppCDS: the first run dumps the loaded classes into an archive when it exits
# (stop.sh keeps it only after a clean exit); later runs map it: ~1.5 s faster start.
cds_opts=()
if [[ "$KAFKA_CDS" == "1" ]]; then
  java_bin="$(readlink -f "$(command -v "$JAVA")")"
  cds_key="$( { cat "$KAFKA_LIB_MARKER"; echo "$java_bin"; stat -c '%Y %s' "$java_bin";
                echo "$KAFKA_HEAP $KAFKA_JVM_OPTS"; } | sha256sum | cut -c1-16)"
  cds_archive="$KAFKA_CDS_DIR/broker-$cds_key.jsa"
  mkdir -p "$KAFKA_CDS_DIR"
  rm -f "$KAFKA_CDS_DIR"/*.dumping
  if [[ -s "$cds_archive" ]]; then
    cds_opts=(-XX:SharedArchiveFile="$cds_archive")
  else
    rm -f "$KAFKA_CDS_DIR"/*.jsa
    cds_opts=(-XX:ArchiveClassesAtExit="$cds_archive.dumping" '-Xlog:cds=off' '-Xlog:cds+dynamic=off')
  fi
fi

read -ra heap_opts <<<"$KAFKA_HEAP"
read -ra jvm_opts <<<"$KAFKA_JVM_OPTS"

# Fresh logs for every start (same numbering as log4j's size-based rollover: server.log.1 is
# the newest old one), so a failure's log tail is never a previous run's.
for i in 4 3 2 1; do
  if [[ -f "$KAFKA_LOG_FILE.$i" ]]; then mv -f "$KAFKA_LOG_FILE.$i" "$KAFKA_LOG_FILE.$((i + 1))"; fi
done
if [[ -f "$KAFKA_LOG_FILE" ]]; then mv -f "$KAFKA_LOG_FILE" "$KAFKA_LOG_FILE.1"; fi
if [[ -f "$KAFKA_OUT_FILE" ]]; then mv -f "$KAFKA_OUT_FILE" "$KAFKA_OUT_FILE.1"; fi

rm -f "$KAFKA_PID_FILE"
printf '==== %s start.sh: launching broker\n' "$(date -u +%FT%TZ)" >"$KAFKA_OUT_FILE"
cd "$KAFKA_STATE_DIR"
launcher=(nohup)
if command -v setsid >/dev/null 2>&1; then
  launcher+=(setsid)   # own session: not killed along with the caller's process group
fi
"${launcher[@]}" "$JAVA" "${heap_opts[@]}" "${jvm_opts[@]}" "${cds_opts[@]}" \
  -XX:ErrorFile="$KAFKA_LOG_DIR/hs_err_pid%p.log" \
  -Dlog4j2.configurationFile="$KAFKA_LOG4J_CONFIG" \
  -Dlog4j2.shutdownHookEnabled=false \
  -Dkafka.logs.dir="$KAFKA_LOG_DIR" \
  -cp "$KAFKA_LIB_DIR/*" kafka.Kafka "$KAFKA_CONFIG" \
  >>"$KAFKA_OUT_FILE" 2>&1 </dev/null 8>&- 9>&- &
pid=$!
echo "$pid" >"$KAFKA_PID_FILE"
for _ in $(seq 1 40); do   # let nohup/setsid exec into java before anyone checks the pid
  if kafka_is_our_broker "$pid" || ! kafka_alive "$pid"; then break; fi
  sleep 0.05
done
kafka_log "started broker (pid $pid), logs: $KAFKA_LOG_FILE"

exec 8>&-
exec "$KAFKA_INFRA_DIR/wait-ready.sh"
