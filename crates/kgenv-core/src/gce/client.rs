//! [`GceCompute`]: the real [`Compute`] backend. Each trait call is a request built by
//! [`super::api`], sent on the shared [`Transport`] (bearer token, retries), and — for
//! mutating calls — followed by waiting on its operation ([`super::operation`]).
//!
//! Retries follow Google's advice for Compute ([`RETRY`]: truncated exponential backoff
//! from 1 s to 32 s with full jitter, at most 10 retries within 180 s, `Retry-After`
//! honoured). A mutating call carries one `requestId` (a UUID) on every attempt, so Compute
//! Engine treats a retried insert whose first attempt landed as the same request and never
//! creates a second instance.

use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;
use serde::de::DeserializeOwned;

use super::api;
use super::caller_ip;
use super::errors;
use super::model;
use super::operation;
use super::recipe;
use crate::backends::compute::{
    Compute, DiskInfo, DiskRef, DiskRequest, FirewallRule, ImageInfo, InstanceInfo, InstanceRef,
    InstanceRequest, Preemption, SnapshotInfo,
};
use crate::backends::BackendResult;
use crate::error::BackendError;
use crate::google_auth;
use crate::http::{
    allows_credentials, RetryPolicy, Secret, TokenSource, Transport, TransportConfig,
};

/// The public service root.
pub const DEFAULT_BASE_URL: &str = "https://compute.googleapis.com/compute/v1/";
/// gcloud's override of the service root (`https://host/compute/v1/`), used by tests and emulators.
pub const BASE_URL_ENV: &str = "CLOUDSDK_API_ENDPOINT_OVERRIDES_COMPUTE";

/// Compute's retry policy: Google's advice, truncated exponential backoff from 1 s to 32 s,
/// at most 10 retries, none starting past 180 s; 60 s per ordinary attempt (long-polls get
/// [`api::LONG_POLL_TIMEOUT`]).
pub const RETRY: RetryPolicy =
    RetryPolicy::new(Duration::from_secs(1), Duration::from_secs(32), 10)
        .with_budget(Duration::from_secs(180))
        .with_attempt_timeout(Duration::from_secs(60));

const SERVICE: &str = "compute";

/// Checks a service root and gives it a trailing slash. Plain HTTP is allowed only on a
/// loopback address: the token must not cross a network in clear.
pub fn normalize_base_url(url: &str) -> BackendResult<String> {
    let parsed = reqwest::Url::parse(url.trim()).map_err(|e| BackendError::InvalidArgument {
        resource: format!("compute endpoint `{url}` (from {BASE_URL_ENV} or the client builder)"),
        message: format!("is not a URL ({e}); use e.g. {DEFAULT_BASE_URL}"),
    })?;
    if !allows_credentials(&parsed) || parsed.query().is_some() {
        return Err(BackendError::InvalidArgument {
            resource: format!("compute endpoint `{url}`"),
            message: "must be https://… (plain http only on a loopback address, since the access token travels with every request) and have no query".into(),
        });
    }
    let mut s = parsed.to_string();
    if !s.ends_with('/') {
        s.push('/');
    }
    Ok(s)
}

/// How long kgenv waits for one operation (a GPU VM insert takes a minute or two).
pub const DEFAULT_OPERATION_LIMIT: Duration = Duration::from_secs(20 * 60);

/// Google Compute Engine over its REST API.
///
/// ```no_run
/// # async fn demo() -> Result<(), kgenv_core::BackendError> {
/// use kgenv_core::backends::Compute;
/// let gce = kgenv_core::gce::GceCompute::from_env().await?;
/// let image = gce.image_from_family("deeplearning-platform-release", "common-cu129-ubuntu-2204-nvidia-580").await?;
/// println!("{}", image.name);
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct GceCompute {
    transport: Transport,
    base: String,
    caller_ip_url: String,
    operation_limit: Duration,
}

/// Builder for [`GceCompute`] (tests, emulators, custom retry policies).
#[derive(Debug, Default)]
#[must_use]
pub struct GceComputeBuilder {
    base_url: Option<String>,
    token: Option<TokenSource>,
    retry: Option<RetryPolicy>,
    caller_ip_url: Option<String>,
    operation_limit: Option<Duration>,
}

impl GceComputeBuilder {
    /// The service root, e.g. `http://127.0.0.1:8080/compute/v1/` (default: the public one).
    pub fn base_url(mut self, url: impl Into<String>) -> Self {
        self.base_url = Some(url.into());
        self
    }
    /// A fixed bearer token.
    pub fn static_token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(TokenSource::Static(Secret::new(token)));
        self
    }
    /// Any token source.
    pub fn token_source(mut self, source: TokenSource) -> Self {
        self.token = Some(source);
        self
    }
    /// The retry policy.
    pub fn retry_policy(mut self, policy: RetryPolicy) -> Self {
        self.retry = Some(policy);
        self
    }
    /// The "what is my IP" service for [`Compute::caller_ip`].
    pub fn caller_ip_url(mut self, url: impl Into<String>) -> Self {
        self.caller_ip_url = Some(url.into());
        self
    }
    /// How long to wait for one operation.
    pub fn operation_limit(mut self, d: Duration) -> Self {
        self.operation_limit = Some(d);
        self
    }
    /// The client; `Unauthenticated` when no token source was given.
    pub fn build(self) -> BackendResult<GceCompute> {
        let token = self.token.ok_or_else(|| BackendError::Unauthenticated {
            service: SERVICE,
            message: format!(
                "no token source given to the client builder; {}",
                google_auth::HOW_TO_AUTH
            ),
        })?;
        let base = normalize_base_url(self.base_url.as_deref().unwrap_or(DEFAULT_BASE_URL))?;
        let base_url =
            reqwest::Url::parse(&base).map_err(|e| BackendError::other(e.to_string()))?;
        let http = crate::http::build_client(
            SERVICE,
            crate::http::client_builder(&base).connect_timeout(Duration::from_secs(15)),
        )?;
        let transport = Transport::new(
            http,
            TransportConfig {
                service: SERVICE,
                base: base_url,
                auth: token,
                retry: self.retry.unwrap_or(RETRY),
                connect_hint: Some("could not connect to Compute Engine"),
            },
        );
        Ok(GceCompute {
            transport,
            base,
            caller_ip_url: self
                .caller_ip_url
                .unwrap_or_else(|| caller_ip::DEFAULT_URL.into()),
            operation_limit: self.operation_limit.unwrap_or(DEFAULT_OPERATION_LIMIT),
        })
    }
}

fn env_nonempty(name: &str) -> Option<String> {
    std::env::var(name)
        .ok()
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
}

impl GceCompute {
    /// A builder.
    pub fn builder() -> GceComputeBuilder {
        GceComputeBuilder::default()
    }

    /// The client the CLI and notebooks use: credentials from `GOOGLE_OAUTH_ACCESS_TOKEN` or
    /// Application Default Credentials, the service root from
    /// `CLOUDSDK_API_ENDPOINT_OVERRIDES_COMPUTE`, the IP service from `KGENV_CALLER_IP_URL`.
    /// Fails with [`BackendError::Unauthenticated`] (saying how to log in) when there are
    /// no credentials.
    pub async fn from_env() -> BackendResult<Self> {
        let mut b = Self::builder()
            .token_source(google_auth::token_source(SERVICE, google_auth::CLOUD_PLATFORM).await?);
        if let Some(url) = env_nonempty(BASE_URL_ENV) {
            b = b.base_url(url);
        }
        if let Some(url) = env_nonempty(caller_ip::URL_ENV) {
            b = b.caller_ip_url(url);
        }
        b.build()
    }

    /// The shared transport (credentials, retries).
    pub fn transport(&self) -> &Transport {
        &self.transport
    }

    /// The service root, with a trailing slash.
    pub fn base_url(&self) -> &str {
        &self.base
    }

    /// Sends `req`, retrying what may pass, and decodes the JSON answer. A mutating call
    /// carries one `requestId` on all its attempts.
    pub async fn send<T: DeserializeOwned>(&self, req: &api::ApiRequest) -> BackendResult<T> {
        // One id for every attempt of this call: that is what makes the retries safe.
        let request_id = req.mutating.then(|| uuid::Uuid::new_v4().to_string());
        let http_req = req.to_http(&self.base, request_id.as_deref())?;
        let answer = self
            .transport
            .call(&http_req, |r| {
                if r.status.is_success() {
                    Ok(r)
                } else {
                    Err(errors::from_http(
                        r.status.as_u16(),
                        &r.body,
                        r.retry_after(),
                        &req.resource,
                    ))
                }
            })
            .await?;
        serde_json::from_slice(&answer.body).map_err(|e| BackendError::Other {
            message: format!(
                "{}: unexpected answer from Compute Engine to {} {}",
                req.resource, req.method, req.path
            ),
            source: Some(Box::new(crate::http::RedactedError::of(&e))),
        })
    }

    async fn run(&self, project: &str, req: api::ApiRequest) -> BackendResult<model::Operation> {
        let op: model::Operation = self.send(&req).await?;
        operation::wait(self, project, op, &req.resource, self.operation_limit).await
    }

    async fn get_instance_model(&self, at: &InstanceRef) -> BackendResult<Option<model::Instance>> {
        match self
            .send(&api::get_instance(&at.project, &at.zone, &at.name)?)
            .await
        {
            Ok(i) => Ok(Some(i)),
            Err(BackendError::NotFound { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    async fn require_instance(&self, at: &InstanceRef) -> BackendResult<model::Instance> {
        self.get_instance_model(at)
            .await?
            .ok_or_else(|| BackendError::NotFound {
                resource: at.to_string(),
            })
    }

    /// Sets metadata items (others are kept), with the instance's current fingerprint.
    pub async fn set_metadata(
        &self,
        at: &InstanceRef,
        items: &BTreeMap<String, String>,
    ) -> BackendResult<()> {
        let current = self
            .require_instance(at)
            .await?
            .metadata
            .unwrap_or_default();
        let mut merged: BTreeMap<String, String> = current
            .items
            .into_iter()
            .map(|i| (i.key, i.value))
            .collect();
        merged.extend(items.iter().map(|(k, v)| (k.clone(), v.clone())));
        let body = model::Metadata {
            items: merged
                .into_iter()
                .map(|(key, value)| model::MetadataItem { key, value })
                .collect(),
            fingerprint: current.fingerprint,
        };
        self.run(
            &at.project,
            api::set_metadata(&at.project, &at.zone, &at.name, &body)?,
        )
        .await
        .map(drop)
    }

    /// Replaces the network tags, with the instance's current fingerprint.
    pub async fn set_tags(&self, at: &InstanceRef, tags: &[String]) -> BackendResult<()> {
        let current = self.require_instance(at).await?.tags.unwrap_or_default();
        let body = model::Tags {
            items: tags.to_vec(),
            fingerprint: current.fingerprint,
        };
        self.run(
            &at.project,
            api::set_tags(&at.project, &at.zone, &at.name, &body)?,
        )
        .await
        .map(drop)
    }

    /// Replaces the labels, with the instance's current label fingerprint.
    pub async fn set_labels(
        &self,
        at: &InstanceRef,
        labels: &BTreeMap<String, String>,
    ) -> BackendResult<()> {
        let current = self.require_instance(at).await?;
        let body = model::SetLabelsRequest {
            labels: labels.clone(),
            label_fingerprint: current.label_fingerprint,
        };
        self.run(
            &at.project,
            api::set_labels(&at.project, &at.zone, &at.name, &body)?,
        )
        .await
        .map(drop)
    }

    /// Sends a GET; a 404 is `None`.
    async fn get_optional<T: DeserializeOwned>(
        &self,
        req: BackendResult<api::ApiRequest>,
    ) -> BackendResult<Option<T>> {
        match self.send(&req?).await {
            Ok(v) => Ok(Some(v)),
            Err(BackendError::NotFound { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Polls a snapshot until it is READY (snapshots have no `wait`: the operation of
    /// `createSnapshot` can end while the snapshot is still UPLOADING), with backoff from
    /// 0.5 s to 10 s, within the operation limit.
    async fn wait_snapshot_ready(&self, project: &str, name: &str) -> BackendResult<SnapshotInfo> {
        let started = std::time::Instant::now();
        let mut delay = Duration::from_millis(500);
        loop {
            let snap: Option<model::Snapshot> =
                self.get_optional(api::get_snapshot(project, name)).await?;
            let Some(snap) = snap else {
                return Err(BackendError::NotFound {
                    resource: format!("snapshot {project}/{name}"),
                });
            };
            match snap.status.as_deref() {
                Some("READY") => return Ok(recipe::snapshot_info(project, &snap)),
                Some("FAILED") => {
                    return Err(BackendError::other(format!(
                        "snapshot {project}/{name} FAILED; delete it and try again"
                    )))
                }
                status => {
                    if started.elapsed() > self.operation_limit {
                        return Err(BackendError::Timeout {
                            what: format!("snapshot {project}/{name} to be READY"),
                            after: self.operation_limit,
                            last_seen: status.map(|s| format!("status {s}")),
                        });
                    }
                }
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(10));
        }
    }

    /// The zones an aggregated type list names, reading every page (`request` builds the
    /// call for a page token). Bounded: a server that kept handing out tokens would
    /// otherwise keep kgenv listing forever.
    async fn aggregated_zones(
        &self,
        request: impl Fn(Option<&str>) -> BackendResult<api::ApiRequest>,
    ) -> BackendResult<Vec<String>> {
        const MAX_PAGES: usize = 100;
        let mut zones = std::collections::BTreeSet::new();
        let mut token: Option<String> = None;
        for _ in 0..MAX_PAGES {
            let page: model::AggregatedTypeList = self.send(&request(token.as_deref())?).await?;
            zones.extend(page.zones().map(String::from));
            match page.next_page_token.filter(|t| !t.is_empty()) {
                Some(t) => token = Some(t),
                None => return Ok(zones.into_iter().collect()),
            }
        }
        Err(BackendError::other(format!(
            "the aggregated list still had more pages after {MAX_PAGES}"
        )))
    }

    /// Whether a machine type exists in a zone (`NotFound` otherwise).
    pub async fn check_machine_type(
        &self,
        project: &str,
        zone: &str,
        machine_type: &str,
    ) -> BackendResult<()> {
        let _: model::Named = self
            .send(&api::get_machine_type(project, zone, machine_type)?)
            .await?;
        Ok(())
    }
}

#[async_trait]
impl Compute for GceCompute {
    async fn get_instance(&self, at: &InstanceRef) -> BackendResult<Option<InstanceInfo>> {
        Ok(self
            .get_instance_model(at)
            .await?
            .map(|i| recipe::instance_info(at, &i)))
    }

    async fn insert_instance(&self, req: &InstanceRequest) -> BackendResult<InstanceInfo> {
        let at = &req.at;
        self.run(
            &at.project,
            api::insert_instance(&at.project, &at.zone, &recipe::instance_body(req))?,
        )
        .await?;
        let created = self.require_instance(at).await?;
        Ok(recipe::instance_info(at, &created))
    }

    async fn delete_instance(&self, at: &InstanceRef) -> BackendResult<()> {
        self.run(
            &at.project,
            api::delete_instance(&at.project, &at.zone, &at.name)?,
        )
        .await
        .map(drop)
    }

    async fn start_instance(&self, at: &InstanceRef) -> BackendResult<()> {
        self.run(
            &at.project,
            api::start_instance(&at.project, &at.zone, &at.name)?,
        )
        .await
        .map(drop)
    }

    async fn stop_instance(&self, at: &InstanceRef) -> BackendResult<()> {
        self.run(
            &at.project,
            api::stop_instance(&at.project, &at.zone, &at.name)?,
        )
        .await
        .map(drop)
    }

    async fn guest_attributes(
        &self,
        at: &InstanceRef,
        query_path: &str,
    ) -> BackendResult<Vec<(String, String)>> {
        let ga: model::GuestAttributes = self
            .send(&api::get_guest_attributes(
                &at.project,
                &at.zone,
                &at.name,
                query_path,
            )?)
            .await?;
        Ok(ga
            .query_value
            .map(|v| v.items.into_iter().map(|e| (e.key, e.value)).collect())
            .unwrap_or_default())
    }

    async fn get_firewall(&self, project: &str, name: &str) -> BackendResult<Option<FirewallRule>> {
        match self
            .send::<model::Firewall>(&api::get_firewall(project, name)?)
            .await
        {
            Ok(f) => Ok(Some(recipe::firewall_rule(project, &f))),
            Err(BackendError::NotFound { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    async fn insert_firewall(&self, rule: &FirewallRule) -> BackendResult<()> {
        self.run(
            &rule.project,
            api::insert_firewall(&rule.project, &recipe::firewall_body(rule))?,
        )
        .await
        .map(drop)
    }

    async fn patch_firewall(&self, rule: &FirewallRule) -> BackendResult<()> {
        self.run(
            &rule.project,
            api::patch_firewall(&rule.project, &recipe::firewall_body(rule))?,
        )
        .await
        .map(drop)
    }

    async fn delete_firewall(&self, project: &str, name: &str) -> BackendResult<()> {
        self.run(project, api::delete_firewall(project, name)?)
            .await
            .map(drop)
    }

    async fn image_from_family(&self, project: &str, family: &str) -> BackendResult<ImageInfo> {
        let image: model::Image = self.send(&api::image_from_family(project, family)?).await?;
        Ok(ImageInfo {
            self_link: image.self_link,
            name: image.name,
            disk_size_gb: image
                .disk_size_gb
                .unwrap_or_else(|| crate::backends::compute::image_min_disk_gb(project)),
        })
    }

    async fn check_accelerator(
        &self,
        project: &str,
        zone: &str,
        gpu_type: &str,
    ) -> BackendResult<()> {
        let _: model::Named = self
            .send(&api::get_accelerator_type(project, zone, gpu_type)?)
            .await?;
        Ok(())
    }

    async fn check_machine_type(
        &self,
        project: &str,
        zone: &str,
        machine_type: &str,
    ) -> BackendResult<()> {
        GceCompute::check_machine_type(self, project, zone, machine_type).await
    }

    async fn accelerator_zones(&self, project: &str, gpu_type: &str) -> BackendResult<Vec<String>> {
        self.aggregated_zones(|tok| api::list_accelerator_zones(project, gpu_type, tok))
            .await
    }

    async fn machine_type_zones(
        &self,
        project: &str,
        machine_type: &str,
    ) -> BackendResult<Vec<String>> {
        self.aggregated_zones(|tok| api::list_machine_type_zones(project, machine_type, tok))
            .await
    }

    async fn caller_ip(&self) -> BackendResult<String> {
        Ok(
            caller_ip::detect(self.transport.http(), &self.caller_ip_url)
                .await?
                .to_string(),
        )
    }

    async fn get_disk(&self, at: &DiskRef) -> BackendResult<Option<DiskInfo>> {
        let d: Option<model::Disk> = self
            .get_optional(api::get_disk(&at.project, &at.zone, &at.name))
            .await?;
        Ok(d.map(|d| recipe::disk_info(at, &d)))
    }

    async fn insert_disk(&self, req: &DiskRequest) -> BackendResult<DiskInfo> {
        let at = &req.at;
        self.run(
            &at.project,
            api::insert_disk(&at.project, &at.zone, &recipe::disk_body(req))?,
        )
        .await?;
        self.get_disk(at)
            .await?
            .ok_or_else(|| BackendError::NotFound {
                resource: at.to_string(),
            })
    }

    async fn delete_disk(&self, at: &DiskRef) -> BackendResult<()> {
        self.run(
            &at.project,
            api::delete_disk(&at.project, &at.zone, &at.name)?,
        )
        .await
        .map(drop)
    }

    async fn resize_disk(&self, at: &DiskRef, size_gb: u64) -> BackendResult<()> {
        let body = model::DisksResizeRequest {
            size_gb: Some(size_gb),
        };
        self.run(
            &at.project,
            api::resize_disk(&at.project, &at.zone, &at.name, &body)?,
        )
        .await
        .map(drop)
    }

    async fn attach_disk(
        &self,
        instance: &InstanceRef,
        disk: &DiskRef,
        device_name: &str,
    ) -> BackendResult<()> {
        let i = instance;
        self.run(
            &i.project,
            api::attach_disk(
                &i.project,
                &i.zone,
                &i.name,
                &recipe::attach_body(disk, device_name),
            )?,
        )
        .await
        .map(drop)
    }

    async fn detach_disk(&self, instance: &InstanceRef, device_name: &str) -> BackendResult<()> {
        let i = instance;
        self.run(
            &i.project,
            api::detach_disk(&i.project, &i.zone, &i.name, device_name)?,
        )
        .await
        .map(drop)
    }

    async fn create_snapshot(
        &self,
        disk: &DiskRef,
        name: &str,
        labels: &BTreeMap<String, String>,
    ) -> BackendResult<SnapshotInfo> {
        self.run(
            &disk.project,
            api::create_snapshot(
                &disk.project,
                &disk.zone,
                &disk.name,
                &recipe::snapshot_body(name, labels),
            )?,
        )
        .await?;
        self.wait_snapshot_ready(&disk.project, name).await
    }

    async fn get_snapshot(&self, project: &str, name: &str) -> BackendResult<Option<SnapshotInfo>> {
        let snap: Option<model::Snapshot> =
            self.get_optional(api::get_snapshot(project, name)).await?;
        Ok(snap.map(|s| recipe::snapshot_info(project, &s)))
    }

    async fn delete_snapshot(&self, project: &str, name: &str) -> BackendResult<()> {
        self.run(project, api::delete_snapshot(project, name)?)
            .await
            .map(drop)
    }

    async fn set_machine_type(&self, at: &InstanceRef, machine_type: &str) -> BackendResult<()> {
        let body = model::InstancesSetMachineTypeRequest {
            machine_type: format!(
                "zones/{}/machineTypes/{}",
                at.zone,
                api::name("machine type", machine_type)?
            ),
        };
        self.run(
            &at.project,
            api::set_machine_type(&at.project, &at.zone, &at.name, &body)?,
        )
        .await
        .map(drop)
    }

    async fn set_gpus(&self, at: &InstanceRef, gpu: Option<(String, u8)>) -> BackendResult<()> {
        if let Some((t, _)) = &gpu {
            api::name("accelerator type", t)?;
        }
        let body = model::InstancesSetMachineResourcesRequest {
            guest_accelerators: recipe::accelerators(&at.zone, gpu.as_ref()),
        };
        self.run(
            &at.project,
            api::set_machine_resources(&at.project, &at.zone, &at.name, &body)?,
        )
        .await
        .map(drop)
    }

    async fn set_service_account(
        &self,
        at: &InstanceRef,
        email: Option<&str>,
        scopes: &[String],
    ) -> BackendResult<()> {
        let body = model::InstancesSetServiceAccountRequest {
            email: email.unwrap_or(recipe::DEFAULT_SERVICE_ACCOUNT).to_string(),
            scopes: scopes.to_vec(),
        };
        self.run(
            &at.project,
            api::set_service_account(&at.project, &at.zone, &at.name, &body)?,
        )
        .await
        .map(drop)
    }

    async fn set_instance_labels(
        &self,
        at: &InstanceRef,
        labels: &BTreeMap<String, String>,
    ) -> BackendResult<()> {
        self.set_labels(at, labels).await
    }

    async fn last_preemption(
        &self,
        at: &InstanceRef,
        id: &str,
    ) -> BackendResult<Option<Preemption>> {
        let page: model::OperationList = self
            .send(&api::list_preemptions(&at.project, &at.zone, id)?)
            .await?;
        Ok(recipe::preemption(&page.items))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_http_only_on_loopback() {
        assert_eq!(
            normalize_base_url("http://127.0.0.1:8080/compute/v1").expect("loopback"),
            "http://127.0.0.1:8080/compute/v1/"
        );
        assert!(normalize_base_url("http://[::1]:1/compute/v1/").is_ok());
        assert!(normalize_base_url("http://localhost:1/compute/v1/").is_ok());
        assert!(normalize_base_url("http://compute.example.com/compute/v1/").is_err());
        assert!(normalize_base_url("ftp://127.0.0.1/").is_err());
        assert!(normalize_base_url("https://compute.googleapis.com/compute/v1/?x=1").is_err());
        assert_eq!(
            normalize_base_url(DEFAULT_BASE_URL).expect("default"),
            DEFAULT_BASE_URL
        );
    }

    #[test]
    fn compute_keeps_googles_retry_budget() {
        assert_eq!(
            RETRY
                .ceilings()
                .map(|d| (d.as_secs_f64() * 1e3).round() as u64)
                .collect::<Vec<_>>(),
            [1, 2, 4, 8, 16, 32, 32, 32, 32, 32].map(|s| s * 1000)
        );
        assert_eq!(RETRY.max_elapsed, Some(Duration::from_secs(180)));
        assert_eq!(RETRY.attempt_timeout, Some(Duration::from_secs(60)));
        assert_eq!(RETRY.max_retry_after, None);
    }
}
