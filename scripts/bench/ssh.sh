#!/usr/bin/env bash
# SSH benchmark: 100 short commands against a real OpenSSH sshd on 127.0.0.1 — kgenv over one
# connection vs 100 fresh `ssh` processes vs OpenSSH ControlMaster; prints times and ratios.
# KGENV_BENCH_N=500 scripts/bench/ssh.sh runs more commands.
set -euo pipefail
cd "$(dirname "$0")/../.."
. scripts/setup/00-base.sh
. scripts/setup/20-ssh.sh
exec cargo bench -p kgenv-core --bench ssh
