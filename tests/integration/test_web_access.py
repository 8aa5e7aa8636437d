"""Only the user who started the worker can use its HTTP views, and no web page can.

One real worker (``tracewatch run``) serves every test here. Requests are sent
as an outsider would: without the token, with a wrong one, under a host name
that is not the worker's (DNS rebinding), from another origin, with the body
types a browser sends cross-site without asking. Then the attack of issue 12 in
headless Chromium: a page served from another local port posts SQL to
``/query`` (a no-cors ``fetch``, ``sendBeacon`` and a ``text/plain`` form) that
would write files through ``INTO OUTFILE``. The files must not appear, and the
worker's own count of refused requests (``/metrics``) must show it turned them
away at the door (not that some later check in ``/query`` happened to refuse the SQL).
"""

from __future__ import annotations

import html
import http.client
import http.server
import json
import os
import re
import shutil
import socket
import stat
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tracewatch.streams.worker_token import read_token

WorkerProcess = Any  # tests/integration/conftest.py's, reached through its fixtures

pytestmark = pytest.mark.integration

TRACEWATCH = str(Path(sys.executable).with_name("tracewatch"))
DATA_VIEWS = ["/status", "/stats", "/alerts", "/breakers", "/metrics", "/api/routes",
              "/api/series?route=x", "/api/alerts", "/api/breakers"]  # fmt: skip
OPEN_VIEWS = ["/health", "/dashboard", "/dashboard/app.js", "/dashboard/vendor/uPlot.min.css"]
QUERY = json.dumps({"sql": "SELECT 1 AS one"}).encode()


def unused_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def worker_token(home: Path) -> str | None:
    """Read as the CLI reads it (the conftest's ``WorkerProcess.token`` does the same)."""
    return read_token(home)


@pytest.fixture(scope="module")
def worker(
    kafka_bootstrap: str,
    tmp_path_factory: pytest.TempPathFactory,
    make_module_worker: Any,
    new_kafka_settings: Any,
) -> Iterator[WorkerProcess]:
    kafka = new_kafka_settings(kafka_bootstrap, 2)
    process = make_module_worker(kafka, tmp_path_factory.mktemp("web-access"), unused_port())
    process.start()
    process.wait_for(lambda s: s.get("ingest_alive") is True, timeout=120)
    yield process


def call(
    worker: WorkerProcess,
    method: str,
    path: str,
    headers: dict[str, str] | None = None,
    body: bytes | None = None,
) -> tuple[int, bytes, dict[str, str]]:
    """One raw request, every header as given (``Host`` too, which urllib would set)."""
    port = int(worker.url.rsplit(":", 1)[1])
    given = {"Host": f"127.0.0.1:{port}", **(headers or {})}
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
        for name, value in given.items():
            conn.putheader(name, value)
        conn.putheader("Content-Length", str(len(body or b"")))
        conn.endheaders(body)
        response = conn.getresponse()
        return response.status, response.read(), dict(response.getheaders())
    finally:
        conn.close()


def bearer(worker: WorkerProcess) -> dict[str, str]:
    token = worker_token(worker.home)
    assert token, f"no token file in {worker.home}"
    return {"Authorization": f"Bearer {token}"}


def json_post(worker: WorkerProcess, extra: dict[str, str]) -> tuple[int, bytes, dict[str, str]]:
    return call(worker, "POST", "/query", {"Content-Type": "application/json", **extra}, QUERY)


def error_of(body: bytes) -> str:
    return str(json.loads(body)["error"])


@pytest.mark.parametrize("path", DATA_VIEWS)
def test_data_views_refuse_a_request_without_the_token(worker: WorkerProcess, path: str) -> None:
    status, body, headers = call(worker, "GET", path)
    assert status == 401, body[:300]
    assert str(worker.home / "worker.token") in error_of(body)  # says where the token is
    assert headers.get("WWW-Authenticate", "").startswith("Bearer")


def test_query_refuses_a_request_without_the_token(worker: WorkerProcess) -> None:
    status, body, _ = json_post(worker, {})
    assert status == 401, body[:300]


@pytest.mark.parametrize("path", [*DATA_VIEWS, "/query"])
def test_a_wrong_token_is_refused(worker: WorkerProcess, path: str) -> None:
    wrong = {"Authorization": "Bearer " + "x" * 43}
    if path == "/query":
        status, body, _ = json_post(worker, wrong)
    else:
        status, body, _ = call(worker, "GET", path, wrong)
    assert status == 401, body[:300]


@pytest.mark.parametrize("path", DATA_VIEWS)
def test_with_the_token_every_data_view_answers(worker: WorkerProcess, path: str) -> None:
    status, body, _ = call(worker, "GET", path, bearer(worker))
    assert status == 200, body[:300]


def test_with_the_token_query_runs(worker: WorkerProcess) -> None:
    status, body, _ = json_post(worker, bearer(worker))
    assert status == 200, body[:300]
    assert json.loads(body)["rows"] == [[1]]


@pytest.mark.parametrize("path", OPEN_VIEWS)
def test_the_probe_and_the_dashboards_files_need_no_token(worker: WorkerProcess, path: str) -> None:
    status, body, _ = call(worker, "GET", path)
    assert status == 200, body[:300]


@pytest.mark.parametrize(
    ("path", "with_token"), [("/dashboard", False), ("/status", True), ("/status", False)]
)
def test_every_answer_forbids_foreign_scripts_and_framing(
    worker: WorkerProcess, path: str, with_token: bool
) -> None:
    """The dashboard keeps its token in sessionStorage: only the worker's own scripts may
    run on its origin, and no other page may frame it (answers and refusals alike)."""
    _, _, headers = call(worker, "GET", path, bearer(worker) if with_token else None)
    policy = headers.get("Content-Security-Policy", "")
    assert "script-src 'self'" in policy and "frame-ancestors 'none'" in policy, headers
    assert "unsafe-eval" not in policy and "script-src 'self' 'unsafe-inline'" not in policy
    assert headers.get("X-Content-Type-Options") == "nosniff"
    assert headers.get("Referrer-Policy") == "no-referrer"


@pytest.mark.parametrize("host", ["evil.example", "evil.example:{port}", "127.0.0.1:1",
                                  "127.0.0.1.nip.io:{port}", ""])  # fmt: skip
@pytest.mark.parametrize("path", ["/status", "/health", "/dashboard"])
def test_a_foreign_host_is_refused_even_with_the_token(
    worker: WorkerProcess, host: str, path: str
) -> None:
    port = worker.url.rsplit(":", 1)[1]
    status, body, _ = call(worker, "GET", path, {"Host": host.format(port=port), **bearer(worker)})
    assert status == 403, body[:300]
    assert "Host" in error_of(body)


def test_a_post_under_a_foreign_host_is_refused(worker: WorkerProcess) -> None:
    status, body, _ = json_post(worker, {"Host": "rebound.example:80", **bearer(worker)})
    assert status == 403, body[:300]


@pytest.mark.parametrize("origin", ["http://127.0.0.1:{other}", "http://localhost:{other}",
                                    "http://evil.example", "null"])  # fmt: skip
def test_a_foreign_origin_is_refused_even_with_the_token(
    worker: WorkerProcess, origin: str
) -> None:
    headers = {"Origin": origin.format(other=unused_port()), **bearer(worker)}
    status, body, _ = json_post(worker, headers)
    assert status == 403, body[:300]
    assert "Origin" in error_of(body)
    status, body, _ = call(worker, "GET", "/status", headers)
    assert status == 403, body[:300]


def test_the_workers_own_origin_is_accepted(worker: WorkerProcess) -> None:
    status, body, _ = json_post(worker, {"Origin": worker.url, **bearer(worker)})
    assert status == 200, body[:300]


@pytest.mark.parametrize(
    "content_type",
    ["text/plain", "text/plain;charset=UTF-8", "application/x-www-form-urlencoded",
     "multipart/form-data; boundary=xyz", None],
)  # fmt: skip
def test_a_simple_post_is_refused_with_415(worker: WorkerProcess, content_type: str | None) -> None:
    headers = bearer(worker)
    if content_type is not None:
        headers["Content-Type"] = content_type
    status, body, _ = call(worker, "POST", "/query", headers, QUERY)
    assert status == 415, body[:300]
    assert "application/json" in error_of(body)


def test_the_token_file_is_readable_by_its_owner_only(worker: WorkerProcess) -> None:
    path = worker.home / "worker.token"
    mode = path.stat()
    assert stat.S_IMODE(mode.st_mode) == 0o600, oct(mode.st_mode)
    assert mode.st_uid == os.getuid()
    assert len(path.read_text().strip()) >= 40


def cli(worker: WorkerProcess, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([TRACEWATCH, *args], capture_output=True, text=True, timeout=120,
                          env=worker.env)  # fmt: skip


def test_the_cli_reads_the_token_and_still_works(worker: WorkerProcess) -> None:
    done = cli(worker, "query", "sql", "SELECT 41 + 1 AS answer", "--json")
    assert done.returncode == 0, done.stderr
    assert '"answer": 42' in done.stdout
    done = cli(worker, "status")
    assert done.returncode == 0, done.stderr
    assert '"received"' in done.stdout


def test_dashboard_url_carries_the_token_in_the_fragment(worker: WorkerProcess) -> None:
    done = cli(worker, "dashboard-url")
    assert done.returncode == 0, done.stderr
    token = worker_token(worker.home)
    assert done.stdout.strip() == f"{worker.url}/dashboard#token={token}"


# -- in a browser ---------------------------------------------------------------------------


def chromium(*args: str) -> str:
    binary = shutil.which("chromium")
    if binary is None:
        pytest.fail("Chromium is missing: `apt-get install -y chromium` (scripts/setup.sh does it)")
    command = [binary, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
               "--virtual-time-budget=15000", "--dump-dom", *args]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def refused(worker: WorkerProcess) -> dict[str, float]:
    """The worker's own count of requests it turned away, by reason."""
    with urllib.request.urlopen(worker.request("/metrics"), timeout=10) as response:
        text = response.read().decode()
    return {
        s.labels["reason"]: s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == "tracewatch_web_requests_refused_total"
    }


ATTACK = """<!doctype html><html><body><div id="out">starting</div>
<iframe name="sink" style="display:none"></iframe>
<form id="form" method="POST" action="{target}" enctype="text/plain" target="sink">
<input type="hidden" name="{form_name}" value="&quot;}}"></form>
<script>
var target = "{target}", done = [];
function mark(what) {{
  done.push(what); document.getElementById("out").textContent = done.join(",");
}}
fetch(target, {{method: "POST", mode: "no-cors", body: {fetch_body},
               headers: {{"Content-Type": "text/plain"}}}})
  .then(function () {{ mark("fetch"); }}, function () {{ mark("fetch-error"); }});
mark(navigator.sendBeacon(target, {beacon_body}) ? "beacon" : "beacon-refused");
document.getElementById("form").submit();
mark("form");
</script></body></html>"""


def sql_writing(path: Path) -> str:
    # no FORMAT: clickhouse-connect appends its own
    return f"SELECT 'written by a web page' INTO OUTFILE '{path}' TRUNCATE"


@pytest.fixture
def attacker_site(tmp_path: Path) -> Iterator[tuple[str, dict[str, str]]]:
    """A web server on another local port: ``(its origin, {path: page})`` to fill in."""
    pages: dict[str, str] = {}

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            page = pages.get(self.path)
            self.send_response(200 if page is not None else 404)
            self.send_header("Content-Type", "text/html")
            self.end_headers()
            self.wfile.write((page or "").encode())

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", pages
    finally:
        server.shutdown()
        server.server_close()


def test_a_page_from_another_local_port_cannot_run_sql_in_the_worker(
    worker: WorkerProcess, attacker_site: tuple[str, dict[str, str]], tmp_path: Path
) -> None:
    origin, pages = attacker_site
    loot = tmp_path / "loot"
    loot.mkdir(mode=0o777)
    loot.chmod(0o777)
    files = {
        name: loot / f"{name}-{uuid.uuid4().hex[:8]}.tsv" for name in ("fetch", "beacon", "form")
    }
    form_sql = json.dumps(sql_writing(files["form"]))
    pages["/attack.html"] = ATTACK.format(
        target=f"{worker.url}/query",
        fetch_body=json.dumps(json.dumps({"sql": sql_writing(files["fetch"])})),
        beacon_body=json.dumps(json.dumps({"sql": sql_writing(files["beacon"])})),
        # a text/plain form sends `name=value`: this name makes that JSON
        form_name=html.escape('{"sql": ' + form_sql + ', "pad": "'),
    )
    before = refused(worker).get("origin", 0.0)

    dom = chromium(f"{origin}/attack.html")

    ran = re.search(r'<div id="out">([^<]*)</div>', dom)
    assert ran is not None and set(ran.group(1).split(",")) == {"fetch", "beacon", "form"}, dom
    time.sleep(1.0)  # the worker answers before it could write; give a write time to land
    written = {name: path.read_text() for name, path in files.items() if path.exists()}
    assert written == {}, f"a web page on {origin} wrote files through the worker: {written}"
    after = refused(worker).get("origin", 0.0)
    assert after - before >= 3, (
        f"the worker did not refuse the page's requests at the door: {after}"
    )


def render_status(dom: str) -> dict[str, str]:
    status = re.search(r'<div id="render-status"([^>]*)>', dom)
    assert status is not None, dom[-2000:]
    return dict(re.findall(r'data-([a-z]+)="([^"]*)"', status.group(1)))


def test_the_dashboard_without_its_token_says_how_to_open_it(worker: WorkerProcess) -> None:
    dom = chromium("--window-size=1200,900", f"{worker.url}/dashboard")
    assert render_status(dom)["state"] == "error"
    assert "tracewatch dashboard-url" in dom


def test_the_dashboard_with_a_wrong_token_says_so(worker: WorkerProcess) -> None:
    dom = chromium("--window-size=1200,900", f"{worker.url}/dashboard#token=not-the-token")
    assert render_status(dom)["state"] == "error"
    assert "tracewatch dashboard-url" in dom


def test_the_dashboard_with_its_token_loads_and_forgets_the_fragment(worker: WorkerProcess) -> None:
    token = worker_token(worker.home)
    dom = chromium("--window-size=1200,900", f"{worker.url}/dashboard#token={token}")
    assert render_status(dom)["state"] in ("ready", "empty"), render_status(dom)
    assert str(token) not in dom
