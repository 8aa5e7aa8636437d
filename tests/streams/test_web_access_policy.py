"""The worker's web guard, decided from headers alone: no server, no faust.

Host (DNS rebinding), Origin (other web pages), token (other users and
processes), content type (a browser's "simple" cross-site POST), and which
paths stay open.
"""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from pydantic import SecretStr

from tracewatch.config import Settings, WorkerSettings
from tracewatch.errors import ServiceUnavailable
from tracewatch.streams.web_access import (
    AccessPolicy,
    allowed_hosts,
    check_content_type,
    check_host,
    check_origin,
    check_token,
    is_open_path,
)
from tracewatch.streams.worker import dashboard_url, worker_headers
from tracewatch.streams.worker_token import (
    TOKEN_FILE,
    authorization_header,
    new_token,
    read_token,
    remove_token_file,
    resolve_token,
    write_token_file,
)

TOKEN = "s3cr3t-token-of-this-worker"
HOSTS = allowed_hosts("127.0.0.1", 6066)


def policy(**worker: object) -> AccessPolicy:
    return AccessPolicy.for_worker(WorkerSettings(**worker), TOKEN, "/home/u/.tracewatch/t")


# -- Host -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "host", ["127.0.0.1:6066", "localhost:6066", "[::1]:6066", "LOCALHOST:6066"]
)
def test_the_loopback_names_with_the_port_are_served(host: str) -> None:
    assert check_host(host, HOSTS) is None


@pytest.mark.parametrize(
    "host",
    [
        None,
        "",
        "evil.example:6066",  # DNS rebinding: a name the attacker controls, pointed at 127.0.0.1
        "evil.example",
        "127.0.0.1:6067",
        "127.0.0.1",  # no port means 80
        "localhost.:6066",
        "127.0.0.1:6066@evil.example",
        "127.0.0.1:6066 ",
        "[::1]",
    ],
)
def test_any_other_host_is_refused_with_403(host: str | None) -> None:
    refusal = check_host(host, HOSTS)
    assert refusal is not None and refusal.status == 403 and refusal.reason == "host"
    assert "127.0.0.1:6066" in refusal.error  # says what would be served


def test_a_configured_web_host_and_extra_names_are_served() -> None:
    hosts = allowed_hosts("10.1.2.3", 7000, ["monitor.internal", "other:8080"])
    assert {"10.1.2.3:7000", "monitor.internal:7000", "other:8080", "127.0.0.1:7000"} <= hosts
    assert check_host("monitor.internal:7000", hosts) is None
    assert check_host("10.1.2.3:7000", hosts) is None


def test_a_wildcard_bind_address_is_not_a_host_name() -> None:
    hosts = allowed_hosts("0.0.0.0", 6066)
    assert "0.0.0.0:6066" not in hosts and "127.0.0.1:6066" in hosts
    assert allowed_hosts("::1", 6066) >= {"[::1]:6066"}


def test_port_80_may_be_left_out_of_host() -> None:
    assert check_host("localhost", allowed_hosts("127.0.0.1", 80)) is None


# -- Origin ---------------------------------------------------------------------------------


@pytest.mark.parametrize("origin", [None, "http://127.0.0.1:6066", "http://localhost:6066"])
def test_no_origin_or_the_workers_own_origin_passes(origin: str | None) -> None:
    assert check_origin(origin, HOSTS) is None


@pytest.mark.parametrize(
    "origin",
    [
        "http://127.0.0.1:8000",  # another local port: same site, other origin
        "http://evil.example",
        "null",  # sandboxed frames, file:// pages
        "",
        "https://127.0.0.1:6066",
        "http://127.0.0.1:6066/",
        "http://user@127.0.0.1:6066",
    ],
)
def test_any_other_origin_is_refused_with_403(origin: str) -> None:
    refusal = check_origin(origin, HOSTS)
    assert refusal is not None and refusal.status == 403 and refusal.reason == "origin"


# -- token ----------------------------------------------------------------------------------


def test_the_right_bearer_token_passes() -> None:
    assert check_token(f"Bearer {TOKEN}", TOKEN, "/t") is None
    assert check_token(f"bearer {TOKEN}", TOKEN, "/t") is None  # the scheme is case-insensitive


@pytest.mark.parametrize(
    "authorization",
    [
        None,
        "",
        "Bearer",
        "Bearer ",
        f"Basic {TOKEN}",
        f"Bearer {TOKEN}x",
        f"Bearer {TOKEN[:-1]}",
        "Bearer wrong",
        f"{TOKEN}",
        "Bearer t\u00f6ken",  # non-ASCII must not crash the comparison
    ],
)
def test_a_missing_or_wrong_token_is_refused_with_401(authorization: str | None) -> None:
    refusal = check_token(authorization, TOKEN, "/home/u/.tracewatch/worker.token")
    assert refusal is not None and refusal.status == 401 and refusal.reason == "token"
    assert "/home/u/.tracewatch/worker.token" in refusal.error  # where to find it
    assert TOKEN not in refusal.error


# -- content type ---------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["GET", "HEAD"])
def test_reads_need_no_content_type(method: str) -> None:
    assert check_content_type(method, None) is None


@pytest.mark.parametrize("value", ["application/json", "application/json; charset=utf-8",
                                   "Application/JSON"])  # fmt: skip
def test_json_bodies_pass(value: str) -> None:
    assert check_content_type("POST", value) is None


@pytest.mark.parametrize(
    "value",
    [
        None,
        "",
        "text/plain",  # the three types a browser sends cross-site without a preflight
        "text/plain; charset=utf-8",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
        "application/jsonx",
        "application/json-seq",
    ],
)
def test_other_bodies_are_refused_with_415(value: str | None) -> None:
    refusal = check_content_type("POST", value)
    assert refusal is not None and refusal.status == 415 and refusal.reason == "content_type"
    assert "application/json" in refusal.error


# -- which paths are open -------------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    ["/health", "/dashboard", "/dashboard/app.js", "/dashboard/app.css",
     "/dashboard/vendor/uPlot.iife.min.js"],
)  # fmt: skip
def test_the_probe_and_the_dashboards_files_are_open(path: str) -> None:
    assert is_open_path(path)


@pytest.mark.parametrize(
    "path",
    ["/status", "/stats", "/alerts", "/breakers", "/query", "/metrics", "/api/routes",
     "/api/series", "/router/", "/table/latest_stats/", "/", "/healthz", "/dashboardx",
     "/unknown", "/health/"],
)  # fmt: skip
def test_every_other_path_needs_the_token(path: str) -> None:
    assert not is_open_path(path)


# -- the whole decision ---------------------------------------------------------------------


def test_a_data_view_with_the_token_passes() -> None:
    headers = {"Host": "127.0.0.1:6066", "Authorization": f"Bearer {TOKEN}"}
    assert policy().judge("GET", "/status", headers) is None


def test_checks_come_in_order_host_origin_token_content_type() -> None:
    p = policy()
    bad = {
        "Host": "evil.example:6066",
        "Origin": "http://evil.example",
        "Content-Type": "text/plain",
    }
    assert (r := p.judge("POST", "/query", bad)) is not None and r.reason == "host"
    bad["Host"] = "127.0.0.1:6066"
    assert (r := p.judge("POST", "/query", bad)) is not None and r.reason == "origin"
    del bad["Origin"]
    assert (r := p.judge("POST", "/query", bad)) is not None and r.reason == "token"
    bad["Authorization"] = f"Bearer {TOKEN}"
    assert (r := p.judge("POST", "/query", bad)) is not None and r.reason == "content_type"
    bad["Content-Type"] = "application/json"
    assert p.judge("POST", "/query", bad) is None


def test_open_paths_still_check_host_and_origin() -> None:
    p = policy()
    assert p.judge("GET", "/dashboard", {"Host": "127.0.0.1:6066"}) is None
    assert p.judge("GET", "/health", {"Host": "localhost:6066"}) is None
    assert (r := p.judge("GET", "/dashboard", {"Host": "evil.example:6066"})) and r.status == 403
    cross = {"Host": "127.0.0.1:6066", "Origin": "http://127.0.0.1:9"}
    assert (r := p.judge("GET", "/health", cross)) is not None and r.status == 403


def test_header_names_are_case_insensitive() -> None:
    headers = {"host": "127.0.0.1:6066", "authorization": f"Bearer {TOKEN}"}
    assert policy().judge("GET", "/status", headers) is None


def test_the_policy_takes_the_configured_host_port_and_extra_names() -> None:
    p = policy(web_host="10.0.0.7", web_port=7001, allowed_hosts=("mon.internal",))
    ok = {"Authorization": f"Bearer {TOKEN}"}
    for host in ("10.0.0.7:7001", "127.0.0.1:7001", "mon.internal:7001"):
        assert p.judge("GET", "/status", {**ok, "Host": host}) is None
    assert p.judge("GET", "/status", {**ok, "Host": "127.0.0.1:6066"}) is not None


def test_the_refusal_body_is_json_fit() -> None:
    refusal = check_token(None, TOKEN, "/x/worker.token")
    assert refusal is not None
    assert refusal.body() == {"error": refusal.error, "reason": "token"}


# -- the token file -------------------------------------------------------------------------


def test_new_tokens_are_long_and_random() -> None:
    tokens = {new_token() for _ in range(50)}
    assert len(tokens) == 50 and all(len(t) >= 40 for t in tokens)


def test_the_token_file_is_private_from_its_first_byte(tmp_path: Path) -> None:
    path = write_token_file(tmp_path, "abc")
    assert path == tmp_path / TOKEN_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert read_token(tmp_path) == "abc"
    assert not [p for p in tmp_path.iterdir() if p != path]  # no temporary left behind


def test_the_token_file_replaces_an_old_one_and_a_symlink(tmp_path: Path) -> None:
    target = tmp_path / "elsewhere"
    target.write_text("keep")
    (tmp_path / TOKEN_FILE).symlink_to(target)
    write_token_file(tmp_path, "new")
    assert target.read_text() == "keep"  # the link was replaced, not followed
    assert not (tmp_path / TOKEN_FILE).is_symlink()
    write_token_file(tmp_path, "newer")
    assert read_token(tmp_path) == "newer"


def test_a_missing_token_file_reads_as_none(tmp_path: Path) -> None:
    assert read_token(tmp_path) is None
    write_token_file(tmp_path, "abc")
    remove_token_file(tmp_path)
    assert read_token(tmp_path) is None
    remove_token_file(tmp_path)  # twice is fine


def test_the_token_setting_never_prints() -> None:
    settings = WorkerSettings(token="fixed-token-for-prometheus")
    assert "fixed-token-for-prometheus" not in repr(settings)
    assert settings.token is not None
    assert settings.token.get_secret_value() == "fixed-token-for-prometheus"


@pytest.mark.parametrize("value", ["short", "x" * 15, "has space " * 3, "t\u00f6ken" * 8])
def test_a_weak_or_odd_token_setting_is_refused_without_echoing_it(value: str) -> None:
    with pytest.raises(ValueError, match="TRACEWATCH_WORKER_TOKEN") as caught:
        WorkerSettings(token=value)
    assert value not in str(caught.value)


def test_the_cli_sends_the_setting_before_the_file(tmp_path: Path) -> None:
    write_token_file(tmp_path, "from-the-file")
    assert resolve_token(tmp_path, None) == "from-the-file"
    assert resolve_token(tmp_path, SecretStr("from-the-setting-0123")) == "from-the-setting-0123"
    assert authorization_header("abc") == {"Authorization": "Bearer abc"}
    assert authorization_header(None) == {}


def test_the_dashboard_link_carries_the_token_quoted_in_the_fragment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("TRACEWATCH_HOME", str(tmp_path))
    monkeypatch.setenv("TRACEWATCH_WORKER_TOKEN", "a+b/c#d&e=f%g-0123456")
    settings = Settings()
    url = dashboard_url(settings, {"url": "http://127.0.0.1:6066"})
    assert url == "http://127.0.0.1:6066/dashboard#token=a%2Bb%2Fc%23d%26e%3Df%25g-0123456"
    assert worker_headers(settings) == {"Authorization": "Bearer a+b/c#d&e=f%g-0123456"}


def test_an_unreadable_token_file_says_whose_worker_it_is(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("TRACEWATCH_HOME", str(tmp_path))
    write_token_file(tmp_path, "someone-elses-token")

    def refuse(*args: object, **kwargs: object) -> str:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(Path, "read_text", refuse)
    with pytest.raises(ServiceUnavailable, match="started by another user"):
        worker_headers(Settings())


@pytest.mark.parametrize("web_host", ["127.0.0.1", "0.0.0.0", "::", "::1", "localhost", "10.0.0.7"])
def test_the_address_in_the_run_file_is_one_the_guard_serves(web_host: str) -> None:
    """The CLI connects to the run file's URL; its Host header must pass the guard,
    also when the worker binds a wildcard address."""
    from urllib.parse import urlsplit

    from tracewatch.streams.worker import _client_host

    authority = urlsplit(f"http://{_client_host(web_host)}:7000").netloc
    assert check_host(authority, allowed_hosts(web_host, 7000)) is None
