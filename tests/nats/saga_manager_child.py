"""A saga manager process for the manager-restart test (run by path).

    saga_manager_child.py start URL NAME DB     create and start one saga; print its id; wait
    saga_manager_child.py recover URL NAME DB   recover; wait for every saga; print statuses
"""

from __future__ import annotations

import asyncio
import sys

from lion_nb.patterns import EventBroker, EventBrokerConfig, NatsEventStore, SagaManager, \
    SagaManagerConfig
from lion_nb.state import SqliteStorage

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from saga_definition import order_saga  # noqa: E402


async def main(role: str, url: str, name: str, db: str) -> None:
    broker = EventBroker(EventBrokerConfig(ack_timeout=5)).with_event_store(
        NatsEventStore(url, name=name))
    manager = SagaManager(broker, SagaManagerConfig(name="restarting"),
                          storage=SqliteStorage(db))
    await manager.register_definition(order_saga())
    if role == "start":
        inst = await manager.create_instance("order-saga", {"order_id": "o-9", "amount": 5,
                                                            "slow_once": True, "hang": 4})
        await manager.start_instance(inst.id)
        print(inst.id, flush=True)
        await asyncio.sleep(3600)
    else:
        loaded = await manager.recover()
        for inst in loaded:
            done = await manager.wait(inst.id, timeout=60)
            print(done.id, done.status.value, flush=True)
        await manager.close()
        await broker.close()


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:5]))
