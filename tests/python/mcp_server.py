#!/usr/bin/env python3
"""A small MCP server on the official Python SDK (`mcp` 2.x, `MCPServer`, formerly
FastMCP) for mcpulse's prober tests, on loopback only.

    mcp_server.py --transport streamable-http [--port N] [--stateless] [--json-response]
    mcp_server.py --transport sse [--port N]

`--port 0` (the default) binds a free port. Once the server accepts connections it
prints one line on stdout, `READY http://127.0.0.1:PORT/mcp` (Streamable HTTP) or
`READY http://127.0.0.1:PORT/sse` (HTTP+SSE, 2024-11-05), then serves until killed.
Logs go to stderr.

Three tools: `add` (a, b: integers), `echo` (text: string), `weather` (city: string,
units: "celsius" | "fahrenheit").
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


def build_server() -> MCPServer:
    server = MCPServer(name="mcpulse-test-python", version="1.0.0", log_level="WARNING")

    @server.tool(description="Adds two integers.")
    def add(a: int, b: int) -> int:
        return a + b

    @server.tool(description="Returns its input unchanged.")
    def echo(text: str) -> str:
        return text

    @server.tool(description="A made-up weather report for a city.")
    def weather(city: str, units: Literal["celsius", "fahrenheit"] = "celsius") -> str:
        temp = 21 if units == "celsius" else 70
        return f"{city}: sunny, {temp} degrees {units}"

    return server


async def serve(args: argparse.Namespace) -> None:
    server = build_server()
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
