"""Calling a service handler: async or in a worker thread, under a timeout on any clock."""

from __future__ import annotations

import asyncio
import inspect
from typing import Any, Awaitable, Callable

from ...clock import Clock, SystemClock
from ._command import SagaCommand

__all__ = ["Handler", "run_with_timeout", "wrap_handler"]

Handler = Callable[[SagaCommand], Awaitable[Any]]


def wrap_handler(handler: Any, service: str) -> Handler:
    """An async callable for ``handler``; plain functions run in a worker thread."""
    if not callable(handler):
        raise TypeError(f"handler of service {service!r} must be callable, got "
                        f"{type(handler).__name__}")
    # An object whose __call__ is async (a recorder, a bound service) counts as async too.
    if inspect.iscoroutinefunction(handler) or inspect.iscoroutinefunction(
            type(handler).__call__):
        return handler

    async def in_thread(cmd: SagaCommand) -> Any:
        result = await asyncio.to_thread(handler, cmd)
        return await result if inspect.isawaitable(result) else result
    return in_thread


async def run_with_timeout(clock: Clock, awaitable: Awaitable[Any], seconds: float
                           ) -> tuple[bool, Any]:
    """``(True, result)``, or ``(False, None)`` if ``seconds`` passed first on ``clock``.

    On the system clock this is ``asyncio.timeout`` (one timer handle, no
    task); on another clock (a FakeClock in tests) the work races a sleeper.
    Exceptions of the work propagate; on timeout the work is cancelled.
    """
    if isinstance(clock, SystemClock):
        try:
            async with asyncio.timeout(seconds) as cm:
                return True, await awaitable
        except TimeoutError:
            if cm.expired():
                return False, None
            raise
    work = asyncio.ensure_future(awaitable)
    sleeper = asyncio.ensure_future(clock.sleep(seconds))
    try:
        await asyncio.wait((work, sleeper), return_when=asyncio.FIRST_COMPLETED)
    except BaseException:
        work.cancel()
        raise
    finally:
        sleeper.cancel()
    if work.done():
        return True, work.result()
    work.cancel()
    await asyncio.gather(work, return_exceptions=True)
    return False, None
