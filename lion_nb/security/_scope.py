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

Scopes arrive inside tokens and workflow files, so every bound is explicit:
at most :data:`MAX_SCOPE_LEN` characters and :data:`MAX_SEGMENTS` segments,
no ``.``/``..`` segments (``orders/**`` must not cover ``orders/../users``),
and matching is iterative and linear in the text (no regular expressions,
so no backtracking and no recursion).
"""

from __future__ import annotations

import functools

from lion_nb.errors import CapabilityError

__all__ = ["MAX_SCOPE_LEN", "MAX_SEGMENTS", "WHOLE", "glob_match", "scope_covers",
           "validate_scope"]

WHOLE = "*"
"""The scope of a whole resource (the default)."""

MAX_SCOPE_LEN = 512
"""Longest scope accepted, in characters."""

MAX_SEGMENTS = 32
"""Most ``/``-separated segments a scope may have."""


def _culprit(scope: str) -> str:
    return scope if len(scope) <= 60 else scope[:57] + "..."


def validate_scope(scope: object) -> str:
    """Return ``scope`` if it is a well-formed pattern, else raise CapabilityError."""
    if not isinstance(scope, str):
        raise CapabilityError(f"scope must be a string, not {type(scope).__name__}",
                              capability=repr(scope)[:60])
    if not scope:
        raise CapabilityError("scope is empty; use '*' for the whole resource",
                              capability=scope)
    if len(scope) > MAX_SCOPE_LEN:
        raise CapabilityError(f"scope is longer than {MAX_SCOPE_LEN} characters",
                              capability=_culprit(scope))
    if not scope.isprintable() or " " in scope:
        raise CapabilityError(f"scope {_culprit(scope)!r} contains whitespace or control "
                              "characters", capability=_culprit(scope))
    segments = scope.split("/")
    if len(segments) > MAX_SEGMENTS:
        raise CapabilityError(f"scope has more than {MAX_SEGMENTS} segments",
                              capability=_culprit(scope))
    for seg in segments:
        if not seg:
            raise CapabilityError(f"scope {_culprit(scope)!r} has an empty path segment "
                                  "(leading, trailing or doubled '/')", capability=_culprit(scope))
        if seg in (".", ".."):
            # A consumer that normalizes paths would read 'orders/../users' as 'users'.
            raise CapabilityError(f"scope {_culprit(scope)!r} has a {seg!r} segment",
                                  capability=_culprit(scope))
        if "**" in seg and seg != "**":
            raise CapabilityError(f"scope {_culprit(scope)!r}: '**' must be a whole segment",
                                  capability=_culprit(scope))
    return scope


def glob_match(pattern: str, text: str) -> bool:
    """True if ``text`` matches ``pattern``, where ``*`` is any run of characters.

    Greedy leftmost placement of each literal piece is exact for ``*``-only
    globs, and every ``str.find`` starts where the last one ended: linear time,
    where a translated regular expression backtracks exponentially.
    """
    pieces = pattern.split("*")
    if len(pieces) == 1:
        return pattern == text
    first, last = pieces[0], pieces[-1]
    if len(first) + len(last) > len(text) or not text.startswith(first) \
            or not text.endswith(last):
        return False
    pos, end = len(first), len(text) - len(last)
    for piece in pieces[1:-1]:
        if not piece:
            continue
        found = text.find(piece, pos, end)
        if found < 0:
            return False
        pos = found + len(piece)
    return True


def _segments(scope: str) -> tuple[str, ...]:
    # '*' alone is the whole resource, which is what '**' means as a pattern.
    return ("**",) if scope == WHOLE else tuple(scope.split("/"))


def _segment_covers(outer: str, inner: str) -> bool:
    if outer == "*" or outer == inner:
        return True
    if "*" not in outer or "*" in inner:
        # A literal only covers itself; glob-against-glob is left uncertain (denied).
        return False
    return glob_match(outer, inner)


@functools.lru_cache(maxsize=8192)
def scope_covers(outer: str, inner: str) -> bool:
    """True if every path matched by pattern ``inner`` is matched by ``outer``.

    CapabilityError if either is not a valid scope (see :func:`validate_scope`).
    """
    a, b = _segments(validate_scope(outer)), _segments(validate_scope(inner))
    # Dynamic programming from the ends, one row per outer segment: at most
    # MAX_SEGMENTS squared cells, no recursion. ok[j]: a[i:] covers b[j:].
    nb = len(b)
    ok = [j == nb for j in range(nb + 1)]  # row i == len(a): only the empty rest is covered
    for seg in reversed(a):
        row = [False] * (nb + 1)
        if seg == "**":
            # '**' matches nothing more (ok[j]), or swallows b[j] and stays (row[j + 1]);
            # an inner '**' included: any number of segments is still any number.
            row[nb] = ok[nb]
            for j in range(nb - 1, -1, -1):
                row[j] = ok[j] or row[j + 1]
        else:
            for j in range(nb):
                row[j] = b[j] != "**" and ok[j + 1] and _segment_covers(seg, b[j])
        ok = row
    return ok[0]
