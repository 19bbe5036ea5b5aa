"""Run a coroutine to completion from synchronous code, in a script or inside Jupyter's loop.

In a notebook, top-level ``await`` is the first choice. ``run(coro)`` is for
code that must stay synchronous: in a plain script it is ``asyncio.run``;
when a loop is already running (a Jupyter cell, an async test) it patches
that loop with ``nest_asyncio2`` -- only then, never at import -- and runs the
coroutine on it, so objects bound to the kernel's loop keep working::

    from lion_nb.notebook import run
    result = run(executor.run(definition))
"""

from __future__ import annotations

import asyncio
from typing import Any, Awaitable, Coroutine, TypeVar

__all__ = ["run", "nesting_applied"]

T = TypeVar("T")

def nesting_applied(loop: asyncio.AbstractEventLoop | None = None) -> bool:
    """Whether ``run`` has patched ``loop`` (default: the running loop) for nesting."""
    if loop is None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return False
    return hasattr(loop, "_nest_patched")  # the mark nest_asyncio2 leaves on a loop


async def _wrap(awaitable: Awaitable[T]) -> T:
    return await awaitable


def run(awaitable: Awaitable[T] | Coroutine[Any, Any, T]) -> T:
    """Run ``awaitable`` to completion and return its result, with or without a running loop."""
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        loop = None
    coro = awaitable if asyncio.iscoroutine(awaitable) else _wrap(awaitable)
    if loop is None:
        return asyncio.run(coro)
    if not nesting_applied(loop):
        import nest_asyncio2

        # Patching is global to asyncio, so it happens on the first nested call
        # only: a script that never nests keeps the standard library untouched.
        nest_asyncio2.apply(loop)
    return loop.run_until_complete(coro)
