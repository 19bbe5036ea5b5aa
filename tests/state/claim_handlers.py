"""Handlers for the worker processes of test_postgres_workers.py (``--handlers``).

Every execution appends ``pid instance node`` to the file named by LION_TEST_LOG
(one ``write`` on an O_APPEND descriptor: lines from several processes never mix).
"""

from __future__ import annotations

import asyncio
import os


def _log(ctx) -> None:
    line = f"{os.getpid()} {ctx.instance_id} {ctx.node_name}\n".encode()
    fd = os.open(os.environ["LION_TEST_LOG"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)


async def step(ctx):
    _log(ctx)
    await asyncio.sleep(float(os.environ.get("LION_TEST_SLEEP", "0")))
    return {"n": ctx.inputs.get("n", 0) + sum(r["n"] for r in ctx.results.values()) + 1}


HANDLERS = {"step": step}
