"""Jupyter password hashes in jupyter_server's format, checked by jupyter_server itself."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest
from jupyter_server.auth.security import passwd_check

import kgenv


def test_hash_is_jupyter_servers_argon2_format() -> None:
    h = kgenv.jupyter.hash_password("s3cret pass")
    assert h.startswith("argon2:$argon2id$v=19$m=10240,t=10,p=8$")
    assert passwd_check(h, "s3cret pass"), "jupyter_server accepts kgenv's hash"
    assert not passwd_check(h, "wrong")
    assert kgenv.jupyter.verify_password("s3cret pass", h)
    assert not kgenv.jupyter.verify_password("wrong", h)
    assert h != kgenv.jupyter.hash_password("s3cret pass"), "salted"


def test_kgenv_verifies_jupyter_servers_hash() -> None:
    from jupyter_server.auth.security import passwd

    assert kgenv.jupyter.verify_password("from jupyter", passwd("from jupyter"))


def test_empty_or_non_str_passwords_are_refused() -> None:
    with pytest.raises(ValueError, match="never runs without authentication"):
        kgenv.jupyter.hash_password("")
    with pytest.raises(TypeError):
        kgenv.jupyter.hash_password(b"bytes")  # type: ignore[arg-type]


def test_password_jupyter_up_writes_a_hash_not_the_password(world: kgenv.testing.MockWorld, kgenv_home: Path) -> None:
    env = kgenv.Env(
        "kg", target="local", image=kgenv.Image(), container=kgenv.Container(gpus="none"), jupyter=kgenv.Jupyter(), backends=world
    )
    env.up(progress=False)
    # The local target's host directory lives under KGENV_HOME (never the real home in tests).
    path = kgenv_home / "data" / "kg" / "jupyter" / "jupyter_server_config.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    config = path.read_text()
    assert "correct horse battery staple" not in config
    hashed = json.loads(config)["PasswordIdentityProvider"]["hashed_password"]
    assert passwd_check(hashed, "correct horse battery staple")
