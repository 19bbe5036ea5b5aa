"""Deprecated module: import the store interface from :mod:`lion_nb.patterns.events`."""

import warnings

from .events import ACKED, DEAD, PENDING, ConsumerRecord, EventStore, InMemoryEventStore, \
    PendingRecord, StoreSnapshot

__all__ = ["ACKED", "ConsumerRecord", "DEAD", "EventStore", "InMemoryEventStore", "PENDING",
           "PendingRecord", "StoreSnapshot"]
warnings.warn("lion_nb.patterns.event_store is deprecated; import from lion_nb.patterns.events",
              DeprecationWarning, stacklevel=2)
