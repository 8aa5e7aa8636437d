"""ClickHouse writes really fail for a while: the worker holds on and then catches up.

The worker's embedded chDB lives on a small tmpfs of its own. Mid-stream a filler
file takes all its free space, so every insert fails inside ClickHouse itself
("Cannot reserve …, not enough space"), while the SDK keeps producing. Meanwhile
the worker must stay up, report the error, back off, commit no offsets, and hold
at most two batches (the hand-off to its writer blocks, so it stops reading).
When the filler is deleted it catches up, and every event is stored exactly once.
"""

from __future__ import annotations

import errno
import json
import math
import os
import re
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, TopicPartition

from tracewatch.config import KafkaSettings, WorkerSettings
from tracewatch.demo.traffic import DemoTraffic
from tracewatch.streams.topics import ensure_topics

pytestmark = pytest.mark.integration

RATE_PER_S = 2_500.0  # wall-clock send rate of the producer thread
#: event time runs 10x faster than the clock (RATE_PER_S events a wall second, each 1/250 s
#: apart) and lateness is short, so minutes close and
#: offsets are committed every few seconds (commits are held back for open minutes)
EVENT_RATE_PER_S = 250.0
#: max.poll.interval at its floor, well under the outage: the worker must keep polling
#: (partitions paused) while its writer is stuck, or the group evicts it mid-outage
WORKER_ENV = {
    "TRACEWATCH_WORKER_ALLOWED_LATENESS_S": "2",
    "TRACEWATCH_WORKER_MAX_POLL_INTERVAL_S": "10",
    # the final check reads every stored event id through /query: more than the
    # default 100 000 result rows a query may return
    "TRACEWATCH_QUERY_MAX_RESULT_ROWS": "2000000",
    "TRACEWATCH_QUERY_MAX_RESULT_BYTES": str(512 * 1024 * 1024),
}
N_MAX = 400_000  # more than the run can send: the thread is stopped, not exhausted
OUTAGE_S = 40.0  # four times max.poll.interval
TMPFS_MB = 256
W = WorkerSettings()
#: the batch being built (a flush is due at sink_flush_rows, checked after each poll of up
#: to batch_max_events) and the one handed to the writer
PENDING_BOUND = 2 * (W.sink_flush_rows + W.batch_max_events)
#: the consumer's prefetch cap (queued.max.messages.kbytes in ingest.py) plus slack
RSS_GROWTH_BOUND_MB = 256 + 128


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """``tmp_path/clickhouse`` (where the worker's chDB lives) on a tmpfs of its own."""
    mount_point = tmp_path / "clickhouse"
    mount_point.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={TMPFS_MB}m", "tmpfs", str(mount_point)],
        capture_output=True,
        text=True,
    )
    if mounted.returncode != 0:
        pytest.fail(f"this test needs root to mount a tmpfs: {mounted.stderr.strip()}")
    try:
        yield mount_point
    finally:
        if subprocess.run(["umount", str(mount_point)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(mount_point)], capture_output=True)


class DiskHog(threading.Thread):
    """Keeps a filesystem full: every byte that frees up is taken again at once.

    A single filler is not enough: ClickHouse itself frees space now and then
    (outdated parts, temporary files of failed inserts), and the next insert
    would fit. Like a runaway log file, this takes it back within ~50 ms.
    """

    def __init__(self, disk: Path) -> None:
        super().__init__(name="disk-hog", daemon=True)
        self.disk = disk
        self.files: list[Path] = []
        self.retaken = 0  # bytes taken back after the first fill
        self.halt = threading.Event()
        self.full = threading.Event()

    def free_bytes(self) -> int:
        st = os.statvfs(self.disk)
        return st.f_bavail * st.f_frsize

    def take(self) -> int:
        """Write zeros into a new file until ENOSPC; returns the bytes taken."""
        path = self.disk / f"filler-{len(self.files)}"
        self.files.append(path)
        taken = 0
        with path.open("wb", buffering=0) as f:
            for block in (b"\0" * 2**20, b"\0" * 4096):
                try:
                    while True:
                        taken += f.write(block)
                except OSError as exc:
                    if exc.errno != errno.ENOSPC:
                        raise
        return taken

    def run(self) -> None:
        self.take()
        self.full.set()
        while not self.halt.wait(0.05):
            if self.free_bytes() > 0:
                self.retaken += self.take()

    def release(self) -> None:
        self.halt.set()
        if self.ident is not None:  # started
            self.join(10)
        for path in self.files:
            path.unlink(missing_ok=True)


def committed(kafka: KafkaSettings) -> dict[int, int]:
    """The worker group's committed offsets (an offset fetch: it does not join the group)."""
    consumer = Consumer({**kafka.client_config(), "group.id": kafka.consumer_group,
                         "enable.auto.commit": False})  # fmt: skip
    try:
        parts = [TopicPartition(kafka.events_topic, p) for p in range(kafka.events_partitions)]
        return {tp.partition: tp.offset for tp in consumer.committed(parts, timeout=10)}
    finally:
        consumer.close()


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmRSS for pid {pid}")


def query(worker: Any, sql: str) -> list[list[Any]]:
    """Through the running worker's /query view (the worker holds the embedded chDB)."""
    body = json.dumps({"sql": sql, "parameters": {}}).encode()
    request = urllib.request.Request(
        f"{worker.url}/query",
        body,
        {"Content-Type": "application/json", **worker.auth()},
        method="POST",
    )
    for attempt in range(3):
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                rows: list[list[Any]] = json.loads(response.read())["rows"]
            return rows
        except urllib.error.HTTPError as exc:
            # Seen once in about six runs, cause not yet known (the body was not kept
            # then): a read right after the disk came back answered 400. The promise
            # under test is what is stored, so the read is tried again, loudly.
            detail = f"/query answered {exc.code}: {exc.read().decode()[:2000]}"
            if attempt == 2:
                pytest.fail(detail)
            print(f"\n{detail}; trying again")
            time.sleep(2)
    raise AssertionError("unreachable")


def test_full_disk_stops_commits_bounds_memory_and_loses_nothing(
    small_disk: Path,
    kafka_settings: KafkaSettings,
    tmp_path: Path,
    free_port: int,
    make_worker: Any,
    make_sender: Any,
) -> None:
    ensure_topics(kafka_settings)
    t0 = math.floor(time.time() / 60) * 60 - 3 * 3600  # recent enough for the events TTL
    events = DemoTraffic(seed=31).take(t0, N_MAX, rate_per_s=EVENT_RATE_PER_S)
    worker = make_worker(kafka_settings, tmp_path, free_port, **WORKER_ENV)
    worker.start()
    worker.wait_for(lambda b: True, timeout=120)
    assert worker.proc is not None
    pid = worker.proc.pid
    sender = make_sender(kafka_settings, events, RATE_PER_S)
    sender.start()
    hog = DiskHog(small_disk)
    try:
        before = worker.wait_for(lambda b: b["stats_rows"] > 0, timeout=120)
        committed_before = committed(kafka_settings)
        deadline = time.monotonic() + 60
        while min(committed_before.values()) <= 0:  # commits move before the fault
            assert time.monotonic() < deadline, f"no offsets committed: {committed_before}"
            time.sleep(0.5)
            committed_before = committed(kafka_settings)
        rss_before = rss_mb(pid)
        hog.start()
        assert hog.full.wait(30) and hog.free_bytes() == 0, "the tmpfs did not fill up"
        failing_at = time.monotonic()
        sent_at_fill = len(sender.ids)
        first_failure = worker.wait_for(lambda b: b["last_error"] is not None, timeout=60)
        time.sleep(1.0)  # a batch written just before the fill may still be committed
        frozen = committed(kafka_settings)
        stored_frozen = worker.wait_for(lambda b: True)["stored_events"]
        samples = []
        while time.monotonic() - failing_at < OUTAGE_S:
            body = worker.wait_for(lambda b: True)  # fails the test if the worker exited
            samples.append((body["pending_events"], rss_mb(pid), body["received"]))
            assert body["last_error"] is not None, "writes fail, yet no error is reported"
            assert body["stored_events"] == stored_frozen, "stored while the disk is full?"
            assert sender.error is None, sender.error
            time.sleep(1.0)
        assert committed(kafka_settings) == frozen, "offsets committed while writes fail"
        sent_during = len(sender.ids) - sent_at_fill
        error = str(worker.wait_for(lambda b: True)["last_error"])
        hog.release()  # the disk has room again
        freed_at = time.monotonic()
        worker.wait_for(lambda b: b["stored_events"] > stored_frozen, timeout=120)
        recovered_s = time.monotonic() - freed_at
        time.sleep(5.0)
    finally:
        hog.release()
        sender.halt.set()
        sender.join(30)
    assert sender.error is None, sender.error
    sender.producer.flush(60)
    sent = sender.ids

    final = worker.wait_for(
        lambda b: b["received"] >= len(sent) and b["pending_events"] == 0, timeout=240
    )
    rows = query(worker, "SELECT event_id, count() FROM tracewatch.events GROUP BY event_id")
    stored = {str(event_id): int(n) for event_id, n in rows}
    [[rollup]] = query(worker, "SELECT sum(count) FROM tracewatch.stats_1h")
    after = committed(kafka_settings)
    worker.stop()
    log = (tmp_path / "worker-1.log").read_text()
    delays = [float(d) for d in re.findall(r"sink failed, retrying in ([\d.]+)s", log)]

    max_pending = max(s[0] for s in samples)
    rss_growth = max(s[1] for s in samples) - rss_before
    received_during = samples[-1][2] - samples[0][2]
    duplicates = sum(n - 1 for n in stored.values())
    lost = set(sent) - set(stored)
    print(
        f"\nsink failure ({OUTAGE_S:.0f}s full disk, {hog.retaken} bytes freed by ClickHouse "
        f"taken back): error {error!r}; retries after "
        f"{delays} s; {sent_during} events produced while failing, worker read "
        f"{received_during} of them meanwhile; pending_events max {max_pending} "
        f"(bound {PENDING_BOUND}); RSS {rss_before:.0f} MB before, +{rss_growth:.0f} MB max; "
        f"committed offsets {committed_before} before, frozen at {frozen}, {after} after; "
        f"{final['stats_rows']} minutes closed; caught up "
        f"{recovered_s:.1f}s after the disk was freed; produced {len(sent)}, stored "
        f"{sum(stored.values())}, duplicates {duplicates}, lost {len(lost)}; hourly rollup "
        f"counts {rollup}"
    )
    print(
        f"| sink failure | chDB dir on a {TMPFS_MB} MB tmpfs kept full for "
        f"{OUTAGE_S:.0f} s while producing | {len(sent)} | {sum(stored.values())} | "
        f"{duplicates} | n/a ({final['alerts_sent']} alerts sent) |"
    )
    assert "not enough space" in error.lower() or "NOT_ENOUGH_SPACE" in error, error
    assert first_failure["stored_events"] >= before["stored_events"]
    assert sent_during > 2 * PENDING_BOUND, "too little traffic to tell bounded from unbounded"
    assert max_pending <= PENDING_BOUND
    assert rss_growth < RSS_GROWTH_BOUND_MB
    assert len(delays) >= 3 and delays == sorted(delays) and delays[-1] > delays[0], delays
    assert all(after[p] >= frozen[p] for p in frozen) and after != frozen
    assert not lost, f"{len(lost)} events were not stored, e.g. {sorted(lost)[:3]}"
    assert duplicates == 0
    assert int(rollup) == len(sent), "the hourly rollup lost or doubled a retried block"
    assert set(stored) == set(sent)
    assert final["rejected_total"] == 0, final["rejected"]
    assert final["assignments"] == 1, "the group evicted the worker while its sink was down"
    assert final["valid"] == len(sent)
