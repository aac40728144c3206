//! The GCE instance spec (guide step 1): a GPU VM on a Deep Learning VM image.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::disk::{DataDisk, DataDiskBuilder, DISK_TYPES};
use super::gpu::{self, GpuChoice, GpuChoiceInput};
use super::rules;
use crate::backends::compute::{image_min_disk_gb, DEEP_LEARNING_IMAGE_PROJECT};
use crate::error::ValidationError;

/// Default machine type: the guide's smallest recommended size.
pub const DEFAULT_MACHINE_TYPE: &str = "n1-standard-8";
/// Default GPU type.
pub const DEFAULT_GPU_TYPE: &str = "nvidia-tesla-t4";
/// Project that publishes the Deep Learning VM images.
pub const DEFAULT_IMAGE_PROJECT: &str = DEEP_LEARNING_IMAGE_PROJECT;
/// Deep Learning VM family with CUDA 12.9 and the 580 driver on Ubuntu 22.04.
pub const DEFAULT_IMAGE_FAMILY: &str = "common-cu129-ubuntu-2204-nvidia-580";
/// Default boot disk: the Kaggle GPU image is about 60 GB unpacked, plus data and pip caches.
pub const DEFAULT_DISK_GB: u64 = 200;
/// Where Google's OAuth scopes live; `scopes` may give only what follows it.
pub const SCOPE_PREFIX: &str = "https://www.googleapis.com/auth/";
/// `cloud-platform`: every API the service account's IAM roles allow. The guide's "storage:
/// full" and the default of kgenv before issue 13; allowed when asked for, with a `plan`
/// warning.
pub const CLOUD_PLATFORM_SCOPE: &str = "https://www.googleapis.com/auth/cloud-platform";
/// Storage read and write: gcsfuse writes to the mounted bucket.
pub const STORAGE_READ_WRITE_SCOPE: &str = "https://www.googleapis.com/auth/devstorage.read_write";
/// Storage read only: enough to pull images from gcr.io and Artifact Registry.
pub const STORAGE_READ_ONLY_SCOPE: &str = "https://www.googleapis.com/auth/devstorage.read_only";
/// Cloud Logging writes (the guest agent and the Ops Agent send the VM's logs).
pub const LOGGING_WRITE_SCOPE: &str = "https://www.googleapis.com/auth/logging.write";
/// Cloud Monitoring writes (the Ops Agent and the Deep Learning VM's GPU metrics).
pub const MONITORING_WRITE_SCOPE: &str = "https://www.googleapis.com/auth/monitoring.write";

/// The scopes a VM gets when `scopes` is left out: least privilege for what kgenv runs on
/// it. With a bucket to mount, storage read-write (gcsfuse writes the user's outputs back);
/// without one, storage read-only, which is all the image pull from gcr.io or Artifact
/// Registry needs — nothing else on the VM calls Google APIs for kgenv. Logging and
/// monitoring writes keep the VM's logs and GPU metrics flowing as on any GCE VM.
pub fn default_scopes(bucket_mounted: bool) -> Vec<String> {
    let storage = if bucket_mounted {
        STORAGE_READ_WRITE_SCOPE
    } else {
        STORAGE_READ_ONLY_SCOPE
    };
    [storage, LOGGING_WRITE_SCOPE, MONITORING_WRITE_SCOPE]
        .map(String::from)
        .to_vec()
}

/// Whether a VM running with `have` can do everything `want` allows: each wanted scope is
/// held, or implied by one held (`cloud-platform` implies every scope; storage
/// `full_control` implies `read_write`, which implies `read_only`).
pub fn scopes_cover(have: &[String], want: &[String]) -> bool {
    let holds = |s: &str| have.iter().any(|h| h == s);
    want.iter().all(|w| {
        holds(w)
            || holds(CLOUD_PLATFORM_SCOPE)
            || (w == STORAGE_READ_ONLY_SCOPE && holds(STORAGE_READ_WRITE_SCOPE))
            || ((w == STORAGE_READ_ONLY_SCOPE || w == STORAGE_READ_WRITE_SCOPE)
                && holds("https://www.googleapis.com/auth/devstorage.full_control"))
    })
}

/// Where the VM may go: `"auto"` (every zone that offers the GPU and machine type), or a
/// list of zones and regions (a region stands for each of its zones that offer them).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(into = "ZonesInput", try_from = "ZonesInput")]
pub enum Zones {
    /// Every zone offering the machine and GPU types (the aggregated lists decide).
    Auto,
    /// Zones (`us-central1-a`) and regions (`us-central1`), in order of preference.
    Listed(Vec<String>),
}

impl Zones {
    /// The zones and regions given, in order (empty for [`Zones::Auto`]).
    pub fn listed(&self) -> &[String] {
        match self {
            Self::Auto => &[],
            Self::Listed(v) => v,
        }
    }
    /// Whether the list is only zones (no region, not auto): then each is asked about
    /// directly, and tried in the order given.
    pub fn only_zones(&self) -> Option<&[String]> {
        match self {
            Self::Listed(v) if v.iter().all(|z| is_zone(z)) => Some(v),
            _ => None,
        }
    }
    /// The region of the first entry, if any (for defaults such as a bucket's location).
    pub fn first_region(&self) -> Option<&str> {
        self.listed().first().map(|z| {
            if is_zone(z) {
                rules::region_of(z)
            } else {
                z.as_str()
            }
        })
    }
    /// Whether `zone` is one the spec allows: listed, in a listed region, or any with auto.
    pub fn allows(&self, zone: &str) -> bool {
        match self {
            Self::Auto => true,
            Self::Listed(v) => v
                .iter()
                .any(|z| z == zone || (!is_zone(z) && rules::region_of(zone) == z)),
        }
    }
}

impl std::fmt::Display for Zones {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Auto => f.write_str("auto"),
            Self::Listed(v) => f.write_str(&v.join(", ")),
        }
    }
}

/// Whether `v` names a zone (`us-central1-a`) rather than a region (`us-central1`).
pub(crate) fn is_zone(v: &str) -> bool {
    rules::zone("", v).is_ok()
}

impl From<Zones> for ZonesInput {
    fn from(z: Zones) -> Self {
        match z {
            Zones::Auto => Self::Word("auto".into()),
            Zones::Listed(v) => Self::List(v),
        }
    }
}

impl TryFrom<ZonesInput> for Zones {
    type Error = ValidationError;
    fn try_from(v: ZonesInput) -> Result<Self, ValidationError> {
        build_zones(Some(v))
    }
}

/// `zones` as written: `"auto"` or a list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
enum ZonesInput {
    Word(String),
    List(Vec<String>),
}

/// A validated GCE instance spec. Build one with [`Instance::builder`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Instance {
    /// Instance name.
    pub name: String,
    /// GCP project id.
    pub project: String,
    /// Zones and regions to try, in order of preference, or auto.
    pub zones: Zones,
    /// Machine type (of the first choice in [`Instance::gpus`]).
    pub machine_type: String,
    /// GPU type, `None` for a CPU-only VM (of the first choice).
    pub gpu_type: Option<String>,
    /// GPU count (of the first choice).
    pub gpu_count: u8,
    /// Every acceptable machine, in order of preference; the first is `machine_type`,
    /// `gpu_type` and `gpu_count`. A VM on any of them is this environment's VM.
    pub gpus: Vec<GpuChoice>,
    /// Project of the boot image family.
    pub image_project: String,
    /// Boot image family.
    pub image_family: String,
    /// Boot disk size in GB.
    pub disk_size_gb: u64,
    /// Boot disk type.
    pub disk_type: String,
    /// How GCE provisions it (standard, spot, flex-start; see [`super::provisioning`]).
    pub provisioning: super::Provisioning,
    /// Service account the VM runs as; `None`: the project's Compute Engine default account.
    pub service_account: Option<String>,
    /// Service-account scopes.
    pub scopes: Vec<String>,
    /// Whether `scopes` are kgenv's default ([`default_scopes`]) because the config left
    /// them out. An existing VM whose scopes cover these is then left as it is (see
    /// `steps::instance`): a VM made by an earlier kgenv with `cloud-platform` keeps working
    /// and is not restarted just because the default narrowed.
    #[serde(default)]
    pub scopes_defaulted: bool,
    /// Network tags (kgenv's firewall rules target these).
    pub tags: Vec<String>,
    /// Extra labels (kgenv adds its ownership labels).
    pub labels: BTreeMap<String, String>,
    /// The persistent disk that holds the user's work (`None`: turned off).
    pub data_disk: Option<DataDisk>,
}

/// Builder for [`Instance`]; every field has the guide's default but name, project and zones.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[must_use]
pub struct InstanceBuilder {
    name: Option<String>,
    project: Option<String>,
    zones: Option<ZonesInput>,
    machine_type: Option<String>,
    gpu_type: Option<String>,
    gpu_count: Option<u32>,
    gpu: Option<Vec<GpuChoiceInput>>,
    image_project: Option<String>,
    image_family: Option<String>,
    disk_size_gb: Option<u64>,
    disk_type: Option<String>,
    spot: Option<bool>,
    provisioning: Option<String>,
    max_run_duration: Option<String>,
    service_account: Option<String>,
    scopes: Option<Vec<String>>,
    tags: Option<Vec<String>>,
    labels: Option<BTreeMap<String, String>>,
    data_disk: Option<DataDiskBuilder>,
    /// Whether the environment mounts a bucket (chooses the default storage scope); set by
    /// the environment builder, read-write when the instance is built on its own.
    #[serde(skip)]
    bucket_mounted: Option<bool>,
}

impl Instance {
    /// A builder with the guide's defaults.
    pub fn builder() -> InstanceBuilder {
        InstanceBuilder::default()
    }
}

impl InstanceBuilder {
    /// Instance name (defaults to the environment's name inside an [`super::Env`]).
    pub fn name(mut self, v: impl Into<String>) -> Self {
        self.name = Some(v.into());
        self
    }
    /// GCP project id.
    pub fn project(mut self, v: impl Into<String>) -> Self {
        self.project = Some(v.into());
        self
    }
    /// Adds a zone to try, after those already given.
    pub fn zone(mut self, v: impl Into<String>) -> Self {
        match &mut self.zones {
            Some(ZonesInput::List(l)) => l.push(v.into()),
            _ => self.zones = Some(ZonesInput::List(vec![v.into()])),
        }
        self
    }
    /// Adds a region to try (each of its zones that offer the machine and GPU types, the
    /// cheapest first), after those already given.
    pub fn region(self, v: impl Into<String>) -> Self {
        self.zone(v)
    }
    /// Every zone that offers the machine and GPU types (`zones = "auto"`).
    pub fn zones_auto(mut self) -> Self {
        self.zones = Some(ZonesInput::Word("auto".into()));
        self
    }
    /// Adds a GPU choice after those already given: `gpu_type` on `machine_type`, with the
    /// count the machine type comes with (1 on N1). Tried in the order given.
    pub fn gpu_choice(
        mut self,
        gpu_type: impl Into<String>,
        machine_type: impl Into<String>,
    ) -> Self {
        self.gpu.get_or_insert_with(Vec::new).push(GpuChoiceInput {
            gpu_type: gpu_type.into(),
            machine_type: machine_type.into(),
            count: None,
        });
        self
    }
    /// Adds a GPU choice with an explicit count (N1: 1, 2, 4 or 8).
    pub fn gpu_choice_count(
        mut self,
        gpu_type: impl Into<String>,
        machine_type: impl Into<String>,
        count: u32,
    ) -> Self {
        self.gpu.get_or_insert_with(Vec::new).push(GpuChoiceInput {
            gpu_type: gpu_type.into(),
            machine_type: machine_type.into(),
            count: Some(count),
        });
        self
    }
    /// Machine type, e.g. `n1-standard-16`.
    pub fn machine_type(mut self, v: impl Into<String>) -> Self {
        self.machine_type = Some(v.into());
        self
    }
    /// GPU type and count, e.g. `("nvidia-tesla-t4", 1)`.
    pub fn gpu(mut self, gpu_type: impl Into<String>, count: u32) -> Self {
        self.gpu_type = Some(gpu_type.into());
        self.gpu_count = Some(count);
        self
    }
    /// No GPU (a CPU-only VM).
    pub fn no_gpu(mut self) -> Self {
        self.gpu_type = Some(String::new());
        self
    }
    /// Boot image project and family.
    pub fn image(mut self, project: impl Into<String>, family: impl Into<String>) -> Self {
        self.image_project = Some(project.into());
        self.image_family = Some(family.into());
        self
    }
    /// Boot disk size in GB.
    pub fn disk_size_gb(mut self, v: u64) -> Self {
        self.disk_size_gb = Some(v);
        self
    }
    /// Boot disk type (`pd-balanced`, `pd-ssd`, ...).
    pub fn disk_type(mut self, v: impl Into<String>) -> Self {
        self.disk_type = Some(v.into());
        self
    }
    /// Spot provisioning (the older key; same as `provisioning("spot")`).
    pub fn spot(mut self, v: bool) -> Self {
        self.spot = Some(v);
        self
    }
    /// `standard`, `spot` or `flex-start` (which needs [`Self::max_run_duration`]).
    pub fn provisioning(mut self, v: impl Into<String>) -> Self {
        self.provisioning = Some(v.into());
        self
    }
    /// How long a flex-start VM may run before GCE stops it (`"8h"`; 10m to 7d).
    pub fn max_run_duration(mut self, v: impl Into<String>) -> Self {
        self.max_run_duration = Some(v.into());
        self
    }
    /// The service account the VM runs as (`name@project.iam.gserviceaccount.com`); by
    /// default the project's Compute Engine default service account.
    pub fn service_account(mut self, email: impl Into<String>) -> Self {
        self.service_account = Some(email.into());
        self
    }
    /// Adds a service-account scope (a URL, or a short name like `devstorage.read_write`).
    /// Giving any replaces kgenv's least-privilege default ([`default_scopes`]).
    pub fn scope(mut self, v: impl Into<String>) -> Self {
        self.scopes.get_or_insert_with(Vec::new).push(v.into());
        self
    }
    /// Adds a network tag.
    pub fn tag(mut self, v: impl Into<String>) -> Self {
        self.tags.get_or_insert_with(Vec::new).push(v.into());
        self
    }
    /// Adds a label.
    pub fn label(mut self, k: impl Into<String>, v: impl Into<String>) -> Self {
        self.labels
            .get_or_insert_with(BTreeMap::new)
            .insert(k.into(), v.into());
        self
    }

    /// The data disk (on by default with [`DataDisk::default`]'s size and type).
    pub fn data_disk(mut self, v: DataDiskBuilder) -> Self {
        self.data_disk = Some(v);
        self
    }
    /// No data disk: the work lives on the boot disk, which `down` deletes.
    pub fn no_data_disk(mut self) -> Self {
        self.data_disk = Some(DataDisk::builder().enabled(false));
        self
    }

    /// Fills the name when it was not given (used by the environment builder).
    pub(crate) fn default_name(mut self, name: &str) -> Self {
        self.name.get_or_insert_with(|| name.to_string());
        self
    }
    /// Fills project and zone from the environment when missing.
    pub(crate) fn default_location(
        mut self,
        project: Option<String>,
        zone: Option<String>,
    ) -> Self {
        if self.project.is_none() {
            self.project = project;
        }
        let empty = match &self.zones {
            None => true,
            Some(ZonesInput::List(l)) => l.is_empty(),
            Some(ZonesInput::Word(_)) => false,
        };
        if empty {
            self.zones = zone.map(|z| ZonesInput::List(vec![z]));
        }
        self
    }
    /// Tells the builder whether the environment mounts a bucket: the default storage scope
    /// is then read-write, else read-only.
    pub(crate) fn bucket_mounted(mut self, v: bool) -> Self {
        self.bucket_mounted = Some(v);
        self
    }
    pub(crate) fn default_tag(mut self, tag: &str) -> Self {
        self.tags.get_or_insert_with(|| vec![tag.to_string()]);
        self
    }

    /// Validates every field and returns the spec.
    pub fn build(self) -> Result<Instance, ValidationError> {
        let name = self
            .name
            .ok_or_else(|| ValidationError::new("name", "is required"))?;
        rules::gce_name("name", &name)?;
        let project = self.project.ok_or_else(|| {
            ValidationError::new(
                "project",
                "is required: set it in kgenv.toml or export CLOUDSDK_CORE_PROJECT",
            )
        })?;
        rules::project_id("project", &project)?;
        let zones = build_zones(self.zones)?;
        let listed = self.gpu.is_some();
        let gpus = build_gpus(self.gpu, self.machine_type, self.gpu_type, self.gpu_count)?;
        let first = gpus[0].clone();
        let image_project = self
            .image_project
            .unwrap_or_else(|| DEFAULT_IMAGE_PROJECT.into());
        rules::project_id("image_project", &image_project)?;
        let image_family = self
            .image_family
            .unwrap_or_else(|| DEFAULT_IMAGE_FAMILY.into());
        rules::gce_name("image_family", &image_family)?;
        let disk_size_gb = self.disk_size_gb.unwrap_or(DEFAULT_DISK_GB);
        let min = image_min_disk_gb(&image_project);
        if disk_size_gb < min {
            return Err(ValidationError::new("disk_size_gb", format!("{disk_size_gb} GB is below the {min} GB the `{image_project}` images need; the Kaggle GPU image alone is ~60 GB, so 200 is a good size")));
        }
        if disk_size_gb > 65_536 {
            return Err(ValidationError::new(
                "disk_size_gb",
                format!("{disk_size_gb} GB is above GCE's 65536 GB limit for a boot disk"),
            ));
        }
        let disk_type = self.disk_type.unwrap_or_else(|| "pd-balanced".into());
        if !DISK_TYPES.contains(&disk_type.as_str()) {
            return Err(ValidationError::new(
                "disk_type",
                format!("`{disk_type}` is not one of {}", DISK_TYPES.join(", ")),
            ));
        }
        let scopes_defaulted = self.scopes.is_none();
        let scopes: Vec<String> = match self.scopes {
            Some(given) => given.into_iter().map(|s| expand_scope(&s)).collect(),
            None => default_scopes(self.bucket_mounted.unwrap_or(true)),
        };
        if scopes.is_empty() {
            return Err(ValidationError::new("scopes", "is empty: the VM could not pull its image or log; leave `scopes` out for kgenv's least-privilege default, or list the scopes it needs"));
        }
        for s in &scopes {
            let short = s.strip_prefix(SCOPE_PREFIX).unwrap_or_default();
            if short.is_empty()
                || !short
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "._-".contains(c))
            {
                return Err(ValidationError::new("scopes", format!("`{s}` is not a scope URL or short name like `cloud-platform` or `devstorage.read_write`")));
            }
        }
        if let Some(email) = &self.service_account {
            check_service_account(email)?;
        }
        let tags = self.tags.unwrap_or_default();
        for t in &tags {
            rules::gce_name("tags", t)?;
        }
        let labels = self.labels.unwrap_or_default();
        for (k, v) in &labels {
            rules::label("labels", k, v)?;
        }
        // Flex-start restricts the machine type: each GPU choice is checked under its own
        // field (`gpu[1].machine_type` in the list form).
        let provisioning = super::provisioning::resolve(
            self.spot,
            self.provisioning.as_deref(),
            self.max_run_duration.as_deref(),
            &first.machine_type,
        )
        .map_err(|e| match (listed, e.field.as_str()) {
            (true, "machine_type") => ValidationError::new("gpu[0].machine_type", e.rule),
            _ => e,
        })?;
        for (i, c) in gpus.iter().enumerate().skip(1) {
            super::provisioning::check_machine_type(
                &provisioning,
                &format!("gpu[{i}].machine_type"),
                &c.machine_type,
            )?;
        }
        let data_disk = self.data_disk.unwrap_or_default().build()?;
        if data_disk.is_some() && name.len() > 58 {
            return Err(ValidationError::new(
                "name",
                format!("`{name}` is too long for its data disk `{name}-data` (GCE names take 63 characters): use at most 58"),
            ));
        }
        Ok(Instance {
            name,
            project,
            zones,
            machine_type: first.machine_type,
            gpu_type: first.gpu_type,
            gpu_count: first.count,
            gpus,
            image_project,
            image_family,
            disk_size_gb,
            disk_type,
            provisioning,
            service_account: self.service_account,
            scopes,
            scopes_defaulted,
            tags,
            labels,
            data_disk,
        })
    }
}

/// `zones` checked: `"auto"`, or a non-empty list of zones and regions without repeats.
fn build_zones(given: Option<ZonesInput>) -> Result<Zones, ValidationError> {
    let list = match given {
        Some(ZonesInput::Word(w)) if w == "auto" => return Ok(Zones::Auto),
        Some(ZonesInput::Word(w)) => {
            return Err(ValidationError::new(
                "zones",
                format!("`{w}` is neither \"auto\" nor a list: write zones = \"auto\", or a list of zones and regions like [\"us-central1-a\", \"europe-west4\"]"),
            ))
        }
        Some(ZonesInput::List(l)) => l,
        None => Vec::new(),
    };
    if list.is_empty() {
        return Err(ValidationError::new(
            "zones",
            "give at least one zone, e.g. [\"us-central1-a\"], a region, or \"auto\"; or export CLOUDSDK_COMPUTE_ZONE",
        ));
    }
    for (i, z) in list.iter().enumerate() {
        let region_like = !z.is_empty()
            && z.split('-').count() == 2
            && z.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
            && z.ends_with(|c: char| c.is_ascii_digit());
        if !region_like {
            rules::zone("zones", z).map_err(|_| {
                ValidationError::new(
                    "zones",
                    format!("`{z}` is neither a zone like `us-central1-a` nor a region like `us-central1` (see `gcloud compute zones list`)"),
                )
            })?;
        }
        if list[..i].contains(z) {
            return Err(ValidationError::new(
                "zones",
                format!("`{z}` is listed twice"),
            ));
        }
    }
    Ok(Zones::Listed(list))
}

/// The GPU choices: the list form (`gpu = [...]`), or the single form (`machine_type`,
/// `gpu_type`, `gpu_count`) as a one-entry list; both at once is an error.
fn build_gpus(
    list: Option<Vec<GpuChoiceInput>>,
    machine_type: Option<String>,
    gpu_type: Option<String>,
    gpu_count: Option<u32>,
) -> Result<Vec<GpuChoice>, ValidationError> {
    let Some(list) = list else {
        let machine_type = machine_type.unwrap_or_else(|| DEFAULT_MACHINE_TYPE.into());
        let gpu_type = match gpu_type {
            None => Some(DEFAULT_GPU_TYPE.to_string()),
            Some(t) if t.is_empty() || t == "none" => None,
            Some(t) => Some(t),
        };
        let c = gpu::choice(
            &gpu::Fields::single(),
            gpu_type.as_deref(),
            &machine_type,
            gpu_count,
        )?;
        return Ok(vec![c]);
    };
    let single = [
        ("machine_type", machine_type.is_some()),
        ("gpu_type", gpu_type.is_some()),
        ("gpu_count", gpu_count.is_some()),
    ];
    if let Some((field, _)) = single.iter().find(|(_, given)| *given) {
        return Err(ValidationError::new(
            *field,
            "cannot be given beside `gpu = [...]`: put the machine type, GPU type and count in the list's entries (`{ type = \"nvidia-l4\", machine_type = \"g2-standard-8\" }`), or use the single form without `gpu`",
        ));
    }
    if list.is_empty() {
        return Err(ValidationError::new(
            "gpu",
            "is empty: list at least one `{ type = ..., machine_type = ... }`, or leave `gpu` out for the default T4 on n1-standard-8",
        ));
    }
    let mut out: Vec<GpuChoice> = Vec::with_capacity(list.len());
    for (i, e) in list.iter().enumerate() {
        let c = gpu::choice(
            &gpu::Fields::entry(i),
            Some(&e.gpu_type),
            &e.machine_type,
            e.count,
        )?;
        if out.contains(&c) {
            return Err(ValidationError::new(
                format!("gpu[{i}]"),
                format!("repeats an earlier entry ({})", c.describe()),
            ));
        }
        out.push(c);
    }
    Ok(out)
}

/// A service account email GCE can run a VM as: a user-managed account
/// (`name@project.iam.gserviceaccount.com`, name 6-30 characters) or a project's Compute
/// Engine default account (`PROJECT_NUMBER-compute@developer.gserviceaccount.com`).
fn check_service_account(email: &str) -> Result<(), ValidationError> {
    let user_managed = email
        .strip_suffix(".iam.gserviceaccount.com")
        .and_then(|rest| rest.split_once('@'))
        .is_some_and(|(name, project)| {
            let b = name.as_bytes();
            (6..=30).contains(&b.len())
                && b[0].is_ascii_lowercase()
                && b.iter()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
                && b.last() != Some(&b'-')
                && rules::project_id("service_account", project).is_ok()
        });
    if user_managed || crate::backends::compute::is_default_compute_account(email) {
        Ok(())
    } else {
        Err(ValidationError::new(
            "service_account",
            format!("`{email}` is not a service account email like `name@my-project.iam.gserviceaccount.com` or `123456789012-compute@developer.gserviceaccount.com`; leave it out for the project's default account"),
        ))
    }
}

/// `cloud-platform` → `https://www.googleapis.com/auth/cloud-platform`; URLs pass through.
fn expand_scope(s: &str) -> String {
    if s.starts_with("https://") {
        s.to_string()
    } else {
        format!("{SCOPE_PREFIX}{s}")
    }
}

impl Instance {
    /// Whether the scopes let gcsfuse write to a bucket.
    pub fn can_write_storage(&self) -> bool {
        scopes_cover(&self.scopes, &[STORAGE_READ_WRITE_SCOPE.to_string()])
    }

    /// Whether the VM's scopes include `cloud-platform` (every API its roles allow).
    pub fn has_cloud_platform_scope(&self) -> bool {
        self.scopes.iter().any(|s| s == CLOUD_PLATFORM_SCOPE)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok() -> InstanceBuilder {
        Instance::builder()
            .name("kg")
            .project("my-project")
            .zone("us-central1-a")
    }

    #[test]
    fn defaults_follow_the_guide() {
        let i = ok().build().expect("valid");
        assert_eq!(i.machine_type, "n1-standard-8");
        assert_eq!(i.gpu_type.as_deref(), Some("nvidia-tesla-t4"));
        assert_eq!(i.disk_size_gb, 200);
        assert_eq!(
            i.data_disk,
            Some(DataDisk::default()),
            "work lives on a kept disk"
        );
        assert_eq!(i.image_family, DEFAULT_IMAGE_FAMILY);
        assert!(i.can_write_storage());
    }

    #[test]
    fn each_bad_field_is_named() {
        let cases: Vec<(InstanceBuilder, &str)> = vec![
            (ok().name("Bad_Name"), "name"),
            (ok().project("x"), "project"),
            (
                Instance::builder().name("kg").project("my-project"),
                "zones",
            ),
            (ok().zone("nowhere"), "zones"),
            (ok().gpu("nvidia-tesla-t4", 3), "gpu_count"),
            (ok().gpu("tpu-v4", 1), "gpu_type"),
            (ok().disk_size_gb(20), "disk_size_gb"),
            (ok().disk_type("floppy"), "disk_type"),
            (ok().scope("not a scope"), "scopes"),
            (ok().tag("Tag!"), "tags"),
            (ok().label("Owner", "me"), "labels"),
            (ok().machine_type("N1"), "machine_type"),
            (
                ok().data_disk(DataDisk::builder().size_gb(1)),
                "data_disk.size_gb",
            ),
            (ok().service_account("me@gmail.com"), "service_account"),
            (
                ok().service_account("x@my-project.iam.gserviceaccount.com"),
                "service_account",
            ),
            (
                ok().service_account("abc-compute@developer.gserviceaccount.com"),
                "service_account",
            ),
        ];
        for (b, field) in cases {
            let e = b.build().expect_err(field);
            assert_eq!(e.field, field, "{e}");
        }
    }

    #[test]
    fn service_accounts_of_both_kinds_are_accepted() {
        assert_eq!(ok().build().expect("valid").service_account, None);
        for email in [
            "kgenv-runner@my-project.iam.gserviceaccount.com",
            "123456789012-compute@developer.gserviceaccount.com",
        ] {
            let i = ok().service_account(email).build().expect(email);
            assert_eq!(i.service_account.as_deref(), Some(email));
        }
    }

    #[test]
    fn default_scopes_are_least_privilege_and_explicit_ones_are_kept() {
        let i = ok().build().expect("valid");
        assert_eq!(
            i.scopes,
            [
                STORAGE_READ_WRITE_SCOPE,
                LOGGING_WRITE_SCOPE,
                MONITORING_WRITE_SCOPE
            ]
        );
        assert!(i.scopes_defaulted && !i.has_cloud_platform_scope());
        let no_bucket = ok().bucket_mounted(false).build().expect("valid");
        assert_eq!(no_bucket.scopes[0], STORAGE_READ_ONLY_SCOPE);
        assert!(!no_bucket.can_write_storage());
        let wide = ok().scope("cloud-platform").build().expect("valid");
        assert_eq!(wide.scopes, [CLOUD_PLATFORM_SCOPE]);
        assert!(!wide.scopes_defaulted && wide.has_cloud_platform_scope());
        assert!(wide.can_write_storage());
        let e = InstanceBuilder {
            scopes: Some(Vec::new()),
            ..ok()
        }
        .build()
        .expect_err("empty scopes");
        assert_eq!(e.field, "scopes", "{e}");
    }

    #[test]
    fn what_scopes_cover() {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        let want = default_scopes(true);
        assert!(scopes_cover(&s(&[CLOUD_PLATFORM_SCOPE]), &want));
        assert!(scopes_cover(&want, &want));
        assert!(
            scopes_cover(&want, &default_scopes(false)),
            "read_write implies read_only"
        );
        assert!(
            !scopes_cover(&default_scopes(false), &want),
            "read_only is not read_write"
        );
        assert!(!scopes_cover(
            &s(&[STORAGE_READ_WRITE_SCOPE, LOGGING_WRITE_SCOPE]),
            &want
        ));
        assert!(scopes_cover(
            &s(&[
                "https://www.googleapis.com/auth/devstorage.full_control",
                LOGGING_WRITE_SCOPE,
                MONITORING_WRITE_SCOPE
            ]),
            &want
        ));
    }

    #[test]
    fn zones_take_auto_regions_and_zones() {
        let auto = Instance::builder()
            .name("kg")
            .project("my-project")
            .zones_auto()
            .build()
            .expect("auto");
        assert_eq!(auto.zones, Zones::Auto);
        assert!(auto.zones.allows("asia-east1-c"));
        let mixed = ok().region("europe-west4").build().expect("mixed");
        assert_eq!(
            mixed.zones,
            Zones::Listed(vec!["us-central1-a".into(), "europe-west4".into()])
        );
        assert_eq!(mixed.zones.only_zones(), None);
        assert_eq!(mixed.zones.first_region(), Some("us-central1"));
        assert!(mixed.zones.allows("europe-west4-b") && !mixed.zones.allows("us-central1-b"));
        assert_eq!(
            ok().zone("us-central1-a").build().expect_err("twice").field,
            "zones"
        );
        let e = InstanceBuilder {
            zones: Some(ZonesInput::Word("everywhere".into())),
            ..ok()
        }
        .build()
        .expect_err("not auto");
        assert_eq!(e.field, "zones", "{e}");
        // The spec round-trips through serde with zones as written.
        let json = serde_json::to_value(&mixed).expect("json");
        assert_eq!(
            json["zones"],
            serde_json::json!(["us-central1-a", "europe-west4"])
        );
        let back: Instance = serde_json::from_value(json).expect("back");
        assert_eq!(back, mixed);
        assert_eq!(serde_json::to_value(&auto).expect("json")["zones"], "auto");
    }

    #[test]
    fn gpu_choices_keep_their_order_and_the_first_is_the_single_form() {
        let i = ok()
            .gpu_choice("nvidia-l4", "g2-standard-24")
            .gpu_choice_count("nvidia-tesla-t4", "n1-standard-8", 2)
            .build()
            .expect("valid");
        assert_eq!(
            (i.machine_type.as_str(), i.gpu_type.as_deref(), i.gpu_count),
            ("g2-standard-24", Some("nvidia-l4"), 2)
        );
        assert_eq!(i.gpus.len(), 2);
        assert_eq!(i.gpus[1].describe(), "2x nvidia-tesla-t4 on n1-standard-8");
        let single = ok().build().expect("valid");
        assert_eq!(single.gpus.len(), 1);
        assert_eq!(
            single.gpus[0].describe(),
            "1x nvidia-tesla-t4 on n1-standard-8"
        );
    }

    #[test]
    fn each_bad_gpu_choice_is_named() {
        let cases: Vec<(InstanceBuilder, &str)> = vec![
            (
                ok().gpu_choice("nvidia-l4", "g2-standard-8")
                    .machine_type("n1-standard-8"),
                "machine_type",
            ),
            (
                ok().gpu_choice("nvidia-l4", "g2-standard-8")
                    .gpu("nvidia-tesla-t4", 1),
                "gpu_type",
            ),
            (
                ok().gpu_choice("nvidia-l4", "g2-standard-8")
                    .gpu_choice("nvidia-l4", "n1-standard-8"),
                "gpu[1].machine_type",
            ),
            (
                ok().gpu_choice("nvidia-l4", "g2-standard-8")
                    .gpu_choice_count("nvidia-tesla-t4", "n1-standard-8", 3),
                "gpu[1].count",
            ),
            (
                ok().gpu_choice("nvidia-l4", "g2-standard-8")
                    .gpu_choice("nvidia-l4", "g2-standard-8"),
                "gpu[1]",
            ),
            (ok().gpu_choice("tpu-v4", "n1-standard-8"), "gpu[0].type"),
            (ok().gpu("nvidia-l4", 1), "machine_type"),
            (
                ok().gpu("nvidia-a100-80gb", 2)
                    .machine_type("a2-ultragpu-1g"),
                "gpu_count",
            ),
            (
                InstanceBuilder {
                    gpu: Some(Vec::new()),
                    ..ok()
                },
                "gpu",
            ),
        ];
        for (b, field) in cases {
            let e = b.build().expect_err(field);
            assert_eq!(e.field, field, "{e}");
        }
    }

    #[test]
    fn cpu_only_needs_no_gpu_count() {
        let i = ok().no_gpu().build().expect("valid");
        assert_eq!(i.gpu_type, None);
    }
}
