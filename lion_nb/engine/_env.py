"""RunEnv: what one running instance may use of its executor, handed over explicitly."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Awaitable, Callable, Coroutine

from ..clock import Clock
from ._executor_config import ExecutorConfig
from ._observe import ObserveStream
from ._scheduler import WorkflowScheduler

__all__ = ["RunEnv"]


@dataclass(frozen=True, slots=True)
class RunEnv:
    """The executor's services for an InstanceRun, so the run never holds the executor.

    ``spawn(coro)`` runs a background coroutine the executor owns (retries);
    ``run_in_thread(handler, ctx)`` runs a plain-function handler in the pool;
    ``publish(topic, payload, headers)`` is ``ctx.publish``'s sink;
    ``on_finished(run)`` is called once when every node of the run is terminal.
    """

    scheduler: WorkflowScheduler
    observe: ObserveStream
    clock: Clock
    config: ExecutorConfig
    runner: Any
    spawn: Callable[[Coroutine[Any, Any, Any]], None]
    run_in_thread: Callable[[Callable[[Any], Any], Any], Awaitable[Any]]
    publish: Callable[[str, Any, dict[str, str]], Awaitable[None]]
    on_finished: Callable[[Any], None]
