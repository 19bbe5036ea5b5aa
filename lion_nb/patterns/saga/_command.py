"""What a service receives: one command to do (or undo) one step, and its id.

A command id names one attempt of one step (or compensation) of one
instance. It is the same for every delivery of that attempt and across a
manager restart, so services de-duplicate on it. Its parts are escaped
(``%`` and ``.``) before they are joined with dots, so two different
attempts can never share an id, whatever the instance and step ids hold.
"""

from __future__ import annotations

from types import MappingProxyType
from typing import Any, Mapping

from ...errors import SagaServiceError, SagaStepTimeoutError

__all__ = ["Attempt", "SagaCommand", "command_id", "describe", "timed_out"]


def _part(text: str) -> str:
    return text.replace("%", "%25").replace(".", "%2E")


def command_id(instance_id: str, compensating: bool, step_id: str, attempt: int) -> str:
    """The id of one attempt: ``<instance>.<f|c>.<step>.<attempt>``, parts escaped."""
    if "." in instance_id or "%" in instance_id:
        instance_id = _part(instance_id)
    if "." in step_id or "%" in step_id:
        step_id = _part(step_id)
    return f"{instance_id}.{'c' if compensating else 'f'}.{step_id}.{attempt}"


class SagaCommand:
    """What a service gets: do (or undo) one step of one saga instance.

    ``kind`` is ``"step"`` or ``"compensate"``; ``action`` is the step's
    action payload or its compensation payload; ``results`` maps earlier
    steps to their results; for a compensation ``result`` is what this very
    step returned. ``command_id`` is the same for every delivery of the same
    attempt, and stable across a manager restart: use it to de-duplicate.
    """

    __slots__ = ("command_id", "kind", "saga_id", "instance_id", "step_id", "step_name",
                 "service", "attempt", "action", "data", "results", "result", "deadline",
                 "tokens")

    def __init__(self, command_id: str, kind: str, saga_id: str, instance_id: str,
                 step_id: str, step_name: str, service: str, attempt: int, action: Any,
                 data: Any, results: Mapping[str, Any], result: Any = None,
                 deadline: float | None = None, tokens: tuple[str, ...] = ()) -> None:
        self.command_id = command_id
        self.kind = kind
        self.saga_id = saga_id
        self.instance_id = instance_id
        self.step_id = step_id
        self.step_name = step_name
        self.service = service
        self.attempt = attempt
        self.action = action
        self.data = data
        self.results = results
        self.result = result
        self.deadline = deadline
        self.tokens = tokens  # capability tokens narrowed to this step (serialized)

    @property
    def compensating(self) -> bool:
        """True for a compensation command."""
        return self.kind == "compensate"

    def to_dict(self, reply_to: str) -> dict[str, Any]:
        """The command as an event payload, with the topic to reply on."""
        return {"command_id": self.command_id, "kind": self.kind, "saga_id": self.saga_id,
                "instance_id": self.instance_id, "step_id": self.step_id,
                "step_name": self.step_name, "service": self.service,
                "attempt": self.attempt, "action": self.action, "data": self.data,
                "results": dict(self.results), "result": self.result,
                "deadline": self.deadline, "tokens": list(self.tokens), "reply_to": reply_to}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "SagaCommand":
        """Rebuild a command from an event payload."""
        return cls(d["command_id"], d["kind"], d["saga_id"], d["instance_id"], d["step_id"],
                   d.get("step_name", d["step_id"]), d.get("service", ""),
                   int(d.get("attempt", 1)), d.get("action"), d.get("data"),
                   MappingProxyType(dict(d.get("results") or {})), d.get("result"),
                   d.get("deadline"), tuple(d.get("tokens") or ()))

    def __repr__(self) -> str:
        return (f"SagaCommand({self.kind} {self.step_id!r} of {self.saga_id!r}/"
                f"{self.instance_id}, attempt={self.attempt})")


class Attempt:
    """The outcome of one attempt: a result, or a typed error; and the reply to ack.

    ``error`` is a ``SagaServiceError`` (the service reported a failure), a
    ``SagaStepTimeoutError``, a ``SagaReplyError``, a ``CapabilityDeniedError``,
    or the exception an in-process handler raised.
    """

    __slots__ = ("result", "error", "reply")

    def __init__(self, result: Any = None, error: BaseException | None = None,
                 reply: Any = None) -> None:
        self.result = result
        self.error = error
        self.reply = reply    # the reply Delivery, acked once the outcome is committed

    @property
    def ok(self) -> bool:
        """True if the attempt succeeded."""
        return self.error is None

    def __repr__(self) -> str:
        return f"Attempt(ok, {self.result!r})" if self.error is None else \
            f"Attempt(failed, {self.error!r})"


def timed_out(cmd: SagaCommand, seconds: float) -> SagaStepTimeoutError:
    """The error of an attempt at ``cmd`` that got no answer within ``seconds``."""
    what = "step" if cmd.kind == "step" else "the compensation of step"
    return SagaStepTimeoutError(
        f"service {cmd.service!r} did not answer {what} {cmd.step_id!r} of saga "
        f"{cmd.saga_id!r} within {seconds:g}s (attempt {cmd.attempt})",
        step=cmd.step_id, timeout=seconds)


def describe(error: BaseException) -> str:
    """The text the saga log keeps for a failed attempt."""
    if isinstance(error, SagaServiceError):   # the service's own words, type included
        return str(error)
    return f"{type(error).__name__}: {error}"
