"""An MCP client on the official Python SDK, driven by tests/cli/mcp.rs.

    python3 mcp_client.py stdio PAS ROOT CELL AGENT   # spawns `PAS --root ROOT mcp`
    python3 mcp_client.py http URL TOKEN CELL AGENT   # streamable HTTP, X-Pas-As: AGENT

Runs the agent's loop through the tools and prints one JSON object of what came back.
"""

import json
import os
import sys

import anyio
from mcp import ClientSession
from mcp.client.stdio import StdioServerParameters, stdio_client


def result(r):
    """A tool result as plain JSON."""
    return {
        "is_error": bool(r.is_error),
        "structured": r.structured_content,
        "text": [c.text for c in r.content if getattr(c, "type", "") == "text"],
    }


async def loop(session, cell, agent, out, updated):
    init = await session.initialize()
    out["server"] = init.server_info.name
    tools = await session.list_tools()
    out["tools"] = sorted(t.name for t in tools.tools)
    out["schemas_are_objects"] = all(t.input_schema.get("type") == "object" for t in tools.tools)
    out["beat"] = result(await session.call_tool("beat", {"progress": 0.5, "ctx_used": 1000, "ctx_limit": 10000, "note": "via mcp", "meta": {"model": "m1"}}))
    claimed = result(await session.call_tool("claim_task", {}))
    out["claim"] = claimed
    task = (claimed["structured"] or {}).get("task") or {}
    out["done"] = result(await session.call_tool("complete_task", {"task_id": task.get("task_id", "none")}))
    out["claim_again"] = result(await session.call_tool("claim_task", {}))
    out["save"] = result(await session.call_tool("save_checkpoint", {"state": {"step": 3, "notes": "half way"}, "reason": "mcp test"}))
    out["load"] = result(await session.call_tool("load_checkpoint", {}))
    out["refused"] = result(await session.call_tool("beat", {"agent": "other"}))
    out["bad_args"] = result(await session.call_tool("beat", {"progress": "half"}))
    out["health"] = result(await session.call_tool("get_agent_health", {}))
    out["tasks"] = result(await session.call_tool("list_tasks", {}))
    uri = f"pas://cell/{cell}/agent/{agent}"
    out["resource"] = json.loads((await session.read_resource(uri)).contents[0].text)
    out["events"] = json.loads((await session.read_resource(f"pas://cell/{cell}/events")).contents[0].text)
    if updated is not None:
        await session.subscribe_resource(uri)
        await session.call_tool("beat", {"note": "after subscribing"})
        with anyio.fail_after(10):
            while uri not in updated["uris"]:
                await updated["event"].wait()
                updated["event"] = anyio.Event()
        out["updated"] = uri


async def main():
    mode, a, b, cell, agent = sys.argv[1:6]
    out = {}
    updated = {"uris": set(), "event": anyio.Event()}

    async def on_message(message):
        root = getattr(message, "root", message)
        if getattr(root, "method", "") == "notifications/resources/updated":
            updated["uris"].add(root.params.uri)
            updated["event"].set()

    if mode == "stdio":
        env = {"PAS_CELL": cell, "PAS_AGENT": agent, "PAS_AGENTS_AS_ROOT": "1"}
        params = StdioServerParameters(command=a, args=["--root", b, "mcp"], env=env)
        async with stdio_client(params) as (read, write):
            async with ClientSession(read, write, message_handler=on_message) as session:
                await loop(session, cell, agent, out, updated)
    else:
        import httpx2
        from mcp.client.streamable_http import streamable_http_client

        headers = {"X-Pas-As": agent, "X-Pas-Cell": cell, "Authorization": f"Bearer {b}"}
        async with httpx2.AsyncClient(headers=headers, timeout=10) as http:
            async with streamable_http_client(a, http_client=http) as (read, write):
                async with ClientSession(read, write) as session:
                    await loop(session, cell, agent, out, None)
    print(json.dumps(out))


anyio.run(main)
