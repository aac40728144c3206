# Sourced by scripts/test.sh: what the Docker layer's tests need.
# - a Docker Engine that answers (Debian's docker.io; started here when no service runs it);
# - busybox-static: the tests build their images FROM scratch around it (no registry here);
# - docker-registry: a real registry on 127.0.0.1 for the pull tests (started by the tests).
need_apt busybox-static docker-registry

kgenv_docker_answers() { docker version --format '{{.Server.Version}}' >/dev/null 2>&1; }

if ! command -v docker >/dev/null 2>&1 || ! command -v dockerd >/dev/null 2>&1; then
  need_apt docker.io
fi
if ! kgenv_docker_answers; then
  echo "Docker Engine not answering: starting dockerd (log: /var/log/kgenv-dockerd.log)"
  if [ "$(id -u)" -eq 0 ]; then SUDO=; else SUDO=sudo; fi
  $SUDO sh -c 'nohup dockerd >/var/log/kgenv-dockerd.log 2>&1 &'
  for _ in $(seq 1 30); do kgenv_docker_answers && break; sleep 1; done
fi
if ! kgenv_docker_answers; then
  echo "ERROR: the Docker Engine does not answer (docker version failed)." >&2
  echo "The docker_* tests need it: install docker.io and start dockerd (see /var/log/kgenv-dockerd.log)." >&2
  return 1
fi
echo "Docker Engine $(docker version --format '{{.Server.Version}}') answers"
export KGENV_TEST_BUSYBOX="${KGENV_TEST_BUSYBOX:-/bin/busybox}"
