"""Idempotency keys a publisher used recently: expiring by time, bounded in count."""

from __future__ import annotations

from collections import deque

__all__ = ["IdempotencyKeys"]


class IdempotencyKeys:
    """Maps an idempotency key to the first event id published under it, for ``window`` s.

    A deque holds (stamp, key) in publish order, which is time order, so expiry
    pops from its front: O(1) per key. (A dict alone would not do: popping a
    dict's first entries leaves holes that ``next(iter(d))`` scans again and
    again.) Memory is bounded by the publish rate times the window, and never
    more than ``max_keys``: past it the oldest key is forgotten early.
    """

    __slots__ = ("window", "max_keys", "_keys", "_order")

    def __init__(self, window: float, max_keys: int) -> None:
        self.window = window
        self.max_keys = max_keys
        self._keys: dict[str, tuple[str, float]] = {}
        self._order: deque[tuple[float, str]] = deque()

    def __len__(self) -> int:
        return len(self._keys)

    def get(self, key: str, now: float) -> str | None:
        """The event id published under ``key`` within the window, else None."""
        self.expire(now)
        hit = self._keys.get(key)
        return None if hit is None else hit[0]

    def find(self, key: str) -> str | None:
        """Like :meth:`get` without expiring first (after one ``expire`` for a batch)."""
        hit = self._keys.get(key)
        return None if hit is None else hit[0]

    def add(self, key: str, event_id: str, stamp: float) -> None:
        """Remember ``key`` -> ``event_id`` as published at ``stamp`` (wall seconds)."""
        self._keys[key] = (event_id, stamp)
        self._order.append((stamp, key))
        while len(self._keys) > self.max_keys:
            self._drop_first()

    def discard(self, key: str, event_id: str) -> None:
        """Forget ``key`` if it still maps to ``event_id`` (its publish failed)."""
        if self._keys.get(key, (None,))[0] == event_id:
            del self._keys[key]  # its deque entry goes when it reaches the front

    def expire(self, now: float) -> None:
        """Drop keys stamped before ``now - window``."""
        order = self._order
        horizon = now - self.window
        while order and order[0][0] < horizon:
            self._drop_first()

    def _drop_first(self) -> None:
        stamp, key = self._order.popleft()
        hit = self._keys.get(key)
        if hit is not None and hit[1] == stamp:  # not re-added since
            del self._keys[key]
