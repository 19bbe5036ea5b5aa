"""Driving one saga instance: forward through its stages, or backward through compensations.

Every change goes through ``_record`` (apply to the instance, history row,
observe event) and reaches the saga log at the next ``_commit``. A step's
*start* is only recorded, not committed on its own: if the process dies
before the next commit, resume runs the same attempt again under the same
command id, which is what the lost start entry would have said anyway. A
step's *outcome* is committed before the saga moves on, so a committed step
or compensation never runs again.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from typing import Any

from ..clock import Clock
from ..engine.observe import EventKind, ExecEvent, ObserveStream
from ..errors import SecurityError
from ._events_model import Event
from ._saga_dispatch import Handler, RecentIds, Waiter, parse_reply, reply_ack, run_with_timeout
from ._saga_instance import COMPENSATE, FORWARD, SagaCommand, SagaInstance
from ._saga_log import SagaLog, check_json
from ._saga_security import DENIED, step_tokens
from ._saga_model import SagaManagerConfig, SagaStatus, SagaStep, StepStatus, command_topic, \
    reply_topic

__all__: list[str] = []

_log = logging.getLogger("lion_nb.saga")
_S = StepStatus
_ENTRY_EVENT = {"start": "started", "ok": "succeeded", "err": "attempt_failed",
                "retry": "operator_retry", "resolved": "operator_resolved", "abort": "abort"}


class RunnerMixin:
    """Execution, compensation, dispatch and bookkeeping for :class:`SagaManager`."""

    _config: SagaManagerConfig
    _clock: Clock
    _observe: ObserveStream | None
    _broker: Any
    _saga_log: SagaLog
    _local: dict[str, Handler]
    _grants: dict[str, Any]
    _history: deque[tuple[Any, ...]] | None
    _counts: dict[SagaStatus, int]
    _stats: dict[str, int]
    _tasks: dict[str, asyncio.Task[None]]
    _waiting: dict[str, Waiter]
    _recent: RecentIds
    _orphans: dict[str, tuple[bool, Any, None]]
    _reply_rx: Any
    _reply_ack: Any
    _reply_task: asyncio.Task[None] | None
    _reply_lock: asyncio.Lock | None

    # -- bookkeeping -----------------------------------------------------------------

    def _record(self, inst: SagaInstance, entry: dict[str, Any]) -> None:
        """Apply ``entry`` now; it reaches the saga log with the next commit."""
        kind = entry["k"]
        old = inst.status
        inst._unsaved.append((inst.entries, entry))
        inst.apply(entry)
        if kind == "status":
            self._counts[old] -= 1
            self._counts[inst.status] += 1
        hist = self._history
        obs = self._observe
        if hist is None and (obs is None or not obs.active):
            return
        step_id = entry.get("s")
        if step_id is None:
            status, name, event = inst.status.value, None, "status" if kind == "status" \
                else _ENTRY_EVENT[kind]
        else:
            status, name, event = inst.steps[step_id].status.value, \
                inst.steps[step_id].name, _ENTRY_EVENT[kind]
        phase = entry.get("p") or inst.phase
        t = entry["t"]
        if hist is not None:
            hist.append((t, inst.saga_id, inst.id, event, status, step_id, name, phase,
                         entry.get("a"), entry.get("e")))
        if obs is None or not obs.active:
            return
        okind = EventKind.SAGA_STATE if step_id is None else EventKind.SAGA_STEP
        if obs.wants(okind):
            data = {"saga_id": inst.saga_id, "instance_id": inst.id, "status": status,
                    "event": event, "phase": phase, "error": entry.get("e")}
            if step_id is None:
                data["previous"] = old.value
                data["failed_step"] = inst.failed_step
            else:
                data.update(step_id=step_id, step_name=name,
                            service=inst.definition.step(step_id).service)
            obs.emit(ExecEvent(okind, t, inst.id, step_id, entry.get("a") or 0, data))

    async def _flush(self, inst: SagaInstance) -> None:
        """Persist everything recorded for ``inst`` so far (one storage transaction)."""
        if not self._saga_log.enabled:
            inst._unsaved.clear()
            return
        batch, inst._unsaved = inst._unsaved, []
        changed = any(e["k"] == "status" for _, e in batch)
        await self._saga_log.commit(inst, batch, changed)

    async def _commit(self, inst: SagaInstance, entry: dict[str, Any]) -> None:
        self._record(inst, entry)
        if self._saga_log.enabled:
            await self._flush(inst)
        else:
            inst._unsaved.clear()

    async def _set_status(self, inst: SagaInstance, status: SagaStatus,
                          error: str | None = None, failed_step: str | None = None) -> None:
        entry: dict[str, Any] = {"k": "status", "st": status.value, "t": self._clock.time()}
        if error is not None or status is SagaStatus.RUNNING:
            entry["e"], entry["fs"] = error, failed_step
        await self._commit(inst, entry)

    # -- the drive ---------------------------------------------------------------------

    async def _drive(self, inst: SagaInstance) -> None:
        """Run ``inst`` until it rests (finished, or waiting for an operator)."""
        try:
            if inst.status in (SagaStatus.CREATED, SagaStatus.RUNNING):
                if inst.status is SagaStatus.CREATED:
                    await self._set_status(inst, SagaStatus.RUNNING)
                await self._forward(inst)
            elif inst.status is SagaStatus.COMPENSATING:
                await self._backward(inst)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # storage or broker failure: keep the saga where it is
            _log.exception("saga instance %s of %r stopped: %s", inst.id, inst.saga_id, exc)
            inst.error = f"saga manager error ({type(exc).__name__}: {exc}); the instance " \
                         f"stays {inst.status.value}; fix the cause and call recover()"
            self._rest(inst, exc)
            return
        finally:
            self._tasks.pop(inst.id, None)
        self._rest(inst, None)

    async def _forward(self, inst: SagaInstance) -> None:
        steps = inst.steps
        for stage in inst.definition.stages:
            if inst.abort_reason is not None:
                if not inst.pivot_passed:
                    await self._set_status(inst, SagaStatus.COMPENSATING,
                                           f"aborted: {inst.abort_reason}")
                    await self._backward(inst)
                    return
                _log.warning("abort of saga instance %s ignored: a pivot step succeeded "
                             "meanwhile, so it only goes forward", inst.id)
                inst.abort_reason = None
            todo = [s for s in stage if steps[s.id].status is not _S.SUCCEEDED]
            if not todo:
                continue
            if len(todo) == 1:
                errors = [await self._run_step(inst, todo[0], FORWARD)]
            else:
                errors = await asyncio.gather(*(self._run_step(inst, s, FORWARD)
                                                for s in todo))
            failed = [(s, e) for s, e in zip(todo, errors) if e is not None]
            if failed:
                step, error = failed[0]
                msg = f"step {step.id!r} of saga {inst.saga_id!r} failed: {error}"
                if inst.pivot_passed:
                    await self._set_status(inst, SagaStatus.FAILED,
                                           msg + " (after a pivot step: retry it or "
                                           "mark_resolved)", step.id)
                    return
                await self._set_status(inst, SagaStatus.COMPENSATING, msg, step.id)
                await self._backward(inst)
                return
        if inst.abort_reason is not None and not inst.pivot_passed:
            await self._set_status(inst, SagaStatus.COMPENSATING,
                                   f"aborted: {inst.abort_reason}")
            await self._backward(inst)
            return
        await self._set_status(inst, SagaStatus.COMPLETED)

    async def _backward(self, inst: SagaInstance) -> None:
        steps = inst.steps
        for step in reversed(inst.definition.steps):
            if steps[step.id].status not in (_S.SUCCEEDED, _S.COMPENSATING) or step.pivot:
                continue
            error = await self._run_step(inst, step, COMPENSATE)
            if error is not None:
                await self._set_status(
                    inst, SagaStatus.COMPENSATION_FAILED,
                    f"compensation of step {step.id!r} of saga {inst.saga_id!r} failed after "
                    f"{steps[step.id].comp_attempts} attempt(s): {error}; call retry() or "
                    "mark_resolved()", step.id)
                return
        await self._set_status(inst, SagaStatus.COMPENSATED, inst.reason, inst.reason_step)

    async def _run_step(self, inst: SagaInstance, step: SagaStep, phase: str) -> str | None:
        """Run one step (or its compensation) through its attempts; the error, or None."""
        cfg = self._config
        st = inst.steps[step.id]
        fwd = phase == FORWARD
        if fwd:
            attempts, done = step.max_attempts or cfg.step_attempts, st.attempts
            timeout = step.timeout or cfg.step_timeout
            backoff = step.backoff or cfg.step_backoff
        else:
            attempts, done = cfg.compensation_attempts, st.comp_attempts
            timeout = step.timeout or cfg.compensation_timeout
            backoff = cfg.compensation_backoff
        clock = self._clock
        # Resumed mid-attempt: the same attempt again (same command id); else the next one.
        attempt = done if st.inflight else done + 1
        if not st.inflight:
            self._record(inst, {"k": "start", "s": step.id, "p": phase, "a": attempt,
                                "t": clock.time()})
        waiter = None if step.service in self._local else Waiter()
        try:
            while True:
                ok, value, delivery = await self._call(inst, step, phase, attempt, timeout,
                                                       waiter)
                if ok and self._saga_log.enabled:
                    try:
                        check_json(value, f"the result of step {step.id!r} (saga "
                                          f"{inst.saga_id!r}, service {step.service!r})")
                    except Exception as exc:
                        ok, value = False, f"SagaReplyError: {exc}"
                if ok:
                    await self._commit(inst, {"k": "ok", "s": step.id, "p": phase,
                                              "r": value, "t": clock.time()})
                    self._stats["steps_succeeded" if fwd else "compensations_succeeded"] += 1
                    await self._ack_reply(delivery)
                    return None
                final = attempt >= attempts or str(value).startswith(DENIED)
                self._stats["step_attempts_failed" if fwd
                            else "compensation_attempts_failed"] += 1
                await self._commit(inst, {"k": "err", "s": step.id, "p": phase, "a": attempt,
                                          "e": value, "final": final, "t": clock.time()})
                await self._ack_reply(delivery)
                if final:
                    return value
                delay = backoff.delay(attempt)
                if delay > 0:
                    await clock.sleep(delay)
                attempt += 1
                self._record(inst, {"k": "start", "s": step.id, "p": phase, "a": attempt,
                                    "t": clock.time()})
        finally:
            if waiter is not None:
                for cid in waiter.cids:
                    self._waiting.pop(cid, None)
                    self._recent.add(cid)

    # -- dispatch ------------------------------------------------------------------------

    async def _call(self, inst: SagaInstance, step: SagaStep, phase: str, attempt: int,
                    timeout: float, waiter: Waiter | None) -> tuple[bool, Any, Any]:
        """One attempt: ``(ok, result or error text, reply delivery to ack or None)``."""
        fwd = phase == FORWARD
        cid = f"{inst.id}.{'f' if fwd else 'c'}.{step.id}.{attempt}"
        clock = self._clock
        try:  # narrowed to this step before anything is dispatched
            tokens = step_tokens(self._grants.get(inst.id), step, inst.saga_id)
        except SecurityError as exc:
            return False, f"{DENIED}{exc}", None
        cmd = SagaCommand(cid, "step" if fwd else "compensate", inst.saga_id, inst.id, step.id,
                          step.name, step.service, attempt,
                          step.action if fwd else step.compensation, inst.data,
                          dict(inst.results),   # a snapshot: later steps change it
                          None if fwd else inst.steps[step.id].result,
                          clock.time() + timeout, tokens)
        late = (f"SagaStepTimeoutError: service {step.service!r} did not answer "
                f"{'step' if fwd else 'the compensation of step'} {step.id!r} of saga "
                f"{inst.saga_id!r} within {timeout:g}s (attempt {attempt})")
        handler = self._local.get(step.service)
        if handler is not None:
            try:
                finished, result = await run_with_timeout(clock, handler(cmd), timeout)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the service's own failure: this attempt failed
                return False, f"{type(exc).__name__}: {exc}", None
            return (True, result, None) if finished else (False, late, None)
        if self._broker is None:
            return False, (f"no handler is registered for service {step.service!r} (step "
                           f"{step.id!r}) and the manager has no broker"), None
        assert waiter is not None
        waiter.current = cid
        if cid not in waiter.cids:
            waiter.cids.append(cid)
        self._waiting[cid] = waiter
        fut = waiter.fut = asyncio.get_running_loop().create_future()
        try:
            await self._ensure_replies()
            early = self._orphans.pop(cid, None)
            if early is not None:          # a redelivered reply that arrived before us
                waiter.offer(cid, early)
            else:
                await self._broker.publish(Event(
                    command_topic(step.service), cmd.to_dict(reply_topic(self._config.name)),
                    idempotency_key=cid))
            finished, outcome = await run_with_timeout(clock, fut, timeout)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the broker refused the command: a failed attempt
            return False, f"cannot send step {step.id!r} to {step.service!r}: " \
                          f"{type(exc).__name__}: {exc}", None
        finally:
            waiter.fut = None
        return outcome if finished else (False, late, None)

    async def _ensure_replies(self) -> None:
        """Subscribe to this manager's reply topic (once, even if called concurrently)."""
        if self._reply_task is not None:
            return
        if self._reply_lock is None:
            self._reply_lock = asyncio.Lock()
        async with self._reply_lock:
            if self._reply_task is not None:
                return
            name = self._config.name
            self._reply_rx, self._reply_ack = await self._broker.subscribe(
                reply_topic(name), f"{name}.replies", None)
            self._reply_task = asyncio.get_running_loop().create_task(
                self._reply_loop(), name=f"lion-saga-replies {name}")

    async def _reply_loop(self) -> None:
        async for delivery in self._reply_rx:
            try:
                await self._on_reply(delivery)
            except asyncio.CancelledError:
                raise
            except Exception:  # one bad reply must not stop the manager hearing the rest
                _log.exception("saga manager %r failed on reply %s", self._config.name,
                               delivery.id)

    async def _on_reply(self, delivery: Any) -> None:
        payload = delivery.payload
        cid, problem = parse_reply(payload)
        waiter = self._waiting.get(cid) if cid is not None else None
        if cid is None or (problem is not None and waiter is None):
            self._stats["malformed_replies"] += 1
            _log.warning("saga manager %r dropped a malformed reply (%s): %r",
                         self._config.name, problem, payload)
            if self._history is not None:
                self._history.append((self._clock.time(), None, None, "malformed_reply",
                                      None, None, None, None, None, problem))
        elif waiter is None:
            if cid in self._recent:
                self._stats["duplicate_replies"] += 1
            else:  # not waited for yet (a restart redelivered it early): keep it for _call
                self._orphans[cid] = (payload["ok"], payload.get("result") if payload["ok"]
                                      else payload.get("error") or "service failed", None)
                while len(self._orphans) > 10_000:
                    del self._orphans[next(iter(self._orphans))]
        else:
            if problem is not None:
                self._stats["malformed_replies"] += 1
                outcome = (False, f"SagaReplyError: the reply of service to command {cid} is "
                                  f"malformed: {problem}", delivery)
            elif payload["ok"]:
                outcome = (True, payload.get("result"), delivery)
            else:
                outcome = (False, payload.get("error") or "service reported failure", delivery)
            if waiter.offer(cid, outcome):
                return        # acked by the runner once the outcome is committed
            self._stats["duplicate_replies"] += 1
        await self._ack_reply(delivery)

    async def _ack_reply(self, delivery: Any) -> None:
        pending = reply_ack(self._reply_ack, delivery)
        if pending is None:
            return
        try:
            await pending
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # stale (redelivered meanwhile): the duplicate is dropped
            _log.debug("reply ack failed: %s", exc)

    def _rest(self, inst: SagaInstance, error: BaseException | None) -> None:
        """Wake ``wait()`` callers of ``inst``; overridden by the manager."""
        raise NotImplementedError
