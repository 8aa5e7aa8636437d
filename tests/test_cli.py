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
                ["query", "top"], ["query", "series"], ["query", "sql"], ["replay"], ["alerts"],
                ["breakers"], ["rollouts"]]
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


def test_an_unknown_demo_incident_lists_the_kinds() -> None:
    result = run("demo", "--incident", "meteor", "--bootstrap-servers", "127.0.0.1:1")
    assert result.returncode == 2
    assert "'meteor' is not one of cost, latency, errors, quality" in result.stderr


def test_a_broken_rules_file_stops_replay_with_its_line(tmp_path: Path) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text("rules:\n  - name: X\n    metric: cost_usd\n    stat: p96\n    above: 1\n")
    events = tmp_path / "events.jsonl"
    events.write_text("")
    result = run("replay", str(events), "--alerts-out", str(tmp_path / "a"), "--rules", str(rules))
    assert result.returncode == 2
    assert f"{rules}:4:5: rules[0].stat: 'p96' is not one of" in result.stderr


def test_alertmanager_url_must_be_http() -> None:
    result = run("run", "--alertmanager-url", "127.0.0.1:9093", "--bootstrap-servers", "x:1")
    assert result.returncode == 2 and "TRACEWATCH_ALERTMANAGER_URL" in result.stderr


@pytest.mark.parametrize("since", ["inf", "nan", "1e300", "99999999999d"])
def test_a_time_that_is_not_a_time_is_a_usage_error_not_a_traceback(since: str) -> None:
    result = run("query", "top", "--since", since)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr and "cannot read time" in result.stderr
