"""Drives mcp-pyrepl with the official Python MCP SDK: the calls a Python MCP application makes.

Usage: python python_sdk.py MCP_PYREPL DATA_DIR UV
Prints one line per check; exits non-zero on the first failure.
"""

import asyncio
import sys

from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client


async def main():
    binary, data_dir, uv = sys.argv[1:4]
    server = StdioServerParameters(
        command=binary, args=["--data-dir", data_dir, "--uv", uv, "--base-packages", "", "--spare-sessions", "0"]
    )
    async with stdio_client(server) as (read, write):
        async with ClientSession(read, write) as session:
            await session.initialize()
            tools = {tool.name for tool in (await session.list_tools()).tools}
            assert {"create_repl", "run_code", "install_packages", "reset_repl", "wait_cell"} <= tools, tools
            progress = []

            async def on_progress(done, total, message):
                progress.append(message)

            created = await session.call_tool("create_repl", {}, progress_callback=on_progress)
            sid = created.structured_content["session_id"]
            assert progress, "no progress notifications"
            first = await session.call_tool("run_code", {"session_id": sid, "code": "x = 41"})
            second = await session.call_tool(
                "run_code", {"session_id": sid, "code": "x + 1", "parent_cell_id": first.content[-1].text}
            )
            assert second.content[0].text == "42", second
            failed = await session.call_tool("run_code", {"session_id": sid, "code": "1/0"})
            assert failed.is_error and "ZeroDivisionError" in failed.content[0].text, failed
            bad = await session.call_tool("run_code", {"session_id": "../etc", "code": "1"})
            assert bad.is_error and "not a session id" in bad.content[0].text, bad
            print("python sdk: ok")


asyncio.run(main())
