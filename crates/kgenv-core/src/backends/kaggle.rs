//! The Kaggle backend trait: list a competition's files and fetch them to a destination.

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

/// Kaggle's competition data API together with the downloader that lands files at a
/// destination (a directory, or `gs://bucket/prefix`). Where the destination is on a
/// remote host, the implementation runs there.
#[async_trait]
pub trait Kaggle: Send + Sync {
    /// Files of a competition.
    async fn list_files(&self, competition: &str) -> BackendResult<Vec<DataFile>>;
    /// Size of `file` at `dest` when it is fully there, `None` when absent or partial.
    async fn present(&self, dest: &str, file: &str) -> BackendResult<Option<u64>>;
    /// Fetches one file to `dest`, resuming a partial download; returns the bytes written.
    async fn fetch(
        &self,
        competition: &str,
        file: &DataFile,
        dest: &str,
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
