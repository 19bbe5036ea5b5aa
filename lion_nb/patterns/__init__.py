"""Higher-level workflow patterns: events (publish/subscribe) and sagas.

The seed's event example, in Python::

    from lion_nb.patterns import Event, EventAck, EventBroker, EventBrokerConfig, InMemoryEventStore
    broker = EventBroker(EventBrokerConfig()).with_event_store(InMemoryEventStore())
    event_rx, ack_tx = await broker.subscribe("order.created", "order-processor", None)
    await broker.publish(Event("order.created", {"order_id": "12345", "customer": "ABC Corp"}))
    event = await event_rx.recv()
    await ack_tx.send(EventAck.success(event.id, "order-processor"))
"""

from .events import (
    AckSender, BrokerStatistics, Delivery, DeliveryMode, Event, EventAck, EventBroker,
    EventBrokerConfig, EventFilter, EventReceiver, EventStore, InMemoryEventStore, RetryBackoff,
    SqliteEventStore, TopicPattern,
)

__all__ = [
    # events
    "Event", "Delivery", "EventAck", "DeliveryMode", "RetryBackoff", "EventBrokerConfig",
    "BrokerStatistics", "EventBroker", "EventReceiver", "AckSender", "EventFilter",
    "EventStore", "InMemoryEventStore", "SqliteEventStore", "TopicPattern",
]
