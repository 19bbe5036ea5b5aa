"""How a step reaches its service and how the answer comes back.

Over the broker (the general path, any task or process)::

    manager --Event("saga.command.<service>", command)--> service
    manager <--Event("saga.reply.<manager>", reply)------ service

A command is ``SagaCommand.to_dict(reply_to)``; a reply is
``{"command_id": str, "ok": bool, "result": any, "error": str | None}``.
Commands carry ``idempotency_key=command_id`` and replies
``idempotency_key=command_id + ".reply"``, so a re-published command or reply
is stored once. The manager acks a reply only after the step's outcome is in
the saga log, so a crash in between redelivers it.

In process (``register_service`` with ``local_dispatch``): the handler is
called directly with the same :class:`SagaCommand`, under the same timeout.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections import OrderedDict
from typing import Any, Awaitable, Callable

from ..clock import Clock, SystemClock
from ._events_model import Delivery, Event, EventAck, new_event_id
from ._saga_instance import SagaCommand
from ._saga_model import command_topic

__all__ = ["SagaService", "Handler", "Waiter", "run_with_timeout", "wrap_handler",
           "parse_reply"]

_log = logging.getLogger("lion_nb.saga")

Handler = Callable[[SagaCommand], Awaitable[Any]]


def wrap_handler(handler: Any, service: str) -> Handler:
    """An async callable for ``handler``; plain functions run in a worker thread."""
    if not callable(handler):
        raise TypeError(f"handler of service {service!r} must be callable, got "
                        f"{type(handler).__name__}")
    # An object whose __call__ is async (a recorder, a bound service) counts as async too.
    if inspect.iscoroutinefunction(handler) or inspect.iscoroutinefunction(
            type(handler).__call__):
        return handler

    async def in_thread(cmd: SagaCommand) -> Any:
        result = await asyncio.to_thread(handler, cmd)
        return await result if inspect.isawaitable(result) else result
    return in_thread


class _Expired(Exception):
    """Raised inside run_with_timeout when the clock ran out (never escapes)."""


async def run_with_timeout(clock: Clock, awaitable: Awaitable[Any], seconds: float
                           ) -> tuple[bool, Any]:
    """``(True, result)``, or ``(False, None)`` if ``seconds`` passed first on ``clock``.

    On the system clock this is ``asyncio.timeout`` (one timer handle, no
    task); on another clock (a FakeClock in tests) the work races a sleeper.
    Exceptions of the work propagate; on timeout the work is cancelled.
    """
    if isinstance(clock, SystemClock):
        try:
            async with asyncio.timeout(seconds) as cm:
                return True, await awaitable
        except TimeoutError:
            if cm.expired():
                return False, None
            raise
    work = asyncio.ensure_future(awaitable)
    sleeper = asyncio.ensure_future(clock.sleep(seconds))
    try:
        await asyncio.wait((work, sleeper), return_when=asyncio.FIRST_COMPLETED)
    except BaseException:
        work.cancel()
        raise
    finally:
        sleeper.cancel()
    if work.done():
        return True, work.result()
    work.cancel()
    await asyncio.gather(work, return_exceptions=True)
    return False, None


def parse_reply(payload: Any) -> tuple[str | None, str | None]:
    """``(command_id, problem)``: problem is None for a well-formed reply."""
    if not isinstance(payload, dict):
        return None, f"reply is a {type(payload).__name__}, not an object"
    cid = payload.get("command_id")
    if not isinstance(cid, str) or not cid:
        return None, "reply has no command_id"
    if not isinstance(payload.get("ok"), bool):
        return cid, f"reply 'ok' must be true or false, got {payload.get('ok')!r}"
    if not payload["ok"] and not isinstance(payload.get("error"), (str, type(None))):
        return cid, f"reply 'error' must be a string, got {type(payload['error']).__name__}"
    return cid, None


class Waiter:
    """The manager's side of one step run over the broker, across its attempts."""

    __slots__ = ("fut", "current", "cids")

    def __init__(self) -> None:
        self.fut: asyncio.Future[tuple[bool, Any, Delivery | None]] | None = None
        self.current: str | None = None      # command id of the attempt in flight
        self.cids: list[str] = []            # every attempt's command id

    def offer(self, cid: str, outcome: tuple[bool, Any, Delivery | None]) -> bool:
        """Hand a reply to the attempt in flight; False if it is not wanted.

        A success of an earlier attempt is taken (the service did the work);
        a failure only counts for the attempt in flight.
        """
        fut = self.fut
        if fut is None or fut.done() or (cid != self.current and not outcome[0]):
            return False
        fut.set_result(outcome)
        return True


class RecentIds:
    """A bounded, insertion-ordered set of command ids already finished."""

    def __init__(self, limit: int = 100_000) -> None:
        self._ids: OrderedDict[str, None] = OrderedDict()
        self._limit = limit

    def add(self, cid: str) -> None:
        """Remember ``cid`` (forgetting the oldest beyond the limit)."""
        self._ids[cid] = None
        if len(self._ids) > self._limit:
            self._ids.popitem(last=False)

    def __contains__(self, cid: object) -> bool:
        return cid in self._ids


class SagaService:
    """Serves one service's saga commands from the broker: call the handler, reply, ack.

    Workers of the same service form one subscriber group, so each command
    goes to one of them; several commands run at once (``concurrency``). A
    handler's return value is the step's result; an exception is a failed
    attempt, reported with its type and message.
    """

    def __init__(self, broker: Any, service: str, handler: Any, *,
                 worker_id: str | None = None, concurrency: int = 64) -> None:
        if concurrency < 1:
            raise ValueError(f"concurrency must be >= 1, got {concurrency}")
        self.broker = broker
        self.service = service
        self.handler = wrap_handler(handler, service)
        self.worker_id = worker_id or f"{service}.worker.{new_event_id()[-8:]}"
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
            payload = delivery.payload
            try:
                cmd = SagaCommand.from_dict(payload)
                reply_to = payload["reply_to"]
            except (KeyError, TypeError, ValueError, AttributeError):
                _log.warning("service %r dropped a malformed saga command %r", self.service,
                             payload)
                await self._ack.success(delivery)
                return
            try:
                reply = {"command_id": cmd.command_id, "ok": True,
                         "result": await self.handler(cmd), "error": None}
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the service failed this attempt: tell the manager
                reply = {"command_id": cmd.command_id, "ok": False, "result": None,
                         "error": f"{type(exc).__name__}: {exc}"}
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


def reply_ack(ack_tx: Any, delivery: Delivery | None) -> Awaitable[None] | None:
    """The ack of a reply delivery, or None if there is nothing to ack."""
    if delivery is None or ack_tx is None:
        return None
    return ack_tx.send(EventAck.success(delivery, ack_tx.subscriber))
