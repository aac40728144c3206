//! `plan`, `up`, `down` and `status` started from Python: one core [`Runner`] per run,
//! with its own cancellation token, on the environment's backends and state directory.

use std::path::PathBuf;

use kgenv_core::plan::{RunOptions, Runner};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;

use crate::run::{self, Output, Run};
use crate::spec::EnvSpec;
use crate::world::PyMockWorld;
use crate::{backends, errors};

#[derive(Clone, Copy)]
enum Op {
    Plan,
    Up,
    Down,
    Status,
}

/// Starts `operation` (`plan`, `up`, `down` or `status`) on `spec`, on `world`'s mock
/// backends or (without one) the real backends. `notify` is called from another thread
/// whenever a message is ready (the asyncio layer uses it); without it, use `Run.wait`.
#[pyfunction]
#[pyo3(signature = (spec, operation, *, world=None, state_dir=None, only=Vec::new(), until=None, notify=None))]
#[allow(clippy::too_many_arguments)]
pub(crate) fn start_run(
    py: Python<'_>,
    spec: &Bound<'_, EnvSpec>,
    operation: &str,
    world: Option<Bound<'_, PyMockWorld>>,
    state_dir: Option<PathBuf>,
    only: Vec<String>,
    until: Option<String>,
    notify: Option<Py<PyAny>>,
) -> PyResult<Run> {
    let op = match operation {
        "plan" => Op::Plan,
        "up" => Op::Up,
        "down" => Op::Down,
        "status" => Op::Status,
        other => {
            return Err(PyValueError::new_err(format!(
                "unknown operation `{other}`: use plan, up, down or status"
            )))
        }
    };
    let world = world.as_ref().map(Bound::get);
    let backends = backends::resolve(world).map_err(|e| errors::to_py(py, &e.into()))?;
    let dir = backends::state_dir(state_dir, world);
    let env = (*spec.get().env).clone();
    let opts = RunOptions {
        only,
        until,
        ..RunOptions::default()
    };
    run::spawn(notify, move |emitter, cancel| async move {
        let runner = Runner::new(env, backends)
            .state_dir(dir)
            .cancel_token(cancel);
        let on_event = move |e| emitter.event(e);
        match op {
            Op::Plan => runner.plan(opts, on_event).await.map(Output::Report),
            Op::Up => runner.up(opts, on_event).await.map(Output::Report),
            Op::Down => runner.down(opts, on_event).await.map(Output::Report),
            Op::Status => runner.status(on_event).await.map(Output::Status),
        }
    })
}
