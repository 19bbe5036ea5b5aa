"""RetryPolicy: how often a failing step is tried and how long to wait in between."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..errors import DefinitionError

__all__ = ["NO_RETRY", "RetryPolicy", "as_retry_policy"]


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How often a failing node is tried, and how long to wait in between.

    ``max_attempts`` counts the first try; the n-th retry waits
    ``min(backoff * multiplier**(n-1), max_backoff)`` seconds.
    """

    max_attempts: int = 1
    backoff: float = 0.0
    multiplier: float = 2.0
    max_backoff: float = 60.0

    def __post_init__(self) -> None:
        if not isinstance(self.max_attempts, int) or self.max_attempts < 1:
            raise DefinitionError(f"max_attempts must be an int >= 1, not {self.max_attempts!r}",
                                  field="max_attempts")
        if self.backoff < 0 or self.max_backoff < 0 or self.multiplier < 1:
            raise DefinitionError("backoff and max_backoff must be >= 0 and multiplier >= 1",
                                  field="backoff")

    def delay(self, retry: int) -> float:
        """Seconds to wait before retry number ``retry`` (1-based)."""
        if self.backoff == 0:
            return 0.0
        return float(min(self.backoff * self.multiplier ** (retry - 1), self.max_backoff))

    def to_dict(self) -> dict[str, Any]:
        """JSON form."""
        return {"max_attempts": self.max_attempts, "backoff": self.backoff,
                "multiplier": self.multiplier, "max_backoff": self.max_backoff}


#: The policy of a node that is tried once.
NO_RETRY = RetryPolicy()


def as_retry_policy(value: "RetryPolicy | int | None") -> RetryPolicy:
    """A RetryPolicy from a policy, a number of retries, or None (no retry)."""
    if value is None:
        return NO_RETRY
    if isinstance(value, RetryPolicy):
        return value
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return RetryPolicy(max_attempts=value + 1) if value else NO_RETRY
    raise DefinitionError(f"retry is a RetryPolicy or a number of retries, not {value!r}",
                          field="retry")
