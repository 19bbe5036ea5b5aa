"""Connecting to a NATS server with JetStream: fail fast and clearly, then reconnect forever."""

from __future__ import annotations

import logging
from typing import Any

from ...errors import BrokerConnectionError

__all__ = ["connect_jetstream"]

_log = logging.getLogger("lion_nb.nats")


def _import_nats() -> Any:
    try:
        import nats
    except ImportError:  # pragma: no cover - depends on the install
        raise BrokerConnectionError(
            "the NATS event store needs nats-py: pip install 'lion_nb[nats]'", url=None) from None
    return nats


async def connect_jetstream(url: str, *, timeout: float = 2.0, name: str = "lion_nb") -> Any:
    """An open nats-py client whose server has JetStream, or BrokerConnectionError.

    The first connection is tried briefly (``timeout`` per attempt, two
    attempts): a wrong URL says so in seconds instead of hanging in nats-py's
    default two minutes of retries. Once connected, the client reconnects
    without limit, so a restarted server is picked up again.
    """
    nats = _import_nats()
    async def on_error(exc: Exception) -> None:
        _log.debug("nats connection to %s: %s", url, exc)

    async def on_disconnect() -> None:
        _log.info("nats connection to %s lost; reconnecting", url)

    async def on_reconnect() -> None:
        _log.info("nats connection to %s re-established", url)

    try:
        nc = await nats.connect(url, name=name, connect_timeout=timeout,
                                max_reconnect_attempts=1, reconnect_time_wait=0.2,
                                error_cb=on_error, disconnected_cb=on_disconnect,
                                reconnected_cb=on_reconnect)
    except Exception as exc:  # nats-py raises OSError, its own errors and timeouts here
        raise BrokerConnectionError(
            f"cannot reach the NATS server at {url} ({type(exc).__name__}: {exc}); is it "
            "running? lion_nb.patterns.nats.local_server() starts one", url=url) from None
    # From now on a lost server is waited for, not given up on.
    nc.options["max_reconnect_attempts"] = -1
    nc.options["reconnect_time_wait"] = 0.25
    try:
        await nc.jetstream(timeout=timeout).account_info()
    except Exception as exc:  # ServiceUnavailableError when JetStream is off
        await nc.close()
        raise BrokerConnectionError(
            f"the NATS server at {url} has no JetStream ({type(exc).__name__}: {exc}); start "
            "it with -js (local_server() does)", url=url) from None
    return nc
