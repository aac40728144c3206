//! The tokio runtime every call from Python runs on: made on first use, shared by all
//! environments, with two worker threads. Python threads never run kgenv's futures
//! themselves; they only wait for messages from them (see [`crate::run`]), with the GIL
//! released.
//!
//! A process forked after the runtime started (`multiprocessing` with the fork start
//! method) has none of its threads; such a child gets a runtime of its own instead of
//! hanging on the parent's.

use std::sync::Mutex;

use pyo3::exceptions::PyRuntimeError;
use pyo3::PyResult;
use tokio::runtime::{Builder, Runtime};

/// The runtime and the process it was made in. Leaked on purpose: it lives as long as
/// the process, and a forked child must not try to shut down threads it does not have.
static RUNTIME: Mutex<Option<(u32, &'static Runtime)>> = Mutex::new(None);

/// The shared runtime, built on first use (and again after a fork).
pub(crate) fn get() -> PyResult<&'static Runtime> {
    let mut slot = RUNTIME.lock().unwrap_or_else(|p| p.into_inner());
    let pid = std::process::id();
    if let Some((owner, rt)) = *slot {
        if owner == pid {
            return Ok(rt);
        }
    }
    let rt = Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("kgenv-runtime")
        .enable_all()
        .build()
        .map_err(|e| {
            PyRuntimeError::new_err(format!("kgenv could not start its async runtime: {e}"))
        })?;
    let rt: &'static Runtime = Box::leak(Box::new(rt));
    *slot = Some((pid, rt));
    Ok(rt)
}
