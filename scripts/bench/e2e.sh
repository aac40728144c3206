#!/usr/bin/env bash
# Benchmark: time from `kgenv up` to a logged-in Jupyter on the ssh target (a real sshd on
# 127.0.0.1 with this machine's Docker behind it, the stand-in Kaggle image cached), the
# no-op `up`, each step's share, and side by side the floor: `docker run` of the same image
# with the same Jupyter config, logged in to directly. Prints the figures and ratios.
# Usage: scripts/bench/e2e.sh [ROUNDS]   (needs what scripts/setup/80-e2e.sh sets up)
set -euo pipefail
cd "$(dirname "$0")/../.."
export KGENV_REPO=$PWD KGENV_VENV="${KGENV_VENV:-$PWD/.venv}"
# shellcheck source=/dev/null
. scripts/setup/00-base.sh
# shellcheck source=/dev/null
. scripts/setup/80-e2e.sh
export KGENV_E2E_BENCH_ROUNDS="${1:-3}"
cargo test -q -p kgenv-cli --test e2e_ssh bench_ssh_up_to_login -- --ignored --nocapture 2>&1 \
  | grep -v '^running\|^test \|^$\|test result'
