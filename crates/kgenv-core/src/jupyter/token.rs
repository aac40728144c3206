//! The Jupyter tokens kgenv keeps: random, made once per environment and stored (0600) in
//! its key directory, so every run — and `kgenv jupyter` — sees the same one.

use crate::error::{BackendError, Result};
use crate::spec::JupyterAuth;

/// The token kept as `name` in environment `env`'s key dir, if one was made.
fn existing(env: &str, name: &str) -> Option<String> {
    let t = std::fs::read_to_string(crate::paths::keys_dir(env).ok()?.join(name)).ok()?;
    let t = t.trim();
    (!t.is_empty()).then(|| t.to_string())
}

/// A random token made once and kept (0600) in environment `env`'s key dir as `name`.
fn kept_token(env: &str, name: &str) -> Result<String> {
    let path = crate::paths::keys_dir(env)?.join(name);
    if let Some(t) = existing(env, name) {
        return Ok(t);
    }
    let mut bytes = [0u8; 24];
    rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut bytes);
    let token = hex::encode(bytes);
    crate::paths::write_atomic(&path, token.as_bytes(), 0o600)
        .map_err(|e| BackendError::io(format!("writing {}", path.display()), e))?;
    Ok(token)
}

/// The user's token in token mode.
pub(crate) fn user_token(env: &str) -> Result<String> {
    kept_token(env, "jupyter-token")
}

/// The token the host's idle agent reads `/api/status` with: the user's token in token
/// mode, a separate one in password mode (the password itself never reaches the host).
pub(crate) fn agent_token(env: &str, auth: &JupyterAuth) -> Result<String> {
    match auth {
        JupyterAuth::Token => user_token(env),
        JupyterAuth::Password { .. } => kept_token(env, "jupyter-agent-token"),
    }
}

/// [`agent_token`] (or with `user`, [`user_token`]) when it was made already, without
/// making one: for `plan` and `status`, which write nothing.
pub(crate) fn existing_token(env: &str, auth: &JupyterAuth, user: bool) -> Option<String> {
    match (auth, user) {
        (JupyterAuth::Token, _) | (_, true) => existing(env, "jupyter-token"),
        (JupyterAuth::Password { .. }, false) => existing(env, "jupyter-agent-token"),
    }
}
