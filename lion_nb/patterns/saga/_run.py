"""One saga instance on the move: forward through its stages, or backward through compensations.

What to do next is read from the instance alone, which is the fold of the
saga log, so a run started by ``recover()`` after a crash and a run started
by ``start_instance`` are the same code: running means the first stage with
an unfinished step (or, once aborted, the steps still in flight), compensating
means the last step not yet undone. Every
outcome is committed (with the status it implies) before the run moves on,
so a committed step or compensation never runs again.
"""

from __future__ import annotations

import asyncio
from typing import Callable, Mapping

from ...clock import Clock
from ...errors import CapabilityDeniedError, SagaError, SecurityError
from ...security import GrantSet
from ._channel import CommandChannel, Waiter
from ._command import Attempt, SagaCommand, command_id, describe, timed_out
from ._config import SagaManagerConfig
from ._handler import Handler, run_with_timeout
from ._instance import COMPENSATE, FORWARD, SagaInstance
from ._log import SagaLog, check_result
from ._security import step_tokens
from ._status import SagaStatus, StepStatus
from ._step import SagaStep

__all__ = ["SagaRun"]

# Members as globals (see _instance): the loop reads them on every stage.
_RUNNING, _COMPENSATING = SagaStatus.RUNNING, SagaStatus.COMPENSATING
_DONE = (StepStatus.SUCCEEDED, StepStatus.FAILED)     # a forward step with an outcome


class SagaRun:
    """Drives one instance until it rests (finished, or waiting for an operator).

    ``handlers`` maps services served in this process to their handlers
    (read at each attempt); other services are reached through ``channel``
    (None when the manager has no broker). ``grants`` are the instance's
    capability tokens, narrowed per step for each command.
    """

    __slots__ = ("inst", "_config", "_clock", "_log", "_channel", "_handlers", "_grants",
                 "_on_rest")

    def __init__(self, inst: SagaInstance, *, config: SagaManagerConfig, clock: Clock,
                 log: SagaLog, channel: CommandChannel | None,
                 handlers: Mapping[str, Handler], grants: GrantSet | None,
                 on_rest: Callable[[SagaInstance, BaseException | None], None]) -> None:
        self.inst = inst
        self._config = config
        self._clock = clock
        self._log = log
        self._channel = channel
        self._handlers = handlers
        self._grants = grants
        self._on_rest = on_rest

    def first_commands(self) -> list[tuple[str, str, int]]:
        """``(command id, service, attempt)`` of the commands this run sends first.

        After a restart these may already have been sent (and answered) by the
        manager that crashed; the channel accepts genuine replies to them early.
        """
        inst = self.inst
        if inst.status is _RUNNING and inst.abort_reason is not None:
            todo = [(inst.definition.step(sid), True) for sid in inst.inflight_steps()]
        elif inst.status is _RUNNING:
            k = inst.next_stage()
            stage = () if k is None else inst.definition.stages[k]
            todo = [(s, True) for s in stage if inst.steps[s.id].status not in _DONE]
        elif inst.status is _COMPENSATING:
            undo = inst.next_undo()
            todo = [] if undo is None else [(inst.definition.step(undo), False)]
        else:
            todo = []
        out = []
        for step, fwd in todo:
            st = inst.steps[step.id]
            done = st.attempts if fwd else st.comp_attempts
            attempt = done if st.inflight else done + 1     # as _run_step picks it
            out.append((command_id(inst.id, not fwd, step.id, attempt), step.service, attempt))
        return out

    async def drive(self) -> None:
        """Run until the instance rests, then call ``on_rest(instance, error or None)``.

        The error is a storage or broker failure that stopped the run (the
        instance stays where its log says it is).
        """
        inst = self.inst
        definition = inst.definition
        try:
            while True:
                status = inst.status
                if status is _RUNNING:
                    if inst.abort_reason is not None:
                        await self._abort()
                        continue
                    k = inst.next_stage()
                    if k is None:
                        raise SagaError(f"saga instance {inst.id!r} is running with every "
                                        "step done; its log is inconsistent",
                                        saga=inst.saga_id)
                    stage = definition.stages[k]
                    if len(stage) == 1:   # not done: a failed step would have ended RUNNING
                        await self._run_step(stage[0], True)
                    else:
                        await asyncio.gather(*(self._run_step(s, True) for s in stage
                                               if inst.steps[s.id].status not in _DONE))
                elif status is _COMPENSATING:
                    undo = inst.next_undo()
                    assert undo is not None   # the fold makes it compensated when none is left
                    await self._run_step(definition.step(undo), False)
                else:
                    break
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - handed to on_rest, which reports it
            self._on_rest(inst, exc)
        else:
            self._on_rest(inst, None)

    async def _abort(self) -> None:
        """Aborted while running: learn the outcome of each step in flight, then compensate.

        Steps are in flight under an abort only after a crash (otherwise their outcomes
        settle the stage); each is run again under its same command id, so a step that
        did its work is undone and the saga never claims "compensated" over one running.
        """
        inst = self.inst
        inflight = inst.inflight_steps()
        if inflight:
            await asyncio.gather(*(self._run_step(inst.definition.step(sid), True)
                                   for sid in inflight))
            return
        await self._log.commit(inst, {
            "k": "status", "st": _COMPENSATING.value, "e": f"aborted: {inst.abort_reason}",
            "fs": None, "t": self._clock.time()})

    async def _run_step(self, step: SagaStep, fwd: bool) -> None:
        """Run one step (or its compensation) through its attempts, committing each outcome."""
        cfg = self._config
        inst = self.inst
        log = self._log
        durable = log.enabled
        clock = self._clock
        st = inst.steps[step.id]
        if fwd:
            phase = FORWARD
            attempts = step.max_attempts or cfg.step_attempts
            timeout = step.timeout or cfg.step_timeout
            backoff = step.backoff if step.backoff is not None else cfg.step_backoff
            done = st.attempts
        else:
            phase = COMPENSATE
            attempts = cfg.compensation_attempts
            timeout = step.timeout or cfg.compensation_timeout
            backoff = cfg.compensation_backoff
            done = st.comp_attempts
        # Resumed mid-attempt: the same attempt again (same command id); else the next one.
        attempt = done if st.inflight else done + 1
        if not st.inflight:
            log.record(inst, {"k": "start", "s": step.id, "p": phase, "a": attempt,
                              "t": clock.time()})
        channel = self._channel
        waiter = None if channel is None or step.service in self._handlers \
            else channel.waiter(step.id, step.service)
        try:
            while True:
                outcome = await self._attempt(step, fwd, attempt, timeout, waiter)
                if outcome.error is None and durable:
                    try:
                        check_result(outcome.result, f"the result of step {step.id!r} (saga "
                                     f"{inst.saga_id!r}, service {step.service!r})", step.id)
                    except SagaError as exc:
                        outcome = Attempt(error=exc, reply=outcome.reply)
                if outcome.error is None:
                    log.record(inst, {"k": "ok", "s": step.id, "p": phase,
                                      "r": outcome.result, "t": clock.time()})
                    if durable:   # no coroutine per outcome without storage
                        await log.flush(inst)
                    if outcome.reply is not None:
                        await self._ack(outcome)
                    return
                final = attempt >= attempts or isinstance(outcome.error, CapabilityDeniedError)
                st.exception = outcome.error.with_traceback(None)
                log.record(inst, {"k": "err", "s": step.id, "p": phase, "a": attempt,
                                  "e": describe(outcome.error), "final": final,
                                  "t": clock.time()})
                if durable:
                    await log.flush(inst)
                if outcome.reply is not None:
                    await self._ack(outcome)
                if final:
                    return
                delay = backoff.delay(attempt)
                if delay > 0:
                    await clock.sleep(delay)
                attempt += 1
                log.record(inst, {"k": "start", "s": step.id, "p": phase, "a": attempt,
                                  "t": clock.time()})
        finally:
            if waiter is not None and channel is not None:
                channel.release(waiter)

    async def _ack(self, outcome: Attempt) -> None:
        if outcome.reply is not None and self._channel is not None:
            await self._channel.ack(outcome.reply)

    async def _attempt(self, step: SagaStep, fwd: bool, attempt: int, timeout: float,
                       waiter: Waiter | None) -> Attempt:
        """One attempt at ``step`` (or its compensation); failures come back as values."""
        inst = self.inst
        tokens: tuple[str, ...] = ()
        if step.requires:   # narrowed to this step before anything is dispatched
            try:
                tokens = step_tokens(self._grants, step, inst.saga_id, timeout)
            except SecurityError as exc:
                return Attempt(error=exc)
        cmd = SagaCommand(command_id(inst.id, not fwd, step.id, attempt),
                          "step" if fwd else "compensate", inst.saga_id, inst.id, step.id,
                          step.name, step.service, attempt,
                          step.action if fwd else step.compensation, inst.data,
                          dict(inst.results),   # a snapshot: later steps change it
                          None if fwd else inst.steps[step.id].result,
                          self._clock.time() + timeout, tokens)
        handler = self._handlers.get(step.service)
        try:
            if handler is not None:
                finished, result = await run_with_timeout(self._clock, handler(cmd), timeout)
                if not finished:
                    raise timed_out(cmd, timeout)
                return Attempt(result)
            if self._channel is None or waiter is None:
                raise SagaError(f"no handler is registered for service {step.service!r} "
                                f"(step {step.id!r}) and the manager has no broker",
                                saga=inst.saga_id)
            return await self._channel.request(waiter, cmd, timeout)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the service's failure, a timeout, a broker refusal
            return Attempt(error=exc)
