//! The Kaggle backend trait: list a competition's files and fetch them to a destination,
//! with the per-call choices of a fetch in [`FetchOptions`], and the one rule for which
//! listed files a set of globs selects ([`FileSelection`]).

use std::sync::Arc;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use super::{BackendResult, ProgressFn, Remote};
use crate::error::BackendError;

/// One file of a competition's data.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DataFile {
    /// Path within the competition's data, e.g. `train/images/0001.png`.
    pub name: String,
    /// Size in bytes.
    pub size: u64,
}

/// Which of a competition's files a list of globs selects: the one rule shared by
/// `[[data]] files`, the data step and `kgenv data pull --files`. `*` matches across `/`
/// (`*.png` selects `train/a.png`), and no globs at all select every file.
///
/// ```
/// use kgenv_core::backends::kaggle::FileSelection;
/// let sel = FileSelection::new(&["*.csv"])?;
/// assert!(sel.matches("dir/train.csv"));
/// assert!(!sel.matches("train.zip"));
/// assert!(FileSelection::new::<&str>(&[])?.matches("anything"));
/// # Ok::<(), kgenv_core::BackendError>(())
/// ```
#[derive(Debug, Clone)]
pub struct FileSelection {
    /// `None`: no globs, everything is selected.
    set: Option<globset::GlobSet>,
}

impl FileSelection {
    /// The selection `globs` make; a glob that does not parse is an error naming it.
    pub fn new<S: AsRef<str>>(globs: &[S]) -> BackendResult<Self> {
        if globs.is_empty() {
            return Ok(Self { set: None });
        }
        let mut b = globset::GlobSetBuilder::new();
        for g in globs {
            let g = g.as_ref();
            b.add(
                globset::Glob::new(g).map_err(|e| BackendError::InvalidArgument {
                    resource: format!("glob `{g}`"),
                    message: e.to_string(),
                })?,
            );
        }
        let set = b.build().map_err(|e| BackendError::InvalidArgument {
            resource: "file globs".into(),
            message: e.to_string(),
        })?;
        Ok(Self { set: Some(set) })
    }

    /// Whether the file called `name` (its path within the competition) is selected.
    pub fn matches(&self, name: &str) -> bool {
        self.set.as_ref().is_none_or(|s| s.is_match(name))
    }

    /// The selected files of `files`, in their order.
    pub fn select(&self, files: Vec<DataFile>) -> Vec<DataFile> {
        files
            .into_iter()
            .filter(|f| self.matches(&f.name))
            .collect()
    }
}

/// Where one file goes and what is done with it there: the per-call choices of
/// [`Kaggle::fetch`]. A data step and a pull each pass their own, so one backend serves
/// both (the choice is not baked into the backend when it is built).
///
/// ```
/// use kgenv_core::backends::kaggle::FetchOptions;
/// let opts = FetchOptions::new("/data/titanic").extract(true);
/// assert!(opts.extract);
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct FetchOptions {
    /// A directory, or `gs://bucket/prefix`.
    pub dest: String,
    /// Unpack the file when it lands as a `.zip` (Kaggle wraps large files in one, and some
    /// competitions list zips), removing the archive. Directory destinations only: a
    /// backend refuses it for `gs://` (unpack from the bucket's gcsfuse mount instead).
    pub extract: bool,
}

impl FetchOptions {
    /// To `dest`, as served (no extraction).
    pub fn new(dest: impl Into<String>) -> Self {
        Self {
            dest: dest.into(),
            extract: false,
        }
    }

    /// Whether to unpack zips (the `extract` field).
    #[must_use]
    pub fn extract(mut self, yes: bool) -> Self {
        self.extract = yes;
        self
    }
}

/// The free space where a destination lands, as a pull sees it before fetching.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DestSpace {
    /// The directory measured: the destination, or its nearest existing parent when the
    /// destination is not made yet (it will be made on the same file system).
    pub path: String,
    /// Bytes an unprivileged writer may still use there (`statvfs` `f_bavail`, what `df`
    /// shows as available).
    pub free: u64,
    /// Bytes that unfinished downloads of the asked files already hold there (their
    /// `.kgenv-partial` files' allocated blocks): resuming them needs only the rest.
    pub held: u64,
}

/// Kaggle's competition data API together with the downloader that lands files at a
/// destination (a directory, or `gs://bucket/prefix`). Where the destination is on a
/// remote host, the implementation runs there.
#[async_trait]
pub trait Kaggle: Send + Sync {
    /// Files of a competition.
    async fn list_files(&self, competition: &str) -> BackendResult<Vec<DataFile>>;
    /// Size of `file` at `dest` when it is fully there, `None` when absent or partial.
    async fn present(&self, dest: &str, file: &str) -> BackendResult<Option<u64>>;
    /// Fetches one file to `opts.dest` (unpacking it when `opts.extract` asks), resuming a
    /// partial download; returns the bytes transferred.
    async fn fetch(
        &self,
        competition: &str,
        file: &DataFile,
        opts: &FetchOptions,
        progress: ProgressFn<'_>,
    ) -> BackendResult<u64>;
    /// The free space at `dest` (a directory) and what partial downloads of `files` (listed
    /// names) already hold there, so a pull can refuse before fetching. `None` when this
    /// backend cannot tell (a `gs://` destination, which has no size limit; a mock).
    async fn space(&self, dest: &str, files: &[String]) -> BackendResult<Option<DestSpace>> {
        let _ = (dest, files);
        Ok(None)
    }
    /// The same backend working ON `host`, so data goes from Kaggle to the host directly
    /// (the real backend copies kgenv there and runs its data agent, see
    /// `kaggle::agent`). `None`: this backend runs where it is (mocks, remote backends).
    fn on_host(&self, host: Arc<dyn Remote>) -> BackendResult<Option<Arc<dyn Kaggle>>> {
        let _ = host;
        Ok(None)
    }
    /// A backend that only LOOKS at `host` for `plan` and `status`: it answers
    /// [`Kaggle::present`] and [`Kaggle::space`] there without copying anything to the host
    /// or sending credentials, and fails with [`BackendError::Unavailable`] where that is
    /// not possible (so the plan shows the outcome as unknown). `None`, as for
    /// [`Kaggle::on_host`]: this backend observes where it is.
    fn observer_on_host(&self, host: Arc<dyn Remote>) -> BackendResult<Option<Arc<dyn Kaggle>>> {
        let _ = host;
        Ok(None)
    }
}
