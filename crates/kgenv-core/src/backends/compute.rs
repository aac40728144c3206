//! The Compute (GCE) backend trait and the typed values it exchanges.

use std::collections::BTreeMap;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use super::BackendResult;

/// Google's project of Deep Learning VM images.
pub const DEEP_LEARNING_IMAGE_PROJECT: &str = "deeplearning-platform-release";

/// The region of a zone: `us-central1-a` → `us-central1`.
pub fn region_of(zone: &str) -> &str {
    zone.rsplit_once('-').map_or(zone, |(r, _)| r)
}

/// Minimum boot disk for an image project, as documented (Deep Learning VM images need
/// 50 GB): what the real client falls back to when an image does not say, what the mock's
/// images say, and what the spec checks before any call.
pub fn image_min_disk_gb(image_project: &str) -> u64 {
    if image_project == DEEP_LEARNING_IMAGE_PROJECT {
        50
    } else {
        10
    }
}

/// Identifies one instance.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct InstanceRef {
    /// GCP project id.
    pub project: String,
    /// Zone, e.g. `us-central1-a`.
    pub zone: String,
    /// Instance name.
    pub name: String,
}

impl std::fmt::Display for InstanceRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "instance {}/{}/{}", self.project, self.zone, self.name)
    }
}

/// Lifecycle state of an instance, as GCE reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum InstanceStatus {
    /// Resources are being reserved.
    Provisioning,
    /// Resources are acquired; the VM is being prepared.
    Staging,
    /// Booted (the OS may still be starting).
    Running,
    /// Being stopped.
    Stopping,
    /// Being suspended.
    Suspending,
    /// Suspended.
    Suspended,
    /// Stopped (disk kept, GPU not billed).
    Terminated,
    /// Being repaired by GCE.
    Repairing,
}

/// What kgenv asks GCE to create.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InstanceRequest {
    /// Where and what name.
    pub at: InstanceRef,
    /// Machine type, e.g. `n1-standard-8`.
    pub machine_type: String,
    /// GPU type and count, if any.
    pub gpu: Option<(String, u8)>,
    /// The concrete boot image (self link), resolved from the family.
    pub source_image: String,
    /// Boot disk size in GB.
    pub disk_size_gb: u64,
    /// Boot disk type, e.g. `pd-balanced`.
    pub disk_type: String,
    /// How GCE provisions it (standard, spot, flex-start).
    #[serde(default)]
    pub provisioning: Provisioning,
    /// Service account email; `None`: the project's Compute Engine default service account.
    #[serde(default)]
    pub service_account: Option<String>,
    /// Service account scopes.
    pub scopes: Vec<String>,
    /// Network tags (the firewall targets them).
    pub tags: Vec<String>,
    /// Labels, including kgenv's ownership labels.
    pub labels: BTreeMap<String, String>,
    /// Metadata items (ssh-keys, install-nvidia-driver, ...).
    pub metadata: BTreeMap<String, String>,
}

/// What kgenv knows of an existing instance.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InstanceInfo {
    /// Where and what name.
    pub at: InstanceRef,
    /// GCE's numeric id.
    pub id: String,
    /// Lifecycle state.
    pub status: InstanceStatus,
    /// External IPv4 address, when it has one.
    pub external_ip: Option<String>,
    /// Machine type (short name).
    pub machine_type: String,
    /// GPU type and count, if any.
    pub gpu: Option<(String, u8)>,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// Attached disks, the boot disk first.
    #[serde(default)]
    pub disks: Vec<AttachedDisk>,
    /// The service account's email as GCE reports it (the default account shows as
    /// `PROJECT_NUMBER-compute@developer.gserviceaccount.com`), `None` when it has none.
    #[serde(default)]
    pub service_account: Option<String>,
    /// The service account's scopes.
    #[serde(default)]
    pub scopes: Vec<String>,
    /// When it last started (GCE's `lastStartTimestamp`, RFC 3339), if it ever ran: what a
    /// running VM's cost so far counts from, and whether a preemption stopped it last.
    #[serde(default)]
    pub last_start: Option<String>,
}

/// How GCE provisions a VM (`scheduling.provisioningModel`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "model")]
#[non_exhaustive]
pub enum Provisioning {
    /// On-demand: runs until stopped.
    #[default]
    Standard,
    /// Spot: discounted, may be preempted at any time; kgenv has GCE stop it (not delete
    /// it) on preemption, so both disks stay.
    Spot,
    /// Flex-start (Dynamic Workload Scheduler): discounted, runs at most
    /// `max_run_duration_secs`, after which GCE stops it (disks kept).
    FlexStart {
        /// The most it runs, in seconds (`scheduling.maxRunDuration.seconds`).
        max_run_duration_secs: u64,
    },
}

impl Provisioning {
    /// The config's name: `standard`, `spot`, `flex-start`.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Standard => "standard",
            Self::Spot => "spot",
            Self::FlexStart { .. } => "flex-start",
        }
    }
}

impl std::fmt::Display for Provisioning {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A preemption GCE recorded for an instance (its `compute.instances.preempted` zone
/// operation).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Preemption {
    /// When it happened, RFC 3339 in UTC to the millisecond (`2026-12-04T10:02:11.482Z`).
    pub at: String,
    /// The operation's name.
    pub operation: String,
}

/// A disk as attached to an instance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttachedDisk {
    /// Device name inside the guest (`/dev/disk/by-id/google-<device_name>`).
    pub device_name: String,
    /// The disk (`projects/p/zones/z/disks/d`).
    pub source: String,
    /// Whether it is the boot disk.
    pub boot: bool,
}

/// Whether `email` is a project's Compute Engine default service account
/// (`PROJECT_NUMBER-compute@developer.gserviceaccount.com`): what an instance made with
/// [`InstanceRequest::service_account`] `None` reports.
pub fn is_default_compute_account(email: &str) -> bool {
    email
        .strip_suffix("-compute@developer.gserviceaccount.com")
        .is_some_and(|n| !n.is_empty() && n.bytes().all(|c| c.is_ascii_digit()))
}

/// `projects/p/zones/z/disks/d`: how an instance names an attached disk.
pub fn disk_path(at: &DiskRef) -> String {
    format!(
        "projects/{}/zones/{}/disks/{}",
        at.project, at.zone, at.name
    )
}

/// `projects/p/zones/z/instances/n`: how kgenv records an instance and a disk lists its users.
pub fn instance_path(at: &InstanceRef) -> String {
    format!(
        "projects/{}/zones/{}/instances/{}",
        at.project, at.zone, at.name
    )
}

/// The (project, zone, name) of a zonal resource link of `kind` (`instances`, `disks`):
/// `projects/p/zones/z/<kind>/n`, or a full self link ending so.
fn zonal_parts(link: &str, kind: &str) -> Option<(String, String, String)> {
    let rest = &link[link.find("projects/")?..];
    match rest.split('/').collect::<Vec<_>>().as_slice() {
        ["projects", p, "zones", z, k, n] if *k == kind => {
            Some(((*p).into(), (*z).into(), (*n).into()))
        }
        _ => None,
    }
}

impl InstanceRef {
    /// The instance a link names (see [`instance_path`]).
    pub fn from_link(link: &str) -> Option<Self> {
        zonal_parts(link, "instances").map(|(project, zone, name)| Self {
            project,
            zone,
            name,
        })
    }
}

impl DiskRef {
    /// The disk a link names (see [`disk_path`]).
    pub fn from_link(link: &str) -> Option<Self> {
        zonal_parts(link, "disks").map(|(project, zone, name)| Self {
            project,
            zone,
            name,
        })
    }
}

/// A firewall rule (VPC network, ingress, allow).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FirewallRule {
    /// GCP project id.
    pub project: String,
    /// Rule name.
    pub name: String,
    /// VPC network name.
    pub network: String,
    /// `tcp`, `udp`, ...
    pub protocol: String,
    /// Ports or ranges (`22`, `8000-8100`).
    pub ports: Vec<String>,
    /// Allowed source CIDR ranges.
    pub source_ranges: Vec<String>,
    /// Instances (network tags) the rule applies to.
    pub target_tags: Vec<String>,
    /// Description; kgenv marks its ownership here (firewalls have no labels).
    pub description: String,
}

/// A boot image resolved from a family.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageInfo {
    /// Full self link, used as the instance's source image.
    pub self_link: String,
    /// Concrete image name.
    pub name: String,
    /// The image's minimum disk size in GB.
    pub disk_size_gb: u64,
}

/// Identifies one zonal persistent disk.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct DiskRef {
    /// GCP project id.
    pub project: String,
    /// Zone, e.g. `us-central1-a`.
    pub zone: String,
    /// Disk name.
    pub name: String,
}

impl std::fmt::Display for DiskRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "disk {}/{}/{}", self.project, self.zone, self.name)
    }
}

/// What kgenv asks GCE to create: a blank disk, or one made from a snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiskRequest {
    /// Where and what name.
    pub at: DiskRef,
    /// Size in GB.
    pub size_gb: u64,
    /// Disk type (short name), e.g. `pd-balanced`.
    pub disk_type: String,
    /// Labels, including kgenv's ownership labels.
    pub labels: BTreeMap<String, String>,
    /// Snapshot to restore (`projects/p/global/snapshots/s`), or `None` for a blank disk.
    pub source_snapshot: Option<String>,
}

/// What kgenv knows of an existing disk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiskInfo {
    /// Where and what name.
    pub at: DiskRef,
    /// GCE's numeric id.
    pub id: String,
    /// Size in GB.
    pub size_gb: u64,
    /// Disk type (short name).
    pub disk_type: String,
    /// `CREATING`, `READY`, `RESTORING`, `DELETING`, `FAILED`.
    pub status: String,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// Instances it is attached to (`projects/p/zones/z/instances/n`).
    pub users: Vec<String>,
}

/// A snapshot of a disk (global).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotInfo {
    /// GCP project id.
    pub project: String,
    /// Snapshot name.
    pub name: String,
    /// GCE's numeric id.
    pub id: String,
    /// `CREATING`, `UPLOADING`, `READY`, `FAILED`, `DELETING`.
    pub status: String,
    /// The disk it was taken from (`projects/p/zones/z/disks/d`).
    pub source_disk: String,
    /// Labels.
    pub labels: BTreeMap<String, String>,
}

/// Google Compute Engine, as kgenv uses it. Mutating calls wait for their operation to finish.
#[async_trait]
pub trait Compute: Send + Sync {
    /// The instance, or `None` when it does not exist.
    async fn get_instance(&self, at: &InstanceRef) -> BackendResult<Option<InstanceInfo>>;
    /// Creates an instance and waits until the operation is done.
    async fn insert_instance(&self, req: &InstanceRequest) -> BackendResult<InstanceInfo>;
    /// Deletes an instance and waits.
    async fn delete_instance(&self, at: &InstanceRef) -> BackendResult<()>;
    /// Starts a stopped instance and waits.
    async fn start_instance(&self, at: &InstanceRef) -> BackendResult<()>;
    /// Stops an instance (keeps the disk) and waits.
    async fn stop_instance(&self, at: &InstanceRef) -> BackendResult<()>;
    /// Guest attributes under a query path, e.g. `hostkeys/`: (key, value) pairs.
    async fn guest_attributes(
        &self,
        at: &InstanceRef,
        query_path: &str,
    ) -> BackendResult<Vec<(String, String)>>;
    /// The firewall rule, or `None`.
    async fn get_firewall(&self, project: &str, name: &str) -> BackendResult<Option<FirewallRule>>;
    /// Creates a firewall rule and waits.
    async fn insert_firewall(&self, rule: &FirewallRule) -> BackendResult<()>;
    /// Replaces a firewall rule's allowed ports, ranges and tags, and waits.
    async fn patch_firewall(&self, rule: &FirewallRule) -> BackendResult<()>;
    /// Deletes a firewall rule and waits.
    async fn delete_firewall(&self, project: &str, name: &str) -> BackendResult<()>;
    /// Resolves an image family to its current image.
    async fn image_from_family(&self, project: &str, family: &str) -> BackendResult<ImageInfo>;
    /// Checks that an accelerator type exists in a zone (`NotFound` otherwise).
    async fn check_accelerator(
        &self,
        project: &str,
        zone: &str,
        gpu_type: &str,
    ) -> BackendResult<()>;
    /// Checks that a machine type exists in a zone (`NotFound` otherwise).
    async fn check_machine_type(
        &self,
        project: &str,
        zone: &str,
        machine_type: &str,
    ) -> BackendResult<()>;
    /// The zones that offer accelerator type `gpu_type`, sorted (GCE's
    /// `acceleratorTypes.aggregatedList` filtered by name, every page read): what
    /// `zones = "auto"` and regions expand to.
    async fn accelerator_zones(&self, project: &str, gpu_type: &str) -> BackendResult<Vec<String>>;
    /// The zones that offer machine type `machine_type`, sorted
    /// (`machineTypes.aggregatedList` filtered by name, every page read).
    async fn machine_type_zones(
        &self,
        project: &str,
        machine_type: &str,
    ) -> BackendResult<Vec<String>>;
    /// The public IPv4 address this machine reaches Google from, for SSH-only firewall
    /// rules (`<ip>/32`).
    async fn caller_ip(&self) -> BackendResult<String>;

    /// The disk, or `None` when it does not exist.
    async fn get_disk(&self, at: &DiskRef) -> BackendResult<Option<DiskInfo>>;
    /// Creates a disk (blank or from a snapshot) and waits.
    async fn insert_disk(&self, req: &DiskRequest) -> BackendResult<DiskInfo>;
    /// Deletes a disk and waits. A disk still attached to an instance is refused
    /// ([`BackendError::InUse`](super::BackendError::InUse)).
    async fn delete_disk(&self, at: &DiskRef) -> BackendResult<()>;
    /// Grows a disk to `size_gb` and waits (GCE never shrinks one: a size not above the
    /// current one is [`BackendError::InvalidArgument`](super::BackendError::InvalidArgument)).
    async fn resize_disk(&self, at: &DiskRef, size_gb: u64) -> BackendResult<()>;
    /// Attaches a disk read-write under `device_name` (`/dev/disk/by-id/google-<name>`) and
    /// waits. The disk must be in the instance's zone and attached to no other instance.
    async fn attach_disk(
        &self,
        instance: &InstanceRef,
        disk: &DiskRef,
        device_name: &str,
    ) -> BackendResult<()>;
    /// Detaches the disk attached under `device_name` and waits.
    async fn detach_disk(&self, instance: &InstanceRef, device_name: &str) -> BackendResult<()>;
    /// Snapshots a disk under `name` with `labels` and waits until the snapshot is READY.
    async fn create_snapshot(
        &self,
        disk: &DiskRef,
        name: &str,
        labels: &BTreeMap<String, String>,
    ) -> BackendResult<SnapshotInfo>;
    /// The snapshot, or `None`.
    async fn get_snapshot(&self, project: &str, name: &str) -> BackendResult<Option<SnapshotInfo>>;
    /// Deletes a snapshot and waits.
    async fn delete_snapshot(&self, project: &str, name: &str) -> BackendResult<()>;
    /// Changes a stopped instance's machine type and waits (a running one is refused with
    /// [`BackendError::FailedPrecondition`](super::BackendError::FailedPrecondition)).
    async fn set_machine_type(&self, at: &InstanceRef, machine_type: &str) -> BackendResult<()>;
    /// Changes a stopped instance's GPUs (type and count; `None` removes them) and waits.
    async fn set_gpus(&self, at: &InstanceRef, gpu: Option<(String, u8)>) -> BackendResult<()>;
    /// Changes a stopped instance's service account (`None`: the project's default) and
    /// scopes, and waits.
    async fn set_service_account(
        &self,
        at: &InstanceRef,
        email: Option<&str>,
        scopes: &[String],
    ) -> BackendResult<()>;
    /// Replaces an instance's labels (reading the current label fingerprint) and waits.
    async fn set_instance_labels(
        &self,
        at: &InstanceRef,
        labels: &BTreeMap<String, String>,
    ) -> BackendResult<()>;
    /// The newest preemption of the instance with GCE id `id` (its zone's
    /// `compute.instances.preempted` operations on that target, newest first), `None` when
    /// none is listed. GCE keeps zone operations for a limited time, so an old preemption
    /// may no longer be listed.
    async fn last_preemption(
        &self,
        at: &InstanceRef,
        id: &str,
    ) -> BackendResult<Option<Preemption>>;
}
