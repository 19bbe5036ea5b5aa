"""What a node dispatch pays for security, against the executor without it.

First table: µs per operation (CPU time, best of several rounds) for a bare
dict lookup, the executor's dispatch check (``GrantSet.gate()``: one lookup,
an expiry compare and an audit entry, in one call frame), ``check_all``, a
cached ``GrantSet.check`` (without and with an audit listener that hears
allowed checks),
``resource_for``, cached and full ``Authority.verify`` (HMAC and Ed25519),
minting, attenuating and narrowing (fresh and reused).

Second table, the issue's yardstick ("under 10% added per node"): the real
executor running a 2k-node chain without an authority (the baseline: the same
executor, no authority), with an authority, and with one checked requirement
on every node -- each set-up on an executor of its own (same config, history
on); many short rounds, each palindromic (A B C C B A) so that the machine's
drift weighs on both sides alike; per round the ratio to that round's
baseline; median (min–max) of those ratios, CPU time, with the machine's load.

Third table (``--instructions``, needs Valgrind): instructions per node of the
same three set-ups, counted by cachegrind -- the same comparison without the
neighbours' load in it.

Run: ``python benchmarks/security.py [--engine | --instructions]`` (``--engine``:
the second table alone). No assertions: numbers
vary by machine.
"""

from __future__ import annotations

import asyncio
import gc
import os
import statistics
import time
from typing import Callable

from lion_nb.security import Authority, Capability, ResourceRegistry, resource_for

ROUNDS = 5


def per_op_us(fn: Callable[[int], None], n: int) -> float:
    """Best-of-ROUNDS CPU microseconds per operation for ``fn(n)`` doing ``n`` of them.

    CPU time of this thread, not wall time: on a shared machine the wall clock
    mostly measures the neighbours.
    """
    best = float("inf")
    for _ in range(ROUNDS):
        gc.collect()
        start = time.thread_time_ns()
        fn(n)
        best = min(best, (time.thread_time_ns() - start) / n / 1_000)
    return best


def bare_asyncio_node_us(n: int = 10_000) -> float:
    """µs per node of a minimal executor: one Task per no-op node, awaited in order."""
    async def node() -> None:
        return None

    async def run() -> None:
        tasks = [asyncio.ensure_future(node()) for _ in range(n)]
        for task in tasks:
            await task

    best = float("inf")
    for _ in range(ROUNDS):
        start = time.thread_time_ns()
        asyncio.run(run())
        best = min(best, (time.thread_time_ns() - start) / n / 1_000)
    return best


def main() -> None:
    n = 100_000
    authority = Authority.generate(audit_limit=10_000)
    token = authority.mint(Capability("db", {"read", "write"}, scope="orders/*"), expires_in=3600)
    grants = authority.grant([token], instance_id="bench")
    registry = ResourceRegistry()
    registry.register("db", object())
    table = {"db:write:orders/*": token}

    def dict_lookup(k: int) -> None:
        get = table.get
        for _ in range(k):
            get("db:write:orders/*")

    requires = ("db:write:orders/*",)

    def check_all(k: int) -> None:
        chk = grants.check_all
        for _ in range(k):
            chk(requires, node="SaveOrder")

    def gate(k: int) -> None:
        chk = grants.gate()
        for _ in range(k):
            chk(requires, "SaveOrder")

    def check(k: int) -> None:
        chk = grants.check
        for _ in range(k):
            chk("db:write:orders/*", node="SaveOrder")

    def resource(k: int) -> None:
        for _ in range(k):
            resource_for(grants, registry, "db", "write", "orders/*", node="SaveOrder")

    text = token.serialize()

    def verify_cached(k: int) -> None:
        for _ in range(k):
            authority.verify(text)

    key = b"bench-key-bench-key-bench-key-32"

    def verify_full_with(issuer: Authority, count: int) -> Callable[[int], None]:
        # One caveat deep, like a granted (instance-bound) token; a verifier that
        # remembers one token, so every verify checks the chain and parses.
        texts = [issuer.mint("db:read").attenuate(scope="orders/1").serialize()
                 for _ in range(count)]
        fresh = (Authority.from_public_key(issuer.public_key, cache_size=1)
                 if issuer.public_key is not None else Authority(key, cache_size=1))

        def run(k: int) -> None:
            for i in range(k):
                fresh.verify(texts[i % count])
        return run

    verify_full = verify_full_with(Authority(key), 2_000)
    ed = Authority.generate_ed25519(audit_limit=10_000)
    verify_full_ed = verify_full_with(ed, 200)
    ed_token = ed.mint("db:read,write:orders/*")

    def mint(k: int) -> None:
        for _ in range(k):
            authority.mint("db:read")

    def attenuate(k: int) -> None:
        for _ in range(k):
            token.attenuate(actions={"read"})

    def attenuate_ed(k: int) -> None:
        for _ in range(k):
            ed_token.attenuate(actions={"read"})

    def narrow(k: int) -> None:
        for _ in range(k):
            grants.narrow(["db:read:orders/1"], expires_in=60)

    lifetimes = iter(range(10**9))

    def narrow_fresh(k: int) -> None:
        for _ in range(k):  # a new lifetime each time, in every round: nothing to reuse
            grants.narrow(["db:read:orders/1"], expires_in=60 + next(lifetimes) / 1e6)

    node_us = bare_asyncio_node_us()
    rows = [
        ("bare dict lookup", per_op_us(dict_lookup, n)),
        ("grants.gate() (the dispatch check)", per_op_us(gate, n)),
        ("grants.check_all", per_op_us(check_all, n)),
        ("grants.check (cached, audited)", per_op_us(check, n)),
    ]
    remove = authority.add_listener(lambda record: None)
    rows.append(("grants.check (cached, 1 listener)", per_op_us(check, n)))
    remove()
    remove = authority.add_listener(lambda record: None, allowed_checks=False)
    rows.append(("grants.check (denials-only listener)", per_op_us(check, n)))
    remove()
    rows += [
        ("resource_for (cached check + lookup)", per_op_us(resource, n)),
        ("authority.verify (cached)", per_op_us(verify_cached, n)),
        ("authority.verify (full: HMAC + parse)", per_op_us(verify_full, 10_000)),
        ("authority.verify (full: Ed25519 + parse)", per_op_us(verify_full_ed, 1_000)),
        ("authority.mint", per_op_us(mint, 5_000)),
        ("token.attenuate (HMAC, audited)", per_op_us(attenuate, 5_000)),
        ("token.attenuate (Ed25519, audited)", per_op_us(attenuate_ed, 1_000)),
        ("grants.narrow, fresh (attenuate + bind)", per_op_us(narrow_fresh, 1_000)),
        ("grants.narrow, reused (per node)", per_op_us(narrow, 20_000)),
        ("bare asyncio executor, per node", node_us),
    ]
    print(f"{'operation (CPU time, best of ' + str(ROUNDS) + ')':<44}{'µs/op':>10}"
          f"{'% of a node':>14}")
    print("-" * 68)
    for name, us in rows:
        print(f"{name:<44}{us:>10.3f}{100 * us / node_us:>13.1f}%")
    print("\n'% of a node' compares with the bare one-Task-per-node asyncio executor above.")
    engine_table()


SETUPS = {"plain": "no authority, no requirements (baseline)",
          "authority": "authority, no requirements",
          "checked": "authority, one checked requirement per node"}


async def _setup(name: str, n: int) -> tuple[object, object, list[object] | None]:
    """A started executor of its own, the chain and the grants for set-up ``name``.

    Like with like: every set-up has its own executor (same config, history on,
    same number of runs), the same chain of ``n`` no-op nodes; only the
    authority and the nodes' ``requires`` differ.
    """
    from lion_nb.engine import ExecutorConfig, WorkflowExecutor
    from lion_nb.model import Node, WorkflowBuilder

    async def noop(ctx: object) -> None:
        return None

    requires = ["db:read"] if name == "checked" else []
    nodes = [Node(f"n{i}", handler="noop", requires=requires) for i in range(n)]
    b = WorkflowBuilder("chain").add_nodes(*nodes)
    for a, c in zip(nodes, nodes[1:]):
        b.connect(a, c)
    authority = None if name == "plain" else Authority.generate()
    ex = WorkflowExecutor(config=ExecutorConfig(authority=authority))
    ex.add_handler("noop", noop)
    await ex.start()
    grants = None if authority is None or name != "checked" else [authority.mint("db:read")]
    return ex, b.build(), grants


def engine_rounds(n: int = 2_000, rounds: int = 151) -> dict[str, list[float]]:
    """Per round, CPU µs per node of a ``n``-node chain in each of the SETUPS.

    Many short rounds, each palindromic (plain, authority, checked, checked,
    authority, plain): a neighbour's burst or a drift in the machine's speed
    then weighs on both sides of every pair alike. A set-up's figure for the
    round is the mean of its two runs; the ratio that matters is taken per
    round, against the baseline of the same round. CPU time is the process's
    (``time.process_time``), which a shared machine disturbs far less than wall
    time.
    """
    async def measure() -> dict[str, list[float]]:
        setups = {name: await _setup(name, n) for name in SETUPS}
        out: dict[str, list[float]] = {k: [] for k in setups}
        for ex, wf, grants in setups.values():  # warm-up: caches, first-run costs
            for _ in range(2):
                await ex.run(wf, grants=grants)  # type: ignore[attr-defined]
        names = list(setups)
        for _ in range(rounds):
            spent = dict.fromkeys(names, 0.0)
            for name in names + names[::-1]:
                ex, wf, grants = setups[name]
                gc.collect()
                c0 = time.process_time()
                result = await ex.run(wf, grants=grants)  # type: ignore[attr-defined]
                spent[name] += time.process_time() - c0
                assert result.succeeded
            for name in names:
                out[name].append(spent[name] / 2 / n * 1e6)
        for ex, _, _ in setups.values():
            await ex.stop()  # type: ignore[attr-defined]
        return out

    return asyncio.run(measure())


def spread(values: list[float], fmt: str = "{:.2f}") -> str:
    """``median (min–max)`` of ``values``."""
    return (f"{fmt.format(statistics.median(values))} "
            f"({fmt.format(min(values))}–{fmt.format(max(values))})")


def engine_table(n: int = 2_000, rounds: int = 151) -> None:
    """The issue's yardstick: what checking every node adds to a node, pair by pair."""
    load_before = os.getloadavg()
    per = engine_rounds(n, rounds)
    load_after = os.getloadavg()
    print(f"\nlion_nb executor, {n}-node chain, {rounds} rounds of paired runs "
          "(A B C C B A), CPU time, median (min–max)")
    print(f"{'set-up':<46}{'CPU µs/node':>22}{'added per node':>26}")
    print("-" * 94)
    for name, label in SETUPS.items():
        added = [100 * (c / p - 1) for c, p in zip(per[name], per["plain"])]
        ratio = "" if name == "plain" else spread(added, "{:+.1f}%")
        print(f"{label:<46}{spread(per[name]):>22}{ratio:>26}")
    print(f"load average {load_before[0]:.1f} before, {load_after[0]:.1f} after, on "
          f"{os.cpu_count()} CPUs; 'added' is the median of the per-round ratios to the "
          "baseline of the same round (target: under +10%)")


def _child(name: str, runs: int, n: int) -> None:
    """One set-up: warm up, then ``runs`` measured runs (what --instructions counts)."""
    async def go() -> None:
        ex, wf, grants = await _setup(name, n)
        for _ in range(2 + runs):
            await ex.run(wf, grants=grants)  # type: ignore[attr-defined]
        await ex.stop()  # type: ignore[attr-defined]
    asyncio.run(go())


def instructions_table(n: int = 2_000) -> None:
    """Instructions per node under Valgrind's cachegrind: the same yardstick, load-proof.

    Each set-up runs in a child process twice, with 1 and with 3 measured runs
    after the same warm-up; the difference over 2 runs is what one run costs,
    start-up and imports excluded. Instruction counts do not move with the
    neighbours' load (CPU time does, by ±15% and more on a shared machine),
    though they ignore cache misses. Hash seed fixed: dict probing is then the
    same in every child.
    """
    import re
    import shutil
    import subprocess
    import sys

    if shutil.which("valgrind") is None:
        print("\n--instructions needs valgrind on PATH")
        return

    def start(name: str, runs: int) -> subprocess.Popen[str]:
        return subprocess.Popen(
            ["valgrind", "--tool=cachegrind", "--cache-sim=no",
             "--cachegrind-out-file=/dev/null", sys.executable, __file__, "--child", name,
             str(runs), str(n)], env=dict(os.environ, PYTHONHASHSEED="0"),
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)

    def count(proc: subprocess.Popen[str]) -> int:
        _, err = proc.communicate()
        found = re.search(r"I\s+refs:\s+([\d,]+)", err)
        assert proc.returncode == 0 and found, err[-2000:]
        return int(found.group(1).replace(",", ""))

    # Counts do not depend on what else runs, so the six children run at once.
    procs = {(name, runs): start(name, runs) for name in SETUPS for runs in (1, 3)}
    counts = {key: count(proc) for key, proc in procs.items()}
    per_node = {name: (counts[name, 3] - counts[name, 1]) / 2 / n for name in SETUPS}
    print(f"\nlion_nb executor, {n}-node chain, instructions per node (cachegrind)")
    for name, label in SETUPS.items():
        added = 100 * (per_node[name] / per_node["plain"] - 1)
        print(f"{label:<44}{per_node[name]:>12,.0f}{added:>+10.1f}%")


if __name__ == "__main__":
    import sys
    if sys.argv[1:2] == ["--child"]:
        _child(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
    elif sys.argv[1:2] == ["--instructions"]:
        instructions_table()
    elif sys.argv[1:2] == ["--engine"]:
        engine_table()
    else:
        main()
