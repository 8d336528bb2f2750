#!/usr/bin/env bash
# The README's test command: installs what the tests need, then runs every test.
#
#   bash scripts/test.sh
#
# Builds into ${CARGO_TARGET_DIR:-$HOME/.cache/mcpulse/target} (outside the clone, so a
# reused machine builds incrementally) and makes the Python virtualenv of the real OTLP
# clients and the Python MCP test server with scripts/test-deps.sh, which also installs
# the tansu Kafka broker (the Kafka tests find it through MCPULSE_TANSU) and the npm MCP
# server @modelcontextprotocol/server-everything (found through MCPULSE_NPM_PREFIX).
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
# Where scripts/test-deps.sh installs @modelcontextprotocol/server-everything (npm
# --prefix); the MCP prober tests run its dist/index.js with node.
MCPULSE_NPM_PREFIX="${MCPULSE_NPM_PREFIX:-$HOME/.cache/mcpulse/npm}"
export MCPULSE_NPM_PREFIX
echo "npm prefix: $MCPULSE_NPM_PREFIX" >&2

echo "== formatting" >&2
cargo fmt --all -- --check

echo "== tests" >&2
# The rmcp MCP test server (workspace member tests/rmcp-server) is a plain binary the
# prober tests start; `cargo test` alone does not build another package's binaries.
cargo build --locked -p mcpulse-rmcp-test-server
cargo test --workspace --all-targets --locked -- --test-threads="${MCPULSE_TEST_THREADS:-2}"
