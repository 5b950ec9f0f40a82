"""The stand-in the benchmarks compare us with: the REPL server people write themselves.

An MCP server (the official Python SDK) with our tool names, on jupyter_client and one stock
ipykernel per session, in a plain venv per session (`uv venv`, then `uv pip install` of ipykernel
and the base packages): no spare sessions, no shared bytecode, no snapshots. A cell under another
parent than the kernel's last one restarts the kernel and replays the path to that parent.

Usage: python stand_in_server.py DATA_DIR UV BASE_PACKAGES (comma-separated); speaks MCP on stdio.
"""

import asyncio
import base64
import json
import os
import sys
import time
import uuid

from jupyter_client import AsyncKernelManager
from jupyter_client.kernelspec import KernelSpecManager
from mcp.server import MCPServer
from mcp.types import CallToolResult, ImageContent, TextContent

DATA_DIR, UV = sys.argv[1], sys.argv[2]
BASE_PACKAGES = [p for p in sys.argv[3].split(",") if p]

server = MCPServer("stand-in")
sessions = {}


class Session:
    def __init__(self, directory):
        self.directory = directory
        self.cells = {}  # cell id -> (code, parent id)
        self.kernel_path = []  # the cells the kernel ran, in order
        self.manager = None
        self.client = None
        self.started = None

    async def start(self):
        specs = os.path.join(self.directory, "kernels")
        spec = os.path.join(specs, "venv")
        os.makedirs(spec, exist_ok=True)
        python = os.path.join(self.directory, "venv", "bin", "python")
        argv = [python, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
        with open(os.path.join(spec, "kernel.json"), "w") as f:
            json.dump({"argv": argv, "display_name": "venv", "language": "python"}, f)
        self.manager = AsyncKernelManager(
            kernel_name="venv", kernel_spec_manager=KernelSpecManager(kernel_dirs=[specs])
        )
        await self.manager.start_kernel(cwd=self.directory)
        await self.connect()

    async def connect(self):
        self.client = self.manager.client()
        self.client.start_channels()
        await self.client.wait_for_ready(timeout=120)

    async def restart(self):
        self.client.stop_channels()
        await self.manager.restart_kernel(now=True)
        await self.connect()
        self.kernel_path = []

    async def execute(self, code):
        outputs, status = [], {}

        def on_output(message):
            kind, content = message["msg_type"], message["content"]
            if kind == "stream":
                outputs.append(TextContent(type="text", text=content["text"]))
            elif kind == "error":
                outputs.append(TextContent(type="text", text="\n".join(content["traceback"])))
            elif kind in ("execute_result", "display_data"):
                data = content["data"]
                if "image/png" in data:
                    outputs.append(ImageContent(type="image", data=data["image/png"], mimeType="image/png"))
                elif "text/plain" in data:
                    outputs.append(TextContent(type="text", text=data["text/plain"]))

        reply = await self.client.execute_interactive(code, output_hook=on_output, timeout=600)
        status = reply["content"]["status"]
        return outputs, status

    def path_to(self, parent):
        path = []
        while parent is not None:
            path.append(parent)
            parent = self.cells[parent][1]
        return path[::-1]


async def run(command):
    process = await asyncio.create_subprocess_exec(
        *command, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE
    )
    _, stderr = await process.communicate()
    if process.returncode != 0:
        raise RuntimeError(f"{command[:3]} failed: {stderr.decode()[-2000:]}")


@server.tool()
async def create_repl() -> CallToolResult:
    """Creates a session: a venv with ipykernel and the base packages, its kernel starting."""
    session_id = uuid.uuid4().hex[:16]
    directory = os.path.join(DATA_DIR, "sessions", session_id)
    os.makedirs(directory)
    venv = os.path.join(directory, "venv")
    await run([UV, "venv", "--no-progress", venv])
    python = os.path.join(venv, "bin", "python")
    await run([UV, "pip", "install", "--no-progress", "--python", python, "ipykernel", *BASE_PACKAGES])
    session = Session(directory)
    session.started = asyncio.ensure_future(session.start())
    sessions[session_id] = session
    return CallToolResult(
        content=[TextContent(type="text", text=session_id)], structured_content={"session_id": session_id}
    )


@server.tool()
async def run_code(session_id: str, code: str, parent_cell_id: str | None = None) -> CallToolResult:
    """Runs code on the state after parent_cell_id (a fresh one without), replaying as needed."""
    session = sessions[session_id]
    await session.started
    wanted = session.path_to(parent_cell_id)
    replayed = []
    if session.kernel_path != wanted:
        await session.restart()
        for cell in wanted:
            await session.execute(session.cells[cell][0])
            replayed.append(cell)
        session.kernel_path = list(wanted)
    started = time.monotonic()
    outputs, status = await session.execute(code)
    run_ms = (time.monotonic() - started) * 1000
    cell_id = uuid.uuid4().hex[:12]
    session.cells[cell_id] = (code, parent_cell_id)
    session.kernel_path.append(cell_id)
    outputs.append(TextContent(type="text", text=cell_id))
    structured = {"cell_id": cell_id, "run_ms": run_ms, "replayed_cell_ids": replayed, "status": status}
    return CallToolResult(content=outputs, structured_content=structured, is_error=status != "ok")


if __name__ == "__main__":
    try:
        server.run()
    finally:
        for session in sessions.values():
            if session.manager is not None:
                asyncio.run(session.manager.shutdown_kernel(now=True))
