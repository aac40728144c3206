//! Guide step 1: the GPU VM. Zones are tried in order: a stockout deletes any half-made
//! instance and moves on, a region quota skips that region, a global quota stops at once.
//! The zone used, the external IP and the host keys are recorded for the SSH layer.

use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;

use crate::backends::compute::{InstanceInfo, InstanceRef, InstanceRequest, InstanceStatus};
use crate::error::{BackendError, QuotaScope, Result, ValidationError};
use crate::plan::{CheckOutcome, Destroyed, Step, StepCtx};
use crate::spec::{rules::region_of, Env, Instance};

/// How many times to read guest attributes while the guest agent has not published host
/// keys yet, and how long to wait between reads.
const HOSTKEY_POLLS: u32 = 60;
const HOSTKEY_POLL_DELAY: Duration = Duration::from_secs(5);

/// Creates, starts or deletes the environment's instance.
pub struct InstanceStep {
    env: String,
    spec: Instance,
}

impl InstanceStep {
    /// The step for `spec`.
    pub fn new(env: &Env, spec: Instance) -> Self {
        Self { env: env.name.clone(), spec }
    }

    fn at(&self, zone: &str) -> InstanceRef {
        InstanceRef { project: self.spec.project.clone(), zone: zone.into(), name: self.spec.name.clone() }
    }

    fn labels(&self) -> BTreeMap<String, String> {
        let mut l = self.spec.labels.clone();
        l.insert(super::OWNER_LABEL.into(), self.env.clone());
        l.insert("managed-by".into(), "kgenv".into());
        l
    }

    /// The instance wherever it is: the recorded zone first, then the spec's zones.
    async fn find(&self, ctx: &StepCtx) -> Result<Option<InstanceInfo>> {
        let state = ctx.state.snapshot().await;
        let mut zones: Vec<String> = state.fact("instance", "zone").map(str::to_string).into_iter().collect();
        zones.extend(self.spec.zones.iter().filter(|z| !zones.contains(z)).cloned().collect::<Vec<_>>());
        for z in zones {
            if let Some(i) = ctx.backends.compute.get_instance(&self.at(&z)).await? {
                return Ok(Some(i));
            }
        }
        Ok(None)
    }

    fn owned(&self, i: &InstanceInfo) -> bool {
        i.labels.get(super::OWNER_LABEL) == Some(&self.env)
    }

    fn request(&self, zone: &str, source_image: &str, ssh_key: &str) -> InstanceRequest {
        let mut metadata = BTreeMap::new();
        metadata.insert("ssh-keys".into(), ssh_key.to_string());
        metadata.insert("enable-guest-attributes".into(), "TRUE".into());
        if self.spec.gpu_type.is_some() {
            metadata.insert("install-nvidia-driver".into(), "True".into());
        }
        InstanceRequest {
            at: self.at(zone),
            machine_type: self.spec.machine_type.clone(),
            gpu: self.spec.gpu_type.clone().map(|t| (t, self.spec.gpu_count)),
            source_image: source_image.into(),
            disk_size_gb: self.spec.disk_size_gb,
            disk_type: self.spec.disk_type.clone(),
            spot: self.spec.spot,
            scopes: self.spec.scopes.clone(),
            tags: self.spec.tags.clone(),
            labels: self.labels(),
            metadata,
        }
    }

    async fn record(&self, ctx: &StepCtx, info: &InstanceInfo) -> Result<()> {
        ctx.state
            .update("instance", |r| {
                r.created.insert("instance".into(), format!("projects/{}/zones/{}/instances/{}", info.at.project, info.at.zone, info.at.name));
                r.facts.insert("zone".into(), info.at.zone.clone());
                match &info.external_ip {
                    Some(ip) => r.facts.insert("external_ip".into(), ip.clone()),
                    None => r.facts.remove("external_ip"),
                };
            })
            .await?;
        Ok(())
    }

    /// Reads the host keys the guest agent publishes and pins them in the state file.
    async fn record_host_keys(&self, ctx: &StepCtx, at: &InstanceRef) -> Result<()> {
        for attempt in 0..HOSTKEY_POLLS {
            match ctx.backends.compute.guest_attributes(at, "hostkeys/").await {
                Ok(keys) if !keys.is_empty() => {
                    let lines: Vec<String> = keys.iter().map(|(alg, body)| format!("{alg} {body}")).collect();
                    ctx.state.update("instance", |r| {
                        r.facts.insert("host_keys".into(), lines.join("\n"));
                    }).await?;
                    ctx.log(format!("pinned {} host key(s) from guest attributes", lines.len()));
                    return Ok(());
                }
                // Not published yet (the guest agent starts after boot): keep polling.
                Ok(_) | Err(BackendError::NotFound { .. }) => {}
                Err(e) => return Err(e.into()),
            }
            if attempt == 0 {
                ctx.log("waiting for the guest agent to publish the host keys");
            }
            tokio::select! {
                () = tokio::time::sleep(HOSTKEY_POLL_DELAY) => {}
                () = ctx.cancel.cancelled() => return Err(BackendError::Cancelled.into()),
            }
        }
        Err(BackendError::Timeout {
            what: format!("host keys in the guest attributes of {at}"),
            after: HOSTKEY_POLL_DELAY * HOSTKEY_POLLS,
            last_seen: Some("no hostkeys/ entries (is enable-guest-attributes set and the guest agent running?)".into()),
        }
        .into())
    }

    async fn create(&self, ctx: &StepCtx) -> Result<InstanceInfo> {
        let compute = &ctx.backends.compute;
        let image = compute.image_from_family(&self.spec.image_project, &self.spec.image_family).await?;
        if self.spec.disk_size_gb < image.disk_size_gb {
            return Err(ValidationError::new("instance.disk_size_gb", format!("{} GB is below the {} GB that image {} needs", self.spec.disk_size_gb, image.disk_size_gb, image.name)).into());
        }
        ctx.log(format!("image family {} → {}", self.spec.image_family, image.name));
        let key = crate::keys::ensure(&self.env)?;
        let ssh_key = key.gce_metadata(crate::keys::GCE_USER);
        let mut tried: Vec<String> = Vec::new();
        let mut skipped_regions: Vec<String> = Vec::new();
        let mut last: Option<BackendError> = None;
        for zone in &self.spec.zones {
            let region = region_of(zone).to_string();
            if skipped_regions.contains(&region) {
                tried.push(format!("{zone} (region quota)"));
                continue;
            }
            if let Some(gpu) = &self.spec.gpu_type {
                match compute.check_accelerator(&self.spec.project, zone, gpu).await {
                    Ok(()) => {}
                    Err(BackendError::NotFound { .. }) => {
                        tried.push(format!("{zone} ({gpu} not offered)"));
                        continue;
                    }
                    Err(e) => return Err(e.into()),
                }
            }
            let req = self.request(zone, &image.self_link, &ssh_key);
            ctx.log(format!("creating {} in {zone}", req.at));
            match compute.insert_instance(&req).await {
                Ok(info) => return Ok(info),
                Err(BackendError::AlreadyExists { .. }) => {
                    // A retried insert that landed, or a name clash: adopt only what is ours.
                    if let Some(info) = compute.get_instance(&req.at).await? {
                        if self.owned(&info) {
                            return Ok(info);
                        }
                    }
                    return Err(BackendError::AlreadyExists { resource: format!("{} (not created by kgenv; choose another name)", req.at) }.into());
                }
                Err(e) if e.is_stockout() => {
                    ctx.warn(format!("{zone}: no capacity ({e}); trying the next zone"));
                    // A stockout can leave a half-made instance behind: remove it.
                    if let Some(half) = compute.get_instance(&req.at).await? {
                        if self.owned(&half) {
                            compute.delete_instance(&req.at).await?;
                        }
                    }
                    tried.push(format!("{zone} (stockout)"));
                    last = Some(e);
                }
                Err(BackendError::Quota { quota, message }) => match &quota.scope {
                    QuotaScope::Global => return Err(BackendError::Quota { quota, message }.into()),
                    QuotaScope::Region(r) => {
                        ctx.warn(format!("quota {} reached in {r}; skipping its zones", quota.metric));
                        skipped_regions.push(r.clone());
                        tried.push(format!("{zone} (quota {})", quota.metric));
                        last = Some(BackendError::Quota { quota, message });
                    }
                },
                Err(e) => return Err(e.into()),
            }
        }
        let summary = format!("no zone could host the instance; tried {}. Add zones to `instance.zones`, pick another `gpu_type`, or request quota", tried.join(", "));
        Err(match last {
            Some(BackendError::Stockout { zone, resource, .. }) => BackendError::Stockout { zone, resource, message: summary },
            Some(BackendError::Quota { quota, .. }) => BackendError::Quota { quota, message: summary },
            _ => BackendError::NotFound { resource: summary },
        }
        .into())
    }
}

#[async_trait]
impl Step for InstanceStep {
    fn id(&self) -> &str {
        "instance"
    }
    fn deps(&self) -> &[String] {
        &[]
    }
    fn summary(&self) -> String {
        let gpu = self.spec.gpu_type.as_ref().map_or("no GPU".to_string(), |g| format!("{}x {g}", self.spec.gpu_count));
        format!(
            "GCE instance {} ({}, {gpu}, {} GB {}, {}/{}{}) in {}",
            self.spec.name, self.spec.machine_type, self.spec.disk_size_gb, self.spec.disk_type, self.spec.image_project, self.spec.image_family,
            if self.spec.spot { ", spot" } else { "" },
            self.spec.zones.join(" or ")
        )
    }
    fn planned_actions(&self) -> Vec<String> {
        let p = &self.spec.project;
        vec![
            format!("GET compute/v1/projects/{}/global/images/family/{}", self.spec.image_project, self.spec.image_family),
            format!("POST compute/v1/projects/{p}/zones/{}/instances (insert {}; next zones on stockout: {})", self.spec.zones[0], self.spec.name, self.spec.zones[1..].join(", ")),
            format!("GET compute/v1/projects/{p}/zones/ZONE/instances/{}/getGuestAttributes?queryPath=hostkeys/", self.spec.name),
        ]
    }
    async fn check(&self, ctx: &StepCtx) -> Result<CheckOutcome> {
        let Some(info) = self.find(ctx).await? else {
            let image = ctx.backends.compute.image_from_family(&self.spec.image_project, &self.spec.image_family).await?;
            let mut actions = self.planned_actions();
            actions[0] = format!("image family {} resolves to {}", self.spec.image_family, image.name);
            return Ok(CheckOutcome::missing(actions));
        };
        if !self.owned(&info) {
            return Err(BackendError::AlreadyExists { resource: format!("{} (not created by kgenv; choose another name)", info.at) }.into());
        }
        let mut diff = Vec::new();
        if info.machine_type != self.spec.machine_type {
            diff.push(format!("machine_type: {} → {} (kgenv does not resize a VM; `kgenv down --only instance` then `up`)", info.machine_type, self.spec.machine_type));
        }
        let want_gpu = self.spec.gpu_type.clone().map(|t| (t, self.spec.gpu_count));
        if info.gpu != want_gpu {
            diff.push(format!("gpu: {:?} → {:?} (kgenv does not change a VM's GPUs in place)", info.gpu, want_gpu));
        }
        if !diff.is_empty() {
            return Ok(CheckOutcome::drifted(diff, vec![]));
        }
        let recorded = ctx.state.snapshot().await;
        let host_keys_missing = recorded.fact("instance", "host_keys").is_none();
        match info.status {
            InstanceStatus::Running if !host_keys_missing && recorded.fact("instance", "external_ip") == info.external_ip.as_deref() => Ok(CheckOutcome::satisfied()),
            InstanceStatus::Running => Ok(CheckOutcome::drifted(vec!["host keys or address not recorded yet".into()], vec!["GET getGuestAttributes hostkeys/".into()])),
            InstanceStatus::Terminated | InstanceStatus::Stopping | InstanceStatus::Suspended => Ok(CheckOutcome::drifted(
                vec![format!("status: {:?} → RUNNING", info.status)],
                vec![format!("POST compute/v1/projects/{}/zones/{}/instances/{}/start", info.at.project, info.at.zone, info.at.name)],
            )),
            _ => Ok(CheckOutcome::drifted(vec![format!("status: {:?} (waiting for RUNNING)", info.status)], vec![])),
        }
    }
    async fn apply(&self, ctx: &StepCtx) -> Result<()> {
        let info = match self.find(ctx).await? {
            Some(info) if info.machine_type != self.spec.machine_type || info.gpu != self.spec.gpu_type.clone().map(|t| (t, self.spec.gpu_count)) => {
                return Err(BackendError::InvalidArgument {
                    resource: info.at.to_string(),
                    message: "exists with another machine type or GPU; kgenv will not recreate a VM that holds your work: run `kgenv down --only instance`, then `kgenv up`".into(),
                }
                .into());
            }
            Some(info) if matches!(info.status, InstanceStatus::Terminated | InstanceStatus::Suspended) => {
                ctx.log(format!("starting stopped {}", info.at));
                ctx.backends.compute.start_instance(&info.at).await?;
                ctx.backends.compute.get_instance(&info.at).await?.ok_or_else(|| BackendError::NotFound { resource: info.at.to_string() })?
            }
            Some(info) => info,
            None => self.create(ctx).await?,
        };
        // Record before anything else can fail, so `down` can always find it.
        self.record(ctx, &info).await?;
        self.record_host_keys(ctx, &info.at).await
    }
    async fn destroy(&self, ctx: &StepCtx) -> Result<Destroyed> {
        let state = ctx.state.snapshot().await;
        let Some(zone) = state.step("instance").filter(|r| !r.created.is_empty()).and_then(|_| state.fact("instance", "zone").map(str::to_string)) else {
            return Ok(Destroyed::Nothing);
        };
        ctx.log(format!("deleting {}", self.at(&zone)));
        match ctx.backends.compute.delete_instance(&self.at(&zone)).await {
            Ok(()) | Err(BackendError::NotFound { .. }) => {}
            Err(e) => return Err(e.into()),
        }
        ctx.state.update("instance", |r| *r = Default::default()).await?;
        Ok(Destroyed::Removed)
    }
}
