#!/usr/bin/env bash
# The README's test command: installs what the tests need, then runs every test.
#
#   bash scripts/test.sh
#
# Builds into ${CARGO_TARGET_DIR:-$HOME/.cache/mcpulse/target} (outside the clone, so a
# reused machine builds incrementally) and makes the Python virtualenv of the real OTLP
# clients with scripts/test-deps.sh, which also installs the tansu Kafka broker (the
# Kafka tests find it through MCPULSE_TANSU).
set -euo pipefail
cd "$(dirname "$0")/.."

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/mcpulse/target}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"

echo "== test dependencies" >&2
MCPULSE_PYTHON="$(bash scripts/test-deps.sh)"
export MCPULSE_PYTHON
echo "python: $MCPULSE_PYTHON" >&2
# Where scripts/test-deps.sh installs the broker (it prints only the python path).
MCPULSE_TANSU="${MCPULSE_TOOLS:-$HOME/.cache/mcpulse/tools}/bin/tansu"
export MCPULSE_TANSU
echo "tansu: $MCPULSE_TANSU" >&2

echo "== formatting" >&2
cargo fmt --all -- --check

echo "== tests" >&2
cargo test --workspace --all-targets --locked -- --test-threads="${MCPULSE_TEST_THREADS:-2}"
