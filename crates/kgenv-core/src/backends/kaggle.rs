//! The Kaggle backend trait: list a competition's files and fetch them to a destination,
//! with the per-call choices of a fetch in [`FetchOptions`].

use std::sync::Arc;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use super::{BackendResult, ProgressFn, Remote};

/// One file of a competition's data.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DataFile {
    /// Path within the competition's data, e.g. `train/images/0001.png`.
    pub name: String,
    /// Size in bytes.
    pub size: u64,
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
    /// The same backend working ON `host`, so data goes from Kaggle to the host directly
    /// (the real backend copies kgenv there and runs its data agent, see
    /// `kaggle::agent`). `None`: this backend runs where it is (mocks, remote backends).
    fn on_host(&self, host: Arc<dyn Remote>) -> BackendResult<Option<Arc<dyn Kaggle>>> {
        let _ = host;
        Ok(None)
    }
}
