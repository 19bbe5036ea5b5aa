"""Injectable time: the real clock, and a fake one that makes timing tests instant.

Everything in lion_nb that waits or stamps time takes a ``clock`` argument, so
deadlines, quanta, ack timeouts and backoff are tested exactly::

    clock = FakeClock()
    task = asyncio.ensure_future(clock.sleep(5))
    await clock.advance(5)      # the sleeper wakes; no real time passed
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time as _time

__all__ = ["Clock", "SystemClock", "FakeClock", "SYSTEM_CLOCK"]


class Clock:
    """Interface: ``monotonic()`` for intervals, ``time()`` for stamps, ``sleep()``."""

    def monotonic(self) -> float:
        """Seconds on a clock that never goes backwards."""
        raise NotImplementedError

    def time(self) -> float:
        """Wall-clock seconds since the epoch (for records people read)."""
        raise NotImplementedError

    async def sleep(self, seconds: float) -> None:
        """Wait ``seconds`` on this clock."""
        raise NotImplementedError


class SystemClock(Clock):
    """The real clocks of the machine."""

    monotonic = staticmethod(_time.monotonic)
    time = staticmethod(_time.time)

    async def sleep(self, seconds: float) -> None:
        """Sleep on the event loop."""
        await asyncio.sleep(max(0.0, seconds))


SYSTEM_CLOCK = SystemClock()


class FakeClock(Clock):
    """A clock that moves only when told to; sleepers wake in deadline order."""

    def __init__(self, start: float = 1_000.0, wall_start: float = 1_700_000_000.0) -> None:
        self._now = start
        self._wall_offset = wall_start - start
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._seq = itertools.count()

    def monotonic(self) -> float:
        """Fake seconds."""
        return self._now

    def time(self) -> float:
        """Fake wall-clock seconds, moving with ``monotonic()``."""
        return self._now + self._wall_offset

    async def sleep(self, seconds: float) -> None:
        """Wait until ``advance`` moves the clock past now + seconds."""
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (self._now + seconds, next(self._seq), fut))
        await fut

    @property
    def next_wakeup(self) -> float | None:
        """When the earliest sleeper wakes, or None."""
        while self._sleepers and self._sleepers[0][2].done():
            heapq.heappop(self._sleepers)
        return self._sleepers[0][0] if self._sleepers else None

    async def advance(self, seconds: float) -> None:
        """Move time forward, waking sleepers one deadline at a time in order."""
        target = self._now + seconds
        await _settle()
        while True:
            wake = self.next_wakeup
            if wake is None or wake > target:
                break
            self._now = max(self._now, wake)
            while self._sleepers and self._sleepers[0][0] <= self._now:
                _, _, fut = heapq.heappop(self._sleepers)
                if not fut.done():
                    fut.set_result(None)
            await _settle()
        self._now = target
        await _settle()


async def _settle(rounds: int = 20) -> None:
    """Let woken tasks run until they block again (bounded)."""
    for _ in range(rounds):
        await asyncio.sleep(0)
