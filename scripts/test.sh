#!/usr/bin/env bash
# The one test command: installs what the tests need on a fresh machine (Debian packages,
# a Python venv with the test peers from PyPI, locally built Docker images), then runs
# formatting, lints, the Rust tests and the Python tests. Every peer a test needs is set
# up here; a missing peer makes a test fail, never skip.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
export KGENV_REPO="$ROOT"
export KGENV_VENV="${KGENV_VENV:-$ROOT/.venv}"
# The test wheel is built unoptimised: it then shares its dependency builds with
# `cargo test` (a release wheel would compile every dependency once more on a cold
# machine). Benchmarks build their own release wheel.
export KGENV_PY_PROFILE="${KGENV_PY_PROFILE:-dev}"

echo "== setup"
for s in scripts/setup/*.sh; do
  echo "-- $s"
  # shellcheck source=/dev/null
  . "$s"
done

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "== cargo test"
cargo test --workspace --locked --no-fail-fast
echo "== examples (examples/*.rs, on the simulated backends)"
for example in plan up data_pull; do
  echo "-- $example"
  cargo run --locked --quiet -p kgenv-core --example "$example"
done
if [ -d tests/python ] && ls tests/python/test_*.py >/dev/null 2>&1; then
  echo "== pytest"
  "$KGENV_VENV/bin/python" -m pytest -q tests/python
fi
