"""Event-driven patterns: publish/subscribe with at-least-once or exactly-once delivery.

The seed's example, in Python::

    broker = EventBroker(EventBrokerConfig()).with_event_store(InMemoryEventStore())
    event_rx, ack_tx = await broker.subscribe("order.created", "order-processor", None)
    await broker.publish(Event("order.created", {"order_id": "12345"}))
    event = await event_rx.recv()
    await ack_tx.send(EventAck.success(event.id, "order-processor"))

The store interface (:class:`EventStore`, with the records it exchanges) is
public so another backend can implement it; its docstring is the contract.
Guarantees, wildcards, dead letters and stores are described in docs/events.md.
"""

from ._broker import EventBroker
from ._channel import AckSender, EventReceiver
from ._filter import EventFilter
from ._model import (
    BrokerStatistics, Delivery, DeliveryMode, Event, EventAck, EventBrokerConfig, RetryBackoff,
    new_event_id,
)
from ._sqlite import SqliteEventStore
from ._store import (
    ACKED, DEAD, PENDING, ConsumerRecord, ConsumerSink, DamagedRecord, EventStore,
    InMemoryEventStore, PendingRecord, StoreSnapshot, apply_effects,
)
from ._topics import TopicPattern, validate_topic

__all__ = [
    "ACKED", "AckSender", "BrokerStatistics", "ConsumerRecord", "ConsumerSink", "DEAD",
    "DamagedRecord", "Delivery", "DeliveryMode", "Event", "EventAck", "EventBroker",
    "EventBrokerConfig", "EventFilter", "EventReceiver", "EventStore", "InMemoryEventStore",
    "PENDING", "PendingRecord", "RetryBackoff", "SqliteEventStore", "StoreSnapshot",
    "TopicPattern", "apply_effects", "new_event_id", "validate_topic",
]
