"""Group commit: concurrent writers share one transaction, each awaits its own outcome.

A durable commit costs one fsync (SQLite's WAL, PostgreSQL's WAL flush) whatever it
holds, so batches that arrive while a commit is in flight are written together by
the next one. Every caller's ``await`` returns only after the transaction holding
its batch is durable; ``commit`` reports one outcome per batch (None, or the
LeaseError that refused just that batch), or raises when the whole transaction failed.
"""

from __future__ import annotations

import asyncio
import weakref
from typing import Awaitable, Callable, Generic, TypeVar

__all__ = ["GroupCommit"]

B = TypeVar("B")


class GroupCommit(Generic[B]):
    """Queues batches and writes them with ``commit`` in groups (see the module docstring)."""

    def __init__(self, commit: Callable[[list[B]], Awaitable[list[Exception | None]]],
                 window_ms: float = 0.0) -> None:
        # Weakly: a storage holding this object must stay free of reference cycles, so
        # one dropped without close() is freed (and its thread stopped) at once.
        self._commit = weakref.WeakMethod(commit)
        self._window = window_ms / 1000
        self._pending: list[tuple[B, asyncio.Future[None]]] = []
        self._flusher: asyncio.Task[None] | None = None

    async def submit(self, batch: B) -> None:
        """Write ``batch`` in the next group; returns when it is durable, or raises its error."""
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.append((batch, fut))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush())
        await fut

    async def drain(self) -> None:
        """Wait until every submitted batch has been written (or failed)."""
        if self._flusher is not None and not self._flusher.done():
            await self._flusher

    async def _flush(self) -> None:
        # Real time on purpose: the window batches real I/O, a fake clock would stall it.
        if self._window:
            await asyncio.sleep(self._window)
        # Whatever arrives while a commit is in flight forms the next group at once.
        while self._pending:
            group, self._pending = self._pending, []
            try:
                commit = self._commit()
                if commit is None:  # unreachable while a caller awaits its own storage
                    raise RuntimeError("the storage of this group commit is gone")
                errors = await commit([b for b, _ in group])
            except BaseException as exc:  # the whole transaction failed: everyone hears it
                for _, fut in group:
                    if not fut.done():
                        fut.set_exception(exc)
                if not isinstance(exc, Exception):
                    raise
                continue
            for (_, fut), error in zip(group, errors):
                if fut.done():  # the caller was cancelled; its batch committed anyway
                    continue
                if error is None:
                    fut.set_result(None)
                else:
                    fut.set_exception(error)
