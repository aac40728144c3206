//! `Env.jupyter()` from Python: the core's Jupyter tunnel ([`Runner::jupyter`]) as a
//! Python object that serves until `close()` (or until it is garbage-collected).
//!
//! [`Runner::jupyter`]: kgenv_core::runner::Runner::jupyter

use std::path::PathBuf;
use std::sync::Mutex;

use kgenv_core::runner;
use pyo3::prelude::*;

use crate::ops::runner;
use crate::run::{self, cancellable, Output, Run};
use crate::spec::EnvSpec;
use crate::world::PyMockWorld;

/// A local address for the environment's Jupyter. On `gce` and `ssh` targets it is a
/// tunnel through the host's SSH session that lives until `close()`; on `local` it is the
/// port Docker publishes.
#[pyclass(module = "kgenv._kgenv", frozen)]
pub struct JupyterTunnel {
    url: String,
    port: u16,
    tunnelled: bool,
    cert_sha256: Option<String>,
    tunnel: Mutex<Option<runner::JupyterTunnel>>,
}

impl From<runner::JupyterTunnel> for JupyterTunnel {
    fn from(t: runner::JupyterTunnel) -> Self {
        Self {
            url: t.browser_url(),
            port: t.port(),
            tunnelled: t.tunnelled(),
            cert_sha256: t.cert_sha256().map(str::to_string),
            tunnel: Mutex::new(Some(t)),
        }
    }
}

#[pymethods]
impl JupyterTunnel {
    /// The URL to open (with `?token=…` in token mode).
    #[getter]
    fn url(&self) -> &str {
        &self.url
    }

    /// The local port.
    #[getter]
    fn port(&self) -> u16 {
        self.port
    }

    /// Whether this is an SSH tunnel (False: Docker publishes the port locally).
    #[getter]
    fn tunnelled(&self) -> bool {
        self.tunnelled
    }

    /// SHA-256 fingerprint of Jupyter's certificate, to compare with the browser's warning.
    #[getter]
    fn cert_sha256(&self) -> Option<&str> {
        self.cert_sha256.as_deref()
    }

    /// Whether the tunnel still accepts connections.
    #[getter]
    fn is_open(&self) -> bool {
        !self.tunnelled
            || self
                .tunnel
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .is_some()
    }

    /// Stops accepting connections and closes the open ones.
    fn close(&self) {
        self.tunnel.lock().unwrap_or_else(|p| p.into_inner()).take();
    }

    fn __enter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    #[pyo3(signature = (*_args))]
    fn __exit__(&self, _args: &Bound<'_, pyo3::types::PyTuple>) {
        self.close();
    }

    fn __repr__(&self) -> String {
        // The URL may hold the Jupyter token: show only where it points.
        let state = if self.is_open() { "open" } else { "closed" };
        format!(
            "JupyterTunnel(port={}, tunnelled={}, {state})",
            self.port,
            if self.tunnelled { "True" } else { "False" }
        )
    }
}

/// Opens a local address for Jupyter: a tunnel through SSH on `gce`/`ssh`, the published
/// port on `local`. `local_port` 0 picks a free port.
#[pyfunction]
#[pyo3(signature = (spec, *, world=None, state_dir=None, local_port=0, notify=None))]
pub(crate) fn start_jupyter(
    py: Python<'_>,
    spec: &Bound<'_, EnvSpec>,
    world: Option<Bound<'_, PyMockWorld>>,
    state_dir: Option<PathBuf>,
    local_port: u16,
    notify: Option<Py<PyAny>>,
) -> PyResult<Run> {
    let runner = runner(py, spec, world.as_ref(), state_dir)?;
    run::spawn(notify, move |_, cancel| {
        cancellable(cancel, async move {
            Ok(Output::Tunnel(runner.jupyter(local_port).await?))
        })
    })
}
