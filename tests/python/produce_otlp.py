#!/usr/bin/env python3
"""Produce OTLP spans to a Kafka topic the way an OpenTelemetry Collector does.

Mimics the Collector's Kafka exporter with `encoding: otlp_proto` (the default): every
Kafka message value is one serialized `ExportTraceServiceRequest` protobuf; the message
has no key, or with --key trace-id the hex trace id (the exporter's
`partition_traces_by_id: true`, which puts the spans of one trace in one message), and
only the headers given with --header (the exporter adds none by itself). Uses a plain
librdkafka client (confluent_kafka.Producer, acks=all), no mcpulse code.

By default every message is sent in a record batch of its own (librdkafka
`batch.num.messages=1`): tansu 0.6.0's in-memory storage answers a Fetch at an offset
inside a multi-record batch with only the *later* batches (the rest of that batch is
skipped) and reports the latest offset as the last batch's base offset + 1. --batch lets
librdkafka batch as usual (for real Kafka brokers).

Message i (0 <= i < --messages) is one trace with --spans spans of service --service:
span 0 is the root (kind SERVER, "tools/call get_weather_{i%3}", MCP attributes
mcp.method.name, gen_ai.tool.name, mcp.session.id, jsonrpc.request.id, plus
mcpulse.test.run_id and mcpulse.test.seq), the others its children. Span ids are unique
(a random per-run prefix and a counter), timestamps are now. With --garbage N, N more
messages carry bytes that are not a protobuf request (same key style and headers).

Waits for the delivery report of every message and exits 0 only if all were delivered;
then prints ONE JSON line on stdout:

  {"topic": "...", "run_id": "...", "messages": N, "garbage": G, "delivered": N+G,
   "partitions": {"p": count, ...},
   "spans": [{"trace_id": hex32, "span_id": hex16, "message": i}, ...]}

Failures print to stderr and exit 1 (2 for bad arguments).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

from confluent_kafka import KafkaException, Producer
from confluent_kafka.admin import AdminClient, NewTopic
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, InstrumentationScope, KeyValue
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span

GARBAGE = b"\xff\x00 this is not an ExportTraceServiceRequest"


def kv(key: str, value) -> KeyValue:
    if isinstance(value, bool):
        return KeyValue(key=key, value=AnyValue(bool_value=value))
    if isinstance(value, int):
        return KeyValue(key=key, value=AnyValue(int_value=value))
    return KeyValue(key=key, value=AnyValue(string_value=str(value)))


class Ids:
    """Unique ids: a random prefix per run, then a counter."""

    def __init__(self) -> None:
        self.prefix = os.urandom(4)
        self.trace_prefix = os.urandom(8)
        self.n = 0

    def span_id(self) -> bytes:
        self.n += 1
        return self.prefix + self.n.to_bytes(4, "big")

    def trace_id(self) -> bytes:
        self.n += 1
        return self.trace_prefix + self.n.to_bytes(8, "big")


def build_request(i: int, spans: int, service: str, run_id: str, ids: Ids) -> tuple[bytes, bytes, list[dict]]:
    """One message: (encoded request, trace id, spans described for the summary)."""
    trace_id = ids.trace_id()
    tool = f"get_weather_{i % 3}"
    now = time.time_ns()
    out: list[Span] = []
    described: list[dict] = []
    root_id = b""
    for j in range(spans):
        span_id = ids.span_id()
        if j == 0:
            root_id = span_id
        span = Span(
            trace_id=trace_id,
            span_id=span_id,
            parent_span_id=b"" if j == 0 else root_id,
            name=f"tools/call {tool}" if j == 0 else f"step {j}",
            kind=Span.SPAN_KIND_SERVER if j == 0 else Span.SPAN_KIND_INTERNAL,
            start_time_unix_nano=now,
            end_time_unix_nano=now + 1_000_000 + j,
            attributes=[
                kv("mcp.method.name", "tools/call"),
                kv("gen_ai.tool.name", tool),
                kv("mcp.session.id", f"sess-{run_id}"),
                kv("jsonrpc.request.id", str(i)),
                kv("mcpulse.test.run_id", run_id),
                kv("mcpulse.test.seq", i),
            ],
        )
        out.append(span)
        described.append({"trace_id": trace_id.hex(), "span_id": span_id.hex(), "message": i})
    request = ExportTraceServiceRequest(
        resource_spans=[
            ResourceSpans(
                resource=Resource(attributes=[kv("service.name", service)]),
                scope_spans=[
                    ScopeSpans(
                        scope=InstrumentationScope(name="mcpulse.tests.produce_otlp", version="1"),
                        spans=out,
                    )
                ],
            )
        ]
    )
    return request.SerializeToString(), trace_id, described


def parse_header(text: str) -> tuple[str, bytes]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected k=v, got {text!r}")
    return key, value.encode()


def create_topic(bootstrap: str, topic: str, partitions: int, timeout: float) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap, "log_level": 3})
    if topic in admin.list_topics(timeout=timeout).topics:
        return
    futures = admin.create_topics([NewTopic(topic, num_partitions=partitions, replication_factor=1)], request_timeout=timeout)
    try:
        futures[topic].result(timeout)
    except KafkaException as exc:
        if "TOPIC_ALREADY_EXISTS" not in str(exc):
            raise


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bootstrap", required=True, help="host:port of a broker")
    ap.add_argument("--topic", required=True)
    ap.add_argument("--messages", type=int, default=1, help="requests to produce (default 1)")
    ap.add_argument("--spans", type=int, default=1, help="spans per request (default 1)")
    ap.add_argument("--service", default="mcpulse-test-server", help="resource service.name")
    ap.add_argument("--run-id", default=None, help="tags every span (default: random)")
    ap.add_argument("--key", choices=("none", "trace-id"), default="none", help="message key (default none)")
    ap.add_argument("--header", type=parse_header, action="append", default=[], metavar="K=V", help="message header, repeatable")
    ap.add_argument("--garbage", type=int, default=0, help="also produce N undecodable messages")
    ap.add_argument("--create", type=int, default=0, metavar="PARTITIONS", help="create the topic first if missing")
    ap.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for delivery (default 30)")
    ap.add_argument("--batch", action="store_true", help="let librdkafka put several messages in one record batch")
    args = ap.parse_args(argv)
    if args.messages < 0 or args.spans < 1 or args.garbage < 0:
        ap.error("--messages and --garbage must be >= 0, --spans >= 1")
    run_id = args.run_id or os.urandom(6).hex()

    try:
        if args.create > 0:
            create_topic(args.bootstrap, args.topic, args.create, args.timeout)
        else:
            admin = AdminClient({"bootstrap.servers": args.bootstrap, "log_level": 3})
            if args.topic not in admin.list_topics(timeout=args.timeout).topics:
                print(
                    f"produce_otlp: warning: topic {args.topic} does not exist (tansu does not create topics "
                    "on produce; pass --create PARTITIONS): delivery will likely time out",
                    file=sys.stderr,
                )
    except KafkaException as exc:
        print(f"produce_otlp: creating topic {args.topic}: {exc}", file=sys.stderr)
        return 1

    config = {
        "bootstrap.servers": args.bootstrap,
        "acks": "all",
        "enable.idempotence": False,
        "linger.ms": 5,
        "message.timeout.ms": int(args.timeout * 1000),
        "log_level": 3,
    }
    if not args.batch:
        config["batch.num.messages"] = 1
    producer = Producer(config)
    delivered = 0
    partitions: dict[str, int] = {}
    errors: list[str] = []

    def on_delivery(err, msg) -> None:
        nonlocal delivered
        if err is not None:
            errors.append(str(err))
            return
        delivered += 1
        p = str(msg.partition())
        partitions[p] = partitions.get(p, 0) + 1

    def send(value: bytes, trace_id: bytes) -> None:
        kwargs = {"value": value, "on_delivery": on_delivery}
        if args.key == "trace-id":
            kwargs["key"] = trace_id.hex().encode()
        if args.header:
            kwargs["headers"] = list(args.header)
        while True:
            try:
                producer.produce(args.topic, **kwargs)
                break
            except BufferError:  # local queue full: serve delivery reports, then retry
                producer.poll(0.1)
        producer.poll(0)

    ids = Ids()
    spans: list[dict] = []
    for i in range(args.messages):
        value, trace_id, described = build_request(i, args.spans, args.service, run_id, ids)
        spans.extend(described)
        send(value, trace_id)
    for _ in range(args.garbage):
        send(GARBAGE, ids.trace_id())

    total = args.messages + args.garbage
    remaining = producer.flush(args.timeout)
    if errors or remaining or delivered != total:
        print(
            f"produce_otlp: delivered {delivered} of {total} messages to {args.topic} "
            f"({remaining} still queued): {'; '.join(errors[:5]) or 'timeout'}",
            file=sys.stderr,
        )
        return 1
    print(
        json.dumps(
            {
                "topic": args.topic,
                "run_id": run_id,
                "messages": args.messages,
                "garbage": args.garbage,
                "delivered": delivered,
                "partitions": partitions,
                "spans": spans,
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
