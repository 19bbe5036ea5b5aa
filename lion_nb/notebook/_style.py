"""One table of state colours, shared by static pictures, timelines and live views.

Every picture of lion_nb colours a node by looking its state up here, so a
"failed" node is the same red in a definition's SVG, a Gantt bar and a live
RunView. Pure data: importing it costs nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType
from typing import Iterable, Mapping

__all__ = ["StateStyle", "STATE_STYLE", "BASE_STYLE", "STATE_ORDER", "TERMINAL_STATES",
           "ERROR_STATES", "style_for", "states_present"]


@dataclass(frozen=True, slots=True)
class StateStyle:
    """How one state looks: fill and border colours, font colour, line style, a glyph."""

    fill: str
    border: str
    font: str = "#1f2328"
    line: str = "solid"
    glyph: str = ""

    def dot_attrs(self) -> dict[str, str]:
        """Graphviz node attributes for this style."""
        style = "filled,rounded" if self.line == "solid" else f"filled,rounded,{self.line}"
        return {"fillcolor": self.fill, "color": self.border, "fontcolor": self.font,
                "style": style}


#: The look of a node that has no state yet (a bare definition).
BASE_STYLE = StateStyle(fill="#ffffff", border="#57606a")

# Order matters: legends list states in this order, from "not started" to
# "needs attention", so a reader scans them the way a run unfolds.
_TABLE: dict[str, StateStyle] = {
    "pending": StateStyle("#f6f8fa", "#8c959f", glyph="·"),
    "queued": StateStyle("#ddf4ff", "#54aeff", glyph="…"),
    "running": StateStyle("#fff8c5", "#d4a72c", glyph="▶"),
    "retrying": StateStyle("#ffe7c2", "#e16f24", glyph="↻"),
    "succeeded": StateStyle("#dafbe1", "#2da44e", glyph="✔"),
    # Succeeded with a cached result: the handler did not run (incremental re-runs).
    "reused": StateStyle("#eef9f0", "#8ddb9f", font="#1a7f37", line="dotted", glyph="♻"),
    # Succeeded before a restart: read back from durable storage by resume, not run again.
    "restored": StateStyle("#e0f4f4", "#1b7c83", font="#0b4f54", line="dashed", glyph="⤓"),
    "failed": StateStyle("#ffebe9", "#cf222e", font="#82071e", glyph="✘"),
    "skipped": StateStyle("#f6f8fa", "#afb8c1", font="#57606a", line="dashed", glyph="⤼"),
    "upstream_failed": StateStyle("#fff0ee", "#ff8182", font="#82071e", line="dashed",
                                  glyph="⊘"),
    "cancelled": StateStyle("#eaeef2", "#6e7781", font="#424a53", glyph="■"),
    "compensating": StateStyle("#fbefff", "#a475f9", glyph="↶"),
    "compensated": StateStyle("#ecd8ff", "#8250df", glyph="↺"),
    # A saga step whose compensation kept failing: it needs an operator.
    "compensation_failed": StateStyle("#ffd8e4", "#bf3989", font="#6e0f3f", glyph="⚠"),
}

#: State name -> StateStyle; read-only so a stray assignment cannot recolour every view.
STATE_STYLE: Mapping[str, StateStyle] = MappingProxyType(_TABLE)

#: Legend order of the states.
STATE_ORDER: tuple[str, ...] = tuple(_TABLE)

#: States after which a node's attempt will not change by itself any more.
TERMINAL_STATES = frozenset({"succeeded", "reused", "restored", "failed", "skipped",
                             "upstream_failed", "cancelled", "compensated",
                             "compensation_failed"})

#: States that mean something went wrong; live views never paint over them with success.
ERROR_STATES = frozenset({"failed", "upstream_failed", "compensation_failed"})


def style_for(state: object) -> StateStyle:
    """The style of ``state`` (a NodeState, a string, or None for no state)."""
    if state is None:
        return BASE_STYLE
    return STATE_STYLE.get(str(getattr(state, "value", state)), BASE_STYLE)


def states_present(states: Iterable[object]) -> list[str]:
    """The distinct known states among ``states``, in legend order."""
    seen = {str(getattr(s, "value", s)) for s in states if s is not None}
    return [name for name in STATE_ORDER if name in seen]
