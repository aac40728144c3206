#!/usr/bin/env bash
# GCE benchmark: `up` of the GCE part with kgenv's real REST client against the fake Compute
# API (injected operation latencies). Prints wall ÷ critical-path time and HTTP requests per
# minute of operation time. Usage: scripts/bench/gce.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
export KGENV_VENV="${KGENV_VENV:-$PWD/.venv}"
# shellcheck source=/dev/null
. scripts/setup/00-base.sh
# shellcheck source=/dev/null
. scripts/setup/30-gce.sh
exec cargo bench -p kgenv-core --bench gce_up
