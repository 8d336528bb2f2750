#!/usr/bin/env python3
"""A small MCP server on the official Python SDK (`mcp` 2.x, `MCPServer`, formerly
FastMCP) for mcpulse's prober tests, on loopback only.

    mcp_server.py --transport streamable-http [--port N] [--stateless] [--json-response]
                  [--tools v1|v2|alternate]
    mcp_server.py --transport sse [--port N] [--tools v1|v2|alternate]

`--port 0` (the default) binds a free port. Once the server accepts connections it
prints one line on stdout, `READY http://127.0.0.1:PORT/mcp` (Streamable HTTP) or
`READY http://127.0.0.1:PORT/sse` (HTTP+SSE, 2024-11-05), then serves until killed.
Logs go to stderr.

Three tools: `add` (a, b: integers), `echo` (text: string), `weather` (city: string,
units: "celsius" | "fahrenheit").

`--tools` picks the tool list, for the schema-drift tests:

- `v1` (the default): the three tools above.
- `v2`: a changed list — `echo` removed (breaking), `add` gains a required parameter
  `c: int` (breaking), `weather`'s description rewritten (cosmetic).
- `alternate`: `tools/list` answers the v1 and v2 lists in turn, per `tools/list` request
  across the whole process (the 1st, 3rd, … request sees v1, the 2nd, 4th, … v2), so each
  probe (one session: initialize + one tools/list) sees the other version than the one
  before: a fleet where instances serve different versions. `tools/call` always runs the
  v1 tools.
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import sys
from typing import Literal

import uvicorn
from mcp.server.mcpserver import MCPServer

HOST = "127.0.0.1"


def build_server(tools: str = "v1") -> MCPServer:
    if tools == "alternate":
        return build_alternating_server()
    server = MCPServer(name="mcpulse-test-python", version="1.0.0", log_level="WARNING")

    if tools == "v2":

        # The description is v1's on purpose: the only change to `add` is the new
        # required parameter.
        @server.tool(description="Adds two integers.")
        def add(a: int, b: int, c: int) -> int:
            return a + b + c

    else:

        @server.tool(description="Adds two integers.")
        def add(a: int, b: int) -> int:
            return a + b

        @server.tool(description="Returns its input unchanged.")
        def echo(text: str) -> str:
            return text

    weather_description = (
        "Reports today's invented weather for the given city."
        if tools == "v2"
        else "A made-up weather report for a city."
    )

    @server.tool(description=weather_description)
    def weather(city: str, units: Literal["celsius", "fahrenheit"] = "celsius") -> str:
        temp = 21 if units == "celsius" else 70
        return f"{city}: sunny, {temp} degrees {units}"

    return server


def build_alternating_server() -> MCPServer:
    """A v1 server whose `tools/list` answers the v1 and v2 lists in turn."""
    server = build_server("v1")
    v2 = build_server("v2")
    v1_list_tools = server.list_tools
    calls = 0

    async def list_tools():  # type: ignore[no-untyped-def]
        nonlocal calls
        calls += 1
        return await (v1_list_tools() if calls % 2 == 1 else v2.list_tools())

    # MCPServer's tools/list handler calls `self.list_tools()`.
    server.list_tools = list_tools  # type: ignore[method-assign]
    return server


async def serve(args: argparse.Namespace) -> None:
    server = build_server(args.tools)
    if args.transport == "sse":
        app = server.sse_app(host=HOST)
        path = "/sse"
    else:
        app = server.streamable_http_app(
            host=HOST,
            json_response=args.json_response,
            stateless_http=args.stateless,
        )
        path = "/mcp"

    # Bind here so `--port 0` works and the printed port is the real one.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((HOST, args.port))
    port = sock.getsockname()[1]

    config = uvicorn.Config(app, log_level="warning", lifespan="on")
    userver = uvicorn.Server(config)
    task = asyncio.create_task(userver.serve(sockets=[sock]))
    while not userver.started:
        if task.done():
            task.result()  # raises what stopped it
            raise SystemExit("server stopped before it started")
        await asyncio.sleep(0.02)
    print(f"READY http://{HOST}:{port}{path}", flush=True)
    await task


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--transport", choices=["streamable-http", "sse"], default="streamable-http")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument(
        "--stateless",
        action="store_true",
        help="Streamable HTTP stateless mode (no Mcp-Session-Id)",
    )
    parser.add_argument(
        "--json-response",
        action="store_true",
        help="answer POSTs with application/json instead of an SSE stream",
    )
    parser.add_argument(
        "--tools",
        choices=["v1", "v2", "alternate"],
        default="v1",
        help="the tool list: v1 (default), v2 (changed), alternate (v1 and v2 in turn)",
    )
    args = parser.parse_args()
    if args.transport == "sse" and (args.stateless or args.json_response):
        parser.error("--stateless and --json-response apply to --transport streamable-http only")
    try:
        asyncio.run(serve(args))
    except KeyboardInterrupt:
        pass
    sys.exit(0)


if __name__ == "__main__":
    main()
