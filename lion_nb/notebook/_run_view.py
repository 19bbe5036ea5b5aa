"""RunView: a live ipywidgets view of one instance that never floods the front end.

Node events cost the engine one ``list.append`` (the view subscribes the
buffer's bound ``append``, so no Python frame runs per event). A timer on the
kernel's loop folds the buffer at most every ``text_interval`` (counts,
progress, elapsed, failures) and re-draws the picture at most every
``picture_interval``, rendering the SVG in a worker thread. Each flush changes
each widget inside one ``hold_sync()``. Instance start/finish events from a
worker thread are handed to the loop with ``call_soon_threadsafe``; the
finish forces a last flush from the engine's own snapshot, so the final view
always matches the engine::

    view = RunView(executor)          # follows the next instance started
    view                              # display it, then
    result = await executor.run(definition)
"""

from __future__ import annotations

import asyncio
import contextlib
import html
import re
import time
from collections import Counter
from collections.abc import Iterable
from types import SimpleNamespace
from typing import Any

from ..engine import EventKind as K
from ..engine import ExecEvent
from ..errors import LionError, blame_lines, user_frames
from ._html import chip, failures_html, picture_html, snapshot_html, stats_html, title_html
from ._text import format_seconds, html_text
from ._dot import RESTORED_REASON, shown_states
from ._live_view import LiveView
from ._style import ERROR_STATES, TERMINAL_STATES

__all__ = ["RunView", "QUEUED_LIMIT", "header_html", "tracebacks_html"]

_SVG_WIDTH = re.compile(r'<svg[^>]*?\swidth="([0-9.]+(?:pt|px))"')
_EVENT_STATE = {K.NODE_QUEUED: "queued", K.NODE_STARTED: "running", K.NODE_RETRIED: "retrying",
                K.NODE_SUCCEEDED: "succeeded", K.NODE_FAILED: "failed",
                K.NODE_SKIPPED: "skipped", K.NODE_UPSTREAM_FAILED: "upstream_failed",
                K.NODE_CANCELLED: "cancelled", K.NODE_RESTORED: "restored"}
_PROBLEMS = ERROR_STATES | {"retrying"}
# Moves from a quiet state to a forward one (queued, running, succeeded) need no
# guard: they are most of the events, so _fold handles them inline.
_QUIET = frozenset({"pending", "queued", "running"})
_FORWARD = _QUIET | {"succeeded", "reused", "restored"}
_SUCCEEDED = K.NODE_SUCCEEDED
_RESTORED = K.NODE_RESTORED
_HEARTBEAT = 1.0  # seconds between elapsed-time refreshes while no node changes
#: Up to this many nodes a view also follows NODE_QUEUED and NODE_STARTED; above it, the
#: engine is spared building two more events per node (nodes then go from pending
#: straight to their end state; retries and failures still show).
QUEUED_LIMIT = 2_000
_STEP_KINDS = (K.NODE_QUEUED, K.NODE_STARTED)
_BASE_KINDS = frozenset(_EVENT_STATE) - set(_STEP_KINDS)


class RunView(LiveView):
    """Live picture, progress bar, counts per state, elapsed time and failures of one run."""

    def __init__(self, executor: Any, instance_id: str | None = None, *,
                 picture: bool = True, text_interval: float = 0.1,
                 picture_interval: float = 0.5, max_failures: int = 5,
                 queued: bool | None = None) -> None:
        import ipywidgets as w

        self.executor = executor
        self.instance_id = instance_id
        self.definition: Any = None
        self.picture_interval = max(picture_interval, text_interval)
        self.max_failures = max_failures
        self.follow_queued = queued  # queued/running too? None: up to QUEUED_LIMIT nodes
        self.states: dict[str, str] = {}
        self.attempts: dict[str, int] = {}
        self.errors: dict[str, str] = {}
        #: Each failed node's exception, from the engine's snapshot (tracebacks to expand).
        self.exceptions: dict[str, BaseException] = {}
        self.reasons: dict[str, str] = {}  # why each node ran or was reused (with a cache)
        self.problems: dict[str, None] = {}  # insertion-ordered set of nodes in trouble
        self.counts: Counter[str] = Counter()
        self.instance_state: str | None = None
        self.pictures = 0
        self.picture_problem = ""
        self.svg: str | None = None  # the latest picture
        self._started: float | None = None  # wall clock, as the engine stamps it
        self._ended: float | None = None
        self._had_error = False
        self._changed = self._picture_dirty = self._final = False
        self._last_picture = self._last_text = -1e9
        self._rendering = False
        self._generation = 0
        self._render_future: "asyncio.Future[Any] | None" = None
        self._render_cost = 0.0  # seconds the last picture took to build and lay out

        self.title = w.HTML()
        self.progress = w.IntProgress(min=0, max=1, value=0, description="0/0",
                                      layout=w.Layout(width="60%"))
        self.stats = w.HTML()
        self.failures = w.HTML()
        # Hidden until its first SVG: an empty Image is a broken-image icon in the browser.
        self.picture = w.Image(format="svg+xml", value=b"",
                               layout=w.Layout(display="none")) if picture else None
        parts = [self.title, self.progress, self.stats, self.failures]
        self.dashboard = _dashboard_widget(w, executor)
        if self.dashboard is not None:
            parts.insert(1, self.dashboard)
        self._widgets = [self.title, self.progress, self.stats, self.failures]
        self.widget = w.VBox(parts + ([self.picture] if self.picture is not None else []))

        super().__init__(None, interval=text_interval)
        observe = executor.observe
        # Node events only append (no frame per event); the timer polls while a run is on.
        self._follow(observe, _BASE_KINDS, wake=False)
        self._subs.append(observe.subscribe(self._on_instance_event,
                                            (K.INSTANCE_STARTED, K.INSTANCE_FINISHED)))
        if instance_id is not None:
            self._adopt(executor.snapshot(instance_id))
            if self._finished_state():
                self.finish()
                return
            self._arm(self.interval)
        self._final = True
        self.flush()
        self._final = False

    # --- instance events (any thread) -------------------------------------------------

    def _on_instance_event(self, ev: ExecEvent) -> None:
        self._on_loop(self._instance_event, ev)

    def _instance_event(self, ev: ExecEvent) -> None:
        self._adopt_loop()
        if ev.kind is K.INSTANCE_STARTED and self.instance_id is None:
            self.instance_id = ev.instance_id
            self._adopt(self.executor.snapshot(ev.instance_id))
            if self.instance_state in (None, "pending"):
                self.instance_state = "running"  # the event says so; the snapshot may lag
            self._changed = self._picture_dirty = True
            # The first picture waits one picture interval: a short run then pays for
            # one picture (its final one, drawn after it ends) instead of two.
            self._last_picture = time.monotonic()
            self._arm(self.interval)
        elif ev.kind is K.INSTANCE_FINISHED and ev.instance_id == self.instance_id:
            self.finish()

    def _finished_state(self) -> bool:
        return self.instance_state in ("succeeded", "failed", "cancelled")

    # --- folding buffered node events (loop thread) ---------------------------------------

    def _fold(self, events: Iterable[ExecEvent]) -> None:
        iid, states, attempts = self.instance_id, self.states, self.attempts
        to_state, quiet, forward = _EVENT_STATE, _QUIET, _FORWARD
        counts = self.counts
        changed = False
        for kind, _time, inst, node, attempt, data in events:  # unpacking beats attributes
            if inst != iid or node is None:
                continue
            changed = True
            state = to_state[kind]
            if kind is _SUCCEEDED and data and data.get("reason") == "reused":
                state = "reused"  # a cached result: the handler did not run
            elif kind is _RESTORED:  # read back by resume: a restored failure stays one
                if data and data.get("state", "succeeded") != "succeeded":
                    state = data["state"]
                self.reasons[node] = RESTORED_REASON
            old = states.get(node, "pending")
            # The common case, a forward move of a healthy node, is handled inline:
            # this loop runs once per engine event.
            if old in quiet and state in forward and attempt >= attempts.get(node, 0):
                counts[old] -= 1
                counts[state] += 1
                states[node] = state
                attempts[node] = attempt
            elif self._set(node, state, attempt):
                if state in ("failed", "retrying") and data and data.get("error"):
                    self.errors[node] = str(data["error"])
        if changed:
            self._changed = self._picture_dirty = True

    def _set(self, node: str, state: str, attempt: int) -> bool:
        """Record a node's state; refuse stale updates and never paint an error over."""
        old = self.states.get(node, "pending")
        old_attempt = self.attempts.get(node, 0)
        if attempt < old_attempt:
            return False  # a late event of an earlier attempt
        if old in TERMINAL_STATES and attempt == old_attempt and (
                state not in TERMINAL_STATES or old in ERROR_STATES):
            return False  # out of order, or a success trying to hide a failure
        self.counts[old] -= 1
        self.states[node] = state
        self.counts[state] += 1
        self.attempts[node] = attempt if attempt > old_attempt else old_attempt
        if state in _PROBLEMS:
            self.problems[node] = None
            if state != "retrying":
                self._had_error = True
        elif state in _QUIET and node in self.problems:
            pass  # a retry under way: its failed attempt stays listed until the node ends
        elif node in self.problems:
            del self.problems[node]
        return True

    def _adopt(self, snapshot: Any) -> None:
        """Take states from an engine snapshot (authoritative: it replaces ours)."""
        if self.definition is None and self._subs:
            follow = self.follow_queued
            if follow is None:
                follow = len(snapshot.definition.nodes) <= QUEUED_LIMIT
            if follow:  # subscribed before the roots are queued: no event is missed
                self._follow(self.executor.observe, _STEP_KINDS, wake=False)
        self.definition = snapshot.definition
        self.instance_state = str(getattr(snapshot.state, "value", snapshot.state))
        if self._started is None:
            self._started = getattr(snapshot, "started_at", None) or time.time()
        if self.instance_state == "pending" or (
                self.instance_state == "running" and not self.states and not self._buffer
                and not any(snapshot.attempts.values())):
            # A run that has just started: every node pending (a missing key means
            # pending), so there is nothing to convert.
            self.states = {}
            self.counts = Counter({"pending": len(self.definition.nodes)})
            return
        # NodeState is a StrEnum: its members are the strings, no conversion needed.
        self.states, self.reasons = shown_states(snapshot)
        self.attempts = dict(snapshot.attempts)
        self.errors = {k: str(v) for k, v in snapshot.errors.items()}
        self.exceptions = dict(getattr(snapshot, "exceptions", None) or {})
        self.counts = Counter(self.states.values())
        self.problems = {n: None for n, s in self.states.items() if s in _PROBLEMS}
        if self.counts.keys() & ERROR_STATES:
            self._had_error = True

    # --- the timer and flushing (loop thread) -------------------------------------------

    def _next_poll(self) -> float | None:
        following = self.instance_id is not None and self._ended is None and not self.closed
        return self.interval if following else None

    def _due(self) -> bool:
        now = time.monotonic()
        return self._changed or now - self._last_text >= _HEARTBEAT or (
            self._picture_dirty and now - self._last_picture >= self._picture_gap())

    def _render(self) -> None:
        now = time.monotonic()
        self._last_text = now
        total = len(self.definition.nodes) if self.definition is not None else 0
        done = sum(self.counts[s] for s in TERMINAL_STATES)
        self.progress.max = max(total, 1)
        self.progress.value = done
        self.progress.description = f"{done}/{total}"
        self.progress.bar_style = self._bar_style(done, total)
        name = self.definition.name if self.definition is not None else None
        if name is None:
            self.title.value = title_html(name, self.instance_state, self.instance_id)
        else:
            self.title.value = header_html(name, self._shown_state(), self.instance_id,
                                           done, total, self._elapsed(), self._left(done, total),
                                           self._retrying())
        self.stats.value = stats_html(self.counts, self._elapsed())
        self.failures.value = failures_html(list(self.problems)[:self.max_failures + 1],
                                            self.states, self.attempts, self.errors,
                                            self.max_failures, len(self.problems),
                                            self.picture_problem)
        if self.exceptions:
            self.failures.value += tracebacks_html(self.exceptions, self.max_failures)
        self._changed = False
        if self.picture is not None and self._picture_dirty and self.definition is not None \
                and (self._final or now - self._last_picture >= self._picture_gap()):
            self._draw(sync=self._final)

    def _shown_state(self) -> str:
        state = self.instance_state or "pending"
        if self._ended is None and state == "pending" and self._started is not None \
                and self.counts.get("pending", 0) < sum(self.counts.values()):
            return "running"  # nodes are moving: the instance runs, whatever we last read
        return state

    def _left(self, done: int, total: int) -> float | None:
        """Seconds left at the pace so far (tqdm's estimate), or None before it means much."""
        if self._ended is not None or done == 0 or done >= total:
            return None
        return self._elapsed() / done * (total - done)

    def _retrying(self) -> list[tuple[str, int, int]]:
        """(node, attempt under way or next, max attempts) of nodes on a second try or later."""
        out = []
        for node in self.problems:
            state = self.states.get(node)
            if state not in ("retrying", "queued", "running"):
                continue
            attempt = self.attempts.get(node, 0) + (state == "retrying")
            try:
                most = self.definition.node(node).retry.max_attempts
            except (LionError, KeyError, AttributeError):
                most = 0
            out.append((node, attempt, most))
        return out

    def _bar_style(self, done: int, total: int) -> str:
        if self._had_error:
            return "danger"
        return "success" if self._ended is not None and total and done == total else "info"

    def _elapsed(self) -> float:
        end = self._ended if self._ended is not None else time.time()
        return 0.0 if self._started is None else max(0.0, end - self._started)

    def _draw(self, sync: bool) -> None:
        from ._picture import Picture

        self._picture_dirty = False
        self._last_picture = time.monotonic()
        if self._rendering and not sync:  # one render in flight; redo once it lands
            self._picture_dirty = True
            return
        loop = self._loop
        if loop is None or loop.is_closed() or (sync and not loop.is_running()):
            self._show(Picture(self._as_snapshot()).svg)
            return
        # Building the DOT and the Graphviz layout take a while for big graphs: both
        # happen off the loop, on a copy of the states, even for the final picture, so
        # a run never waits for its own portrait.
        self._rendering = True
        self._generation += 1
        generation = self._generation
        snapshot = self._as_snapshot(copy=True)
        done: asyncio.Future[Any] = loop.create_future()
        self._render_future = done

        def build() -> str | None:
            t0 = time.perf_counter()
            svg = Picture(snapshot).svg
            self._render_cost = time.perf_counter() - t0
            return svg

        def landed(fut: "asyncio.Future[str | None]") -> None:
            self._rendered(fut, generation)
            if not done.done():
                done.set_result(None)

        def start() -> None:
            if generation != self._generation:  # superseded (a run shorter than a tick)
                done.set_result(None)
                return
            loop.run_in_executor(None, build).add_done_callback(landed)

        # Every picture starts one text interval after it is asked for: the thread building
        # it competes for the GIL, so a run shorter than that never shares the CPU with its
        # live portrait (only the final one is drawn), and after a run the code awaiting
        # the result goes first. The picture stays hidden until its SVG is out.
        loop.call_later(self.interval, start)

    def _picture_gap(self) -> float:
        """Seconds between live pictures: at least 4x the last one's cost (<= 20% of a core)."""
        return max(self.picture_interval, 4 * self._render_cost)

    def _rendered(self, fut: "asyncio.Future[Any]", generation: int) -> None:
        if generation != self._generation:  # a newer picture (the final one) supersedes it
            return
        self._rendering = False
        if not fut.cancelled() and fut.exception() is None:
            self._show(fut.result())

    async def drawn(self) -> None:
        """Wait until the latest picture (the final one, after a run) is on the widget."""
        while self._render_future is not None and not self._render_future.done():
            await asyncio.wait([self._render_future])
            await asyncio.sleep(0)  # let its done-callback run

    def _show(self, svg: str | None) -> None:
        self.pictures += 1
        if svg is None:
            from ._render import INSTALL_HINT
            self.picture_problem = INSTALL_HINT
            return
        self.svg = svg
        if self.picture is None:
            return
        with self.picture.hold_sync():
            self.picture.value = svg.encode("utf-8")
        # The layout is another widget model, so hold_sync above does not hold it: shown
        # only after the value has gone out, or the browser draws the empty Image for a
        # moment as a broken-image icon (seen by the browser suite).
        layout = self.picture.layout
        # An Image widget stretches to the output's width; keep the picture's own size.
        size = _SVG_WIDTH.search(svg[:2000])
        if size is not None:
            layout.max_width = size.group(1)
        layout.display = None
        if self.closed:  # the final picture landed after the snapshot: refresh it
            self._leave_snapshot()

    def _as_snapshot(self, copy: bool = False) -> Any:
        # Copies when the DOT is built on another thread while events keep arriving.
        states, attempts, errors = self.states, self.attempts, self.errors
        if copy:
            states, attempts, errors = dict(states), dict(attempts), dict(errors)
        return SimpleNamespace(definition=self.definition, state=self.instance_state,
                               node_states=states, attempts=attempts, errors=errors,
                               reasons=dict(self.reasons) if copy else self.reasons,
                               exceptions=dict(self.exceptions) if copy else self.exceptions,
                               instance_id=self.instance_id, _display_kind="instance")

    # --- end and display ---------------------------------------------------------------

    def finish(self) -> None:
        """Stop following; take the engine's final snapshot and flush it now."""
        if self.closed:
            return
        self._unsubscribe()
        snap = None
        if self.instance_id is not None:
            with contextlib.suppress(LionError):  # a forgotten instance: keep what we saw
                snap = self.executor.snapshot(self.instance_id)
        if snap is not None:
            del self._buffer[:]  # the snapshot supersedes whatever was still buffered
            self._adopt(snap)
        self._ended = getattr(snap, "finished_at", None) or time.time()
        self._picture_dirty = True
        self._final = True
        try:
            self.flush()
        finally:
            self._final = False
        self.closed = True
        self._leave_snapshot()

    def close(self) -> None:
        """Stop following (a last flush), leave the static snapshot, close the widgets."""
        self.finish()
        self.widget.close()

    def snapshot_html(self) -> str:
        """Static HTML of the view: header, progress, counts, failures and the picture."""
        parts = self._widget_html()
        if self.svg is not None:  # an <img>: inline <svg> is stripped when untrusted
            parts.append(picture_html(self.svg, repr(self)))
        return snapshot_html(parts)

    def __repr__(self) -> str:
        done = sum(self.counts[s] for s in TERMINAL_STATES)
        total = len(self.definition.nodes) if self.definition is not None else 0
        return f"RunView({self.instance_id}, {self.instance_state}, {done}/{total} done)"


def _dashboard_widget(w: Any, executor: Any) -> Any:
    """A link to the Dask dashboard when the executor runs handlers on Dask (else None)."""
    try:
        link = getattr(executor.runner, "dashboard_link", None)
    except Exception:  # a runner whose client is gone has no dashboard to show
        link = None
    # Absolute, or a path on this notebook server (the dashboard through jupyter-server-proxy
    # on Binder/JupyterHub); never a javascript: or other scheme.
    if not link or not str(link).startswith(("http://", "https://", "/")) \
            or str(link).startswith("//"):
        return None
    href = html.escape(str(link), quote=True)
    return w.HTML(f'<a href="{href}" target="_blank" rel="noopener">Dask dashboard</a>')


_FINAL_TEXT = {"succeeded": "finished", "failed": "failed", "cancelled": "cancelled"}


def header_html(name: str, state: str, instance_id: str | None, done: int, total: int,
                elapsed: float, left: float | None,
                retrying: list[tuple[str, int, int]], limit: int = 3) -> str:
    """The RunView's first line: name, state chip, n/m done, elapsed, ETA, retries, id."""
    parts = [f"<b>{html_text(name, 80)}</b>", chip(state, _FINAL_TEXT.get(state, state)),
             f"<span style='font-variant-numeric:tabular-nums'>{done:,}/{total:,} done · "
             f"{format_seconds(elapsed)}" + (f" · ~{format_seconds(left)} left" if left else "")
             + "</span>"]
    for node, attempt, most in retrying[:limit]:
        of = f"/{most}" if most else ""
        parts.append(chip("retrying", f"retrying {node} {attempt}{of}"))
    if len(retrying) > limit:
        parts.append(f"<small>+{len(retrying) - limit:,} more retrying</small>")
    if instance_id:
        parts.append(f"<small>{html_text(instance_id, 40)}</small>")
    return " ".join(parts)


def tracebacks_html(exceptions: dict[str, BaseException], limit: int) -> str:
    """One collapsed block per failed node: who raised what, then the handler's frames first.

    The engine's own frames are left out (the whole chain is ``result.exceptions[node]``).
    """
    import traceback

    blocks = []
    for node, exc in list(exceptions.items())[:limit]:
        root = exc
        while root.__cause__ is not None:
            root = root.__cause__
        lines = blame_lines(exc, node)
        lines += "".join(traceback.format_list(user_frames(root))).rstrip().splitlines()
        blocks.append(f"<details><summary><small>traceback of <b>{html_text(node, 60)}</b>"
                      f"</small></summary><pre style='margin:2px 0;font-size:85%'>"
                      f"{html_text(chr(10).join(lines))}</pre></details>")
    return "".join(blocks)
