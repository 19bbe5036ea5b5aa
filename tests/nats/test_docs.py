"""docs/nats.md runs as written, against a real local NATS server."""

from __future__ import annotations

from docs_runner import ROOT, run_blocks


async def test_nats_doc_blocks_run(nats_server):
    ns: dict = {"__name__": "docs_nats"}
    try:
        await run_blocks(ROOT / "docs" / "nats.md", ns)
        assert ns["event"].payload == {"order_id": "12345"}
    finally:
        if "broker" in ns and not ns["broker"].closed:
            await ns["broker"].close()
        if "server" in ns:
            ns["server"].stop()
