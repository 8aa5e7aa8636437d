"""Settings: environment names, secrets that never print, clear refusals."""

from __future__ import annotations

from pathlib import Path

import pytest

from tracewatch.config import ClickHouseSettings, KafkaSettings, Settings, WorkerSettings
from tracewatch.errors import ConfigError


def test_environment_sets_each_concern(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRACEWATCH_KAFKA_BOOTSTRAP_SERVERS", "k1:9092,k2:9092")
    monkeypatch.setenv("TRACEWATCH_WORKER_ALLOWED_LATENESS_S", "15")
    monkeypatch.setenv("TRACEWATCH_CLICKHOUSE_DSN", "http://ch:8123")
    s = Settings()
    assert s.kafka.faust_broker_url() == "kafka://k1:9092;kafka://k2:9092"
    assert s.worker.allowed_lateness_s == 15.0
    assert not s.clickhouse.embedded


def test_default_clickhouse_is_embedded_under_home(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("TRACEWATCH_HOME", str(tmp_path))
    ch = ClickHouseSettings()
    assert ch.embedded and ch.resolved_dsn() == f"chdb://{tmp_path / 'clickhouse'}"


def test_secrets_pass_to_the_client_but_never_print() -> None:
    k = KafkaSettings(security_protocol="SASL_SSL", sasl_mechanism="PLAIN",
                      sasl_username="app", sasl_password="hunter2")  # type: ignore[arg-type]  # fmt: skip
    assert k.client_config()["sasl.password"] == "hunter2"
    assert "hunter2" not in repr(k) and "hunter2" not in str(k.model_dump())


def test_bad_values_are_refused() -> None:
    with pytest.raises(ValueError, match="chdb://, http:// or https://"):
        ClickHouseSettings(dsn="postgres://x")
    with pytest.raises(ValueError):
        WorkerSettings(allowed_lateness_s=-1)
    with pytest.raises(ConfigError, match="must differ"):
        Settings(kafka=KafkaSettings(consumer_group="x"), worker=WorkerSettings(app_id="x"))
