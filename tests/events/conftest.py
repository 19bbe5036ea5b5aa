"""Every broker a test makes is closed afterwards, even when an assert failed."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from events.helpers import close_all


@pytest.fixture(autouse=True)
async def _close_brokers() -> AsyncIterator[None]:
    yield
    await close_all()
