//! `kgenv data list` and `kgenv data pull` as library calls: select a competition's files by
//! glob, skip those already at the destination, fetch the rest (a few files at a time, each
//! over parallel streams), and report per-file and total progress with rate and ETA.
//!
//! [`pull_with`] works over any [`Kaggle`] backend — local, `gs://`, or a remote host
//! through [`super::RemoteKaggle`] — so the same events come out wherever the bytes go.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use futures::TryStreamExt;
use serde::{Deserialize, Serialize};

use super::data::KaggleData;
use super::KaggleClient;
use crate::backends::kaggle::{DataFile, FetchOptions, FileSelection, Kaggle};
use crate::backends::{BackendResult, Progress};
use crate::download::progress::Meter;
use crate::download::DownloadOptions;
use crate::error::BackendError;

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
    /// Files fetched at the same time (default 4); each uses `download.concurrency` streams.
    pub parallel_files: usize,
    /// Downloader settings.
    pub download: DownloadOptions,
}

impl PullOptions {
    /// Every file to `dest`, default settings.
    pub fn new(dest: impl Into<String>) -> Self {
        Self {
            dest: dest.into(),
            files: Vec::new(),
            extract: false,
            parallel_files: 4,
            download: DownloadOptions::default(),
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
    /// Files at the same time.
    #[must_use]
    pub fn parallel_files(mut self, n: usize) -> Self {
        self.parallel_files = n.max(1);
        self
    }
    /// Downloader settings.
    #[must_use]
    pub fn download(mut self, opts: DownloadOptions) -> Self {
        self.download = opts;
        self
    }
}

/// Something a pull reports; `--json` prints one per line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum PullEvent {
    /// The competition's files were listed and selected.
    Listed {
        /// Competition.
        competition: String,
        /// Files in the competition.
        files: usize,
        /// Files the globs select.
        selected: usize,
        /// Bytes of the selected files that are not at the destination yet.
        bytes: u64,
    },
    /// Already at the destination.
    Skipped {
        /// File.
        file: String,
        /// Its size.
        size: u64,
    },
    /// A file started.
    Started {
        /// File.
        file: String,
        /// Listed size.
        size: u64,
    },
    /// Bytes of one file, or of all (`item` = `total`).
    Progress {
        /// File name, or `total`.
        item: String,
        /// Bytes done.
        done: u64,
        /// Bytes in all.
        total: Option<u64>,
        /// Recent rate.
        bytes_per_sec: u64,
        /// Seconds left.
        eta_secs: Option<u64>,
    },
    /// A message (a retry, an extraction).
    Log {
        /// The line.
        line: String,
    },
    /// A file is at the destination.
    Finished {
        /// File.
        file: String,
        /// Bytes transferred for it in this run.
        bytes: u64,
    },
}

/// What a pull did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PullReport {
    /// Files selected.
    pub selected: usize,
    /// Files fetched now.
    pub fetched: usize,
    /// Files already there.
    pub skipped: usize,
    /// Bytes transferred.
    pub bytes: u64,
    /// Wall time in milliseconds.
    pub elapsed_ms: u64,
}

/// The files of `competition`, with the Kaggle client configured from the environment.
pub async fn list_files(competition: &str) -> BackendResult<Vec<DataFile>> {
    KaggleClient::from_env()?.list_files(competition).await
}

/// Pulls `competition` with the client configured from the environment (local or `gs://`
/// destination).
pub async fn pull(
    competition: &str,
    opts: &PullOptions,
    on_event: &(dyn Fn(PullEvent) + Send + Sync),
) -> BackendResult<PullReport> {
    let data = KaggleData::from_env(opts.download.clone())?;
    pull_with(&data, competition, opts, on_event).await
}

struct Totals {
    meter: Meter,
    finished: u64,
    running: HashMap<String, u64>,
    last: Instant,
}

/// Pulls `competition` through `kaggle` (any backend).
pub async fn pull_with(
    kaggle: &dyn Kaggle,
    competition: &str,
    opts: &PullOptions,
    on_event: &(dyn Fn(PullEvent) + Send + Sync),
) -> BackendResult<PullReport> {
    let started = Instant::now();
    let all = kaggle.list_files(competition).await?;
    let n_all = all.len();
    let selected = FileSelection::new(&opts.files)?.select(all);
    if selected.is_empty() {
        return Err(BackendError::NotFound {
            resource: format!(
                "files matching {:?} in competition {competition}",
                opts.files
            ),
        });
    }
    let mut missing = Vec::new();
    let mut skipped = 0;
    for f in &selected {
        if kaggle.present(&opts.dest, &f.name).await? == Some(f.size) {
            skipped += 1;
            on_event(PullEvent::Skipped {
                file: f.name.clone(),
                size: f.size,
            });
        } else {
            missing.push(f.clone());
        }
    }
    let total: u64 = missing.iter().map(|f| f.size).sum();
    let fetch = FetchOptions::new(&opts.dest).extract(opts.extract);
    on_event(PullEvent::Listed {
        competition: competition.into(),
        files: n_all,
        selected: selected.len(),
        bytes: total,
    });

    let totals = Mutex::new(Totals {
        meter: Meter::new("total", Some(total), 0),
        finished: 0,
        running: HashMap::new(),
        last: Instant::now(),
    });
    let emit_total = |force: bool| {
        let Ok(mut t) = totals.lock() else { return };
        if !force && t.last.elapsed() < Duration::from_millis(250) {
            return;
        }
        t.last = Instant::now();
        let done = t.finished + t.running.values().sum::<u64>();
        t.meter.update(done);
        if let Progress::Transfer {
            item,
            done,
            total,
            bytes_per_sec,
            eta_secs,
        } = t.meter.progress(done)
        {
            on_event(PullEvent::Progress {
                item,
                done,
                total,
                bytes_per_sec,
                eta_secs,
            });
        }
    };
    let bytes = std::sync::atomic::AtomicU64::new(0);
    let fetched = std::sync::atomic::AtomicUsize::new(0);
    futures::stream::iter(missing.iter().map(Ok::<_, BackendError>))
        .try_for_each_concurrent(opts.parallel_files.max(1), |f| {
            let (totals, emit_total, bytes, fetched, fetch) =
                (&totals, &emit_total, &bytes, &fetched, &fetch);
            async move {
                on_event(PullEvent::Started {
                    file: f.name.clone(),
                    size: f.size,
                });
                let progress = |p: Progress| match p {
                    Progress::Transfer {
                        item,
                        done,
                        total,
                        bytes_per_sec,
                        eta_secs,
                    } => {
                        if let Ok(mut t) = totals.lock() {
                            t.running.insert(
                                f.name.clone(),
                                if f.size > 0 { done.min(f.size) } else { done },
                            );
                        }
                        on_event(PullEvent::Progress {
                            item,
                            done,
                            total,
                            bytes_per_sec,
                            eta_secs,
                        });
                        emit_total(false);
                    }
                    Progress::Bytes { item, done, total } => {
                        on_event(PullEvent::Progress {
                            item,
                            done,
                            total,
                            bytes_per_sec: 0,
                            eta_secs: None,
                        });
                    }
                    Progress::Line { line, .. } => on_event(PullEvent::Log { line }),
                };
                let n = kaggle.fetch(competition, f, fetch, &progress).await?;
                if let Ok(mut t) = totals.lock() {
                    t.running.remove(&f.name);
                    t.finished += f.size;
                }
                bytes.fetch_add(n, std::sync::atomic::Ordering::Relaxed);
                fetched.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                on_event(PullEvent::Finished {
                    file: f.name.clone(),
                    bytes: n,
                });
                emit_total(true);
                Ok(())
            }
        })
        .await?;
    Ok(PullReport {
        selected: selected.len(),
        fetched: fetched.into_inner(),
        skipped,
        bytes: bytes.into_inner(),
        elapsed_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
    })
}
