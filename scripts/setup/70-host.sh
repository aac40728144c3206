# Sourced by scripts/test.sh: peers of the host-setup tests (issue 6).
# - shellcheck (Debian): every rendered host script must pass it.
# - jupyter_server (PyPI, pinned 2.x): the real server checks kgenv's password hash, config
#   and certificate. Its interpreter is exported for the Rust tests.
need_apt shellcheck openssh-client
KGENV_JUPYTER_SERVER_VERSION=2.21.1
if ! "$KGENV_VENV/bin/python" -c "import jupyter_server, sys; sys.exit(jupyter_server.__version__ != '$KGENV_JUPYTER_SERVER_VERSION')" >/dev/null 2>&1; then
  need_pip "jupyter_server==$KGENV_JUPYTER_SERVER_VERSION"
fi
export KGENV_JUPYTER_PYTHON="$KGENV_VENV/bin/python"
