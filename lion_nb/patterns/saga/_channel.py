"""The command channel: commands out to services over the broker, replies back to waiters.

::

    manager --Event("saga.command.<service>", command)--> service
    manager <--Event("saga.reply.<manager>", reply)------ service

A command is ``SagaCommand.to_dict(reply_to)``; a reply is
``{"command_id": str, "ok": bool, "result": any, "error": str | None}``.
Commands carry ``idempotency_key=command_id`` and replies
``idempotency_key=command_id + ".reply"``, so a re-published command or reply
is stored once. The run acks a reply only after the step's outcome is in
the saga log, so a crash in between redelivers it.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from typing import Any, Callable

from ...clock import Clock
from ...errors import SagaReplyError, SagaServiceError
from ..events import Delivery, Event, EventAck
from ._command import Attempt, SagaCommand, timed_out
from ._handler import run_with_timeout
from ._topics import command_topic, reply_topic

__all__ = ["CommandChannel", "Waiter", "parse_reply"]

_log = logging.getLogger("lion_nb.saga")


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

    __slots__ = ("fut", "current", "cids", "step")

    def __init__(self, step: str) -> None:
        self.step = step
        self.fut: asyncio.Future[Attempt] | None = None
        self.current: str | None = None      # command id of the attempt in flight
        self.cids: list[str] = []            # every attempt's command id

    def offer(self, cid: str, outcome: Attempt) -> bool:
        """Hand a reply to the attempt in flight; False if it is not wanted.

        A success of an earlier attempt is taken (the service did the work);
        a failure only counts for the attempt in flight.
        """
        fut = self.fut
        if fut is None or fut.done() or (cid != self.current and not outcome.ok):
            return False
        fut.set_result(outcome)
        return True


class _RecentIds:
    """A bounded, insertion-ordered set of command ids already finished."""

    def __init__(self, limit: int = 100_000) -> None:
        self._ids: OrderedDict[str, None] = OrderedDict()
        self._limit = limit

    def add(self, cid: str) -> None:
        self._ids[cid] = None
        if len(self._ids) > self._limit:
            self._ids.popitem(last=False)

    def __contains__(self, cid: object) -> bool:
        return cid in self._ids


class CommandChannel:
    """Publishes commands for one manager and routes the replies to the steps waiting.

    ``count(name)`` is told about duplicate and malformed replies (the
    manager's statistics); ``noted(problem)`` about each malformed one.
    """

    def __init__(self, broker: Any, name: str, clock: Clock, *,
                 count: Callable[[str], None], noted: Callable[[str], None]) -> None:
        self._broker = broker
        self._name = name
        self._reply_topic = reply_topic(name)
        self._clock = clock
        self._count = count
        self._noted = noted
        self._waiting: dict[str, Waiter] = {}
        self._recent = _RecentIds()
        self._orphans: dict[str, Attempt] = {}
        self._rx: Any = None
        self._ack: Any = None
        self._task: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()

    def waiter(self, step: str) -> Waiter:
        """A new waiter for one step run (all its attempts)."""
        return Waiter(step)

    def release(self, waiter: Waiter) -> None:
        """The step run is over: later replies to its commands are duplicates."""
        for cid in waiter.cids:
            self._waiting.pop(cid, None)
            self._recent.add(cid)

    async def request(self, waiter: Waiter, cmd: SagaCommand, timeout: float) -> Attempt:
        """Send ``cmd`` and wait for its reply; SagaStepTimeoutError after ``timeout``."""
        cid = cmd.command_id
        waiter.current = cid
        if cid not in waiter.cids:
            waiter.cids.append(cid)
        self._waiting[cid] = waiter
        fut = waiter.fut = asyncio.get_running_loop().create_future()
        try:
            await self._listen()
            early = self._orphans.pop(cid, None)
            if early is not None:          # a redelivered reply that arrived before us
                waiter.offer(cid, early)
            else:
                await self._broker.publish(Event(
                    command_topic(cmd.service), cmd.to_dict(self._reply_topic),
                    idempotency_key=cid))
            finished, outcome = await run_with_timeout(self._clock, fut, timeout)
        finally:
            waiter.fut = None
        if not finished:
            raise timed_out(cmd, timeout)
        return outcome

    async def _listen(self) -> None:
        """Subscribe to this manager's reply topic (once, even if called concurrently)."""
        if self._task is not None:
            return
        async with self._lock:
            if self._task is not None:
                return
            self._rx, self._ack = await self._broker.subscribe(
                self._reply_topic, f"{self._name}.replies", None)
            self._task = asyncio.get_running_loop().create_task(
                self._loop(), name=f"lion-saga-replies {self._name}")

    async def _loop(self) -> None:
        async for delivery in self._rx:
            try:
                await self._on_reply(delivery)
            except asyncio.CancelledError:
                raise
            except Exception:  # one bad reply must not stop the manager hearing the rest
                _log.exception("saga manager %r failed on reply %s", self._name, delivery.id)

    async def _on_reply(self, delivery: Delivery) -> None:
        payload = delivery.payload
        cid, problem = parse_reply(payload)
        waiter = self._waiting.get(cid) if cid is not None else None
        if cid is None or (problem is not None and waiter is None):
            self._count("malformed_replies")
            _log.warning("saga manager %r dropped a malformed reply (%s): %r", self._name,
                         problem, payload)
            self._noted(str(problem))
        elif waiter is None:
            if cid in self._recent:
                self._count("duplicate_replies")
            else:  # not waited for yet (a restart redelivered it early): keep it
                self._orphans[cid] = self._outcome(payload, None, None, waiter)
                while len(self._orphans) > 10_000:
                    del self._orphans[next(iter(self._orphans))]
        else:
            if problem is not None:
                self._count("malformed_replies")
            if waiter.offer(cid, self._outcome(payload, problem, delivery, waiter)):
                return        # acked by the run once the outcome is committed
            self._count("duplicate_replies")
        await self.ack(delivery)

    def _outcome(self, payload: dict[str, Any], problem: str | None, delivery: Any,
                 waiter: Waiter | None) -> Attempt:
        step = None if waiter is None else waiter.step
        if problem is not None:
            return Attempt(error=SagaReplyError(
                f"the reply of service to command {payload.get('command_id')} is malformed: "
                f"{problem}", step=step), reply=delivery)
        if payload["ok"]:
            return Attempt(payload.get("result"), reply=delivery)
        return Attempt(error=SagaServiceError(payload.get("error") or "service reported "
                                              "failure", step=step, service=None),
                       reply=delivery)

    async def ack(self, delivery: Any) -> None:
        """Ack a reply delivery (None: nothing to ack); a stale ack is a dropped duplicate."""
        if delivery is None or self._ack is None:
            return
        try:
            await self._ack.send(EventAck.success(delivery, self._ack.subscriber))
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # stale (redelivered meanwhile): the duplicate is dropped
            _log.debug("reply ack failed: %s", exc)

    async def close(self) -> None:
        """Stop hearing replies (the broker keeps unacked ones for the next manager)."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

