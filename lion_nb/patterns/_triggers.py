"""Workflows meet events: nodes publish through a broker, and events start workflows.

    connect_broker(executor, broker)              # ctx.publish(topic, payload) works
    trigger = await WorkflowTrigger.start(broker, executor, "order.created", workflow)
    ...
    await trigger.stop()

A trigger subscribes like any consumer: each event starts one instance with the
event's payload as ``inputs`` (or what ``inputs=`` makes of it). The event is
acked when the instance succeeds and failure-acked when it fails, so the
broker's at-least-once machinery (redelivery, backoff, dead letters) applies to
whole workflow runs.
"""

from __future__ import annotations

import asyncio
from typing import Any, Callable, Mapping

from ..engine import WorkflowExecutor
from ..model import WorkflowDefinition
from .events import Event, EventAck, EventBroker

__all__ = ["connect_broker", "WorkflowTrigger"]


def connect_broker(executor: WorkflowExecutor, broker: EventBroker) -> None:
    """Make ``ctx.publish(topic, payload)`` publish on ``broker``."""

    async def sink(topic: str, payload: Any, headers: Mapping[str, Any]) -> None:
        await broker.publish(Event(topic, payload, headers=headers))

    executor.set_event_sink(sink)


class WorkflowTrigger:
    """Starts an instance of ``workflow`` for every event on ``topic``."""

    def __init__(self, broker: EventBroker, executor: WorkflowExecutor, topic: str,
                 workflow: WorkflowDefinition, subscriber_id: str,
                 inputs: Callable[[Any], Mapping[str, Any]] | None) -> None:
        self.broker = broker
        self.executor = executor
        self.topic = topic
        self.workflow = workflow
        self.subscriber_id = subscriber_id
        self._inputs = inputs or (lambda event: event.payload if isinstance(event.payload, dict)
                                  else {"payload": event.payload})
        self.instances: list[str] = []
        self._task: asyncio.Task[None] | None = None

    @classmethod
    async def start(cls, broker: EventBroker, executor: WorkflowExecutor, topic: str,
                    workflow: WorkflowDefinition, *, subscriber_id: str | None = None,
                    inputs: Callable[[Any], Mapping[str, Any]] | None = None,
                    **subscribe_options: Any) -> "WorkflowTrigger":
        """Subscribe and start consuming; ``subscribe_options`` go to ``broker.subscribe``."""
        trigger = cls(broker, executor, topic, workflow,
                      subscriber_id or f"trigger:{workflow.name}", inputs)
        rx, ack = await broker.subscribe(topic, trigger.subscriber_id, None, **subscribe_options)
        trigger._task = asyncio.get_running_loop().create_task(trigger._consume(rx, ack))
        return trigger

    async def _consume(self, rx: Any, ack: Any) -> None:
        async for delivery in rx:
            try:
                iid = await self.executor.execute_workflow(self.workflow,
                                                           inputs=self._inputs(delivery))
            except Exception as exc:  # a refused start is a failed delivery, redelivered
                await ack.send(EventAck.failure(delivery, self.subscriber_id, repr(exc)))
                continue
            self.instances.append(iid)
            asyncio.get_running_loop().create_task(self._settle(iid, delivery, ack))

    async def _settle(self, iid: str, delivery: Any, ack: Any) -> None:
        result = await self.executor.wait(iid)
        if result.succeeded:
            await ack.send(EventAck.success(delivery, self.subscriber_id))
        else:
            await ack.send(EventAck.failure(delivery, self.subscriber_id, str(result.error)))

    async def stop(self) -> None:
        """Stop consuming (unfinished instances keep running)."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
