#!/usr/bin/env bash
# Builds the end-to-end tests' stand-in for Kaggle's image and tags it as $1 (run by
# scripts/setup/80-e2e.sh when the tag is missing; needs root, debootstrap, Docker, Debian's
# mirror and PyPI). See 80-e2e.sh for what is in it and why.
#
# The network is reached only from this machine (debootstrap, apt-get download, the test
# venv's pip), never from inside the chroot: the chroot installs from the wheels downloaded
# here with --no-index, so proxies and CA bundles configured on this machine just work.
set -euo pipefail
tag=$1
: "${KGENV_VENV:?KGENV_VENV must point at the test venv}"
jupyter_server_version=${KGENV_E2E_JUPYTER_SERVER_VERSION:?}
tabulate_version=${KGENV_E2E_TABULATE_VERSION:?}
# shellcheck source=/dev/null
suite=$(. /etc/os-release && echo "${VERSION_CODENAME:-bookworm}")
mirror=${KGENV_E2E_DEBIAN_MIRROR:-http://deb.debian.org/debian}
work=$(mktemp -d /var/tmp/kgenv-e2e-image.XXXXXX)
trap 'rm -rf "$work"' EXIT
root=$work/rootfs
echo "building $tag: debootstrap --variant=minbase $suite from $mirror (a few minutes, once)"
if ! debootstrap --variant=minbase --include=python3,python3-pip,git,openssh-client \
  "$suite" "$root" "$mirror" >"$work/debootstrap.log" 2>&1; then
  tail -n 40 "$work/debootstrap.log" >&2
  exit 1
fi
pyver=$(chroot "$root" python3 -c 'import sys; print("%d.%d" % sys.version_info[:2])')
# Requires-Python is checked against the image's exact version (Debian's, often older).
pyfull=$(chroot "$root" python3 -c 'import sys; print("%d.%d.%d" % sys.version_info[:3])')
hostver=$("$KGENV_VENV/bin/python" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
if [ "$pyver" != "$hostver" ]; then
  echo "the image's python is $pyver but the test venv's is $hostver: wheels would not match" >&2
  exit 1
fi
# jupyter_server and its dependencies, downloaded here, installed in the chroot offline.
mkdir -p "$root/tmp/wheelhouse"
"$KGENV_VENV/bin/pip" download -q --only-binary=:all: --python-version "$pyfull" -d "$root/tmp/wheelhouse" \
  "jupyter_server==$jupyter_server_version"
env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root PIP_ROOT_USER_ACTION=ignore chroot "$root" \
  pip3 install -q --no-index --find-links /tmp/wheelhouse --no-cache-dir \
  --break-system-packages --no-warn-script-location "jupyter_server==$jupyter_server_version"
rm -rf "$root/tmp/wheelhouse"
# Offline extras: one wheel for pip, one .deb in a flat apt repository (the only apt source).
wheels=/opt/kgenv-e2e/wheels
mkdir -p "$root$wheels"
"$KGENV_VENV/bin/pip" download -q --no-deps --only-binary=:all: --python-version "$pyfull" -d "$root$wheels" \
  "tabulate==$tabulate_version"
debs=/opt/kgenv-e2e/debs
mkdir -p "$root$debs"
(cd "$root$debs" && apt-get download -q -o APT::Sandbox::User=root tree >/dev/null)
(
  cd "$root$debs"
  for deb in ./*.deb; do
    dpkg-deb -f "$deb"
    echo "Filename: $deb"
    echo "Size: $(stat -c %s "$deb")"
    echo "SHA256: $(sha256sum "$deb" | cut -d' ' -f1)"
    echo
  done >Packages
  {
    echo "Date: $(date -Ru)"
    echo "SHA256:"
    echo " $(sha256sum Packages | cut -d' ' -f1) $(stat -c %s Packages) Packages"
  } >Release
)
rm -f "$root"/etc/apt/sources.list "$root"/etc/apt/sources.list.d/*
echo "deb [trusted=yes] file:$debs ./" >"$root/etc/apt/sources.list.d/kgenv-e2e.list"
# The extras work offline with the real tools: prove it before tagging.
env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root chroot "$root" sh -c \
  "apt-get update -q >/dev/null && apt-get install -s -q tree >/dev/null" \
  || { echo "the local apt repository does not work" >&2; exit 1; }
# git and ssh for the GitHub key test (`git ls-remote` over ssh from inside the container).
env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root chroot "$root" sh -c \
  "git --version >/dev/null && ssh -V 2>/dev/null" \
  || { echo "git or ssh does not run in the image" >&2; exit 1; }
# Keep it small: no caches, docs or apt lists.
rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/cache/apt/*.bin \
  "$root"/var/lib/apt/lists/* "$root"/usr/share/doc/* "$root"/usr/share/man/* \
  "$root"/usr/share/locale/* "$root"/root/.cache
find "$root/usr" -name __pycache__ -type d -prune -exec rm -rf {} +
tar -C "$root" -c . | docker import \
  --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --change 'ENV PIP_NO_INDEX=1' \
  --change "ENV PIP_FIND_LINKS=$wheels" \
  --change 'ENV PIP_BREAK_SYSTEM_PACKAGES=1' \
  --change 'CMD ["/bin/bash"]' \
  - "$tag" >/dev/null
echo "built $tag ($(docker image inspect --format '{{.Size}}' "$tag" | awk '{printf "%.0f MB", $1/1e6}'))"
