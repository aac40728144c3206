//! Which backends a Python call runs on: a [`PyMockWorld`]'s mocks, or the real clients.
//!
//! The real GCE, GCS, SSH, Docker, Kaggle and GitHub clients are built by their own layers;
//! [`real`] is the one place that assembles them for Python. Until they are wired in, it
//! answers with `kgenv.UnavailableError` and a hint, so `backends="real"` fails plainly
//! instead of doing something half-way.

use std::path::PathBuf;

use kgenv_core::backends::Backends;
use kgenv_core::state::StateStore;
use kgenv_core::BackendError;

use crate::world::PyMockWorld;

/// The real backends.
pub(crate) fn real() -> Result<Backends, BackendError> {
    Err(BackendError::Unavailable {
        backend: "real",
        hint: "the real GCE/SSH/Docker/Kaggle/GitHub clients are not wired into the Python bindings of this build yet; \
               use backends=\"mock\" or kgenv.testing.MockWorld() to run offline"
            .into(),
    })
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
        .unwrap_or_else(StateStore::default_dir)
}
