# Sourced by scripts/test.sh: the Python side — the test tools in $KGENV_VENV, and the
# `kgenv` wheel (crates/kgenv-py) built with maturin and installed into it, so
# tests/python runs against the package exactly as users install it.
#
# Warm runs are fast: tools are installed only when missing, and the wheel is rebuilt
# only when a source it is built from changed (a hash of them is kept in the venv).
# KGENV_PY_PROFILE=dev builds an unoptimised wheel (quicker to compile, slower to run).

# python3-venv: `python3 -m venv` on Debian; python3-dev: libpython for plain
# `cargo build` of the kgenv-py crate (maturin builds the wheel without linking it).
need_apt python3-venv python3-dev

kgenv_py_tools() {
  local py="$KGENV_VENV/bin/python"
  if [ -x "$py" ] && [ -x "$KGENV_VENV/bin/maturin" ] \
    && "$py" -c "import pytest, pytest_asyncio, mypy, nbclient, nbformat, ipykernel, jupyter_server" 2>/dev/null; then
    return 0
  fi
  need_pip "maturin>=1.9.4,<2" "pytest>=8" "pytest-asyncio>=0.24" "mypy>=1.11" \
    "nbclient>=0.10" "nbformat>=5.10" "ipykernel>=6.29" "jupyter_server>=2.14"
}

kgenv_py_sources_hash() {
  (
    cd "$KGENV_REPO" || exit 1
    find Cargo.toml Cargo.lock examples/kgenv.toml crates -type f -not -path '*/target/*' \
      \( -name '*.rs' -o -name '*.toml' -o -name 'Cargo.lock' -o -name '*.py' -o -name '*.pyi' \
         -o -name 'py.typed' -o -name '*.md' \) -print0 \
      | LC_ALL=C sort -z | xargs -0 sha256sum
    echo "profile=${KGENV_PY_PROFILE:-release}"
    "$KGENV_VENV/bin/python" -VV
  ) | sha256sum | cut -d' ' -f1
}

kgenv_py_install() {
  local stamp="$KGENV_VENV/.kgenv-py.sha256" want have out profile
  want=$(kgenv_py_sources_hash)
  have=$(cat "$stamp" 2>/dev/null || true)
  if [ "$want" = "$have" ] && "$KGENV_VENV/bin/python" -c "import kgenv._kgenv" 2>/dev/null; then
    echo "kgenv wheel up to date"
    return 0
  fi
  profile="${KGENV_PY_PROFILE:-release}"
  out="$KGENV_REPO/target/wheels-py"
  rm -f "$out"/kgenv-*.whl
  echo "building the kgenv wheel ($profile)"
  "$KGENV_VENV/bin/maturin" build --quiet --profile "$profile" --locked \
    -m "$KGENV_REPO/crates/kgenv-py/Cargo.toml" -i "$KGENV_VENV/bin/python" --out "$out"
  "$KGENV_VENV/bin/pip" install -q --force-reinstall --no-deps "$out"/kgenv-*.whl
  echo "$want" >"$stamp"
}

kgenv_py_tools
kgenv_py_install
# The wheel tests/python ran against (for the benchmark script and the lead's checks).
KGENV_PY_WHEEL=
for kgenv_py_whl in "$KGENV_REPO"/target/wheels-py/kgenv-*.whl; do
  [ -e "$kgenv_py_whl" ] && KGENV_PY_WHEEL=$kgenv_py_whl
done
export KGENV_PY_WHEEL
