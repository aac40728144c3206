//! `kgenv.data.download`: a competition's files, selected by glob, fetched through the
//! Kaggle backend to a destination, skipping files that are already complete there. The
//! same backend calls as the `data/<competition>` step, without an environment.

use kgenv_core::plan::{Event, Phase};
use kgenv_core::spec::Data;
use kgenv_core::{BackendError, Error};
use pyo3::prelude::*;
use serde_json::json;

use crate::run::{self, Emitter, Output, Run};
use crate::world::PyMockWorld;
use crate::{backends, errors};

/// Downloads `competition`'s files matching `files` to `dest` (an absolute directory or
/// `gs://bucket/prefix`). Progress streams as events of step `data/<competition>`; the
/// result is `{"competition", "dest", "fetched": [[name, bytes]], "skipped": [name]}`.
#[pyfunction]
#[pyo3(signature = (competition, dest, *, files=None, world=None, notify=None))]
pub(crate) fn start_download(
    py: Python<'_>,
    competition: &str,
    dest: &str,
    files: Option<Vec<String>>,
    world: Option<Bound<'_, PyMockWorld>>,
    notify: Option<Py<PyAny>>,
) -> PyResult<Run> {
    let mut b = Data::builder(competition).dest(dest);
    for f in files.unwrap_or_default() {
        b = b.files(f);
    }
    let spec = b
        .build()
        .map_err(|e| errors::validation(py, &e.field, &e.rule, e.to_string()))?;
    let kaggle = backends::resolve(world.as_ref().map(Bound::get))
        .map_err(|e| errors::to_py(py, &e.into()))?
        .kaggle;
    run::spawn(notify, move |emitter: Emitter, cancel| {
        run::cancellable(cancel, async move {
            let step = format!("data/{}", spec.competition);
            let t0 = std::time::Instant::now();
            emitter.event(Event::Started {
                step: step.clone(),
                phase: Phase::Apply,
            });
            let listed = kaggle.list_files(&spec.competition).await?;
            let selected: Vec<_> = listed
                .into_iter()
                .filter(|f| spec.selects(&f.name))
                .collect();
            if selected.is_empty() {
                return Err(Error::from(BackendError::NotFound {
                    resource: format!(
                        "files matching {:?} in competition {}",
                        spec.files, spec.competition
                    ),
                }));
            }
            let (mut fetched, mut skipped) = (Vec::new(), Vec::new());
            for f in &selected {
                if kaggle.present(&spec.dest, &f.name).await? == Some(f.size) {
                    skipped.push(f.name.clone());
                    continue;
                }
                let (em, st) = (emitter.clone(), step.clone());
                let progress = move |p: kgenv_core::backends::Progress| {
                    // Byte counts only: a download's log lines are not progress.
                    if !matches!(p, kgenv_core::backends::Progress::Line { .. }) {
                        em.event(Event::from_progress(&st, p));
                    }
                };
                let n = kaggle
                    .fetch(
                        &spec.competition,
                        f,
                        &kgenv_core::backends::kaggle::FetchOptions::new(&spec.dest)
                            .extract(spec.extract),
                        &progress,
                    )
                    .await?;
                fetched.push(json!([f.name, n]));
            }
            emitter.event(Event::Done {
                step,
                phase: Phase::Apply,
                elapsed_ms: t0.elapsed().as_millis() as u64,
            });
            Ok(Output::Download(
                json!({ "competition": spec.competition, "dest": spec.dest, "fetched": fetched, "skipped": skipped }),
            ))
        })
    })
}
