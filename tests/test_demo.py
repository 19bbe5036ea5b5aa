"""The main job: `python -m lion_nb demo` prints a per-node table and a summary, exit 0."""

from __future__ import annotations

import subprocess
import sys


def test_demo_prints_the_node_table_and_succeeds():
    out = subprocess.run([sys.executable, "-m", "lion_nb", "demo"], capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    rows = {line.split()[0]: line.split()[1:3] for line in out.stdout.splitlines()
            if line and line.split()[0] in ("enrich_customers", "fast_track", "fraud_check",
                                               "price_totals", "report")}
    assert rows["enrich_customers"] == ["succeeded", "2"]  # failed once, retried
    assert rows["fast_track"] == ["skipped", "0"]           # the conditional branch not taken
    assert rows["fraud_check"] == ["succeeded", "1"]
    assert rows["price_totals"] == ["succeeded", "1"]       # the sync handler
    assert "succeeded in" in out.stdout and "order total 1300" in out.stdout


def test_cli_rejects_unknown_commands():
    out = subprocess.run([sys.executable, "-m", "lion_nb", "launch"], capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 2 and "invalid choice" in out.stderr
