//! Which backends a Python call runs on: a [`PyMockWorld`]'s mocks, or the real clients.
//!
//! The real clients are assembled by the core's [`wiring::from_env`], the same call the
//! CLI makes; a client that cannot be built (no credentials, not in this build) answers
//! with `kgenv.UnavailableError` or `kgenv.AuthError` and a hint.

use std::path::PathBuf;

use kgenv_core::backends::Backends;
use kgenv_core::{runner, wiring, BackendError};

use crate::world::PyMockWorld;

/// The real backends.
pub(crate) fn real() -> Result<Backends, BackendError> {
    let rt = crate::runtime::get()
        .map_err(|e| BackendError::other(format!("starting kgenv's runtime: {e}")))?;
    Ok(rt.block_on(wiring::from_env()))
}

/// The backends for `world` (mocks) or the real ones (`None`).
pub(crate) fn resolve(world: Option<&PyMockWorld>) -> Result<Backends, BackendError> {
    match world {
        Some(w) => Ok(w.world.backends()),
        None => real(),
    }
}

/// Where state files live: the caller's choice, else the mock world's own directory, else
/// the XDG state dir (`KGENV_HOME/state` when set).
pub(crate) fn state_dir(explicit: Option<PathBuf>, world: Option<&PyMockWorld>) -> PathBuf {
    explicit
        .or_else(|| world.map(|w| w.state_dir.clone()))
        .unwrap_or_else(runner::default_state_dir)
}
