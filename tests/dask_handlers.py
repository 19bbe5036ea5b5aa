"""Handlers the Dask tests run on worker processes (importable there by module name).

They are deterministic in ``ctx.attempt`` so that the local runner and the
DaskRunner must produce the same states, attempts and results.
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from typing import Any

__all__ = ["Boom", "load", "flaky", "big", "small", "after_small", "broken", "after_broken",
           "join", "victim", "slow_async", "where", "uses_db", "make_db", "Picky", "picky",
           "Tripwire", "shipped_tokens"]


class Boom(RuntimeError):
    """A handler's own failure (must come back from the worker as itself)."""


class Picky(Exception):
    """An exception that pickles but cannot be rebuilt (two required arguments)."""

    def __init__(self, code: int, where: str) -> None:
        super().__init__(f"{code} at {where}")


def picky(ctx: Any) -> None:
    """Raises an exception that cannot come back as itself."""
    raise Picky(7, ctx.node_name)


def load(ctx: Any) -> dict[str, Any]:
    """Root: the order total decides which branch runs."""
    return {"total": ctx.inputs.get("total", 150), "pid": None}


async def flaky(ctx: Any) -> str:
    """Fails on its first attempt only (so a retry policy of 1 makes it succeed)."""
    if ctx.attempt == 1:
        raise Boom(f"{ctx.node_name}: transient failure")
    return f"ok on attempt {ctx.attempt}"


def big(ctx: Any) -> int:
    """Runs when ``result.total > 100``."""
    return ctx.results["Load"]["total"] * 2


def small(ctx: Any) -> int:
    """Runs when ``result.total <= 100``."""
    return ctx.results["Load"]["total"]


def after_small(ctx: Any) -> str:
    """Downstream of the inactive branch: must end SKIPPED."""
    return "unreachable"


def broken(ctx: Any) -> None:
    """Always fails, on every attempt."""
    raise Boom(f"{ctx.node_name} is broken (attempt {ctx.attempt})")


def after_broken(ctx: Any) -> str:
    """Downstream of a failure: must end UPSTREAM_FAILED."""
    return "unreachable"


def join(ctx: Any) -> dict[str, Any]:
    """Combines the two branches that ran."""
    return {"sum": sorted(ctx.results), "idem": ctx.idempotency_key,
            "config": dict(ctx.config)}


def victim(ctx: Any) -> int:
    """Attempt 1 announces its pid and waits to be killed; later attempts succeed."""
    if ctx.attempt == 1:
        Path(ctx.config["pid_file"]).write_text(str(os.getpid()))
        time.sleep(60)
    return os.getpid()


async def slow_async(ctx: Any) -> str:
    """Sleeps far past any timeout, stopping at a cancellation point when cancelled."""
    for _ in range(400):
        await asyncio.sleep(0.05)
        await ctx.yield_now()
    return "too late"


def where(ctx: Any) -> str:
    """The process this ran in (to tell the worker from the notebook)."""
    return f"pid:{os.getpid()}"


def uses_db(ctx: Any) -> Any:
    """Reads the worker's ``db`` resource through the capability check."""
    db = ctx.resource("db", "read", "orders/1")
    return db["orders/1"]


def make_db() -> dict[str, Any]:
    """Factory run on each worker: the resource is built there, never pickled."""
    return {"orders/1": {"total": 120, "pid": os.getpid()}}


class Tripwire:
    """A handler whose mere unpickling leaves a file behind (what a hostile payload does)."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __setstate__(self, state: dict[str, Any]) -> None:
        Path(state["path"]).write_text("unpickled")
        self.__dict__.update(state)

    def __call__(self, ctx: Any) -> str:
        return "ran"


def shipped_tokens(ctx: Any) -> tuple[str, ...]:
    """The token strings this task carried to the worker."""
    return tuple(ctx.tokens)
