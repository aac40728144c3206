//! Guide step 1, the part that keeps the user's work: the VM's persistent data disk
//! (`[instance.data_disk]`).
//!
//! A zonal disk `<instance>-data`, labelled with the environment's owner id, created in the
//! instance's zone and attached under the fixed device name
//! [`DATA_DEVICE_NAME`](super::disk_mount::DATA_DEVICE_NAME) (the host step
//! [`disk_mount`](super::disk_mount) formats it only when it holds no filesystem, and mounts
//! it at the environment's data root). `down` deletes the VM and its boot disk and keeps
//! this disk, recorded in the state, so the next `up` makes the VM in the disk's zone and
//! attaches it again; it is deleted only when named (`down --delete-disk NAME`). Growing
//! `size_gb` resizes it in place; shrinking is refused, as GCE cannot shrink a disk.
//!
//! `kgenv move ZONE` moves the disk to another zone by way of a snapshot: the disk-side
//! phases live in [`relocate`], the runner's `move_to` orders them around the VM.

pub mod relocate;

use async_trait::async_trait;

use crate::backends::compute::{
    disk_path, instance_path, DiskInfo, DiskRef, DiskRequest, InstanceRef,
};
use crate::error::{BackendError, Result, ValidationError};
use crate::plan::{CheckOutcome, Destroyed, Step, StepCtx, Teardown};
use crate::spec::{DataDisk, Instance};
use crate::state::{Owner, State, StepRecord};

use super::disk_mount::DATA_DEVICE_NAME;
use super::instance::recorded_instance;

/// Id of the step.
pub const DATA_DISK_ID: &str = "data-disk";

/// The data disk the state recorded (`projects/p/zones/z/disks/d`): kept across `down`.
pub fn recorded_disk(state: &State) -> Option<DiskRef> {
    let link = state.step(DATA_DISK_ID)?.created.get("disk")?;
    DiskRef::from_link(link)
}

/// Whether a disk's `users` (self links or relative links) include `instance`.
fn attached_to(disk: &DiskInfo, instance: &InstanceRef) -> bool {
    let want = instance_path(instance);
    disk.users.iter().any(|u| u.ends_with(&want))
}

/// Creates, grows and attaches the environment's data disk; keeps it on `down`.
pub struct DataDiskStep {
    spec: Instance,
    disk: DataDisk,
    deps: Vec<String>,
}

impl DataDiskStep {
    /// The step for `spec`'s data disk, after the instance.
    pub fn new(spec: Instance, disk: DataDisk) -> Self {
        Self {
            spec,
            disk,
            deps: vec!["instance".into()],
        }
    }

    /// The disk's name: `<instance>-data`.
    pub fn disk_name(&self) -> String {
        format!("{}-data", self.spec.name)
    }

    fn at(&self, zone: &str) -> DiskRef {
        DiskRef {
            project: self.spec.project.clone(),
            zone: zone.into(),
            name: self.disk_name(),
        }
    }

    /// Where the disk is or will be: the recorded disk, else the spec's name in the
    /// instance's zone (`None` while the instance has no zone yet).
    fn locate(&self, state: &State) -> Option<DiskRef> {
        recorded_disk(state).or_else(|| recorded_instance(state).map(|i| self.at(&i.zone)))
    }

    fn not_ours(at: &DiskRef) -> crate::Error {
        BackendError::AlreadyExists {
            resource: format!("{at} (it does not carry this environment's owner id; kgenv leaves it alone — pick another `instance.name`)"),
        }
        .into()
    }

    fn owned(owner: &Owner, state: &State, d: &DiskInfo) -> bool {
        owner.owns(&d.labels)
            || (!d.id.is_empty() && state.fact(DATA_DISK_ID, "id") == Some(d.id.as_str()))
    }

    fn shrink_error(&self, have: u64) -> crate::Error {
        ValidationError::new(
            "instance.data_disk.size_gb",
            format!(
                "{} GB is below the data disk's {have} GB: GCE cannot shrink a disk; set size_gb to {have} or more (or move the data to a new, smaller disk by hand)",
                self.disk.size_gb
            ),
        )
        .into()
    }

    async fn record(&self, ctx: &StepCtx, d: &DiskInfo) -> Result<()> {
        record_disk(ctx, d).await
    }
}

/// Records `d` as the environment's data disk (link, zone, GCE id, size, type).
async fn record_disk(ctx: &StepCtx, d: &DiskInfo) -> Result<()> {
    ctx.state
        .update(DATA_DISK_ID, |r| {
            r.created.insert("disk".into(), disk_path(&d.at));
            r.facts.insert("zone".into(), d.at.zone.clone());
            r.facts.insert("id".into(), d.id.clone());
            r.facts.insert("size_gb".into(), d.size_gb.to_string());
            r.facts.insert("type".into(), d.disk_type.clone());
        })
        .await?;
    Ok(())
}

/// The zone of the environment's kept data disk, if it has one: the instance must be made
/// there (a disk attaches only to a VM in its own zone).
pub fn data_disk_zone(state: &State) -> Option<String> {
    recorded_disk(state).map(|d| d.zone)
}

#[async_trait]
impl Step for DataDiskStep {
    fn id(&self) -> &str {
        DATA_DISK_ID
    }
    fn deps(&self) -> &[String] {
        &self.deps
    }
    fn summary(&self) -> String {
        format!(
            "data disk {} ({} GB {}, kept by `down`) attached as {DATA_DEVICE_NAME}",
            self.disk_name(),
            self.disk.size_gb,
            self.disk.disk_type
        )
    }
    fn planned_actions(&self) -> Vec<String> {
        let p = &self.spec.project;
        vec![
            format!(
                "POST compute/v1/projects/{p}/zones/ZONE/disks (insert {}, {} GB {}) unless kept from before",
                self.disk_name(),
                self.disk.size_gb,
                self.disk.disk_type
            ),
            format!(
                "POST compute/v1/projects/{p}/zones/ZONE/instances/{}/attachDisk (device {DATA_DEVICE_NAME})",
                self.spec.name
            ),
        ]
    }
    async fn check(&self, ctx: &StepCtx) -> Result<CheckOutcome> {
        let state = ctx.state.snapshot().await;
        let Some(at) = self.locate(&state) else {
            return Ok(CheckOutcome::missing(self.planned_actions()));
        };
        let Some(disk) = ctx.backends.compute.get_disk(&at).await? else {
            return Ok(CheckOutcome::missing(self.planned_actions()));
        };
        if !Self::owned(&state.owner(), &state, &disk) {
            return Err(Self::not_ours(&at));
        }
        if disk.size_gb > self.disk.size_gb {
            return Err(self.shrink_error(disk.size_gb));
        }
        let mut diff = Vec::new();
        let mut actions = Vec::new();
        if disk.size_gb < self.disk.size_gb {
            diff.push(format!(
                "size_gb: {} → {} (grown in place; the filesystem is grown on the host)",
                disk.size_gb, self.disk.size_gb
            ));
            actions.push(format!(
                "POST compute/v1/projects/{}/zones/{}/disks/{}/resize",
                at.project, at.zone, at.name
            ));
        }
        match recorded_instance(&state) {
            Some(i) if !attached_to(&disk, &i) => {
                diff.push(format!("not attached to {i}"));
                actions.push(format!(
                    "POST compute/v1/projects/{}/zones/{}/instances/{}/attachDisk (device {DATA_DEVICE_NAME})",
                    i.project, i.zone, i.name
                ));
            }
            _ => {}
        }
        if state.fact(DATA_DISK_ID, "id") != Some(disk.id.as_str()) {
            diff.push("not recorded in the state file yet".into());
        }
        if diff.is_empty() {
            Ok(CheckOutcome::satisfied())
        } else {
            Ok(CheckOutcome::drifted(diff, actions))
        }
    }
    async fn apply(&self, ctx: &StepCtx) -> Result<()> {
        let compute = &ctx.backends.compute;
        let state = ctx.state.snapshot().await;
        let owner = state.owner();
        let instance = recorded_instance(&state).ok_or_else(|| BackendError::NotFound {
            resource: format!(
                "instance {} (the instance step makes it before its data disk)",
                self.spec.name
            ),
        })?;
        let at = recorded_disk(&state).unwrap_or_else(|| self.at(&instance.zone));
        if at.zone != instance.zone {
            return Err(BackendError::InvalidArgument {
                resource: at.to_string(),
                message: format!("is in {} but {instance} is in {}; a disk attaches only in its own zone: `kgenv move {}` moves the data to the VM's zone", at.zone, instance.zone, instance.zone),
            }
            .into());
        }
        let disk = match compute.get_disk(&at).await? {
            Some(d) if !Self::owned(&owner, &state, &d) => return Err(Self::not_ours(&at)),
            Some(d) => d,
            None => {
                let mut labels = self.spec.labels.clone();
                labels.extend(owner.labels());
                let req = DiskRequest {
                    at: at.clone(),
                    size_gb: self.disk.size_gb,
                    disk_type: self.disk.disk_type.clone(),
                    labels,
                    source_snapshot: None,
                };
                ctx.log(format!(
                    "creating {at} ({} GB {})",
                    req.size_gb, req.disk_type
                ));
                match compute.insert_disk(&req).await {
                    Ok(d) => d,
                    // A retried insert that landed, or a run killed after it: ours only
                    // if it carries the owner id.
                    Err(BackendError::AlreadyExists { .. }) => match compute.get_disk(&at).await? {
                        Some(d) if owner.owns(&d.labels) => d,
                        _ => return Err(Self::not_ours(&at)),
                    },
                    Err(e) => return Err(e.into()),
                }
            }
        };
        // Record before anything else can fail, so the disk is never forgotten.
        self.record(ctx, &disk).await?;
        if disk.size_gb > self.disk.size_gb {
            return Err(self.shrink_error(disk.size_gb));
        }
        if disk.size_gb < self.disk.size_gb {
            ctx.log(format!(
                "growing {at} from {} to {} GB",
                disk.size_gb, self.disk.size_gb
            ));
            compute.resize_disk(&at, self.disk.size_gb).await?;
        }
        if !attached_to(&disk, &instance) {
            if let Some(other) = disk.users.first() {
                return Err(BackendError::InvalidArgument {
                    resource: at.to_string(),
                    message: format!("is attached to {other}; detach it there first"),
                }
                .into());
            }
            ctx.log(format!(
                "attaching {at} to {instance} as {DATA_DEVICE_NAME}"
            ));
            match compute.attach_disk(&instance, &at, DATA_DEVICE_NAME).await {
                Ok(()) => {}
                // A run killed while its attach was under way: that attach has landed
                // meanwhile, and this one found the disk in use — by this very VM.
                Err(e @ BackendError::InUse { .. }) => match compute.get_disk(&at).await? {
                    Some(d) if attached_to(&d, &instance) => {
                        ctx.log(format!(
                            "{at} was attached to {instance} by an earlier, interrupted run"
                        ));
                    }
                    _ => return Err(e.into()),
                },
                Err(e) => return Err(e.into()),
            }
        }
        let now = compute
            .get_disk(&at)
            .await?
            .ok_or_else(|| BackendError::NotFound {
                resource: at.to_string(),
            })?;
        self.record(ctx, &now).await
    }
    fn teardown(&self, record: &StepRecord, ctx: &StepCtx) -> Teardown {
        let Some(at) = record
            .created
            .get("disk")
            .and_then(|l| DiskRef::from_link(l))
        else {
            return Teardown::default();
        };
        let size = record
            .facts
            .get("size_gb")
            .map_or(String::new(), |s| format!(", {s} GB"));
        let t = Teardown::default().disk(at.name.clone());
        if ctx.delete_disk_requested(&at.name) {
            t.delete(format!(
                "data disk {} in {}{size}, with your data and notebooks (as asked with --delete-disk)",
                at.name, at.zone
            ))
        } else {
            t.keep(format!(
                "data disk {} in {}{size}: your data and notebooks (delete it with --delete-disk {})",
                at.name, at.zone, at.name
            ))
        }
    }
    async fn destroy(&self, ctx: &StepCtx) -> Result<Destroyed> {
        let state = ctx.state.snapshot().await;
        let Some(at) = recorded_disk(&state) else {
            return Ok(Destroyed::Nothing);
        };
        if !ctx.delete_disk_requested(&at.name) {
            ctx.log(format!(
                "keeping {at}: it holds your data and notebooks (`kgenv down --delete-disk {}` deletes it)",
                at.name
            ));
            return Ok(Destroyed::Nothing);
        }
        let compute = &ctx.backends.compute;
        match compute.get_disk(&at).await? {
            None => {}
            Some(d) if !Self::owned(&state.owner(), &state, &d) => {
                ctx.warn(format!("{at} no longer carries this environment's owner id; kgenv leaves it alone and forgets it"));
            }
            Some(d) => {
                // `down` removes dependents first, so the VM may still hold the disk.
                if let Some(i) = recorded_instance(&state).filter(|i| attached_to(&d, i)) {
                    ctx.log(format!("detaching {at} from {i}"));
                    match compute.detach_disk(&i, DATA_DEVICE_NAME).await {
                        Ok(()) | Err(BackendError::NotFound { .. }) => {}
                        Err(e) => return Err(e.into()),
                    }
                }
                ctx.log(format!("deleting {at} (named with --delete-disk)"));
                match compute.delete_disk(&at).await {
                    Ok(()) | Err(BackendError::NotFound { .. }) => {}
                    Err(e) => return Err(e.into()),
                }
            }
        }
        ctx.state
            .update(DATA_DISK_ID, |r| *r = Default::default())
            .await?;
        Ok(Destroyed::Removed)
    }
}
