"""The broker's timer: ack deadlines and delayed redeliveries on the injected clock.

One timer task serves every subscription. It sleeps until the earliest ack
deadline or delayed redelivery, and is re-armed only when something due
earlier appears, so a steady stream of promptly acked events costs no timer
work at all.
"""

from __future__ import annotations

import asyncio
import heapq

from ..clock import Clock
from ._events_subscription import DELAYED, Pending, Subscription

__all__: list[str] = []


class TimerMixin:
    """Timeouts and delayed redelivery for :class:`EventBroker`."""

    _clock: Clock
    _closed: bool
    _subs: dict[str, Subscription]
    _delayed: list[tuple[float, int, Subscription, Pending]]
    _armed_at: float | None
    _sleeper: "asyncio.Future[None] | None"
    _timer_wake: "asyncio.Future[None] | None"

    def _rearm(self, due: float) -> None:
        self._armed_at = due
        wake = self._timer_wake
        if wake is not None and not wake.done():
            wake.set_result(None)
        elif self._sleeper is not None:
            self._sleeper.cancel()

    def _next_due(self) -> float | None:
        delayed = self._delayed
        while delayed and delayed[0][3].state != DELAYED:
            heapq.heappop(delayed)  # finished or redelivered some other way
        best = delayed[0][0] if delayed else None
        for sub in self._subs.values():
            if sub.inflight:
                first = next(iter(sub.inflight.values())).deadline
                if best is None or first < best:
                    best = first
        return best

    def _fire_due(self, now: float) -> None:
        for sub in list(self._subs.values()):
            if not sub.inflight:
                continue
            expired = []
            for p in sub.inflight.values():
                if p.deadline > now:
                    break
                expired.append(p)
            for p in expired:
                if p.processed:
                    self._finish_processed(sub, p)
                else:
                    self._retry(sub, p, f"no ack within {sub.ack_timeout:g}s "
                                f"(attempt {p.attempts})", None, "timeout")
        delayed = self._delayed
        while delayed and delayed[0][0] <= now:
            _, _, sub, p = heapq.heappop(delayed)
            if p.state == DELAYED and not sub.closed:
                sub.put(p)

    async def _run_timer(self) -> None:
        loop = asyncio.get_running_loop()
        clock = self._clock
        try:
            while not self._closed:
                now = clock.monotonic()
                self._fire_due(now)
                due = self._next_due()
                if due is None:
                    self._armed_at = None
                    self._timer_wake = loop.create_future()
                    await self._timer_wake
                    self._timer_wake = None
                else:
                    self._armed_at = due
                    self._sleeper = asyncio.ensure_future(clock.sleep(max(0.0, due - now)))
                    await asyncio.wait((self._sleeper,))
                    self._sleeper = None
        finally:
            if self._sleeper is not None:
                self._sleeper.cancel()

    # provided by DeliveryMixin
    def _retry(self, sub: Subscription, p: Pending, error: str | None,
               delay: float | None, reason: str) -> None:  # pragma: no cover - overridden
        raise NotImplementedError

    def _finish_processed(self, sub: Subscription, p: Pending) -> None:  # pragma: no cover
        raise NotImplementedError
