//! Backends that answer every call with [`BackendError::Unavailable`] and a hint. The real
//! set ([`crate::wiring::from_env`]) uses one for any system kgenv cannot reach in this build, so
//! `plan` still works and says what it could not observe.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use std::collections::BTreeMap;

use super::billing::{Billing, Sku};
use super::compute::{
    Compute, DiskInfo, DiskRef, DiskRequest, FirewallRule, ImageInfo, InstanceInfo, InstanceRef,
    InstanceRequest, Preemption, SnapshotInfo,
};
use super::container::{ContainerEngine, EngineConnector, EngineLocation};
use super::github::{GitHub, GithubKeyInfo, KeyScope};
use super::kaggle::{DataFile, FetchOptions, Kaggle};
use super::remote::{HostAddr, Remote, RemoteConnector};
use super::storage::{BucketInfo, BucketUsage, Storage};
use super::{BackendResult, ProgressFn};
use crate::error::BackendError;

/// A backend that is not available, with the reason.
#[derive(Debug, Clone)]
pub struct Unavailable {
    backend: &'static str,
    hint: String,
}

impl Unavailable {
    /// `backend` cannot be used; `hint` says what to do.
    pub fn new(backend: &'static str, hint: impl Into<String>) -> Self {
        Self {
            backend,
            hint: hint.into(),
        }
    }

    fn err<T>(&self) -> BackendResult<T> {
        Err(BackendError::Unavailable {
            backend: self.backend,
            hint: self.hint.clone(),
        })
    }

    /// Shared, as a trait object of any backend trait.
    pub fn arc(backend: &'static str, hint: impl Into<String>) -> Arc<Self> {
        Arc::new(Self::new(backend, hint))
    }
}

#[async_trait]
impl Compute for Unavailable {
    async fn get_instance(&self, _: &InstanceRef) -> BackendResult<Option<InstanceInfo>> {
        self.err()
    }
    async fn insert_instance(&self, _: &InstanceRequest) -> BackendResult<InstanceInfo> {
        self.err()
    }
    async fn delete_instance(&self, _: &InstanceRef) -> BackendResult<()> {
        self.err()
    }
    async fn start_instance(&self, _: &InstanceRef) -> BackendResult<()> {
        self.err()
    }
    async fn stop_instance(&self, _: &InstanceRef) -> BackendResult<()> {
        self.err()
    }
    async fn guest_attributes(
        &self,
        _: &InstanceRef,
        _: &str,
    ) -> BackendResult<Vec<(String, String)>> {
        self.err()
    }
    async fn get_firewall(&self, _: &str, _: &str) -> BackendResult<Option<FirewallRule>> {
        self.err()
    }
    async fn insert_firewall(&self, _: &FirewallRule) -> BackendResult<()> {
        self.err()
    }
    async fn patch_firewall(&self, _: &FirewallRule) -> BackendResult<()> {
        self.err()
    }
    async fn delete_firewall(&self, _: &str, _: &str) -> BackendResult<()> {
        self.err()
    }
    async fn image_from_family(&self, _: &str, _: &str) -> BackendResult<ImageInfo> {
        self.err()
    }
    async fn check_accelerator(&self, _: &str, _: &str, _: &str) -> BackendResult<()> {
        self.err()
    }
    async fn check_machine_type(&self, _: &str, _: &str, _: &str) -> BackendResult<()> {
        self.err()
    }
    async fn accelerator_zones(&self, _: &str, _: &str) -> BackendResult<Vec<String>> {
        self.err()
    }
    async fn machine_type_zones(&self, _: &str, _: &str) -> BackendResult<Vec<String>> {
        self.err()
    }
    async fn caller_ip(&self) -> BackendResult<String> {
        self.err()
    }
    async fn get_disk(&self, _: &DiskRef) -> BackendResult<Option<DiskInfo>> {
        self.err()
    }
    async fn insert_disk(&self, _: &DiskRequest) -> BackendResult<DiskInfo> {
        self.err()
    }
    async fn delete_disk(&self, _: &DiskRef) -> BackendResult<()> {
        self.err()
    }
    async fn resize_disk(&self, _: &DiskRef, _: u64) -> BackendResult<()> {
        self.err()
    }
    async fn attach_disk(&self, _: &InstanceRef, _: &DiskRef, _: &str) -> BackendResult<()> {
        self.err()
    }
    async fn detach_disk(&self, _: &InstanceRef, _: &str) -> BackendResult<()> {
        self.err()
    }
    async fn create_snapshot(
        &self,
        _: &DiskRef,
        _: &str,
        _: &BTreeMap<String, String>,
    ) -> BackendResult<SnapshotInfo> {
        self.err()
    }
    async fn get_snapshot(&self, _: &str, _: &str) -> BackendResult<Option<SnapshotInfo>> {
        self.err()
    }
    async fn delete_snapshot(&self, _: &str, _: &str) -> BackendResult<()> {
        self.err()
    }
    async fn set_machine_type(&self, _: &InstanceRef, _: &str) -> BackendResult<()> {
        self.err()
    }
    async fn set_gpus(&self, _: &InstanceRef, _: Option<(String, u8)>) -> BackendResult<()> {
        self.err()
    }
    async fn set_service_account(
        &self,
        _: &InstanceRef,
        _: Option<&str>,
        _: &[String],
    ) -> BackendResult<()> {
        self.err()
    }
    async fn set_instance_labels(
        &self,
        _: &InstanceRef,
        _: &BTreeMap<String, String>,
    ) -> BackendResult<()> {
        self.err()
    }
    async fn last_preemption(&self, _: &InstanceRef, _: &str) -> BackendResult<Option<Preemption>> {
        self.err()
    }
}

#[async_trait]
impl Storage for Unavailable {
    async fn get_bucket(&self, _: &str) -> BackendResult<Option<BucketInfo>> {
        self.err()
    }
    async fn create_bucket(&self, _: &str, _: &str, _: &str) -> BackendResult<BucketInfo> {
        self.err()
    }
    async fn delete_bucket(&self, _: &str) -> BackendResult<()> {
        self.err()
    }
    async fn bucket_usage(&self, _: &str) -> BackendResult<BucketUsage> {
        self.err()
    }
}

#[async_trait]
impl RemoteConnector for Unavailable {
    async fn connect(&self, _: &HostAddr, _: Duration) -> BackendResult<Arc<dyn Remote>> {
        self.err()
    }
}

#[async_trait]
impl EngineConnector for Unavailable {
    async fn connect(&self, _: EngineLocation) -> BackendResult<Arc<dyn ContainerEngine>> {
        self.err()
    }
}

#[async_trait]
impl Kaggle for Unavailable {
    async fn list_files(&self, _: &str) -> BackendResult<Vec<DataFile>> {
        self.err()
    }
    async fn present(&self, _: &str, _: &str) -> BackendResult<Option<u64>> {
        self.err()
    }
    async fn fetch(
        &self,
        _: &str,
        _: &DataFile,
        _: &FetchOptions,
        _: ProgressFn<'_>,
    ) -> BackendResult<u64> {
        self.err()
    }
}

#[async_trait]
impl GitHub for Unavailable {
    fn web_url(&self) -> String {
        "https://github.com".into()
    }
    async fn ssh_host_keys(&self) -> BackendResult<Vec<String>> {
        self.err()
    }
    async fn list_keys(&self, _: &KeyScope) -> BackendResult<Vec<GithubKeyInfo>> {
        self.err()
    }
    async fn add_key(
        &self,
        _: &KeyScope,
        _: &str,
        _: &str,
        _: bool,
    ) -> BackendResult<GithubKeyInfo> {
        self.err()
    }
    async fn delete_key(&self, _: &KeyScope, _: u64) -> BackendResult<()> {
        self.err()
    }
}

#[async_trait]
impl Billing for Unavailable {
    /// The catalog a real client would ask, so prices cached by an earlier run with
    /// credentials are still shown (with their date) without them.
    fn cache_key(&self) -> Option<String> {
        Some(super::billing::configured_endpoint())
    }
    async fn compute_skus(&self) -> BackendResult<Vec<Sku>> {
        self.err()
    }
}
