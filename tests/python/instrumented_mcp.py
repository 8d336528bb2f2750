#!/usr/bin/env python3
"""An MCP server and client on the official Python SDK (`mcp` 2.x) whose real
OpenTelemetry spans are exported over OTLP, for mcpulse's golden-signals test.

    instrumented_mcp.py --endpoint URL [--protocol http/protobuf|grpc] [--token TOKEN]
                        [--service NAME] [--client-service NAME]
                        [--client-endpoint URL] [--client-protocol http/protobuf|grpc]

`--endpoint` is the OTLP traces URL for http/protobuf (`http://HOST:PORT/v1/traces`) or
`http://HOST:PORT` for grpc; the client exports to `--client-endpoint` with
`--client-protocol` (default: the same as the server). The token is sent as
`authorization: Bearer TOKEN` (default: $MCPULSE_TOKEN).

What produces the spans: the SDK itself. `mcp` 2.x ships OpenTelemetry tracing on by
default (`mcp.server._otel.OpenTelemetryMiddleware` on the server, a span per
outgoing request in `mcp.shared.jsonrpc_dispatcher` on the client), through the global
tracer provider, with the semantic-convention attributes:

- server, one SERVER span per inbound request, named `METHOD [TOOL]`:
  `mcp.method.name`, `mcp.protocol.version`, `jsonrpc.request.id`; for `tools/call`
  also `gen_ai.operation.name=execute_tool` and `gen_ai.tool.name`. A tool that
  fails (raises, unknown tool, bad arguments: a result with `isError`) gets
  `error.type=tool_error` and status ERROR; a JSON-RPC error gets its code as
  `error.type`.
- client, one CLIENT span per outgoing request, `MCP send METHOD [TOOL]`:
  `mcp.method.name` and `jsonrpc.request.id` only (no tool name; `error.type` only
  for a JSON-RPC error, not for a tool result with `isError`).

(The PyPI package `opentelemetry-instrumentation-mcp`, traceloop's, up to 0.62.4 cannot
instrument `mcp` 2.x: its `instrument()` fails on `mcp.client.streamable_http.
streamablehttp_client`, renamed `streamable_http_client` in 2.x, and it patches
`mcp.shared.session`, which 2.x no longer has. Nor does it set `mcp.method.name` or
`gen_ai.tool.name`: only `traceloop.*` attributes on client-side `TOOL.tool` spans.)

This process runs the server (`MCPServer`, Streamable HTTP on 127.0.0.1, a free port)
with a tracer provider whose resource has `service.name=--service`; then it runs the
client as a child process (its own provider, `service.name=--client-service`, also
exported), which calls the tools in a fixed interleaved order:

- `add` 30 times, all succeed;
- `divide` 20 times, 5 of them by zero (the tool raises: a tool error);
- `echo` 10 times, all succeed;
- `missing` 3 times, a tool the server does not have (a tool error too).

Both processes export with a BatchSpanProcessor (100 ms delay) and also count every
span they end, by (kind, mcp.method.name, gen_ai.tool.name): calls, errors (status
ERROR or `error.type` set: mcpulse's rule) and the largest latency in microseconds.
When the client is done the server stops and flushes. On stdout, one JSON line:

    {"server": NAME, "client": NAME, "port": N,
     "tools": {"add": {"calls": 30, "failures": 0}, ...},   # what the client saw
     "server_spans": [{"kind": "SERVER", "method": ..., "tool": ... | null,
                       "calls": n, "errors": n, "max_us": n}, ...],
     "client_spans": [...],
     "exported": {"server": n, "client": n}}

It exits non-zero when any export was not acknowledged, or when the client's results
differ from the plan. Finishes in a few seconds.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Sequence
from typing import Any

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.trace import StatusCode

HOST = "127.0.0.1"

def plan() -> list[tuple[str, dict[str, Any], bool]]:
    """The client's calls in order: (tool, arguments, whether the call must fail)."""
    calls: list[tuple[str, dict[str, Any], bool]] = []
    for i in range(30):
        calls.append(("add", {"a": i, "b": 2 * i}, False))
        if i < 20:
            by_zero = i % 4 == 3  # 5 of 20
            calls.append(("divide", {"a": float(i + 1), "b": 0.0 if by_zero else 2.0}, by_zero))
        if i < 10:
            calls.append(("echo", {"text": f"hello {i}"}, False))
        if i < 3:
            calls.append(("missing", {}, True))
    return calls


class RecordingExporter(SpanExporter):
    """Wraps the OTLP exporter and counts acknowledged and failed spans."""

    def __init__(self, inner: SpanExporter) -> None:
        self.inner = inner
        self.lock = threading.Lock()
        self.exported_ok = 0
        self.failed = 0
        self.errors: list[str] = []

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        try:
            result = self.inner.export(spans)
        except Exception as exc:  # an exporter should not raise, but be sure
            result = SpanExportResult.FAILURE
            with self.lock:
                self.errors.append(f"{type(exc).__name__}: {exc}")
        with self.lock:
            if result == SpanExportResult.SUCCESS:
                self.exported_ok += len(spans)
            else:
                self.failed += len(spans)
        return result

    def shutdown(self) -> None:
        self.inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self.inner.force_flush(timeout_millis)


class CountingProcessor(SpanProcessor):
    """Counts ended spans by (kind, mcp.method.name, gen_ai.tool.name)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.series: dict[tuple[str, str | None, str | None], dict[str, int]] = {}

    def on_end(self, span: ReadableSpan) -> None:
        attrs = span.attributes or {}
        method = attrs.get("mcp.method.name")
        tool = attrs.get("gen_ai.tool.name")
        if method is None and tool is None:
            return  # not an MCP call: mcpulse does not count it either
        failed = span.status.status_code == StatusCode.ERROR or "error.type" in attrs
        latency_us = (span.end_time - span.start_time) // 1000
        key = (span.kind.name, method, tool)
        with self.lock:
            s = self.series.setdefault(key, {"calls": 0, "errors": 0, "max_us": 0})
            s["calls"] += 1
            s["errors"] += int(failed)
            s["max_us"] = max(s["max_us"], latency_us)

    def rows(self) -> list[dict[str, Any]]:
        with self.lock:
            return [
                {"kind": k, "method": m, "tool": t, **v}
                for (k, m, t), v in sorted(self.series.items(), key=lambda kv: str(kv[0]))
            ]


def make_exporter(protocol: str, endpoint: str, token: str | None) -> SpanExporter:
    headers = {"authorization": f"Bearer {token}"} if token else {}
    if protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        return OTLPSpanExporter(
            endpoint=endpoint,
            headers=headers,
            timeout=10,
            channel_options=(("grpc.enable_http_proxy", 0),),
        )
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    return OTLPSpanExporter(endpoint=endpoint, headers=headers, timeout=10)


def install_provider(
    service: str, protocol: str, endpoint: str, token: str | None
) -> tuple[TracerProvider, RecordingExporter, CountingProcessor]:
    """The global tracer provider, which the SDK's own spans go to."""
    provider = TracerProvider(resource=Resource.create({"service.name": service}))
    recorder = RecordingExporter(make_exporter(protocol, endpoint, token))
    counter = CountingProcessor()
    provider.add_span_processor(counter)
    provider.add_span_processor(BatchSpanProcessor(recorder, schedule_delay_millis=100))
    trace.set_tracer_provider(provider)
    return provider, recorder, counter


def finish(provider: TracerProvider, recorder: RecordingExporter) -> str | None:
    """Flushes and shuts down; an error message unless every span was acknowledged."""
    flushed = provider.force_flush(30_000)
    provider.shutdown()
    if not flushed:
        return "force_flush timed out"
    if recorder.failed or recorder.errors:
        return f"{recorder.failed} spans not acknowledged: {recorder.errors}"
    return None


# ---------------------------------------------------------------------------
# Client (child process).


async def run_client(url: str) -> dict[str, dict[str, int]]:
    from mcp import Client

    seen: dict[str, dict[str, int]] = {}
    async with Client(url) as client:
        for tool, arguments, must_fail in plan():
            result = await client.call_tool(tool, arguments)
            s = seen.setdefault(tool, {"calls": 0, "failures": 0})
            s["calls"] += 1
            s["failures"] += int(bool(result.is_error))
            if bool(result.is_error) != must_fail:
                raise SystemExit(f"{tool}({arguments}): is_error={result.is_error}, expected {must_fail}")
    return seen


def client_main(args: argparse.Namespace) -> int:
    provider, recorder, counter = install_provider(args.service, args.protocol, args.endpoint, args.token)
    tools = asyncio.run(run_client(args.url))
    error = finish(provider, recorder)
    if error:
        print(f"instrumented_mcp client: {error}", file=sys.stderr)
        return 1
    print(json.dumps({"tools": tools, "spans": counter.rows(), "exported": recorder.exported_ok}), flush=True)
    return 0


# ---------------------------------------------------------------------------
# Server (this process).


def build_server():  # type: ignore[no-untyped-def]
    from mcp.server.mcpserver import MCPServer

    server = MCPServer(name="mcpulse-instrumented", version="1.0.0", log_level="CRITICAL")

    @server.tool(description="Adds two integers.")
    def add(a: int, b: int) -> int:
        return a + b

    @server.tool(description="Divides a by b; fails on division by zero.")
    def divide(a: float, b: float) -> float:
        if b == 0:
            raise ZeroDivisionError("division by zero")
        return a / b

    @server.tool(description="Returns its input unchanged.")
    def echo(text: str) -> str:
        return text

    return server


async def serve_and_call(args: argparse.Namespace) -> tuple[int, dict[str, Any]]:
    import uvicorn

    app = build_server().streamable_http_app(host=HOST)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((HOST, 0))
    port = sock.getsockname()[1]
    userver = uvicorn.Server(uvicorn.Config(app, log_level="critical", lifespan="on"))
    task = asyncio.create_task(userver.serve(sockets=[sock]))
    try:
        while not userver.started:
            if task.done():
                task.result()
                raise SystemExit("server stopped before it started")
            await asyncio.sleep(0.02)

        env = dict(os.environ)
        if args.token:
            env["MCPULSE_TOKEN"] = args.token
        child = await asyncio.create_subprocess_exec(
            sys.executable,
            os.path.abspath(__file__),
            "--role",
            "client",
            "--url",
            f"http://{HOST}:{port}/mcp",
            "--endpoint",
            args.client_endpoint,
            "--protocol",
            args.client_protocol,
            "--service",
            args.client_service,
            env=env,
            stdout=subprocess.PIPE,
        )
        try:
            out, _ = await asyncio.wait_for(child.communicate(), timeout=60)
        except TimeoutError:
            child.kill()
            raise SystemExit("the client did not finish within 60s")
        if child.returncode != 0:
            raise SystemExit(f"the client failed (exit {child.returncode})")
        return port, json.loads(out.decode().strip().splitlines()[-1])
    finally:
        userver.should_exit = True
        await asyncio.wait_for(task, timeout=10)


def server_main(args: argparse.Namespace) -> int:
    provider, recorder, counter = install_provider(args.service, args.protocol, args.endpoint, args.token)
    port, client = asyncio.run(serve_and_call(args))
    error = finish(provider, recorder)
    if error:
        print(f"instrumented_mcp server: {error}", file=sys.stderr)
        return 1
    expected: dict[str, dict[str, int]] = {}
    for tool, _, must_fail in plan():
        s = expected.setdefault(tool, {"calls": 0, "failures": 0})
        s["calls"] += 1
        s["failures"] += int(must_fail)
    if client["tools"] != expected:
        print(f"instrumented_mcp: client saw {client['tools']}, planned {expected}", file=sys.stderr)
        return 1
    summary = {
        "server": args.service,
        "client": args.client_service,
        "port": port,
        "tools": client["tools"],
        "server_spans": counter.rows(),
        "client_spans": client["spans"],
        "exported": {"server": recorder.exported_ok, "client": client["exported"]},
    }
    print(json.dumps(summary), flush=True)
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--endpoint", required=True, help="OTLP traces URL (http/protobuf) or host:port URL (grpc)")
    ap.add_argument("--protocol", choices=["http/protobuf", "grpc"], default="http/protobuf")
    ap.add_argument("--token", default=os.environ.get("MCPULSE_TOKEN"), help="bearer token (default $MCPULSE_TOKEN)")
    ap.add_argument("--service", default="instrumented-mcp-server", help="service.name of the server's spans")
    ap.add_argument("--client-service", default=None, help="service.name of the client's spans (default SERVICE-client)")
    ap.add_argument("--client-endpoint", default=None, help="where the client exports (default ENDPOINT)")
    ap.add_argument("--client-protocol", choices=["http/protobuf", "grpc"], default=None)
    ap.add_argument("--role", choices=["server", "client"], default="server", help=argparse.SUPPRESS)
    ap.add_argument("--url", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.client_service is None:
        args.client_service = f"{args.service}-client"
    if args.client_endpoint is None:
        args.client_endpoint = args.endpoint
    if args.client_protocol is None:
        args.client_protocol = args.protocol
    if args.role == "client":
        return client_main(args)
    return server_main(args)


if __name__ == "__main__":
    sys.exit(main())
