//! Jupyter password hashing for Python (`kgenv.jupyter`), in jupyter_server's argon2 format,
//! computed here so the plaintext never leaves the user's machine.

use pyo3::prelude::*;

use crate::errors;

/// Hashes `password` as jupyter_server's `passwd()` does (`argon2:$argon2id$…`), with a new
/// salt each call. Releases the GIL while hashing.
#[pyfunction]
pub(crate) fn hash_password(py: Python<'_>, password: &str) -> PyResult<String> {
    let password = password.to_string();
    py.detach(move || kgenv_core::jupyter::hash_password(&password))
        .map_err(|e| errors::to_py(py, &e.into()))
}

/// Whether `password` matches `hashed` (made by `hash_password` or jupyter_server).
#[pyfunction]
pub(crate) fn verify_password(py: Python<'_>, password: &str, hashed: &str) -> bool {
    let (password, hashed) = (password.to_string(), hashed.to_string());
    py.detach(move || kgenv_core::jupyter::verify_password(&password, &hashed))
}
