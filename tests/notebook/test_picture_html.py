"""Pictures carry an HTML form that JupyterLab shows in untrusted notebooks (issue 18).

JupyterLab refuses ``image/svg+xml`` when a notebook is not trusted (a clone, GitHub,
nbviewer) and strips inline ``<svg>`` from sanitized HTML; an ``<img>`` with a data URI
survives. The browser suite checks what the page draws; this pins the kernel side.
"""

from __future__ import annotations

import base64
import html
import re

from lion_nb.model import Node, WorkflowBuilder
from lion_nb.notebook import picture, timeline

_IMG = re.compile(r'<img class="lion-nb-picture" src="data:image/svg\+xml;base64,([^"]+)" '
                  r'alt="([^"]*)" title="([^"]*)" style="([^"]*)">')


def _small():
    a, c = Node("a <b>"), Node("c")
    return WorkflowBuilder("small").add_nodes(a, c).connect(a, c).build()


def test_a_picture_bundle_holds_the_same_svg_as_an_img_data_uri_with_its_summary_as_tooltip():
    bundle = picture(_small())._repr_mimebundle_()
    m = _IMG.fullmatch(bundle["text/html"])
    assert m, bundle["text/html"][:300]
    assert base64.b64decode(m[1]).decode("utf-8") == bundle["image/svg+xml"]
    assert html.unescape(m[3]) == bundle["text/plain"]  # the node list, on hover
    assert html.unescape(m[2]) == bundle["text/plain"].splitlines()[0]
    assert "<b>" not in m[3]  # user text escaped
    # A white card whatever the theme: the SVG's dark text is drawn for white.
    assert "background:#ffffff" in m[4] and "max-width:100%" in m[4]


def test_the_timeline_shows_untrusted_too():
    records = [{"instance_id": "i", "node": "a", "attempt": 1, "state": "succeeded",
                "queued_at": 0.0, "started_at": 0.1, "finished_at": 0.3}]
    bundle = timeline(records)._repr_mimebundle_()
    m = _IMG.fullmatch(bundle["text/html"])
    assert m and base64.b64decode(m[1]).decode("utf-8") == bundle["image/svg+xml"]
