#!/usr/bin/env bash
# Benchmark: N container inspects with kgenv's Docker layer vs the docker CLI, run side by
# side against one running container on this machine's engine, printing ratios.
#
#   A  kgenv, local socket                 vs  B  `docker inspect` CLI, local socket
#   F  kgenv over its own russh session    vs  D  `docker -H ssh://…` CLI, same sshd and engine
#      (one SSH login, one direct-streamlocal channel per pooled HTTP connection)
#   C  kgenv through OpenSSH `ssh -L` forwarding the engine socket (same shape as F, with
#      OpenSSH's client instead of russh: how russh's channels compare)
#   E  kgenv's tunnelled transport over an in-process forward (no SSH: transport cost only)
#
# The sshd is started here on a free 127.0.0.1 port with throwaway keys and a throwaway user
# in the docker group (needs root, openssh-server, docker CLI and engine, busybox-static).
# Usage: scripts/bench/docker.sh [N]
set -euo pipefail
cd "$(dirname "$0")/../.."
N=${1:-${N:-100}}
for c in docker sshd ssh ssh-keygen; do
  command -v "$c" >/dev/null 2>&1 || [ -x "/usr/sbin/$c" ] || { echo "missing $c (apt-get install docker.io openssh-server openssh-client)" >&2; exit 1; }
done
docker version >/dev/null 2>&1 || { echo "the Docker Engine does not answer" >&2; exit 1; }

tmp=$(mktemp -d)
chmod 755 "$tmp"
name="kgenv-bench-$$"
# The SSH side logs in as a throwaway user in the docker group with /bin/sh, like a VM's
# login user: root's shell startup files (pyenv and the like) would be timed otherwise.
user="kgb$$"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  sleep 0.2
  userdel "$user" >/dev/null 2>&1 || true
  docker rm -f "$name" >/dev/null 2>&1 || true
  docker rmi kgenv-bench/busybox >/dev/null 2>&1 || true
  rm -rf "$tmp"
}
trap cleanup EXIT

echo "== test container"
mkdir -p "$tmp/ctx"
cp "${KGENV_TEST_BUSYBOX:-/bin/busybox}" "$tmp/ctx/busybox"
printf 'FROM scratch\nCOPY busybox /bin/busybox\nRUN ["/bin/busybox","--install","-s","/bin"]\n' > "$tmp/ctx/Dockerfile"
docker build -q -t kgenv-bench/busybox "$tmp/ctx" >/dev/null 2>&1
docker run -d --name "$name" kgenv-bench/busybox sh -c 'while :; do sleep 1; done' >/dev/null

echo "== sshd on 127.0.0.1"
while :; do
  port=$(( 20000 + RANDOM % 30000 ))
  (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null || break
done
ssh-keygen -q -t ed25519 -N '' -f "$tmp/host_key"
ssh-keygen -q -t ed25519 -N '' -f "$tmp/client_key"
cp "$tmp/client_key.pub" "$tmp/authorized_keys"
chmod 644 "$tmp/authorized_keys"
mkdir -p "$tmp/home"
useradd -M -d "$tmp/home" -s /bin/sh -G docker "$user"
usermod -p '*' "$user"  # no password, but not locked (sshd refuses locked accounts)
chown "$user" "$tmp/home"
mkdir -p /run/sshd
cat > "$tmp/sshd_config" <<CFG
Port $port
ListenAddress 127.0.0.1
HostKey $tmp/host_key
AuthorizedKeysFile $tmp/authorized_keys
PidFile $tmp/sshd.pid
StrictModes no
PermitRootLogin prohibit-password
PasswordAuthentication no
UsePAM no
AllowStreamLocalForwarding yes
CFG
/usr/sbin/sshd -f "$tmp/sshd_config" -D -e 2>"$tmp/sshd.log" &
pids+=($!)
# ssh reads ~ from the password database, not $HOME: a wrapper on PATH gives it (and the
# docker CLI's ssh helper, which runs `ssh` from PATH) this benchmark's config.
mkdir -p "$tmp/bin"
printf '#!/bin/sh\nexec %s -F %s "$@"\n' "$(command -v ssh)" "$tmp/ssh_config" > "$tmp/bin/ssh"
chmod +x "$tmp/bin/ssh"
export PATH="$tmp/bin:$PATH"
printf '[127.0.0.1]:%s %s\n' "$port" "$(cut -d' ' -f1,2 "$tmp/host_key.pub")" > "$tmp/known_hosts"
cat > "$tmp/ssh_config" <<CFG
Host kgbench
  HostName 127.0.0.1
  Port $port
  User $user
  IdentityFile $tmp/client_key
  IdentitiesOnly yes
  UserKnownHostsFile $tmp/known_hosts
  StrictHostKeyChecking yes
CFG
for _ in $(seq 1 50); do ssh kgbench true 2>/dev/null && break; sleep 0.1; done
ssh kgbench true

echo "== build the kgenv side"
cargo build -q --release -p kgenv-core --example docker_bench
bench=target/release/examples/docker_bench

ms_since() { echo $(( ($(date +%s%N) - $1) / 1000000 )); }
cli_loop() { # cli_loop DOCKER_ARGS... : N `docker ... inspect` calls, prints total ms
  local t0; t0=$(date +%s%N)
  for _ in $(seq 1 "$N"); do "$@" inspect "$name" >/dev/null; done
  ms_since "$t0"
}
kgenv_ms() { sed -n 's/.*total_ms=\([0-9.]*\).*/\1/p'; }

echo "== A: kgenv, local socket"
A_line=$("$bench" --via local --container "$name" -n "$N"); echo "$A_line"; A=$(echo "$A_line" | kgenv_ms)
echo "== B: docker CLI, local socket"
B=$(cli_loop docker); echo "docker-cli local n=$N total_ms=$B"
echo "== C: kgenv through an OpenSSH-forwarded engine socket"
ssh -N -o ExitOnForwardFailure=yes -L "$tmp/fwd.sock:/var/run/docker.sock" kgbench &
pids+=($!)
for _ in $(seq 1 50); do [ -S "$tmp/fwd.sock" ] && break; sleep 0.1; done
C_line=$(DOCKER_HOST="unix://$tmp/fwd.sock" "$bench" --via local --container "$name" -n "$N"); echo "$C_line"; C=$(echo "$C_line" | kgenv_ms)
echo "== D: docker -H ssh:// CLI, same sshd"
D=$(cli_loop docker -H ssh://kgbench); echo "docker-cli ssh n=$N total_ms=$D"
echo "== E: kgenv tunnelled transport, in-process forward (no SSH)"
E_line=$("$bench" --via forward --container "$name" -n "$N"); echo "$E_line"; E=$(echo "$E_line" | kgenv_ms)
echo "== F: kgenv over its own russh session (direct-streamlocal), same sshd and user"
F_line=$("$bench" --via ssh --container "$name" -n "$N" --ssh "$user@127.0.0.1:$port" \
  --identity "$tmp/client_key" --known-hosts "$tmp/known_hosts"); echo "$F_line"
F=$(echo "$F_line" | kgenv_ms)
Fc=$(echo "$F_line" | sed -n 's/.*connect_ms=\([0-9.]*\).*/\1/p')

echo
echo "== ratios (N=$N inspects; higher = kgenv faster)"
awk -v a="$A" -v b="$B" -v c="$C" -v d="$D" -v e="$E" -v f="$F" -v fc="$Fc" 'BEGIN {
  printf "local:  docker CLI %.0f ms / kgenv %.1f ms = %.1fx\n", b, a, b / a
  printf "ssh:    docker -H ssh:// %.0f ms / kgenv over russh %.1f ms = %.1fx (%.1fx counting kgenv'"'"'s login, %.0f ms)\n", d, f, d / f, d / (f + fc), fc
  printf "ssh:    kgenv over ssh -L %.1f ms / kgenv over russh %.1f ms = %.2fx\n", c, f, c / f
  printf "ssh:    docker -H ssh:// %.0f ms / kgenv over ssh -L %.1f ms = %.1fx\n", d, c, d / c
  printf "tunnel transport without SSH: kgenv forward %.1f ms vs kgenv local %.1f ms = %.2fx\n", e, a, e / a
}'
