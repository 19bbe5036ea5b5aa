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

from ._triggers import WorkflowTrigger, connect_broker

__all__ = [
    "AckSender", "BrokerStatistics", "COMMAND_TOPIC_PREFIX", "Delivery", "DeliveryMode",
    "Event", "EventAck", "EventBroker", "EventBrokerConfig", "EventFilter", "EventReceiver",
    "EventStore", "InMemoryEventStore", "NatsEventStore", "REPLY_TOPIC_PREFIX", "RetryBackoff",
    "SagaCommand", "SagaDefinition", "SagaDefinitionBuilder", "SagaInstance", "SagaKey",
    "SagaManager", "SagaManagerConfig", "SagaService", "SagaStatistics", "SagaStatus",
    "SagaStep", "SqliteEventStore", "StepState", "StepStatus", "TopicPattern",
    "WorkflowTrigger", "command_topic", "connect_broker", "reply_topic",
]
