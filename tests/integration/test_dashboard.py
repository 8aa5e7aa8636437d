"""The dashboard end to end: a real worker with data, rendered by headless Chromium.

The worker gets 46 minutes of one route's traffic (three hours ago, a backfill)
with a burst of errors that fires ``ErrorRateHigh``, and one runaway agent run
that opens a trace breaker. Chromium (Debian's ``chromium``, installed by
scripts/setup.sh) then loads ``/dashboard`` twice: once for a screenshot, which
must be a real picture, and once to dump the DOM, where the page reports what it
drew (``#render-status``): every chart must have points, and the alert and the
breaker must be marked.
"""

from __future__ import annotations

import json
import math
import re
import shutil
import struct
import subprocess
import time
import urllib.parse
import urllib.request
import uuid
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tracewatch.config import KafkaSettings
from tracewatch.sdk import TraceProducer
from tracewatch.streams.topics import ensure_topics

pytestmark = pytest.mark.integration

PER_MINUTE = 60
MINUTES = 46
BURST = 40  # from this minute on, 30 % of calls fail
CHARTS = ("cost", "latency", "errors", "scores", "loop")


def events(route: str, t0: float) -> list[dict[str, Any]]:
    rng = np.random.default_rng(7)
    out: list[dict[str, Any]] = []
    for m in range(MINUTES):
        for i in range(PER_MINUTE):
            event: dict[str, Any] = {
                "event_id": f"{route}-{m}-{i}",
                "trace_id": f"{route}-t{m}-{i // 3}",
                "ts": t0 + 60 * m + i,
                "kind": "llm",
                "route": route,
                "model": "gpt-4o-mini",
                "prompt_version": "v3",
                "latency_ms": float(800 * rng.lognormal(0, 0.3)),
                "cost_usd": float(0.002 * rng.lognormal(0, 0.3)),
                "status": "error" if rng.random() < (0.3 if m >= BURST else 0.01) else "ok",
                "loop_depth": i % 3,
            }
            if i % 3 == 2:
                event["scores"] = {"groundedness": round(float(rng.beta(8, 2)), 4)}
            out.append(event)
    runaway = f"{route}-runaway"  # loop_depth past 25: the trace's breaker opens
    out += [
        {"event_id": f"{runaway}-{d}", "trace_id": runaway, "ts": t0 + 600 + d,
         "kind": "agent_step", "route": route, "loop_depth": d, "cost_usd": 0.001}
        for d in range(30)
    ]  # fmt: skip
    return sorted(out, key=lambda e: float(e["ts"]))


def wait_for_markers(worker: Any, route: str, timeout: float = 60.0) -> tuple[Any, Any]:
    query = urllib.parse.urlencode({"route": route, "from": "6h", "to": "now"})
    deadline = time.monotonic() + timeout
    alerts: Any = None
    breakers: Any = None
    while time.monotonic() < deadline:
        alerts, breakers = worker.get(f"/api/alerts?{query}"), worker.get(f"/api/breakers?{query}")
        if alerts["markers"] and breakers["markers"]:
            return alerts, breakers
        time.sleep(0.5)
    pytest.fail(f"no alert and breaker markers within {timeout}s: {alerts} {breakers}")


def chromium(*args: str) -> str:
    binary = shutil.which("chromium")
    if binary is None:
        pytest.fail("Chromium is missing: `apt-get install -y chromium` (scripts/setup.sh does it)")
    command = [binary, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
               "--virtual-time-budget=20000", *args]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def png_pixels(path: Path) -> tuple[int, int, list[bytes]]:
    """Width, height and the pixels (RGB) of an 8-bit non-interlaced PNG (what Chromium writes)."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, idat, header = 8, b"", b""
    while pos < len(data):
        (length,), kind = struct.unpack(">I", data[pos : pos + 4]), data[pos + 4 : pos + 8]
        chunk = data[pos + 8 : pos + 8 + length]
        header = chunk if kind == b"IHDR" else header
        idat += chunk if kind == b"IDAT" else b""
        pos += 12 + length
    width, height, depth, color = struct.unpack(">IIBB", header[:10])
    assert depth == 8 and color in (2, 6), (depth, color)
    channels = 3 if color == 2 else 4
    raw, stride = zlib.decompress(idat), width * channels
    rows, previous = bytearray(), bytearray(stride)
    for y in range(height):
        kind, line = (
            raw[y * (stride + 1)],
            bytearray(raw[y * (stride + 1) + 1 : (y + 1) * (stride + 1)]),
        )
        for x in range(stride):
            left = line[x - channels] if x >= channels else 0
            up, corner = previous[x], previous[x - channels] if x >= channels else 0
            if kind == 1:
                line[x] = (line[x] + left) & 0xFF
            elif kind == 2:
                line[x] = (line[x] + up) & 0xFF
            elif kind == 3:
                line[x] = (line[x] + (left + up) // 2) & 0xFF
            elif kind == 4:
                p = left + up - corner
                pa, pb, pc = abs(p - left), abs(p - up), abs(p - corner)
                line[x] = (
                    line[x] + (left if pa <= pb and pa <= pc else up if pb <= pc else corner)
                ) & 0xFF
        rows += line
        previous = line
    pixels = [bytes(rows[i : i + 3]) for i in range(0, len(rows), channels)]
    return width, height, pixels


def test_the_dashboard_draws_a_routes_charts_with_its_alert_and_breaker(
    kafka_settings: KafkaSettings, tmp_path: Path, free_port: int, make_worker: Any
) -> None:
    ensure_topics(kafka_settings)
    route = f"it/{uuid.uuid4().hex[:8]}/chat"
    t0 = math.floor(time.time() / 60) * 60 - 3 * 3600
    worker = make_worker(
        kafka_settings, tmp_path, free_port, TRACEWATCH_WORKER_ALLOWED_LATENESS_S="30"
    )
    worker.start()
    with TraceProducer(settings=kafka_settings) as producer:
        for event in events(route, t0):
            producer.send(event)
    worker.wait_for(
        lambda s: s["alerts_sent"] >= 1 and s["breaker_signals"] >= 1 and s["pending_events"] == 0,
        timeout=120,
    )
    alerts, breakers = wait_for_markers(worker, route)
    assert [m["alertname"] for m in alerts["markers"]] == ["ErrorRateHigh"]
    scopes = {m["scope"] for m in breakers["markers"]}
    assert f"trace:{route}-runaway" in scopes  # found through the trace's stored events
    assert all(s == f"route:{route}" or s.startswith(f"trace:{route}-") for s in scopes), scopes

    # the link `tracewatch dashboard-url` prints: the token in the fragment, never sent
    query = urllib.parse.urlencode({"route": route, "range": "6h"})
    page = f"{worker.url}/dashboard?{query}#token={worker.token()}"
    shot = tmp_path / "dashboard.png"
    chromium(f"--screenshot={shot}", "--window-size=1400,1600", page)
    width, height, pixels = png_pixels(shot)
    assert (width, height) == (1400, 1600)
    colours = set(pixels)
    assert len(colours) > 50, f"the screenshot looks blank: {len(colours)} colours"
    coloured = [p for p in pixels if max(p) - min(p) > 60]  # chart lines and markers, not text
    assert len(coloured) > 2000, f"the screenshot has no charts: {len(coloured)} coloured pixels"

    dom = chromium("--dump-dom", "--window-size=1400,1600", page)
    status = re.search(r'<div id="render-status"([^>]*)>', dom)
    assert status is not None, dom[-2000:]
    attributes = dict(re.findall(r'data-([a-z]+)="([^"]*)"', status.group(1)))
    assert attributes["state"] == "ready", attributes
    drawn = json.loads(attributes["charts"].replace("&quot;", '"'))
    assert set(drawn) == set(CHARTS) and all(drawn[c] > 0 for c in CHARTS), drawn
    assert int(attributes["markers"]) == len(alerts["markers"]) + len(breakers["markers"])
    assert "ErrorRateHigh" in dom and f"trace:{route}-runaway" in dom
    assert dom.count("<canvas") == len(CHARTS)
    worker.stop()
