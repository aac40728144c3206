//! Every operation on an environment started from Python — `plan`, `up`, `down`,
//! `status`, `stop`, `start`, `move`, a command on the host or in the container, the container's
//! logs, the GPU report, autostop — as one core [`Runner`] call each, on the environment's
//! backends and state directory. Nothing here re-implements the core: it converts
//! arguments, starts the call as a [`Run`] and converts the result.

use std::path::PathBuf;
use std::time::Duration;

use kgenv_core::runner::{ExecRequest, LogOptions, RunOptions, Runner};
use kgenv_core::shell::Cmd;
use kgenv_core::Error;
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;

use crate::run::{self, cancellable, Output, Run};
use crate::spec::EnvSpec;
use crate::world::PyMockWorld;
use crate::{backends, errors};

/// The runner for `spec` on `world`'s mocks or the real backends, with its state in
/// `state_dir` (default: the world's own directory, else the XDG state dir).
pub(crate) fn runner(
    py: Python<'_>,
    spec: &Bound<'_, EnvSpec>,
    world: Option<&Bound<'_, PyMockWorld>>,
    state_dir: Option<PathBuf>,
) -> PyResult<Runner> {
    let world = world.map(Bound::get);
    let backends = backends::resolve(world).map_err(|e| errors::to_py(py, &e.into()))?;
    let runner = Runner::new((*spec.get().env).clone(), backends)
        .state_dir(backends::state_dir(state_dir, world));
    Ok(match world {
        // The simulated world has no real capacity to wait for: its capacity waits pause
        // milliseconds, so tests of `wait_for_capacity` take no minutes.
        Some(_) => runner.capacity_backoff(Duration::from_millis(20), Duration::from_millis(100)),
        None => runner,
    })
}

/// `wait_for_capacity=` as Python gives it: `None`/`False` (no wait), `True` (until
/// capacity or Ctrl-C), a duration string (`"2h"`, `"30m"`) or a number of seconds.
/// `Some(limit)` when it waits.
fn capacity_wait(v: Option<&Bound<'_, PyAny>>) -> PyResult<Option<Option<Duration>>> {
    let Some(v) = v.filter(|v| !v.is_none()) else {
        return Ok(None);
    };
    if v.is_instance_of::<pyo3::types::PyBool>() {
        return Ok(v.is_truthy()?.then_some(None));
    }
    if let Ok(s) = v.extract::<String>() {
        return kgenv_core::spec::parse_duration("wait_for_capacity", &s)
            .map(|d| Some(Some(d)))
            .map_err(|e| PyValueError::new_err(e.to_string()));
    }
    match v.extract::<f64>() {
        Ok(secs) if secs.is_finite() && secs > 0.0 => Ok(Some(Some(Duration::from_secs_f64(secs)))),
        Ok(secs) => Err(PyValueError::new_err(format!(
            "wait_for_capacity: {secs} seconds is not a positive duration"
        ))),
        Err(_) => Err(pyo3::exceptions::PyTypeError::new_err(format!(
            "wait_for_capacity must be True, a duration like \"2h\" or a number of seconds, got {}",
            v.get_type().name()?
        ))),
    }
}

/// The run options of a Python call.
fn run_options(
    only: Vec<String>,
    until: Option<String>,
    delete_buckets: Vec<String>,
    delete_disks: Vec<String>,
    yes: bool,
) -> RunOptions {
    let mut opts = RunOptions {
        only,
        until,
        yes,
        ..RunOptions::default()
    };
    for b in delete_buckets {
        opts = opts.delete_bucket(b);
    }
    for d in delete_disks {
        opts = opts.delete_disk(d);
    }
    opts
}

/// Starts `operation` (`plan`, `up`, `down`, `status`, `stop`, `start`, or `move` with
/// `zone`). `notify` is
/// called from another thread whenever a message is ready (the asyncio layer uses it);
/// without it, use `Run.wait`.
///
/// Nobody can answer a question from here: without `yes`, `down` (when it would delete
/// something), `move` and an `up` change that restarts the VM fail with the core's
/// `NotConfirmed` error (`kgenv.ConfirmationRequiredError`) and change nothing of it.
#[pyfunction]
#[pyo3(signature = (spec, operation, *, world=None, state_dir=None, only=Vec::new(), until=None, delete_buckets=Vec::new(), delete_disks=Vec::new(), yes=false, zone=None, wait_for_capacity=None, notify=None))]
#[allow(clippy::too_many_arguments)]
pub(crate) fn start_run(
    py: Python<'_>,
    spec: &Bound<'_, EnvSpec>,
    operation: &str,
    world: Option<Bound<'_, PyMockWorld>>,
    state_dir: Option<PathBuf>,
    only: Vec<String>,
    until: Option<String>,
    delete_buckets: Vec<String>,
    delete_disks: Vec<String>,
    yes: bool,
    zone: Option<String>,
    wait_for_capacity: Option<Bound<'_, PyAny>>,
    notify: Option<Py<PyAny>>,
) -> PyResult<Run> {
    let operation = operation.to_string();
    if !["plan", "up", "down", "status", "stop", "start", "move"].contains(&operation.as_str()) {
        return Err(PyValueError::new_err(format!(
            "unknown operation `{operation}`: use plan, up, down, status, stop, start or move"
        )));
    }
    if (operation == "move") != zone.is_some() {
        return Err(PyValueError::new_err(
            "`zone` goes with the `move` operation, and only with it",
        ));
    }
    let mut opts = run_options(only, until, delete_buckets, delete_disks, yes);
    if let Some(limit) = capacity_wait(wait_for_capacity.as_ref())? {
        if !["up", "start"].contains(&operation.as_str()) {
            return Err(PyValueError::new_err(
                "`wait_for_capacity` goes with `up` and `start` only",
            ));
        }
        opts = opts.wait_for_capacity(limit);
    }
    let runner = runner(py, spec, world.as_ref(), state_dir)?;
    run::spawn(notify, move |emitter, cancel| async move {
        let runner = runner.cancel_token(cancel);
        let on_event = move |e| emitter.event(e);
        match operation.as_str() {
            "plan" => runner.plan(opts, on_event).await.map(Output::Report),
            "up" => runner.up(opts, on_event).await.map(Output::Report),
            "down" => runner
                .down_confirmed(opts, |_| false, on_event)
                .await
                .map(Output::Report),
            "move" => runner
                .move_to(
                    zone.as_deref().unwrap_or_default(),
                    opts,
                    |_| false,
                    on_event,
                )
                .await
                .map(Output::Report),
            "stop" => runner.stop(on_event).await.map(Output::Report),
            "start" => runner.start_with(opts, on_event).await.map(Output::Report),
            _ => runner
                .status(on_event)
                .await
                .map(|s| Output::Status(Box::new(s))),
        }
    })
}

/// What `down` with these options would delete and keep (`DownPreview` as a dictionary),
/// read from the state file: no call, no change.
#[pyfunction]
#[pyo3(signature = (spec, *, world=None, state_dir=None, only=Vec::new(), until=None, delete_buckets=Vec::new(), delete_disks=Vec::new(), notify=None))]
#[allow(clippy::too_many_arguments)]
pub(crate) fn start_down_preview(
    py: Python<'_>,
    spec: &Bound<'_, EnvSpec>,
    world: Option<Bound<'_, PyMockWorld>>,
    state_dir: Option<PathBuf>,
    only: Vec<String>,
    until: Option<String>,
    delete_buckets: Vec<String>,
    delete_disks: Vec<String>,
    notify: Option<Py<PyAny>>,
) -> PyResult<Run> {
    let opts = run_options(only, until, delete_buckets, delete_disks, false);
    let runner = runner(py, spec, world.as_ref(), state_dir)?;
    run::spawn(notify, move |_, cancel| {
        cancellable(cancel, async move {
            let preview = runner.down_preview(&opts).await?;
            let value = serde_json::to_value(&preview)
                .map_err(|e| Error::from(kgenv_core::BackendError::other(e.to_string())))?;
            Ok(Output::Value(value))
        })
    })
}

/// A command as the shell line the host runs: a list is quoted word by word with kgenv's
/// quoting; a string is the shell line it is.
fn shell_line(command: &Bound<'_, PyAny>) -> PyResult<String> {
    if let Ok(s) = command.extract::<String>() {
        return Ok(s);
    }
    let words: Vec<String> = command
        .extract()
        .map_err(|_| PyValueError::new_err("command must be a str or a list of str"))?;
    let (first, rest) = words
        .split_first()
        .ok_or_else(|| PyValueError::new_err("command is empty"))?;
    Ok(Cmd::new(first).args(rest).line())
}

/// Runs `command` on the host over SSH. Output lines stream as `log` events of step `ssh`;
/// the result is `{"exit_code", "stdout", "stderr"}`.
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
    let line = shell_line(command)?;
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
    let runner = runner(py, spec, world.as_ref(), state_dir)?;
    run::spawn(notify, move |emitter, cancel| {
        cancellable(cancel, async move {
            let out = runner.ssh(req, move |e| emitter.event(e)).await?;
            Ok(Output::Exec(out.exit_code, out.stdout, out.stderr))
        })
    })
}

/// Runs `command` (a list of words, no shell) in the environment's container. Output
/// lines stream as `log` events of step `exec`; the result is like `start_ssh`'s.
#[pyfunction]
#[pyo3(signature = (spec, command, *, world=None, state_dir=None, notify=None))]
pub(crate) fn start_exec(
    py: Python<'_>,
    spec: &Bound<'_, EnvSpec>,
    command: Vec<String>,
    world: Option<Bound<'_, PyMockWorld>>,
    state_dir: Option<PathBuf>,
    notify: Option<Py<PyAny>>,
) -> PyResult<Run> {
    if command.is_empty() {
        return Err(PyValueError::new_err("command is empty"));
    }
    let runner = runner(py, spec, world.as_ref(), state_dir)?;
    run::spawn(notify, move |emitter, cancel| {
        cancellable(cancel, async move {
            let out = runner.exec(&command, move |e| emitter.event(e)).await?;
            Ok(Output::Exec(out.exit_code, out.stdout, out.stderr))
        })
    })
}

/// The container's logs: each line as a `log` event of step `logs`, and all of them as the
/// result. With `follow`, until the container stops or the run is cancelled.
#[pyfunction]
#[pyo3(signature = (spec, *, world=None, state_dir=None, follow=false, tail=None, notify=None))]
pub(crate) fn start_logs(
    py: Python<'_>,
    spec: &Bound<'_, EnvSpec>,
    world: Option<Bound<'_, PyMockWorld>>,
    state_dir: Option<PathBuf>,
    follow: bool,
    tail: Option<u64>,
    notify: Option<Py<PyAny>>,
) -> PyResult<Run> {
    let runner = runner(py, spec, world.as_ref(), state_dir)?;
    let opts = LogOptions {
        follow,
        tail,
        timestamps: false,
    };
    run::spawn(notify, move |emitter, cancel| {
        cancellable(cancel, async move {
            let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
            let kept = lines.clone();
            runner
                .logs(opts, move |e| {
                    if let kgenv_core::runner::Event::Log { line, .. } = &e {
                        kept.lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .push(line.clone());
                    }
                    emitter.event(e);
                })
                .await?;
            let lines = std::mem::take(&mut *lines.lock().unwrap_or_else(|p| p.into_inner()));
            Ok(Output::Lines(lines))
        })
    })
}

/// What the container sees of the GPU, as the core's `GpuReport` (a dictionary).
#[pyfunction]
#[pyo3(signature = (spec, *, world=None, state_dir=None, notify=None))]
pub(crate) fn start_gpu(
    py: Python<'_>,
    spec: &Bound<'_, EnvSpec>,
    world: Option<Bound<'_, PyMockWorld>>,
    state_dir: Option<PathBuf>,
    notify: Option<Py<PyAny>>,
) -> PyResult<Run> {
    let runner = runner(py, spec, world.as_ref(), state_dir)?;
    run::spawn(notify, move |_, cancel| {
        cancellable(cancel, async move {
            let report = runner.gpu_report().await?;
            let value = serde_json::to_value(&report)
                .map_err(|e| Error::from(kgenv_core::BackendError::other(e.to_string())))?;
            Ok(Output::Value(value))
        })
    })
}

/// Installs the idle agent with `minutes`, or removes it with `None`, on the running VM.
#[pyfunction]
#[pyo3(signature = (spec, minutes, *, world=None, state_dir=None, notify=None))]
pub(crate) fn start_autostop(
    py: Python<'_>,
    spec: &Bound<'_, EnvSpec>,
    minutes: Option<u32>,
    world: Option<Bound<'_, PyMockWorld>>,
    state_dir: Option<PathBuf>,
    notify: Option<Py<PyAny>>,
) -> PyResult<Run> {
    let runner = runner(py, spec, world.as_ref(), state_dir)?;
    run::spawn(notify, move |emitter, cancel| async move {
        let runner = runner.cancel_token(cancel);
        runner.autostop(minutes, move |e| emitter.event(e)).await?;
        Ok(Output::Value(
            serde_json::json!({ "idle_minutes": minutes }),
        ))
    })
}
