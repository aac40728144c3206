//! Competition data without an environment: `kgenv data list`, `kgenv data pull` and
//! `kgenv.data` in Python. Both work through any [`Kaggle`] backend (the real one from
//! [`crate::wiring::kaggle_from_env`], or a mock) and report as the steps do, with
//! [`Event`]s of step `data/<competition>`.

use std::sync::Mutex;
use std::time::Instant;

use serde::{Deserialize, Serialize};

use super::Event;
pub use crate::backends::kaggle::DataFile;
use crate::backends::kaggle::Kaggle;
use crate::backends::Stream;
use crate::error::Result;
use crate::kaggle::PullEvent;
use crate::plan::Phase;

pub use crate::kaggle::PullOptions;

/// What a pull did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PullReport {
    /// The competition.
    pub competition: String,
    /// Where the files are.
    pub dest: String,
    /// Files the globs selected.
    pub selected: usize,
    /// `(file, bytes)` for each file fetched now.
    pub fetched: Vec<(String, u64)>,
    /// Files already complete at the destination.
    pub skipped: Vec<String>,
    /// Bytes transferred.
    pub bytes: u64,
    /// Wall time in milliseconds.
    pub elapsed_ms: u64,
}

/// The files of `competition`, with their sizes.
pub async fn list(kaggle: &dyn Kaggle, competition: &str) -> Result<Vec<DataFile>> {
    Ok(kaggle.list_files(competition).await?)
}

/// Downloads `competition`'s files selected by `opts` to `opts.dest` (a directory or
/// `gs://bucket/prefix`), a few files at a time, skipping those already complete there and
/// resuming partial ones. Progress streams as [`Event`]s of step `data/<competition>`.
pub async fn pull(
    kaggle: &dyn Kaggle,
    competition: &str,
    opts: &PullOptions,
    on_event: impl Fn(Event) + Send + Sync,
) -> Result<PullReport> {
    let step = format!("data/{competition}");
    let t0 = Instant::now();
    on_event(Event::Started {
        step: step.clone(),
        phase: Phase::Apply,
    });
    let files = Mutex::new((Vec::new(), Vec::new()));
    let log = |line: String| {
        on_event(Event::Log {
            step: step.clone(),
            stream: Stream::Stdout,
            line,
        })
    };
    let report = crate::kaggle::pull_with(kaggle, competition, opts, &|e: PullEvent| match e {
        PullEvent::Listed {
            files: n,
            selected,
            bytes,
            ..
        } => log(format!(
            "{selected} of {n} file(s) selected, {bytes} bytes to fetch"
        )),
        PullEvent::Skipped { file, .. } => {
            log(format!("{file}: already complete"));
            files.lock().unwrap_or_else(|p| p.into_inner()).1.push(file);
        }
        PullEvent::Started { file, size } => log(format!("{file}: fetching {size} bytes")),
        PullEvent::Progress {
            item,
            done,
            total,
            bytes_per_sec,
            eta_secs,
        } => on_event(Event::Progress {
            step: step.clone(),
            item,
            done,
            total,
            bytes_per_sec: Some(bytes_per_sec),
            eta_secs,
        }),
        PullEvent::Log { line } => log(line),
        PullEvent::Finished { file, bytes } => {
            log(format!("{file}: done ({bytes} bytes)"));
            files
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .0
                .push((file, bytes));
        }
    })
    .await?;
    on_event(Event::Done {
        step: step.clone(),
        phase: Phase::Apply,
        elapsed_ms: u64::try_from(t0.elapsed().as_millis()).unwrap_or(u64::MAX),
    });
    let (fetched, skipped) = files.into_inner().unwrap_or_else(|p| p.into_inner());
    Ok(PullReport {
        competition: competition.to_string(),
        dest: opts.dest.clone(),
        selected: report.selected,
        fetched,
        skipped,
        bytes: report.bytes,
        elapsed_ms: report.elapsed_ms,
    })
}
