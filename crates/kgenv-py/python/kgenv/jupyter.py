"""Jupyter helpers. The password hash is made here, in jupyter_server's own argon2 format,
so the plaintext never leaves your machine::

    cfg = {"PasswordIdentityProvider": {"hashed_password": kgenv.jupyter.hash_password(pw)}}
"""

from __future__ import annotations

from . import _kgenv

__all__ = ["hash_password", "verify_password"]


def hash_password(password: str) -> str:
    """Hashes ``password`` as ``jupyter_server.auth.passwd()`` does: ``argon2:$argon2id$…``
    with a fresh salt (so two calls differ). Takes ~0.1 s; releases the GIL meanwhile."""
    if not isinstance(password, str):
        raise TypeError(f"password must be str, got {type(password).__name__}")
    if not password:
        raise ValueError("an empty password would let anyone in: Jupyter never runs without authentication")
    return _kgenv.hash_password(password)


def verify_password(password: str, hashed: str) -> bool:
    """Whether ``password`` matches a hash from :func:`hash_password` or jupyter_server."""
    return _kgenv.verify_password(password, hashed)
