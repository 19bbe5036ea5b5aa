"""One exception hierarchy for lion_nb, rooted at :class:`LionError`.

Every branch also subclasses the builtin a Python user would naturally catch,
and keeps the culprit (node, edge, topic, step, capability) as attributes::

    LionError
    ├── ConfigError (ValueError)              .field: a configuration value refused
    ├── DefinitionError (ValueError)          malformed workflow definitions
    │   ├── CycleError                        .cycle: list of node names
    │   ├── DuplicateIdError                  .id
    │   ├── UnknownNodeError                  .node_id, .edge_id
    │   ├── ConditionError                    .expression
    │   ├── SerializationError                .field
    │   └── UnknownArgumentError (TypeError)  .argument, .step: a keyword nothing takes
    ├── ExecutionError (RuntimeError)         running instances
    │   ├── HandlerNotFoundError              .node, .handler
    │   ├── NodeFailedError                   .node, .instance_id, .attempt
    │   │   └── PoisonNodeError               .crashes: its process died that often
    │   ├── NodeTimeoutError (TimeoutError)   .node, .timeout
    │   ├── ResultNotSerializableError        .node
    │   ├── HandlerNotSerializableError       .node
    │   ├── WorkflowFailedError               .instance_id, .node; .edge, .source: condition
    │   ├── InstanceCancelledError            .instance_id
    │   ├── InstanceNotFoundError (KeyError)  .instance_id
    │   ├── NoResultError (KeyError)          .node, .state: why a node has no result
    │   ├── RerunError                        .node: start_from/rerun cannot be honoured
    │   ├── CacheConfigError (ConfigError)    .field: invalid cache settings
    │   └── ExecutorStoppedError
    ├── StateError                            state machines and storage
    │   ├── IllegalTransitionError            .entity, .from_state, .to_state
    │   ├── StateConfigError (ConfigError)    .field: bad storage/checkpoint settings
    │   ├── StorageError (OSError)            .key
    │   ├── CheckpointError
    │   │   ├── CheckpointKindError (TypeError) .kind: no to_dict/from_dict, unknown kind
    │   │   ├── CheckpointCorruptError        .key
    │   │   │   └── StorageCorruptError (StorageError) .path: a damaged database file
    │   │   ├── CheckpointVersionError        .key, .version
    │   │   └── CheckpointNotFoundError (KeyError)
    │   ├── DefinitionChangedError            .instance_id
    │   └── LeaseError                        .instance_id, .owner
    ├── SchedulerError
    │   ├── SchedulerConfigError (ConfigError) .field
    │   ├── QueueFullError                    .capacity
    │   ├── SchedulerClosedError
    │   └── DeadlineMissedError               .task
    ├── EventError
    │   ├── TopicError (ValueError)           .topic
    │   ├── SubscriberError                   .subscriber
    │   ├── EventTypeError (TypeError)        .value: not an Event / EventAck / EventStore
    │   ├── EventCorruptError                 .offset, .event_id: a damaged stored event
    │   ├── AckError                          .event_id, .subscriber
    │   ├── SubscriberFullError               .subscriber
    │   ├── BrokerClosedError
    │   ├── BrokerConnectionError (ConnectionError) .url: message server unreachable
    │   └── StreamClashError (ValueError)     .stream: a stream that is not this broker's
    ├── SagaError
    │   ├── SagaDefinitionError (ValueError)  .saga, .step
    │   ├── SagaNotFoundError (KeyError)      .saga
    │   ├── SagaStateError                    .saga, .state
    │   ├── SagaReplyError                    .step
    │   ├── SagaServiceError                  .step, .service: the service failed it
    │   └── SagaStepTimeoutError (TimeoutError) .step
    └── SecurityError (PermissionError)
        ├── CapabilityDeniedError             .capability, .node
        ├── TokenError                        .token_id (if known): forged, malformed, wrong key
        │   ├── TokenExpiredError             .token_id
        │   └── TokenRevokedError             .token_id
        ├── RequirementError (ValueError)     .requirement
        ├── ResourceError                     .resource
        └── CapabilityError (ValueError)      .capability: malformed, or widened
    NotebookError                             tables, pictures, views
    └── UnsupportedSourceError (TypeError)    .source: the object that cannot be read

Warnings (``warnings.warn``, never raised): LionWarning (UserWarning)
    └── CacheCorruptWarning                   .key, .node: a cache entry failed its check
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "LionError", "ConfigError",
    "DefinitionError", "CycleError", "DuplicateIdError", "UnknownNodeError",
    "ConditionError", "SerializationError", "UnknownArgumentError",
    "ExecutionError", "HandlerNotFoundError", "NodeFailedError", "PoisonNodeError",
    "NodeTimeoutError",
    "ResultNotSerializableError", "HandlerNotSerializableError", "WorkflowFailedError",
    "InstanceCancelledError",
    "InstanceNotFoundError", "NoResultError", "ExecutorStoppedError",
    "blame_lines", "user_frames",
    "StateError", "IllegalTransitionError", "StateConfigError", "StorageError",
    "CheckpointError", "CheckpointKindError", "CheckpointCorruptError", "StorageCorruptError",
    "CheckpointVersionError", "CheckpointNotFoundError",
    "DefinitionChangedError", "LeaseError",
    "SchedulerError", "SchedulerConfigError", "QueueFullError", "SchedulerClosedError",
    "DeadlineMissedError",
    "EventError", "TopicError", "SubscriberError", "EventTypeError", "EventCorruptError",
    "AckError", "SubscriberFullError",
    "BrokerClosedError", "BrokerConnectionError", "StreamClashError",
    "SagaError", "SagaDefinitionError", "SagaNotFoundError", "SagaStateError",
    "SagaReplyError", "SagaServiceError", "SagaStepTimeoutError",
    "SecurityError", "CapabilityDeniedError", "TokenError", "TokenExpiredError",
    "TokenRevokedError", "RequirementError", "ResourceError", "CapabilityError",
    "NotebookError", "UnsupportedSourceError",
    "RerunError", "CacheConfigError", "LionWarning", "CacheCorruptWarning",
]


class LionError(Exception):
    """Root of every error lion_nb raises on purpose."""

    def __init__(self, message: str = "", **culprits: Any) -> None:
        super().__init__(message)
        for key, value in culprits.items():
            setattr(self, key, value)


class ConfigError(LionError, ValueError):
    """A configuration object got a value it cannot work with; ``.field`` names it."""


# --- definitions -----------------------------------------------------------

class DefinitionError(LionError, ValueError):
    """A workflow definition (or its JSON form) is malformed."""


class CycleError(DefinitionError):
    """An edge would close a cycle; ``.cycle`` lists the node names on it."""


class DuplicateIdError(DefinitionError):
    """A node or edge id is used twice; ``.id`` is the id."""


class UnknownNodeError(DefinitionError):
    """An edge names a node that is not in the workflow; ``.node_id`` is it."""


class ConditionError(DefinitionError):
    """A condition expression is not allowed or does not parse."""


class SerializationError(DefinitionError):
    """A document cannot be (de)serialized; ``.field`` names the bad field."""


class UnknownArgumentError(DefinitionError, TypeError):
    """A keyword argument no option has (``flow.step(id=...)``); ``.argument`` is it.

    A TypeError too, as Python's own error for an unknown keyword is.
    """


# --- execution -------------------------------------------------------------

class ExecutionError(LionError, RuntimeError):
    """Something went wrong while running a workflow instance."""


class HandlerNotFoundError(ExecutionError):
    """No handler is registered for a node; ``.node`` and ``.handler`` name it."""


class NodeFailedError(ExecutionError):
    """A node's handler failed after its retries; the cause is chained."""


class PoisonNodeError(NodeFailedError):
    """A durable node's process died ``.crashes`` times while it ran: it is not run again."""


class NodeTimeoutError(ExecutionError, TimeoutError):
    """A node's handler exceeded its timeout."""


class ResultNotSerializableError(ExecutionError):
    """A handler returned a value that cannot be stored as JSON."""


class HandlerNotSerializableError(ExecutionError):
    """A handler (or its inputs) cannot be shipped to another process; not retried."""


class WorkflowFailedError(ExecutionError):
    """An instance ended FAILED; ``.node`` is the first node that failed.

    When a condition raised, ``.edge`` and ``.source`` name the edge and the node whose
    result it read (``.node``, the edge's target, never ran); otherwise they are None.
    """

    def _render_traceback_(self) -> list[str]:
        # IPython shows this instead of the 3-exception chain (instance, node, handler):
        # which node failed, the handler's error and the handler's own frames only.
        import traceback

        root: BaseException = self
        while root.__cause__ is not None:
            root = root.__cause__
        lines = [f"{type(self).__name__}: {self}"]
        if root is not self:
            lines += blame_lines(self, getattr(self, "node", None))
            lines += "".join(traceback.format_list(user_frames(root))).rstrip().splitlines()
        lines.append("(the whole chain: import sys, traceback; "
                     "traceback.print_exception(sys.last_value))")
        return lines


def blame_lines(exc: BaseException, node: str | None) -> list[str]:
    """Who raised ``exc`` (a chain): the node's handler, or an edge's condition and source."""
    import traceback

    chain = [exc]
    while chain[-1].__cause__ is not None:
        chain.append(chain[-1].__cause__)
    for link in chain:
        source = getattr(link, "source", None)
        if isinstance(link, ConditionError) and source is not None:
            # The target's handler never ran: the culprit is the edge, fed by its source.
            target, root = getattr(link, "target", None), chain[-1]
            return [f"the condition on edge {source!r} -> {target!r} raised "
                    f"{''.join(traceback.format_exception_only(root)).strip()}",
                    f"({source!r} succeeded; {target!r} never ran: check {source!r}'s "
                    f"result or the condition {getattr(link, 'expression', None)!r})"]
    return [f"node {node!r} raised "
            f"{''.join(traceback.format_exception_only(chain[-1])).strip()}"]


def user_frames(exc: BaseException) -> list[Any]:
    """The frames of ``exc``'s traceback outside lion_nb and the standard library.

    The first one is the handler's own (the engine's frames above it are dropped).
    """
    import os
    import sysconfig
    import traceback

    engine, stdlib = os.path.dirname(__file__), sysconfig.get_paths()["stdlib"]
    return [f for f in traceback.extract_tb(exc.__traceback__)
            if not (path := os.path.abspath(f.filename)).startswith(engine)
            and (not path.startswith(stdlib) or "site-packages" in path)]


class InstanceCancelledError(ExecutionError):
    """The instance was cancelled before it finished."""


class InstanceNotFoundError(ExecutionError, KeyError):
    """No instance with that id is known."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else ""


class NoResultError(ExecutionError, KeyError):
    """``result[name]`` for a node without a result; says why (``.node``, ``.state``)."""

    def __init__(self, message: str, *, node: str | None = None,
                 state: str | None = None) -> None:
        super().__init__(message)
        self.node = node
        self.state = state

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else ""


class ExecutorStoppedError(ExecutionError):
    """The executor is not started (or was stopped)."""


class RerunError(ExecutionError):
    """``start_from``/``rerun`` cannot be honoured (no earlier run to start from); ``.node``."""


class CacheConfigError(ExecutionError, ConfigError):
    """A cache setting is invalid (a negative TTL, an unknown storage); ``.field`` names it."""


# --- state -----------------------------------------------------------------

class StateError(LionError):
    """State machines, storage and checkpoints."""


class IllegalTransitionError(StateError):
    """A state machine refused a transition."""


class StateConfigError(StateError, ConfigError):
    """A storage or checkpoint setting is invalid; ``.field`` names it."""


class StorageError(StateError, OSError):
    """A storage backend could not read or write; ``.key`` names the record."""


class CheckpointError(StateError):
    """A checkpoint cannot be used."""


class CheckpointKindError(CheckpointError, TypeError):
    """An object cannot be checkpointed, or a checkpoint holds an unknown kind; ``.kind``."""


class CheckpointCorruptError(CheckpointError):
    """A stored record fails its checksum, is truncated or empty."""


class StorageCorruptError(StorageError, CheckpointCorruptError):
    """A storage's files are damaged beyond one record (a failed integrity check)."""


class CheckpointVersionError(CheckpointError):
    """A stored record has a schema version this code cannot read."""


class CheckpointNotFoundError(CheckpointError, KeyError):
    """No checkpoint with that id (or for that workflow) exists."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class DefinitionChangedError(StateError):
    """Resume was asked with a definition whose structure changed."""


class LeaseError(StateError):
    """Another executor owns the instance (or this one lost its lease)."""


# --- scheduler -------------------------------------------------------------

class SchedulerError(LionError):
    """The scheduler refused a request."""


class SchedulerConfigError(SchedulerError, ConfigError):
    """A scheduler setting is invalid (unknown policy, limit <= 0); ``.field`` names it."""


class QueueFullError(SchedulerError):
    """The queue is at ``max_queued_tasks`` and the caller asked not to wait."""


class SchedulerClosedError(SchedulerError):
    """The scheduler is closed."""


class DeadlineMissedError(SchedulerError, TimeoutError):
    """A task's deadline passed (and the configuration says to fail it)."""


# --- events ----------------------------------------------------------------

class EventError(LionError):
    """The event broker refused a request."""


class TopicError(EventError, ValueError):
    """A topic name or pattern is empty or invalid; ``.topic`` is it."""


class SubscriberError(EventError):
    """Unknown or duplicate subscriber; ``.subscriber`` names it."""


class EventTypeError(EventError, TypeError):
    """Not an Event, EventAck or EventStore where the broker needs one; ``.value`` is it."""


class EventCorruptError(EventError):
    """A stored event failed its checksum or does not decode; ``.offset``, ``.event_id``."""


class AckError(EventError):
    """An ack names an unknown or stale delivery."""


class SubscriberFullError(EventError):
    """A subscriber's buffer is full and the publisher asked not to wait."""


class BrokerClosedError(EventError):
    """The broker is closed."""


class BrokerConnectionError(EventError, ConnectionError):
    """The message server (NATS) cannot be reached, or has no JetStream; ``.url`` is where."""


class StreamClashError(EventError, ValueError):
    """A JetStream stream of that name or those subjects is not this broker's; ``.stream``."""


# --- sagas -----------------------------------------------------------------

class SagaError(LionError):
    """The saga manager refused a request or a saga failed."""


class SagaDefinitionError(SagaError, ValueError):
    """A saga definition is malformed."""


class SagaNotFoundError(SagaError, KeyError):
    """Unknown saga definition or instance."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class SagaStateError(SagaError):
    """The saga is not in a state that allows the request."""


class SagaReplyError(SagaError):
    """A service replied with malformed data."""


class SagaServiceError(SagaError):
    """A saga step's service reported a failure; the message is the service's own text."""


class SagaStepTimeoutError(SagaError, TimeoutError):
    """A saga step's service did not reply in time; ``.step`` and ``.timeout`` say which."""


# --- security --------------------------------------------------------------

class SecurityError(LionError, PermissionError):
    """Capability checks, tokens and resources."""


class CapabilityDeniedError(SecurityError):
    """A node or handler lacks a capability; ``.capability``, ``.node``."""


class TokenError(SecurityError):
    """A token is malformed, forged, or signed with another key."""


class TokenExpiredError(TokenError):
    """A token's expiry has passed."""


class TokenRevokedError(TokenError):
    """A token (or one of its parents) was revoked."""


class RequirementError(SecurityError, ValueError):
    """A capability requirement string does not parse."""


class ResourceError(SecurityError):
    """A resource is unknown or registered twice."""


class CapabilityError(SecurityError, ValueError):
    """A capability is malformed or an attenuation would widen it; ``.capability``.

    Empty resource or scope, an unknown action, or asking a token for more than
    it holds. Unlike :class:`CapabilityDeniedError` this is a mistake in the
    call, not a missing grant.
    """


# --- notebook ----------------------------------------------------------------

class NotebookError(LionError):
    """The notebook layer (tables, pictures, live views) was handed something unusable."""


class UnsupportedSourceError(NotebookError, TypeError):
    """A table, picture or view cannot read the object given; ``.source`` is that object."""


# --- warnings ----------------------------------------------------------------

class LionWarning(UserWarning):
    """Root of the warnings lion_nb emits (filter them with ``warnings.simplefilter``)."""


class CacheCorruptWarning(LionWarning):
    """A cache entry failed its checksum or was changed in place; the node runs instead.

    ``.key`` is the entry's storage key (None in memory), ``.node`` the node.
    """

    def __init__(self, message: str, *, key: str | None = None, node: str | None = None
                 ) -> None:
        super().__init__(message)
        self.key = key
        self.node = node
