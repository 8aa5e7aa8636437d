"""``tracewatch`` command line: run, demo, query, topics, schema, status.

Every command has ``--help``; errors say what was wrong and how to fix it and
exit with status 2 (usage/config) or 3 (a service could not be reached).
"""

from __future__ import annotations

import json
import logging
import sys
import time
import urllib.error
import urllib.request
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer
from rich import box
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from tracewatch.config import (
    AlertmanagerSettings,
    ClickHouseSettings,
    DetectSettings,
    KafkaSettings,
    Settings,
    WorkerSettings,
)
from tracewatch.errors import ConfigError, ServiceUnavailable, TracewatchError
from tracewatch.redact import install_log_redaction, redact_text, redact_url
from tracewatch.schemas.alert import Alert
from tracewatch.terminal import printable

if TYPE_CHECKING:
    from tracewatch.sinks.clickhouse import QueryResult

__all__ = ["app", "main"]

app = typer.Typer(
    help="tracewatch: a streaming monitor for LLM apps and agents.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
query_app = typer.Typer(help="Query statistics and events in ClickHouse.", no_args_is_help=True)
app.add_typer(query_app, name="query")


def _version(value: bool) -> None:
    if value:
        from tracewatch import __version__

        print(f"tracewatch {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version.")
    ] = False,
) -> None:
    """tracewatch: a streaming monitor for LLM apps and agents."""


# Statistics tables are wide: never squeeze them below 180 columns (a narrow
# terminal wraps lines instead of eliding every value to "…").
out = Console(width=max(180, Console().width))
err = Console(stderr=True)

BootstrapOpt = Annotated[
    str | None,
    typer.Option(
        "--bootstrap-servers", "-b", help="Kafka servers (env TRACEWATCH_KAFKA_BOOTSTRAP_SERVERS)."
    ),
]
DsnOpt = Annotated[
    str | None,
    typer.Option(
        "--clickhouse-dsn", help="chdb:///path or http(s)://… (env TRACEWATCH_CLICKHOUSE_DSN)."
    ),
]


def _settings(
    bootstrap: str | None = None,
    dsn: str | None = None,
    rules: Path | None = None,
    alertmanager_url: str | None = None,
    **worker: Any,
) -> Settings:
    try:
        kafka = KafkaSettings(bootstrap_servers=bootstrap) if bootstrap else KafkaSettings()
        clickhouse = ClickHouseSettings(dsn=dsn) if dsn else ClickHouseSettings()
        overrides = {k: v for k, v in worker.items() if v is not None}
        detect = DetectSettings(rules_file=rules) if rules else DetectSettings()
        alertmanager = (
            AlertmanagerSettings(url=alertmanager_url)
            if alertmanager_url is not None
            else AlertmanagerSettings()
        )
        return Settings(kafka, clickhouse, WorkerSettings(**overrides), detect, alertmanager)
    except ValueError as exc:  # pydantic's ValidationError: name the setting and the rule
        raise ConfigError(f"invalid setting: {redact_text(str(exc))}") from None


@app.command()
def run(
    bootstrap: BootstrapOpt = None,
    dsn: DsnOpt = None,
    allowed_lateness: Annotated[
        float | None, typer.Option(help="Seconds of event-time lateness before a minute closes.")
    ] = None,
    web_port: Annotated[
        int | None, typer.Option(help="Port of the local status/query views.")
    ] = None,
    rules: Annotated[
        Path | None, typer.Option("--rules", help="Alert rules file (YAML), on top of auto.")
    ] = None,
    alertmanager_url: Annotated[
        str | None,
        typer.Option(help="Also send alerts to this Alertmanager, e.g. http://127.0.0.1:9093."),
    ] = None,
    log_level: Annotated[str, typer.Option(help="debug, info, warning or error.")] = "info",
) -> None:
    """Run the streaming worker: consume events, write ClickHouse, raise alerts."""
    from tracewatch.streams.worker import run_worker

    settings = _settings(
        bootstrap,
        dsn,
        rules=rules,
        alertmanager_url=alertmanager_url,
        allowed_lateness_s=allowed_lateness,
        web_port=web_port,
    )
    if settings.detect.rules_file is not None:
        from tracewatch.schemas.rules import load_rules

        load_rules(settings.detect.rules_file)  # a broken file fails here, with its lines
    logging.basicConfig(
        level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )
    install_log_redaction()  # faust's and librdkafka's records too: no URL password printed
    err.print(
        f"tracewatch worker: Kafka {redact_text(settings.kafka.bootstrap_servers)}, "
        f"ClickHouse {settings.clickhouse.redacted_dsn()}, "
        f"views http://{settings.worker.web_host}:{settings.worker.web_port}, "
        f"alerts to {settings.kafka.alerts_topic}"
        + (f" and {redact_url(settings.alertmanager.url)}" if settings.alertmanager.url else "")
    )
    run_worker(settings, loglevel=log_level)


@app.command()
def topics(
    bootstrap: BootstrapOpt = None,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for the broker.")] = 30.0,
) -> None:
    """Create tracewatch's Kafka topics (idempotent) and show them."""
    from tracewatch.streams.topics import ensure_topics, topic_specs

    settings = _settings(bootstrap)
    outcome = ensure_topics(settings.kafka, timeout=timeout)
    table = Table("topic", "partitions", "config", "state")
    for spec in topic_specs(settings.kafka):
        config = ", ".join(f"{k}={v}" for k, v in spec.config.items())
        table.add_row(spec.name, str(spec.partitions), config, outcome.get(spec.name, "?"))
    out.print(table)


@app.command()
def schema(dsn: DsnOpt = None) -> None:
    """Print the ClickHouse DDL tracewatch uses."""
    from tracewatch.sinks.clickhouse_schema import schema_statements

    ch = _settings(dsn=dsn).clickhouse
    statements = schema_statements(
        ch.database, ch.events_ttl_days, ch.stats_ttl_days, ch.rollup_ttl_days
    )
    for statement in statements:
        out.print(statement + ";\n", highlight=False)


@app.command()
def demo(
    bootstrap: BootstrapOpt = None,
    duration: Annotated[
        float, typer.Option(help="Seconds of live traffic after the backfill.")
    ] = 60.0,
    rate: Annotated[
        float, typer.Option(help="Traces started per second (each is 1-40 events).")
    ] = 20.0,
    backfill: Annotated[
        str, typer.Option(help="Event time to backfill before going live, e.g. 10m (0 for none).")
    ] = "10m",
    invalid_every: Annotated[
        int,
        typer.Option(help="Mix one invalid message per N events (0 for none), to show the DLQ."),
    ] = 500,
    seed: Annotated[
        int, typer.Option(help="Random seed: the same seed gives the same traffic.")
    ] = 0,
    incident: Annotated[
        str | None,
        typer.Option(help="Inject an incident: cost, latency, errors or quality."),
    ] = None,
    incident_route: Annotated[
        str, typer.Option(help="The route the incident hits.")
    ] = "support/chat",
    incident_at: Annotated[
        str, typer.Option(help="When it starts, in event time: 12m (ago), or RFC 3339.")
    ] = "12m",
    runaway_rate: Annotated[
        float,
        typer.Option(min=0.0, max=1.0, help="Share of agent runs stuck in a tool-call loop."),
    ] = 0.0,
) -> None:
    """Produce realistic demo traffic for several routes through the SDK."""
    from tracewatch.demo.runner import INCIDENTS, Incident, run_demo
    from tracewatch.queries import parse_time

    settings = _settings(bootstrap)
    backfill_s = (
        0.0 if backfill.strip() in {"0", ""} else time.time() - parse_time(backfill).timestamp()
    )
    chosen = None
    if incident is not None:
        if incident not in INCIDENTS:
            raise ConfigError(
                f"--incident {incident!r} is not one of {', '.join(INCIDENTS)} "
                "(e.g. --incident cost)"
            )
        chosen = Incident(incident, incident_route, parse_time(incident_at).timestamp())
    run_demo(
        settings.kafka, duration, rate, backfill_s, invalid_every, seed, err, chosen, runaway_rate
    )


@app.command()
def replay(
    events: Annotated[Path, typer.Argument(help="JSON-lines file of trace events, one per line.")],
    alerts_out: Annotated[
        Path, typer.Option("--alerts-out", help="Where alert transitions go (JSON lines).")
    ],
    breakers_out: Annotated[
        Path | None,
        typer.Option("--breakers-out", help="Where breaker transitions go (JSON lines)."),
    ] = None,
    rules: Annotated[Path | None, typer.Option("--rules", help="Rules file (YAML).")] = None,
    allowed_lateness: Annotated[
        float | None, typer.Option(help="Seconds of event-time lateness before a minute closes.")
    ] = None,
    dsn: DsnOpt = None,
) -> None:
    """Run the worker's pipeline over a recorded file, in-process, no Kafka needed."""
    from tracewatch.replay import replay_file

    settings = _settings(dsn=dsn, allowed_lateness_s=allowed_lateness, rules=rules)
    report = replay_file(events, alerts_out, breakers_out, settings)
    c = report.counters
    err.print(
        f"replayed {c.received} lines in {report.seconds:.1f}s ({report.events_per_s:,.0f}/s): "
        f"{c.valid} valid, {c.rejected_total} invalid, {c.late} late; "
        f"{report.minutes_written} minute rows written; {report.alerts} alerts, "
        f"{report.breakers} breaker transitions"
    )
    for line in report.first_errors:
        err.print(f"  invalid {line}", highlight=False)
    if c.rejected_total > len(report.first_errors):
        err.print(f"  … and {c.rejected_total - len(report.first_errors)} more invalid lines")


@app.command("alerts")
def alerts_command(
    bootstrap: BootstrapOpt = None,
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="Keep printing alerts as they come.")
    ] = False,
    limit: Annotated[int, typer.Option(min=1, help="Show the latest N transitions.")] = 50,
    as_json: Annotated[bool, typer.Option("--json", help="JSON lines (the wire form).")] = False,
) -> None:
    """Alert transitions from the alerts topic (firing and resolved), oldest first."""
    from tracewatch.sdk.alerts import AlertSubscriber

    settings = _settings(bootstrap)
    seen: list[Alert] = []
    with AlertSubscriber(settings.kafka, from_beginning=True) as subscriber:
        quiet_since = time.monotonic()
        while follow or time.monotonic() - quiet_since < 3.0:  # 3 s of silence: caught up
            alert = subscriber.poll(0.5)
            if alert is None:
                continue
            quiet_since = time.monotonic()
            if follow:
                _print_alerts([alert], as_json)
            else:
                seen = [*seen[-(limit - 1) :], alert] if limit > 1 else [alert]
    if not follow:
        _print_alerts(seen, as_json)
        if not seen:
            err.print(f"no alerts on {settings.kafka.alerts_topic} yet")


def _print_alerts(alerts: list[Alert], as_json: bool) -> None:
    if as_json:
        for alert in alerts:
            _print_json_line(alert.model_dump_json())
        return
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False)
    for name in ("starts_at", "ends_at", "status", "alertname", "route", "metric", "summary"):
        table.add_column(name, no_wrap=name != "summary")
    for a in alerts:
        table.add_row(
            f"{a.starts_at:%Y-%m-%d %H:%M}",
            "-" if a.ends_at is None else f"{a.ends_at:%H:%M}",
            f"[red]{a.status}[/red]" if a.status == "firing" else a.status,
            _text(a.alertname),
            _text(a.labels.get("route", "-")),
            _text(a.labels.get("metric", "-")),
            _text(a.summary),
        )
    if alerts:
        out.print(table)


@app.command("breakers")
def breakers_command(bootstrap: BootstrapOpt = None) -> None:
    """Open breakers, from the compacted breakers topic (as an app's BreakerClient sees them)."""
    from tracewatch.sdk.breakers import BreakerClient

    settings = _settings(bootstrap)
    with BreakerClient(settings.kafka) as client:
        if not client.wait_ready(15.0):
            raise ServiceUnavailable(
                f"could not read {settings.kafka.breakers_topic} within 15 s; is Kafka up "
                "(`bash infra/kafka/start.sh`) and TRACEWATCH_KAFKA_BOOTSTRAP_SERVERS right?"
            )
        shown = client.state.open_signals()
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False)
    for name in ("scope", "state", "opened_at", "ttl_s", "reason"):
        table.add_column(name, no_wrap=name != "reason")
    for s in sorted(shown, key=lambda s: (s.opened_at is None, s.opened_at, s.scope)):
        opened = "-" if s.opened_at is None else f"{s.opened_at:%Y-%m-%d %H:%M:%S}"
        ttl = "-" if s.ttl_s is None else f"{s.ttl_s:g}"
        table.add_row(_text(s.scope), s.state, opened, ttl, _text(s.reason))
    if shown:
        out.print(table)
    else:
        err.print(f"no open breakers on {settings.kafka.breakers_topic}")


@app.command("rollouts")
def rollouts_command(
    bootstrap: BootstrapOpt = None,
    from_file: Annotated[
        Path | None,
        typer.Option("--from-file", help="A replay's --breakers-out file instead of the topic."),
    ] = None,
    check: Annotated[
        bool, typer.Option("--check", help="Exit 1 if any candidate is rolled back (CI gate).")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="JSON lines (the wire form).")] = False,
) -> None:
    """Canary verdicts: route, candidate, share, verdict, deciding metric, evidence."""
    from tracewatch.rollouts_view import COLUMNS, read_variant_file, rows

    if from_file is not None:
        shown = read_variant_file(from_file)
    else:
        from tracewatch.sdk.breakers import BreakerClient

        settings = _settings(bootstrap)
        with BreakerClient(settings.kafka) as client:
            if not client.wait_ready(15.0):
                raise ServiceUnavailable(
                    f"could not read {settings.kafka.breakers_topic} within 15 s; is Kafka up "
                    "(`bash infra/kafka/start.sh`) and TRACEWATCH_KAFKA_BOOTSTRAP_SERVERS right?"
                )
            shown = client.state.variants()
    if as_json:
        for signal in shown:
            _print_json_line(signal.model_dump_json())
    elif shown:
        table = Table(box=box.SIMPLE_HEAD, pad_edge=False)
        for name in COLUMNS:
            table.add_column(name, no_wrap=name != "evidence")
        for row in rows(shown):
            table.add_row(*(_text(cell) for cell in row))
        out.print(table)
    else:
        err.print("no canaries judged yet")
    if check and any(s.verdict == "rollback" for s in shown):
        sys.exit(1)


@app.command()
def otlp(
    bootstrap: BootstrapOpt = None,
    host: Annotated[
        str | None, typer.Option(help="Address to listen on (env TRACEWATCH_OTLP_HOST).")
    ] = None,
    port: Annotated[
        int | None, typer.Option(help="Port to listen on, 4318 by default (TRACEWATCH_OTLP_PORT).")
    ] = None,
    log_level: Annotated[str, typer.Option(help="debug, info, warning or error.")] = "info",
) -> None:
    """Receive OpenTelemetry traces (OTLP/HTTP) and produce their GenAI spans as events."""
    from tracewatch.config import OtlpSettings
    from tracewatch.otlp.receiver import run_receiver

    settings = _settings(bootstrap)
    listen: dict[str, Any] = {"host": host, "port": port}
    if host is not None or port is not None:
        try:
            settings.otlp = OtlpSettings(**{k: v for k, v in listen.items() if v is not None})
        except ValueError as exc:
            raise ConfigError(f"invalid setting: {redact_text(str(exc))}") from None
    logging.basicConfig(
        level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )
    install_log_redaction()

    def ready(url: str) -> None:
        err.print(
            f"tracewatch otlp: listening on {url} (protobuf and JSON), "
            f"producing to {settings.kafka.events_topic} on {settings.kafka.bootstrap_servers}; "
            "Ctrl-C stops"
        )

    run_receiver(settings, ready)


@app.command()
def status() -> None:
    """Show the running worker's counters."""
    from tracewatch.streams.worker import worker_headers

    settings = _settings()
    info = _running_worker(settings)
    request = urllib.request.Request(f"{info['url']}/status", headers=worker_headers(settings))
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            out.print_json(response.read().decode())
    except urllib.error.HTTPError as exc:  # 401/403: the body says how to get in
        raise ServiceUnavailable(f"the worker answered {exc.code}: {exc.read().decode()}") from None


@app.command("dashboard-url")
def dashboard_url() -> None:
    """Print the running worker's dashboard address, with its token (open it in a browser).

    The token rides in the URL fragment (``#token=…``), which a browser never sends to a
    server; the page keeps it for the tab's session. Treat the printed link as a password.
    """
    from tracewatch.streams.worker import dashboard_url as url_of

    settings = _settings()
    print(url_of(settings, _running_worker(settings)))


def _running_worker(settings: Settings) -> dict[str, Any]:
    from tracewatch.streams.worker import read_run_file

    info = read_run_file(settings.home)
    if info is None:
        raise ServiceUnavailable(
            f"no worker is running for {settings.home}; start one with `tracewatch run`"
        )
    return info


@query_app.command("top")
def query_top(
    by: Annotated[
        str,
        typer.Option(
            help="Statistic to rank by, e.g. cost_p95, latency_p99, error_rate, score:groundedness."
        ),
    ] = "cost_p95",
    since: Annotated[str, typer.Option(help="Start: 15m, 2h, 1d ago, or RFC 3339.")] = "1h",
    until: Annotated[str, typer.Option(help="End (exclusive).")] = "now",
    limit: Annotated[int, typer.Option(min=1, help="How many routes.")] = 10,
    as_json: Annotated[bool, typer.Option("--json", help="JSON lines instead of a table.")] = False,
    dsn: DsnOpt = None,
) -> None:
    """Top routes by a statistic over a time range (from the events table)."""
    from tracewatch.queries import parse_time, top_routes_query

    sql = top_routes_query(by)
    params: dict[str, Any] = {
        "since": parse_time(since),
        "until": parse_time(until),
        "limit": limit,
    }
    if by.startswith("score:"):
        params["score"] = by.removeprefix("score:")
    _print_query(sql, params, dsn, as_json, f"routes by {by}, {since} → {until}")


@query_app.command("series")
def query_series(
    route: Annotated[str, typer.Argument(help="The route, e.g. support/chat.")],
    since: Annotated[str, typer.Option(help="Start: 15m, 2h, 1d ago, or RFC 3339.")] = "1h",
    until: Annotated[str, typer.Option(help="End (exclusive).")] = "now",
    limit: Annotated[int, typer.Option(min=1, help="At most this many rows.")] = 200,
    as_json: Annotated[bool, typer.Option("--json", help="JSON lines instead of a table.")] = False,
    dsn: DsnOpt = None,
) -> None:
    """One route's one-minute statistics, per model and prompt version (stats_1m)."""
    from tracewatch.queries import parse_time, series_query

    params = {
        "route": route,
        "since": parse_time(since),
        "until": parse_time(until),
        "limit": limit,
    }
    _print_query(series_query(), params, dsn, as_json, f"{route}: one-minute statistics")


@query_app.command("prompt-change")
def query_prompt_change(
    route: Annotated[str, typer.Argument(help="The route, e.g. support/chat.")],
    to: Annotated[str, typer.Option("--to", help="The new prompt version, e.g. v13.")],
    from_: Annotated[
        str | None,
        typer.Option("--from", help="Compare with this version only (default: any before)."),
    ] = None,
    window: Annotated[
        str, typer.Option(help="How long before and after the first appearance: 1h, 24h, 7d.")
    ] = "24h",
    as_json: Annotated[bool, typer.Option("--json", help="JSON lines instead of a table.")] = False,
    dsn: DsnOpt = None,
) -> None:
    """What changed after a prompt version: the route before vs after it first appeared."""
    from tracewatch.queries import (
        QueryClient,
        compare_periods,
        parse_duration,
        prompt_change_query,
        prompt_first_seen_query,
    )

    params: dict[str, Any] = {"route": route, "to_version": to, "from_version": from_ or ""}
    client = QueryClient(_settings(dsn=dsn))
    try:
        first_seen_ms, n = client.run(prompt_first_seen_query(), params).rows[0]
        if first_seen_ms is None:
            raise ConfigError(
                f"prompt version {to!r} has no events on route {route!r}: check the names "
                f"with `tracewatch query series {route}`"
            )
        params |= {"first_seen_ms": first_seen_ms, "window_s": int(parse_duration(window))}
        result = compare_periods(client.run(prompt_change_query(), params))
    finally:
        client.close()
    if not as_json:
        first_seen = datetime.fromtimestamp(first_seen_ms / 1000, UTC)
        out.print(
            _text(
                f"{route}: {to} first appeared at {first_seen:%Y-%m-%d %H:%M:%S} UTC ({n} events "
                f"in all); {window} before ({from_ or 'any version'}) vs {window} after ({to})"
            ),
            highlight=False,
            soft_wrap=True,
        )
    _print_result(result, as_json, None)


@query_app.command("alerts")
def query_alerts(
    route: Annotated[str | None, typer.Option(help="Only this route's alerts.")] = None,
    since: Annotated[str, typer.Option(help="Start: 15m, 2h, 1d ago, or RFC 3339.")] = "24h",
    as_json: Annotated[bool, typer.Option("--json", help="JSON lines (the wire form).")] = False,
    bootstrap: BootstrapOpt = None,
) -> None:
    """Alert history: the transitions on the alerts topic (firing, resolved), oldest first."""
    from tracewatch.queries import filter_alerts, parse_time, read_alert_history

    settings = _settings(bootstrap)
    alerts = filter_alerts(read_alert_history(settings.kafka), parse_time(since), route)
    _print_alerts(alerts, as_json)
    if not alerts:
        err.print(f"no alerts on {settings.kafka.alerts_topic} since {since}")


@query_app.command("trace")
def query_trace(
    trace_id: Annotated[str, typer.Argument(help="The trace id, as in the events.")],
    limit: Annotated[int, typer.Option(min=1, help="At most this many events.")] = 1000,
    as_json: Annotated[bool, typer.Option("--json", help="JSON lines instead of a table.")] = False,
    dsn: DsnOpt = None,
) -> None:
    """One trace's timeline: its events by time, with loop depth and the running cost."""
    from tracewatch.queries import trace_timeline_query

    params = {"trace": trace_id, "limit": limit}
    _print_query(trace_timeline_query(), params, dsn, as_json, f"trace {trace_id}")


@query_app.command("sql")
def query_sql(
    sql: Annotated[
        str, typer.Argument(help="A read-only query; {db:Identifier} names the database.")
    ],
    param: Annotated[
        list[str] | None, typer.Option("--param", "-p", help="Bind NAME=VALUE for {NAME:Type}.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="JSON lines instead of a table.")] = False,
    dsn: DsnOpt = None,
) -> None:
    """Run your own read-only SQL (tables: events, stats_1m in database tracewatch)."""
    params: dict[str, Any] = {}
    for item in param or []:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise ConfigError(f"--param {item!r} must look like NAME=VALUE")
        params[name] = value
    _print_query(sql, params, dsn, as_json, None)


def _print_query(
    sql: str, params: dict[str, Any], dsn: str | None, as_json: bool, title: str | None
) -> None:
    from tracewatch.queries import QueryClient

    client = QueryClient(_settings(dsn=dsn))
    try:
        result = client.run(sql, params)
    finally:
        client.close()
    _print_result(result, as_json, title)


def _print_result(result: QueryResult, as_json: bool, title: str | None) -> None:
    if as_json:
        for row in result.rows:
            # ensure_ascii: exact JSON, and C1 or bidi controls arrive as \u escapes
            record = dict(zip(result.columns, row, strict=True))
            out.print_json(json.dumps(record, default=str), ensure_ascii=True)
        return
    shown = None if title is None else _text(title)
    table = Table(title=shown, box=box.SIMPLE_HEAD, pad_edge=False)
    for name in result.columns:
        table.add_column(_text(name), no_wrap=True)
    for row in result.rows:
        table.add_row(*(_text(_cell(v)) for v in row))
    out.print(table)
    if not result.rows:
        err.print(
            "no rows: widen --since, or check that the worker is running (`tracewatch status`)"
        )


def _text(value: str) -> str:
    """Text from events for a terminal: control characters escaped (an ESC or a bidi
    override in a route name is shown, not obeyed), markup shown as it is."""
    return escape(printable(value))


def _print_json_line(text: str) -> None:
    """One JSON document as one line, exact, with no control character left raw."""
    line = json.dumps(json.loads(text), ensure_ascii=True)
    out.print(line, markup=False, highlight=False, soft_wrap=True)


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, dict):
        return ", ".join(f"{k}={_cell(v)}" for k, v in value.items())
    return str(value)


def _fail(kind: str, exc: Exception, code: int) -> NoReturn:
    # soft_wrap: a message (often a path or a YAML location) is never broken across
    # lines, so it can be grepped and pasted; escape: "rules[1]" is text, not markup
    message = escape(redact_text(str(exc)))  # a library's error may echo a URL's password
    err.print(f"[red]{kind}:[/red] {message}", highlight=False, soft_wrap=True)
    sys.exit(code)


def main() -> None:
    """Entry point: friendly errors instead of tracebacks for deliberate failures."""
    try:
        app()
    except ConfigError as exc:
        _fail("error", exc, 2)
    except ServiceUnavailable as exc:
        _fail("unavailable", exc, 3)
    except TracewatchError as exc:
        _fail("error", exc, 1)
