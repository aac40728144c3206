//! The Storage (GCS) backend trait.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use super::BackendResult;

/// A bucket as kgenv sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BucketInfo {
    /// Bucket name.
    pub name: String,
    /// Location, e.g. `US-CENTRAL1`.
    pub location: String,
    /// Uniform bucket-level access.
    pub uniform_access: bool,
}

/// What a bucket holds: what `status` shows of a bucket `down` keeps (it stays billed).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BucketUsage {
    /// Bytes in all its objects.
    pub bytes: u64,
    /// How many objects.
    pub objects: u64,
}

/// Google Cloud Storage, as kgenv uses it.
#[async_trait]
pub trait Storage: Send + Sync {
    /// The bucket, or `None` when it does not exist.
    async fn get_bucket(&self, name: &str) -> BackendResult<Option<BucketInfo>>;
    /// Creates a bucket with uniform bucket-level access in `location`.
    async fn create_bucket(
        &self,
        project: &str,
        name: &str,
        location: &str,
    ) -> BackendResult<BucketInfo>;
    /// Deletes an (empty) bucket. kgenv only calls this when the user names the bucket.
    async fn delete_bucket(&self, name: &str) -> BackendResult<()>;
    /// What the bucket holds, every object counted (listed a page at a time).
    async fn bucket_usage(&self, name: &str) -> BackendResult<BucketUsage>;
}
