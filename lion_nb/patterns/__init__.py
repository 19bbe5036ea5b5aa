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
from .nats import NatsEventStore
from .saga import (
    COMMAND_TOPIC_PREFIX, REPLY_TOPIC_PREFIX, SagaCommand, SagaDefinition, SagaDefinitionBuilder,
    SagaInstance, SagaKey, SagaManager, SagaManagerConfig, SagaService, SagaStatistics,
    SagaStatus, SagaStep, StepState, StepStatus, command_topic, reply_topic,
)

from .triggers import WorkflowTrigger, connect_broker

__all__ = [
    # workflows meet events
    "WorkflowTrigger", "connect_broker",
    # events
    "Event", "Delivery", "EventAck", "DeliveryMode", "RetryBackoff", "EventBrokerConfig",
    "BrokerStatistics", "EventBroker", "EventReceiver", "AckSender", "EventFilter",
    "EventStore", "InMemoryEventStore", "SqliteEventStore", "TopicPattern", "NatsEventStore",
    # sagas
    "SagaManager", "SagaManagerConfig", "SagaDefinition", "SagaDefinitionBuilder", "SagaStep",
    "SagaInstance", "SagaKey", "StepState", "SagaStatus", "StepStatus", "SagaCommand",
    "SagaService", "SagaStatistics", "command_topic", "reply_topic", "COMMAND_TOPIC_PREFIX",
    "REPLY_TOPIC_PREFIX",
]
