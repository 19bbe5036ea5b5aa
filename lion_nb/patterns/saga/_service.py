"""A saga service on the broker: receive commands, call the handler, reply, ack."""

from __future__ import annotations

import asyncio
import logging
from itertools import count
from os import urandom
from typing import Any

from ...errors import ConfigError, SagaReplyError
from ..events import Delivery, Event
from ._command import SagaCommand
from ._handler import wrap_handler
from ._key import ENV_VAR, SagaKey
from ._topics import REPLY_TOPIC_PREFIX, command_topic

__all__ = ["SagaService"]

_log = logging.getLogger("lion_nb.saga")
_WORKER_IDS = count()
_PREFIX = urandom(3).hex()


class SagaService:
    """Serves one service's saga commands from the broker: call the handler, reply, ack.

    Workers of the same service form one subscriber group, so each command
    goes to one of them; several commands run at once (``concurrency``). A
    handler's return value is the step's result; an exception is a failed
    attempt, reported with its type and message. ``key`` is the manager's
    SagaKey or, better in another process, ``key.for_service(service)``
    (default: the key in ``$LION_NB_SAGA_KEY``):
    commands whose signature does not check are dropped unread, and replies
    are signed with it.
    """

    def __init__(self, broker: Any, service: str, handler: Any, *, key: SagaKey | None = None,
                 worker_id: str | None = None, concurrency: int = 64) -> None:
        key = key or SagaKey.from_env()
        if not isinstance(key, SagaKey):
            raise ConfigError(f"SagaService {service!r} needs the SagaKey its saga manager "
                              f"uses: key=, or its secret in hex in ${ENV_VAR}", field="key")
        if isinstance(concurrency, bool) or not isinstance(concurrency, int) \
                or concurrency < 1:
            raise ValueError(f"concurrency must be an int >= 1, got {concurrency!r}")
        self.broker = broker
        self.service = service
        self.handler = wrap_handler(handler, service)
        self._key = key.for_service(service)
        self.worker_id = worker_id or f"{service}.worker.{_PREFIX}{next(_WORKER_IDS):x}"
        self.group = f"saga-service.{service}"
        self._limit = asyncio.Semaphore(concurrency)
        self._task: asyncio.Task[None] | None = None
        self._inflight: set[asyncio.Task[None]] = set()
        self._rx: Any = None
        self._ack: Any = None
        self.handled = 0

    async def start(self) -> "SagaService":
        """Subscribe and start serving; returns self."""
        if self._task is None:
            self._rx, self._ack = await self.broker.subscribe(
                command_topic(self.service), self.worker_id, None, group=self.group)
            self._task = asyncio.get_running_loop().create_task(
                self._serve(), name=f"lion-saga-service {self.service}")
        return self

    async def _serve(self) -> None:
        async for delivery in self._rx:
            await self._limit.acquire()
            task = asyncio.get_running_loop().create_task(self._handle(delivery))
            self._inflight.add(task)
            task.add_done_callback(self._inflight.discard)

    async def _handle(self, delivery: Delivery) -> None:
        try:
            try:
                data = self._key.open_command(delivery.payload)
                cmd = SagaCommand.from_dict(data)
                reply_to = data["reply_to"]
                if cmd.service != self.service or not isinstance(reply_to, str) \
                        or not reply_to.startswith(REPLY_TOPIC_PREFIX + "."):
                    raise ValueError(f"command for {cmd.service!r} replying to {reply_to!r}")
            except (SagaReplyError, KeyError, TypeError, ValueError, AttributeError) as exc:
                _log.warning("service %r dropped saga command %s: %s", self.service,
                             delivery.id, exc)
                await self._ack.success(delivery)
                return
            try:
                reply = self._key.seal_reply(data, ok=True, result=await self.handler(cmd))
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the service failed this attempt: tell the manager
                reply = self._key.seal_reply(data, ok=False,
                                             error=f"{type(exc).__name__}: {exc}")
            await self.broker.publish(Event(reply_to, reply,
                                            idempotency_key=cmd.command_id + ".reply"))
            await self._ack.success(delivery)
            self.handled += 1
        except asyncio.CancelledError:
            raise
        except Exception:  # broker closed or store failed: the command is redelivered
            _log.warning("service %r could not finish command %s", self.service,
                         delivery.id, exc_info=True)
        finally:
            self._limit.release()

    async def stop(self) -> None:
        """Stop serving; commands in flight are cancelled (the broker redelivers them)."""
        tasks = [t for t in (self._task, *self._inflight) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._task = None

    def __repr__(self) -> str:
        return f"<SagaService {self.service!r} worker={self.worker_id!r} handled={self.handled}>"
