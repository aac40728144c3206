#!/usr/bin/env bash
# Benchmark of the Python bindings: `import kgenv` time, and the overhead of calling
# no-op operations (a bare FFI call, building a spec, a plan with nothing to do, an `up`
# that finds everything in place) through `import kgenv` versus the same calls on
# kgenv-core directly. Prints the figures and the ratios; asserts nothing.
#
# Needs the wheel in $KGENV_VENV: run scripts/test.sh (or source scripts/setup/00-base.sh
# and scripts/setup/60-python.sh) first. Both sides are release builds on mock backends.
set -euo pipefail
cd "$(dirname "$0")/../.."
KGENV_VENV="${KGENV_VENV:-$PWD/.venv}"
rust=$(cargo bench --quiet -p kgenv-py --bench overhead | tail -n1)
"$KGENV_VENV/bin/python" scripts/bench/python.py "$rust"
