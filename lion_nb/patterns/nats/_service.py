"""Run saga services in their own process, on a broker whose events live on NATS.

``python -m lion_nb service MODULE:ATTR --nats URL`` imports ``ATTR`` from
``MODULE`` and serves it until SIGTERM or Ctrl-C. ``ATTR`` is either a
mapping ``{service name: handler}`` or one handler (then ``--service NAME``
names it). Each service is a :class:`~lion_nb.patterns.SagaService`: every
process serving the same service joins one subscriber group, so a command goes
to one of them, and a command whose process dies mid-step is redelivered to
another after the ack timeout.
"""

from __future__ import annotations

import asyncio
import importlib
import signal
from collections.abc import Callable, Mapping
from typing import Any

from ...errors import ConfigError
from ..events import EventBroker, EventBrokerConfig
from ..saga import SagaService
from ._store import NatsEventStore

__all__ = ["load_services", "serve_services"]


def load_services(target: str, service: str | None = None) -> dict[str, Any]:
    """``{service: handler}`` from ``"module:attr"`` (a mapping, or a handler + ``service``)."""
    module_name, sep, attr = target.partition(":")
    if not sep or not module_name or not attr:
        raise ConfigError(f"expected MODULE:ATTR, got {target!r}", field="target")
    try:
        obj: Any = importlib.import_module(module_name)
        for part in attr.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"cannot load {target!r}: {exc}", field="target") from None
    if isinstance(obj, Mapping):
        if service is not None:
            obj = {service: obj[service]} if service in obj else {}
        if not obj:
            raise ConfigError(f"{target!r} names no service{f' {service!r}' if service else ''}",
                              field="service")
        return dict(obj)
    if not callable(obj):
        raise ConfigError(f"{target!r} is neither a mapping of services nor a handler",
                          field="target")
    if service is None:
        raise ConfigError(f"{target!r} is one handler: name its service with --service",
                          field="service")
    return {service: obj}


async def serve_services(url: str, services: Mapping[str, Any], *, name: str = "lion",
                         config: EventBrokerConfig | None = None,
                         stop: asyncio.Event | None = None,
                         on_ready: Callable[[list[SagaService]], None] | None = None) -> int:
    """Serve ``services`` on the NATS server at ``url`` until ``stop`` is set (or a signal).

    Returns how many commands were handled. Commands in flight when it stops
    are not acked, so the server redelivers them to another instance.
    """
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        try:
            loop.add_signal_handler(sig, stop.set)
        except (NotImplementedError, RuntimeError):  # not the main thread, or Windows
            pass
    broker = EventBroker(config or EventBrokerConfig())
    broker.with_event_store(NatsEventStore(url, name=name))
    running: list[SagaService] = []
    try:
        for service, handler in services.items():
            running.append(await SagaService(broker, service, handler).start())
        if on_ready is not None:
            on_ready(running)
        await stop.wait()
    finally:
        for svc in running:
            await svc.stop()
        await broker.close()
    return sum(svc.handled for svc in running)
