"""One saga step: what a service does, what undoes it, and how often it is tried."""

from __future__ import annotations

import json
from typing import Any, Iterable, Mapping

from ...errors import DefinitionError, SagaDefinitionError
from ...model import RetryPolicy
from ._security import parse_requirements
from ._topics import topic_segments_problem

__all__ = ["SagaStep", "as_retry_policy", "check_json"]


def check_json(value: Any, what: str, step: str | None, saga: str | None) -> None:
    """Raise SagaDefinitionError naming ``what`` unless ``value`` survives JSON."""
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


def as_retry_policy(value: Any) -> RetryPolicy:
    """A RetryPolicy for ``value``: a RetryPolicy, or seconds of first delay (doubling).

    DefinitionError if it is neither.
    """
    if isinstance(value, RetryPolicy):
        return value
    if value is None:
        return RetryPolicy()
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return RetryPolicy(backoff=float(value))
    raise DefinitionError(f"a backoff is a RetryPolicy or seconds, got {value!r}")


class SagaStep:
    """One step: an action payload sent to ``service``, and optionally its compensation.

    ``timeout`` (seconds per attempt) and ``max_attempts`` default to the
    manager's configuration. The chaining ``with_*`` methods return the step.
    """

    __slots__ = ("id", "name", "action", "service", "compensation", "timeout", "max_attempts",
                 "backoff", "requires")

    id: str
    name: str
    action: Any
    service: str
    compensation: Any
    timeout: float | None
    max_attempts: int | None
    backoff: RetryPolicy | None   # only its delays are used
    requires: tuple[str, ...]

    def __init__(self, id: str, name: str, action: Any, service: str, *,  # noqa: A002 - seed
                 compensation: Any = None, timeout: float | None = None,
                 max_attempts: int | None = None, backoff: Any = None,
                 requires: Iterable[str] = ()) -> None:
        if not isinstance(id, str) or not id.strip() or "/" in id:
            raise SagaDefinitionError(f"step id must be a non-empty string without '/', "
                                      f"got {id!r}", saga=None, step=id)
        if not isinstance(name, str):
            raise SagaDefinitionError(f"name of step {id!r} must be a str, got "
                                      f"{type(name).__name__}", saga=None, step=id)
        problem = topic_segments_problem(service)
        if problem is not None:
            raise SagaDefinitionError(f"service {service!r} of step {id!r} is not a usable "
                                      f"topic segment: it {problem}", saga=None, step=id)
        check_json(action, "action", id, None)
        self.id = id
        self.name = name
        self.action = action
        self.service = service
        self.compensation = None
        self.timeout = None
        self.max_attempts = None
        self.backoff = None
        self.requires = parse_requirements(requires)  # capabilities its commands carry
        if compensation is not None:
            self.with_compensation(compensation)
        if timeout is not None:
            self.with_timeout(timeout)
        if max_attempts is not None:
            self.with_retry(max_attempts, backoff)
        elif backoff is not None:
            self.backoff = self._policy(backoff)

    def with_compensation(self, compensation: Any) -> "SagaStep":
        """Set the payload that undoes this step (sent to the same service); returns self."""
        if compensation is None:
            raise SagaDefinitionError(f"compensation of step {self.id!r} must not be None; "
                                      "leave it unset for a pivot step", saga=None, step=self.id)
        check_json(compensation, "compensation", self.id, None)
        self.compensation = compensation
        return self

    def with_timeout(self, seconds: float) -> "SagaStep":
        """Seconds each attempt may take before it counts as failed; returns self."""
        _check_positive(seconds, "timeout", self.id)
        self.timeout = float(seconds)
        return self

    def with_retry(self, max_attempts: int, backoff: Any = None) -> "SagaStep":
        """Try the step up to ``max_attempts`` times, waiting ``backoff`` between; returns self.

        ``backoff`` is a RetryPolicy (its delays are used) or the first delay
        in seconds (doubling).
        """
        if isinstance(max_attempts, bool) or not isinstance(max_attempts, int) \
                or max_attempts < 1:
            raise SagaDefinitionError(f"max_attempts of step {self.id!r} must be an int >= 1, "
                                      f"got {max_attempts!r}", saga=None, step=self.id)
        self.max_attempts = max_attempts
        self.backoff = None if backoff is None else self._policy(backoff)
        return self

    def _policy(self, backoff: Any) -> RetryPolicy:
        try:
            return as_retry_policy(backoff)
        except DefinitionError as exc:
            raise SagaDefinitionError(f"backoff of step {self.id!r}: {exc}", saga=None,
                                      step=self.id) from None

    @property
    def pivot(self) -> bool:
        """True if the step has no compensation: after it succeeds, no rolling back."""
        return self.compensation is None

    def to_dict(self) -> dict[str, Any]:
        """The step as JSON-able data."""
        r = self.backoff
        return {"id": self.id, "name": self.name, "action": self.action,
                "service": self.service, "compensation": self.compensation,
                "timeout": self.timeout, "max_attempts": self.max_attempts,
                "backoff": None if r is None else [r.backoff, r.multiplier, r.max_backoff],
                "requires": list(self.requires)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "SagaStep":
        """Rebuild a step from :meth:`to_dict` output."""
        b = data.get("backoff")
        backoff = None if b is None else RetryPolicy(backoff=b[0], multiplier=b[1],
                                                     max_backoff=b[2])
        return cls(data["id"], data["name"], data.get("action"), data["service"],
                   compensation=data.get("compensation"), timeout=data.get("timeout"),
                   max_attempts=data.get("max_attempts"), backoff=backoff,
                   requires=data.get("requires") or ())

    def __repr__(self) -> str:
        comp = "pivot" if self.pivot else "compensable"
        return f"SagaStep({self.id!r}, {self.name!r}, service={self.service!r}, {comp})"
