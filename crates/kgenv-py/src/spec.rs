//! Validated environments from Python: `EnvSpec` wraps the core's [`Env`], built from a
//! `kgenv.toml` file, TOML text, or a dictionary shaped like the file (what the Python
//! `kgenv.Env(...)` keyword arguments become). [`validate_section`] checks one section on
//! its own, so `kgenv.Instance(gpu_count=3)` fails where it is written.

use std::path::PathBuf;
use std::sync::Arc;

use kgenv_core::config::{self, Overrides};
use kgenv_core::spec::{
    AutostopBuilder, BucketMountBuilder, BudgetBuilder, ContainerBuilder, DataBuilder, Env,
    FirewallBuilder, GithubKeyBuilder, ImageBuilder, InstanceBuilder, JupyterBuilder, SshHost,
};
use kgenv_core::{Error, ValidationError};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::{convert, errors};

/// A validated environment (the core's `Env`). Immutable.
#[pyclass(module = "kgenv._kgenv", frozen)]
pub struct EnvSpec {
    pub(crate) env: Arc<Env>,
}

fn overrides(
    target: Option<String>,
    ssh_host: Option<String>,
    project: Option<String>,
    zone: Option<String>,
) -> Overrides {
    let from_env = Overrides::from_env();
    Overrides {
        target,
        ssh_host,
        project: project.or(from_env.project),
        zone: zone.or(from_env.zone),
    }
}

fn validation_err(py: Python<'_>, e: &ValidationError) -> PyErr {
    errors::validation(py, &e.field, &e.rule, e.to_string())
}

#[pymethods]
impl EnvSpec {
    /// Reads and validates a `kgenv.toml` file. Project and zone fall back to
    /// `CLOUDSDK_CORE_PROJECT` / `CLOUDSDK_COMPUTE_ZONE`.
    #[staticmethod]
    #[pyo3(signature = (path, *, target=None, ssh_host=None, project=None, zone=None))]
    fn from_toml(
        py: Python<'_>,
        path: PathBuf,
        target: Option<String>,
        ssh_host: Option<String>,
        project: Option<String>,
        zone: Option<String>,
    ) -> PyResult<Self> {
        let o = overrides(target, ssh_host, project, zone);
        let env = config::load_with(&path, &o).map_err(|e| errors::to_py(py, &Error::Config(e)))?;
        Ok(Self { env: Arc::new(env) })
    }

    /// Parses and validates TOML text; `path` is only used in error messages.
    #[staticmethod]
    #[pyo3(signature = (text, path, *, target=None, ssh_host=None, project=None, zone=None))]
    fn from_toml_str(
        py: Python<'_>,
        text: &str,
        path: PathBuf,
        target: Option<String>,
        ssh_host: Option<String>,
        project: Option<String>,
        zone: Option<String>,
    ) -> PyResult<Self> {
        let o = overrides(target, ssh_host, project, zone);
        let env =
            config::parse_str(text, &path, &o).map_err(|e| errors::to_py(py, &Error::Config(e)))?;
        Ok(Self { env: Arc::new(env) })
    }

    /// Validates a dictionary shaped like `kgenv.toml`. Errors name the dotted field.
    #[staticmethod]
    #[pyo3(signature = (doc, *, project=None, zone=None))]
    fn from_dict(
        py: Python<'_>,
        doc: &Bound<'_, PyAny>,
        project: Option<String>,
        zone: Option<String>,
    ) -> PyResult<Self> {
        let value = convert::from_py(doc, "config")?;
        let o = overrides(None, None, project, zone);
        let env = config::from_json(value, &o).map_err(|e| validation_err(py, &e))?;
        Ok(Self { env: Arc::new(env) })
    }

    /// The environment's name.
    #[getter]
    fn name(&self) -> &str {
        &self.env.name
    }

    /// `gce`, `ssh` or `local`.
    #[getter]
    fn target(&self) -> &'static str {
        self.env.target.kind()
    }

    /// The validated spec with every default filled in, as plain data.
    fn to_dict<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        convert::ser_to_py(py, &*self.env)
    }

    /// The steps in declared order: `(id, dependencies, summary)`.
    fn steps(&self) -> Vec<(String, Vec<String>, String)> {
        kgenv_core::runner::step_infos(&self.env)
            .into_iter()
            .map(|s| (s.id, s.deps, s.summary))
            .collect()
    }

    /// The state file of this environment under `state_dir` (or the default state dir).
    #[pyo3(signature = (state_dir=None))]
    fn state_path(&self, state_dir: Option<PathBuf>) -> PathBuf {
        let dir = state_dir.unwrap_or_else(kgenv_core::runner::default_state_dir);
        kgenv_core::runner::state_file(&dir, &self.env.name)
    }

    fn __eq__(&self, other: &Bound<'_, PyAny>) -> bool {
        other
            .cast::<EnvSpec>()
            .is_ok_and(|o| *o.get().env == *self.env)
    }

    fn __hash__(&self) -> u64 {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        serde_json::to_string(&*self.env)
            .unwrap_or_default()
            .hash(&mut h);
        h.finish()
    }

    fn __repr__(&self) -> String {
        format!(
            "EnvSpec(name={:?}, target={:?})",
            self.env.name,
            self.env.target.kind()
        )
    }
}

fn check<B: DeserializeOwned, T>(
    value: Value,
    build: impl FnOnce(B) -> Result<T, ValidationError>,
) -> Result<(), ValidationError> {
    let builder: B =
        serde_json::from_value(value).map_err(|e| ValidationError::new("config", e.to_string()))?;
    build(builder).map(|_| ())
}

/// Validates one section (`instance`, `firewall`, `bucket`, `github_key`, `image`,
/// `container`, `jupyter`, `data`, `autostop`, `budget`, `ssh`) given as a dictionary shaped like its
/// TOML table. Raises `kgenv.ValidationError` naming the field.
#[pyfunction]
pub(crate) fn validate_section(
    py: Python<'_>,
    section: &str,
    doc: &Bound<'_, PyAny>,
) -> PyResult<()> {
    let value = convert::from_py(doc, section)?;
    let r = match section {
        "instance" => check(value, InstanceBuilder::build),
        "firewall" => check(value, FirewallBuilder::build),
        "bucket" => check(value, BucketMountBuilder::build),
        "github_key" => check(value, GithubKeyBuilder::build),
        "image" => check(value, ImageBuilder::build),
        "container" => check(value, ContainerBuilder::build),
        "jupyter" => check(value, JupyterBuilder::build),
        "data" => check(value, DataBuilder::build),
        "autostop" => check(value, AutostopBuilder::build),
        "budget" => check(value, BudgetBuilder::build),
        "ssh" => {
            let host = value
                .get("host")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string();
            SshHost::parse(&host)
                .map(|_| ())
                .map_err(|e| ValidationError::new("host", e.rule))
        }
        other => return Err(PyValueError::new_err(format!("unknown section `{other}`"))),
    };
    r.map_err(|e| validation_err(py, &e))
}
