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
}
