"""Topic names and subscription patterns for the event broker.

A topic is dot-separated segments of letters, digits, ``_`` and ``-``
(``order.created``). A pattern may use two wildcards, as NATS does:

- ``*`` matches exactly one segment: ``order.*`` matches ``order.created``
  but not ``order`` or ``order.created.eu``;
- ``>`` matches one or more trailing segments and may only come last:
  ``order.>`` matches ``order.created`` and ``order.created.eu``, not ``order``.

Topics whose first segment starts with ``$`` (``$dlq.order.created``,
``$advisory.dead_letter``) are the broker's own. Users subscribe to them but
cannot publish on them, and a wildcard in the first position never matches
them, so ``>`` does not silently swallow dead letters.
"""

from __future__ import annotations

import re
from typing import Callable

from ...errors import TopicError

__all__ = ["MAX_TOPIC_LENGTH", "validate_topic", "TopicPattern"]

MAX_TOPIC_LENGTH = 255
_SEGMENT = re.compile(r"[A-Za-z0-9_\-]+\Z")
_SYSTEM_SEGMENT = re.compile(r"\$[A-Za-z0-9_\-]+\Z")


def _check_segments(text: object, *, wildcards: bool, system: bool) -> list[str]:
    """Split ``text`` into segments or raise TopicError naming what is wrong."""
    what = "pattern" if wildcards else "topic"
    if not isinstance(text, str):
        raise TopicError(f"{what} must be a str, not {type(text).__name__}", topic=text)
    if not text:
        raise TopicError(f"{what} must not be empty", topic=text)
    if len(text) > MAX_TOPIC_LENGTH:
        raise TopicError(
            f"{what} {text[:40]!r}... is longer than {MAX_TOPIC_LENGTH} characters", topic=text
        )
    segments = text.split(".")
    for i, seg in enumerate(segments):
        if wildcards and seg == "*":
            continue
        if wildcards and seg == ">":
            if i != len(segments) - 1:
                raise TopicError(f"'>' may only be the last segment of pattern {text!r}",
                                 topic=text)
            continue
        if i == 0 and seg.startswith("$"):
            if not system:
                raise TopicError(
                    f"topic {text!r} is reserved: '$' topics are published by the broker only",
                    topic=text,
                )
            if _SYSTEM_SEGMENT.match(seg):
                continue
        if not _SEGMENT.match(seg):
            shown = "an empty segment" if not seg else f"segment {seg!r}"
            raise TopicError(
                f"{what} {text!r} has {shown}; segments are letters, digits, '_' or '-'"
                + (", or a '*' / '>' wildcard" if wildcards else ""),
                topic=text,
            )
    return segments


def validate_topic(topic: object, *, system: bool = False) -> str:
    """Return ``topic`` if it is a valid concrete topic, else raise TopicError.

    ``system=True`` admits the broker's own ``$`` topics.
    """
    _check_segments(topic, wildcards=False, system=system)
    return topic  # type: ignore[return-value]


class TopicPattern:
    """A validated subscription pattern; ``matches(topic)`` says if a topic is in it.

    A string that is not a valid topic (an empty segment: ``""``, ``".foo"``,
    ``"foo."``, ``"foo..bar"``) matches no pattern.
    """

    __slots__ = ("pattern", "_segments", "_tail", "matches")

    def __init__(self, pattern: object) -> None:
        segments = _check_segments(pattern, wildcards=True, system=True)
        self.pattern: str = pattern  # type: ignore[assignment]
        self._tail = segments[-1] == ">"
        self._segments = segments[:-1] if self._tail else segments
        # Exact patterns are the common case: a string comparison is all they need.
        self.matches: Callable[[str], bool]
        if "*" not in segments and not self._tail:
            self.matches = self.pattern.__eq__
        else:
            self.matches = self._match_wild

    def _match_wild(self, topic: str) -> bool:
        parts = topic.split(".")
        if "" in parts:
            return False  # ".foo", "foo.", "foo..bar", "": not topics, so in no pattern
        n = len(self._segments)
        if self._tail:
            if len(parts) <= n:
                return False
        elif len(parts) != n:
            return False
        if parts[0].startswith("$") and self._segments[:1] != [parts[0]]:
            return False  # wildcards never reach into the broker's own topics
        for want, got in zip(self._segments, parts):
            if want != "*" and want != got:
                return False
        return True

    @property
    def is_exact(self) -> bool:
        """True when the pattern has no wildcard."""
        return not self._tail and "*" not in self._segments

    def __repr__(self) -> str:
        return f"TopicPattern({self.pattern!r})"
