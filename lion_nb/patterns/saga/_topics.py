"""The topics saga commands and replies travel on."""

from __future__ import annotations

import re

__all__ = ["COMMAND_TOPIC_PREFIX", "REPLY_TOPIC_PREFIX", "command_topic", "reply_topic",
           "topic_segments_problem"]

#: Commands for service ``s`` are published on ``saga.command.<s>``.
COMMAND_TOPIC_PREFIX = "saga.command"
#: Replies to manager ``m`` are published on ``saga.reply.<m>``.
REPLY_TOPIC_PREFIX = "saga.reply"

# The broker's rule for plain topic segments; checked here so that a bad service or
# manager name is refused where it is declared, not at the first publish.
_NAME = re.compile(r"[A-Za-z0-9_\-]+(\.[A-Za-z0-9_\-]+)*\Z")
_MAX_NAME = 200


def topic_segments_problem(name: object) -> str | None:
    """Why ``name`` cannot be the last part of a topic, or None if it can."""
    if not isinstance(name, str) or not name:
        return f"must be a non-empty string, got {name!r}"
    if len(name) > _MAX_NAME:
        return f"is longer than {_MAX_NAME} characters"
    if not _NAME.match(name):
        return "may only hold letters, digits, '_', '-' and inner dots"
    return None


def command_topic(service: str) -> str:
    """The topic a service receives its commands on."""
    return f"{COMMAND_TOPIC_PREFIX}.{service}"


def reply_topic(manager: str) -> str:
    """The topic a saga manager receives replies on."""
    return f"{REPLY_TOPIC_PREFIX}.{manager}"
