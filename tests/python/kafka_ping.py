#!/usr/bin/env python3
"""Check that a Kafka(-protocol) broker answers a real metadata request.

Used by the Rust test harness (tests/common/kafka.rs) to know when a broker it started
is ready; run it with the venv python that scripts/test-deps.sh prints. Retries a
Metadata request (confluent_kafka AdminClient.list_topics, which also negotiates
ApiVersions first) until it succeeds or --wait seconds passed. On success prints ONE JSON
line on stdout and exits 0:

  {"bootstrap": "...", "cluster_id": "..."|null, "controller_id": N,
   "brokers": [{"id": N, "host": "...", "port": N}, ...],
   "topics": {"name": partitions, ...}}

On failure prints the last error to stderr and exits 1 (2 for bad arguments).
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bootstrap", required=True, help="host:port of the broker")
    ap.add_argument("--wait", type=float, default=20.0, help="retry for up to this many seconds (default 20)")
    args = ap.parse_args(argv)

    admin = AdminClient(
        {
            "bootstrap.servers": args.bootstrap,
            "socket.timeout.ms": 2000,
            "reconnect.backoff.ms": 50,
            "reconnect.backoff.max.ms": 500,
            # librdkafka logs connection failures while the broker starts: keep them quiet.
            "log_level": 3,
        }
    )
    deadline = time.monotonic() + args.wait
    last_error = "no attempt"
    while True:
        remaining = deadline - time.monotonic()
        try:
            md = admin.list_topics(timeout=max(0.5, min(3.0, remaining)))
            if md.brokers:
                print(
                    json.dumps(
                        {
                            "bootstrap": args.bootstrap,
                            "cluster_id": md.cluster_id,
                            "controller_id": md.controller_id,
                            "brokers": [
                                {"id": b.id, "host": b.host, "port": b.port} for b in md.brokers.values()
                            ],
                            "topics": {name: len(t.partitions) for name, t in md.topics.items()},
                        }
                    )
                )
                return 0
            last_error = "metadata response without brokers"
        except KafkaException as exc:
            last_error = str(exc)
        if time.monotonic() >= deadline:
            print(f"kafka_ping: {args.bootstrap} did not answer a metadata request within {args.wait}s: {last_error}", file=sys.stderr)
            return 1
        time.sleep(0.1)


if __name__ == "__main__":
    sys.exit(main())
