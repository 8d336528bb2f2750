#!/usr/bin/env bash
# Installs what mcpulse's test suite needs beyond the Rust toolchain, on a fresh
# Debian 12 machine (root, python3.11 with pip). Idempotent, and fast (well under
# a second) when everything is already in place.
#
#   1. Debian packages listed in APT_PACKAGES, only those `dpkg -s` says are missing
#      (`apt-get update` runs once, and only when something must be installed).
#   2. A Python virtualenv at ${MCPULSE_VENV:-$HOME/.cache/mcpulse/venv} (outside the
#      repo, so CI runs on the same machine reuse it) holding the pinned packages of
#      tests/python/requirements.txt. It is rebuilt only when that file (or the base
#      Python) changed: a hash of both is stored inside the venv. It includes moto's
#      server mode (the venv's bin/moto_server), the S3-compatible store of the
#      `s3://` archive test.
#   3. The tansu Kafka-protocol broker (crates.io), for the Kafka end-to-end tests, at
#      ${MCPULSE_TOOLS:-$HOME/.cache/mcpulse/tools}/bin/tansu, built with `cargo install`
#      (in its own target dir, so it does not disturb the workspace build) only when it
#      is missing or reports another version than TANSU_VERSION. The first build takes
#      a while (~15-25 minutes on 2 cores); later runs reuse it.
#   4. The npm package @modelcontextprotocol/server-everything (the MCP reference test
#      server, for the prober's tests) at EVERYTHING_VERSION, installed with
#      `npm install --prefix ${MCPULSE_NPM_PREFIX:-$HOME/.cache/mcpulse/npm}` (no global
#      install) only when that version is not already there. Needs node >= 18 and npm on
#      PATH; the script stops with an error saying so when they are missing.
#
# Use either way:
#   MCPULSE_PYTHON="$(bash scripts/test-deps.sh)"   # stdout is only the venv's python
#   source scripts/test-deps.sh                      # exports MCPULSE_PYTHON, MCPULSE_TANSU
# The tansu binary's path is not printed: it is always
# ${MCPULSE_TOOLS:-$HOME/.cache/mcpulse/tools}/bin/tansu (scripts/test.sh exports it as
# MCPULSE_TANSU); nor is the npm prefix (scripts/test.sh exports it as
# MCPULSE_NPM_PREFIX; the server's entry script is
# $MCPULSE_NPM_PREFIX/node_modules/@modelcontextprotocol/server-everything/dist/index.js).
# Progress goes to stderr. Env knobs: MCPULSE_VENV (venv dir),
# MCPULSE_BASE_PYTHON (interpreter to build the venv from; default python3.11, else
# python3 >= 3.10), MCPULSE_TOOLS (where tansu is installed), MCPULSE_SKIP_TANSU=1 (skip
# step 3, e.g. for a quick run without the Kafka tests), MCPULSE_NPM_PREFIX (where
# server-everything is installed), MCPULSE_SKIP_NPM=1 (skip step 4).

# Sourced: run this file as a child process (so its `set -e` and `exit` cannot touch
# the caller's shell) and export the interpreter path it prints.
if [[ "${BASH_SOURCE[0]}" != "${0}" ]]; then
    if MCPULSE_PYTHON="$(bash "${BASH_SOURCE[0]}")" && [[ -n "${MCPULSE_PYTHON}" ]]; then
        export MCPULSE_PYTHON
        export MCPULSE_TANSU="${MCPULSE_TOOLS:-${HOME}/.cache/mcpulse/tools}/bin/tansu"
        export MCPULSE_NPM_PREFIX="${MCPULSE_NPM_PREFIX:-${HOME}/.cache/mcpulse/npm}"
        return 0
    fi
    echo "test-deps: failed to install the test dependencies" >&2
    unset MCPULSE_PYTHON
    return 1
fi

set -euo pipefail

# Debian packages the tests need (the venv step below adds pythonX.Y-venv by itself
# when the base Python cannot create a venv):
# - the bundled librdkafka build of the `rdkafka` crate (and the tansu build below):
#   a C/C++ toolchain and make, zlib and OpenSSL headers, pkg-config to find them.
# - Prometheus (scrapes /metrics and sends alerts to /api/v2/alerts in the tests) and
#   Prometheus Alertmanager (the baseline of the notification benchmark).
APT_PACKAGES=(g++ make zlib1g-dev libssl-dev pkg-config prometheus prometheus-alertmanager postgresql-client)

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
REQUIREMENTS="${REPO_ROOT}/tests/python/requirements.txt"
VENV="${MCPULSE_VENV:-${HOME}/.cache/mcpulse/venv}"
STAMP="${VENV}/.mcpulse-requirements.sha256"
TOOLS="${MCPULSE_TOOLS:-${HOME}/.cache/mcpulse/tools}"
TANSU_VERSION="0.6.0"
TANSU_FEATURES="dynostore"
NPM_PREFIX="${MCPULSE_NPM_PREFIX:-${HOME}/.cache/mcpulse/npm}"
EVERYTHING_PACKAGE="@modelcontextprotocol/server-everything"
EVERYTHING_VERSION="2026.8.31"

log() { echo "test-deps: $*" >&2; }
die() { log "error: $*"; exit 1; }

# ---------------------------------------------------------------------------
# Base Python: >= 3.10 (the OpenTelemetry packages require it). One call per
# candidate gives its real path (not a pyenv shim), X.Y and full version.
pick_python() {
    local candidates=() c
    if [[ -n "${MCPULSE_BASE_PYTHON:-}" ]]; then
        candidates=("${MCPULSE_BASE_PYTHON}")
    else
        candidates=(python3.11 python3)
    fi
    for c in "${candidates[@]}"; do
        command -v "$c" >/dev/null 2>&1 || continue
        "$c" -c '
import sys
if sys.version_info < (3, 10):
    sys.exit(1)
print(sys.executable)
print("%d.%d" % sys.version_info[:2])
print(sys.version.replace("\n", " "))
' 2>/dev/null && return 0
    done
    return 1
}
PY_INFO="$(pick_python)" || die "no Python >= 3.10 found (tried ${MCPULSE_BASE_PYTHON:-python3.11 python3})"
{ read -r BASE_PYTHON; read -r BASE_PY_VERSION; read -r BASE_PY_FULL_VERSION; } <<<"${PY_INFO}"

# Debian's own python3.X ships `venv` without ensurepip unless pythonX.Y-venv is
# installed; a pyenv or python.org build has it already.
if ! "${BASE_PYTHON}" -c 'import ensurepip, venv' >/dev/null 2>&1; then
    APT_PACKAGES+=("python${BASE_PY_VERSION}-venv")
fi

# ---------------------------------------------------------------------------
# 1. Debian packages, only the missing ones.
install_apt_packages() {
    local missing=() p
    for p in "$@"; do
        dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
    done
    ((${#missing[@]} == 0)) && return 0
    command -v apt-get >/dev/null 2>&1 || die "missing Debian packages (${missing[*]}) and no apt-get"
    local as_root=()
    if [[ "$(id -u)" != 0 ]]; then
        command -v sudo >/dev/null 2>&1 || die "need root to install: ${missing[*]}"
        as_root=(sudo)
    fi
    log "installing Debian packages: ${missing[*]}"
    "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
    "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
}
if ((${#APT_PACKAGES[@]} > 0)); then
    install_apt_packages "${APT_PACKAGES[@]}"
fi

# ---------------------------------------------------------------------------
# 2. The Python virtualenv.
[[ -f "${REQUIREMENTS}" ]] || die "missing ${REQUIREMENTS}"

# What the venv was built from: the requirements and the exact base interpreter.
want_stamp() {
    {
        sha256sum <"${REQUIREMENTS}" | cut -d' ' -f1
        echo "${BASE_PYTHON}"
        echo "${BASE_PY_FULL_VERSION}"
    } | sha256sum | cut -d' ' -f1
}
WANT="$(want_stamp)"
VENV_PY="${VENV}/bin/python"

venv_is_current() {
    [[ -f "${STAMP}" && "$(cat "${STAMP}")" == "${WANT}" ]] &&
        [[ -x "${VENV_PY}" ]] && "${VENV_PY}" -c '' >/dev/null 2>&1
}

if venv_is_current; then
    log "venv up to date: ${VENV}"
else
    mkdir -p "$(dirname "${VENV}")"
    # Serialize concurrent runs (two CI jobs on one machine) on a lock beside the venv.
    exec 9>"${VENV}.lock"
    if command -v flock >/dev/null 2>&1; then flock 9; fi
    if venv_is_current; then # another run built it while we waited
        log "venv up to date: ${VENV}"
    else
        log "building venv ${VENV} from ${BASE_PYTHON} (Python ${BASE_PY_VERSION})"
        rm -f "${STAMP}"
        "${BASE_PYTHON}" -m venv --clear "${VENV}" >&2
        "${VENV_PY}" -m pip install --quiet --disable-pip-version-check --no-input \
            --prefer-binary -r "${REQUIREMENTS}" >&2
        # Fail here, not in the first test, if the exporters cannot be imported.
        "${VENV_PY}" -c '
import opentelemetry.sdk.trace
import opentelemetry.exporter.otlp.proto.grpc.trace_exporter
import opentelemetry.exporter.otlp.proto.http.trace_exporter
import opentelemetry.exporter.otlp.json.http.trace_exporter
import opentelemetry.proto.collector.trace.v1.trace_service_pb2
import confluent_kafka
import mcp.server.mcpserver
import mcp.client
import mcp.server._otel  # spans of the SDK itself (tests/python/instrumented_mcp.py)
import uvicorn
import boto3
import moto.server  # `moto_server`: the S3-compatible server of tests/s3_archive.rs
import duckdb, numpy, pyarrow  # the baseline of bench-queries (and its smoke test)
' >&2
        echo "${WANT}" >"${STAMP}"
        log "venv ready"
    fi
    exec 9>&-
fi

# ---------------------------------------------------------------------------
# 3. The tansu broker.
TANSU="${TOOLS}/bin/tansu"

# Whether ${TANSU} runs and reports TANSU_VERSION (`tansu --version` prints "tansu X.Y.Z").
tansu_is_current() {
    [[ -x "${TANSU}" ]] || return 1
    local reported
    reported="$("${TANSU}" --version 2>/dev/null)" || return 1
    [[ "${reported}" == *" ${TANSU_VERSION}" ]]
}

if [[ "${MCPULSE_SKIP_TANSU:-0}" == 1 ]]; then
    log "skipping tansu (MCPULSE_SKIP_TANSU=1)"
elif tansu_is_current; then
    log "tansu ${TANSU_VERSION} present: ${TANSU}"
else
    command -v cargo >/dev/null 2>&1 || die "cargo is needed to install tansu"
    mkdir -p "${TOOLS}"
    # Serialize concurrent runs, like the venv.
    exec 8>"${TOOLS}/tansu.lock"
    if command -v flock >/dev/null 2>&1; then flock 8; fi
    if tansu_is_current; then
        log "tansu ${TANSU_VERSION} present: ${TANSU}"
    else
        log "installing tansu ${TANSU_VERSION} into ${TOOLS} (cargo install; takes a while the first time)"
        CARGO_TARGET_DIR="${MCPULSE_TANSU_TARGET:-${HOME}/.cache/mcpulse/tansu-target}" \
            cargo install tansu --version "${TANSU_VERSION}" --locked \
            --features "${TANSU_FEATURES}" --root "${TOOLS}" --force >&2
        tansu_is_current || die "tansu installed at ${TANSU} but does not report version ${TANSU_VERSION}"
        log "tansu ready: ${TANSU}"
    fi
    exec 8>&-
fi

# ---------------------------------------------------------------------------
# 4. @modelcontextprotocol/server-everything (npm).
EVERYTHING_DIR="${NPM_PREFIX}/node_modules/${EVERYTHING_PACKAGE}"

# Whether the installed package is EVERYTHING_VERSION with its entry script in place
# (read with plain shell tools: no node start-up on the fast path).
everything_is_current() {
    [[ -f "${EVERYTHING_DIR}/package.json" && -f "${EVERYTHING_DIR}/dist/index.js" ]] &&
        grep -q "\"version\": *\"${EVERYTHING_VERSION}\"" "${EVERYTHING_DIR}/package.json"
}

if [[ "${MCPULSE_SKIP_NPM:-0}" == 1 ]]; then
    log "skipping ${EVERYTHING_PACKAGE} (MCPULSE_SKIP_NPM=1)"
elif everything_is_current; then
    log "${EVERYTHING_PACKAGE} ${EVERYTHING_VERSION} present: ${EVERYTHING_DIR}"
else
    command -v node >/dev/null 2>&1 ||
        die "node is not installed: the MCP prober tests need Node.js >= 18 and npm (e.g. apt-get install nodejs npm), or set MCPULSE_SKIP_NPM=1"
    command -v npm >/dev/null 2>&1 ||
        die "npm is not installed: the MCP prober tests need Node.js >= 18 and npm (e.g. apt-get install npm), or set MCPULSE_SKIP_NPM=1"
    node -e 'process.exit(parseInt(process.versions.node, 10) >= 18 ? 0 : 1)' ||
        die "node $(node --version) is too old: ${EVERYTHING_PACKAGE} needs Node.js >= 18"
    mkdir -p "${NPM_PREFIX}"
    exec 7>"${NPM_PREFIX}/.install.lock"
    if command -v flock >/dev/null 2>&1; then flock 7; fi
    if everything_is_current; then
        log "${EVERYTHING_PACKAGE} ${EVERYTHING_VERSION} present: ${EVERYTHING_DIR}"
    else
        log "installing ${EVERYTHING_PACKAGE}@${EVERYTHING_VERSION} into ${NPM_PREFIX} (npm)"
        npm install --prefix "${NPM_PREFIX}" --no-audit --no-fund --no-update-notifier \
            --loglevel=error "${EVERYTHING_PACKAGE}@${EVERYTHING_VERSION}" >&2
        everything_is_current ||
            die "npm installed ${EVERYTHING_PACKAGE} but ${EVERYTHING_DIR} is not version ${EVERYTHING_VERSION}"
        log "${EVERYTHING_PACKAGE} ready: ${EVERYTHING_DIR}/dist/index.js"
    fi
    exec 7>&-
fi

# Last (and only) line on stdout: the interpreter the tests should run.
echo "${VENV_PY}"
