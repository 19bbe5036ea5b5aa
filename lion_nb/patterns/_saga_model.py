"""Saga definitions: steps, the builder that checks them, and the manager's configuration.

A saga is a sequence of *stages*; a stage is one step, or several steps that
run in parallel (``add_parallel``). Every step names the service that does
its work and may carry a compensation. A step without compensation is a
*pivot*: once it succeeded the saga can only go forward.
"""

from __future__ import annotations

import enum
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

from .. import _display
from ..errors import SagaDefinitionError
from ._events_model import RetryBackoff
from ._events_topics import validate_topic
from ._saga_security import parse_requirements

__all__ = [
    "SagaStatus", "StepStatus", "SagaStep", "SagaDefinition", "SagaDefinitionBuilder",
    "SagaManagerConfig", "SagaStatistics", "COMMAND_TOPIC_PREFIX", "REPLY_TOPIC_PREFIX",
    "command_topic", "reply_topic",
]

#: Commands for service ``s`` are published on ``saga.command.<s>``.
COMMAND_TOPIC_PREFIX = "saga.command"
#: Replies to manager ``m`` are published on ``saga.reply.<m>``.
REPLY_TOPIC_PREFIX = "saga.reply"


def command_topic(service: str) -> str:
    """The topic a service receives its commands on."""
    return f"{COMMAND_TOPIC_PREFIX}.{service}"


def reply_topic(manager: str) -> str:
    """The topic a saga manager receives replies on."""
    return f"{REPLY_TOPIC_PREFIX}.{manager}"


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
        return self in (SagaStatus.COMPLETED, SagaStatus.COMPENSATED)

    @property
    def needs_attention(self) -> bool:
        """True when the saga waits for ``retry`` or ``mark_resolved``."""
        return self in (SagaStatus.COMPENSATION_FAILED, SagaStatus.FAILED)

    @property
    def resting(self) -> bool:
        """True when the saga does not progress by itself (final or needs attention)."""
        return self.final or self.needs_attention


class StepStatus(enum.StrEnum):
    """Where one step of an instance is; the names match the notebook's state colours."""

    PENDING = "pending"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    COMPENSATING = "compensating"
    COMPENSATED = "compensated"
    COMPENSATION_FAILED = "compensation_failed"


def _check_json(value: Any, what: str, step: str | None, saga: str | None) -> None:
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise SagaDefinitionError(f"{what} of step {step!r} is not JSON-serializable: {exc}",
                                  saga=saga, step=step) from None


def _check_positive(value: Any, what: str, step: str | None) -> None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))
                              or not value > 0 or value == float("inf")):
        raise SagaDefinitionError(f"{what} of step {step!r} must be a positive finite number, "
                                  f"got {value!r}", saga=None, step=step)


class SagaStep:
    """One step: an action payload sent to ``service``, and optionally its compensation.

    ``timeout`` (seconds per attempt) and ``max_attempts`` default to the
    manager's configuration. The chaining ``with_*`` methods return the step.
    """

    __slots__ = ("id", "name", "action", "service", "compensation", "timeout", "max_attempts",
                 "backoff", "requires")

    def __init__(self, id: str, name: str, action: Any, service: str, *,  # noqa: A002 - seed
                 compensation: Any = None, timeout: float | None = None,
                 max_attempts: int | None = None, backoff: RetryBackoff | None = None,
                 requires: Iterable[str] = ()) -> None:
        if not isinstance(id, str) or not id.strip() or "/" in id:
            raise SagaDefinitionError(f"step id must be a non-empty string without '/', "
                                      f"got {id!r}", saga=None, step=id)
        if not isinstance(name, str):
            raise SagaDefinitionError(f"name of step {id!r} must be a str, got "
                                      f"{type(name).__name__}", saga=None, step=id)
        if not isinstance(service, str) or not service:
            raise SagaDefinitionError(f"service of step {id!r} must be a non-empty string, "
                                      f"got {service!r}", saga=None, step=id)
        try:
            validate_topic(command_topic(service))
        except ValueError as exc:
            raise SagaDefinitionError(f"service {service!r} of step {id!r} is not a usable "
                                      f"topic segment: {exc}", saga=None, step=id) from None
        _check_json(action, "action", id, None)
        self.id = id
        self.name = name
        self.action = action
        self.service = service
        self.compensation: Any = None
        self.timeout: float | None = None
        self.max_attempts: int | None = None
        self.backoff = backoff
        self.requires = parse_requirements(requires)  # capabilities its commands carry
        if compensation is not None:
            self.with_compensation(compensation)
        if timeout is not None:
            self.with_timeout(timeout)
        if max_attempts is not None:
            self.with_retry(max_attempts, backoff)

    def with_compensation(self, compensation: Any) -> "SagaStep":
        """Set the payload that undoes this step (sent to the same service); returns self."""
        if compensation is None:
            raise SagaDefinitionError(f"compensation of step {self.id!r} must not be None; "
                                      "leave it unset for a pivot step", saga=None, step=self.id)
        _check_json(compensation, "compensation", self.id, None)
        self.compensation = compensation
        return self

    def with_timeout(self, seconds: float) -> "SagaStep":
        """Seconds each attempt may take before it counts as failed; returns self."""
        _check_positive(seconds, "timeout", self.id)
        self.timeout = float(seconds)
        return self

    def with_retry(self, max_attempts: int, backoff: RetryBackoff | float | None = None
                   ) -> "SagaStep":
        """Try the step up to ``max_attempts`` times, waiting ``backoff`` between; returns self.

        ``backoff`` is a RetryBackoff or the first delay in seconds (doubling).
        """
        if isinstance(max_attempts, bool) or not isinstance(max_attempts, int) \
                or max_attempts < 1:
            raise SagaDefinitionError(f"max_attempts of step {self.id!r} must be an int >= 1, "
                                      f"got {max_attempts!r}", saga=None, step=self.id)
        if isinstance(backoff, (int, float)) and not isinstance(backoff, bool):
            backoff = RetryBackoff(float(backoff))
        elif backoff is not None and not isinstance(backoff, RetryBackoff):
            raise SagaDefinitionError(f"backoff of step {self.id!r} must be a RetryBackoff or "
                                      f"seconds, got {backoff!r}", saga=None, step=self.id)
        self.max_attempts = max_attempts
        self.backoff = backoff
        return self

    @property
    def pivot(self) -> bool:
        """True if the step has no compensation: after it succeeds, no rolling back."""
        return self.compensation is None

    def to_dict(self) -> dict[str, Any]:
        """The step as JSON-able data."""
        b = self.backoff
        return {"id": self.id, "name": self.name, "action": self.action,
                "service": self.service, "compensation": self.compensation,
                "timeout": self.timeout, "max_attempts": self.max_attempts,
                "backoff": None if b is None else [b.initial, b.multiplier, b.maximum],
                "requires": list(self.requires)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "SagaStep":
        """Rebuild a step from :meth:`to_dict` output."""
        b = data.get("backoff")
        return cls(data["id"], data["name"], data.get("action"), data["service"],
                   compensation=data.get("compensation"), timeout=data.get("timeout"),
                   max_attempts=data.get("max_attempts"),
                   backoff=None if b is None else RetryBackoff(*b),
                   requires=data.get("requires") or ())

    def __repr__(self) -> str:
        comp = "pivot" if self.pivot else "compensable"
        return f"SagaStep({self.id!r}, {self.name!r}, service={self.service!r}, {comp})"


class SagaDefinition:
    """A validated saga: stages of steps in order. Built by :class:`SagaDefinitionBuilder`."""

    _display_kind = "saga_definition"

    def __init__(self, id: str, name: str,  # noqa: A002 - the seed's field name
                 stages: Iterable[Iterable[SagaStep]], description: str = "") -> None:
        self.id = id
        self.name = name
        self.description = description
        self.stages: tuple[tuple[SagaStep, ...], ...] = tuple(tuple(s) for s in stages)
        #: Every step in execution order (parallel siblings in declaration order).
        self.steps: tuple[SagaStep, ...] = tuple(s for stage in self.stages for s in stage)
        self._by_id = {s.id: s for s in self.steps}
        self._index = {s.id: i for i, s in enumerate(self.steps)}
        self._digest: str | None = None

    def step(self, step_id: str) -> SagaStep:
        """The step with id ``step_id``; SagaDefinitionError if there is none."""
        try:
            return self._by_id[step_id]
        except KeyError:
            raise SagaDefinitionError(f"saga {self.id!r} has no step {step_id!r}",
                                      saga=self.id, step=step_id) from None

    def index(self, step_id: str) -> int:
        """Position of ``step_id`` in :attr:`steps`."""
        return self._index[step_id]

    @property
    def pivots(self) -> tuple[str, ...]:
        """Ids of the steps without compensation."""
        return tuple(s.id for s in self.steps if s.pivot)

    def to_dict(self) -> dict[str, Any]:
        """The definition as JSON-able data (what the saga log stores)."""
        return {"id": self.id, "name": self.name, "description": self.description,
                "stages": [[s.to_dict() for s in stage] for stage in self.stages]}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "SagaDefinition":
        """Rebuild (and re-check) a definition from :meth:`to_dict` output."""
        builder = SagaDefinitionBuilder(data["id"], data["name"])
        builder.with_description(data.get("description", ""))
        for stage in data["stages"]:
            steps = [SagaStep.from_dict(s) for s in stage]
            if len(steps) == 1:
                builder.add_step(steps[0])
            else:
                builder.add_parallel(*steps)
        return builder.build()

    @property
    def digest(self) -> str:
        """A short hash of the definition: instances remember which version they ran."""
        if self._digest is None:
            text = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
            self._digest = hashlib.sha256(text.encode()).hexdigest()[:16]
        return self._digest

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, Any]:
        return _display.mimebundle(self, include, exclude)

    def __repr__(self) -> str:
        return (f"<SagaDefinition {self.id!r} ({self.name}) steps="
                f"{[s.id for s in self.steps]}>")


class SagaDefinitionBuilder:
    """Builds a :class:`SagaDefinition`; each call checks its input and returns the builder."""

    def __init__(self, id: str, name: str) -> None:  # noqa: A002 - the seed's field name
        if not isinstance(id, str) or not id.strip() or "/" in id:
            raise SagaDefinitionError(f"saga id must be a non-empty string without '/', "
                                      f"got {id!r}", saga=id, step=None)
        if not isinstance(name, str):
            raise SagaDefinitionError(f"name of saga {id!r} must be a str", saga=id, step=None)
        self._id = id
        self._name = name
        self._description = ""
        self._stages: list[tuple[SagaStep, ...]] = []
        self._ids: set[str] = set()

    def _take(self, step: Any) -> SagaStep:
        if not isinstance(step, SagaStep):
            raise SagaDefinitionError(f"saga {self._id!r} takes SagaStep objects, got "
                                      f"{type(step).__name__}", saga=self._id, step=None)
        if step.id in self._ids:
            raise SagaDefinitionError(f"duplicate step id {step.id!r} in saga {self._id!r}",
                                      saga=self._id, step=step.id)
        return step

    def add_step(self, step: SagaStep) -> "SagaDefinitionBuilder":
        """Append a step that runs after every step added before it."""
        self._ids.add(self._take(step).id)
        self._stages.append((step,))
        return self

    def add_parallel(self, *steps: SagaStep) -> "SagaDefinitionBuilder":
        """Append steps that run at the same time, after every step added before them.

        Pivots (steps without compensation) cannot be parallel: if a sibling
        failed after the pivot succeeded, the saga could go neither way.
        """
        if len(steps) < 2:
            raise SagaDefinitionError(f"add_parallel in saga {self._id!r} needs at least two "
                                      "steps; use add_step for one", saga=self._id, step=None)
        seen: set[str] = set()
        for step in steps:
            self._take(step)
            if step.id in seen:
                raise SagaDefinitionError(f"duplicate step id {step.id!r} in saga {self._id!r}",
                                          saga=self._id, step=step.id)
            if step.pivot:
                raise SagaDefinitionError(
                    f"step {step.id!r} in saga {self._id!r} has no compensation (a pivot) and "
                    "cannot run in parallel; give it a compensation or add it with add_step",
                    saga=self._id, step=step.id)
            seen.add(step.id)
        self._ids |= seen
        self._stages.append(tuple(steps))
        return self

    def with_description(self, text: str) -> "SagaDefinitionBuilder":
        """Attach a free-text description."""
        self._description = str(text)
        return self

    def build(self) -> SagaDefinition:
        """The finished definition; SagaDefinitionError if it has no steps."""
        if not self._stages:
            raise SagaDefinitionError(f"saga {self._id!r} has no steps", saga=self._id,
                                      step=None)
        return SagaDefinition(self._id, self._name, self._stages, self._description)


@dataclass(frozen=True, slots=True)
class SagaManagerConfig:
    """Defaults for every saga of a manager; steps may override timeout and retries."""

    name: str = "saga-manager"            # reply topic segment and storage namespace
    step_timeout: float = 30.0            # seconds per attempt of a step
    step_attempts: int = 1                # attempts per step before compensating
    step_backoff: RetryBackoff = field(default_factory=RetryBackoff)
    compensation_timeout: float = 30.0    # seconds per attempt of a compensation
    compensation_attempts: int = 5        # then COMPENSATION_FAILED
    compensation_backoff: RetryBackoff = field(
        default_factory=lambda: RetryBackoff(0.1, 2.0, 10.0))
    local_dispatch: bool = True           # register_service handlers skip the broker
    history_limit: int = 10_000           # rows kept for history(); 0 keeps none
    keep_finished: int = 10_000           # finished instances kept in memory

    def __post_init__(self) -> None:
        try:
            validate_topic(reply_topic(self.name))
        except ValueError as exc:
            raise ValueError(f"SagaManagerConfig.name {self.name!r} is not a usable topic "
                             f"segment: {exc}") from None
        for attr in ("step_timeout", "compensation_timeout"):
            value = getattr(self, attr)
            if not (isinstance(value, (int, float)) and 0 < value < float("inf")):
                raise ValueError(f"{attr} must be a positive finite number, got {value!r}")
        for attr in ("step_attempts", "compensation_attempts"):
            if not isinstance(getattr(self, attr), int) or getattr(self, attr) < 1:
                raise ValueError(f"{attr} must be an int >= 1, got {getattr(self, attr)!r}")
        if self.history_limit < 0 or self.keep_finished < 0:
            raise ValueError("history_limit and keep_finished must be >= 0")


@dataclass(frozen=True, slots=True)
class SagaStatistics:
    """Instances per state now, and counts of work since the manager started."""

    created: int
    running: int
    compensating: int
    completed: int
    compensated: int
    compensation_failed: int
    failed: int
    steps_succeeded: int
    step_attempts_failed: int
    compensations_succeeded: int
    compensation_attempts_failed: int
    duplicate_replies: int
    malformed_replies: int

    @property
    def needs_attention(self) -> int:
        """Instances waiting for an operator (COMPENSATION_FAILED or FAILED)."""
        return self.compensation_failed + self.failed
