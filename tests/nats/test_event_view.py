"""EventView shows a NATS store's stream and consumer figures next to the broker's counts."""

from __future__ import annotations

from lion_nb.notebook import EventView
from lion_nb.patterns import Event


async def test_event_view_shows_stream_and_consumer_figures_of_a_nats_store(make_broker,
                                                                          frontend):
    broker = make_broker("nats")
    rx, ack = await broker.subscribe("order.*", "billing")
    await broker.subscribe("order.*", "lazy")
    view = EventView(broker)
    for i in range(3):
        await broker.publish(Event("order.created", {"n": i}))
    for _ in range(3):
        await ack.success(await rx.recv())
    figures = await view.refresh_store()
    assert figures is not None and figures["messages"] == 3
    consumers = {c["name"]: c for c in figures["consumers"]}
    assert set(consumers) == {"billing", "lazy"}
    assert consumers["billing"]["acked_to"] == 3
    assert consumers["lazy"]["pending"] + consumers["lazy"]["ack_pending"] == 3
    html = view.store_table.value
    assert "3 messages" in html and "billing" in html and "lazy" in html
    view.close()


async def test_event_view_without_store_figures_shows_no_store_table(make_broker, frontend):
    broker = make_broker("memory")
    view = EventView(broker)
    assert await view.refresh_store() is None
    assert view.store_table.value == ""
    view.close()
