# Sourced by scripts/test.sh: the end-to-end tests' stand-in for Kaggle's image (issue 9).
#
# Kaggle's docker-python image cannot be pulled here (no registry), so the e2e tests run
# kgenv against a small image built on this machine from Debian's own packages:
#   - a Debian rootfs made with `debootstrap --variant=minbase` (python3, pip), plus the
#     pinned jupyter_server from PyPI pip-installed inside it: the container really runs
#     `jupyter server` with the config kgenv writes;
#   - git and openssh-client, as in Kaggle's image: the GitHub key test runs
#     `git ls-remote` over ssh inside the container (recipe 2);
#   - extras installed offline, with the real tools: a local flat apt repository holding
#     one small Debian package (`tree`, downloaded from the host's apt mirror) is the only
#     apt source, and pip is pointed at a local wheel directory holding one wheel
#     (`tabulate`) with PIP_NO_INDEX/PIP_FIND_LINKS; so kgenv's build-with-extras Dockerfile
#     (`apt-get update && apt-get install …`, `pip install …`) runs unchanged;
#   - imported with `docker import` and tagged; the tag names the recipe, so a warm run finds
#     it and skips all of this. Bump KGENV_E2E_RECIPE when the recipe changes.
# The build itself is scripts/e2e-image.sh (a script of its own, so `set -e` holds).
# Exports KGENV_E2E_BASE_IMAGE (the tag) for crates/kgenv-cli/tests/e2e_*.rs and
# crates/kgenv-core/tests/github_key_container.rs.
KGENV_E2E_RECIPE=2
KGENV_E2E_JUPYTER_SERVER_VERSION=2.21.1
KGENV_E2E_TABULATE_VERSION=0.9.0

need_apt debootstrap
KGENV_E2E_BASE_IMAGE="kgenv-e2e/kaggle-standin:r$KGENV_E2E_RECIPE-js$KGENV_E2E_JUPYTER_SERVER_VERSION"
if docker image inspect "$KGENV_E2E_BASE_IMAGE" >/dev/null 2>&1; then
  echo "e2e image $KGENV_E2E_BASE_IMAGE present"
elif ! KGENV_E2E_JUPYTER_SERVER_VERSION=$KGENV_E2E_JUPYTER_SERVER_VERSION \
  KGENV_E2E_TABULATE_VERSION=$KGENV_E2E_TABULATE_VERSION \
  bash "$KGENV_REPO/scripts/e2e-image.sh" "$KGENV_E2E_BASE_IMAGE"; then
  echo "ERROR: building the e2e image $KGENV_E2E_BASE_IMAGE failed (needs root, debootstrap and Debian's mirror)" >&2
  return 1
fi
export KGENV_E2E_BASE_IMAGE

# The gce e2e test logs in as kgenv's GCE user, as on a VM whose guest agent made the account
# from the `ssh-keys` metadata: a local account `kgenv` with no password (key login only,
# through the test's own sshd, whose authorized keys the Compute fake writes), in the docker
# group, with passwordless sudo like the default user on GCE's images.
need_apt sudo
if ! id kgenv >/dev/null 2>&1; then
  useradd --create-home --shell /bin/bash --password '*' kgenv
fi
if getent group docker >/dev/null && ! id -nG kgenv | grep -qw docker; then
  usermod -aG docker kgenv
fi
if [ ! -f /etc/sudoers.d/kgenv-e2e ]; then
  echo 'kgenv ALL=(ALL) NOPASSWD:ALL' >/etc/sudoers.d/kgenv-e2e
  chmod 0440 /etc/sudoers.d/kgenv-e2e
fi
