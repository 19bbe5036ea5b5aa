"""The command channel: commands out to services over the broker, replies back to waiters.

::

    manager --Event("saga.command.<service>", command)--> service
    manager <--Event("saga.reply.<manager>", reply)------ service

Both are signed envelopes (see ``_key``): a command is
``SagaCommand.to_dict(reply_to)`` with its tokens sealed; a reply's body is
``{"command_id", "attempt", "service", "ok", "result", "error"}``. A reply
counts only if its MAC is right under the key of the service the command
went to, and it answers a command this manager issued (same command id,
attempt and service); anything else is rejected (``rejected_replies``) and
never reaches a step. Commands carry ``idempotency_key=command_id`` and
replies ``idempotency_key=command_id + ".reply"``, so a re-published command
or reply is stored once. The run acks a reply only after the step's outcome
is in the saga log, so a crash in between redelivers it.
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
from ._key import SagaKey
from ._topics import command_topic, reply_topic

__all__ = ["CommandChannel", "Waiter"]

_log = logging.getLogger("lion_nb.saga")


def reply_problem(body: dict[str, Any]) -> str | None:
    """What is wrong with a genuine reply's body, or None."""
    if not isinstance(body.get("ok"), bool):
        return f"reply 'ok' must be true or false, got {body.get('ok')!r}"
    if not body["ok"] and not isinstance(body.get("error"), (str, type(None))):
        return f"reply 'error' must be a string, got {type(body['error']).__name__}"
    return None


class Waiter:
    """The manager's side of one step run over the broker, across its attempts."""

    __slots__ = ("fut", "current", "cids", "step", "service")

    def __init__(self, step: str, service: str) -> None:
        self.step = step
        self.service = service
        self.fut: asyncio.Future[Attempt] | None = None
        self.current: str | None = None      # command id of the attempt in flight
        self.cids: dict[str, int] = {}       # every attempt's command id -> its attempt

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

    ``key`` is the manager's SagaKey (each service's key is derived from it).
    ``count(name)`` is told about duplicate, malformed and rejected replies
    (the manager's statistics); ``noted(why)`` about each rejected one.
    """

    def __init__(self, broker: Any, name: str, clock: Clock, key: SagaKey, *,
                 count: Callable[[str], None], noted: Callable[[str], None]) -> None:
        self._broker = broker
        self._key = key
        self._keys: dict[str, SagaKey] = {}     # service -> its derived key
        self._name = name
        self._reply_topic = reply_topic(name)
        self._clock = clock
        self._count = count
        self._noted = noted
        self._waiting: dict[str, Waiter] = {}
        self._recent = _RecentIds()
        self._orphans: dict[str, Attempt] = {}
        # Commands a crashed manager may have issued: (service, attempt) by command id.
        self._expected: dict[str, tuple[str, int]] = {}
        self._rx: Any = None
        self._ack: Any = None
        self._task: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()

    def waiter(self, step: str, service: str) -> Waiter:
        """A new waiter for one step run (all its attempts)."""
        return Waiter(step, service)

    def expect(self, cid: str, service: str, attempt: int) -> None:
        """A command issued before a restart: a genuine reply to it may come before we wait."""
        self._expected[cid] = (service, attempt)
        self._key_for(service)

    def _key_for(self, service: str) -> SagaKey:
        key = self._keys.get(service)
        if key is None:
            key = self._keys[service] = self._key.for_service(service)
        return key

    def release(self, waiter: Waiter) -> None:
        """The step run is over: later replies to its commands are duplicates."""
        for cid in waiter.cids:
            self._waiting.pop(cid, None)
            self._recent.add(cid)

    async def request(self, waiter: Waiter, cmd: SagaCommand, timeout: float) -> Attempt:
        """Send ``cmd`` and wait for its reply; SagaStepTimeoutError after ``timeout``."""
        cid = cmd.command_id
        waiter.current = cid
        waiter.cids[cid] = cmd.attempt
        self._waiting[cid] = waiter
        self._expected.pop(cid, None)
        fut = waiter.fut = asyncio.get_running_loop().create_future()
        try:
            await self._listen()
            early = self._orphans.pop(cid, None)
            if early is not None:          # a redelivered reply that arrived before us
                waiter.offer(cid, early)
            else:
                await self._broker.publish(Event(
                    command_topic(cmd.service),
                    self._key_for(cmd.service).seal_command(cmd.to_dict(self._reply_topic)),
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
        body, why = self._verify(delivery.payload)
        if body is None:
            self._reject(why, delivery)
        else:
            cid = body["command_id"]
            waiter = self._waiting.get(cid)
            if waiter is not None:
                if waiter.offer(cid, self._outcome(body, delivery, waiter.step)):
                    return        # acked by the run once the outcome is committed
                self._count("duplicate_replies")
            elif cid in self._recent:
                self._count("duplicate_replies")
            else:   # a restart redelivered it before the run waits again: keep it
                self._expected.pop(cid)
                self._orphans[cid] = self._outcome(body, None, None)
        await self.ack(delivery)

    def _verify(self, payload: Any) -> tuple[dict[str, Any] | None, str]:
        """The body of a genuine reply to a command we issued, or ``(None, why not)``."""
        service = payload.get("service") if isinstance(payload, dict) else None
        # Only services this manager commanded have a key here: a stranger's made-up
        # service names cost nothing and grow nothing.
        key = self._keys.get(service) if isinstance(service, str) else None
        if key is None:
            return None, "not a signed reply of a service this manager commands"
        try:
            body = key.open_reply(payload)
        except SagaReplyError as exc:
            return None, str(exc)
        cid = body.get("command_id")
        if not isinstance(cid, str):
            return None, "signed reply without a command id"
        waiter = self._waiting.get(cid)
        if waiter is not None:
            issued: tuple[str, int] | None = (waiter.service, waiter.cids[cid])
        elif cid in self._recent:
            return body, ""                            # a late duplicate: dropped quietly
        else:
            issued = self._expected.get(cid)
        if issued is None:
            return None, f"reply to command {cid!r}, which this manager did not issue"
        if (body.get("service"), body.get("attempt")) != issued:
            return None, (f"reply to command {cid!r} names service {body.get('service')!r} "
                          f"attempt {body.get('attempt')!r}; it went to {issued[0]!r} "
                          f"attempt {issued[1]}")
        return body, ""

    def _reject(self, why: str, delivery: Delivery) -> None:
        self._count("rejected_replies")
        _log.warning("saga manager %r rejected reply %s: %s", self._name, delivery.id, why)
        self._noted(why)

    def _outcome(self, body: dict[str, Any], delivery: Any, step: str | None) -> Attempt:
        problem = reply_problem(body)
        if problem is not None:
            self._count("malformed_replies")
            return Attempt(error=SagaReplyError(
                f"the reply of service {body.get('service')!r} to command "
                f"{body['command_id']} is malformed: {problem}", step=step), reply=delivery)
        if body["ok"]:
            return Attempt(body.get("result"), reply=delivery)
        return Attempt(error=SagaServiceError(body.get("error") or "service reported failure",
                                              step=step, service=body.get("service")),
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

