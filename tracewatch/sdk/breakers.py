"""The breaker client apps use to stop a run, or fall back, while tracewatch says so.

    from tracewatch.sdk import BreakerClient, BreakerOpen

    breakers = BreakerClient()               # one per process; brokers from TRACEWATCH_KAFKA_*
    breakers.wait_ready(5.0)                 # every scope's state read from the topic

    def run_agent(trace_id: str, task: str) -> str:
        try:
            for step in plan(task):          # your agent loop
                with breakers.guard(trace_id=trace_id, route="refund/primary"):
                    step.run()               # a refused step never starts
        except BreakerOpen as stop:          # tracewatch opened a breaker: stop the run
            log.warning("run %s stopped: %s", trace_id, stop)
            return cheap_answer(task)
        return final_answer()

    @breakers.protect(route="search/primary", fallback=cached_search)
    def search(query: str) -> list[str]:     # while route:search/primary is open,
        ...                                  # calls go to cached_search(query) instead

``check(trace_id, route)`` is the same decision without raising (a ``Decision``).

Canaries: ``variant_state(route, prompt_version="v21")`` (or ``model=...``) gives a
router tracewatch's rollout verdict on that variant (``rollback``, ``promote``,
``hold``, or None when not judged), whether it may still get traffic, and a
suggested weight (``sdk/variants.py``). It reads the ``variant:`` scopes of the
same topic.

How it works: tracewatch's worker publishes one ``BreakerSignal`` per transition
(contract.md, "Breaker signal") to the log-compacted breakers topic, keyed by
scope. The client reads that topic from the beginning of every partition on a
daemon thread (assigned partitions, no consumer group, nothing committed) and
keeps the latest signal per scope in memory, so a check is a dictionary lookup
(well under a microsecond) and a new signal is seen within milliseconds (the
consumer fetches with ``fetch.wait.max.ms`` 10 and polls in a tight loop).

What a check answers (``BreakerState.check`` has the rules, with no I/O):

- ``trace:<id>`` open: refused until ``opened_at + ttl_s`` (the breaker expires
  with the trace) or a ``closed`` signal.
- ``route:<name>`` open: refused until ``opened_at + ttl_s``; after that the
  route is half-open and one check in ``probe_every`` is let through as a probe
  (``Decision.probe``) until a new signal (``closed``, or ``open`` again) arrives.
- No ``ttl_s`` (or no ``opened_at``): open until a ``closed`` signal.
- Monitor unreachable: until the client has read the topic up to where it was at
  start (``wait_ready``), or when it has not heard from the brokers for
  ``stale_after_s``, a check that no known breaker refuses answers
  ``fail_open``: allowed (the default; the app runs unmonitored) or refused
  (``fail_open=False``), with the reason "monitor unreachable (fail-open)" or
  "(fail-closed)". A breaker known to be open still refuses.

``opened_at`` is event time and is compared with the client's ``clock``
(``time.time``), so hosts whose clocks disagree see breakers expire that much
earlier or later.

Errors (under ``TracewatchError``)::

    BreakerOpen          a step was refused; carries the Decision and the BreakerSignal

A broker that cannot be reached or refuses the client is logged with what to fix
and retried on the client's thread; nothing raises in the app but ``BreakerOpen``.
"""

from __future__ import annotations

import functools
import itertools
import json
import logging
import math
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC
from types import TracebackType
from typing import Any, ParamSpec, Protocol, TypeVar, overload

from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    TopicPartition,
)
from pydantic import ValidationError

from tracewatch.config import KafkaSettings
from tracewatch.errors import ConfigError, ServiceUnavailable, TracewatchError
from tracewatch.schemas.breaker import BreakerSignal, VariantSignal
from tracewatch.sdk.alerts import _HOW_TO_FIX, _MISSING_TOPIC, _REFUSED
from tracewatch.sdk.variants import VariantDecision, variant_scopes

__all__ = ["BreakerClient", "BreakerOpen", "BreakerState", "Decision"]

log = logging.getLogger(__name__)

P = ParamSpec("P")
R = TypeVar("R")

#: longest single wait of the client's thread, so close() is served promptly
_TICK_S = 0.1
#: messages taken from librdkafka's queue in one call once one has arrived
_BATCH = 500
#: wait between attempts to find the topic or to rebuild a failed consumer
_RETRY_S = 1.0
_METADATA_TIMEOUT_S = 2.0
#: how often expired trace breakers are dropped from memory
_PRUNE_EVERY_S = 10.0


@dataclass(frozen=True, slots=True)
class Decision:
    """What a check answered: may the step run, and if not, which breaker said no."""

    allowed: bool
    scope: str | None = None
    reason: str = ""
    probe: bool = False  # allowed as the probe of a half-open route
    signal: BreakerSignal | None = field(default=None, compare=False, repr=False)


ALLOWED = Decision(True)


class _StepDecorator(Protocol):
    """What ``protect()`` without a fallback returns: keeps the step's signature."""

    def __call__(self, step: Callable[P, R], /) -> Callable[P, R]: ...


class BreakerOpen(TracewatchError):
    """A step was refused; ``decision``, ``signal`` (None when the monitor is unreachable),
    ``scope`` and ``reason`` say why."""

    def __init__(self, decision: Decision) -> None:
        where = f"breaker open for {decision.scope}" if decision.scope else "step refused"
        super().__init__(f"{where}: {decision.reason}")
        self.decision = decision
        self.signal = decision.signal
        self.scope = decision.scope
        self.reason = decision.reason


class _Breaker:
    """One open scope, with its decisions built once so a check allocates nothing."""

    __slots__ = ("_checks", "_every", "half_open", "probe", "refusal", "signal", "until")

    def __init__(self, signal: BreakerSignal, probe_every: int) -> None:
        reason = signal.reason or "breaker open"
        self.signal = signal
        self.until = _expiry(signal)
        self.refusal = Decision(False, signal.scope, reason, False, signal)
        self.half_open = Decision(False, signal.scope, f"{reason} (half-open)", False, signal)
        self.probe = Decision(True, signal.scope, f"{reason} (half-open probe)", True, signal)
        self._checks = itertools.count()  # next() is atomic: safe from any thread
        self._every = probe_every

    def half_open_decision(self) -> Decision:
        return self.probe if next(self._checks) % self._every == 0 else self.half_open


def _expiry(signal: BreakerSignal) -> float:
    """Unix time when the breaker stops refusing on its own (inf: only a closed signal)."""
    if signal.opened_at is None or signal.ttl_s is None:
        return math.inf
    opened = signal.opened_at
    if opened.tzinfo is None:  # the contract's times are UTC
        opened = opened.replace(tzinfo=UTC)
    return opened.timestamp() + signal.ttl_s


class BreakerState:
    """Every scope's latest signal and the monitor's health; no I/O, the time is passed in.

    One thread applies signals (``apply``, ``remove``, ``contact``, ``mark_ready``);
    any number of threads may ``check`` meanwhile.
    """

    def __init__(
        self, *, fail_open: bool = True, stale_after_s: float = 30.0, probe_every: int = 10
    ) -> None:
        if probe_every < 1:
            raise ValueError(f"probe_every must be at least 1, not {probe_every}")
        if stale_after_s <= 0:
            raise ValueError(f"stale_after_s must be positive, not {stale_after_s}")
        self.fail_open = fail_open
        self.stale_after_s = stale_after_s
        self.probe_every = probe_every
        self._breakers: dict[str, _Breaker] = {}
        self._variants: dict[str, VariantSignal] = {}  # rollout verdicts, any state
        self._ready = False
        self._contact = -math.inf  # when the monitor was last heard from
        mode = "fail-open" if fail_open else "fail-closed"
        self._unreachable = Decision(fail_open, None, f"monitor unreachable ({mode})")

    @property
    def ready(self) -> bool:
        """Whether the state has been read up to where the topic was at start."""
        return self._ready

    def mark_ready(self) -> None:
        self._ready = True

    def contact(self, at: float) -> None:
        """The monitor (the brokers of the topic) was heard from at ``at``."""
        self._contact = max(self._contact, at)

    def lose_contact(self) -> None:
        """The monitor is not being followed any more: checks answer ``fail_open`` now."""
        self._contact = -math.inf

    def fresh(self, now: float) -> bool:
        return self._ready and now - self._contact <= self.stale_after_s

    def apply(self, signal: BreakerSignal) -> None:
        """Make ``signal`` its scope's state: open replaces, closed removes.

        A variant scope keeps its latest verdict whatever its state (``variant_state``).
        """
        if signal.scope.startswith("variant:"):
            self._apply_variant(signal)
        elif signal.state == "closed":
            self._breakers.pop(signal.scope, None)
        else:
            self._breakers[signal.scope] = _Breaker(signal, self.probe_every)

    def _apply_variant(self, signal: BreakerSignal) -> None:
        try:
            variant = (
                signal
                if isinstance(signal, VariantSignal)
                else VariantSignal.model_validate(signal.model_dump())
            )
        except ValidationError as exc:
            log.warning("skipped a variant signal for %s: %s", signal.scope, exc)
            return
        self._variants[signal.scope] = variant

    def remove(self, scope: str) -> None:
        """Forget a scope (a tombstone on the compacted topic)."""
        self._breakers.pop(scope, None)
        self._variants.pop(scope, None)

    def variant_state(
        self,
        route: str,
        prompt_version: str | None = None,
        model: str | None = None,
        *,
        now: float,
        attributes: Mapping[str, str] | None = None,
    ) -> VariantDecision:
        """The rollout verdict on a variant of ``route``; a rollback of any field wins."""
        scopes = variant_scopes(route, prompt_version, model, attributes)
        known = [self._variants[s] for s in scopes if s in self._variants]
        if not known:
            if not self.fresh(now):
                return VariantDecision(self.fail_open, reason=self._unreachable.reason)
            return VariantDecision(True, reason="not judged")
        rank = {"rollback": 0, "hold": 1, "promote": 2}
        return VariantDecision.of(min(known, key=lambda v: rank[v.verdict]))

    def variants(self) -> list[VariantSignal]:
        """The latest verdict of every variant scope held (``tracewatch rollouts``)."""
        return list(self._variants.values())

    def get(self, scope: str) -> BreakerSignal | None:
        """The open signal of ``scope``, if one is held (expired or not)."""
        breaker = self._breakers.get(scope)
        return None if breaker is None else breaker.signal

    def __len__(self) -> int:
        return len(self._breakers)

    def open_signals(self) -> list[BreakerSignal]:
        """The open signal of every scope held (expired trace breakers are pruned)."""
        return [breaker.signal for breaker in list(self._breakers.values())]

    def prune(self, now: float) -> int:
        """Drop trace breakers that have expired; returns how many. Routes stay (half-open)."""
        expired = [
            scope
            for scope, breaker in list(self._breakers.items())
            if scope.startswith("trace:") and now >= breaker.until
        ]
        for scope in expired:
            self._breakers.pop(scope, None)
        return len(expired)

    def check(
        self, trace_id: str | None = None, route: str | None = None, *, now: float
    ) -> Decision:
        """May a step of ``trace_id`` on ``route`` run at ``now`` (Unix seconds)?"""
        decision = self._lookup(trace_id, route, now) if self._breakers else ALLOWED
        if decision.allowed and not self.fresh(now):
            return self._unreachable
        return decision

    def _lookup(self, trace_id: str | None, route: str | None, now: float) -> Decision:
        if trace_id is not None:
            breaker = self._breakers.get("trace:" + trace_id)
            if breaker is not None and now < breaker.until:
                return breaker.refusal
        if route is not None:
            breaker = self._breakers.get("route:" + route)
            if breaker is not None:
                return breaker.refusal if now < breaker.until else breaker.half_open_decision()
        return ALLOWED


class BreakerClient:
    """Follows the breakers topic on a daemon thread; ``check``, ``guard`` and ``protect`` steps.

    ``settings`` defaults to ``KafkaSettings()`` (the ``TRACEWATCH_KAFKA_*``
    environment); ``config`` overrides librdkafka consumer settings. With
    ``start=False`` nothing connects until ``start()``. Checks are thread-safe.
    """

    def __init__(
        self,
        settings: KafkaSettings | None = None,
        *,
        fail_open: bool = True,
        stale_after_s: float = 30.0,
        probe_every: int = 10,
        start: bool = True,
        clock: Callable[[], float] = time.time,
        config: Mapping[str, Any] | None = None,
    ) -> None:
        self.settings = settings or KafkaSettings()
        self.topic = self.settings.breakers_topic
        self.state = BreakerState(
            fail_open=fail_open, stale_after_s=stale_after_s, probe_every=probe_every
        )
        self.received = 0
        self.skipped = 0
        self._clock = clock
        self._overrides = dict(config or {})
        self._stop = threading.Event()
        self._caught_up = threading.Event()
        self._thread: threading.Thread | None = None
        self._positions: dict[int, int] = {}  # partition → next offset to read
        self._behind: dict[int, int] = {}  # partition → high watermark still to reach
        self._fatal: KafkaError | None = None
        self._outage = False
        self._warned_missing_topic = False
        if start:
            self.start()

    # -- the app's side -------------------------------------------------------------------

    def check(self, trace_id: str | None = None, route: str | None = None) -> Decision:
        """May the next step of ``trace_id`` on ``route`` run? Memory only, no I/O."""
        return self.state.check(trace_id, route, now=self._clock())

    def variant_state(
        self,
        route: str,
        prompt_version: str | None = None,
        model: str | None = None,
        *,
        attributes: Mapping[str, str] | None = None,
    ) -> VariantDecision:
        """The rollout verdict and suggested weight of a variant (``sdk/variants.py``);
        ``attributes``: the value of the attribute tracewatch splits by, if any."""
        return self.state.variant_state(
            route, prompt_version, model, now=self._clock(), attributes=attributes
        )

    def guard(self, trace_id: str | None = None, route: str | None = None) -> _Guard:
        """A context manager that raises ``BreakerOpen`` on entry if the step may not run.

        ``with client.guard(trace_id=t, route=r) as decision:`` yields the ``Decision``
        (``decision.probe`` tells a half-open route's probe).
        """
        return _Guard(self, trace_id, route)

    @overload
    def protect(
        self,
        route: str | None = None,
        trace_id: str | Callable[..., str | None] | None = None,
        *,
        fallback: None = None,
    ) -> _StepDecorator: ...

    @overload
    def protect(
        self,
        route: str | None = None,
        trace_id: str | Callable[..., str | None] | None = None,
        *,
        fallback: Callable[P, R],
    ) -> Callable[[Callable[P, R]], Callable[P, R]]: ...

    def protect(
        self,
        route: str | None = None,
        trace_id: str | Callable[..., str | None] | None = None,
        *,
        fallback: Callable[..., Any] | None = None,
    ) -> Any:
        """Decorate a step: checked before each call; if refused, ``fallback`` or ``BreakerOpen``.

        ``trace_id`` is a fixed id or a function of the call's arguments
        (``trace_id=lambda run, *_: run.trace_id``); ``fallback`` takes the step's
        arguments and its result stands for the step's.
        """

        def decorate(step: Callable[P, R]) -> Callable[P, R]:
            @functools.wraps(step)
            def checked(*args: P.args, **kwargs: P.kwargs) -> R:
                trace = trace_id(*args, **kwargs) if callable(trace_id) else trace_id
                decision = self.check(trace, route)
                if decision.allowed:
                    return step(*args, **kwargs)
                if fallback is not None:
                    result: R = fallback(*args, **kwargs)
                    return result
                raise BreakerOpen(decision)

            return checked

        return decorate

    @property
    def ready(self) -> bool:
        return self.state.ready

    @property
    def healthy(self) -> bool:
        """Caught up and heard from the brokers within ``stale_after_s``."""
        return self.state.fresh(self._clock())

    def wait_ready(self, timeout: float | None = None) -> bool:
        """Wait until the topic has been read up to where it was at start; False on timeout."""
        return self._caught_up.wait(timeout)

    def start(self) -> None:
        """Start following the topic (done by the constructor unless ``start=False``)."""
        if self._stop.is_set():
            raise RuntimeError("this BreakerClient is closed")
        if self._thread is not None:
            return
        consumer = self._new_consumer()
        self._thread = threading.Thread(
            target=self._run,
            args=(consumer,),
            name=f"tracewatch-breakers:{self.topic}",
            daemon=True,
        )
        self._thread.start()

    def close(self, timeout: float = 10.0) -> None:
        """Stop following the topic; checks then answer ``fail_open`` after ``stale_after_s``."""
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    def __enter__(self) -> BreakerClient:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # -- the client's thread --------------------------------------------------------------

    def _new_consumer(self) -> Consumer:
        try:
            return Consumer(self._consumer_config())
        except (KafkaException, ValueError) as exc:
            raise ConfigError(f"cannot build the breaker client's Kafka consumer: {exc}") from None

    def _consumer_config(self) -> dict[str, Any]:
        stats_ms = max(100, min(1000, int(self.state.stale_after_s * 250)))
        return {
            **self.settings.client_config(),
            "group.id": f"tracewatch-breakers-{uuid.uuid4().hex}",  # required; never joined
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "enable.partition.eof": True,  # "caught up" for wait_ready
            "auto.offset.reset": "earliest",
            "allow.auto.create.topics": False,
            "fetch.wait.max.ms": 10,  # a new signal is fetched within ~10 ms
            "socket.nagle.disable": True,
            "statistics.interval.ms": stats_ms,  # broker liveness for the staleness check
            "error_cb": self._on_error,
            "stats_cb": self._on_stats,
            "logger": _LibrdkafkaLog(),
            **self._overrides,
        }

    def _run(self, consumer: Consumer | None) -> None:
        """The thread: follow the topic until close(); nothing escapes, a failure is retried."""
        try:
            while not self._stop.is_set():
                try:
                    consumer = consumer or self._new_consumer()
                    self._follow(consumer)
                except Exception as exc:
                    self.state.lose_contact()
                    detail = exc if isinstance(exc, TracewatchError) else repr(exc)
                    log.error(
                        "breaker client lost %s: %s; retrying in %.0fs",
                        self.topic,
                        detail,
                        _RETRY_S,
                        exc_info=not isinstance(exc, TracewatchError),
                    )
                    _close_quietly(consumer)
                    consumer = None
                    self._stop.wait(_RETRY_S)
        finally:
            _close_quietly(consumer)

    def _follow(self, consumer: Consumer) -> None:
        if not self._assign(consumer):
            return
        next_prune = time.monotonic() + _PRUNE_EVERY_S
        while not self._stop.is_set():
            self._raise_if_refused()
            message = consumer.poll(_TICK_S)  # returns as soon as a message arrives
            if message is not None:
                self._handle(message)
                for queued in consumer.consume(_BATCH, 0):
                    self._handle(queued)
            if time.monotonic() >= next_prune:
                next_prune = time.monotonic() + _PRUNE_EVERY_S
                self.state.prune(self._clock())

    def _assign(self, consumer: Consumer) -> bool:
        """Assign every partition where it was left (or at its start); False if closed first."""
        while not self._stop.is_set():
            watermarks = self._watermarks(consumer)
            if watermarks:
                break
            self._stop.wait(_RETRY_S)
        else:
            return False
        self._heard(self._clock())  # the brokers answered
        if not self._caught_up.is_set():
            self._behind = {
                p: high for p, (low, high) in watermarks.items() if high > self._position(p, low)
            }
            self._ready_if_caught_up()
        consumer.assign(
            [
                TopicPartition(self.topic, p, self._positions.get(p, OFFSET_BEGINNING))
                for p in watermarks
            ]
        )
        return True

    def _position(self, partition: int, low: int) -> int:
        return max(self._positions.get(partition, low), low)

    def _watermarks(self, consumer: Consumer) -> dict[int, tuple[int, int]]:
        """Partition → (low, high) watermarks of the topic; empty if it cannot be had now."""
        try:
            meta = consumer.list_topics(self.topic, timeout=_METADATA_TIMEOUT_S).topics
            topic = meta.get(self.topic)
            if topic is None or topic.error is not None or not topic.partitions:
                self._warn_missing_topic()
                return {}
            marks = {
                p: consumer.get_watermark_offsets(
                    TopicPartition(self.topic, p), timeout=_METADATA_TIMEOUT_S
                )
                for p in topic.partitions
            }
        except KafkaException as exc:
            self._warn_outage(exc.args[0].str())
            return {}
        if any(mark is None for mark in marks.values()):  # older clients: None on timeout
            return {}
        return marks

    def _handle(self, message: Message) -> None:
        error = message.error()
        partition = message.partition() or 0
        if error is not None:
            if error.code() == KafkaError._PARTITION_EOF:
                self._heard(self._clock())
                self._reached(partition, message.offset() or 0)
            else:
                self._on_message_error(error)
            return
        offset = message.offset() or 0
        self._positions[partition] = offset + 1
        self._heard(self._clock())
        self._apply(message)
        self._reached(partition, offset + 1)

    def _apply(self, message: Message) -> None:
        value = message.value()
        if value is None:  # a tombstone: the scope is gone
            key = message.key()
            if key:
                self.state.remove(key.decode(errors="replace"))
            return
        try:
            signal = BreakerSignal.model_validate_json(value)
        except ValidationError as exc:
            self.skipped += 1
            log.warning(
                "skipped a message that is not a breaker signal (%s [%s] at offset %s): %s",
                message.topic(),
                message.partition(),
                message.offset(),
                exc.errors(include_url=False)[0]["msg"],
            )
            return
        self.received += 1
        self.state.apply(signal)

    def _reached(self, partition: int, position: int) -> None:
        high = self._behind.get(partition)
        if high is not None and position >= high:
            del self._behind[partition]
            self._ready_if_caught_up()

    def _ready_if_caught_up(self) -> None:
        if not self._behind and not self._caught_up.is_set():
            self.state.mark_ready()
            self._caught_up.set()
            log.debug("breaker client caught up with %s (%d open)", self.topic, len(self.state))

    def _heard(self, at: float) -> None:
        if self._outage:
            self._outage = False
            log.info("Kafka at %s is reachable again", self.settings.bootstrap_servers)
        self.state.contact(at)

    # -- librdkafka callbacks (served inside poll, on the client's thread) -----------------

    def _on_stats(self, raw: str) -> None:
        """Broker liveness: the most recent receive on any connected broker's socket."""
        brokers = json.loads(raw).get("brokers", {}).values()
        idle_us = [
            b["rxidle"]
            for b in brokers
            if b.get("nodeid", -1) >= 0 and b.get("state") == "UP" and b.get("rxidle", -1) >= 0
        ]
        if idle_us:
            self._heard(self._clock() - min(idle_us) / 1e6)

    def _on_error(self, error: KafkaError) -> None:
        if error.fatal() or error.code() in _REFUSED:
            self._fatal = self._fatal or error
        elif error.code() == KafkaError._ALL_BROKERS_DOWN:
            self._warn_outage(error.str())
        else:
            log.debug("Kafka client error (retried): %s", error.str())

    def _on_message_error(self, error: KafkaError) -> None:
        if error.fatal() or error.code() in _REFUSED:
            self._fatal = self._fatal or error
        elif error.code() in _MISSING_TOPIC:
            self._warn_missing_topic()
        else:
            log.warning("Kafka consumer error (retried): %s", error.str())

    def _raise_if_refused(self) -> None:
        fatal, self._fatal = self._fatal, None
        if fatal is not None:
            raise ServiceUnavailable(
                f"Kafka at {self.settings.bootstrap_servers} refused the breaker client: "
                f"{fatal.str()}. Check the TRACEWATCH_KAFKA_* settings (servers, security "
                "protocol, SASL/SSL credentials, ACLs on the topic)."
            )

    def _warn_outage(self, detail: str) -> None:
        if not self._outage:
            self._outage = True
            log.warning(
                "Kafka at %s is unreachable (%s); waiting for it. Meanwhile breaker checks "
                "answer fail-%s (known open breakers still refuse). %s",
                self.settings.bootstrap_servers,
                detail,
                "open" if self.state.fail_open else "closed",
                _HOW_TO_FIX,
            )

    def _warn_missing_topic(self) -> None:
        if not self._warned_missing_topic:
            self._warned_missing_topic = True
            log.warning(
                "topic %s does not exist yet; it is created by `tracewatch topics` or "
                "`tracewatch run`. Waiting for it.",
                self.topic,
            )


class _Guard:
    """``BreakerClient.guard``: a class rather than a generator, so entering costs little."""

    __slots__ = ("_client", "_route", "_trace_id")

    def __init__(self, client: BreakerClient, trace_id: str | None, route: str | None) -> None:
        self._client = client
        self._trace_id = trace_id
        self._route = route

    def __enter__(self) -> Decision:
        decision = self._client.check(self._trace_id, self._route)
        if not decision.allowed:
            raise BreakerOpen(decision)
        return decision

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        return None


def _close_quietly(consumer: Consumer | None) -> None:
    if consumer is None:
        return
    try:
        consumer.close()
    except (KafkaException, RuntimeError) as exc:  # already closed, or the broker went away
        log.debug("breaker consumer close: %s", exc)


class _LibrdkafkaLog:
    """librdkafka's own log lines, at most at INFO: the error callback reports what matters.

    Enable DEBUG on ``tracewatch.sdk.breakers.librdkafka`` to see every reconnect attempt.
    """

    _logger = logging.getLogger(f"{__name__}.librdkafka")

    def log(self, level: int, fmt: str, *args: object) -> None:
        self._logger.log(min(level, logging.INFO), fmt, *args)
