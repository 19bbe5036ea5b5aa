"""LiveView: the throttling core shared by SchedulerView, SagaView and EventView.

The same contract as RunView (see ``live.py``): the engine's observe callback
only appends to a buffer and arms a timer; the timer, on the kernel's loop,
folds the buffer and flushes at most once per ``interval`` (tqdm's rule: a
cheap check first, the clock only when armed). A flush writes every widget
inside one ``hold_sync()`` each, so the front end gets at most one message per
widget per flush. Events from another thread are handed to the loop with
``call_soon_threadsafe``. ``flush()`` forces an update now; ``close()`` stops
following and forces a last flush, so the final view matches the engine.

Subclasses implement ``_fold(events)`` (update their model from a batch of
events), ``_render()`` (write widget values) and may set ``_poll`` (seconds)
or override ``_next_poll()`` to re-read their subject on a timer while it has
no event to send (no observe stream, or busy with no event at the end).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Iterable
from typing import Any, Self

from ..engine.observe import EventKind, ExecEvent

__all__ = ["LiveView", "observe_of"]


def observe_of(subject: Any) -> Any:
    """The observe stream a broker, saga manager or scheduler publishes to, or None."""
    stream = getattr(subject, "observe", None)
    if stream is None:
        # Brokers and saga managers take ``observe=`` but do not expose it publicly.
        stream = getattr(subject, "_observe", None)
    return stream if hasattr(stream, "subscribe") else None


class LiveView:
    """Buffered observe events, throttled flushes in ``hold_sync()``, a forced final flush."""

    #: Event kinds the view follows (subclasses set it).
    kinds: frozenset[EventKind] = frozenset()

    def __init__(self, observe: Any, *, interval: float = 0.1,
                 poll: float | None = None) -> None:
        self.interval = interval
        self.flushes = 0          # how many times widgets were written (tests read it)
        self.closed = False
        self._poll = poll         # seconds between re-reads with no event, or None
        self._buffer: list[ExecEvent] = []
        self._armed = False
        self._timer: asyncio.TimerHandle | None = None
        self._last_flush = -1e9
        self._widgets: list[Any] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread = threading.get_ident()
        with contextlib.suppress(RuntimeError):
            self._loop = asyncio.get_running_loop()
        self._subs: list[Any] = []
        if observe is not None and self.kinds:
            self._subs.append(observe.subscribe(self._on_event, self.kinds))

    # --- events (any thread) -----------------------------------------------------------

    def _on_event(self, ev: ExecEvent) -> None:
        # The engine's hot path: one append and one flag test per event. ``_armed``
        # means an event-driven tick is due; a slower re-read timer does not count,
        # so the first event after a quiet spell replaces it with a prompt tick.
        self._buffer.append(ev)
        if not self._armed:
            self._armed = True
            self._arm()

    def _arm(self, delay: float | None = None) -> None:
        loop = self._loop
        if loop is None:  # built outside a loop (a script): adopt the one emitting
            with contextlib.suppress(RuntimeError):
                loop = self._loop = asyncio.get_running_loop()
                self._thread = threading.get_ident()
        if loop is None or loop.is_closed():
            # No loop to defer to: flush inline, still at most once per interval.
            self._armed = False
            if time.monotonic() - self._last_flush >= self.interval:
                self._tick()
            return
        if threading.get_ident() != self._thread:
            # Widgets and timers belong to the kernel's loop: hand the change over.
            loop.call_soon_threadsafe(self._arm, delay)
            return
        if delay is None:  # leading edge: flush soon after a quiet spell, never faster
            delay = max(0.0, self.interval - (time.monotonic() - self._last_flush))
        if self._timer is not None:
            self._timer.cancel()
        self._timer = loop.call_later(delay, self._tick)

    # --- flushing (loop thread) ------------------------------------------------------------

    def _take(self) -> list[ExecEvent]:
        buf = self._buffer
        n = len(buf)
        batch = buf[:n]
        del buf[:n]  # one C call: appends from other threads land after it, never lost
        return batch

    def _tick(self) -> None:
        self._timer = None
        self._armed = False
        if self.closed:
            return
        batch = self._take()
        again = self._next_poll()
        if batch or again is not None:
            self._fold(batch)
            self._write()
            again = self._next_poll()  # the flush may have seen the subject go idle
        if again is not None and not self.closed:
            # Not marked armed: an event may still bring the next tick forward.
            self._arm(again)

    def _write(self) -> None:
        self._last_flush = time.monotonic()
        self.flushes += 1
        with self._held():
            self._render()

    @contextlib.contextmanager
    def _held(self) -> Any:
        """Hold every widget's sync, so each sends one message for the whole flush."""
        with contextlib.ExitStack() as stack:
            for widget in self._widgets:
                stack.enter_context(widget.hold_sync())
            yield

    def _start_polling(self) -> None:
        """Arm the timer for a re-read if the subject wants one (call at the end of __init__)."""
        delay = self._next_poll()
        if delay is not None and not self._armed:
            self._arm(delay)

    def flush(self) -> None:
        """Fold whatever is buffered and update the widgets now (ignores the throttle)."""
        self._fold(self._take())
        self._write()

    def close(self) -> None:
        """Stop following and force a final flush; the widgets stay on screen."""
        if self.closed:
            return
        for sub in self._subs:
            sub.close()
        self._subs = []
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.flush()
        self.closed = True

    # --- for subclasses ---------------------------------------------------------------------

    def _fold(self, events: Iterable[ExecEvent]) -> None:
        raise NotImplementedError

    def _render(self) -> None:
        raise NotImplementedError

    def _next_poll(self) -> float | None:
        """Seconds until the next re-read with no event, or None to wait for one."""
        return self._poll

    # --- display -------------------------------------------------------------------------------

    widget: Any

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        bundle = self.widget._repr_mimebundle_(**kwargs)
        if isinstance(bundle, dict):  # a short text form, not the VBox's full repr
            bundle["text/plain"] = repr(self)
        return bundle
