"""The saga services of the services tutorial (08_services.ipynb), each run in its own process.

The notebook starts one process per service::

    python -m lion_nb service 08_trip_services:SERVICES --service airline --nats URL --name trip

Every handler appends ``"<kind> <step> by <service> (pid N)"`` to the file named by
``$TRIP_LOG``, so the notebook can show which process did what. The car rental is
sold out: renting a car fails, and the saga compensates the hotel and the flight.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any


def _handler(service: str) -> Any:
    async def handle(cmd: Any) -> Any:
        await asyncio.sleep(0.05)
        with open(os.environ["TRIP_LOG"], "a") as log:
            log.write(f"{cmd.kind} {cmd.step_id} by {service} (pid {os.getpid()})\n")
        if cmd.kind == "step" and cmd.step_id == "car":
            raise RuntimeError("no cars left <sold out>")
        return {"ref": f"{cmd.step_id}-42"}
    return handle


SERVICES = {name: _handler(name) for name in ("airline", "hotel", "cars", "payments")}
