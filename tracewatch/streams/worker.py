"""Start the streaming worker: topics, ClickHouse, the faust app, a run file and a token.

The run file (``$TRACEWATCH_HOME/worker.json``) says where this worker's web
views listen, so ``tracewatch query`` can reach an embedded chDB the worker
holds open (chDB allows one engine per process). The token file
(``$TRACEWATCH_HOME/worker.token``, mode 0600) holds the credential those views
ask for (streams/web_access.py); ``worker_headers`` is how a CLI command sends it.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import os
from pathlib import Path
from typing import Any
from urllib.parse import quote

from tracewatch.config import Settings
from tracewatch.errors import ServiceUnavailable
from tracewatch.sinks.clickhouse import ClickHouseSink
from tracewatch.sinks.clickhouse_reader import ClickHouseReader
from tracewatch.streams.topics import ensure_topics
from tracewatch.streams.worker_token import (
    authorization_header,
    new_token,
    remove_token_file,
    resolve_token,
    token_path,
    write_token_file,
)

__all__ = ["dashboard_url", "read_run_file", "run_worker", "worker_headers", "worker_token"]

log = logging.getLogger("tracewatch.worker")


def run_worker(settings: Settings, loglevel: str = "info") -> None:
    """Run until SIGINT/SIGTERM; drains, writes and commits before exiting."""
    import faust  # faust is slow to import; only the worker pays for it

    from tracewatch.streams.app import build_app

    ensure_topics(settings.kafka)
    configured = settings.worker.token
    token = configured.get_secret_value() if configured is not None else new_token()
    sink = ClickHouseSink(settings.clickhouse).connect()  # creates the tables: first
    reader = ClickHouseReader(settings.clickhouse, settings.query).connect()
    app, service = build_app(settings, sink, reader, token=token)
    # after the store opened (a second worker on this home stops there, and must not
    # replace the running one's token) and before the web server starts
    token_file = write_token_file(settings.home, token)
    run_file = settings.home / "worker.json"
    _write_run_file(run_file, settings, token_file)
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
        remove_token_file(settings.home)
        reader.close()
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


def worker_token(settings: Settings) -> str | None:
    """The token a CLI command sends to the worker's views: ``TRACEWATCH_WORKER_TOKEN``
    when set, else the token file the worker wrote (None when there is none)."""
    try:
        return resolve_token(settings.home, settings.worker.token)
    except PermissionError:
        raise ServiceUnavailable(
            f"cannot read the worker's token {token_path(settings.home)}: the worker was "
            "started by another user; run this command as that user, or set "
            "TRACEWATCH_WORKER_TOKEN to the token the worker was started with"
        ) from None


def worker_headers(settings: Settings) -> dict[str, str]:
    """``Authorization: Bearer <token>`` for a request to the worker's views."""
    return authorization_header(worker_token(settings))


def dashboard_url(settings: Settings, info: dict[str, Any]) -> str:
    """The dashboard's address with the token in the fragment (``#token=…``): a browser
    never sends a fragment to a server, and the page moves it to its session storage."""
    token = worker_token(settings)
    return f"{info['url']}/dashboard" + (f"#token={quote(token, safe='')}" if token else "")


def _write_run_file(path: Path, settings: Settings, token_file: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    w = settings.worker
    info = {
        "pid": os.getpid(),
        "url": f"http://{_client_host(w.web_host)}:{w.web_port}",
        "token_file": str(token_file),
    }
    path.write_text(json.dumps(info))


def _client_host(web_host: str) -> str:
    """Where a client on this machine connects: a wildcard bind address (0.0.0.0, ::)
    is no host name, and the web guard refuses it as a ``Host``; loopback is served."""
    try:
        address = ipaddress.ip_address(web_host.strip("[]"))
    except ValueError:
        return web_host
    if address.is_unspecified:
        return "127.0.0.1" if address.version == 4 else "[::1]"
    return f"[{address}]" if address.version == 6 else web_host
