//! Google Cloud Storage through its JSON API: buckets (the [`Storage`] trait: get, create
//! with uniform bucket-level access, delete), object metadata, and resumable uploads in
//! multiples of 256 KiB that resume from the `Range` of the server's 308 answers.
//!
//! Where it connects and how it authenticates follows Google's client libraries:
//! `STORAGE_EMULATOR_HOST` (e.g. `127.0.0.1:4443` or `http://127.0.0.1:4443`) sends every
//! request to an emulator without credentials; otherwise `GOOGLE_OAUTH_ACCESS_TOKEN` is
//! used as a static bearer token when set, else Application Default Credentials via
//! `gcp_auth`.
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
mod transport;
pub mod upload;

pub use api::ObjectInfo;
pub use transport::GcsClient;
pub use upload::{ResumableUpload, SavedUpload};

use async_trait::async_trait;

use crate::backends::storage::{BucketInfo, Storage};
use crate::backends::BackendResult;
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

#[async_trait]
impl Storage for GcsClient {
    async fn get_bucket(&self, name: &str) -> BackendResult<Option<BucketInfo>> {
        match self
            .get_json::<api::Bucket>(
                &["storage", "v1", "b", name],
                &[],
                &format!("bucket {name}"),
            )
            .await
        {
            Ok(b) => Ok(Some(b.into_info())),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }

    async fn create_bucket(
        &self,
        project: &str,
        name: &str,
        location: &str,
    ) -> BackendResult<BucketInfo> {
        let body = api::NewBucket::uniform(name, location);
        let b: api::Bucket = self
            .post_json(
                &["storage", "v1", "b"],
                &[("project", project)],
                &body,
                &format!("bucket {name}"),
            )
            .await?;
        Ok(b.into_info())
    }

    async fn delete_bucket(&self, name: &str) -> BackendResult<()> {
        self.delete(&["storage", "v1", "b", name], &format!("bucket {name}"))
            .await
    }
}

impl GcsClient {
    /// An object's metadata, `None` when it does not exist.
    pub async fn get_object(&self, bucket: &str, name: &str) -> BackendResult<Option<ObjectInfo>> {
        match self
            .get_json::<ObjectInfo>(
                &["storage", "v1", "b", bucket, "o", name],
                &[],
                &format!("gs://{bucket}/{name}"),
            )
            .await
        {
            Ok(o) => Ok(Some(o)),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Deletes an object.
    pub async fn delete_object(&self, bucket: &str, name: &str) -> BackendResult<()> {
        self.delete(
            &["storage", "v1", "b", bucket, "o", name],
            &format!("gs://{bucket}/{name}"),
        )
        .await
    }

    /// Streams an object's content to `each` (tests and verification).
    pub async fn read_object(
        &self,
        bucket: &str,
        name: &str,
        each: &mut (dyn FnMut(&[u8]) + Send),
    ) -> BackendResult<u64> {
        let what = format!("gs://{bucket}/{name}");
        let mut resp = self
            .get_raw(
                &["storage", "v1", "b", bucket, "o", name],
                &[("alt", "media")],
                &what,
            )
            .await?;
        let mut n = 0u64;
        while let Some(b) = resp
            .chunk()
            .await
            .map_err(|e| transport::map_err(&what, e))?
        {
            n += b.len() as u64;
            each(&b);
        }
        Ok(n)
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
