"""ExecutorConfig: the executor's settings, frozen and validated on construction."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Awaitable, Callable

from ..errors import ConfigError
from ._cache import Cache

__all__ = ["ExecutorConfig"]

_DENIED_ACTIONS = ("fail", "skip")


@dataclass(frozen=True, kw_only=True)
class ExecutorConfig:
    """Executor settings; an invalid value raises ConfigError naming the field.

    ``fail_fast``: the first failed node cancels the rest of its instance
    (default: independent branches go on; dependents end UPSTREAM_FAILED).
    ``default_timeout``: seconds per attempt for nodes without their own timeout.
    ``require_json_results``: outputs must be JSON data (so they can be
    checkpointed); turn off to pass Python objects such as DataFrames in memory.
    ``max_threads``: size of the pool that runs plain-function handlers.
    ``record_history``: keep execution records in ``executor.history``.
    ``runner``: where handlers run (None: this process; see lion_nb.distributed).
    ``lease_ttl``: seconds an executor owns a durable instance without renewing.
    ``max_node_crashes``: a durable node whose process died this many times while
    it was queued or running fails with PoisonNodeError instead of running again;
    None records no attempt before it starts (one write less per node, but
    ``ctx.attempt`` restarts at 1 after a resume and such a node runs forever).
    ``authority``: the lion_nb.security Authority that verifies the ``grants`` of
    ``execute_workflow``; ``on_denied``: a node whose requirements are not
    covered "fail"s (default) or is "skip"ped — it never runs either way.
    ``event_sink``: ``async (topic, payload, headers) -> None`` behind
    ``ctx.publish`` at start; ``executor.set_event_sink`` replaces it later.
    ``cache``: reuse node results whose code and inputs did not change -- True
    (in memory), a path (SQLite: survives restarts) or a ``Cache``.
    """

    fail_fast: bool = False
    default_timeout: float | None = None
    require_json_results: bool = True
    max_threads: int | None = None
    record_history: bool = True
    runner: Any = None
    lease_ttl: float = 30.0
    max_node_crashes: int | None = 3
    authority: Any = None
    on_denied: str = "fail"
    event_sink: Callable[..., Awaitable[Any]] | None = None
    cache: Any = None

    def __post_init__(self) -> None:
        if self.on_denied not in _DENIED_ACTIONS:
            raise ConfigError(f"on_denied must be 'fail' or 'skip', not {self.on_denied!r}",
                              field="on_denied")
        if self.default_timeout is not None and not _positive(self.default_timeout):
            raise ConfigError(f"default_timeout must be None or > 0 seconds, not "
                              f"{self.default_timeout!r}", field="default_timeout")
        if self.max_threads is not None and not (_positive(self.max_threads)
                                                 and isinstance(self.max_threads, int)):
            raise ConfigError(f"max_threads must be None or a positive int, not "
                              f"{self.max_threads!r}", field="max_threads")
        if not _positive(self.lease_ttl):
            raise ConfigError(f"lease_ttl must be > 0 seconds, not {self.lease_ttl!r}",
                              field="lease_ttl")
        if not (self.cache is None or isinstance(self.cache, (bool, str, os.PathLike, Cache))):
            raise ConfigError(f"cache is True, a path or a Cache, not {self.cache!r}",
                              field="cache")
        if self.max_node_crashes is not None and not (
                _positive(self.max_node_crashes) and isinstance(self.max_node_crashes, int)):
            raise ConfigError(f"max_node_crashes must be None or a positive int, not "
                              f"{self.max_node_crashes!r}", field="max_node_crashes")
        if self.event_sink is not None and not callable(self.event_sink):
            raise ConfigError(f"event_sink must be an async callable, not "
                              f"{self.event_sink!r}", field="event_sink")


def _positive(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0
