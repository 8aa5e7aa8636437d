"""Who may use the worker's HTTP views: one guard in front of all of them.

The worker listens on 127.0.0.1, but that keeps out only other machines. Every
local user and process can connect, and so can every web page the user opens:
a browser sends a cross-origin POST with a "simple" content type (``text/plain``,
a form, ``sendBeacon``) without asking first, and a DNS name an attacker controls
can be pointed at 127.0.0.1 (DNS rebinding), which makes the page same-origin
with the worker. Each check below stops one of these; all run on every request,
in this order, before any view sees it:

1. ``Host`` must name this worker (127.0.0.1, localhost, [::1], the configured
   ``web_host`` or ``allowed_hosts``, with the port): 403. Stops DNS rebinding.
2. An ``Origin``, when a browser sends one, must be the worker's own: 403. Stops
   other web pages, including ones served from another local port.
3. The token (``Authorization: Bearer …``, see ``worker_token``) on every path
   but the open ones: 401. Stops other users and processes; a browser cannot add
   the header to a cross-site request without a CORS preflight, which fails.
4. A request body must be ``application/json``: 415. The three types a browser
   may send cross-site without a preflight are refused even with the token.

Open paths: ``/health`` (probes) and the dashboard's own files (``/dashboard``,
``/dashboard/…``: HTML, JS, CSS, no data). Everything else needs the token:
data views, ``/query``, ``/metrics``, faust's own pages, unknown paths.

The decisions are pure functions of the request line and headers (unit-tested
without a server); ``WebAccess`` applies them as an aiohttp middleware, counts
refusals by reason (``tracewatch_web_requests_refused_total``) and answers
with JSON that says how to get in.
"""

from __future__ import annotations

import hmac
import ipaddress
import logging
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector

from tracewatch.config import Settings, WorkerSettings
from tracewatch.streams.worker_token import new_token, token_path

__all__ = [
    "SECURITY_HEADERS",
    "AccessPolicy",
    "Refusal",
    "WebAccess",
    "allowed_hosts",
    "check_content_type",
    "check_host",
    "check_origin",
    "check_token",
    "is_open_path",
    "worker_access",
]

log = logging.getLogger("tracewatch.web")

#: names under which a browser or a client on this machine reaches a loopback listener
LOOPBACK_NAMES = ("127.0.0.1", "localhost", "[::1]")
#: served without the token: the probe, and the dashboard's static files (no data in them)
OPEN_PATHS = frozenset({"/health", "/dashboard"})
OPEN_PREFIXES = ("/dashboard/",)
#: methods that carry no body a browser could abuse
READ_METHODS = frozenset({"GET", "HEAD"})
#: sent with every answer. The dashboard keeps its token in ``sessionStorage``, where
#: any script running on the worker's origin could read it: the policy lets only the
#: worker's own files run (no inline script, no other origin, no eval), no page may
#: frame the views (clickjacking), and a link out carries no URL (the token's fragment
#: never travels in a referrer anyway, this keeps paths and queries in too).
SECURITY_HEADERS: Mapping[str, str] = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
        "img-src 'self' data:; connect-src 'self'; object-src 'none'; base-uri 'none'; "
        "form-action 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
}


@dataclass(frozen=True)
class Refusal:
    """Why a request is turned away: HTTP status, a short reason (a metric label) and
    a message that says how to get in."""

    status: int
    reason: str
    error: str

    def body(self) -> dict[str, str]:
        return {"error": self.error, "reason": self.reason}


def _authority(host: str, port: int) -> str:
    """``host:port`` as it appears in a ``Host`` header (IPv6 literals in brackets)."""
    host = host.strip().lower()
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"{host}:{port}"


def _is_wildcard(host: str) -> bool:
    try:
        return ipaddress.ip_address(host.strip("[]")).is_unspecified
    except ValueError:
        return host == ""


def allowed_hosts(web_host: str, port: int, extra: Iterable[str] = ()) -> frozenset[str]:
    """Every ``host:port`` this worker answers to (lowercase).

    The loopback names, the bind address unless it is a wildcard (0.0.0.0 is not a
    name anyone connects to), and ``extra`` names (``name`` gets ``port``,
    ``name:port`` is kept as it is).
    """
    hosts = {_authority(name, port) for name in LOOPBACK_NAMES}
    if not _is_wildcard(web_host):
        hosts.add(_authority(web_host, port))
    for name in extra:
        name = name.strip().lower()
        head, sep, tail = name.rpartition(":")
        has_port = bool(sep) and tail.isdigit() and (":" not in head or head.endswith("]"))
        hosts.add(name if has_port else _authority(name, port))
    return frozenset(hosts)


def _normalise_host(value: str) -> str:
    """A ``Host`` value with its port made explicit (none means 80), lowercase."""
    value = value.lower()
    head, sep, tail = value.rpartition(":")
    if sep and tail.isdigit() and (":" not in head or head.endswith("]")):
        return value
    return f"{value}:80"


def check_host(host: str | None, allowed: frozenset[str]) -> Refusal | None:
    """403 unless ``Host`` is one of ``allowed``: a page on a rebound DNS name gets
    its own name here, never one of ours."""
    if host and host == host.strip() and _normalise_host(host) in allowed:
        return None
    served = ", ".join(sorted(allowed))
    return Refusal(
        403,
        "host",
        f"Host {host!r} is not an address this worker serves ({served}): connect to one of "
        "those, or add the name you use to TRACEWATCH_WORKER_ALLOWED_HOSTS",
    )


def check_origin(origin: str | None, allowed: frozenset[str]) -> Refusal | None:
    """403 when a browser says the request comes from a page of another origin.

    No ``Origin`` (curl, the CLI, Prometheus, a browser's same-origin GET) passes;
    ``null`` (sandboxed frames, ``file://`` pages) does not.
    """
    if origin is None:
        return None
    scheme, sep, authority = origin.lower().partition("://")
    plain = sep and scheme == "http" and "/" not in authority and "@" not in authority
    if plain and _normalise_host(authority) in allowed:
        return None
    return Refusal(
        403,
        "origin",
        f"requests from web pages of other origins are refused (Origin: {origin!r}); "
        "open the dashboard from this worker's own address (`tracewatch dashboard-url`)",
    )


def check_token(authorization: str | None, token: str, token_file: str) -> Refusal | None:
    """401 unless ``Authorization`` is ``Bearer <token>`` (constant-time comparison)."""
    scheme, _, given = (authorization or "").partition(" ")
    if scheme.lower() == "bearer" and given:
        if hmac.compare_digest(given.strip().encode(), token.encode()):
            return None
        problem = "the token does not match this worker's (a new one is made at each start)"
    else:
        problem = "this view needs the worker's token"
    return Refusal(
        401,
        "token",
        f"{problem}: send `Authorization: Bearer <token>` with the token in {token_file} "
        "(readable only by the user who started the worker; the tracewatch CLI reads it), "
        "or the one set in TRACEWATCH_WORKER_TOKEN; in a browser, open the link "
        "`tracewatch dashboard-url` prints",
    )


def check_content_type(method: str, content_type: str | None) -> Refusal | None:
    """415 for a body that is not JSON: ``text/plain``, forms and multipart are what a
    browser posts cross-site without a preflight."""
    if method.upper() in READ_METHODS:
        return None
    media = (content_type or "").split(";", 1)[0].strip().lower()
    if media == "application/json":
        return None
    return Refusal(
        415,
        "content_type",
        f"request bodies must be sent as `Content-Type: application/json` (got {media!r}): "
        "other types are what browsers post from other sites without asking",
    )


def is_open_path(path: str) -> bool:
    """True for the paths served without the token: ``/health`` and the dashboard's files."""
    return path in OPEN_PATHS or path.startswith(OPEN_PREFIXES)


@dataclass(frozen=True)
class AccessPolicy:
    """The four checks with this worker's hosts and token; ``judge`` runs them in order."""

    hosts: frozenset[str]
    token: str
    token_file: str

    @classmethod
    def for_worker(cls, worker: WorkerSettings, token: str, token_file: str) -> AccessPolicy:
        hosts = allowed_hosts(worker.web_host, worker.web_port, worker.allowed_hosts)
        return cls(hosts, token, token_file)

    def judge(self, method: str, path: str, headers: Mapping[str, str]) -> Refusal | None:
        """The first refusal for this request, or None to let it through."""
        lower = {k.lower(): v for k, v in headers.items()}
        return (
            check_host(lower.get("host"), self.hosts)
            or check_origin(lower.get("origin"), self.hosts)
            or (
                None
                if is_open_path(path)
                else check_token(lower.get("authorization"), self.token, self.token_file)
            )
            or check_content_type(method, lower.get("content-type"))
        )


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class WebAccess:
    """The policy as an aiohttp middleware, with a count of refusals by reason.

    Install it when the aiohttp ``Application`` is built (faust's
    ``web_application_options={"middlewares": [...]}``): middlewares cannot be
    added once the application is frozen at start-up.
    """

    def __init__(self, policy: AccessPolicy) -> None:
        self.policy = policy
        self.refused: Counter[str] = Counter()

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        refusal = self.policy.judge(request.method, request.path, request.headers)
        if refusal is None:
            response = await handler(request)
        else:
            self.refused[refusal.reason] += 1
            log.info("refused %s %s: %s", request.method, request.path, refusal.reason)
            auth = refusal.status == 401
            headers = {"WWW-Authenticate": 'Bearer realm="tracewatch"'} if auth else {}
            response = web.json_response(refusal.body(), status=refusal.status, headers=headers)
        for name, value in SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
        return response

    def collector(self) -> Collector:
        return _RefusedCollector(self.refused)

    def application_options(self) -> dict[str, Any]:
        """faust's ``web_application_options``: aiohttp's ``Application(middlewares=…)``."""
        return {"middlewares": [self.middleware]}


class _RefusedCollector(Collector):
    def __init__(self, refused: Counter[str]) -> None:
        self.refused = refused

    def collect(self) -> Iterable[Metric]:
        family = CounterMetricFamily(
            "tracewatch_web_requests_refused",
            "Requests to the worker's web views refused before any view ran, by reason "
            "(host, origin, token, content_type).",
            labels=["reason"],
        )
        for reason in ("host", "origin", "token", "content_type"):
            family.add_metric([reason], self.refused[reason])
        yield family


def worker_access(settings: Settings, token: str | None) -> WebAccess:
    """The guard of this worker's views: ``token`` (a random one when None, as for an app
    built in a test) and the hosts of ``settings.worker``."""
    policy = AccessPolicy.for_worker(
        settings.worker, token or new_token(), str(token_path(settings.home))
    )
    return WebAccess(policy)
