#!/usr/bin/env bash
# README's first command: set up, start a local Kafka broker, Alertmanager (when the
# Debian package is installed or installable) and the tracewatch worker, stream demo
# traffic for several routes through the SDK with an injected incident (cost x3 on
# support/chat from 12 minutes ago) and a few runaway agents, then show the alerts, the
# open circuit breakers and the statistics.
# Everything keeps running afterwards so you can query; `bash scripts/stop.sh` stops it.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
export TRACEWATCH_HOME="${TRACEWATCH_HOME:-$root/.tracewatch}"
tw=.venv/bin/tracewatch
seconds="${DEMO_SECONDS:-60}"

bash scripts/setup.sh
bash infra/kafka/start.sh
$tw topics
am_flag=()
if bash infra/alertmanager/start.sh; then
  am_flag=(--alertmanager-url "http://127.0.0.1:${ALERTMANAGER_PORT:-9093}")
else
  echo "demo: no Alertmanager (see above); alerts still go to the alerts topic" >&2
fi

if [[ -f "$TRACEWATCH_HOME/worker.json" ]] && $tw status >/dev/null 2>&1; then
  echo "demo: the worker is already running"
else
  echo "demo: starting the worker (log: $TRACEWATCH_HOME/worker.log)"
  # Live minutes close 30 s after they end, so they show up while the demo runs.
  nohup $tw run --allowed-lateness "${DEMO_LATENESS:-30}" "${am_flag[@]}" \
    >"$TRACEWATCH_HOME/worker.log" 2>&1 &
  for _ in $(seq 1 60); do
    $tw status >/dev/null 2>&1 && break
    sleep 1
  done
  $tw status >/dev/null 2>&1 || { tail -30 "$TRACEWATCH_HOME/worker.log"; echo "demo: the worker did not start" >&2; exit 1; }
fi

# 40 minutes of backfill: the detectors want 20+ minutes of a route's own history
# and 5 % of agent runs get stuck repeating one tool call: breakers stop them
$tw demo --duration "$seconds" --backfill 40m --incident "${DEMO_INCIDENT:-cost}" --incident-at 12m \
  --runaway-rate "${DEMO_RUNAWAY_RATE:-0.05}"
sleep 3  # the worker flushes about once a second
echo
$tw alerts
$tw breakers
$tw query top --by cost_p95 --since 15m
$tw query series support/chat --since 15m --limit 12
$tw query sql "SELECT route, sum(count) AS events, round(sum(cost_sum), 2) AS spend_usd,
                      round(max(latency_p95)) AS worst_minute_p95_ms
               FROM {db:Identifier}.stats_1m WHERE late = 0 GROUP BY route ORDER BY spend_usd DESC"
cat <<MSG

The worker and the broker are still running. Open the dashboard at (the token after # is
the worker's, readable only by you: treat the link as a password)
  $($tw dashboard-url)
(metrics: /metrics with the token in $TRACEWATCH_HOME/worker.token, health: /health on
the same port). Try:
  $tw status                                   # the worker's counters (valid, rejected by reason, late)
  $tw dashboard-url                            # the dashboard's link again
  $tw alerts --follow                          # alert transitions as they happen (Ctrl-C stops)
  $tw breakers                                 # open circuit breakers, as an app's BreakerClient sees them
  $tw query top --by latency_p99 --since 15m
  $tw query series agent/coder --since 15m
  $tw query prompt-change support/chat --to v13  # what changed after a prompt version
  $tw query alerts --since 1h                  # alert history
  $tw demo --duration 300 --backfill 0         # more live traffic
  bash scripts/stop.sh                         # stop the worker and the broker
MSG
