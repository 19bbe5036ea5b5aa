"""ExecutorConfig: the executor's settings, frozen and validated on construction."""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta
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
    ``retain_finished``: how many finished instances (run here or followed) it keeps
    (``executor.instances()``, ``wait``/``snapshot`` by id) and in
    ``executor.history`` -- an int keeps the newest N, a ``timedelta`` keeps those
    that finished within it; None (default) keeps every one, as a notebook expects.
    ``prune_older_than``: with durable storage, delete the stored records of
    instances that finished longer ago than this (seconds or a ``timedelta``)
    every ``prune_every`` seconds while the executor runs; None: never.
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
    retain_finished: int | timedelta | None = None
    prune_older_than: float | timedelta | None = None
    prune_every: float = 60.0

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
        self._check_retention()

    def _check_retention(self) -> None:
        keep = self.retain_finished
        # A float would be ambiguous (a count? seconds?): ages are timedeltas here.
        if keep is not None and not (
                isinstance(keep, timedelta) and keep.total_seconds() >= 0
                or isinstance(keep, int) and not isinstance(keep, bool) and keep >= 0):
            raise ConfigError(f"retain_finished must be None, an int >= 0 (newest N) or a "
                              f"timedelta (age), not {keep!r}", field="retain_finished")
        age = self.prune_older_than
        seconds: Any = age.total_seconds() if isinstance(age, timedelta) else age
        if age is not None and not (_number(seconds) and seconds >= 0):
            raise ConfigError(f"prune_older_than must be None, seconds >= 0 or a timedelta, "
                              f"not {age!r}", field="prune_older_than")
        if not _positive(self.prune_every):
            raise ConfigError(f"prune_every must be > 0 seconds, not {self.prune_every!r}",
                              field="prune_every")


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _positive(value: Any) -> bool:
    return _number(value) and value > 0


def seconds(value: float | timedelta) -> float:
    """An age given as seconds or a timedelta, in seconds."""
    return value.total_seconds() if isinstance(value, timedelta) else float(value)
