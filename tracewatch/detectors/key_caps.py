"""Caps on the distinct (route, model, prompt_version) keys the minute buckets keep.

An app that puts a request id into ``prompt_version`` (a common mistake), or a
scanner that invents routes, sends valid events whose keys never repeat: without
a cap every one of them opens a bucket (about 6 KB per key and open minute,
bench/memory.py) and writes a ``stats_1m`` row a minute (issue 16).

``KeyCaps.fold`` admits keys first come, first served while less than half of
a cap is used; past half, a new key or route must be seen a second time (twice
in a batch, or again among the last ``max_keys`` candidates) before it takes a
place, so one-off keys (request ids, scanned routes) cannot fill what is left.
The rest is folded into explicit overflow keys, so nothing is dropped and every
event is still counted:

- a key of an admitted route over ``max_keys_per_route`` (or over ``max_keys``
  in all) becomes ``(route, "__other__", "__other__")``: the route's own
  statistics and alerts (merged over models and prompt versions) are unchanged;
- a route over ``max_routes`` becomes ``("__other__", "__other__", "__other__")``.

So at most ``max_keys + max_routes + 1`` keys are live at once. A key (or
route) idle for ``idle_s`` of event time gives its place back, so an app's
normal turnover of prompt versions is not folded for ever; the admitted ones
are kept in order of activity, so releasing costs only the keys released.
``folded`` counts the folded events per class (``route``, ``key``) for the
worker's ``/status`` and ``/metrics``.
"""

from __future__ import annotations

from collections import Counter, OrderedDict
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from tracewatch.detectors.columns import KeyTuple

__all__ = ["OTHER", "KeyCaps"]

#: the value an overflowing field is folded into
OTHER = "__other__"
_OTHER_ROUTE: KeyTuple = (OTHER, OTHER, OTHER)


class KeyCaps:
    """Which keys the buckets keep; pure, deterministic in event time."""

    def __init__(
        self,
        max_routes: int = 1_000,
        max_keys_per_route: int = 100,
        max_keys: int = 10_000,
        idle_s: float = 600.0,
    ) -> None:
        if min(max_routes, max_keys_per_route, max_keys) < 1 or idle_s <= 0:
            raise ValueError("key caps must be >= 1 and idle_s > 0")
        self.max_routes = max_routes
        self.max_keys_per_route = max_keys_per_route
        self.max_keys = max_keys
        self.idle_s = idle_s
        #: events folded, by class: ``route`` (into the global overflow key) and ``key``
        #: (a model / prompt version folded into its route's overflow key)
        self.folded: Counter[str] = Counter()
        # route → (its admitted (model, prompt_version) → last event time), by activity
        self._routes: OrderedDict[str, OrderedDict[tuple[str, str], float]] = OrderedDict()
        self._route_seen: dict[str, float] = {}
        self._keys = 0
        # keys and routes seen once while under pressure (``_again``), oldest first
        self._candidates: OrderedDict[tuple[str, ...], None] = OrderedDict()

    @property
    def keys(self) -> int:
        """Admitted keys now (overflow keys not included)."""
        return self._keys

    @property
    def routes(self) -> int:
        return len(self._routes)

    def fold(self, keys: Sequence[KeyTuple], ts: npt.NDArray[np.float64]) -> list[KeyTuple]:
        """``keys`` with the ones over the caps replaced by their overflow key.

        One step per distinct key of the batch, not per event.
        """
        if not keys:
            return []
        now = float(ts.max())
        self._release(now)
        mapping: dict[KeyTuple, KeyTuple] = {}
        for key, n in Counter(keys).items():
            mapping[key] = self._admit(key, now, n)
        changed = {k: v for k, v in mapping.items() if v is not k}
        if not changed:
            return list(keys)
        for key, n in Counter(k for k in keys if k in changed).items():
            self.folded["route" if changed[key] is _OTHER_ROUTE else "key"] += n
        return [mapping[k] for k in keys]

    def _admit(self, key: KeyTuple, now: float, n: int) -> KeyTuple:
        """The key to use for ``key``, seen ``n`` times in this batch."""
        route, model, version = key
        if route == OTHER or model == OTHER or version == OTHER:
            return key  # an app's own "__other__" is kept as sent: it is already folded
        admitted = self._routes.get(route)
        if admitted is None:
            if len(self._routes) >= self.max_routes:
                return _OTHER_ROUTE
            if len(self._routes) >= self.max_routes // 2 and not self._again((route,), n):
                return _OTHER_ROUTE
            admitted = self._routes[route] = OrderedDict()
        else:
            self._routes.move_to_end(route)
        self._route_seen[route] = now
        pair = (model, version)
        if pair in admitted:
            admitted[pair] = now
            admitted.move_to_end(pair)
            return key
        if len(admitted) >= self.max_keys_per_route or self._keys >= self.max_keys:
            self._release_keys(admitted, now - self.idle_s)
            if len(admitted) >= self.max_keys_per_route or self._keys >= self.max_keys:
                return (route, OTHER, OTHER)
        pressed = len(admitted) >= self.max_keys_per_route // 2 or self._keys >= self.max_keys // 2
        if pressed and not self._again(key, n):
            return (route, OTHER, OTHER)
        admitted[pair] = now
        self._keys += 1
        return key

    def _again(self, token: tuple[str, ...], n: int) -> bool:
        """Under pressure a new key (or route) is admitted only when seen a second time:
        twice in one batch, or once before among the last ``max_keys`` candidates. A
        request id sent as a prompt version is never seen twice, so it never takes a
        place (nor a bucket, nor a minute row); a real new version is, at once."""
        if n >= 2 or token in self._candidates:
            self._candidates.pop(token, None)
            return True
        self._candidates[token] = None
        if len(self._candidates) > self.max_keys:
            self._candidates.popitem(last=False)
        return False

    def _release(self, now: float) -> None:
        """Give back the places of keys and routes idle for longer than ``idle_s``."""
        horizon = now - self.idle_s
        while self._routes:
            route, admitted = next(iter(self._routes.items()))
            self._release_keys(admitted, horizon)
            if self._route_seen[route] >= horizon:
                break
            del self._routes[route], self._route_seen[route]
            self._keys -= len(admitted)

    def _release_keys(self, admitted: OrderedDict[tuple[str, str], float], horizon: float) -> None:
        """Drop a route's keys last seen before ``horizon`` (they are in order of activity)."""
        while admitted:
            pair, seen = next(iter(admitted.items()))
            if seen >= horizon:
                return
            del admitted[pair]
            self._keys -= 1
