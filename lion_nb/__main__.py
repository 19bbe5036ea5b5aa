"""Command line: ``python -m lion_nb demo`` (also the ``lion-nb`` script)."""

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
    args = parser.parse_args(argv)
    if args.command == "demo":
        from .demo import run_demo
        return asyncio.run(run_demo())
    return 2  # argparse already rejected anything else


if __name__ == "__main__":
    sys.exit(main())
