"""Events on NATS JetStream: lion_nb's broker against bare nats-py, measured in the same run.

    python benchmarks/events_nats.py [--n 3000] [--repeat 5]

Bare and lion_nb alternate (bare first in even rounds, lion_nb first in odd
ones); the table gives the median (min-max) of the per-round ratios and the
load average, because single rounds on a shared machine swing by 30%.

Rows:
- ``bare nats-py``: JetStream publish (awaiting each PubAck, JSON body with a
  Msg-Id), a durable pull consumer fetching batches, one ack per message;
- ``lion_nb``: ``broker.publish`` -> ``rx.recv()`` -> ``ack.success`` on a
  broker with ``NatsEventStore``; the same server, message count and sizes;
- ``lion_nb, 2 processes``: one publisher here, a group of two consumer
  processes; events per second until both have acked everything.
Target: lion_nb at most 1.5x the bare time per event.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time

from lion_nb.patterns import Event, EventBroker, EventBrokerConfig, NatsEventStore
from lion_nb.patterns.nats import local_server


async def bare(url: str, n: int, tag: str) -> float:
    """Seconds for n events through plain nats-py JetStream: publish, pull, ack."""
    import nats
    from nats.js.api import AckPolicy, ConsumerConfig
    nc = await nats.connect(url)
    js = nc.jetstream()
    stream = f"BARE_{tag}"
    await js.add_stream(name=stream, subjects=[f"bare.{tag}.>"])
    await js.add_consumer(stream, ConsumerConfig(durable_name="c", ack_policy=AckPolicy.EXPLICIT,
                                                 filter_subject=f"bare.{tag}.>",
                                                 max_ack_pending=1000))
    psub = await js.pull_subscribe_bind("c", stream)
    started = time.perf_counter()

    async def produce() -> None:
        for i in range(n):
            body = json.dumps({"id": f"e{i}", "topic": "order.created", "payload": {"n": i},
                               "ts": time.time()}).encode()
            await js.publish(f"bare.{tag}.order.created", body,
                             headers={"Nats-Msg-Id": f"{tag}-{i}"})

    async def consume() -> None:
        got = 0
        while got < n:
            try:
                msgs = await psub.fetch(128, timeout=1.0)
            except TimeoutError:
                continue
            for msg in msgs:
                json.loads(msg.data)
                await msg.ack()
                got += 1

    await asyncio.gather(produce(), consume())
    elapsed = time.perf_counter() - started
    await js.delete_stream(stream)
    await nc.close()
    return elapsed


async def lion(url: str, n: int, tag: str) -> float:
    """Seconds for n events through lion_nb's broker on NatsEventStore."""
    broker = EventBroker(EventBrokerConfig()).with_event_store(NatsEventStore(url, name=tag))
    async with broker:
        rx, ack = await broker.subscribe("order.created", "bench")
        started = time.perf_counter()

        async def produce() -> None:
            for i in range(n):
                await broker.publish(Event("order.created", {"n": i}))

        async def consume() -> None:
            for _ in range(n):
                await ack.success(await rx.recv())

        await asyncio.gather(produce(), consume())
        return time.perf_counter() - started


async def consumer_process(url: str, tag: str, n: int) -> None:
    """Child: one group member; prints how many it acked once the group has n."""
    broker = EventBroker(EventBrokerConfig()).with_event_store(NatsEventStore(url, name=tag))
    async with broker:
        rx, ack = await broker.subscribe("load.item", f"m{os.getpid()}", group="workers")
        print("ready", flush=True)
        count, last = 0, time.time()
        while True:
            try:
                d = await asyncio.wait_for(rx.recv(), 3.0)
            except asyncio.TimeoutError:
                break
            await ack.success(d)
            count += 1
            last = time.time()
        print(count, last, flush=True)


async def two_processes(url: str, n: int, tag: str) -> tuple[float, list[int]]:
    """Events/s with a publisher here and a group of two consumer processes."""
    procs = [subprocess.Popen([sys.executable, __file__, "--consumer", url, tag, str(n)],
                              stdout=subprocess.PIPE) for _ in range(2)]
    # The group's consumer must exist before publishing: the first member creates it.
    for p in procs:
        assert p.stdout is not None and p.stdout.readline().strip() == b"ready"
    broker = EventBroker(EventBrokerConfig()).with_event_store(NatsEventStore(url, name=tag))
    async with broker:
        started = time.time()
        for i in range(n):
            await broker.publish(Event("load.item", i))
    counts, ends = [], []
    for p in procs:
        out, _ = p.communicate(timeout=300)
        count, last = out.split()[-2:]
        counts.append(int(count))
        ends.append(float(last))
    # wall clocks of one machine: from the first publish to the last ack in either child
    return n / (max(ends) - started), counts


async def main(n: int, repeat: int) -> None:
    with local_server() as server:
        url = server.url
        await bare(url, 200, "warm")
        await lion(url, 200, "warm")
        rows = []
        for r in range(repeat):
            if r % 2:
                lo = await lion(url, n, f"l{r}")
                b = await bare(url, n, f"b{r}")
            else:
                b = await bare(url, n, f"b{r}")
                lo = await lion(url, n, f"l{r}")
            rows.append((b, lo))
        rate, counts = await two_processes(url, n, "two")
    med_b = statistics.median(b for b, _ in rows)
    med_l = statistics.median(lo for _, lo in rows)
    ratios = [lo / b for b, lo in rows]
    spread = f"{min(ratios):.2f}-{max(ratios):.2f}"
    print(f"\nevents on NATS JetStream, {n} events, median of {repeat} interleaved rounds, "
          f"load {os.getloadavg()[0]:.1f}")
    print(f"{'path':<28}{'us/event':>10}{'events/s':>11}{'ratio':>8}  (min-max)")
    print(f"{'bare nats-py':<28}{med_b / n * 1e6:>10.1f}{n / med_b:>11.0f}{1.0:>8.2f}")
    print(f"{'lion_nb NatsEventStore':<28}{med_l / n * 1e6:>10.1f}{n / med_l:>11.0f}"
          f"{statistics.median(ratios):>8.2f}  ({spread})")
    print(f"{'lion_nb, 2 consumer procs':<28}{1e6 / rate:>10.1f}{rate:>11.0f}{'':>8}"
          f"   split {counts[0]}/{counts[1]}")
    print("target: lion_nb <= 1.5x bare nats-py")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--consumer":
        asyncio.run(consumer_process(sys.argv[2], sys.argv[3], int(sys.argv[4])))
        sys.exit(0)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=3000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    asyncio.run(main(args.n, args.repeat))
