"""Security basics that need no running service (docs/security.md).

- every Kafka client tracewatch builds (SDK, worker, faust, CLI) gets the SASL/SSL
  settings from ``KafkaSettings``;
- credentials never reach an error message, a log line or the terminal, even when
  the service they are for cannot be reached;
- every HTTP endpoint listens on 127.0.0.1 unless told otherwise.

Clients are observed by swapping the client classes for recorders that keep the
configuration they were given and refuse to do anything else (no broker is
involved); the leak tests use the real clients against a closed port.
"""

from __future__ import annotations

import ast
import contextlib
import gc
import logging
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import certifi
import pytest
from pydantic_settings import BaseSettings

import tracewatch.config
from tracewatch import cli
from tracewatch.config import ClickHouseSettings, KafkaSettings, Settings, WorkerSettings
from tracewatch.errors import ConfigError, TracewatchError
from tracewatch.sdk import AlertSubscriber, BreakerClient, TraceProducer
from tracewatch.sinks.clickhouse import ClickHouseSink
from tracewatch.sinks.kafka import DeadLetterPublisher
from tracewatch.sinks.kafka_alerts import AlertPublisher
from tracewatch.sinks.kafka_breakers import BreakerPublisher
from tracewatch.sinks.kafka_stats import StatsPublisher
from tracewatch.streams import ingest, topics
from tracewatch.streams.kafka_auth import faust_credentials

PACKAGE = Path(tracewatch.config.__file__).parent
CLOSED = "127.0.0.1:1"  # nothing listens there: every connection is refused at once
KAFKA_SECRET = "kafka-pw-7f1c9e"
KEY_SECRET = "tls-key-pw-3b82d0"
CH_SECRET = "clickhouse-pw-5a6e11"
SECURED_ENV = {
    "TRACEWATCH_KAFKA_BOOTSTRAP_SERVERS": CLOSED,
    "TRACEWATCH_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
    "TRACEWATCH_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
    "TRACEWATCH_KAFKA_SASL_USERNAME": "tracewatch-app",
    "TRACEWATCH_KAFKA_SASL_PASSWORD": KAFKA_SECRET,
    "TRACEWATCH_KAFKA_SSL_CA_LOCATION": certifi.where(),
}
EXPECTED = {
    "bootstrap.servers": CLOSED,
    "security.protocol": "SASL_SSL",
    "sasl.mechanism": "SCRAM-SHA-512",
    "sasl.username": "tracewatch-app",
    "sasl.password": KAFKA_SECRET,
    "ssl.ca.location": certifi.where(),
}


def secured(monkeypatch: pytest.MonkeyPatch) -> KafkaSettings:
    for name, value in SECURED_ENV.items():
        monkeypatch.setenv(name, value)
    return KafkaSettings()


# --- every client gets the settings ---------------------------------------------------------


class Refused(Exception):
    """What a recording client raises when asked to do anything after being built."""


class Recorder:
    """Stands in for ``Producer``, ``Consumer`` and ``AdminClient`` in every tracewatch module."""

    CLASSES = ("Producer", "Consumer", "AdminClient")

    def __init__(self, refuse_to_build: bool = False) -> None:
        self.configs: list[tuple[str, dict[str, Any]]] = []
        self.refuse_to_build = refuse_to_build  # stop a command at its first client

    def install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        import tracewatch.streams.app  # noqa: F401  (its imports load every client module)

        for name, module in list(sys.modules.items()):
            if name.startswith("tracewatch"):
                for cls in self.CLASSES:
                    if getattr(module, cls, None) is not None:
                        monkeypatch.setattr(module, cls, self._fake(cls))

    def _fake(self, cls: str) -> type:
        recorder = self

        class Client:
            def __init__(self, conf: dict[str, Any] | None = None, **kwargs: Any) -> None:
                recorder.configs.append((cls, {**(conf or {}), **kwargs}))
                if recorder.refuse_to_build:
                    raise Refused(cls)

            def close(self, *args: Any, **kwargs: Any) -> None:
                """Closing is allowed: clients close in ``finally`` blocks and retry loops."""

            def __getattr__(self, name: str) -> Callable[..., Any]:
                def refuse(*args: Any, **kwargs: Any) -> Any:
                    raise Refused(f"{cls}.{name}")

                return refuse

        return Client

    def assert_all_secured(self, at_least: int = 1) -> None:
        assert len(self.configs) >= at_least
        for cls, conf in self.configs:
            assert {k: conf.get(k) for k in EXPECTED} == EXPECTED, cls


@pytest.fixture
def recorder(monkeypatch: pytest.MonkeyPatch) -> Recorder:
    rec = Recorder()
    rec.install(monkeypatch)
    return rec


def _ingest_consumer(kafka: KafkaSettings) -> None:
    sink = ClickHouseSink(ClickHouseSettings())  # never connected: run() fails before any write
    loop = ingest.IngestLoop(Settings(kafka=kafka), sink)
    stop = threading.Event()
    stop.set()
    loop.run(stop)


def _breaker_client(kafka: KafkaSettings) -> None:
    client = BreakerClient(kafka, start=False)
    try:
        client.start()  # builds its consumer here; its thread then retries in the background
    finally:
        client.close()


CLIENTS: dict[str, Callable[[KafkaSettings], object]] = {
    "sdk TraceProducer": lambda k: TraceProducer(settings=k),
    "sdk AlertSubscriber": lambda k: AlertSubscriber(k),
    "sdk BreakerClient": _breaker_client,
    "worker dead-letter publisher": lambda k: DeadLetterPublisher(k),
    "worker alert publisher": lambda k: AlertPublisher(k),
    "worker breaker publisher": lambda k: BreakerPublisher(k),
    "worker stats publisher": lambda k: StatsPublisher(k),
    "worker ingest consumer": _ingest_consumer,
    "topic admin (worker and CLI)": lambda k: topics.ensure_topics(k, timeout=1),
}


@pytest.mark.parametrize("client", sorted(CLIENTS))
def test_every_kafka_client_gets_sasl_and_ssl_settings(
    client: str, recorder: Recorder, monkeypatch: pytest.MonkeyPatch
) -> None:
    with contextlib.suppress(Refused):  # built, then it tried to talk to Kafka
        CLIENTS[client](secured(monkeypatch))
    recorder.assert_all_secured()


def test_the_worker_faust_app_gets_the_same_credentials(
    recorder: Recorder, monkeypatch: pytest.MonkeyPatch
) -> None:
    """faust (aiokafka) reads the stats topic and writes its table changelog: it must
    authenticate exactly like the confluent-kafka clients."""
    from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth

    from tracewatch.streams.app import build_app

    settings = Settings(kafka=secured(monkeypatch))
    app, _ = build_app(settings, ClickHouseSink(settings.clickhouse))
    auth = credentials_to_aiokafka_auth(app.conf.broker_credentials)
    assert {k: v for k, v in auth.items() if k != "ssl_context"} == {
        "security_protocol": "SASL_SSL",
        "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_plain_username": "tracewatch-app",
        "sasl_plain_password": KAFKA_SECRET,
    }
    assert auth["ssl_context"] is not None
    assert KAFKA_SECRET not in repr(app.conf.broker_credentials)
    recorder.assert_all_secured(at_least=4)  # its publishers and dead-letter producer


@pytest.mark.parametrize(
    ("env", "protocol", "mechanism"),
    [
        ({"SECURITY_PROTOCOL": "PLAINTEXT"}, None, None),
        ({"SECURITY_PROTOCOL": "SSL"}, "SSL", None),
        ({"SECURITY_PROTOCOL": "SASL_PLAINTEXT", "SASL_MECHANISM": "PLAIN"}, "SASL_PLAINTEXT",
         "PLAIN"),
        ({"SECURITY_PROTOCOL": "SASL_SSL"}, "SASL_SSL", "GSSAPI"),  # librdkafka's default
    ],
)  # fmt: skip
def test_faust_credentials_follow_the_protocol(
    env: dict[str, str], protocol: str | None, mechanism: str | None
) -> None:
    kafka = KafkaSettings(**{k.lower(): v for k, v in env.items()}, sasl_username="u")
    credentials = faust_credentials(kafka)
    if protocol is None:
        assert credentials is None
        return
    assert credentials is not None and credentials.protocol.value == protocol
    assert getattr(getattr(credentials, "mechanism", None), "value", None) == mechanism


def test_an_unusable_kafka_tls_file_is_a_clear_config_error(tmp_path: Path) -> None:
    kafka = KafkaSettings(
        security_protocol="SSL",
        ssl_ca_location=str(tmp_path / "missing-ca.pem"),
        ssl_key_password=KEY_SECRET,  # type: ignore[arg-type]
    )
    with pytest.raises(ConfigError, match="TRACEWATCH_KAFKA_SSL_CA_LOCATION") as info:
        faust_credentials(kafka)
    assert KEY_SECRET not in str(info.value)


CLI_COMMANDS = [
    ["topics", "--timeout", "1"],
    ["alerts"],
    ["breakers"],
    ["demo", "--duration", "0", "--backfill", "1m", "--invalid-every", "0"],
    ["run"],
]


@pytest.mark.parametrize("argv", CLI_COMMANDS, ids=lambda a: a[0])
def test_cli_commands_take_kafka_security_from_the_environment(
    argv: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    recorder = Recorder(refuse_to_build=True)
    recorder.install(monkeypatch)
    secured(monkeypatch)
    monkeypatch.setattr(sys, "argv", ["tracewatch", *argv])
    with pytest.raises(Refused):
        cli.main()
    recorder.assert_all_secured()


def _client_builders(tree: ast.Module) -> set[str]:
    """Functions of a module whose body reads ``client_config()``."""
    return {
        node.name
        for node in ast.walk(tree)
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        and any(_calls(n, "client_config") for n in ast.walk(node))
    }


def _calls(node: ast.AST, name: str) -> bool:
    if not isinstance(node, ast.Call):
        return False
    func = node.func
    return (isinstance(func, ast.Attribute) and func.attr == name) or (
        isinstance(func, ast.Name) and func.id == name
    )


def test_no_kafka_client_is_built_without_client_config() -> None:
    """A new client anywhere in the package (a view, a receiver) cannot forget the settings."""
    seen, unsecured = 0, []
    for path in sorted(PACKAGE.rglob("*.py")):
        tree = ast.parse(path.read_text())
        builders = _client_builders(tree)
        for node in ast.walk(tree):
            if any(_calls(node, cls) for cls in Recorder.CLASSES):
                seen += 1
                args = [*node.args, *(k.value for k in node.keywords)]  # type: ignore[attr-defined]
                if not any(
                    _calls(n, "client_config") or any(_calls(n, b) for b in builders)
                    for arg in args
                    for n in ast.walk(arg)
                ):
                    unsecured.append(f"{path.relative_to(PACKAGE)}:{node.lineno}")
            if _calls(node, "App") and not any(
                k.arg == "broker_credentials"
                for k in node.keywords  # type: ignore[attr-defined]
            ):
                unsecured.append(f"{path.relative_to(PACKAGE)}:{node.lineno} (faust.App)")
    assert seen >= 8 and not unsecured


# --- secrets never print ------------------------------------------------------------------


@pytest.fixture
def everything_logged(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    with caplog.at_level(logging.DEBUG):
        yield caplog


def assert_nowhere(*texts: str) -> None:
    for secret in (KAFKA_SECRET, KEY_SECRET, CH_SECRET):
        for text in texts:
            assert secret not in text


def test_settings_never_print_their_secrets() -> None:
    kafka = KafkaSettings(sasl_password=KAFKA_SECRET, ssl_key_password=KEY_SECRET)  # type: ignore[arg-type]
    ch = ClickHouseSettings(dsn="http://default@h:8123", password=CH_SECRET)  # type: ignore[arg-type]
    assert kafka.client_config()["sasl.password"] == KAFKA_SECRET  # passed on, as it must be
    assert_nowhere(repr(kafka), str(kafka), kafka.model_dump_json(), repr(ch), ch.model_dump_json())


@pytest.mark.parametrize(
    "dsn",
    [f"postgres://user:{CH_SECRET}@db:5432", f"http://db:8123/?user=u&password={CH_SECRET}"],
)
def test_a_refused_dsn_is_not_echoed(dsn: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRACEWATCH_CLICKHOUSE_DSN", dsn)
    with pytest.raises(ConfigError, match="TRACEWATCH_CLICKHOUSE_") as info:
        Settings()
    assert_nowhere(str(info.value))


@pytest.mark.parametrize(
    ("dsn", "shown"),
    [
        (f"http://default:{CH_SECRET}@ch.internal:8123", "http://default:***@ch.internal:8123"),
        (f"https://u:{CH_SECRET}@ch:8443/db?secure=1", "https://u:***@ch:8443/db?secure=1"),
        ("http://ch:8123", "http://ch:8123"),
        ("chdb:///var/lib/tw", "chdb:///var/lib/tw"),
    ],
)
def test_dsns_are_shown_without_their_password(dsn: str, shown: str) -> None:
    assert ClickHouseSettings(dsn=dsn).redacted_dsn() == shown


def test_kafka_failures_never_show_the_password(
    monkeypatch: pytest.MonkeyPatch,
    everything_logged: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
) -> None:
    """Bad credentials against a port nobody listens on: every client fails, none tells."""
    monkeypatch.setenv("TRACEWATCH_KAFKA_SSL_KEY_PASSWORD", KEY_SECRET)
    kafka = secured(monkeypatch)
    errors: list[str] = []
    producer = TraceProducer(settings=kafka, config={"message.timeout.ms": 500})
    producer.send({"event_id": "e", "trace_id": "t", "ts": 1.7e9, "kind": "llm", "route": "r"})
    with pytest.raises(TracewatchError) as info:
        producer.flush(5.0)  # returns when the event times out, after 0.5 s
    errors.append(str(info.value))
    del producer  # nothing queued any more: it goes at once
    for attempt in (
        lambda: AlertSubscriber(kafka, connect_timeout=0.5),
        lambda: topics.ensure_topics(kafka, timeout=0.5),
    ):
        with pytest.raises(TracewatchError) as info:
            attempt()
        errors.append(str(info.value))
    gc.collect()  # the failed subscriber's and admin's clients go too
    with BreakerClient(kafka) as breakers:
        assert not breakers.wait_ready(0.5)
        errors.append(str(breakers.check("t", "r")))
    out, err = capfd.readouterr()
    assert "127.0.0.1:1" in errors[1]  # the errors do say what failed
    assert_nowhere(*errors, everything_logged.text, out, err)


def test_clickhouse_failures_never_show_the_password(
    everything_logged: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]
) -> None:
    errors = []
    for settings in (
        ClickHouseSettings(dsn=f"http://default:{CH_SECRET}@{CLOSED}"),
        ClickHouseSettings(dsn=f"http://{CLOSED}", username="u", password=CH_SECRET),  # type: ignore[arg-type]
    ):
        with pytest.raises(TracewatchError) as info:
            ClickHouseSink(settings).connect()
        errors.append(str(info.value))
    out, err = capfd.readouterr()
    assert all("cannot reach ClickHouse at http://" in e for e in errors)
    assert_nowhere(*errors, everything_logged.text, out, err)


@pytest.mark.parametrize(
    ("argv", "env", "code"),
    [
        (["query", "sql", "SELECT 1", "--clickhouse-dsn", f"http://u:{CH_SECRET}@{CLOSED}"], {}, 3),
        (["query", "top"], {"TRACEWATCH_CLICKHOUSE_DSN": f"http://{CLOSED}",
                            "TRACEWATCH_CLICKHOUSE_PASSWORD": CH_SECRET}, 3),
        (["query", "top"], {"TRACEWATCH_CLICKHOUSE_DSN": f"mysql://u:{CH_SECRET}@db"}, 2),
        (["schema"], {"TRACEWATCH_CLICKHOUSE_DSN": f"http://db/?password={CH_SECRET}"}, 2),
        (["topics", "--timeout", "1"], {**SECURED_ENV,
                                        "TRACEWATCH_KAFKA_SSL_KEY_PASSWORD": KEY_SECRET}, 3),
    ],
    ids=["dsn-password", "env-password", "bad-dsn", "query-string-password", "kafka"],
)  # fmt: skip
def test_cli_errors_never_show_credentials(
    argv: list[str],
    env: dict[str, str],
    code: int,
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(sys, "argv", ["tracewatch", *argv])
    with pytest.raises(SystemExit) as info:
        cli.main()
    gc.collect()  # the clients of the failed command, before reading what they printed
    out, err = capfd.readouterr()
    assert info.value.code == code, err
    assert err.strip()  # it did explain itself
    assert_nowhere(out, err)


def test_the_worker_banner_shows_the_dsn_without_its_password(
    recorder: Recorder, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    secured(monkeypatch)
    monkeypatch.setenv("TRACEWATCH_CLICKHOUSE_DSN", f"http://default:{CH_SECRET}@ch:8123")
    monkeypatch.setattr(sys, "argv", ["tracewatch", "run"])
    with pytest.raises(Refused):  # stops at the first Kafka call, after the banner
        cli.main()
    out, err = capfd.readouterr()
    assert "ClickHouse http://default:***@ch:8123" in err
    assert_nowhere(out, err)


# --- HTTP endpoints listen on localhost ----------------------------------------------------


def test_every_listening_address_defaults_to_localhost() -> None:
    """Any setting naming a host to listen on defaults to 127.0.0.1 (the worker's views,
    and any receiver added later)."""
    hosts = {
        f"{cls.__name__}.{name}": field.default
        for cls in vars(tracewatch.config).values()
        if isinstance(cls, type) and issubclass(cls, BaseSettings)
        for name, field in cls.model_fields.items()
        if name.endswith("host")
    }
    assert "WorkerSettings.web_host" in hosts
    assert set(hosts.values()) == {"127.0.0.1"}, hosts


def test_the_worker_web_server_binds_localhost(recorder: Recorder) -> None:
    from tracewatch.streams.app import build_app

    settings = Settings()
    app, _ = build_app(settings, ClickHouseSink(settings.clickhouse))
    assert app.conf.web_bind == "127.0.0.1" and app.conf.web_host == "127.0.0.1"
    assert WorkerSettings(web_host="0.0.0.0").web_host == "0.0.0.0"  # an opt-in
