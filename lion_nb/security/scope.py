"""Scope patterns: which part of a resource a capability reaches.

A scope is a ``/``-separated path of segments. A segment ``*`` stands for any
one segment, ``**`` for any number of segments (zero included), and a ``*``
inside a segment (``2024-*``) for any run of characters in that segment. The
scope ``*`` on its own means the whole resource, because that is what a
capability without a scope should mean::

    >>> scope_covers("orders/*", "orders/1")
    True
    >>> scope_covers("orders/*", "users/1")
    False
    >>> scope_covers("orders/**", "orders/1/lines/2")
    True

``scope_covers(outer, inner)`` answers "does every path ``inner`` can match
also match ``outer``?". It is conservative: where the answer needs reasoning
about two in-segment globs (``a*`` against ``ab*``) it says no, so an
uncertain case is denied, never allowed.
"""

from __future__ import annotations

import functools
import re

from lion_nb.errors import CapabilityError

__all__ = ["WHOLE", "validate_scope", "scope_covers"]

WHOLE = "*"
"""The scope of a whole resource (the default)."""

_MAX_LEN = 1024
_BAD_CHARS = re.compile(r"[\s\x00-\x1f\x7f]")


def validate_scope(scope: object) -> str:
    """Return ``scope`` if it is a well-formed pattern, else raise CapabilityError."""
    if not isinstance(scope, str):
        raise CapabilityError(f"scope must be a string, not {type(scope).__name__}",
                              capability=repr(scope))
    if not scope:
        raise CapabilityError("scope is empty; use '*' for the whole resource",
                              capability=scope)
    if len(scope) > _MAX_LEN:
        raise CapabilityError(f"scope is longer than {_MAX_LEN} characters",
                              capability=scope[:40] + "...")
    if _BAD_CHARS.search(scope):
        raise CapabilityError(f"scope {scope!r} contains whitespace or control characters",
                              capability=scope)
    for seg in scope.split("/"):
        if not seg:
            raise CapabilityError(f"scope {scope!r} has an empty path segment "
                                  "(leading, trailing or doubled '/')", capability=scope)
        if "**" in seg and seg != "**":
            raise CapabilityError(f"scope {scope!r}: '**' must be a whole segment",
                                  capability=scope)
    return scope


def _segments(scope: str) -> tuple[str, ...]:
    # '*' alone is the whole resource, which is what '**' means as a pattern.
    return ("**",) if scope == WHOLE else tuple(scope.split("/"))


@functools.lru_cache(maxsize=4096)
def _segment_regex(seg: str) -> re.Pattern[str]:
    return re.compile(".*".join(re.escape(part) for part in seg.split("*")))


def _segment_covers(outer: str, inner: str) -> bool:
    if outer == "*" or outer == inner:
        return True
    if "*" not in outer or "*" in inner:
        # A literal only covers itself; glob-against-glob is left uncertain (denied).
        return False
    return _segment_regex(outer).fullmatch(inner) is not None


@functools.lru_cache(maxsize=8192)
def scope_covers(outer: str, inner: str) -> bool:
    """True if every path matched by pattern ``inner`` is matched by ``outer``."""
    a, b = _segments(outer), _segments(inner)

    @functools.cache
    def cover(i: int, j: int) -> bool:
        if i == len(a):
            return j == len(b)
        seg = a[i]
        if seg == "**":
            # Either '**' matches nothing more, or it swallows one more inner segment
            # (an inner '**' included: any number of segments is still any number).
            return cover(i + 1, j) or (j < len(b) and cover(i, j + 1))
        if j == len(b) or b[j] == "**":
            return False
        return _segment_covers(seg, b[j]) and cover(i + 1, j + 1)

    return cover(0, 0)
