"""Settings, one pydantic-settings class per concern.

Every field can be set from the environment (``TRACEWATCH_`` prefix plus the
concern's own, e.g. ``TRACEWATCH_KAFKA_BOOTSTRAP_SERVERS``) and most from CLI
flags. Sources, highest first: CLI flag, environment, ``.env`` file, default.
Defaults work on a laptop: a broker on 127.0.0.1:9092 started by infra/kafka and
an embedded chDB under ``$TRACEWATCH_HOME`` (``./.tracewatch``).
Credentials are ``SecretStr`` so they never print in logs, errors or reprs.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal
from urllib.parse import parse_qs, urlsplit

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from tracewatch.errors import ConfigError
from tracewatch.redact import redact_url

__all__ = [
    "AlertmanagerSettings",
    "ClickHouseSettings",
    "DetectSettings",
    "KafkaSettings",
    "OtlpSettings",
    "PricingSettings",
    "QuerySettings",
    "RolloutSettings",
    "Settings",
    "WorkerSettings",
    "home_dir",
]


def home_dir() -> Path:
    """Where tracewatch keeps data and logs: ``$TRACEWATCH_HOME`` or ``./.tracewatch``."""
    return _HomeSettings().home.expanduser().resolve()


class _HomeSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="TRACEWATCH_", extra="ignore")
    home: Path = Path(".tracewatch")


class KafkaSettings(BaseSettings):
    """How to reach Kafka and which topics to use (contract section "Topics")."""

    # hide_input_in_errors: a refused value (which may hold a credential) never reaches
    # the error message, only the setting's name and the rule it broke
    model_config = SettingsConfigDict(
        env_prefix="TRACEWATCH_KAFKA_", env_file=".env", extra="ignore", hide_input_in_errors=True
    )

    bootstrap_servers: str = "127.0.0.1:9092"
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: str | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    ssl_ca_location: str | None = None
    ssl_certificate_location: str | None = None
    ssl_key_location: str | None = None
    ssl_key_password: SecretStr | None = None

    events_topic: str = "tracewatch.events"
    alerts_topic: str = "tracewatch.alerts"
    breakers_topic: str = "tracewatch.breakers"
    dlq_topic: str = "tracewatch.dlq"
    stats_topic: str = "tracewatch.stats"
    events_partitions: int = Field(default=6, ge=1)
    replication_factor: int = Field(default=1, ge=1)
    consumer_group: str = "tracewatch-worker"

    def client_config(self) -> dict[str, Any]:
        """librdkafka settings shared by every confluent-kafka client tracewatch builds."""
        conf: dict[str, Any] = {
            "bootstrap.servers": self.bootstrap_servers,
            "security.protocol": self.security_protocol,
        }
        optional = {
            "sasl.mechanism": self.sasl_mechanism,
            "sasl.username": self.sasl_username,
            "sasl.password": _reveal(self.sasl_password),
            "ssl.ca.location": self.ssl_ca_location,
            "ssl.certificate.location": self.ssl_certificate_location,
            "ssl.key.location": self.ssl_key_location,
            "ssl.key.password": _reveal(self.ssl_key_password),
        }
        conf.update({k: v for k, v in optional.items() if v is not None})
        return conf

    def faust_broker_url(self) -> str:
        """The same servers in faust's URL form (``kafka://h1:p1;h2:p2``)."""
        return ";".join(f"kafka://{server.strip()}" for server in self.bootstrap_servers.split(","))


class ClickHouseSettings(BaseSettings):
    """Where events and statistics are written.

    ``dsn`` empty means the embedded engine: ``chdb://$TRACEWATCH_HOME/clickhouse``.
    An ``http(s)://`` DSN talks to a ClickHouse server with the same code.
    """

    model_config = SettingsConfigDict(
        env_prefix="TRACEWATCH_CLICKHOUSE_",
        env_file=".env",
        extra="ignore",
        hide_input_in_errors=True,  # a DSN may carry a password
    )

    dsn: str = ""
    database: str = "tracewatch"
    username: str | None = None
    password: SecretStr | None = None
    #: days raw events are kept (0 = forever); changed on existing tables at start-up
    events_ttl_days: int = Field(default=30, ge=0)
    #: days of ``stats_1m`` minutes (0 = forever); long ranges read the hourly rollup
    stats_ttl_days: int = Field(default=90, ge=0)
    #: days of the hourly rollup ``stats_1h`` (0 = forever)
    rollup_ttl_days: int = Field(default=400, ge=0)

    @field_validator("dsn")
    @classmethod
    def _known_scheme(cls, value: str) -> str:
        if value and not value.startswith(("chdb://", "http://", "https://")):
            raise ValueError(
                "TRACEWATCH_CLICKHOUSE_DSN must start with chdb://, http:// or https:// "
                "(leave it empty for the embedded engine)"
            )
        if "password" in parse_qs(urlsplit(value).query):
            raise ValueError(
                "TRACEWATCH_CLICKHOUSE_DSN cannot carry the password as a query parameter: "
                "set TRACEWATCH_CLICKHOUSE_PASSWORD (or use http://user:password@host:8123)"
            )
        return value

    def resolved_dsn(self) -> str:
        return self.dsn or f"chdb://{home_dir() / 'clickhouse'}"

    def redacted_dsn(self) -> str:
        """The DSN fit for logs and messages: ``user:password@`` becomes ``user:***@``."""
        return redact_url(self.resolved_dsn())

    @property
    def embedded(self) -> bool:
        return self.resolved_dsn().startswith("chdb://")


class QuerySettings(BaseSettings):
    """Limits of every read through ``ClickHouseReader``: ``tracewatch query``, the
    worker's ``/query`` and the dashboard's ``/api/*`` views.

    They are set on the reader's own session before ``readonly=1``, so no query can
    raise them afterwards (a ``SETTINGS`` clause is refused). Defaults fit a laptop
    next to a running worker: the daily queries over a day of events take well under
    a second, so a query near these limits is a mistake, not a question.
    """

    model_config = SettingsConfigDict(
        env_prefix="TRACEWATCH_QUERY_", env_file=".env", extra="ignore"
    )

    #: a query still running after this long is stopped (ClickHouse ``max_execution_time``):
    #: a 10^9-row aggregate otherwise held a core for ~50 s after its client had gone
    max_execution_time_s: float = Field(default=10.0, gt=0)
    #: more result rows than this is an error, not a truncated answer (``max_result_rows``
    #: with ``result_overflow_mode=throw``): 20 million rows took 2.3 GB of the worker's
    #: memory as Python objects; 100 000 is more than a chart or a terminal shows
    max_result_rows: int = Field(default=100_000, ge=1)
    #: the same bound in bytes (``max_result_bytes``, ClickHouse's uncompressed count): room
    #: for 100 000 rows of about 670 bytes, more than any daily query's rows take
    max_result_bytes: int = Field(default=64 * 1024 * 1024, ge=1024)
    #: memory one query may use inside ClickHouse (``max_memory_usage``): a uniqExact over
    #: 10^9 rows stops at 1 GiB instead of taking the worker's RAM with it
    max_memory_bytes: int = Field(default=1024 * 1024 * 1024, ge=16 * 1024 * 1024)


class WorkerSettings(BaseSettings):
    """How the streaming worker batches, buckets and flushes."""

    model_config = SettingsConfigDict(
        env_prefix="TRACEWATCH_WORKER_",
        env_file=".env",
        extra="ignore",
        hide_input_in_errors=True,  # a refused token never reaches the message
    )

    allowed_lateness_s: float = Field(default=120.0, ge=0)
    #: events dated further than this after the worker's wall clock go to the DLQ
    #: (``future_timestamp``): one event a year ahead pinned its partition's commit and
    #: made 295 005 of 300 000 later events late in a replay (issue 16). An hour is far
    #: more than real clock skew and still closes a future minute within the hour.
    max_future_s: float = Field(default=3600.0, ge=0)
    #: a partition with nothing new for this long stops holding the watermark back
    idle_partition_s: float = Field(default=5.0, ge=0)
    batch_max_events: int = Field(default=5000, ge=1)
    poll_timeout_s: float = Field(default=0.5, gt=0)
    #: librdkafka's max.poll.interval.ms; the worker keeps polling (paused) while its
    #: sink is down, so this only catches an ingest thread that is really stuck
    max_poll_interval_s: float = Field(default=300.0, ge=10)
    sink_flush_rows: int = Field(default=5000, ge=1)
    sink_flush_interval_s: float = Field(default=1.0, gt=0)
    max_message_bytes: int = Field(default=256 * 1024, ge=1024)
    #: event ids remembered per source partition to catch repeats (0 = none). A producer's
    #: retry lands in the original's partition (events are keyed by trace_id), so one window
    #: per partition loses nothing and one busy partition cannot push out another's ids.
    #: bench/memory.py: about 224 B per id (36-character ids), so 150 000 x 6 partitions is
    #: about 190 MiB; at 10 000 events/s over 6 partitions that is 90 s of ids
    dedup_window: int = Field(default=150_000, ge=0)
    #: and none older than this much of its partition's event time: producer retries come
    #: within seconds to a couple of minutes, so 5 min catches them and a quiet worker
    #: holds far fewer ids than the count allows
    dedup_window_s: float = Field(default=300.0, gt=0)
    #: caps on the minute buckets' distinct (route, model, prompt_version) keys; what is
    #: over them is folded into ``__other__`` keys and counted (detectors/key_caps.py).
    #: bench/memory.py: a key costs about 6.4 KB per open minute (191 MB for 10 000 keys
    #: with 3 minutes open), so 10 000 keys in all stay under 200 MiB of buckets
    bucket_max_keys: int = Field(default=10_000, ge=1)
    #: a route's own keys (models x prompt versions); a request id sent as
    #: ``prompt_version`` fills its route's 100 and the rest folds into the route's
    #: ``(route, "__other__", "__other__")``, whose statistics stay whole
    bucket_max_keys_per_route: int = Field(default=100, ge=1)
    #: routes. The alert engine judges every route's closed minute (about 0.5 ms each):
    #: with 5 000 routes, replay of the issue's hostile stream (bench/hostile_replay.py)
    #: ran at 0.11 of normal speed, with 1 000 at 0.40. Well under the engine's 10 000,
    #: so it never evicts a route for room; raise both for an app with more routes
    bucket_max_routes: int = Field(default=1_000, ge=1)
    #: event-time seconds after which an idle key or route gives its place back
    bucket_key_idle_s: float = Field(default=600.0, gt=0)
    #: most agent traces the breaker board tracks. bench/memory.py measured about 1.5 KB
    #: per active trace of 8 steps (154 MB for 100 000): 200 000 is about 300 MiB and
    #: holds 333 new traces a second for the default 10-minute ttl. When full, closed
    #: idle traces are shed first; an open trace is never released (issue 16)
    breaker_max_traces: int = Field(default=200_000, ge=1)
    #: keep attributes that carry prompt/completion content (schemas/content.py); off by
    #: default, as the contract promises
    store_content: bool = False
    app_id: str = "tracewatch"  # faust app id: prefixes its internal topics
    web_host: str = "127.0.0.1"
    web_port: int = Field(default=6066, ge=1, le=65535)
    #: ``/health`` answers 503 once the sink has failed (and been retried) this long
    health_sink_error_s: float = Field(default=60.0, gt=0)
    #: the web views' token (``Authorization: Bearer``); None = a new random one at each
    #: start. Set it to give Prometheus or another user a token of their own
    #: (streams/web_access.py); either way it is written to ``$TRACEWATCH_HOME/worker.token``
    token: SecretStr | None = None
    #: more ``Host`` names the web views answer to (``name`` or ``name:port``), beyond
    #: 127.0.0.1, localhost, [::1] and ``web_host``; any other name is refused (DNS rebinding)
    allowed_hosts: tuple[str, ...] = ()

    @field_validator("token")
    @classmethod
    def _strong_token(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not re.fullmatch(r"[\x21-\x7e]{16,}", value.get_secret_value()):
            raise ValueError(
                "TRACEWATCH_WORKER_TOKEN must be at least 16 printable ASCII characters without "
                "spaces, e.g. the output of `python -c 'import secrets; "
                "print(secrets.token_urlsafe(32))'`"
            )
        return value


class DetectSettings(BaseSettings):
    """Automatic (rule-free) detection and where the alert rules file is."""

    model_config = SettingsConfigDict(
        env_prefix="TRACEWATCH_DETECT_", env_file=".env", extra="ignore"
    )

    #: baseline-relative detection on every route and metric, no rules needed
    auto: bool = True
    #: the YAML rules file (``tracewatch rules`` docs); None = automatic detection only
    rules_file: Path | None = None
    #: evaluator scores where higher is worse (contract: "lower-is-better in configuration")
    lower_is_better_scores: tuple[str, ...] = ("hallucination",)
    #: ADWIN level-shift watches (CostLevelShift, LatencyLevelShift) on every route
    drift: bool = False
    #: most routes whose detector state is kept; the least recently seen goes first
    max_routes: int = Field(default=10_000, ge=1)
    #: per metric, the smallest step the automatic watches report, e.g.
    #: ``{"latency_ms": 0.2, "score": 0.05}`` (relative for cost, latency and tokens,
    #: absolute for ``score`` / ``score:<name>``); unset metrics keep the defaults
    #: (0.15, 0.15, 0.2, 0.2, 0.03: README, "Without configuration")
    min_effect: dict[str, float] = Field(default_factory=dict)
    #: significance bar of the automatic step test (z of the window vs the local level)
    step_min_z: float = Field(default=4.0, gt=0)


class RolloutSettings(BaseSettings):
    """Canary judging (``detectors/rollout.py``): candidate variants against the incumbent."""

    model_config = SettingsConfigDict(
        env_prefix="TRACEWATCH_ROLLOUT_", env_file=".env", extra="ignore"
    )

    enabled: bool = True
    #: chance of one false verdict per (route, candidate), over every metric x cohort
    #: and every look (Bonferroni over the cells of ``max_cohorts`` + 1 x 14 metrics)
    alpha: float = Field(default=0.05, gt=0, lt=1)
    #: practical margins: relative for cost, latency, tokens, loop depth; absolute for
    #: ``error_rate`` (2 points) and scores (``score``, or ``score:<name>``)
    margins: dict[str, float] = Field(default_factory=dict)
    #: a variant first seen this long after its route is a candidate; older ones are
    #: established splits and not judged
    establish_s: float = Field(default=300.0, ge=0)
    #: smallest share of the route's traffic a candidate needs to be judged
    min_share: float = Field(default=0.01, ge=0, lt=1)
    #: events per arm and cell before a cell is judged
    min_samples: int = Field(default=50, ge=2)
    #: a candidate is promoted no sooner than this after it appeared
    promote_after_s: float = Field(default=900.0, ge=0)
    #: a candidate or incumbent unseen this long is forgotten (a rollback alert resolves)
    forget_after_s: float = Field(default=1800.0, gt=0)
    #: per route, the incumbent the operator names, e.g. ``{"refund": "prompt_version=v20"}``
    incumbents: dict[str, str] = Field(default_factory=dict)
    #: an event attribute that splits traffic too (e.g. ``experiment_arm``), judged like
    #: ``prompt_version`` and ``model``: scope ``variant:<route>:<attribute>=<value>``
    attribute: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_.\-]+$")
    max_routes: int = Field(default=1000, ge=1)
    max_cohorts: int = Field(default=8, ge=1)
    max_variants: int = Field(default=16, ge=2)
    max_candidates: int = Field(default=4, ge=1)


class AlertmanagerSettings(BaseSettings):
    """Where alerts are also sent (Prometheus Alertmanager, API v2); empty URL = off."""

    model_config = SettingsConfigDict(
        env_prefix="TRACEWATCH_ALERTMANAGER_",
        env_file=".env",
        extra="ignore",
        hide_input_in_errors=True,  # the URL may carry user:password
    )

    url: str = ""
    #: firing alerts are sent again this often, so Alertmanager never times them out
    resend_interval_s: float = Field(default=60.0, gt=0)
    #: ``endsAt`` of a firing alert is now + this many resend intervals
    ends_at_intervals: float = Field(default=4.0, ge=1)
    timeout_s: float = Field(default=5.0, gt=0)
    backoff_initial_s: float = Field(default=1.0, gt=0)
    backoff_max_s: float = Field(default=60.0, gt=0)
    #: most alerts held for delivery while Alertmanager is down (oldest resolved go first)
    max_pending: int = Field(default=10_000, ge=1)

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        value = value.strip().rstrip("/")
        if value and not value.startswith(("http://", "https://")):
            raise ValueError(
                "TRACEWATCH_ALERTMANAGER_URL must start with http:// or https:// "
                "(e.g. http://127.0.0.1:9093), or be empty to not use Alertmanager"
            )
        try:
            urlsplit(value).port  # noqa: B018 - raises on a port that is not a number
        except ValueError:
            raise ValueError(
                "TRACEWATCH_ALERTMANAGER_URL has a port that is not a number 0-65535 "
                f"({redact_url(value)}); e.g. http://127.0.0.1:9093"
            ) from None
        return value


class PricingSettings(BaseSettings):
    """Where model prices come from when an event has no ``cost_usd`` (tracewatch/pricing.py)."""

    model_config = SettingsConfigDict(
        env_prefix="TRACEWATCH_PRICING_", env_file=".env", extra="ignore"
    )

    #: a YAML price table whose entries win over the shipped one; None = shipped prices only
    file: Path | None = None


class OtlpSettings(BaseSettings):
    """The OTLP/HTTP receiver (``tracewatch otlp``): where it listens and how it names routes."""

    model_config = SettingsConfigDict(
        env_prefix="TRACEWATCH_OTLP_", env_file=".env", extra="ignore"
    )

    host: str = "127.0.0.1"
    #: 4318 is the OTLP/HTTP port exporters use by default
    port: int = Field(default=4318, ge=0, le=65535)
    #: largest request body accepted, after gzip decompression (413 above it)
    max_body_bytes: int = Field(default=4 * 1024 * 1024, ge=1024)
    #: span attributes tried in order for the route, before service.name and the span name
    route_attributes: tuple[str, ...] = ("tracewatch.route", "http.route", "gen_ai.agent.name")
    #: how long a request waits for Kafka to acknowledge its events before answering 503
    flush_timeout_s: float = Field(default=10.0, gt=0)
    #: request bodies (after decompression) read and parsed at once; a request that would
    #: go over waits ``inflight_wait_s``, then gets 429 with Retry-After (exporters retry).
    #: A body costs about 10x its size while parsed and mapped: 16 requests of 2 MB at once
    #: took the receiver from 65 to 406 MB (tests/integration/test_otlp_hostile.py); two
    #: full-size bodies keep it near 150 MB. One request is always admitted.
    max_inflight_bytes: int = Field(default=8 * 1024 * 1024, ge=1024)
    #: how long a request waits for room in ``max_inflight_bytes`` before its 429
    inflight_wait_s: float = Field(default=2.0, ge=0)
    #: more ``Host`` names exporters use to reach the receiver (``name`` or ``name:port``),
    #: beside 127.0.0.1, localhost, [::1] and ``host``. Any other ``Host`` gets 403: a web
    #: page that points a DNS name it controls at 127.0.0.1 (DNS rebinding) could otherwise
    #: post spans. Bound to a wildcard (0.0.0.0) with none set, ``Host`` is not checked
    allowed_hosts: tuple[str, ...] = ()


class Settings:
    """All concerns together; built once at the edge (CLI) and passed down."""

    def __init__(
        self,
        kafka: KafkaSettings | None = None,
        clickhouse: ClickHouseSettings | None = None,
        worker: WorkerSettings | None = None,
        detect: DetectSettings | None = None,
        alertmanager: AlertmanagerSettings | None = None,
        pricing: PricingSettings | None = None,
        otlp: OtlpSettings | None = None,
        query: QuerySettings | None = None,
        rollout: RolloutSettings | None = None,
    ) -> None:
        try:
            self.kafka = kafka or KafkaSettings()
            self.clickhouse = clickhouse or ClickHouseSettings()
            self.worker = worker or WorkerSettings()
            self.detect = detect or DetectSettings()
            self.alertmanager = alertmanager or AlertmanagerSettings()
            self.pricing = pricing or PricingSettings()
            self.otlp = otlp or OtlpSettings()
            self.query = query or QuerySettings()
            self.rollout = rollout or RolloutSettings()
        except ValueError as exc:  # pydantic's ValidationError is a ValueError
            raise ConfigError(f"invalid setting: {exc}") from exc
        if self.worker.app_id == self.kafka.consumer_group:
            raise ConfigError(
                "TRACEWATCH_WORKER_APP_ID and TRACEWATCH_KAFKA_CONSUMER_GROUP must differ: "
                "faust's own consumer group is named after the app id"
            )
        self.home = home_dir()


def _reveal(secret: SecretStr | None) -> str | None:
    return None if secret is None else secret.get_secret_value()
