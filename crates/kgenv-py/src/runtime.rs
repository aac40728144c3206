//! The tokio runtime every call from Python runs on: made on first use, shared by all
//! environments, with two worker threads. Python threads never run kgenv's futures
//! themselves; they only wait for messages from them (see [`crate::run`]), with the GIL
//! released.

use std::sync::OnceLock;

use pyo3::exceptions::PyRuntimeError;
use pyo3::PyResult;
use tokio::runtime::{Builder, Runtime};

static RUNTIME: OnceLock<Runtime> = OnceLock::new();

/// The shared runtime, built on first use.
pub(crate) fn get() -> PyResult<&'static Runtime> {
    if let Some(rt) = RUNTIME.get() {
        return Ok(rt);
    }
    let rt = Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("kgenv-runtime")
        .enable_all()
        .build()
        .map_err(|e| {
            PyRuntimeError::new_err(format!("kgenv could not start its async runtime: {e}"))
        })?;
    // Two threads may race here; the loser's runtime is dropped unused.
    Ok(RUNTIME.get_or_init(|| rt))
}
