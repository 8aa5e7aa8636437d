"""``tracewatch otlp``: help, and clear refusals before anything is sent."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

TRACEWATCH = str(Path(sys.executable).with_name("tracewatch"))


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([TRACEWATCH, *args], capture_output=True, text=True, timeout=60)


def test_help_names_the_flags() -> None:
    result = run("otlp", "--help")
    assert result.returncode == 0
    for flag in ("--host", "--port", "--bootstrap-servers"):
        assert flag in result.stdout


def test_a_port_in_use_is_a_usage_error_that_says_what_to_do() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run("otlp", "--port", str(port), "--bootstrap-servers", "127.0.0.1:1")
    assert result.returncode == 2
    assert f"cannot listen on 127.0.0.1:{port}" in result.stderr and "--port" in result.stderr


def test_an_impossible_port_names_the_setting() -> None:
    result = run("otlp", "--port", "70000")
    assert result.returncode == 2 and "port" in result.stderr
