//! Competition data without an environment: `kgenv data list`, `kgenv data pull` and
//! `kgenv.data` in Python. Both work through any [`Kaggle`] backend (the real one from
//! [`crate::wiring::kaggle_from_env`], or a mock's) and a pull is the data step's own
//! operation ([`crate::steps::data::pull`]), reporting as the step does: [`Event`]s of step
//! `data/<competition>`.

use std::time::Instant;

use tokio_util::sync::CancellationToken;

use super::Event;
use crate::backends::kaggle::Kaggle;
use crate::error::Result;
use crate::plan::{EventSink, Phase};
use crate::steps::data::{PullPlan, PARALLEL_FILES, PULL_SPACE_REMEDY};

pub use crate::backends::kaggle::DataFile;
pub use crate::steps::data::PullReport;

/// What to pull and how.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct PullOptions {
    /// A directory or `gs://bucket/prefix`.
    pub dest: String,
    /// File globs (`*` matches across `/`); empty means every file.
    pub files: Vec<String>,
    /// Unpack the `.zip` files Kaggle serves (directory destinations).
    pub extract: bool,
    /// Files fetched at the same time (default 4); each uses the downloader's streams.
    pub parallel_files: usize,
}

impl PullOptions {
    /// Every file to `dest`, a few at a time.
    pub fn new(dest: impl Into<String>) -> Self {
        Self {
            dest: dest.into(),
            files: Vec::new(),
            extract: false,
            parallel_files: PARALLEL_FILES,
        }
    }
    /// Adds a file glob.
    #[must_use]
    pub fn files(mut self, glob: impl Into<String>) -> Self {
        self.files.push(glob.into());
        self
    }
    /// Unpacks zips.
    #[must_use]
    pub fn extract(mut self, yes: bool) -> Self {
        self.extract = yes;
        self
    }
    /// Files at the same time (at least 1).
    #[must_use]
    pub fn parallel_files(mut self, n: usize) -> Self {
        self.parallel_files = n.max(1);
        self
    }
}

/// The files of `competition`, with their sizes.
pub async fn list(kaggle: &dyn Kaggle, competition: &str) -> Result<Vec<DataFile>> {
    Ok(kaggle.list_files(competition).await?)
}

/// Downloads `competition`'s files selected by `opts` to `opts.dest` (a directory or
/// `gs://bucket/prefix`), a few files at a time, skipping those already complete there and
/// resuming partial ones. Progress streams as [`Event`]s of step `data/<competition>`.
///
/// Before anything is fetched, a destination with too little free space fails the pull
/// with [`BackendError::InsufficientSpace`](crate::BackendError::InsufficientSpace)
/// (see [`crate::steps::data`] for how the need is counted).
pub async fn pull(
    kaggle: &dyn Kaggle,
    competition: &str,
    opts: &PullOptions,
    on_event: impl Fn(Event) + Send + Sync + 'static,
) -> Result<PullReport> {
    let plan = PullPlan {
        competition: competition.to_string(),
        files: opts.files.clone(),
        dest: opts.dest.clone(),
        extract: opts.extract,
        parallel_files: opts.parallel_files,
        space_remedy: PULL_SPACE_REMEDY.into(),
    };
    let events = EventSink::new(on_event);
    let t0 = Instant::now();
    events.emit(Event::Started {
        step: plan.step_id(),
        phase: Phase::Apply,
    });
    // Dropping the future stops the pull; partial files resume on the next one.
    let report =
        crate::steps::data::pull(kaggle, &plan, &events, &CancellationToken::new()).await?;
    events.emit(Event::Done {
        step: plan.step_id(),
        phase: Phase::Apply,
        elapsed_ms: u64::try_from(t0.elapsed().as_millis()).unwrap_or(u64::MAX),
    });
    Ok(report)
}
