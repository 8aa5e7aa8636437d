"""Score alerts against a scenario's labelled incidents: detection delays and false alarms.

A firing alert whose ``route`` and ``metric`` labels are the incident's, decided
between its start and its end (or the stream's end) plus ``MATCH_GRACE_S``,
detects it; every other firing episode is a false alarm. Pure: scenarios and
``(decided_at, alert)`` pairs in, a table out.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass

from tracewatch.demo.scenarios import INCIDENT_KINDS, MATCH_GRACE_S, Incident, Scenario
from tracewatch.schemas.alert import Alert

__all__ = ["Detection", "FalseAlarm", "KindScore", "ScoreTable", "format_table", "score"]


# --- scoring alerts against the labels ---------------------------------------------------------


@dataclass(frozen=True)
class Detection:
    """How one incident fared: when its first matching alert fired, and when the last resolved.

    ``resolved_at`` is the resolution of the last matching episode, None while it
    is still firing at the end of the stream (or when nothing fired).
    """

    scenario: str
    incident: Incident
    decided_at: float | None
    resolved_at: float | None = None

    @property
    def detected(self) -> bool:
        return self.decided_at is not None

    @property
    def delay_s(self) -> float | None:
        return None if self.decided_at is None else self.decided_at - self.incident.start

    @property
    def resolution_delay_s(self) -> float | None:
        """After the incident's end; negative when the alert resolved before the incident did."""
        if self.resolved_at is None or self.incident.end is None:
            return None
        return self.resolved_at - self.incident.end


@dataclass(frozen=True)
class FalseAlarm:
    """A firing transition that matched no incident."""

    scenario: str
    scenario_kind: str
    decided_at: float
    minute: float  # minutes after the stream start
    route: str
    metric: str
    alertname: str
    fingerprint: str


@dataclass(frozen=True)
class KindScore:
    """One incident kind over all runs; delays in seconds, None when nothing was detected."""

    kind: str
    incidents: int
    detected: int
    median_delay_s: float | None
    max_delay_s: float | None
    #: incidents with an end: how many were detected and then resolved (None: none end)
    resolved: int | None = None
    median_resolution_s: float | None = None
    max_resolution_s: float | None = None

    @property
    def missed(self) -> int:
        return self.incidents - self.detected


@dataclass(frozen=True)
class ScoreTable:
    """Detections per incident kind and false alarms, over every run scored."""

    kinds: tuple[KindScore, ...]
    detections: tuple[Detection, ...]
    false_alarms: tuple[FalseAlarm, ...]
    runs: int
    route_hours: float
    clean_route_hours: float

    @property
    def false_alarm_count(self) -> int:
        return len(self.false_alarms)

    @property
    def false_alarms_per_route_hour(self) -> float:
        return self.false_alarm_count / self.route_hours if self.route_hours else 0.0

    @property
    def clean_false_alarms(self) -> int:
        return sum(1 for f in self.false_alarms if f.scenario_kind == "clean")

    @property
    def all_detected(self) -> bool:
        return all(d.detected for d in self.detections)


@dataclass
class _Episode:
    """One firing transition of a fingerprint, and its resolution if one followed."""

    decided_at: float
    alert: Alert
    resolved_at: float | None = None


def _episodes(alerts: Sequence[tuple[float, Alert]]) -> list[_Episode]:
    """Firing transitions in decision order; a repeated firing of an open episode is one.

    An episode opens with a fingerprint's firing transition and closes with its
    resolved transition; another firing in between (a re-send, an update of the
    value) belongs to the same episode and is not counted again.
    """
    episodes: list[_Episode] = []
    open_: dict[str, _Episode] = {}
    for decided_at, alert in sorted(alerts, key=lambda pair: pair[0]):
        if alert.status == "firing" and alert.fingerprint not in open_:
            open_[alert.fingerprint] = episode = _Episode(decided_at, alert)
            episodes.append(episode)
        elif alert.status == "resolved" and alert.fingerprint in open_:
            open_.pop(alert.fingerprint).resolved_at = decided_at
    return episodes


def _matches(scenario: Scenario, incident: Incident, episode: _Episode) -> bool:
    labels = episode.alert.labels
    close = (incident.end if incident.end is not None else scenario.end) + MATCH_GRACE_S
    return (
        labels.get("route") == incident.route
        and labels.get("metric") == incident.metric
        and incident.start <= episode.decided_at <= close
    )


def _score_run(
    scenario: Scenario, alerts: Sequence[tuple[float, Alert]]
) -> tuple[list[Detection], list[FalseAlarm]]:
    matched: dict[int, list[_Episode]] = {i: [] for i in range(len(scenario.incidents))}
    false_alarms: list[FalseAlarm] = []
    for episode in _episodes(alerts):
        hits = [i for i, inc in enumerate(scenario.incidents) if _matches(scenario, inc, episode)]
        if hits:  # the earliest incident still waiting for its first alert, else the first
            waiting = [i for i in hits if not matched[i]]
            matched[(waiting or hits)[0]].append(episode)
        else:
            false_alarms.append(_false_alarm(scenario, episode))
    detections = [
        Detection(
            scenario.name,
            incident,
            matched[i][0].decided_at if matched[i] else None,
            matched[i][-1].resolved_at if matched[i] else None,
        )
        for i, incident in enumerate(scenario.incidents)
    ]
    return detections, false_alarms


def _false_alarm(scenario: Scenario, episode: _Episode) -> FalseAlarm:
    alert = episode.alert
    return FalseAlarm(
        scenario=scenario.name,
        scenario_kind=scenario.kind,
        decided_at=episode.decided_at,
        minute=(episode.decided_at - scenario.start) / 60.0,
        route=alert.labels.get("route", ""),
        metric=alert.labels.get("metric", ""),
        alertname=alert.alertname,
        fingerprint=alert.fingerprint,
    )


def score(runs: Sequence[tuple[Scenario, Sequence[tuple[float, Alert]]]]) -> ScoreTable:
    """Match each run's ``(decided_at, alert)`` transitions against its scenario's incidents.

    A firing alert with the incident's ``route`` and ``metric`` labels, decided
    within [start, (end or the stream's end) + ``MATCH_GRACE_S``], detects it;
    the delay is that of the first. Every other firing episode is a false alarm.
    """
    detections: list[Detection] = []
    false_alarms: list[FalseAlarm] = []
    for scenario, alerts in runs:
        found, wrong = _score_run(scenario, alerts)
        detections += found
        false_alarms += wrong
    kinds = tuple(
        _kind_score(kind, [d for d in detections if d.incident.kind == kind])
        for kind in _kinds_seen(detections)
    )
    return ScoreTable(
        kinds=kinds,
        detections=tuple(detections),
        false_alarms=tuple(false_alarms),
        runs=len(runs),
        route_hours=sum(s.route_hours for s, _ in runs),
        clean_route_hours=sum(s.route_hours for s, _ in runs if s.kind == "clean"),
    )


def _kinds_seen(detections: Sequence[Detection]) -> list[str]:
    seen = {d.incident.kind for d in detections}
    return [k for k in INCIDENT_KINDS if k in seen] + sorted(seen - set(INCIDENT_KINDS))


def _kind_score(kind: str, detections: Sequence[Detection]) -> KindScore:
    delays = [d.delay_s for d in detections if d.delay_s is not None]
    ending = [d for d in detections if d.incident.end is not None]
    resolutions = [d.resolution_delay_s for d in ending if d.resolution_delay_s is not None]
    return KindScore(
        kind=kind,
        incidents=len(detections),
        detected=len(delays),
        median_delay_s=statistics.median(delays) if delays else None,
        max_delay_s=max(delays) if delays else None,
        resolved=len(resolutions) if ending else None,
        median_resolution_s=statistics.median(resolutions) if resolutions else None,
        max_resolution_s=max(resolutions) if resolutions else None,
    )


def _minutes(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds / 60.0:.1f}"


def format_table(table: ScoreTable, max_listed: int = 20) -> str:
    """A plain-text report: one row per incident kind, then false alarms and misses."""
    header = (
        f"{'incident kind':<22}{'incidents':>10}{'detected':>10}{'missed':>8}"
        f"{'median min':>12}{'max min':>9}{'resolved':>10}{'res. median':>13}{'res. max':>10}"
    )
    lines = [header, "-" * len(header)]
    for k in table.kinds:
        resolved = "-" if k.resolved is None else f"{k.resolved}/{k.detected}"
        lines.append(
            f"{k.kind:<22}{k.incidents:>10}{k.detected:>10}{k.missed:>8}"
            f"{_minutes(k.median_delay_s):>12}{_minutes(k.max_delay_s):>9}{resolved:>10}"
            f"{_minutes(k.median_resolution_s):>13}{_minutes(k.max_resolution_s):>10}"
        )
    lines += [
        "",
        f"false alarms: {table.false_alarm_count} over {table.route_hours:.0f} route-hours "
        f"in {table.runs} streams ({table.false_alarms_per_route_hour:.4f} per route-hour); "
        f"on clean streams: {table.clean_false_alarms} over {table.clean_route_hours:.0f} "
        "route-hours",
    ]
    lines += _listing(table, max_listed)
    return "\n".join(lines)


def _listing(table: ScoreTable, max_listed: int) -> list[str]:
    """The misses and false alarms themselves, so a bad number can be chased down."""
    lines: list[str] = []
    missed = [d for d in table.detections if not d.detected]
    for d in missed[:max_listed]:
        lines.append(f"  missed  {d.scenario}: {d.incident.description}")
    for f in table.false_alarms[:max_listed]:
        lines.append(
            f"  false   {f.scenario} minute {f.minute:.1f}: {f.alertname} "
            f"route={f.route} metric={f.metric}"
        )
    hidden = max(0, len(missed) - max_listed) + max(0, len(table.false_alarms) - max_listed)
    if hidden:
        lines.append(f"  ... and {hidden} more")
    return lines
