"""Drives mcp-pyrepl with the official Python MCP SDK: the calls a Python MCP application makes.

Usage: python python_sdk.py MCP_PYREPL DATA_DIR UV
Prints one line per check; exits non-zero on the first failure.
"""

import asyncio
import base64
import sys

from mcp import ClientSession, StdioServerParameters, types
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

            # Files in and out, and a cut output's full text through its resource link.
            payload = base64.b64encode(bytes(range(256))).decode()
            up = await session.call_tool("upload_file", {"session_id": sid, "path": "in/b.bin", "content_base64": payload})
            assert not up.is_error, up
            down = await session.call_tool("download_file", {"session_id": sid, "path": "in/b.bin"})
            assert base64.b64decode(down.content[0].resource.blob) == bytes(range(256)), down
            long = await session.call_tool("run_code", {"session_id": sid, "code": "print('y' * 100000)"})
            links = [c for c in long.content if isinstance(c, types.ResourceLink)]
            assert len(links) == 1, long.content
            full = await session.read_resource(links[0].uri)
            assert full.contents[0].text == "y" * 100000 + "\n", full.contents[0].text[:100]
            listed = await session.list_resources()
            assert str(links[0].uri) in {str(r.uri) for r in listed.resources}, listed
            print("python sdk: ok")


asyncio.run(main())
