# Sourced by scripts/test.sh: Debian packages every later setup step may need, once.
# Each later file adds its own packages with `need_apt`.
need_apt() {
  local missing=()
  for p in "$@"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
  if [ ${#missing[@]} -gt 0 ]; then
    echo "installing Debian packages: ${missing[*]}"
    if [ "$(id -u)" -eq 0 ]; then SUDO=; else SUDO=sudo; fi
    $SUDO apt-get update -q >/dev/null
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
  fi
}
# need_pip PACKAGE...: installs into the test venv (created on first use).
need_pip() {
  if [ ! -x "$KGENV_VENV/bin/python" ]; then
    python3 -m venv "$KGENV_VENV"
    "$KGENV_VENV/bin/pip" install -q --upgrade pip
  fi
  "$KGENV_VENV/bin/pip" install -q "$@"
}
