"""RunView: a live ipywidgets view of one instance that never floods the front end.

The view costs the engine nothing per node: a timer on the kernel's loop reads
the instance's state at most every ``text_interval`` (``executor.progress``: the
node states as bytes, copied at C speed; an instance followed from another
process: its last polled snapshot) and re-draws the picture at most every
``picture_interval``, rendering the SVG in a worker thread. The engine is the
only source of node states, so a late or out-of-order event can never repaint
one. A few rare events only annotate: a retried attempt's error (listed while
the node runs again), reused and restored nodes. Each flush changes each widget
inside one ``hold_sync()``. Instance start/finish events from a worker thread
are handed to the loop with ``call_soon_threadsafe``; the finish forces a last
flush from the engine's own snapshot, so the final view always matches the
engine::

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
from collections.abc import Iterable, Iterator
from types import SimpleNamespace
from typing import Any

from ..engine import EventKind as K
from ..engine import ExecEvent
from ..errors import LionError, blame_lines, user_frames
from ..state import NodeState
from ._html import chip, failures_html, picture_html, snapshot_html, stats_html, title_html
from ._text import format_seconds, html_text
from ._dot import RESTORED_REASON
from ._live_view import LiveView
from ._style import TERMINAL_STATES

__all__ = ["RunView", "header_html", "tracebacks_html"]

_SVG_WIDTH = re.compile(r'<svg[^>]*?\swidth="([0-9.]+(?:pt|px))"')
# ``RunProgress.codes`` index this tuple (the engine's own order of NodeState).
_ORDER: tuple[NodeState, ...] = tuple(NodeState)
_CODE = {state: code for code, state in enumerate(_ORDER)}
_SUCCEEDED = _CODE[NodeState.SUCCEEDED]
_SKIPPED = _CODE[NodeState.SKIPPED]
# Nodes listed as in trouble: failed first, then retries, then what they took down.
_TROUBLE = bytes(_CODE[s] for s in (NodeState.FAILED, NodeState.RETRYING,
                                    NodeState.UPSTREAM_FAILED))
# A node whose attempt failed and that runs again is in one of these until it ends.
_AGAIN = bytes(_CODE[s] for s in (NodeState.QUEUED, NodeState.RUNNING))
_HEARTBEAT = 1.0  # seconds between elapsed-time refreshes while no node changes
#: The only events a view follows: they say what the engine's node states cannot.
_NOTES = (K.NODE_RETRIED, K.NODE_RESTORED, K.NODES_REUSED)


class RunView(LiveView):
    """Live picture, progress bar, counts per state, elapsed time and failures of one run."""

    def __init__(self, executor: Any, instance_id: str | None = None, *,
                 picture: bool = True, text_interval: float = 0.1,
                 picture_interval: float = 0.5, max_failures: int = 5,
                 queued: bool | None = None) -> None:
        """``queued`` is accepted for older code: queued and running nodes always show."""
        import ipywidgets as w

        self.executor = executor
        self.instance_id = instance_id
        self.definition: Any = None
        self.picture_interval = max(picture_interval, text_interval)
        self.max_failures = max_failures
        self.errors: dict[str, str] = {}
        #: Each failed node's exception, from the engine (tracebacks to expand).
        self.exceptions: dict[str, BaseException] = {}
        self.reasons: dict[str, str] = {}  # why each node ran or was reused (with a cache)
        self.problems: dict[str, None] = {}  # insertion-ordered set of nodes in trouble
        self.counts: Counter[str] = Counter()
        self.instance_state: str | None = None
        self.pictures = 0
        self.picture_problem = ""
        self.svg: str | None = None  # the latest picture
        # The model: per node (definition order) its state code and attempts, as the
        # engine last said; "reused"/"restored" shown over "succeeded"; nodes seen retrying.
        self._names: list[str] = []
        self._index: dict[str, int] = {}
        self._codes: bytes | bytearray = b""
        self._attempts: list[int] = []
        self._marks: dict[str, str] = {}
        self._retried: dict[str, None] = {}
        self._errors_by: dict[int, BaseException] = {}
        self._read_from: Any = None  # the snapshot last converted (a followed instance)
        self._local = False  # runs on this executor: read with executor.progress
        self._states: dict[str, Any] | None = None  # made on first read after a change
        self._attempt_map: dict[str, int] | None = None
        self._started: float | None = None  # wall clock, as the engine stamps it
        self._ended: float | None = None
        self._had_error = False
        self._changed = self._picture_dirty = self._final = False
        self._last_picture = self._last_text = -1e9
        self._rendering = False
        self._generation = 0
        self._render_future: "asyncio.Future[Any] | None" = None
        self._render_cost = 0.0  # seconds the last picture took to build and lay out
        self._tracebacks: tuple[tuple[int, ...], str] = ((), "")

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
        # Annotations only append (no frame per event); the timer reads them with the state.
        self._follow(observe, _NOTES, wake=False)
        self._subs.append(observe.subscribe(self._on_instance_event,
                                            (K.INSTANCE_STARTED, K.INSTANCE_FINISHED)))
        if instance_id is not None:
            self._begin(executor.snapshot(instance_id))
            if self._finished_state():
                self.finish()
                return
            self._arm(self.interval)
        self._final = True
        self.flush()
        self._final = False

    # --- the model: node states as the engine says (loop thread) --------------------------

    @property
    def states(self) -> dict[str, Any]:
        """Node name -> its state as shown (a NodeState, "reused" or "restored")."""
        if self._states is None:
            self._states = _shown(self._names, self._codes, self._marks)
        return self._states

    @property
    def attempts(self) -> dict[str, int]:
        """Node name -> attempts started so far."""
        if self._attempt_map is None:
            self._attempt_map = dict(zip(self._names, self._attempts))
        return self._attempt_map

    def _state_of(self, node: str) -> str:
        code = self._codes[self._index[node]] if node in self._index else 0
        return self._marks.get(node, "succeeded") if code == _SUCCEEDED else _ORDER[code].value

    def _attempt_of(self, node: str) -> int:
        return self._attempts[self._index[node]] if node in self._index else 0

    def _begin(self, snapshot: Any = None) -> None:
        """Follow ``instance_id``: a run of this executor is read with ``progress`` (no
        snapshot: that builds a dict per node); one followed from storage, its snapshot."""
        read = getattr(self.executor, "progress", None)
        progress = read(self.instance_id) if read is not None else None
        self._local = progress is not None
        if snapshot is None and progress is None:
            snapshot = self.executor.snapshot(self.instance_id)
        self.definition = (progress or snapshot).definition
        by_name = getattr(self.definition, "by_name", None)  # name -> position, node order
        if by_name is None:  # followed, and storage holds no definition
            by_name = {name: i for i, name in enumerate(snapshot.node_states)}
        self._index, self._names = by_name, list(by_name)
        self._codes, self._attempts = bytes(len(by_name)), [0] * len(by_name)
        if snapshot is not None:
            self._started = getattr(snapshot, "started_at", None) or self._started \
                or time.time()
            self._adopt(snapshot)
        else:
            self._read_progress()
            self._recount()

    def _adopt(self, snapshot: Any) -> None:
        """Take everything from an engine snapshot (authoritative: it replaces ours)."""
        self.instance_state = str(getattr(snapshot.state, "value", snapshot.state))
        if not self._local or not self._read_progress():
            self._read_snapshot(snapshot)
        self.exceptions = dict(getattr(snapshot, "exceptions", None) or {})
        self.errors = {k: str(v) for k, v in snapshot.errors.items()}
        self.reasons = {n: str(r) for n, r in (getattr(snapshot, "reasons", None) or {}).items()}
        marks = {n: "reused" for n, text in self.reasons.items() if text.startswith("reused")}
        for name in getattr(snapshot, "restored", None) or ():
            self.reasons.setdefault(name, RESTORED_REASON)
            marks[name] = "restored"
        self._marks = marks
        self._recount()

    def _read_progress(self) -> bool:
        """Read a run of this executor (a C-speed copy); False if it has none any more."""
        progress = self.executor.progress(self.instance_id)
        if progress is None:
            return False
        self.instance_state = progress.state.value
        if progress.codes == self._codes and progress.attempts == self._attempts \
                and progress.errors.keys() == self._errors_by.keys():
            return True
        self._codes, self._attempts = progress.codes, progress.attempts
        if progress.errors.keys() != self._errors_by.keys():
            self._errors_by = progress.errors
            names, codes = self._names, progress.codes
            # A denial under on_denied="skip" is a skip, not a failure (as in snapshots).
            self.exceptions = {names[i]: e for i, e in progress.errors.items()
                               if codes[i] != _SKIPPED}
            self.errors.update((n, str(e)) for n, e in self.exceptions.items())
        self._changed = True
        return True

    def _read_snapshot(self, snapshot: Any) -> None:
        """Read an instance from its snapshot (one followed in storage: as last polled)."""
        if snapshot is self._read_from:
            return
        self._read_from = snapshot
        states, attempts = snapshot.node_states, snapshot.attempts
        pending = NodeState.PENDING
        self._codes = bytes([_CODE.get(states.get(n, pending), 0) for n in self._names])
        self._attempts = [attempts.get(n, 0) for n in self._names]
        self.exceptions = dict(getattr(snapshot, "exceptions", None) or {})
        self.errors.update((k, str(v)) for k, v in snapshot.errors.items())
        self._changed = True

    def _recount(self) -> None:
        """Counts per state and the nodes in trouble, from the codes (at C speed per state)."""
        self._states = self._attempt_map = None
        codes, names = self._codes, self._names
        counts = Counter({state.value: codes.count(code) for code, state in enumerate(_ORDER)})
        for name, mark in self._marks.items():
            if self._state_of(name) == mark:
                counts["succeeded"] -= 1
                counts[mark] += 1
        self.counts = +counts  # the states present only
        if counts["failed"] or counts["upstream_failed"]:
            self._had_error = True
        # Nodes still in trouble keep their place; then new failures, retries, and the
        # nodes that failures took down.
        trouble = dict.fromkeys(n for n in self.problems if self._in_trouble(n))
        for code in _TROUBLE:
            trouble.update(dict.fromkeys(names[i] for i in _positions(codes, code)))
            if code == _TROUBLE[0]:
                trouble.update(dict.fromkeys(n for n in self._retried if self._in_trouble(n)))
        self.problems = trouble
        self._picture_dirty = True

    def _in_trouble(self, node: str) -> bool:
        code = self._codes[self._index[node]] if node in self._index else 0
        return code in _TROUBLE or (code in _AGAIN and node in self._retried)

    # --- reading: engine state each tick, a few annotating events (loop thread) ---------

    def _fold(self, events: Iterable[ExecEvent]) -> None:
        """Read the instance's state, then apply the annotating events that came with it."""
        iid = self.instance_id
        if iid is None or self.definition is None:
            return
        marked = False
        for kind, _time, inst, node, _attempt, data in events:
            if inst != iid:
                continue
            marked = True
            if kind is K.NODE_RETRIED and node is not None:
                self._retried[node] = None
                if data and data.get("error"):
                    self.errors[node] = str(data["error"])
            elif kind is K.NODES_REUSED and data:
                self._marks.update(dict.fromkeys(data.get("nodes") or (), "reused"))
            elif kind is K.NODE_RESTORED and node is not None:
                self.reasons[node] = RESTORED_REASON
                if not data or data.get("state", "succeeded") == "succeeded":
                    self._marks[node] = "restored"
        if self._ended is None:
            if self._local:
                self._read_progress()
            else:
                with contextlib.suppress(LionError):
                    snapshot = self.executor.snapshot(iid)
                    self.instance_state = str(getattr(snapshot.state, "value", snapshot.state))
                    self._read_snapshot(snapshot)
        if marked:
            self._changed = True
        if self._changed:
            self._recount()

    # --- instance events (any thread) -------------------------------------------------

    def _on_instance_event(self, ev: ExecEvent) -> None:
        self._on_loop(self._instance_event, ev)

    def _instance_event(self, ev: ExecEvent) -> None:
        loop = self._adopt_loop()
        if ev.kind is K.INSTANCE_STARTED and self.instance_id is None:
            self.instance_id = ev.instance_id
            self._started = ev.time
            self._begin()
            if self.instance_state in (None, "pending"):
                self.instance_state = "running"  # the event says so; the read may lag
            self._changed = self._picture_dirty = True
            # The first picture waits one picture interval: a short run then pays for
            # one picture (its final one, drawn after it ends) instead of two.
            self._last_picture = time.monotonic()
            self._arm(self.interval)
        elif ev.kind is K.INSTANCE_FINISHED and ev.instance_id == self.instance_id:
            if loop is not None and loop.is_running():
                # Once the run's waiters are told (the callbacks queued by now run first):
                # its snapshot is then a read of finished columns, not a dict per node.
                loop.call_soon(self.finish)
            else:
                self.finish()

    def _finished_state(self) -> bool:
        return self.instance_state in ("succeeded", "failed", "cancelled")

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
        # The listed nodes' states and attempts only: no dict of every node per flush.
        listed = list(self.problems)[:self.max_failures + 1]
        self.failures.value = failures_html(listed, {n: self._state_of(n) for n in listed},
                                            {n: self._attempt_of(n) for n in listed},
                                            self.errors, self.max_failures, len(self.problems),
                                            self.picture_problem) + self._tracebacks_html()
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
            state = self._state_of(node)
            if state not in ("retrying", "queued", "running"):
                continue
            attempt = self._attempt_of(node) + (state == "retrying")
            try:
                most = self.definition.node(node).retry.max_attempts
            except (LionError, KeyError, AttributeError):
                most = 0
            out.append((node, attempt, most))
        return out

    def _tracebacks_html(self) -> str:
        """The failures' tracebacks, formatted again only when the failures change."""
        shown = list(self.exceptions.items())[:self.max_failures]
        key = tuple(id(e) for _, e in shown)
        if key != self._tracebacks[0]:
            self._tracebacks = key, tracebacks_html(dict(shown), self.max_failures)
        return self._tracebacks[1]

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
        frame = self._frame()
        # Building the DOT and the Graphviz layout take a while for big graphs: both
        # happen off the loop, on a copy of the states, even for the final picture, so
        # a run never waits for its own portrait.
        self._rendering = True
        self._generation += 1
        generation = self._generation
        done: asyncio.Future[Any] = loop.create_future()
        self._render_future = done

        def build() -> str | None:
            t0 = time.perf_counter()
            svg = Picture(_instance(*frame)).svg  # the dicts of every node made here
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

    def _frame(self) -> tuple[Any, ...]:
        """What a picture is drawn from, copied at C speed (the run goes on meanwhile)."""
        return (self.definition, self.instance_state, self.instance_id, self._names,
                bytes(self._codes), list(self._attempts), dict(self._marks), dict(self.errors),
                dict(self.reasons), dict(self.exceptions))

    def _as_snapshot(self) -> Any:
        return _instance(*self._frame())

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
            if self.definition is None:  # finished before this view heard of its start
                self._begin(snap)
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


def _shown(names: list[str], codes: bytes | bytearray,
           marks: dict[str, str]) -> dict[str, Any]:
    """Node name -> state as shown: "reused"/"restored" marks over "succeeded"."""
    states: dict[str, Any] = dict(zip(names, map(_ORDER.__getitem__, codes)))
    succeeded = NodeState.SUCCEEDED
    for name, mark in marks.items():
        if states.get(name) is succeeded:
            states[name] = mark
    return states


def _positions(codes: bytes | bytearray, code: int) -> Iterator[int]:
    """Where ``code`` is in ``codes`` (found at C speed: a loop per hit, not per node)."""
    i = codes.find(code)
    while i >= 0:
        yield i
        i = codes.find(code, i + 1)


def _instance(definition: Any, state: str | None, instance_id: str | None, names: list[str],
              codes: bytes, attempts: list[int], marks: dict[str, str],
              errors: dict[str, str], reasons: dict[str, str],
              exceptions: dict[str, BaseException]) -> SimpleNamespace:
    """An instance snapshot as ``Picture`` reads one, from a view's frame."""
    return SimpleNamespace(definition=definition, state=state,
                           node_states=_shown(names, codes, marks),
                           attempts=dict(zip(names, attempts)), errors=errors, reasons=reasons,
                           exceptions=exceptions, instance_id=instance_id,
                           _display_kind="instance")


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
