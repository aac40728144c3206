//! The mock Storage backend: buckets by name.

use async_trait::async_trait;

use super::MockWorld;
use crate::backends::storage::{BucketInfo, BucketUsage, Storage};
use crate::backends::BackendResult;
use crate::error::BackendError;

pub(super) struct MockStorage(pub(super) MockWorld);

#[async_trait]
impl Storage for MockStorage {
    async fn get_bucket(&self, name: &str) -> BackendResult<Option<BucketInfo>> {
        self.0
            .call("storage.get_bucket", name, false, |s| {
                Ok(s.buckets.get(name).cloned())
            })
            .await
    }

    async fn create_bucket(
        &self,
        _project: &str,
        name: &str,
        location: &str,
    ) -> BackendResult<BucketInfo> {
        self.0
            .call("storage.create_bucket", name, true, |s| {
                if s.buckets.contains_key(name) {
                    return Err(BackendError::AlreadyExists {
                        resource: format!("bucket {name}"),
                    });
                }
                let b = BucketInfo {
                    name: name.into(),
                    location: location.to_uppercase(),
                    uniform_access: true,
                };
                s.buckets.insert(name.into(), b.clone());
                Ok(b)
            })
            .await
    }

    async fn delete_bucket(&self, name: &str) -> BackendResult<()> {
        self.0
            .call("storage.delete_bucket", name, true, |s| {
                s.buckets
                    .remove(name)
                    .map(|_| ())
                    .ok_or_else(|| BackendError::NotFound {
                        resource: format!("bucket {name}"),
                    })
            })
            .await
    }

    async fn bucket_usage(&self, name: &str) -> BackendResult<BucketUsage> {
        self.0
            .call("storage.bucket_usage", name, false, |s| {
                if !s.buckets.contains_key(name) {
                    return Err(BackendError::NotFound {
                        resource: format!("bucket {name}"),
                    });
                }
                Ok(s.bucket_usage.get(name).copied().unwrap_or_default())
            })
            .await
    }
}
