"""One dedicated thread per storage, for blocking I/O off the event loop.

Cheaper per call than ``run_in_executor`` (measured here: ~18 µs against
~35 µs a round trip), which matters when a commit's own fsync costs ~80 µs:
a ``SimpleQueue`` hand-off and one ``call_soon_threadsafe`` back, no
concurrent.futures machinery. One thread also gives SQLite the single-thread
access it prefers and serializes a storage's calls in submission order.

A caller with nothing else to do until its call returns (one chain of nodes: the
next node waits for this commit) may ask for the call to run on its own thread
instead (``call(..., here=True)``), when the worker is idle with nothing queued.
That saves the two thread wake-ups of a hand-off, which on a loaded machine cost
more than the fsync itself (issue 21); the event loop is blocked for that one call.
"""

from __future__ import annotations

import asyncio
import queue
import threading
from typing import Any, Callable

__all__ = ["Worker"]

_STOP = object()


def _resolve(fut: asyncio.Future[Any], ok: bool, value: Any) -> None:
    if fut.done():  # the caller was cancelled; the work itself still happened
        return
    if ok:
        fut.set_result(value)
    else:
        fut.set_exception(value)


class Worker:
    """A daemon thread that runs submitted functions in order, awaitable from any loop."""

    def __init__(self, name: str) -> None:
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self.stopped = False
        # Calls submitted and not finished, under _count: a call runs on its caller's
        # thread only when this is 0, so it never overtakes one submitted before it.
        self._count = threading.Lock()
        self._pending = 0
        self._running = threading.Lock()  # held by whichever thread runs a call
        # Daemon: a storage a notebook forgot to close must not hang interpreter exit.
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    async def call(self, fn: Callable[..., Any], *args: Any, here: bool = False) -> Any:
        """Run ``fn(*args)`` on the thread and return (or raise) its outcome.

        ``here=True``: run it on the calling thread instead if the worker is idle
        with nothing queued (see the module docstring).
        """
        if self.stopped:  # queued work would never run: fail instead of hanging
            raise RuntimeError(f"{self._thread.name} is stopped")
        with self._count:
            idle = here and not self._pending
            self._pending += 1
        if idle:
            try:
                with self._running:
                    return fn(*args)
            finally:
                with self._count:
                    self._pending -= 1
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        self._queue.put((loop, fut, fn, args))
        return await fut

    def call_sync(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run ``fn(*args)`` on the thread and wait for it without a loop (setup, close)."""
        if self.stopped:
            raise RuntimeError(f"{self._thread.name} is stopped")
        done = threading.Event()
        box: list[Any] = []

        def job() -> None:
            try:
                box.append((True, fn(*args)))
            except BaseException as exc:  # handed back to the caller below
                box.append((False, exc))
            finally:
                done.set()

        with self._count:
            self._pending += 1
        self._queue.put((None, None, job, ()))
        done.wait()
        ok, value = box[0]
        if not ok:
            raise value
        return value

    def stop(self, last: Callable[[], Any] | None = None) -> None:
        """Let the thread finish queued work (then ``last()``, if given) and exit."""
        if last is not None and not self.stopped:
            with self._count:
                self._pending += 1
            self._queue.put((None, None, last, ()))
        if not self.stopped:
            self.stopped = True
            self._queue.put(_STOP)

    def join(self, timeout: float | None = None) -> None:
        """Wait until the thread has ended (after ``stop()``: queued work and ``last`` ran)."""
        self._thread.join(timeout)

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is _STOP:
                return
            loop, fut, fn, args = item
            try:
                with self._running:
                    ok, value = True, fn(*args)
            except BaseException as exc:  # delivered to the awaiting caller
                ok, value = False, exc
            with self._count:
                self._pending -= 1
            if loop is not None:  # call_sync and stop() jobs report on their own
                try:
                    loop.call_soon_threadsafe(_resolve, fut, ok, value)
                except RuntimeError:  # the loop closed while we worked; nobody is waiting
                    pass
            # Drop references while idle, so an unclosed storage can be collected.
            del item, loop, fut, fn, args, value
