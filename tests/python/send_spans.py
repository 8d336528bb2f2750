#!/usr/bin/env python3
"""Send MCP-shaped spans to an OTLP endpoint with the real OpenTelemetry Python SDK.

Used by mcpulse's Rust end-to-end tests (run it with the venv python that
scripts/test-deps.sh prints). Exits 0 only if every span was exported and the
receiver acknowledged it; then prints ONE JSON line on stdout describing what was
sent, for the test to match against what arrived:

  {"protocol": "...", "endpoint": "...", "service": "...", "run_id": "...", "sent": N,
   "spans": [{"trace_id": hex32, "span_id": hex16, "parent_span_id": hex16|null,
              "name": "...", "tool": "...", "seq": i, "error": bool}, ...]}

Span i (0 <= i < N): kind SERVER, name "tools/call get_weather_{i%3}", attributes
mcp.method.name, gen_ai.tool.name, mcp.session.id=sess-RUN_ID, mcp.protocol.version,
jsonrpc.request.id=str(i), network.transport=tcp, mcpulse.test.run_id=RUN_ID,
mcpulse.test.seq=i (int); status ERROR "boom" + error.type=tool_error when i % 5 == 0;
one event "tool.start" {step: 1}. Span 0 is the parent of all the others (one trace).
Failures print a message to stderr and exit 1 (2 for bad arguments).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import threading
from typing import Sequence
from urllib.parse import urlparse

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    SimpleSpanProcessor,
    SpanExporter,
    SpanExportResult,
)
from opentelemetry.trace import SpanKind, Status, StatusCode

PROTOCOLS = ("grpc", "http/protobuf", "http/json")
MCP_PROTOCOL_VERSION = "2025-06-18"


class RecordingExporter(SpanExporter):
    """Wraps the real exporter and records the result of every export call."""

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


def traces_url(endpoint: str) -> str:
    """http://host:4318 -> http://host:4318/v1/traces; a URL with a path is kept."""
    parsed = urlparse(endpoint)
    if parsed.path in ("", "/"):
        return endpoint.rstrip("/") + "/v1/traces"
    return endpoint


def make_exporter(protocol: str, endpoint: str, headers: dict[str, str], timeout: float) -> SpanExporter:
    if protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        # http:// means plaintext (insecure) gRPC, https:// TLS. Never go through a proxy.
        return OTLPSpanExporter(
            endpoint=endpoint,
            headers=headers,
            timeout=timeout,
            channel_options=(("grpc.enable_http_proxy", 0),),
        )
    if protocol == "http/protobuf":
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        return OTLPSpanExporter(endpoint=traces_url(endpoint), headers=headers, timeout=timeout)
    if protocol == "http/json":
        from opentelemetry.exporter.otlp.json.http.trace_exporter import OTLPSpanExporter

        return OTLPSpanExporter(endpoint=traces_url(endpoint), headers=headers, timeout=timeout)
    raise ValueError(protocol)


def emit_spans(tracer: trace.Tracer, count: int, run_id: str) -> list[dict]:
    sent: list[dict] = []

    def start(i: int, parent_ctx):
        tool = f"get_weather_{i % 3}"
        span = tracer.start_span(
            f"tools/call {tool}",
            context=parent_ctx,
            kind=SpanKind.SERVER,
            attributes={
                "mcp.method.name": "tools/call",
                "gen_ai.tool.name": tool,
                "mcp.session.id": f"sess-{run_id}",
                "mcp.protocol.version": MCP_PROTOCOL_VERSION,
                "jsonrpc.request.id": str(i),
                "network.transport": "tcp",
                "mcpulse.test.run_id": run_id,
                "mcpulse.test.seq": i,
            },
        )
        span.add_event("tool.start", attributes={"step": 1})
        error = i % 5 == 0
        if error:
            span.set_attribute("error.type", "tool_error")
            span.set_status(Status(StatusCode.ERROR, "boom"))
        sc = span.get_span_context()
        parent_id = None
        if parent_ctx is not None:
            parent_id = format(trace.get_current_span(parent_ctx).get_span_context().span_id, "016x")
        sent.append(
            {
                "trace_id": format(sc.trace_id, "032x"),
                "span_id": format(sc.span_id, "016x"),
                "parent_span_id": parent_id,
                "name": f"tools/call {tool}",
                "tool": tool,
                "seq": i,
                "error": error,
            }
        )
        return span

    if count <= 0:
        return sent
    root = start(0, None)
    root_ctx = trace.set_span_in_context(root)
    for i in range(1, count):
        start(i, root_ctx).end()
    root.end()
    return sent


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--protocol", choices=PROTOCOLS, required=True)
    ap.add_argument(
        "--endpoint",
        required=True,
        help="grpc: http://127.0.0.1:4317; http/*: http://127.0.0.1:4318 (/v1/traces is appended when no path is given)",
    )
    ap.add_argument("--token", default=None, help="sent as 'authorization: Bearer TOKEN'")
    ap.add_argument("--count", type=int, default=10, help="number of spans (default 10)")
    ap.add_argument("--service", default="mcpulse-test-server", help="resource service.name")
    ap.add_argument("--run-id", default="run", help="tags every span (mcpulse.test.run_id, mcp.session.id)")
    ap.add_argument("--timeout", type=float, default=5.0, help="exporter timeout in seconds, retries included (default 5)")
    ap.add_argument(
        "--processor",
        choices=("batch", "simple"),
        default="batch",
        help="batch: few requests of up to --batch-size spans (default); simple: one request per span",
    )
    ap.add_argument("--batch-size", type=int, default=512, help="max spans per request with --processor batch")
    args = ap.parse_args(argv)
    if args.count < 0:
        ap.error("--count must be >= 0")
    if args.batch_size < 1:
        ap.error("--batch-size must be >= 1")

    # Exporter diagnostics (connection refused, HTTP status, gRPC code) go to stderr.
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="send_spans: %(levelname)s %(name)s: %(message)s")
    # Loopback must never be proxied.
    no_proxy = ",".join(filter(None, [os.environ.get("NO_PROXY", ""), "127.0.0.1,localhost,::1"]))
    os.environ["NO_PROXY"] = os.environ["no_proxy"] = no_proxy

    headers = {"authorization": f"Bearer {args.token}"} if args.token is not None else {}
    recorder = RecordingExporter(make_exporter(args.protocol, args.endpoint, headers, args.timeout))

    resource = Resource.create({"service.name": args.service, "deployment.environment": "test"})
    provider = TracerProvider(resource=resource)
    if args.processor == "simple":
        processor = SimpleSpanProcessor(recorder)
    else:
        processor = BatchSpanProcessor(
            recorder,
            max_queue_size=max(2048, args.count),  # never drop a span for lack of room
            max_export_batch_size=args.batch_size,
            schedule_delay_millis=60_000,  # export on force_flush, not on a timer
            export_timeout_millis=int(args.timeout * 1000) + 1000,
        )
    provider.add_span_processor(processor)
    tracer = provider.get_tracer("mcpulse.tests.send_spans")

    sent = emit_spans(tracer, args.count, args.run_id)

    # Upper bound for all batches; each export gives up on its own after --timeout.
    batches = max(1, -(-args.count // args.batch_size))
    flushed = provider.force_flush(timeout_millis=int((args.timeout + 2) * 1000 * batches))
    provider.shutdown()

    problems = []
    if not flushed:
        problems.append("force_flush timed out")
    if recorder.failed:
        problems.append(f"{recorder.failed} span(s) failed to export")
    if recorder.exported_ok != args.count:
        problems.append(f"{recorder.exported_ok} of {args.count} span(s) acknowledged by the receiver")
    problems.extend(recorder.errors)
    if problems:
        print(
            f"send_spans: export to {args.endpoint} over {args.protocol} failed: " + "; ".join(problems),
            file=sys.stderr,
        )
        return 1

    print(
        json.dumps(
            {
                "protocol": args.protocol,
                "endpoint": args.endpoint,
                "service": args.service,
                "run_id": args.run_id,
                "sent": args.count,
                "spans": sent,
            },
            separators=(",", ":"),
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
