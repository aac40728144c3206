//! The core's stateful mock backends for Python (`kgenv.testing.MockWorld`): a simulated
//! cloud, host, Docker engine, Kaggle and GitHub that environments can run against
//! offline, with fault injection, latency, calls held at their start (`hold_next`) and a
//! record of every call.
//!
//! Each world has its own state directory (a temporary one, or next to the world's file),
//! so a mock run never reads or writes the state of a real environment.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use kgenv_core::error::{QuotaInfo, QuotaScope};
use kgenv_core::mock::{Fault, Held, MockWorld, WorldState};
use pyo3::exceptions::{PyOSError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PyDict;

use crate::{convert, errors, runtime};

/// A simulated world for the mock backends.
#[pyclass(module = "kgenv._kgenv", name = "MockWorld", frozen)]
pub struct PyMockWorld {
    pub(crate) world: MockWorld,
    pub(crate) state_dir: PathBuf,
    path: Option<PathBuf>,
    // Removed with the world.
    _tmp: Option<tempfile::TempDir>,
}

#[pymethods]
impl PyMockWorld {
    /// A fresh world (one GPU on the host, the `titanic` competition). With `path`, the world
    /// is loaded from that file (or started) and saved back after every change.
    #[new]
    #[pyo3(signature = (path=None))]
    fn new(py: Python<'_>, path: Option<PathBuf>) -> PyResult<Self> {
        match path {
            Some(p) => {
                let world = MockWorld::persistent(&p).map_err(|e| errors::to_py(py, &e.into()))?;
                let mut dir = p.clone().into_os_string();
                dir.push(".state");
                Ok(Self {
                    world,
                    state_dir: dir.into(),
                    path: Some(p),
                    _tmp: None,
                })
            }
            None => {
                let tmp = tempfile::Builder::new()
                    .prefix("kgenv-mock-")
                    .tempdir()
                    .map_err(|e| {
                        PyOSError::new_err(format!(
                            "creating a state directory for the mock world: {e}"
                        ))
                    })?;
                Ok(Self {
                    world: MockWorld::new(),
                    state_dir: tmp.path().to_path_buf(),
                    path: None,
                    _tmp: Some(tmp),
                })
            }
        }
    }

    /// Where environments running on this world keep their state files.
    #[getter]
    fn state_dir(&self) -> PathBuf {
        self.state_dir.clone()
    }

    /// The file the world is saved to, if it is persistent.
    #[getter]
    fn path(&self) -> Option<PathBuf> {
        self.path.clone()
    }

    /// Makes the next `times` calls of `op` (e.g. `compute.insert_instance`, or `*`) fail.
    /// `kind` is `transient`, `rate_limited`, `stockout`, `quota`, `permission_denied` or
    /// `connection` or `command_timeout`; a quota takes `metric`, `limit` and `region` (None: all regions).
    #[pyo3(signature = (op, kind, times=1, *, metric=None, limit=None, region=None))]
    fn fail_next(
        &self,
        op: &str,
        kind: &str,
        times: u32,
        metric: Option<String>,
        limit: Option<f64>,
        region: Option<String>,
    ) -> PyResult<()> {
        let fault = match kind {
            "transient" => Fault::Transient,
            "rate_limited" => Fault::RateLimited,
            "stockout" => Fault::Stockout,
            "permission_denied" => Fault::PermissionDenied,
            "connection" => Fault::Connection,
            "command_timeout" => Fault::CommandTimeout,
            "quota" => Fault::Quota(QuotaInfo {
                metric: metric.ok_or_else(|| PyValueError::new_err("a quota fault needs `metric`, e.g. \"GPUS_ALL_REGIONS\""))?,
                limit,
                scope: region.map_or(QuotaScope::Global, QuotaScope::Region),
            }),
            other => {
                return Err(PyValueError::new_err(format!(
                    "unknown fault `{other}`: use transient, rate_limited, stockout, quota, permission_denied, connection or command_timeout"
                )))
            }
        };
        self.world.fail_next(op, times, fault);
        Ok(())
    }

    /// Adds `seconds` of latency to every call of `op` (or `*`).
    fn set_latency(&self, op: &str, seconds: f64) -> PyResult<()> {
        let d = Duration::try_from_secs_f64(seconds)
            .map_err(|e| PyValueError::new_err(format!("latency {seconds}: {e}")))?;
        self.world.set_latency(op, d);
        Ok(())
    }

    /// Holds the next call of `op` (an exact name, e.g. `remote.connect`) at its start
    /// until the returned hold is released (or dropped): a test can then act while that
    /// call is known to be in flight. Several holds on one `op` take its next calls in turn.
    fn hold_next(&self, op: &str) -> PyMockHold {
        PyMockHold {
            held: Arc::new(self.world.hold_next(op)),
        }
    }

    /// Every recorded call: `(op, target, mutating, start_s, end_s, failed)`.
    fn calls(&self) -> Vec<(String, String, bool, f64, f64, bool)> {
        self.world
            .calls()
            .into_iter()
            .map(|c| {
                (
                    c.op,
                    c.target,
                    c.mutating,
                    c.start.as_secs_f64(),
                    c.end.as_secs_f64(),
                    c.failed,
                )
            })
            .collect()
    }

    /// Forgets the recorded calls.
    fn clear_calls(&self) {
        self.world.clear_calls();
    }

    /// A copy of the world's state as plain data.
    fn state<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        convert::ser_to_py(py, &self.world.state())
    }

    /// Replaces the world's state (a dictionary as returned by `state()`).
    fn set_state(&self, state: &Bound<'_, PyDict>) -> PyResult<()> {
        let value = convert::from_py(state.as_any(), "state")?;
        let new: WorldState = serde_json::from_value(value)
            .map_err(|e| PyValueError::new_err(format!("not a mock world state: {e}")))?;
        self.world.edit(|s| *s = new);
        Ok(())
    }

    fn __repr__(&self) -> String {
        match &self.path {
            Some(p) => format!("MockWorld(path={:?})", p.display().to_string()),
            None => "MockWorld()".to_string(),
        }
    }
}

/// A call held at its start by `MockWorld.hold_next`.
#[pyclass(module = "kgenv._kgenv", name = "MockHold", frozen)]
pub struct PyMockHold {
    held: Arc<Held>,
}

#[pymethods]
impl PyMockHold {
    /// The operation held.
    #[getter]
    fn op(&self) -> String {
        self.held.op().to_string()
    }

    /// Whether the held call has started (it then waits for `release()`).
    #[getter]
    fn started(&self) -> bool {
        self.held.has_started()
    }

    /// Blocks, with the GIL released, until the held call starts or `timeout` seconds
    /// pass; returns whether it started.
    fn wait_started(&self, py: Python<'_>, timeout: f64) -> PyResult<bool> {
        let within = Duration::try_from_secs_f64(timeout)
            .map_err(|e| PyValueError::new_err(format!("timeout {timeout}: {e}")))?;
        let rt = runtime::get()?;
        let held = self.held.clone();
        Ok(py.detach(|| {
            rt.block_on(async move { tokio::time::timeout(within, held.started()).await })
                .is_ok()
        }))
    }

    /// Lets the held call go on (harmless when it already did).
    fn release(&self) {
        self.held.release();
    }

    fn __repr__(&self) -> String {
        format!(
            "MockHold(op={:?}, started={})",
            self.held.op(),
            if self.held.has_started() {
                "True"
            } else {
                "False"
            }
        )
    }
}
