"""How lion_nb events look on NATS: stream and subject names, the message body, durable names.

One broker name is one JetStream stream, ``LION_<NAME>``, holding the subjects
``lion.<name>.>``. A user topic ``order.created`` travels on
``lion.<name>.u.order.created``; the broker's own ``$`` topics
(``$dlq.order.created``) on ``lion.<name>.x.$dlq.order.created``. The two
branches keep lion_nb's rule that a leading wildcard never reaches the
broker's own topics: the pattern ``>`` becomes ``lion.<name>.u.>``.

A message body is the event as JSON. It comes from another process, so it is
checked field by field (types, sizes, topic agreeing with the subject) before
anything trusts it; a body that fails is reported, never half-used.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

from ...errors import ConfigError, EventCorruptError, EventError
from ..events import Event, TopicPattern

__all__ = ["Wire", "check_name"]

_NAME = re.compile(r"[A-Za-z0-9_-]{1,32}\Z")
_PLAIN_DURABLE = re.compile(r"[A-Za-z0-9_-]{1,48}\Z")
_MAX_ID = 256


def check_name(name: object) -> str:
    """The broker name if it can name a stream (letters, digits, ``_``, ``-``), else ConfigError."""
    if not isinstance(name, str) or not _NAME.match(name):
        raise ConfigError(f"NATS broker name must be 1-32 letters, digits, '_' or '-', got "
                          f"{name!r}", field="name")
    return name


class Wire:
    """Names and message bodies for one broker name (see the module docstring)."""

    __slots__ = ("name", "stream", "root", "kv_bucket")

    def __init__(self, name: str) -> None:
        self.name = check_name(name)
        self.stream = f"LION_{name.upper()}"
        self.root = f"lion.{name}"
        self.kv_bucket = f"LION_{name.upper()}_STATE"

    # -- subjects ---------------------------------------------------------------------

    def subject(self, topic: str) -> str:
        """The subject a (validated) topic travels on."""
        branch = "x" if topic.startswith("$") else "u"
        return f"{self.root}.{branch}.{topic}"

    def filter_subject(self, pattern: str) -> str:
        """The consumer filter subject for a subscription pattern."""
        TopicPattern(pattern)  # validated by the broker already; cheap insurance for callers
        branch = "x" if pattern.startswith("$") else "u"
        return f"{self.root}.{branch}.{pattern}"

    def topic_of(self, subject: str) -> str | None:
        """The topic a subject carries, or None when it is not one of this broker's."""
        prefix = self.root + "."
        if not subject.startswith(prefix) or len(subject) < len(prefix) + 3:
            return None
        branch, topic = subject[len(prefix)], subject[len(prefix) + 2:]
        if subject[len(prefix) + 1] != "." or branch not in "ux":
            return None
        if (branch == "x") != topic.startswith("$"):
            return None
        return topic

    @property
    def all_subjects(self) -> str:
        """The stream's subjects."""
        return f"{self.root}.>"

    # -- durable consumer names -----------------------------------------------------------

    @staticmethod
    def durable(consumer: str) -> str:
        """A JetStream durable name for a subscription name (any string).

        Plain names stay readable; others (dots, spaces, unicode) become a
        digest, and the real name travels in the consumer's metadata.
        """
        if _PLAIN_DURABLE.match(consumer):
            return consumer
        return "x-" + hashlib.sha256(consumer.encode()).hexdigest()[:32]

    # -- bodies -----------------------------------------------------------------------------

    @staticmethod
    def encode(event: Event) -> bytes:
        """The event as a message body (JSON); EventError names the event if it is not JSON."""
        try:
            return json.dumps({"id": event.id, "topic": event.topic, "payload": event.payload,
                               "headers": event.headers, "key": event.idempotency_key,
                               "ts": event.timestamp},
                              allow_nan=False, separators=(",", ":")).encode()
        except (TypeError, ValueError) as exc:
            raise EventError(
                f"event {event.id!r} on topic {event.topic!r} cannot go to NATS: its payload "
                f"or headers are not JSON ({exc})", topic=event.topic, event_id=event.id,
            ) from None

    def decode(self, subject: str, data: bytes, seq: int) -> Event:
        """The event in a message body, checked; EventCorruptError says what is wrong."""
        topic = self.topic_of(subject)
        try:
            body: Any = json.loads(data)
        except (ValueError, UnicodeDecodeError) as exc:
            raise EventCorruptError(f"message {seq} on {subject!r} is not JSON ({exc})",
                                    offset=seq, event_id=None) from None
        problem = _check_body(body, topic)
        if problem is not None:
            raise EventCorruptError(f"message {seq} on {subject!r}: {problem}", offset=seq,
                                    event_id=body.get("id") if isinstance(body, dict) else None)
        return Event(body["topic"], body.get("payload"), id=body["id"],
                     headers=body.get("headers"), idempotency_key=body.get("key"),
                     timestamp=body.get("ts"), offset=seq)


def _check_body(body: Any, topic: str | None) -> str | None:
    """What is wrong with a decoded body, or None."""
    if not isinstance(body, dict):
        return "body is not a JSON object"
    eid, btopic = body.get("id"), body.get("topic")
    if not isinstance(eid, str) or not eid or len(eid) > _MAX_ID:
        return "missing or malformed event id"
    if topic is None or btopic != topic:
        return f"topic {btopic!r} does not match the subject"
    headers, key, ts = body.get("headers"), body.get("key"), body.get("ts")
    if headers is not None and not isinstance(headers, dict):
        return "headers are not an object"
    if key is not None and (not isinstance(key, str) or len(key) > _MAX_ID):
        return "malformed idempotency key"
    if ts is not None and (isinstance(ts, bool) or not isinstance(ts, (int, float))):
        return "timestamp is not a number"
    return None
