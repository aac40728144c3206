//! `kgenv.data` from Python: a competition's files (`list_files`) and a download to a
//! directory or `gs://` (`download`), through the core's [`runner::data`] on the real
//! Kaggle backend or a mock world's. Progress streams as events of step
//! `data/<competition>`.

use kgenv_core::runner::data::{self as runner_data, PullOptions};
use kgenv_core::spec::Data;
use kgenv_core::Error;
use pyo3::prelude::*;

use crate::errors;
use crate::run::{self, cancellable, Emitter, Output, Run};
use crate::world::PyMockWorld;

/// The mock world's Kaggle, or the real one (its credentials are read on first use, so a
/// missing token surfaces from the call).
fn kaggle(
    world: Option<&Bound<'_, PyMockWorld>>,
) -> std::sync::Arc<dyn kgenv_core::backends::Kaggle> {
    match world {
        Some(w) => w.get().world.backends().kaggle,
        None => kgenv_core::wiring::kaggle_from_env(),
    }
}

fn to_value(v: &impl serde::Serialize) -> Result<serde_json::Value, Error> {
    serde_json::to_value(v).map_err(|e| kgenv_core::BackendError::other(e.to_string()).into())
}

/// Downloads `competition`'s files matching `files` to `dest` (an absolute directory or
/// `gs://bucket/prefix`), unpacking zips with `extract`. The result is the core's
/// `PullReport` as a dictionary.
#[pyfunction]
#[pyo3(signature = (competition, dest, *, files=None, extract=false, world=None, notify=None))]
pub(crate) fn start_download(
    py: Python<'_>,
    competition: &str,
    dest: &str,
    files: Option<Vec<String>>,
    extract: bool,
    world: Option<Bound<'_, PyMockWorld>>,
    notify: Option<Py<PyAny>>,
) -> PyResult<Run> {
    // The spec's rules name the argument that is wrong before anything is sent.
    let mut b = Data::builder(competition).dest(dest).extract(extract);
    for f in files.unwrap_or_default() {
        b = b.files(f);
    }
    let spec = b
        .build()
        .map_err(|e| errors::validation(py, &e.field, &e.rule, e.to_string()))?;
    let mut opts = PullOptions::new(spec.dest.clone()).extract(spec.extract);
    for g in &spec.files {
        opts = opts.files(g.clone());
    }
    let kaggle = kaggle(world.as_ref());
    run::spawn(notify, move |emitter: Emitter, cancel| {
        cancellable(cancel, async move {
            let report = runner_data::pull(kaggle.as_ref(), &spec.competition, &opts, move |e| {
                emitter.event(e)
            })
            .await?;
            Ok(Output::Value(to_value(&report)?))
        })
    })
}

/// The files of `competition` as `[{"name", "size"}]`.
#[pyfunction]
#[pyo3(signature = (competition, *, world=None, notify=None))]
pub(crate) fn start_list(
    py: Python<'_>,
    competition: String,
    world: Option<Bound<'_, PyMockWorld>>,
    notify: Option<Py<PyAny>>,
) -> PyResult<Run> {
    if competition.trim().is_empty() {
        return Err(errors::validation(
            py,
            "competition",
            "is empty: use the slug from the competition's URL",
            "invalid `competition`: is empty".into(),
        ));
    }
    let kaggle = kaggle(world.as_ref());
    run::spawn(notify, move |_, cancel| {
        cancellable(cancel, async move {
            let files = runner_data::list(kaggle.as_ref(), &competition).await?;
            Ok(Output::Value(to_value(&files)?))
        })
    })
}
