"""The saga manager's configuration."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from ...errors import ConfigError, DefinitionError
from ...model import RetryPolicy
from ._step import as_retry_policy
from ._topics import topic_segments_problem

__all__ = ["SagaManagerConfig"]


@dataclass(frozen=True, slots=True, kw_only=True)
class SagaManagerConfig:
    """Defaults for every saga of a manager; steps may override timeout and retries.

    The backoffs take a ``RetryPolicy`` (only its delays are used; the
    attempts come from ``*_attempts``) or seconds of first delay; they are
    stored as RetryPolicy. Bad values raise ConfigError naming the field.
    """

    name: str = "saga-manager"            # reply topic segment and storage namespace
    step_timeout: float = 30.0            # seconds per attempt of a step
    step_attempts: int = 1                # attempts per step before compensating
    step_backoff: RetryPolicy = field(default_factory=RetryPolicy)
    compensation_timeout: float = 30.0    # seconds per attempt of a compensation
    compensation_attempts: int = 5        # then COMPENSATION_FAILED
    compensation_backoff: RetryPolicy = field(
        default_factory=lambda: RetryPolicy(backoff=0.1, multiplier=2.0, max_backoff=10.0))
    local_dispatch: bool = True           # register_service handlers skip the broker
    history_limit: int = 10_000           # rows kept for history(); 0 keeps none
    keep_finished: int = 10_000           # finished instances kept in memory

    def __post_init__(self) -> None:
        problem = topic_segments_problem(self.name)
        if problem is not None:
            raise ConfigError(f"SagaManagerConfig.name {self.name!r} is not a usable topic "
                              f"segment: it {problem}", field="name")
        for attr in ("step_timeout", "compensation_timeout"):
            value = getattr(self, attr)
            if isinstance(value, bool) or not isinstance(value, (int, float)) \
                    or not 0 < value < math.inf:
                raise ConfigError(f"{attr} must be a positive finite number, got {value!r}",
                                  field=attr)
        for attr in ("step_attempts", "compensation_attempts", "history_limit",
                     "keep_finished"):
            number: Any = getattr(self, attr)
            low = 1 if attr.endswith("attempts") else 0
            if isinstance(number, bool) or not isinstance(number, int) or number < low:
                raise ConfigError(f"{attr} must be an int >= {low}, got {number!r}",
                                  field=attr)
        if not isinstance(self.local_dispatch, bool):
            raise ConfigError(f"local_dispatch must be True or False, got "
                              f"{self.local_dispatch!r}", field="local_dispatch")
        for attr in ("step_backoff", "compensation_backoff"):
            try:
                policy = as_retry_policy(getattr(self, attr))
            except DefinitionError as exc:
                raise ConfigError(f"{attr}: {exc}", field=attr) from None
            # Normalised once here so that the runs read one type (the dataclass is frozen).
            object.__setattr__(self, attr, policy)
