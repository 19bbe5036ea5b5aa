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

__all__ = ["ACTIONS", "DECISIONS", "AuditListener", "AuditLog", "AuditRecord", "clip"]

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

    __slots__ = ("_records", "listeners", "check_listeners", "limit", "append")

    def __init__(self, limit: int | None = 100_000) -> None:
        self._records: collections.deque[Any] = collections.deque(maxlen=limit)
        self.listeners: tuple[AuditListener, ...] = ()
        """The current listeners (read-only; use add_listener / remove_listener)."""
        self.check_listeners: tuple[AuditListener, ...] = ()
        """The listeners that also hear allowed checks (read-only)."""
        self.limit = limit
        self.append = self._records.append
        """Keep a record without notifying: for hot paths that call ``notify`` themselves.

        Also takes an allowed check in compact form, ``(time, node, template)``,
        where ``template`` is that check's AuditRecord without time and node:
        one small tuple per node dispatch instead of a whole record, expanded
        when the records are read.
        """

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
        return lambda: self.remove_listener(callback)

    def remove_listener(self, callback: AuditListener) -> None:
        """Stop calling ``callback`` (idempotent)."""
        self.listeners = tuple(cb for cb in self.listeners if cb is not callback)
        self.check_listeners = tuple(cb for cb in self.check_listeners if cb is not callback)

    def records(self) -> list[AuditRecord]:
        """A snapshot list of the kept records, oldest first."""
        return [rec if type(rec) is AuditRecord else rec[2]._replace(time=rec[0], node=rec[1])
                for rec in list(self._records)]

    def clear(self) -> None:
        """Forget the kept records (listeners stay)."""
        self._records.clear()

    def __len__(self) -> int:
        return len(self._records)

    def __iter__(self) -> Iterator[AuditRecord]:
        return iter(self.records())
