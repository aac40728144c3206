//! [`GceCompute`]: the real [`Compute`] backend. Each trait call is a request built by
//! [`super::api`], sent by the [`Transport`], and — for mutating calls — followed by
//! waiting on its operation ([`super::operation`]).

use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;

use super::api;
use super::auth::{Secret, TokenSource};
use super::caller_ip;
use super::model;
use super::operation;
use super::recipe;
use super::transport::{RetryPolicy, Transport, BASE_URL_ENV, DEFAULT_BASE_URL};
use crate::backends::compute::{
    Compute, FirewallRule, ImageInfo, InstanceInfo, InstanceRef, InstanceRequest,
};
use crate::backends::BackendResult;
use crate::error::BackendError;

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
            service: "compute",
            message: format!(
                "no token source given to the client builder; {}",
                super::auth::HOW_TO_AUTH
            ),
        })?;
        let transport = Transport::new(
            self.base_url.as_deref().unwrap_or(DEFAULT_BASE_URL),
            token,
            self.retry.unwrap_or_default(),
        )?;
        Ok(GceCompute {
            transport,
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
        let mut b = Self::builder().token_source(TokenSource::from_env().await?);
        if let Some(url) = env_nonempty(BASE_URL_ENV) {
            b = b.base_url(url);
        }
        if let Some(url) = env_nonempty(caller_ip::URL_ENV) {
            b = b.caller_ip_url(url);
        }
        b.build()
    }

    /// The transport (service root, retries).
    pub fn transport(&self) -> &Transport {
        &self.transport
    }

    async fn run(&self, project: &str, req: api::ApiRequest) -> BackendResult<model::Operation> {
        let op: model::Operation = self.transport.send(&req).await?;
        operation::wait(
            &self.transport,
            project,
            op,
            &req.resource,
            self.operation_limit,
        )
        .await
    }

    async fn get_instance_model(&self, at: &InstanceRef) -> BackendResult<Option<model::Instance>> {
        match self
            .transport
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

    /// Whether a machine type exists in a zone (`NotFound` otherwise).
    pub async fn check_machine_type(
        &self,
        project: &str,
        zone: &str,
        machine_type: &str,
    ) -> BackendResult<()> {
        let _: model::Named = self
            .transport
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
            .transport
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
            .transport
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
        let image: model::Image = self
            .transport
            .send(&api::image_from_family(project, family)?)
            .await?;
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
            .transport
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

    async fn caller_ip(&self) -> BackendResult<String> {
        Ok(
            caller_ip::detect(self.transport.http(), &self.caller_ip_url)
                .await?
                .to_string(),
        )
    }
}
