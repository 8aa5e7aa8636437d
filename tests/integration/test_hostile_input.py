"""Hostile input through the real broker, the real worker process and real ClickHouse (chDB).

Over ten thousand bad messages, each built to break one rule so its DLQ reason is
known in advance, are mixed into valid demo traffic and valid-but-unusual events
(limits reached with astral, combining and right-to-left characters, nested
unknown fields, RFC 3339 offsets). The worker must stay up with no ingest error;
the DLQ must hold every bad message byte for byte, with the expected reason and
field; valid + DLQ = produced; duplicate event ids are stored once; and the
worker's counters must say the same.
"""

from __future__ import annotations

import json
import math
import random
import time
import urllib.request
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, Producer

from tracewatch.config import KafkaSettings
from tracewatch.demo.traffic import DemoTraffic
from tracewatch.streams.topics import ensure_topics

pytestmark = pytest.mark.integration

N_VALID = 8_000
N_UNUSUAL = 300
MAX_EVENT_BYTES = 256 * 1024  # the worker's default TRACEWATCH_WORKER_MAX_MESSAGE_BYTES
BROKER_MAX_VALUE = 1_000_000  # under the broker's default message.max.bytes (1 MiB + 12)

ASTRAL, COMBINING, RTL = "\U0001f600", "e\u0301", "\u05e9\u05dc\u05d5\u05dd\u202e"
UNUSUAL_PIECES = [ASTRAL, "\U0010fffd", COMBINING, "\u0301", RTL, "\u200f", "\u200b", "\ufeff",
                  "\x00", "\\", '"', "\n", "\u2028", "x"]  # fmt: skip
NOT_A_JSON_START = [b for b in range(256) if b not in b' \t\r\n{["-0123456789tfnNI']
INVALID_UTF8 = [
    b"\xff",
    b"\xfe",
    b"\x80",
    b"\xc3",
    b"\xc0\xaf",
    b"\xed\xa0\x80",
    b"\xf4\x90\x80\x80",
]


@dataclass(frozen=True)
class Message:
    """One produced message and what the worker must do with it (``reason`` None: store it)."""

    key: bytes | None
    value: bytes | None
    reason: str | None = None
    field: str | None = None

    def dead_letter(self) -> tuple[bytes | None, bytes, str | None, str | None]:
        # a tombstone (no value) comes back from the DLQ as an empty value
        return self.key, self.value or b"", self.reason, self.field


def encode(event: dict[str, Any], ascii_only: bool = True) -> bytes:
    return json.dumps(
        event, separators=(",", ":"), ensure_ascii=ascii_only, allow_nan=True
    ).encode()


def valid(event: dict[str, Any], ascii_only: bool = True) -> Message:
    return Message(str(event["trace_id"]).encode(), encode(event, ascii_only))


def unusual(rng: random.Random, n: int) -> str:
    return "".join(rng.choice(UNUSUAL_PIECES) for _ in range(n))


def exactly(rng: random.Random, n: int) -> str:
    """``n`` code points of unusual text (limits count code points)."""
    return unusual(rng, n)[:n] if n else ""


def unusual_valid_events(rng: random.Random, base: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Valid events at the contract's limits, with text that breaks naive code."""
    routes = [exactly(rng, 256) for _ in range(20)]
    events = []
    for i, template in enumerate(rng.sample(base, N_UNUSUAL)):
        offset = timezone(timedelta(minutes=rng.choice([-720, -150, 0, 345, 840])))
        event = {
            "event_id": f"unusual-{i}-" + ASTRAL * 100,
            "trace_id": exactly(rng, 128),
            "ts": datetime.fromtimestamp(float(template["ts"]), offset).isoformat(),
            "kind": "llm",
            "route": routes[i % len(routes)],
            "model": exactly(rng, 256),
            "prompt_version": exactly(rng, rng.randint(0, 256)),
            "latency_ms": rng.uniform(0, 1e12),
            "input_tokens": rng.choice([0, 2**31 - 1]),
            "scores": {exactly(rng, 64): rng.choice([0, 1, 0.5])},
            "attributes": {exactly(rng, 128): exactly(rng, 1024), "flag": True, "n": -(2**60)},
            "x-nested": json.loads("[" * 60 + "1" + "]" * 60),
            "x-null": None,
        }
        events.append(event)
    return events


def with_literal(event: dict[str, Any], field: str, literal: bytes) -> bytes:
    """``event`` with ``field`` (``a`` or ``a.b``) written as raw JSON text."""
    marker = "\x00@literal@\x00"
    changed = json.loads(json.dumps(event))
    if "." in field:
        outer, inner = field.split(".", 1)
        changed[outer] = {inner: marker}
    else:
        changed[field] = marker
    raw = encode(changed)
    return raw.replace(json.dumps(marker).encode(), literal)


def one_field(event: dict[str, Any], field: str, value: Any) -> bytes:
    return with_literal(event, field, json.dumps(value, allow_nan=True).encode())


Builder = Callable[[random.Random, dict[str, Any]], Message]


def _random_bytes(rng: random.Random, _: dict[str, Any]) -> Message:
    value = bytes([rng.choice(NOT_A_JSON_START)]) + rng.randbytes(rng.randint(0, 2000))
    return Message(rng.choice([None, rng.randbytes(8)]), value, "not_json")


def _truncated(rng: random.Random, event: dict[str, Any]) -> Message:
    raw = encode(event, ascii_only=rng.random() < 0.5)
    return Message(b"truncated", raw[: rng.randint(1, len(raw) - 1)], "not_json")


def _deeply_nested(rng: random.Random, event: dict[str, Any]) -> Message:
    depth = rng.randint(1_500, 10_000)
    opener, closer = rng.choice([(b"[", b"]"), (b'{"a":', b"}")])
    field = rng.choice(["route", "attributes.a", "scores.s", "x-unknown"])
    return Message(b"nested", with_literal(event, field, opener * depth + b"1" + closer * depth),
                   "not_json")  # fmt: skip


def _invalid_utf8(rng: random.Random, event: dict[str, Any]) -> Message:
    field = rng.choice(["route", "event_id", "model", "attributes.a"])
    literal = b'"ok' + rng.choice(INVALID_UTF8) + b'"'
    return Message(b"utf8", with_literal(event, field, literal), "not_json")


def _not_an_object(rng: random.Random, _: dict[str, Any]) -> Message:
    value = rng.choice([[1, 2], "event", 42, 1.5, True, None, [{"event_id": "e"}], []])
    return Message(b"not-object", json.dumps(value).encode(), "not_object")


def _not_finite(rng: random.Random, event: dict[str, Any]) -> Message:
    field = rng.choice(["latency_ms", "cost_usd", "ts", "scores.groundedness"])
    literal = rng.choice([b"NaN", b"Infinity", b"-Infinity", b"1e999", b"-1e999"])
    return Message(b"not-finite", with_literal(event, field, literal), "not_finite", field)


WRONG_TYPES: list[tuple[str, Any]] = [
    ("latency_ms", "812"), ("latency_ms", True), ("cost_usd", [0.1]), ("input_tokens", "12"),
    ("input_tokens", 1.5), ("output_tokens", {"n": 1}), ("retry_count", None), ("route", 42),
    ("route", ["support/chat"]), ("event_id", 5), ("trace_id", False), ("model", 3.5),
    ("scores", [0.5]), ("scores.groundedness", "0.9"), ("attributes", "region=eu"),
    ("attributes.region", [1]), ("attributes.region", None), ("loop_depth", "3"),
]  # fmt: skip


def _wrong_type(rng: random.Random, event: dict[str, Any]) -> Message:
    field, value = rng.choice(WRONG_TYPES)
    return Message(b"wrong-type", one_field(event, field, value), "wrong_type", field)


def _negative(rng: random.Random, event: dict[str, Any]) -> Message:
    field = rng.choice(["latency_ms", "cost_usd", "input_tokens", "output_tokens", "retry_count",
                        "loop_depth", "scores.groundedness"])  # fmt: skip
    integer = field in ("input_tokens", "output_tokens", "retry_count", "loop_depth")
    value = -rng.randint(1, 2**31) if integer else -rng.uniform(1e-9, 1e6)
    return Message(b"negative", one_field(event, field, value), "negative_number", field)


def _out_of_range(rng: random.Random, event: dict[str, Any]) -> Message:
    field, value = rng.choice([
        ("scores.groundedness", rng.uniform(1.000001, 1e6)), ("scores.hallucination", 2),
        ("input_tokens", 2**31 + rng.randint(0, 2**40)),
        ("latency_ms", rng.uniform(1.01e12, 1e300)),
    ])  # fmt: skip
    return Message(b"out-of-range", one_field(event, field, value), "out_of_range", field)


def _too_long(rng: random.Random, event: dict[str, Any]) -> Message:
    field, limit = rng.choice([("route", 256), ("event_id", 128), ("trace_id", 128),
                               ("model", 256), ("attributes.note", 1024)])  # fmt: skip
    value = exactly(rng, limit + rng.randint(1, 300))
    raw = one_field(event, field, value) if rng.random() < 0.5 else _utf8(event, field, value)
    return Message(b"too-long", raw, "too_long", field)


def _utf8(event: dict[str, Any], field: str, value: str) -> bytes:
    """As ``one_field`` but with the text as raw UTF-8 instead of ``\\u`` escapes."""
    literal = json.dumps(value, ensure_ascii=False).encode()
    return with_literal(event, field, literal)


def _too_short(rng: random.Random, event: dict[str, Any]) -> Message:
    field = rng.choice(["event_id", "trace_id", "route"])
    return Message(b"too-short", one_field(event, field, ""), "too_short", field)


def _invalid_value(rng: random.Random, event: dict[str, Any]) -> Message:
    field, value = rng.choice([
        ("kind", "banana"), ("kind", "LLM"), ("status", "meh"), ("guardrail_action", "maybe"),
        ("ts", "yesterday"), ("ts", "2026-11-22T10:00:00"), ("ts", 1795341600125), ("ts", -1),
    ])  # fmt: skip
    return Message(b"invalid-value", one_field(event, field, value), "invalid_value", field)


def _missing(rng: random.Random, event: dict[str, Any]) -> Message:
    field = rng.choice(["event_id", "trace_id", "ts", "kind", "route"])
    raw = encode({k: v for k, v in event.items() if k != field})
    return Message(b"missing", raw, "missing_field", field)


def _empty(rng: random.Random, _: dict[str, Any]) -> Message:
    return Message(b"empty", rng.choice([None, b""]), "empty")


def _oversized(rng: random.Random, event: dict[str, Any]) -> Message:
    size = rng.randint(MAX_EVENT_BYTES + 1, BROKER_MAX_VALUE)
    head = encode(event)[:-1] + b',"padding":"'
    padding = rng.randbytes((size - len(head) - 2) // 2 + 1).hex().encode()
    return Message(b"oversized", (head + padding)[: size - 2] + b'"}', "oversized")


BAD: dict[Builder, int] = {
    _random_bytes: 1_500, _truncated: 1_000, _deeply_nested: 500, _invalid_utf8: 500,
    _not_an_object: 300, _not_finite: 1_000, _wrong_type: 1_000, _negative: 1_000,
    _out_of_range: 800, _too_long: 800, _too_short: 300, _invalid_value: 500, _missing: 500,
    _empty: 300, _oversized: 24,
}  # fmt: skip
N_EXACT_DUPLICATES, N_CHANGED_DUPLICATES = 700, 300


def hostile_stream(t0: float) -> tuple[list[Message], list[dict[str, Any]]]:
    """The messages in produce order, and the valid events among them."""
    rng = random.Random(6)
    events = DemoTraffic(seed=31).take(t0, N_VALID, rate_per_s=40.0)
    templates = DemoTraffic(seed=32).take(t0, 500, rate_per_s=40.0)  # never sent as valid
    good = [*events, *unusual_valid_events(rng, events)]
    good.sort(key=lambda e: float(e["ts"]) if not isinstance(e["ts"], str) else _seconds(e["ts"]))
    after: dict[int, list[Message]] = {}
    for build, count in BAD.items():
        for _ in range(count):
            slot = rng.randrange(len(good))
            after.setdefault(slot, []).append(build(rng, dict(rng.choice(templates))))
    sent = [valid(e, ascii_only=rng.random() < 0.5) for e in good]
    for n in range(N_EXACT_DUPLICATES + N_CHANGED_DUPLICATES):
        first = rng.randrange(len(good) - 1)
        value = sent[first].value
        if n >= N_EXACT_DUPLICATES:  # the same event_id on a different event
            value = encode({**good[first], "latency_ms": 1.0, "cohort": "changed"})
        # the original's key: the same partition, so the worker reads the original first
        dup = Message(sent[first].key, value, "duplicate_event_id", "event_id")
        after.setdefault(rng.randrange(first, len(good)), []).append(dup)
    stream: list[Message] = []
    for i, message in enumerate(sent):
        stream.append(message)
        stream.extend(after.get(i, []))
    return stream, good


def _seconds(ts: str) -> float:
    return datetime.fromisoformat(ts).timestamp()


def produce(kafka: KafkaSettings, stream: list[Message]) -> None:
    failures: list[str] = []

    def report(err: Any, _msg: Any) -> None:
        if err is not None:
            failures.append(str(err))

    producer = Producer({**kafka.client_config(), "enable.idempotence": True, "acks": "all",
                         "linger.ms": 20, "compression.type": "lz4",
                         "message.max.bytes": 1_048_576})  # fmt: skip
    for message in stream:
        while True:
            try:
                producer.produce(kafka.events_topic, message.value, message.key, on_delivery=report)
                break
            except BufferError:
                producer.poll(0.1)
        producer.poll(0)
    assert producer.flush(60) == 0
    assert not failures, failures[:5]


def read_dlq(kafka: KafkaSettings, expected: int) -> list[tuple[Any, ...]]:
    consumer = Consumer({**kafka.client_config(), "group.id": f"{kafka.consumer_group}-dlq",
                         "auto.offset.reset": "earliest", "enable.auto.commit": False})  # fmt: skip
    consumer.subscribe([kafka.dlq_topic])
    letters: list[tuple[Any, ...]] = []
    deadline = time.monotonic() + 60
    quiet_until = math.inf
    while time.monotonic() < min(deadline, quiet_until):
        for m in consumer.consume(2000, 0.5):
            if m.error() is None:
                headers = {k: v.decode() for k, v in m.headers() or []}
                letters.append((m.key(), m.value(), headers))
        if len(letters) >= expected and quiet_until == math.inf:
            quiet_until = time.monotonic() + 2.0  # and nothing more than expected arrives
    consumer.close()
    return letters


def query(worker: Any, sql: str, **parameters: Any) -> list[list[Any]]:
    """Through the running worker's /query view (the worker holds the embedded chDB)."""
    body = json.dumps({"sql": sql, "parameters": parameters}).encode()
    request = urllib.request.Request(
        f"{worker.url}/query",
        body,
        {"Content-Type": "application/json", **worker.auth()},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        rows: list[list[Any]] = json.loads(response.read())["rows"]
    return rows


def listening_on(port: int) -> set[str]:
    """The local addresses (as /proc/net shows them) of sockets listening on ``port``."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            address, _, hex_port = local.rpartition(":")
            if state == "0A" and int(hex_port, 16) == port:  # 0A: LISTEN
                found.add(address)
    return found


def describe(difference: Counter[Any]) -> str:
    return "; ".join(
        f"{n}x key={k!r} reason={r} field={f} value={v[:80]!r}"
        for (k, v, r, f), n in list(difference.items())[:5]
    )


def test_hostile_input_is_dead_lettered_and_never_stops_the_worker(
    kafka_settings: KafkaSettings, tmp_path: Path, free_port: int, make_worker: Any
) -> None:
    ensure_topics(kafka_settings)
    t0 = math.floor(time.time() / 60) * 60 - 3 * 3600  # recent enough for the events TTL
    stream, good = hostile_stream(t0)
    bad = [m for m in stream if m.reason is not None]
    assert len(bad) >= 10_000
    produce(kafka_settings, stream)

    worker = make_worker(kafka_settings, tmp_path, free_port)
    worker.start()
    final = worker.wait_for(
        lambda b: (
            b["received"] >= len(stream)
            and b["pending_events"] == 0
            and b["stored_events"] >= len(good)
        ),
        timeout=120,
    )

    assert listening_on(free_port) == {"0100007F"}  # its web views: 127.0.0.1 only

    # the worker is alive and healthy, and its counters tell the same story
    assert final["ingest_alive"] is True and final["ingest_error"] is None
    assert final["last_error"] is None
    assert final["received"] == len(stream)
    assert final["valid"] == final["stored_events"] == len(good)
    assert final["rejected"] == dict(Counter(m.reason for m in bad))
    assert final["rejected_total"] == len(bad)

    # every bad message is in the DLQ, byte for byte, with the reason and field expected
    letters = read_dlq(kafka_settings, len(bad))
    assert all(h.get("tracewatch.detail") and h.get("tracewatch.source") for _, _, h in letters)
    got = Counter(
        (key, value or b"", h["tracewatch.reason"], h.get("tracewatch.field"))
        for key, value, h in letters
    )
    want = Counter(m.dead_letter() for m in bad)
    assert got == want, f"missing: {describe(want - got)} | unexpected: {describe(got - want)}"
    assert len(good) + len(letters) == len(stream)

    # ClickHouse holds each valid event once, unusual text unchanged
    assert query(worker, "SELECT count(), uniqExact(event_id) FROM {db:Identifier}.events",
                 db="tracewatch") == [[len(good), len(good)]]  # fmt: skip
    stored = query(worker, "SELECT event_id FROM {db:Identifier}.events", db="tracewatch")
    assert {row[0] for row in stored} == {str(e["event_id"]) for e in good}
    odd = {str(e["event_id"]): e for e in good if str(e["event_id"]).startswith("unusual-")}
    rows = query(
        worker,
        "SELECT event_id, trace_id, route, model, attributes FROM {db:Identifier}.events "
        "WHERE event_id IN {ids:Array(String)}",
        db="tracewatch",
        ids=sorted(odd),
    )
    assert len(rows) == len(odd)
    for event_id, trace_id, route, model, attributes in rows:
        sent = odd[event_id]
        assert (trace_id, route, model) == (sent["trace_id"], sent["route"], sent["model"])
        text = {k: v for k, v in sent["attributes"].items() if isinstance(v, str)}
        assert {k: v for k, v in attributes.items() if k in text} == text
    worker.stop()
