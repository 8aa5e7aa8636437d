"""Times that are not times get a 400 from the real worker's dashboard API, never a 500.

``from=inf`` made ``/api/routes`` answer 500 (an OverflowError in the time parser);
every view that reads ``from``/``to`` now refuses a non-finite or out-of-range time
with a message that says what a time looks like.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from tracewatch.config import KafkaSettings
from tracewatch.streams.topics import ensure_topics

pytestmark = pytest.mark.integration

BAD = ["inf", "-inf", "nan", "1e300", "99999999999d", "9999-12-31T00:00:00Z"]
VIEWS = ["/api/routes", "/api/series", "/api/alerts", "/api/breakers"]


def get(url: str, home: Path) -> tuple[int, dict[str, Any]]:
    """GET with the worker's token when it has one (the views may ask for it)."""
    token_file = home / "worker.token"
    headers = {}
    if token_file.exists():
        headers["Authorization"] = f"Bearer {token_file.read_text().strip()}"
    request = urllib.request.Request(url, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        text = exc.read().decode(errors="replace")
        try:
            return exc.code, json.loads(text)
        except ValueError:  # a 500 is plain text
            return exc.code, {"error": text}


def test_the_dashboard_api_refuses_times_that_are_not_times(
    kafka_settings: KafkaSettings, tmp_path: Path, free_port: int, make_worker: Any
) -> None:
    ensure_topics(kafka_settings)
    worker = make_worker(kafka_settings, tmp_path, free_port)
    worker.start()
    worker.wait_for(lambda body: True)
    status, _ = get(f"{worker.url}/api/routes?from=1h", tmp_path)
    assert status == 200
    for view in VIEWS:
        for value in BAD:
            for name in ("from", "to"):
                status, body = get(f"{worker.url}{view}?route=r&{name}={value}", tmp_path)
                assert status == 400, (view, name, value, status, body)
                assert "cannot read time" in body["error"] or "out of range" in body["error"]
    worker.stop()
