"""A stand-in for the browser: widget tests record every comm message, with no front end.

(The pattern ipywidgets' own tests use: replace ``comm.create_comm`` with a
recorder.) Use the ``frontend`` fixture defined in the test modules.
"""

from __future__ import annotations

import time

import comm
import pytest


class FrontEnd:
    """Records each comm message with its time and widget."""

    def __init__(self) -> None:
        self.messages: list[tuple[float, str, dict]] = []

    def create_comm(self, **kwargs):
        """What ipywidgets calls to open a comm: a recorder."""
        front = self

        class RecordingComm:
            comm_id = f"c{len(front.messages)}-{id(kwargs)}"
            kernel = "Truthy"

            def __init__(self) -> None:
                self.model = kwargs.get("data", {}).get("state", {}).get("_model_name", "?")

            def send(self, data=None, buffers=None, **kw):
                front.messages.append((time.monotonic(), self.comm_id, data or {}))

            def on_msg(self, *a, **k):
                pass

            def close(self, *a, **k):
                pass

            def open(self, *a, **k):
                pass

        return RecordingComm()

    def per_second_peak(self, comm_id: str | None = None) -> int:
        """The most messages (of one widget, or all) within any one-second window."""
        times = [t for t, c, _ in self.messages if comm_id is None or c == comm_id]
        peak, lo = 0, 0
        for hi, t in enumerate(times):
            while t - times[lo] > 1.0:
                lo += 1
            peak = max(peak, hi - lo + 1)
        return peak


@pytest.fixture
def frontend(monkeypatch):
    """Widgets created in the test talk to a recording FrontEnd."""
    fe = FrontEnd()
    monkeypatch.setattr(comm, "create_comm", fe.create_comm)
    return fe
