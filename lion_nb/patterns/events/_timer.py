"""The redelivery timer: ack deadlines and delayed redeliveries on the injected clock.

One task serves every subscription of a broker. It sleeps until the earliest
ack deadline or delayed redelivery and is re-armed only when something due
earlier appears, so a steady stream of promptly acked events costs no timer
work at all.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from typing import Callable, Iterable

from ...clock import Clock
from ._channel import DELAYED, Pending, Subscription

__all__ = ["RedeliveryTimer"]


class RedeliveryTimer:
    """Fires ``on_expired(sub, p)`` at ack deadlines and re-buffers delayed redeliveries.

    ``subscriptions`` is a live view of the broker's subscriptions (their
    ``inflight`` dicts are in deadline order).
    """

    __slots__ = ("armed_at", "_clock", "_subs", "_on_expired", "_delayed", "_seq", "_task",
                 "_sleeper", "_wake", "_stopped")

    def __init__(self, clock: Clock, subscriptions: Callable[[], Iterable[Subscription]],
                 on_expired: Callable[[Subscription, Pending], None]) -> None:
        self.armed_at: float | None = None      # when the timer will next look; None: idle
        self._clock = clock
        self._subs = subscriptions
        self._on_expired = on_expired
        self._delayed: list[tuple[float, int, Subscription, Pending]] = []
        self._seq = itertools.count()
        self._task: asyncio.Task[None] | None = None
        self._sleeper: asyncio.Future[None] | None = None
        self._wake: asyncio.Future[None] | None = None
        self._stopped = False

    def start(self) -> None:
        """Start the timer task on the running loop."""
        self._task = asyncio.get_running_loop().create_task(self._run(),
                                                            name="lion-events-timer")

    async def stop(self) -> None:
        """Stop the task and wait for it to end."""
        self._stopped = True
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    def arm(self, due: float) -> None:
        """Something is due at ``due`` (monotonic), earlier than ``armed_at``: look then."""
        self.armed_at = due
        wake = self._wake
        if wake is not None and not wake.done():
            wake.set_result(None)
        elif self._sleeper is not None:
            self._sleeper.cancel()

    def redeliver_later(self, sub: Subscription, p: Pending, due: float) -> None:
        """Put ``p`` back in ``sub``'s buffer at ``due`` (monotonic) unless finished before."""
        p.state = DELAYED
        heapq.heappush(self._delayed, (due, next(self._seq), sub, p))
        if self.armed_at is None or due < self.armed_at:
            self.arm(due)

    def _next_due(self) -> float | None:
        delayed = self._delayed
        while delayed and delayed[0][3].state != DELAYED:
            heapq.heappop(delayed)  # finished or redelivered some other way
        best = delayed[0][0] if delayed else None
        for sub in self._subs():
            if sub.inflight:
                first = next(iter(sub.inflight.values())).deadline
                if best is None or first < best:
                    best = first
        return best

    def _fire_due(self, now: float) -> None:
        for sub in list(self._subs()):
            if not sub.inflight:
                continue
            expired = []
            for p in sub.inflight.values():
                if p.deadline > now:
                    break
                expired.append(p)
            for p in expired:
                self._on_expired(sub, p)
        delayed = self._delayed
        while delayed and delayed[0][0] <= now:
            _, _, sub, p = heapq.heappop(delayed)
            if p.state == DELAYED and not sub.closed:
                sub.put(p)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        clock = self._clock
        try:
            while not self._stopped:
                now = clock.monotonic()
                self._fire_due(now)
                due = self._next_due()
                if due is None:
                    self.armed_at = None
                    self._wake = loop.create_future()
                    await self._wake
                    self._wake = None
                else:
                    self.armed_at = due
                    self._sleeper = asyncio.ensure_future(clock.sleep(max(0.0, due - now)))
                    await asyncio.wait((self._sleeper,))
                    self._sleeper = None
        finally:
            if self._sleeper is not None:
                self._sleeper.cancel()
