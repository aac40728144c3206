//! Google Cloud Storage through its JSON API: buckets (the [`Storage`](crate::backends::Storage) trait: get, create
//! with uniform bucket-level access, delete), object metadata, and resumable uploads in
//! multiples of 256 KiB that resume from the `Range` of the server's 308 answers.
//!
//! Where it connects and how it authenticates follows Google's client libraries:
//! `STORAGE_EMULATOR_HOST` (e.g. `127.0.0.1:4443` or `http://127.0.0.1:4443`) sends every
//! request to an emulator without credentials; otherwise `GOOGLE_OAUTH_ACCESS_TOKEN` is
//! used as a static bearer token when set, else Application Default Credentials
//! ([`crate::google_auth`], scope `devstorage.full_control`).
//!
//! The files: `model` (typed bodies), `api` (request builders, no I/O), `errors` (statuses
//! → typed errors), `client` ([`GcsClient`] on the shared [`crate::http`] transport, with
//! retries) and [`upload`] (resumable uploads, with their own resume protocol).
//!
//! ```no_run
//! # async fn demo() -> kgenv_core::backends::BackendResult<()> {
//! use kgenv_core::backends::Storage;
//! let gcs = kgenv_core::gcs::GcsClient::from_env()?;
//! if gcs.get_bucket("my-kaggle-data").await?.is_none() {
//!     gcs.create_bucket("my-project", "my-kaggle-data", "us-central1").await?;
//! }
//! # Ok(()) }
//! ```

mod api;
mod client;
mod errors;
mod model;
pub mod upload;

pub use client::{GcsClient, RETRY};
pub use model::ObjectInfo;
pub use upload::{ResumableUpload, SavedUpload};

use crate::error::BackendError;

/// A `gs://bucket/prefix` location.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GsPath {
    /// Bucket name.
    pub bucket: String,
    /// Object name prefix without leading or trailing `/` (may be empty).
    pub prefix: String,
}

impl GsPath {
    /// Parses `gs://bucket[/prefix]`; `None` when `s` is not a `gs://` URL.
    pub fn parse(s: &str) -> Option<Self> {
        let rest = s.strip_prefix("gs://")?;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return None;
        }
        Some(Self {
            bucket: bucket.to_string(),
            prefix: prefix.trim_matches('/').to_string(),
        })
    }

    /// The object name for `file` under the prefix.
    pub fn object(&self, file: &str) -> String {
        let file = file.trim_start_matches('/');
        if self.prefix.is_empty() {
            file.to_string()
        } else {
            format!("{}/{file}", self.prefix)
        }
    }
}

impl std::fmt::Display for GsPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.prefix.is_empty() {
            write!(f, "gs://{}", self.bucket)
        } else {
            write!(f, "gs://{}/{}", self.bucket, self.prefix)
        }
    }
}

/// Whether `e` says the bucket is missing (rather than the object).
pub fn is_missing_bucket(e: &BackendError) -> bool {
    matches!(e, BackendError::NotFound { resource } if resource.starts_with("bucket "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gs_paths() {
        let p = GsPath::parse("gs://bk/comp/x/").expect("gs path");
        assert_eq!(p.bucket, "bk");
        assert_eq!(p.object("train.csv"), "comp/x/train.csv");
        assert_eq!(p.to_string(), "gs://bk/comp/x");
        let p = GsPath::parse("gs://bk").expect("gs path");
        assert_eq!(p.object("a/b"), "a/b");
        assert_eq!(GsPath::parse("/data"), None);
        assert_eq!(GsPath::parse("gs:///x"), None);
    }
}
