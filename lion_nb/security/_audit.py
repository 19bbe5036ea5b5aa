"""The audit trail: one immutable record per security decision or event.

The :class:`~lion_nb.security.authority.Authority` appends an
:class:`AuditRecord` for every mint, attenuation, grant, check (allowed or
denied), revocation and failed verification, and hands each record to its
listeners (the executor forwards them to the observe stream)::

    log = AuditLog()
    log.add_listener(print)
    log.record(AuditRecord(time.time(), "revoke", None, "tok1"))
"""

from __future__ import annotations

import collections
import logging
from typing import Any, Callable, Iterator, NamedTuple

__all__ = ["ACTIONS", "DECISIONS", "AuditListener", "AuditLog", "AuditRecord", "Template", "clip",
           "expand", "template", "templates"]

_log = logging.getLogger("lion_nb.security")

ACTIONS = ("mint", "attenuate", "grant", "check", "revoke", "verify")
"""The values ``AuditRecord.action`` takes."""

DECISIONS = ("allow", "deny", None)
"""The values ``AuditRecord.decision`` takes (None: an event, not a decision)."""


class AuditRecord(NamedTuple):
    """One audited event: who, what, which node, the decision and why.

    A NamedTuple rather than a frozen dataclass: an allowed check builds one per
    node dispatch and this is the cheapest immutable record Python has (about a
    third of a frozen dataclass's cost); ``_asdict()`` and pandas read it as is.
    """

    time: float
    """Wall-clock seconds (from the authority's clock)."""
    action: str
    """One of :data:`ACTIONS`."""
    decision: str | None = None
    """"allow", "deny", or None for events that decide nothing (mint, revoke)."""
    token_id: str | None = None
    """The token concerned (for an allowed check, the one that covered it)."""
    capability: str | None = None
    """The capability or requirement, as text (``"db:write:orders/*"``)."""
    node: str | None = None
    """The node that asked, for checks."""
    instance_id: str | None = None
    """The workflow instance the grant or check belongs to."""
    holder: str | None = None
    """Who the token was issued to or granted for, if named."""
    reason: str | None = None
    """Why, for denials and derived tokens (``"expired"``, ``"from tok1"``)."""


AuditListener = Callable[[AuditRecord], None]

Template = tuple[str, str | None, str | None, str | None, str | None, str | None, str | None]
"""An AuditRecord without ``time`` and ``node``: what repeats between allowed checks."""


def template(action: str, decision: str | None, token_id: str | None, capability: str | None,
             instance_id: str | None, holder: str | None, reason: str | None = None
             ) -> Template:
    """The template of a compact entry ``(time, node, template)`` (see ``AuditLog.append``).

    A plain tuple of strings, not an AuditRecord: the garbage collector stops
    tracking such a tuple, and then every entry holding it, so a ring of
    100,000 allowed checks costs nothing in later collections (a NamedTuple
    stays tracked and kept the whole ring in every full collection).
    """
    return (action, decision, token_id, capability, instance_id, holder, reason)


def templates(allowed: Template | tuple[Template, ...]) -> tuple[Template, ...]:
    """The templates of one compact entry: one, or a group (a node with several requirements)."""
    if allowed and type(allowed[0]) is str:
        return (allowed,)
    return allowed  # type: ignore[return-value]


def expand(time: float, node: str | None, tmpl: Template) -> AuditRecord:
    """The AuditRecord a compact entry ``(time, node, tmpl)`` stands for."""
    return AuditRecord(time, tmpl[0], tmpl[1], tmpl[2], tmpl[3], node, tmpl[4], tmpl[5],
                       tmpl[6])


CLIP = 200
"""Most characters of caller-supplied text an audit record keeps per field."""


def clip(text: str | None, limit: int = CLIP) -> str | None:
    """``text`` cut to ``limit`` characters (marked with its full length), None kept.

    Audit fields may quote hostile input (a malformed token, a requirement);
    without a cap, one 16 KB token per record would fill memory at the default limit.
    """
    if text is None or len(text) <= limit:
        return text
    return f"{text[:limit]}... ({len(text)} characters)"


class AuditLog:
    """A bounded in-memory list of records plus synchronous listeners.

    ``limit`` bounds memory in long-running processes (None: unbounded); the
    oldest records fall off first, while listeners still see every record
    they subscribed to. A listener that raises is logged and never breaks the
    decision it reports.
    """

    __slots__ = ("_records", "listeners", "check_listeners", "limit", "append", "keep_allowed",
                 "on_change")

    def __init__(self, limit: int | None = 100_000) -> None:
        # Room for ``limit`` allowed checks of three items each (see keep_allowed);
        # records() shows the last ``limit`` records whatever they are.
        self._records: collections.deque[Any] = collections.deque(
            maxlen=None if limit is None else 3 * limit)
        self.listeners: tuple[AuditListener, ...] = ()
        """The current listeners (read-only; use add_listener / remove_listener)."""
        self.check_listeners: tuple[AuditListener, ...] = ()
        """The listeners that also hear allowed checks (read-only)."""
        self.limit = limit
        self.append = self._records.append
        """Keep a record without notifying: for hot paths that call ``notify`` themselves."""
        self.keep_allowed = self._records.extend
        """Keep an allowed check given as ``(time, node, template)``, without notifying.

        ``template`` (see :func:`template`) is that check's record without time
        and node, or a tuple of them (one node dispatch, several requirements,
        each one record when read). The three values are kept as three items, not as one tuple:
        an object kept per node dispatch would set off the garbage collector
        every few hundred dispatches while the log fills (and each collection
        walks the run's state), while the tuple passed here is freed at once.
        One C call (``deque.extend``) keeps the three together under the GIL, so
        a check in a worker thread cannot land between them. Expanded into an
        AuditRecord when the records are read.
        """
        self.on_change: Callable[[], None] | None = None
        """Called after the listeners change: holders of remembered decisions that skip the
        listener test per check (the dispatch gate) drop them then."""

    def record(self, rec: AuditRecord) -> None:
        """Keep ``rec`` and hand it to every listener."""
        self._records.append(rec)
        if self.listeners:
            self.notify(rec)

    def record_allowed(self, rec: AuditRecord) -> None:
        """Keep an allowed check and hand it to the listeners that asked for those."""
        self._records.append(rec)
        if self.check_listeners:
            self.notify(rec, self.check_listeners)

    def notify(self, rec: AuditRecord,
               listeners: tuple[AuditListener, ...] | None = None) -> None:
        """Hand ``rec`` to every listener (or to ``listeners``); one that raises is logged."""
        for listener in self.listeners if listeners is None else listeners:
            try:
                listener(rec)
            except Exception:  # an observer's bug must not turn a check into a crash
                _log.exception("audit listener %r failed on %s", listener, rec.action)

    def add_listener(self, callback: AuditListener, *,
                     allowed_checks: bool = True) -> Callable[[], None]:
        """Call ``callback(record)`` for every new record; returns a remover.

        ``allowed_checks=False``: not for allowed checks (they are still kept),
        so a check that passes calls nothing -- what a forwarder on the dispatch
        path wants. Denials, grants and every other record still reach it.
        """
        if not callable(callback):
            raise TypeError(f"audit listener must be callable, not {callback!r}")
        self.listeners = self.listeners + (callback,)
        if allowed_checks:
            self.check_listeners = self.check_listeners + (callback,)
            self._changed()
        return lambda: self.remove_listener(callback)

    def remove_listener(self, callback: AuditListener) -> None:
        """Stop calling ``callback`` (idempotent)."""
        self.listeners = tuple(cb for cb in self.listeners if cb is not callback)
        self.check_listeners = tuple(cb for cb in self.check_listeners if cb is not callback)
        self._changed()

    def _changed(self) -> None:
        if self.on_change is not None:
            self.on_change()

    def records(self) -> list[AuditRecord]:
        """A snapshot list of the kept records, oldest first."""
        items = list(self._records)
        out: list[AuditRecord] = []
        i, n = 0, len(items)
        # The oldest allowed check may have lost its first items to the limit: a node
        # (str or None) or a template (a plain tuple) cannot start an entry.
        while i < n and (items[i] is None or type(items[i]) in (str, tuple)):
            i += 1
        while i < n:
            item = items[i]
            if type(item) is AuditRecord:
                out.append(item)
                i += 1
            else:  # (time, node, template or group), see keep_allowed
                node = items[i + 1]
                out.extend(expand(item, node, t) for t in templates(items[i + 2]))
                i += 3
        return out if self.limit is None else out[-self.limit:]

    def clear(self) -> None:
        """Forget the kept records (listeners stay)."""
        self._records.clear()

    def __len__(self) -> int:
        return len(self.records())

    def __iter__(self) -> Iterator[AuditRecord]:
        return iter(self.records())
