# Sourced by scripts/test.sh: the GCE tests check every request body kgenv sends against
# Google's own Compute v1 discovery document, as shipped in a pinned google-api-python-client
# wheel from PyPI (nothing is copied into the repo by hand). Exports its path as
# KGENV_COMPUTE_DISCOVERY for crates/kgenv-core/tests/gce_*.rs.
KGENV_GAPI_CLIENT_VERSION=2.202.0
_kgenv_gce_doc() {
  "$KGENV_VENV/bin/python" - <<'PY' 2>/dev/null
import importlib.util, pathlib
spec = importlib.util.find_spec("googleapiclient")
if spec and spec.origin:
    p = pathlib.Path(spec.origin).parent / "discovery_cache" / "documents" / "compute.v1.json"
    if p.is_file():
        print(p)
PY
}
if ! command -v python3 >/dev/null 2>&1 || ! python3 -c 'import venv, ensurepip' 2>/dev/null; then
  need_apt python3 python3-venv
fi
if [ ! -x "$KGENV_VENV/bin/python" ] \
  || ! "$KGENV_VENV/bin/pip" show google-api-python-client 2>/dev/null | grep -qx "Version: $KGENV_GAPI_CLIENT_VERSION"; then
  # Only the document is needed: skip the client's runtime dependencies.
  need_pip --no-deps "google-api-python-client==$KGENV_GAPI_CLIENT_VERSION"
fi
KGENV_COMPUTE_DISCOVERY="$(_kgenv_gce_doc)"
if [ -z "$KGENV_COMPUTE_DISCOVERY" ]; then
  echo "30-gce.sh: compute.v1.json not found in google-api-python-client $KGENV_GAPI_CLIENT_VERSION" >&2
  return 1
fi
export KGENV_COMPUTE_DISCOVERY
unset -f _kgenv_gce_doc
