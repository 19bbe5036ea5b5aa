"""Saga services for the cross-process saga tests (served by ``python -m lion_nb service``).

Each handler notes what it did in ``$SAGA_TEST_DIR/log`` (one line each), so the
test can see which process did which step, and compensations.
``{"slow_once": true}`` in the saga data makes the first payment attempt in any
process hang (after noting ``payment hanging``), so a test can kill it mid-step.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any


def note(text: str) -> None:
    folder = Path(os.environ["SAGA_TEST_DIR"])
    with open(folder / "log", "a") as fh:
        fh.write(f"{text} pid={os.getpid()}\n")


async def order(cmd: Any) -> Any:
    note(f"order {cmd.kind} {cmd.instance_id}")
    return {"order_id": cmd.data["order_id"]}


async def payment(cmd: Any) -> Any:
    note(f"payment {cmd.kind} {cmd.instance_id}")
    if cmd.kind == "step":
        marker = Path(os.environ["SAGA_TEST_DIR"]) / f"hung-{cmd.instance_id}"
        if cmd.data.get("slow_once") and not marker.exists():
            marker.touch()
            note(f"payment hanging {cmd.instance_id}")
            await asyncio.sleep(float(cmd.data.get("hang", 3600)))
        if cmd.data.get("amount", 0) > 100:
            raise ValueError("card declined")
    return {"charged": cmd.data.get("amount", 0)}


async def shipping(cmd: Any) -> Any:
    note(f"shipping {cmd.kind} {cmd.instance_id}")
    return {"tracking": "T-1"}


SERVICES = {"order-service": order, "payment-service": payment, "shipping-service": shipping}
