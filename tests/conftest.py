"""Shared fixtures: a clean environment for every test, so settings come only from the test."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest


@pytest.fixture(autouse=True)
def _isolated_env(
    monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[None]:
    keep = {"TRACEWATCH_KAFKA_BOOTSTRAP_SERVERS", "TRACEWATCH_KAFKA_PORT"}
    for name in list(os.environ):
        if name.startswith("TRACEWATCH_") and name not in keep:
            monkeypatch.delenv(name)
    monkeypatch.setenv("TRACEWATCH_HOME", str(tmp_path_factory.mktemp("home")))
    yield
