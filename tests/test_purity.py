"""Pure logic never imports faust, Kafka or ClickHouse (design.md, "Layout")."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "tracewatch"
PURE = [*sorted((PACKAGE / "detectors").glob("*.py")), *sorted((PACKAGE / "schemas").glob("*.py")),
        PACKAGE / "pipeline.py", PACKAGE / "stage.py",
        PACKAGE / "sinks" / "query_guard.py"]  # fmt: skip
FORBIDDEN = ("faust", "mode", "aiokafka", "confluent_kafka", "clickhouse_connect", "chdb")


def imported_roots(path: Path) -> set[str]:
    roots: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            roots.add(node.module.split(".")[0])
    return roots


@pytest.mark.parametrize("path", PURE, ids=lambda p: p.name)
def test_pure_module_imports_no_io_library(path: Path) -> None:
    assert not imported_roots(path) & set(FORBIDDEN)


def test_the_check_sees_imports() -> None:
    assert "confluent_kafka" in imported_roots(PACKAGE / "sdk" / "producer.py")
