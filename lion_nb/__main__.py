"""Command line: ``python -m lion_nb demo`` (also the ``lion-nb`` script).

``python -m lion_nb service MODULE:ATTR --nats URL`` serves saga services in this process.
"""

from __future__ import annotations

import argparse
import asyncio
import sys

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``lion-nb`` command."""
    parser = argparse.ArgumentParser(prog="lion-nb", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("demo", help="run the order-processing demo workflow and print its table")
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


if __name__ == "__main__":
    sys.exit(main())
