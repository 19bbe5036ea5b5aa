"""Operator actions on a saga instance: abort it, retry what is stuck, or mark it resolved."""

from __future__ import annotations

from typing import Any

from ..errors import SagaStateError
from ._saga_instance import COMPENSATE, FORWARD, SagaInstance
from ._saga_model import SagaStatus, StepStatus

__all__: list[str] = []


class OperatorMixin:
    """``abort``, ``retry`` and ``mark_resolved`` for :class:`SagaManager`."""

    _clock: Any

    async def abort(self, instance_id: str, reason: str = "aborted by user") -> SagaInstance:
        """Stop a created or running saga and compensate what it completed.

        The step in flight is awaited (a remote service cannot be recalled),
        then compensations run in reverse. Refused once a pivot succeeded.
        """
        self._check_open()
        inst = self.get_instance(instance_id)
        status = inst.status
        if status is SagaStatus.CREATED:
            await self._commit(inst, {"k": "abort", "e": reason, "t": self._clock.time()})
            await self._set_status(inst, SagaStatus.COMPENSATED, f"aborted: {reason}")
            self._rest(inst, None)
            return inst
        if status is not SagaStatus.RUNNING:
            raise SagaStateError(f"saga instance {instance_id!r} of {inst.saga_id!r} is "
                                 f"{status.value}; only a created or running saga can be "
                                 "aborted", saga=inst.saga_id, state=status)
        if inst.pivot_passed:
            pivots = [s for s in inst.definition.pivots
                      if inst.steps[s].status is StepStatus.SUCCEEDED]
            raise SagaStateError(f"saga instance {instance_id!r} of {inst.saga_id!r} passed "
                                 f"pivot step {pivots[0]!r}; it can only go forward",
                                 saga=inst.saga_id, state=status)
        if inst.abort_reason is None:
            await self._commit(inst, {"k": "abort", "e": reason, "t": self._clock.time()})
        return inst

    def _attention(self, instance_id: str, action: str) -> tuple[SagaInstance, str, str]:
        self._check_open()
        inst = self.get_instance(instance_id)
        if not inst.status.needs_attention or inst.failed_step is None:
            raise SagaStateError(f"saga instance {instance_id!r} of {inst.saga_id!r} is "
                                 f"{inst.status.value}; {action}() applies to "
                                 "compensation_failed or failed sagas", saga=inst.saga_id,
                                 state=inst.status)
        if inst.status is SagaStatus.COMPENSATION_FAILED:
            return inst, COMPENSATE, inst.failed_step
        return inst, FORWARD, inst.failed_step

    async def retry(self, instance_id: str) -> SagaInstance:
        """Operator: run the failed compensation (or post-pivot step) again, with fresh attempts."""
        inst, phase, step_id = self._attention(instance_id, "retry")
        t = self._clock.time()
        self._record(inst, {"k": "retry", "s": step_id, "p": phase, "t": t})
        status = SagaStatus.COMPENSATING if phase == COMPENSATE else SagaStatus.RUNNING
        # Compensating again: the error goes back to why the saga rolls back at all.
        await self._set_status(inst, status, inst.reason if phase == COMPENSATE else None,
                               inst.reason_step if phase == COMPENSATE else None)
        self._spawn(inst)
        return inst

    async def mark_resolved(self, instance_id: str, note: str = "") -> SagaInstance:
        """Operator: the failed compensation (or step) was done by hand; carry on from there."""
        inst, phase, step_id = self._attention(instance_id, "mark_resolved")
        t = self._clock.time()
        self._record(inst, {"k": "resolved", "s": step_id, "p": phase, "t": t,
                            "note": note or "resolved by operator"})
        status = SagaStatus.COMPENSATING if phase == COMPENSATE else SagaStatus.RUNNING
        await self._set_status(inst, status, inst.reason if phase == COMPENSATE else None,
                               inst.reason_step if phase == COMPENSATE else None)
        self._spawn(inst)
        return inst
