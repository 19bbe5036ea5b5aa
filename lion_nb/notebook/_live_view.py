"""LiveView: the one throttling core of every live view (run, scheduler, saga, events).

The engine's observe callback only appends to a buffer: either the buffer's
bound ``append`` itself (no Python frame per event, for views that poll while a
run is on) or ``_on_event``, which also arms a timer after a quiet spell. The
timer, on the kernel's loop, folds the buffer and flushes at most once per
``interval`` (tqdm's rule: a cheap check first, the clock only when armed). A
flush writes every widget inside one ``hold_sync()`` each, so the front end
gets at most one message per widget per flush. Events from another thread are
handed to the loop with ``call_soon_threadsafe``. ``flush()`` forces an update
now; ``close()`` stops following and forces a last flush, so the final view
matches the engine, then leaves a static HTML snapshot in the notebook.

Subclasses implement ``_fold(events)`` (update their model from a batch) and
``_render()`` (write widget values); they may override
``_next_poll()`` (seconds until a re-read with no event, or None) and
``_due()`` (whether a tick with nothing forced should write the widgets).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Callable, Collection, Iterable
from typing import Any, Self

from ..engine import EventKind, ExecEvent
from ._html import progress_html, snapshot_html

__all__ = ["LiveView", "observe_of"]


def observe_of(subject: Any) -> Any:
    """The observe stream a broker, saga manager or scheduler publishes to, or None."""
    stream = getattr(subject, "observe", None)
    return stream if hasattr(stream, "subscribe") else None


class LiveView:
    """Buffered observe events, throttled flushes in ``hold_sync()``, a forced final flush."""

    #: Event kinds the view follows from the stream given to ``__init__`` (subclasses set it).
    kinds: frozenset[EventKind] = frozenset()
    widget: Any
    #: The widgets a flush writes, each held in ``hold_sync()`` (subclasses set it).
    _widgets: list[Any] = []

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
        self._display_id: str | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread = threading.get_ident()
        with contextlib.suppress(RuntimeError):
            self._loop = asyncio.get_running_loop()
        self._subs: list[Any] = []
        if observe is not None and self.kinds:
            self._follow(observe, self.kinds)

    def _follow(self, observe: Any, kinds: Collection[EventKind], *, wake: bool = True) -> None:
        """Buffer ``kinds`` from ``observe``; ``wake=False``: append only, a poll reads them."""
        callback = self._on_event if wake else self._buffer.append
        self._subs.append(observe.subscribe(callback, kinds))

    # --- events (any thread) -----------------------------------------------------------

    def _on_event(self, ev: ExecEvent) -> None:
        # The engine's hot path: one append and one flag test per event. ``_armed``
        # means an event-driven tick is due; a slower re-read timer does not count,
        # so the first event after a quiet spell replaces it with a prompt tick.
        self._buffer.append(ev)
        if not self._armed:
            self._armed = True
            self._arm()

    def _adopt_loop(self) -> asyncio.AbstractEventLoop | None:
        """The view's loop; built outside a loop (a script), it adopts the one running now."""
        if self._loop is None:
            with contextlib.suppress(RuntimeError):
                self._loop = asyncio.get_running_loop()
                self._thread = threading.get_ident()
        return self._loop

    def _on_loop(self, fn: Callable[..., None], *args: Any) -> None:
        """Call ``fn(*args)`` on the view's loop thread: now if on it, else handed over."""
        loop = self._loop
        if loop is not None and threading.get_ident() != self._thread \
                and not loop.is_closed():
            # Widgets and timers belong to the kernel's loop: hand the change over.
            loop.call_soon_threadsafe(fn, *args)
        else:
            fn(*args)

    def _arm(self, delay: float | None = None) -> None:
        loop = self._adopt_loop()
        if loop is None or loop.is_closed():
            # No loop to defer to: flush inline, still at most once per interval.
            self._armed = False
            if time.monotonic() - self._last_flush >= self.interval:
                self._tick()
            return
        if threading.get_ident() != self._thread:
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
            if self._due():
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

    def _unsubscribe(self) -> None:
        for sub in self._subs:
            sub.close()
        self._subs = []
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def flush(self) -> None:
        """Fold whatever is buffered and update the widgets now (ignores the throttle)."""
        self._fold(self._take())
        self._write()

    def close(self) -> None:
        """Stop following, force a final flush, and leave a static snapshot in the notebook."""
        if self.closed:
            return
        self._unsubscribe()
        self.flush()
        self.closed = True
        self._leave_snapshot()

    # --- for subclasses ---------------------------------------------------------------------

    def _fold(self, events: Iterable[ExecEvent]) -> None:
        raise NotImplementedError

    def _render(self) -> None:
        raise NotImplementedError

    def snapshot_html(self) -> str:
        """Static HTML of what the view shows now (what a saved notebook keeps)."""
        return snapshot_html(self._widget_html())

    def _widget_html(self) -> list[str]:
        parts = []
        for widget in self._widgets:
            if hasattr(widget, "bar_style"):  # a progress bar: drawn, not a widget
                parts.append(progress_html(widget.value, widget.max, widget.bar_style,
                                           widget.description))
            else:
                parts.append(str(widget.value))
        return parts

    def _next_poll(self) -> float | None:
        """Seconds until the next re-read with no event, or None to wait for one."""
        return self._poll

    def _due(self) -> bool:
        """Whether a timer tick should write the widgets (default: always)."""
        return True

    # --- display -------------------------------------------------------------------------------

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _ipython_display_(self) -> None:
        # Displayed under a display id of our own, so the final state can replace the
        # widget with static HTML: a saved notebook then shows it without a kernel.
        from IPython.display import display

        if self._display_id is None:
            self._display_id = f"lion-nb-view-{id(self):x}-{time.monotonic_ns():x}"
        if self.closed:
            display(self._snapshot_bundle(), raw=True, display_id=self._display_id)
        else:
            display(self._bundle(), raw=True, display_id=self._display_id)

    def _leave_snapshot(self) -> None:
        if self._display_id is None:
            return
        from IPython.display import update_display

        update_display(self._snapshot_bundle(), raw=True, display_id=self._display_id)

    def _snapshot_bundle(self) -> dict[str, str]:
        return {"text/html": self.snapshot_html(), "text/plain": repr(self)}

    def _bundle(self, **kwargs: Any) -> dict[str, Any]:
        bundle = self.widget._repr_mimebundle_(**kwargs)
        if not isinstance(bundle, dict):
            return {"text/plain": repr(self)}
        bundle["text/plain"] = repr(self)  # a short text form, not the VBox's full repr
        # Where widgets cannot render (a saved notebook on GitHub), the HTML still can.
        bundle.setdefault("text/html", self.snapshot_html())
        return bundle

    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        return self._bundle(**kwargs)
