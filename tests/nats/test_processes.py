"""Producer and consumers in separate processes: kills, groups, a restarted server."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from lion_nb.patterns import Event, EventBroker, EventBrokerConfig, NatsEventStore

CHILD = str(Path(__file__).with_name("child.py"))
pytestmark = pytest.mark.timeout(240)


def spawn(*args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, CHILD, *args], stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL)


def wait_ready(proc: subprocess.Popen[bytes]) -> None:
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line.strip() == b"ready", line


def handled(*files: Path) -> Counter[str]:
    seen: Counter[str] = Counter()
    for f in files:
        if f.exists():
            seen.update(x for x in f.read_text().split("\n") if x)
    return seen


def stop(*procs: subprocess.Popen[bytes]) -> None:
    for p in procs:
        if p.poll() is None:
            p.kill()
        p.wait()
        if p.stdout:
            p.stdout.close()


def wait_until(cond, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.2)
    return cond()


def test_consumer_sigkilled_20_times_loses_no_acked_event(nats_url, broker_name, tmp_path):
    total = 5000
    steady_out, victim_out = tmp_path / "steady.txt", tmp_path / "victim.txt"
    steady = spawn("consume", nats_url, broker_name, "steady", str(steady_out))
    victim = spawn("consume", nats_url, broker_name, "victim", str(victim_out))
    procs = [steady, victim]
    try:
        wait_ready(steady)
        wait_ready(victim)
        producer = spawn("produce", nats_url, broker_name, str(total), "0")
        procs.append(producer)
        kills = 0
        while kills < 25 or producer.poll() is None:
            time.sleep(0.15)
            victim.send_signal(signal.SIGKILL)
            victim.wait()
            kills += 1
            victim = spawn("consume", nats_url, broker_name, "victim", str(victim_out))
            procs.append(victim)
            wait_ready(victim)
        assert producer.wait(60) == 0
        want = {f"ev-{i}" for i in range(total)}
        assert wait_until(lambda: want <= set(handled(steady_out, victim_out)), 90)
        seen = handled(steady_out, victim_out)
        duplicates = sum(seen.values()) - len(seen)
        print(f"\n{kills} SIGKILLs, {total} events, {duplicates} duplicates")
        assert kills >= 20
        assert set(seen) == want                    # nothing lost, nothing invented
        assert handled(victim_out)                  # the victim took part between kills
    finally:
        stop(*procs)


def test_group_members_in_two_processes_share_the_load(nats_url, broker_name, tmp_path):
    outs = [tmp_path / "a.txt", tmp_path / "b.txt"]
    members = [spawn("consume", nats_url, broker_name, m, str(o)) for m, o in zip("ab", outs)]
    try:
        for m in members:
            wait_ready(m)
        producer = spawn("produce", nats_url, broker_name, "1000", "0")
        assert producer.wait(60) == 0
        stop(producer)
        assert wait_until(lambda: len(handled(*outs)) == 1000, 60)
        a, b = handled(outs[0]), handled(outs[1])
        assert len(a) > 100 and len(b) > 100, (len(a), len(b))
        assert not set(a) & set(b) or sum((a + b).values()) > 1000  # overlap only as redelivery
    finally:
        stop(*members)


async def test_server_restart_mid_stream_loses_nothing_acked(tmp_path):
    from lion_nb.patterns.nats import LocalNatsServer
    server = LocalNatsServer(store_dir=tmp_path / "nats").start()
    try:
        store = NatsEventStore(server.url, name="restart")
        broker = EventBroker(EventBrokerConfig(ack_timeout=2)).with_event_store(store)
        async with broker:
            rx, ack = await broker.subscribe("load.item", "c")
            published: list[str] = []
            got: set[str] = set()

            async def publish():
                for i in range(600):
                    published.append(await broker.publish(Event("load.item", i, id=f"r-{i}")))
                    await asyncio.sleep(0.002)

            async def consume():
                while not published or len(got) < 600:
                    d = await rx.recv()
                    got.add(d.id)
                    await ack.success(d)

            pub = asyncio.ensure_future(publish())
            con = asyncio.ensure_future(consume())
            while len(published) < 200:
                await asyncio.sleep(0.01)
            await asyncio.to_thread(server.restart)
            await asyncio.wait_for(pub, 60)
            await asyncio.wait_for(con, 60)
            assert got == set(published) and len(published) == 600
    finally:
        server.stop()


async def test_workflow_trigger_starts_an_instance_for_an_event_from_another_process(
        executor, nats_url, broker_name):
    from lion_nb.model import Node, WorkflowBuilder
    from lion_nb.patterns import WorkflowTrigger, connect_broker
    broker = EventBroker(EventBrokerConfig()).with_event_store(
        NatsEventStore(nats_url, name=broker_name))
    async with broker:
        connect_broker(executor, broker)

        async def announce(ctx):
            await ctx.publish("order.shipped", {"order_id": ctx.inputs["order_id"]})

        executor.add_handler("announce", announce)
        flow = WorkflowBuilder("on-order").add_node(Node("announce")).build()
        shipped_rx, shipped_ack = await broker.subscribe("order.shipped", "notifier")
        trigger = await WorkflowTrigger.start(broker, executor, "order.created", flow)
        try:
            done = await asyncio.to_thread(subprocess.run, [
                sys.executable, CHILD, "publish", nats_url, broker_name, "order.created",
                '{"order_id": "777"}'], timeout=60)
            assert done.returncode == 0
            shipped = await asyncio.wait_for(shipped_rx.recv(), 20)
            assert shipped.payload == {"order_id": "777"}
            await shipped_ack.success(shipped)
        finally:
            await trigger.stop()


async def test_exactly_once_effects_hold_across_processes_and_kills(nats_url, broker_name):
    """The effect and its marker commit together in the server's KV: a redelivery to the
    other process after a kill never applies an effect twice."""
    total = 300
    steady = spawn("count", nats_url, broker_name, "steady")
    victim = spawn("count", nats_url, broker_name, "victim")
    procs = [steady, victim]
    try:
        await asyncio.to_thread(wait_ready, steady)
        await asyncio.to_thread(wait_ready, victim)
        producer = spawn("produce", nats_url, broker_name, str(total), "0")
        procs.append(producer)
        for _ in range(8):
            await asyncio.sleep(0.3)
            victim.send_signal(signal.SIGKILL)
            victim.wait()
            victim = spawn("count", nats_url, broker_name, "victim")
            procs.append(victim)
            await asyncio.to_thread(wait_ready, victim)
        assert await asyncio.to_thread(producer.wait, 60) == 0
        broker = EventBroker(EventBrokerConfig()).with_event_store(
            NatsEventStore(nats_url, name=broker_name))
        async with broker:
            deadline = time.monotonic() + 60
            while (await broker.subscriber_state("counters")).get("n", 0) < total:
                assert time.monotonic() < deadline
                await asyncio.sleep(0.3)
            await asyncio.sleep(2.5)   # anything still redelivered after the ack wait
            assert await broker.subscriber_state("counters") == {"n": total}
    finally:
        stop(*procs)


@pytest.mark.parametrize("where", ["before", "after"])
async def test_consumer_crashing_at_the_effect_commit_boundary_applies_it_once(
        nats_url, broker_name, where):
    """A child dies right before / right after committing an event's effect, never acking;
    the redelivery to another process applies the effect only if it was not committed."""
    victim = spawn("crash", nats_url, broker_name, "victim", where)
    procs = [victim]
    try:
        await asyncio.to_thread(wait_ready, victim)
        producer = spawn("produce", nats_url, broker_name, "5", "0")
        procs.append(producer)
        assert await asyncio.to_thread(producer.wait, 60) == 0
        assert victim.stdout is not None
        line = await asyncio.to_thread(victim.stdout.readline)
        assert line.startswith(b"dying ev-")
        assert await asyncio.to_thread(victim.wait, 30) == 9
        survivor = spawn("count", nats_url, broker_name, "survivor")
        procs.append(survivor)
        await asyncio.to_thread(wait_ready, survivor)
        broker = EventBroker(EventBrokerConfig()).with_event_store(
            NatsEventStore(nats_url, name=broker_name))
        async with broker:
            deadline = time.monotonic() + 30
            while (await broker.subscriber_state("counters")).get("n", 0) < 5:
                assert time.monotonic() < deadline
                await asyncio.sleep(0.2)
            await asyncio.sleep(2.5)          # the victim's event came back after its ack wait
            assert await broker.subscriber_state("counters") == {"n": 5}
    finally:
        stop(*procs)
