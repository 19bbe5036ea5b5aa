"""Where a saga instance is, and where each of its steps is."""

from __future__ import annotations

import enum

__all__ = ["FINAL", "NEEDS_ATTENTION", "RESTING", "SagaStatus", "StepStatus"]


class SagaStatus(enum.StrEnum):
    """Where a saga instance is. ``COMPENSATION_FAILED`` and ``FAILED`` need an operator."""

    CREATED = "created"
    RUNNING = "running"
    COMPENSATING = "compensating"
    COMPLETED = "completed"
    COMPENSATED = "compensated"
    COMPENSATION_FAILED = "compensation_failed"   # a compensation kept failing
    FAILED = "failed"                             # a step after a pivot kept failing

    @property
    def final(self) -> bool:
        """True for COMPLETED and COMPENSATED: nothing will change any more."""
        return self in FINAL

    @property
    def needs_attention(self) -> bool:
        """True when the saga waits for ``retry`` or ``mark_resolved``."""
        return self in NEEDS_ATTENTION

    @property
    def resting(self) -> bool:
        """True when the saga does not progress by itself (final or needs attention)."""
        return self in RESTING


# As tuples for the hot paths: on Python 3.11 reading a member off its class goes through
# EnumType.__getattr__ (a method-wrapper per read), and a property is a call.
FINAL = (SagaStatus.COMPLETED, SagaStatus.COMPENSATED)
NEEDS_ATTENTION = (SagaStatus.COMPENSATION_FAILED, SagaStatus.FAILED)
RESTING = FINAL + NEEDS_ATTENTION


class StepStatus(enum.StrEnum):
    """Where one step of an instance is; the names match the notebook's state colours."""

    PENDING = "pending"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    COMPENSATING = "compensating"
    COMPENSATED = "compensated"
    COMPENSATION_FAILED = "compensation_failed"
