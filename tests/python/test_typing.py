"""The type information is true: `mypy --strict` accepts a script using the API and the
package itself, stubtest finds `_kgenv.pyi` in step with the compiled module, and the
sample script runs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import kgenv

HERE = Path(__file__).resolve().parent


def mypy(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--cache-dir", str(tmp_path / "mypy-cache"), *args],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )


def test_sample_script_type_checks_strictly(tmp_path: Path) -> None:
    r = mypy(tmp_path, str(HERE / "typing_sample.py"))
    assert r.returncode == 0, r.stdout + r.stderr


def test_mypy_catches_misuse(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text(
        "import kgenv\n"
        "kgenv.Instance(gpu_count='1')\n"
        "env = kgenv.Env('x', target='cloud')\n"
        "r: kgenv.Plan = env.up()\n"
    )
    r = mypy(tmp_path, str(bad))
    assert r.returncode == 1
    for line in (":2:", ":3:", ":4:"):
        assert f"bad.py{line}" in r.stdout, r.stdout


def test_package_type_checks_strictly(tmp_path: Path) -> None:
    r = mypy(tmp_path, "-p", "kgenv")
    assert r.returncode == 0, r.stdout + r.stderr


def test_stub_matches_the_compiled_module(tmp_path: Path) -> None:
    r = subprocess.run(
        [sys.executable, "-m", "mypy.stubtest", "kgenv._kgenv", "--mypy-config-file", str(tmp_path / "none.ini")],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert r.returncode == 0, r.stdout + r.stderr


def test_package_ships_its_type_information() -> None:
    pkg = Path(kgenv.__file__).parent
    assert (pkg / "py.typed").exists() and (pkg / "_kgenv.pyi").exists()


def test_every_public_item_is_documented() -> None:
    import inspect

    from kgenv import _kgenv

    modules = [kgenv, kgenv.events, kgenv.testing, kgenv.data, kgenv.jupyter]
    missing = []
    for mod in modules:
        assert mod.__doc__, mod.__name__
        for name in getattr(mod, "__all__", []):
            obj = getattr(mod, name)
            if not (inspect.isclass(obj) or inspect.isfunction(obj) or inspect.isbuiltin(obj)):
                continue  # modules, constants and typing aliases
            if not inspect.getdoc(obj):
                missing.append(f"{mod.__name__}.{name}")
            if inspect.isclass(obj):
                for attr, member in vars(obj).items():
                    if attr.startswith("_") or not (callable(member) or isinstance(member, property)):
                        continue
                    if not inspect.getdoc(member):
                        missing.append(f"{mod.__name__}.{name}.{attr}")
    for name in dir(_kgenv):
        obj = getattr(_kgenv, name)
        if not name.startswith("_") and callable(obj) and not inspect.getdoc(obj):
            missing.append(f"_kgenv.{name}")
    assert missing == []


def test_the_sample_runs() -> None:
    sys.path.insert(0, str(HERE))
    try:
        import typing_sample

        typing_sample.main()
    finally:
        sys.path.remove(str(HERE))
