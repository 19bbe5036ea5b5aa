"""Old home of the topic helpers; they live in :mod:`lion_nb.patterns.events` now.

Kept for the saga modules, which import from here, until they import from ``.events``.
"""

from .events import TopicPattern, validate_topic

__all__ = ["TopicPattern", "validate_topic"]
