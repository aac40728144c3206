//! Working with an environment's host once it is up, from Python: run a command over SSH
//! (`Env.ssh`), list the GPUs the container sees (`Env.gpus`), and open a local tunnel to
//! Jupyter (`Env.jupyter_url`). All go through the backend traits, so they work on the
//! mocks today and on the real SSH and Docker clients once those are wired in
//! [`crate::backends::real`].

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use kgenv_core::backends::container::EngineLocation;
use kgenv_core::backends::remote::ExecRequest;
use kgenv_core::backends::{Backends, Progress, Remote};
use kgenv_core::plan::Event;
use kgenv_core::shell::Cmd;
use kgenv_core::spec::{Env, JupyterAuth, JupyterTls, Target};
use kgenv_core::state::StateStore;
use kgenv_core::steps::gpu_check::gpu_report;
use kgenv_core::{BackendError, Error};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use tokio_util::sync::{CancellationToken, DropGuard};

use crate::run::{self, cancellable, Emitter, Output, Run};
use crate::spec::EnvSpec;
use crate::world::PyMockWorld;
use crate::{backends, errors};

/// How long to wait for a host to accept SSH when a call outside `up` connects.
const CONNECT_WITHIN: Duration = Duration::from_secs(60);

/// The host session of `env`, or `None` on the local target.
async fn connect(
    env: &Env,
    backends: &Backends,
    state_dir: &Path,
) -> Result<Option<Arc<dyn Remote>>, Error> {
    if env.target == Target::Local {
        return Ok(None);
    }
    let store = StateStore::open(state_dir, &env.name, env.target.kind())?;
    let addr = kgenv_core::steps::host::addr_for(env, &store.snapshot().await)?;
    Ok(Some(backends.remote.connect(&addr, CONNECT_WITHIN).await?))
}

fn progress_to_event(step: &str, p: Progress) -> Event {
    Event::from_progress(step, p)
}

struct Setup {
    env: Env,
    backends: Backends,
    dir: PathBuf,
}

fn setup(
    py: Python<'_>,
    spec: &Bound<'_, EnvSpec>,
    world: Option<&Bound<'_, PyMockWorld>>,
    state_dir: Option<PathBuf>,
) -> PyResult<Setup> {
    let world = world.map(Bound::get);
    let backends = backends::resolve(world).map_err(|e| errors::to_py(py, &e.into()))?;
    Ok(Setup {
        env: (*spec.get().env).clone(),
        backends,
        dir: backends::state_dir(state_dir, world),
    })
}

/// Runs `command` on the host over SSH. A list is quoted word by word with kgenv's shell
/// quoting; a string is passed as the shell line it is. Output lines stream as `log`
/// events of step `ssh`; the result is `{"exit_code", "stdout", "stderr"}`.
#[pyfunction]
#[pyo3(signature = (spec, command, *, world=None, state_dir=None, stdin=None, sudo=false, timeout=None, notify=None))]
#[allow(clippy::too_many_arguments)]
pub(crate) fn start_ssh(
    py: Python<'_>,
    spec: &Bound<'_, EnvSpec>,
    command: &Bound<'_, PyAny>,
    world: Option<Bound<'_, PyMockWorld>>,
    state_dir: Option<PathBuf>,
    stdin: Option<Vec<u8>>,
    sudo: bool,
    timeout: Option<f64>,
    notify: Option<Py<PyAny>>,
) -> PyResult<Run> {
    let line = match command.extract::<String>() {
        Ok(s) => s,
        Err(_) => {
            let words: Vec<String> = command
                .extract()
                .map_err(|_| PyValueError::new_err("command must be a str or a list of str"))?;
            let (first, rest) = words
                .split_first()
                .ok_or_else(|| PyValueError::new_err("command is empty"))?;
            Cmd::new(first).args(rest).line()
        }
    };
    if line.trim().is_empty() {
        return Err(PyValueError::new_err("command is empty"));
    }
    let mut req = ExecRequest::new(line);
    if let Some(s) = stdin {
        req = req.stdin(s);
    }
    if sudo {
        req = req.sudo();
    }
    if let Some(t) = timeout {
        req = req.timeout(
            Duration::try_from_secs_f64(t)
                .map_err(|e| PyValueError::new_err(format!("timeout {t}: {e}")))?,
        );
    }
    let s = setup(py, spec, world.as_ref(), state_dir)?;
    run::spawn(notify, move |emitter: Emitter, cancel| {
        cancellable(cancel, async move {
            let remote = connect(&s.env, &s.backends, &s.dir).await?.ok_or_else(|| BackendError::Unavailable {
                backend: "remote",
                hint: "the local target has no SSH host: run commands in a terminal, or in the container with `docker exec`".into(),
            })?;
            let progress = move |p: Progress| emitter.event(progress_to_event("ssh", p));
            let out = remote.exec(req, &progress).await?;
            Ok(Output::Exec(out.exit_code, out.stdout, out.stderr))
        })
    })
}

/// Lists the GPUs visible in the environment's container (`nvidia-smi`), one line each.
#[pyfunction]
#[pyo3(signature = (spec, *, world=None, state_dir=None, notify=None))]
pub(crate) fn start_gpus(
    py: Python<'_>,
    spec: &Bound<'_, EnvSpec>,
    world: Option<Bound<'_, PyMockWorld>>,
    state_dir: Option<PathBuf>,
    notify: Option<Py<PyAny>>,
) -> PyResult<Run> {
    let s = setup(py, spec, world.as_ref(), state_dir)?;
    let container = s
        .env
        .container
        .as_ref()
        .map(|c| c.name.clone())
        .ok_or_else(|| {
            errors::to_py(
                py,
                &Error::Usage(
                    "this environment has no container: add `container=kgenv.Container()`".into(),
                ),
            )
        })?;
    run::spawn(notify, move |_emitter, cancel| {
        cancellable(cancel, async move {
            let at = match connect(&s.env, &s.backends, &s.dir).await? {
                Some(r) => EngineLocation::Remote(r),
                None => EngineLocation::Local,
            };
            let engine = s.backends.engine.connect(at).await?;
            let report = gpu_report(engine.as_ref(), &container).await?;
            if report.gpus.is_empty() {
                return Err(BackendError::CommandFailed {
                    command: format!("nvidia-smi in {container} (no GPU visible)"),
                    exit_code: 127,
                    stderr_tail: report
                        .problem
                        .clone()
                        .unwrap_or_else(|| "nvidia-smi: not found".into()),
                }
                .into());
            }
            // One line per GPU, as `nvidia-smi --query-gpu=name,driver_version,memory.total` prints it.
            let lines = report
                .gpus
                .iter()
                .map(|g| match g.memory_mib {
                    Some(m) => format!("{}, {}, {m} MiB", g.name, g.driver_version),
                    None => format!("{}, {}", g.name, g.driver_version),
                })
                .collect();
            Ok(Output::Gpus(lines))
        })
    })
}

/// A tunnel as the run made it, before it becomes a Python object.
pub(crate) struct TunnelOpen {
    url: String,
    port: u16,
    remote: bool,
    stop: Option<DropGuard>,
}

/// A local address for the environment's Jupyter. On `gce` and `ssh` targets it is a
/// tunnel through the host's SSH session that lives until `close()` (or until the object
/// is garbage-collected); on `local` it is the port Docker publishes.
#[pyclass(module = "kgenv._kgenv", frozen)]
pub struct JupyterTunnel {
    url: String,
    port: u16,
    remote: bool,
    stop: std::sync::Mutex<Option<DropGuard>>,
}

impl From<TunnelOpen> for JupyterTunnel {
    fn from(t: TunnelOpen) -> Self {
        Self {
            url: t.url,
            port: t.port,
            remote: t.remote,
            stop: std::sync::Mutex::new(t.stop),
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
        self.remote
    }

    /// Whether the tunnel still accepts connections.
    #[getter]
    fn is_open(&self) -> bool {
        !self.remote
            || self
                .stop
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .is_some()
    }

    /// Stops accepting connections and closes the open ones.
    fn close(&self) {
        self.stop.lock().unwrap_or_else(|p| p.into_inner()).take();
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
            if self.remote { "True" } else { "False" }
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
    let s = setup(py, spec, world.as_ref(), state_dir)?;
    let usage = |m: &str| errors::to_py(py, &Error::Usage(m.into()));
    let jupyter =
        s.env.jupyter.clone().ok_or_else(|| {
            usage("this environment has no Jupyter: add `jupyter=kgenv.Jupyter()`")
        })?;
    let publish = s
        .env
        .container
        .as_ref()
        .and_then(|c| {
            c.ports
                .iter()
                .find(|p| p.container == u32::from(jupyter.port))
                .cloned()
        })
        .ok_or_else(|| usage("the container does not publish Jupyter's port"))?;
    let host_port = u16::try_from(publish.host.unwrap_or(publish.container))
        .map_err(|_| usage("Jupyter's published port is out of range"))?;
    let bind = match publish.bind.as_deref() {
        None | Some("0.0.0.0") | Some("::") => "127.0.0.1".to_string(),
        Some(b) => b.to_string(),
    };
    let scheme = if jupyter.tls == JupyterTls::Off {
        "http"
    } else {
        "https"
    };
    let token = match jupyter.auth {
        // The token kgenv generated (kept 0600 in the config dir) goes in the URL, as Jupyter prints it.
        JupyterAuth::Token => {
            std::fs::read_to_string(kgenv_core::paths::keys_dir(&s.env.name).join("jupyter-token"))
                .ok()
                .map(|t| t.trim().to_string())
        }
        JupyterAuth::Password { .. } => None,
    };
    let url = move |port: u16| {
        let mut u = format!("{scheme}://127.0.0.1:{port}/");
        if let Some(t) = &token {
            u.push_str(&format!("?token={t}"));
        }
        u
    };
    run::spawn(notify, move |_emitter, cancel| {
        cancellable(cancel, async move {
            let Some(remote) = connect(&s.env, &s.backends, &s.dir).await? else {
                return Ok(Output::Tunnel(TunnelOpen {
                    url: url(host_port),
                    port: host_port,
                    remote: false,
                    stop: None,
                }));
            };
            let listener = tokio::net::TcpListener::bind(("127.0.0.1", local_port))
                .await
                .map_err(|e| {
                    BackendError::io(
                        format!("listening on 127.0.0.1:{local_port} for the Jupyter tunnel"),
                        e,
                    )
                })?;
            let port = listener
                .local_addr()
                .map_err(|e| BackendError::io("reading the tunnel's local address", e))?
                .port();
            let stop = CancellationToken::new();
            tokio::spawn(forward(listener, remote, bind, host_port, stop.clone()));
            Ok(Output::Tunnel(TunnelOpen {
                url: url(port),
                port,
                remote: true,
                stop: Some(stop.drop_guard()),
            }))
        })
    })
}

/// Accepts local connections and pipes each through the host's SSH session to
/// `host:port` there, until `stop` fires.
async fn forward(
    listener: tokio::net::TcpListener,
    remote: Arc<dyn Remote>,
    host: String,
    port: u16,
    stop: CancellationToken,
) {
    loop {
        let accepted = tokio::select! {
            () = stop.cancelled() => return,
            a = listener.accept() => a,
        };
        let Ok((mut local, _)) = accepted else {
            // Out of file descriptors or similar: back off instead of spinning.
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let (remote, host, stop) = (remote.clone(), host.clone(), stop.clone());
        tokio::spawn(async move {
            let Ok(mut upstream) = remote.open_tcp(&host, port).await else {
                return;
            };
            tokio::select! {
                () = stop.cancelled() => {}
                _ = tokio::io::copy_bidirectional(&mut local, &mut upstream) => {}
            }
        });
    }
}
