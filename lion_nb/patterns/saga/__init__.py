"""Sagas: multi-step transactions whose completed steps are compensated when a later one fails.

The seed's example, in Python (``broker`` is an :class:`EventBroker`)::

    saga = (SagaDefinitionBuilder("order-saga", "Order Processing")
            .add_step(SagaStep("create-order", "Create Order", {"action": "create_order"},
                               "order-service").with_compensation({"action": "cancel_order"}))
            .build())
    saga_manager = SagaManager(broker, SagaManagerConfig())
    await saga_manager.register_definition(saga)
    await saga_manager.register_service("order-service", handler)   # or a remote SagaService
    instance = await saga_manager.create_instance("order-saga", {"order_id": "12345"})
    await saga_manager.start_instance(instance.id)
    await saga_manager.wait(instance.id)

Steps reach services over the broker (``saga.command.<service>``, replies on
``saga.reply.<manager name>``) or, for handlers registered in process, by a
direct call. With ``storage=`` the saga log is persisted and ``recover()``
resumes unfinished sagas after a crash. See docs/sagas.md.

Statuses: CREATED -> RUNNING -> COMPLETED, or RUNNING -> COMPENSATING ->
COMPENSATED; a compensation that keeps failing -> COMPENSATION_FAILED, a step
failing after a pivot -> FAILED; both wait for ``retry`` or ``mark_resolved``.

Inside: the manager (``_manager``) holds the registry and hands each started
instance to a run (``_run``) that drives it from the saga log's fold
(``_instance``, ``_log``); commands to services on the broker go through the
command channel (``_channel``), which routes replies to the waiting step.
"""

from ._command import SagaCommand
from ._config import SagaManagerConfig
from ._definition import SagaDefinition, SagaDefinitionBuilder
from ._instance import SagaInstance, StepState
from ._key import SagaKey
from ._ledger import SagaStatistics
from ._manager import SagaManager
from ._service import SagaService
from ._status import SagaStatus, StepStatus
from ._step import SagaStep
from ._topics import COMMAND_TOPIC_PREFIX, REPLY_TOPIC_PREFIX, command_topic, reply_topic

__all__ = [
    "COMMAND_TOPIC_PREFIX",
    "REPLY_TOPIC_PREFIX",
    "SagaCommand",
    "SagaDefinition",
    "SagaDefinitionBuilder",
    "SagaInstance",
    "SagaKey",
    "SagaManager",
    "SagaManagerConfig",
    "SagaService",
    "SagaStatistics",
    "SagaStatus",
    "SagaStep",
    "StepState",
    "StepStatus",
    "command_topic",
    "reply_topic",
]
