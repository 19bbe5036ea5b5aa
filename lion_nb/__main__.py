"""Command line: ``python -m lion_nb demo`` (also the ``lion-nb`` script).

``python -m lion_nb worker --storage postgresql://... --handlers MODULE:ATTR`` runs an
executor that claims instances submitted to that storage until SIGINT/SIGTERM, then
hands the instances it was running back to the queue (other workers continue them).
``ATTR`` is a mapping of handler names to handlers, or a function that registers
them on the executor it is given.
``python -m lion_nb service MODULE:ATTR --nats URL`` serves saga services in this process.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import signal
import sys
from typing import Any

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``lion-nb`` command."""
    parser = argparse.ArgumentParser(prog="lion-nb", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("demo", help="run the order-processing demo workflow and print its table")
    worker = sub.add_parser("worker", help="claim and run submitted instances")
    worker.add_argument("--storage", required=True,
                        help="postgresql://... DSN, sqlite:///path.db, or a FileStorage directory")
    worker.add_argument("--handlers", required=True, metavar="MODULE:ATTR",
                        help="a mapping name -> handler, or a function(executor) registering them")
    worker.add_argument("--max-claimed", type=int, default=32,
                        help="instances running at once in this worker")
    worker.add_argument("--lease-ttl", type=float, default=None, help="seconds")
    svc = sub.add_parser("service", help="serve saga services over NATS until SIGTERM")
    svc.add_argument("target", help="MODULE:ATTR, a {service: handler} mapping or one handler")
    svc.add_argument("--nats", required=True, metavar="URL", help="the NATS server")
    svc.add_argument("--name", default="lion", help="broker name (JetStream stream) [lion]")
    svc.add_argument("--service", help="service name, when ATTR is one handler")
    svc.add_argument("--ack-timeout", type=float, default=30.0,
                     help="seconds before a command is redelivered to another instance [30]")
    args = parser.parse_args(argv)
    if args.command == "demo":
        from .demo import run_demo
        return asyncio.run(run_demo())
    if args.command == "worker":
        return asyncio.run(_worker(args))
    if args.command == "service":
        return _service(args)
    return 2  # argparse already rejected anything else


def _service(args: argparse.Namespace) -> int:
    from .errors import LionError
    from .patterns import EventBrokerConfig
    from .patterns.nats import load_services, serve_services

    def ready(running: list) -> None:
        names = ", ".join(s.service for s in running)
        print(f"lion_nb service: serving {names} on {args.nats} (broker {args.name!r})",
              flush=True)

    try:
        services = load_services(args.target, args.service)
        handled = asyncio.run(serve_services(
            args.nats, services, name=args.name,
            config=EventBrokerConfig(ack_timeout=args.ack_timeout), on_ready=ready))
    except LionError as exc:
        print(f"lion_nb service: {exc}", file=sys.stderr)
        return 1
    print(f"lion_nb service: stopped after {handled} commands", flush=True)
    return 0


def _open_storage(url: str) -> Any:
    from .state import FileStorage, PostgresStorage, SqliteStorage
    if url.startswith(("postgresql://", "postgres://")):
        return PostgresStorage(url)
    if url.startswith("sqlite:///"):
        return SqliteStorage(url[len("sqlite:///"):])
    return FileStorage(url)


def _load_handlers(spec: str) -> Any:
    module, sep, attr = spec.partition(":")
    if not sep or not module or not attr:
        raise SystemExit(f"--handlers must look like MODULE:ATTR, not {spec!r}")
    try:
        target: Any = importlib.import_module(module)
        for part in attr.split("."):
            target = getattr(target, part)
    except (ImportError, AttributeError) as exc:
        raise SystemExit(f"--handlers {spec}: {exc}") from None
    return target


async def _worker(args: argparse.Namespace) -> int:
    from .engine import ExecutorConfig, WorkflowExecutor
    from .state import StateMachineManager
    handlers = _load_handlers(args.handlers)
    storage = _open_storage(args.storage)
    config = ExecutorConfig() if args.lease_ttl is None else ExecutorConfig(
        lease_ttl=args.lease_ttl)
    executor = WorkflowExecutor(state_manager=StateMachineManager(storage), config=config)
    if callable(handlers):
        handlers(executor)
    else:
        for name, handler in dict(handlers).items():
            executor.add_handler(name, handler)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await executor.start(claim=True, max_claimed=args.max_claimed)
    print(f"lion_nb worker ready: {storage!r}", flush=True)
    try:
        await stop.wait()
    finally:
        await executor.stop()
        await storage.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
