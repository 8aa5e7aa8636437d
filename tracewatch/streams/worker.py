"""Start the streaming worker: topics, ClickHouse, the faust app, and a run file.

The run file (``$TRACEWATCH_HOME/worker.json``) says where this worker's web
views listen, so ``tracewatch query`` can reach an embedded chDB the worker
holds open (chDB allows one engine per process).
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

from tracewatch.config import Settings
from tracewatch.sinks.clickhouse import ClickHouseSink
from tracewatch.streams.topics import ensure_topics

__all__ = ["read_run_file", "run_worker"]

log = logging.getLogger("tracewatch.worker")


def run_worker(settings: Settings, loglevel: str = "info") -> None:
    """Run until SIGINT/SIGTERM; drains, writes and commits before exiting."""
    import faust  # faust is slow to import; only the worker pays for it

    from tracewatch.streams.app import build_app

    ensure_topics(settings.kafka)
    sink = ClickHouseSink(settings.clickhouse).connect()
    app, service = build_app(settings, sink)
    run_file = settings.home / "worker.json"
    _write_run_file(run_file, settings)
    try:
        worker = faust.Worker(
            app,
            service,
            loglevel=loglevel,
            redirect_stdouts=False,
        )
        worker.execute_from_commandline()
    finally:
        run_file.unlink(missing_ok=True)
        sink.close()


def read_run_file(home: Path) -> dict[str, Any] | None:
    """The running worker's address, or None if no live worker owns this home."""
    path = home / "worker.json"
    try:
        info: dict[str, Any] = json.loads(path.read_text())
        os.kill(int(info["pid"]), 0)
    except (OSError, ValueError, KeyError):
        return None
    return info


def _write_run_file(path: Path, settings: Settings) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    w = settings.worker
    info = {"pid": os.getpid(), "url": f"http://{w.web_host}:{w.web_port}"}
    path.write_text(json.dumps(info))
