#!/usr/bin/env python3
"""Read a Kafka topic from its beginning and print its messages as JSON.

Used by mcpulse's Kafka end-to-end tests (e.g. to look at the dead-letter topic); run it
with the venv python that scripts/test-deps.sh prints. A plain librdkafka client
(confluent_kafka.Consumer) that assigns itself every partition of --topic at the
beginning; it joins no group and commits nothing.

Reads until it has at least --min messages and has reached the high watermark of every
partition, or until --timeout seconds passed; then prints ONE JSON line on stdout and
exits 0 (also when fewer than --min messages arrived: the caller checks the count):

  {"topic": "...", "high_watermarks": {"p": n, ...},
   "messages": [{"partition": p, "offset": o, "timestamp_ms": t,
                 "key": str|null,            # UTF-8 (invalid bytes replaced)
                 "value_hex": "...",         # the value, hex
                 "value_text": str|null,     # the value as UTF-8 if it is valid UTF-8
                 "headers": [[k, v|null], ...]}, ...]}   # in order, values as UTF-8

Messages are sorted by partition, then offset. Failures (no such topic, broker
unreachable) print to stderr and exit 1 (2 for bad arguments).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import uuid

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, TopicPartition


def utf8(data: bytes | None) -> str | None:
    if data is None:
        return None
    return data.decode("utf-8", errors="replace")


def strict_utf8(data: bytes | None) -> str | None:
    if data is None:
        return None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bootstrap", required=True, help="host:port of a broker")
    ap.add_argument("--topic", required=True)
    ap.add_argument("--min", type=int, default=0, help="wait for at least this many messages (default 0)")
    ap.add_argument("--timeout", type=float, default=20.0, help="give up after this many seconds (default 20)")
    args = ap.parse_args(argv)
    if args.min < 0 or args.timeout <= 0:
        ap.error("--min must be >= 0 and --timeout > 0")

    consumer = Consumer(
        {
            "bootstrap.servers": args.bootstrap,
            # Required by the client; never used (assign() joins no group, nothing is committed).
            "group.id": f"read-topic-{uuid.uuid4().hex}",
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "enable.partition.eof": False,
            "log_level": 3,
        }
    )
    deadline = time.monotonic() + args.timeout
    try:
        md = consumer.list_topics(args.topic, timeout=max(1.0, min(10.0, args.timeout)))
        topic = md.topics.get(args.topic)
        if topic is None or topic.error is not None or not topic.partitions:
            reason = topic.error if topic is not None and topic.error is not None else "no partitions"
            print(f"read_topic: topic {args.topic} is not readable: {reason}", file=sys.stderr)
            return 1
        partitions = sorted(topic.partitions)
        consumer.assign([TopicPartition(args.topic, p, OFFSET_BEGINNING) for p in partitions])

        messages: list[dict] = []
        next_offset = {p: 0 for p in partitions}
        high: dict[int, int] = {}
        while True:
            for p in partitions:
                _low, hw = consumer.get_watermark_offsets(TopicPartition(args.topic, p), timeout=5.0, cached=False)
                high[p] = hw
            caught_up = all(next_offset[p] >= high[p] for p in partitions)
            if (caught_up and len(messages) >= args.min) or time.monotonic() >= deadline:
                break
            for msg in consumer.consume(num_messages=500, timeout=0.2):
                if msg.error() is not None:
                    raise KafkaException(msg.error())
                value = msg.value()
                messages.append(
                    {
                        "partition": msg.partition(),
                        "offset": msg.offset(),
                        "timestamp_ms": msg.timestamp()[1],
                        "key": utf8(msg.key()),
                        "value_hex": (value or b"").hex(),
                        "value_text": strict_utf8(value),
                        "headers": [[k, utf8(v)] for k, v in (msg.headers() or [])],
                    }
                )
                next_offset[msg.partition()] = msg.offset() + 1
    except KafkaException as exc:
        print(f"read_topic: reading {args.topic} from {args.bootstrap}: {exc}", file=sys.stderr)
        return 1
    finally:
        consumer.close()

    messages.sort(key=lambda m: (m["partition"], m["offset"]))
    print(
        json.dumps(
            {
                "topic": args.topic,
                "high_watermarks": {str(p): high.get(p, 0) for p in partitions},
                "messages": messages,
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
