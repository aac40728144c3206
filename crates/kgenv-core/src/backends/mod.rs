//! Backend traits: the only doors through which steps reach the outside world.
//!
//! This module holds the traits and the values they exchange, and depends on nothing but
//! [`crate::error`]. Each trait has a real client (`gce`, `gcs`, `ssh`, `docker`, `kaggle`,
//! `github`, `billing`, assembled from the environment by [`crate::wiring`]) and a stateful
//! in-memory mock in [`crate::mock`]. Steps never talk HTTP, SSH or Docker directly, which is what
//! makes every step testable on mocks and every backend testable against a real peer.

pub mod billing;
pub mod compute;
pub mod container;
pub mod github;
pub mod kaggle;
pub mod meter;
pub mod remote;
pub mod storage;
pub mod unavailable;

use std::sync::Arc;

pub use billing::Billing;
pub use compute::Compute;
pub use container::{ContainerEngine, EngineConnector};
pub use github::GitHub;
pub use kaggle::Kaggle;
pub use meter::Meter;
pub use remote::{Remote, RemoteConnector, SshAliases};
pub use storage::Storage;

use crate::error::BackendError;

/// Result alias for backend calls.
pub type BackendResult<T> = std::result::Result<T, BackendError>;

/// Something a long backend call reports while it works.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Progress {
    /// Bytes done out of an optional total, for one named item (a layer, a file).
    Bytes {
        /// What is being transferred.
        item: String,
        /// Bytes done so far.
        done: u64,
        /// Total bytes, when known.
        total: Option<u64>,
    },
    /// Bytes of a long transfer (a download), with its measured rate and the time it
    /// expects to need for the rest. Sinks that only know [`Progress::Bytes`] can treat it
    /// the same way.
    Transfer {
        /// What is being transferred: a file name, or `total` for all files of a pull.
        item: String,
        /// Bytes done so far.
        done: u64,
        /// Total bytes, when known.
        total: Option<u64>,
        /// Recent rate in bytes per second (smoothed).
        bytes_per_sec: u64,
        /// Seconds left at the recent rate, when the total is known and the rate is not 0.
        eta_secs: Option<u64>,
    },
    /// One line of output.
    Line {
        /// Which stream it came from.
        stream: Stream,
        /// The line, without its newline.
        line: String,
    },
}

/// Output stream of a command.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Stream {
    /// Standard output.
    Stdout,
    /// Standard error.
    Stderr,
}

/// Where a backend reports progress. Calls that have nothing to report ignore it.
pub type ProgressFn<'a> = &'a (dyn Fn(Progress) + Send + Sync);

/// A progress sink that drops everything.
pub fn no_progress(_: Progress) {}

/// Every backend a run needs, shared by all steps.
#[derive(Clone)]
pub struct Backends {
    /// Google Compute Engine.
    pub compute: Arc<dyn Compute>,
    /// Google Cloud Storage.
    pub storage: Arc<dyn Storage>,
    /// Opens SSH sessions to hosts.
    pub remote: Arc<dyn RemoteConnector>,
    /// Opens Docker engines, locally or through a host's SSH session.
    pub engine: Arc<dyn EngineConnector>,
    /// Kaggle's API and downloader.
    pub kaggle: Arc<dyn Kaggle>,
    /// GitHub's keys API.
    pub github: Arc<dyn GitHub>,
    /// Compute Engine's list prices (the Cloud Billing Catalog API).
    pub billing: Arc<dyn Billing>,
    /// The user's OpenSSH config, for the `ssh <env>` alias; `None` leaves it alone
    /// (mocks, tests, library use without a home directory).
    pub ssh_aliases: Option<Arc<dyn SshAliases>>,
}

impl std::fmt::Debug for Backends {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Backends").finish_non_exhaustive()
    }
}
