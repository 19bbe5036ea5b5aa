"""Skip-or-fail for suites that need a real service (NATS, PostgreSQL, Chromium).

Where a service cannot be had, the suite skips with one line saying why; with
``LION_REQUIRE_SERVICES=1`` (set by ``.ci/run``) the same line fails the run instead.
"""

from __future__ import annotations

import os

import pytest


def unavailable(service: str, why: str) -> None:
    """Skip the calling test (or fail it under LION_REQUIRE_SERVICES=1): `service` is missing."""
    if os.environ.get("LION_REQUIRE_SERVICES") == "1":
        pytest.fail(f"{service} required (LION_REQUIRE_SERVICES=1) but {why}", pytrace=False)
    pytest.skip(f"{service} unavailable: {why}")
