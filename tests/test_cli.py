"""CLI behaviour that needs no services: help, version, and clear errors."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

TRACEWATCH = str(Path(sys.executable).with_name("tracewatch"))


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([TRACEWATCH, *args], capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize(
    "command", [[], ["run"], ["demo"], ["topics"], ["schema"], ["status"], ["query"],
                ["query", "top"], ["query", "series"], ["query", "sql"], ["replay"]]
)  # fmt: skip
def test_every_command_has_help(command: list[str]) -> None:
    result = run(*command, "--help")
    assert result.returncode == 0 and "Usage" in result.stdout


def test_unknown_statistic_is_a_usage_error_with_the_choices() -> None:
    result = run("query", "top", "--by", "nope")
    assert result.returncode == 2
    assert "unknown statistic 'nope'" in result.stderr and "cost_p95" in result.stderr


def test_bad_setting_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRACEWATCH_CLICKHOUSE_DSN", "mysql://nope")
    result = run("query", "top")
    assert result.returncode == 2 and "TRACEWATCH_CLICKHOUSE_DSN" in result.stderr


def test_unreachable_broker_says_how_to_start_one() -> None:
    result = run("topics", "--bootstrap-servers", "127.0.0.1:1", "--timeout", "2")
    assert result.returncode == 3
    assert "infra/kafka/start.sh" in result.stderr


def test_schema_prints_the_ddl() -> None:
    result = run("schema")
    assert result.returncode == 0
    assert "CREATE TABLE IF NOT EXISTS tracewatch.events" in result.stdout
    assert "non_replicated_deduplication_window" in result.stdout


def test_version() -> None:
    assert run("--version").stdout.startswith("tracewatch ")
