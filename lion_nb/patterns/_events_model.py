"""Old home of the event value types; they live in :mod:`lion_nb.patterns.events` now.

Kept for the saga modules, which import from here, until they import from ``.events``.
"""

from .events import Delivery, Event, EventAck, RetryBackoff, new_event_id

__all__ = ["Delivery", "Event", "EventAck", "RetryBackoff", "new_event_id"]
