"""The alert lifecycle: observations in, firing and resolved transitions out.

A detector answers one question per evaluation ("is p95 cost on this route
above its threshold now?"). Sending that answer straight to Alertmanager would
page on every blip and flap on every dip, so this module keeps, per alert
instance (its fingerprint), a small state machine in *event* time:

- inactive -> pending: the first breached observation (its ``ts`` is ``starts_at``);
- pending -> inactive: a clear observation (a blip; nothing was sent);
- pending -> firing: still breached ``for_s`` after ``starts_at`` (and out of cooldown);
- firing -> resolving: a clear observation; resolving -> firing: breached again
  (the same episode goes on, nothing is sent);
- resolving -> inactive: clear for ``resolve_after_s``; a resolved alert is sent.

Why the three durations:

- ``for_s`` keeps a single bad evaluation from paging: the condition must hold
  from the first breach (``starts_at``) until an observation at least ``for_s``
  later. A clear observation while pending starts over.
- ``resolve_after_s`` is hysteresis: a brief clear while firing does not resolve;
  the condition must stay clear that long. ``ends_at`` is when it had been clear
  long enough.
- ``cooldown_s`` keeps a resolved alert from flapping straight back: a new
  episode of the same fingerprint stays pending until ``ends_at + cooldown_s``.

Only event time is used (never the wall clock), and every choice is
deterministic, so a replay of the same observations gives the same alerts.
Observations older than the last one seen for their fingerprint are ignored.

Silence counts as clear for a resolving alert: ``advance(ts)`` resolves those
whose hysteresis elapsed by ``ts`` (a route that went quiet), and ``observe``
applies the same catch-up to its own fingerprint first, so the alerts do not
depend on how often the caller happens to call ``advance``.

Memory is bounded by ``max_states`` fingerprints. To make room, the least
recently updated *inactive* state goes first (it only remembers its last event
time and any cooldown, both forgotten with it), then the least recently updated pending one, and a
firing one only when every state is firing; an evicted firing alert is sent as
resolved (at its last event time) so that nothing downstream is left open with
no one to close it.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cached_property
from typing import Literal

from tracewatch.schemas.alert import Alert, AlertStatus

__all__ = [
    "AlertKey",
    "AlertLifecycle",
    "LifecyclePolicy",
    "Observation",
    "Phase",
    "fingerprint",
]

Phase = Literal["inactive", "pending", "firing", "resolving"]

# Eviction order: states in the first group go first. "open" holds firing and
# resolving states: both are firing as far as Alertmanager knows.
_Group = Literal["idle", "pending", "open"]
_EVICTION_ORDER: tuple[_Group, ...] = ("idle", "pending", "open")
_GROUP_OF: dict[Phase, _Group] = {
    "inactive": "idle",
    "pending": "pending",
    "firing": "open",
    "resolving": "open",
}


def fingerprint(alertname: str, labels: Mapping[str, str]) -> str:
    """A stable id for one alert instance, whatever order the labels come in.

    The canonical JSON (sorted keys, no whitespace) is hashed rather than, say,
    ``hash()``, which is salted per process and would break replays and restarts.
    """
    canonical = json.dumps(
        {"alertname": alertname, "labels": dict(sorted(labels.items()))},
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
    )
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:16]


@dataclass(frozen=True)
class AlertKey:
    """The identity of one alert instance: its name and its labels.

    The labels are copied, so a caller mutating its dict cannot change a key
    that is already in use.
    """

    alertname: str
    labels: Mapping[str, str]

    def __post_init__(self) -> None:
        object.__setattr__(self, "labels", dict(sorted(self.labels.items())))

    @cached_property
    def fingerprint(self) -> str:
        return fingerprint(self.alertname, self.labels)

    def __hash__(self) -> int:
        return hash(self.fingerprint)


@dataclass(frozen=True)
class LifecyclePolicy:
    """How long a condition must hold, stay clear, and stay quiet (seconds of event time)."""

    for_s: float = 120.0
    resolve_after_s: float = 180.0
    cooldown_s: float = 300.0
    max_states: int = 10_000

    def __post_init__(self) -> None:
        for name in ("for_s", "resolve_after_s", "cooldown_s"):
            value = getattr(self, name)
            if not math.isfinite(value) or value < 0:
                raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
        if self.max_states < 1:
            raise ValueError(f"max_states must be >= 1, got {self.max_states!r}")


@dataclass(frozen=True)
class Observation:
    """One evaluation of one alert condition at event time ``ts``.

    Numbers are checked here, where the caller can still see which evaluation
    produced them, rather than later when an ``Alert`` (which refuses NaN) is built.
    """

    alertname: str
    labels: Mapping[str, str]
    ts: float
    breached: bool
    value: float | None = None
    baseline: float | None = None
    threshold: float | None = None
    summary: str = ""
    #: descriptive labels (e.g. the model and prompt version carrying the traffic)
    #: that are sent with the alert but are not part of its identity: the ones of
    #: the observation that made it fire stay on it until it resolves, so every
    #: send of one episode carries the same label set (Alertmanager keys on it)
    context: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.alertname:
            raise ValueError("alertname must not be empty")
        if not math.isfinite(self.ts):
            raise ValueError(f"ts must be finite, got {self.ts!r}")
        for name in ("value", "baseline", "threshold"):
            number = getattr(self, name)
            if number is not None and not math.isfinite(number):
                raise ValueError(f"{name} must be finite or None, got {number!r}")

    @cached_property
    def key(self) -> AlertKey:
        return AlertKey(self.alertname, self.labels)


@dataclass
class _State:
    """What one fingerprint remembers between observations."""

    key: AlertKey
    last_ts: float
    last: Observation  # the latest observation: what a resolved alert reports
    evidence: Observation  # the latest breached one: what a firing alert reports
    phase: Phase = "inactive"
    since: float | None = None  # first breach of the current episode (starts_at)
    clear_since: float | None = None  # first clear observation while firing
    quiet_until: float = -math.inf  # cooldown: no new firing before this
    group: _Group = "idle"  # the eviction group it is filed in
    labels: dict[str, str] | None = None  # identity + context labels of the open episode

    @property
    def fingerprint(self) -> str:
        return self.key.fingerprint

    def episode_start(self) -> float:
        assert self.since is not None, "an open or pending state has a start"
        return self.since

    def resolve_due(self, resolve_after_s: float) -> float | None:
        """When the hysteresis of a resolving state elapses (None if not resolving)."""
        if self.phase != "resolving" or self.clear_since is None:
            return None
        return self.clear_since + resolve_after_s


class AlertLifecycle:
    """Per-fingerprint alert state machines in event time; pure, no I/O.

    ``observe`` returns the transitions an observation causes, ``advance`` the
    ones the passing of event time causes, ``firing`` what is open now.
    """

    def __init__(self, policy: LifecyclePolicy | None = None) -> None:
        self.policy = LifecyclePolicy() if policy is None else policy
        self._states: dict[str, _State] = {}
        # one LRU order per eviction group; the least recently updated comes first
        self._groups: dict[_Group, OrderedDict[str, _State]] = {
            name: OrderedDict() for name in _EVICTION_ORDER
        }

    def clone(self) -> AlertLifecycle:
        """A fresh lifecycle with the same policy and no state (one per key or replay)."""
        return AlertLifecycle(self.policy)

    def __len__(self) -> int:
        return len(self._states)

    def phase(self, fp: str) -> Phase | None:
        """The phase of a tracked fingerprint, None if it is not tracked."""
        state = self._states.get(fp)
        return None if state is None else state.phase

    def observe(self, obs: Observation) -> list[Alert]:
        """Fold one observation in; returns the transitions it caused, oldest first."""
        key = obs.key
        state = self._states.get(key.fingerprint)
        out: list[Alert] = []
        if state is None:
            out += self._make_room()
            state = _State(key=key, last_ts=obs.ts, last=obs, evidence=obs)
            self._states[key.fingerprint] = state
        elif obs.ts < state.last_ts:
            return []
        due = state.resolve_due(self.policy.resolve_after_s)
        if due is not None and due < obs.ts:  # silence since the clear: as advance() would
            out.append(self._resolve(state, due))
        out += self._step(state, obs)
        self._file(state)
        return out

    def advance(self, ts: float) -> list[Alert]:
        """Let event time reach ``ts``: resolve alerts that have been clear long enough.

        Each resolves at the moment its hysteresis elapsed, not at ``ts``, so the
        result does not depend on when ``advance`` is called. Pending states are
        left alone: only a breached observation can make them fire.
        """
        if math.isnan(ts):
            raise ValueError("ts must not be NaN")
        after = self.policy.resolve_after_s
        due: list[tuple[float, str, _State]] = []
        for state in self._groups["open"].values():
            at = state.resolve_due(after)
            if at is not None and at <= ts:
                due.append((at, state.fingerprint, state))
        due.sort(key=lambda item: (item[0], item[1]))
        return [self._resolve(state, at) for at, _, state in due]

    def firing(self) -> list[Alert]:
        """Every open alert (firing or resolving), for re-sending to Alertmanager.

        Each carries the latest *breached* observation: the evidence it fires on.
        """
        open_states = sorted(
            self._groups["open"].values(), key=lambda s: (s.episode_start(), s.fingerprint)
        )
        return [_alert(s, "firing", s.evidence, None) for s in open_states]

    # -- transitions --------------------------------------------------------------------

    def _step(self, state: _State, obs: Observation) -> list[Alert]:
        state.last_ts = obs.ts
        state.last = obs
        if obs.breached:
            state.evidence = obs
            return self._on_breach(state, obs.ts)
        return self._on_clear(state, obs.ts)

    def _on_breach(self, state: _State, ts: float) -> list[Alert]:
        if state.phase == "inactive":
            state.phase, state.since = "pending", ts
        elif state.phase == "resolving":
            state.phase, state.clear_since = "firing", None  # the same episode goes on
        if state.phase == "pending" and self._may_fire(state, ts):
            state.phase = "firing"
            state.labels = {**state.evidence.context, **state.key.labels}
            return [_alert(state, "firing", state.evidence, None)]
        return []

    def _on_clear(self, state: _State, ts: float) -> list[Alert]:
        if state.phase == "pending":
            state.phase, state.since = "inactive", None
        elif state.phase == "firing":
            state.phase, state.clear_since = "resolving", ts
        due = state.resolve_due(self.policy.resolve_after_s)
        if due is not None and ts >= due:
            return [self._resolve(state, ts)]
        return []

    def _may_fire(self, state: _State, ts: float) -> bool:
        return ts >= state.episode_start() + self.policy.for_s and ts >= state.quiet_until

    def _resolve(self, state: _State, at: float) -> Alert:
        """Close the episode at event time ``at`` and start the cooldown."""
        alert = _alert(state, "resolved", state.last, at)
        state.phase, state.since, state.clear_since = "inactive", None, None
        state.labels = None
        state.quiet_until = at + self.policy.cooldown_s
        state.last_ts = max(state.last_ts, at)
        self._file(state)
        return alert

    # -- bookkeeping --------------------------------------------------------------------

    def _file(self, state: _State) -> None:
        """Mark the state as just updated, in the eviction group of its phase."""
        self._groups[state.group].pop(state.fingerprint, None)
        state.group = _GROUP_OF[state.phase]
        self._groups[state.group][state.fingerprint] = state

    def _make_room(self) -> list[Alert]:
        """Evict one state if the bound is reached (see the module docstring for the order)."""
        if len(self._states) < self.policy.max_states:
            return []
        for name in _EVICTION_ORDER:
            group = self._groups[name]
            if group:
                _, victim = group.popitem(last=False)
                del self._states[victim.fingerprint]
                if name == "open":
                    return [_alert(victim, "resolved", victim.last, victim.last_ts)]
                return []
        return []


def _alert(state: _State, status: AlertStatus, reading: Observation, ends: float | None) -> Alert:
    return Alert(
        fingerprint=state.fingerprint,
        status=status,
        alertname=state.key.alertname,
        labels=dict(state.key.labels) if state.labels is None else dict(state.labels),
        value=reading.value,
        baseline=reading.baseline,
        threshold=reading.threshold,
        starts_at=_utc(state.episode_start()),
        ends_at=None if ends is None else _utc(ends),
        summary=reading.summary,
    )


def _utc(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, tz=UTC)
