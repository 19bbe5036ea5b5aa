"""Notebook layer benchmark: what a live RunView costs a run, and what a picture costs.

    .venv/bin/python benchmarks/notebook.py [--nodes 10000] [--repeat 5]

1. A run of N no-op nodes (a lattice 50 wide) with and without a RunView attached, in
   the same process, interleaved (the order rotates each round), median (min–max) of
   ``--repeat`` runs each. Target: with a view
   at most 1.25x the time without. Messages sent to the front end are counted with a
   recording comm in place of a browser.
2. Render time of a 300-node picture with each renderer (system ``dot`` when on PATH,
   WebAssembly always), first render (includes compiling the WebAssembly module) and
   warm renders, the SVG cache bypassed.

Prints tables; asserts nothing about time (machines differ).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import statistics
import time

import comm

from lion_nb.engine import WorkflowExecutor
from lion_nb.model import Node, WorkflowBuilder
from lion_nb.notebook import RENDERERS, RenderFailed, RunView, workflow_dot

WIDTH = 50


class CountingComm:
    """A comm that counts what would be sent to the browser."""

    sent = 0
    comm_id = "bench"
    kernel = "Truthy"

    def __init__(self, **kwargs: object) -> None:
        pass

    def send(self, *args: object, **kwargs: object) -> None:
        CountingComm.sent += 1

    def open(self, *args: object, **kwargs: object) -> None:
        pass

    def on_msg(self, *args: object, **kwargs: object) -> None:
        pass

    def close(self, *args: object, **kwargs: object) -> None:
        pass


def lattice(n: int, name: str = "bench"):
    """N nodes in rows of WIDTH; each node depends on the one above it."""
    b = WorkflowBuilder(name)
    nodes = [Node(f"n{i}", handler="noop") for i in range(n)]
    b.add_nodes(*nodes)
    for i in range(WIDTH, n):
        b.connect(nodes[i - WIDTH], nodes[i])
    return b.build()


async def one_run(definition, with_view: bool, picture: bool = True
                  ) -> tuple[float, int, int, float]:
    ex = WorkflowExecutor()
    await ex.start()

    async def noop(ctx):
        return None

    ex.add_handler("noop", noop)
    view = RunView(ex, picture=picture) if with_view else None
    gc.collect()
    before = CountingComm.sent
    start, cpu = time.perf_counter(), time.process_time()
    result = await ex.run(definition)
    elapsed = time.perf_counter() - start
    cpu = time.process_time() - cpu  # every thread of the process: the picture's too
    assert result.succeeded
    messages = CountingComm.sent - before
    flushes = view.flushes if view is not None else 0
    if view is not None:
        await view.drawn()  # the final picture renders after the run: not timed, not leaked
        view.close()
    await ex.stop()
    return elapsed, messages, flushes, cpu


def spread(values: list[float]) -> str:
    """``median (min–max)`` of timings, in seconds."""
    return f"{statistics.median(values):.3f} ({min(values):.3f}–{max(values):.3f})"


async def run_overhead(n: int, repeat: int) -> float:
    definition = lattice(n)
    await one_run(lattice(200), True)  # warm up: imports, WebAssembly compile
    labels = ("without a view", "with a RunView", "RunView, picture=False")
    rows: dict[str, list[tuple[float, int, int, float]]] = {label: [] for label in labels}
    configs = {labels[0]: (False, True), labels[1]: (True, True), labels[2]: (True, False)}
    for k in range(repeat):
        # Interleaved, and the order rotates each round: a machine getting busier or
        # quieter during the benchmark weighs on every variant alike.
        for label in labels[k % 3:] + labels[:k % 3]:
            with_view, picture = configs[label]
            rows[label].append(await one_run(definition, with_view, picture))
    base = statistics.median(r[0] for r in rows[labels[0]])
    base_cpu = statistics.median(r[3] for r in rows[labels[0]])
    print(f"\n{n:,}-node run, {repeat} interleaved rounds: median (min–max)")
    print(f"{'':24}{'wall seconds':>22}{'ratio':>7}{'CPU seconds':>22}{'ratio':>7}"
          f"{'messages':>10}{'flushes':>9}")
    for label in labels:
        times, cpus = [r[0] for r in rows[label]], [r[3] for r in rows[label]]
        msgs = statistics.median(r[1] for r in rows[label])
        flushes = statistics.median(r[2] for r in rows[label])
        print(f"{label:24}{spread(times):>22}{statistics.median(times) / base:>7.2f}"
              f"{spread(cpus):>22}{statistics.median(cpus) / base_cpu:>7.2f}"
              f"{msgs:>10.0f}{flushes:>9.0f}")
    ratio = statistics.median(r[0] for r in rows[labels[1]]) / base
    print(f"target: with a RunView <= 1.25x wall -> {ratio:.2f}x, "
          f"{'met' if ratio <= 1.25 else 'NOT met'} (CPU time, all threads, is the steadier "
          "figure on a loaded machine)")
    return ratio


def run_renderers(n_nodes: int = 300, warm: int = 5) -> None:
    definition = lattice(n_nodes, "render")
    states = {n.name: ("failed" if i % 97 == 0 else "succeeded")
              for i, n in enumerate(definition.nodes)}
    source = workflow_dot(definition, states=states, full=True).source
    print(f"\n{n_nodes}-node picture ({len(source):,} bytes of DOT), cache bypassed")
    print(f"{'renderer':12}{'first s':>10}{'warm s (median)':>18}{'svg bytes':>12}")
    for name, fn in RENDERERS.items():
        try:
            t0 = time.perf_counter()
            svg = fn(source)
            first = time.perf_counter() - t0
            times = []
            for _ in range(warm):
                t0 = time.perf_counter()
                fn(source)
                times.append(time.perf_counter() - t0)
        except RenderFailed as exc:
            print(f"{name:12}{'n/a':>10}{'':>18}{'':>12}  ({exc})")
            continue
        print(f"{name:12}{first:>10.3f}{statistics.median(times):>18.3f}{len(svg):>12,}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    comm.create_comm = CountingComm  # a counting stand-in for the browser
    asyncio.run(run_overhead(args.nodes, args.repeat))
    run_renderers()


if __name__ == "__main__":
    main()
