#!/usr/bin/env bash
# The flake hunt (issue 18): runs the Rust and Python test suites N times in a row (default 5)
# while `stress` keeps every core busy, then prints each run's wall time and the tests that
# failed in it. A test that fails in any run is a flake to fix; the target is none.
#
#   scripts/stress.sh [RUNS]
#
# It sets the test peers up the way scripts/test.sh does (fast when they are there) but
# skips fmt and clippy: they do not flake. Logs: target/stress/run-N.log.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
RUNS=${1:-5}
export KGENV_REPO="$ROOT"
export KGENV_VENV="${KGENV_VENV:-$ROOT/.venv}"
export KGENV_PY_PROFILE="${KGENV_PY_PROFILE:-dev}"

for s in scripts/setup/*.sh; do
  # shellcheck source=/dev/null
  . "$s" >/dev/null
done
command -v stress >/dev/null || apt-get install -y -qq stress >/dev/null

out="$ROOT/target/stress"
mkdir -p "$out"
# Build first, outside the timed runs, so run 1 measures the suite and not the compiler.
if ! cargo test --workspace --locked --no-run >"$out/build.log" 2>&1; then
  tail -n 40 "$out/build.log"
  echo "the tests do not build (all of it: $out/build.log)" >&2
  exit 1
fi

stress --cpu "$(nproc)" >/dev/null 2>&1 &
stress_pid=$!
trap 'kill "$stress_pid" 2>/dev/null || true' EXIT

total_failed=0
summary=()
for run in $(seq 1 "$RUNS"); do
  log="$out/run-$run.log"
  start=$(date +%s)
  rc=0
  cargo test --workspace --locked --no-fail-fast >"$log" 2>&1 || rc=$?
  "$KGENV_VENV/bin/python" -m pytest -q tests/python >>"$log" 2>&1 || rc=$?
  secs=$(($(date +%s) - start))
  # cargo's "test NAME ... FAILED" lines and pytest's "FAILED path::test" lines.
  mapfile -t failed < <(grep -E '^test .* \.\.\. FAILED$|^FAILED tests/' "$log" | sort -u)
  # A run that failed with no failing test named (a build error, a crashed binary) counts.
  if [ "$rc" -ne 0 ] && [ "${#failed[@]}" -eq 0 ]; then failed=("exit $rc without a named test: $log"); fi
  total_failed=$((total_failed + ${#failed[@]}))
  line="run $run: $((secs / 60))m$((secs % 60))s, ${#failed[@]} failed"
  summary+=("$line")
  echo "$line"
  for f in "${failed[@]}"; do echo "    $f"; done
done

echo "== under stress --cpu $(nproc), $RUNS runs"
printf '%s\n' "${summary[@]}"
echo "failed tests in all runs: $total_failed"
[ "$total_failed" -eq 0 ]
