//! Guide step 1: the GPU VM.
//!
//! Before anything is created, the preflight ([`PreflightStep`], which the firewall and
//! instance steps depend on) resolves the image family to a concrete image, checks the disk
//! against the image's minimum, and expands the GPU choices and zones into candidates
//! ([`candidates`]): listed zones are asked about one by one, regions and `zones = "auto"`
//! through GCE's aggregated accelerator and machine type lists — so bad input fails before
//! any mutating call. Candidates are then tried in order: any failed insert deletes
//! whatever half-made instance it left, a stockout moves to the next candidate, a region
//! quota skips that region's candidates (for a GPU quota, those of that GPU), a global
//! quota (`GPUS_ALL_REGIONS`) stops at once; the final error lists every candidate and why
//! it failed. With a capacity wait ([`capacity`]), a round in which candidates were out of
//! capacity is followed by another after a pause. The zone used (recorded before the insert
//! too, so a run killed between the insert and the record still finds its VM), the machine
//! and GPU it got, the external IP and the host keys (from guest attributes) are recorded
//! for the SSH layer. A VM on any of the GPU choices is this environment's VM as it is:
//! only a VM on none of them is changed (to the first). The step's `stop` backs `kgenv stop`; `kgenv start` is `up --until host`, whose
//! `apply` starts a stopped instance.
//!
//! Ownership: the instance carries the environment's owner id as a label. `up` adopts only
//! an instance with that id (or the GCE id the state recorded); `down` deletes the instance
//! at the link the state recorded, after checking it is still the one kgenv made — a name
//! edited in the config never redirects a delete.
//!
//! GCE's lifecycle: an instance found between two states (PROVISIONING or STAGING: a run
//! killed during its insert; STOPPING: a stop or a spot preemption under way) is waited on,
//! and a call GCE refuses meanwhile (400 `resourceNotReady`) waits for it to settle and is
//! sent again. If its insert failed and GCE removed it, `up` creates it again. GCE shows a
//! failed insert's instance for a while and then removes it itself, so the half-made VM
//! kgenv deletes may already be gone: that counts as deleted. A start in a zone out of
//! capacity leaves the VM stopped with its disks: the stockout error says so and what to do.

pub mod candidates;
mod capacity;
mod preemption;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use async_trait::async_trait;

use crate::backends::compute::{
    instance_path, is_default_compute_account, DiskRef, ImageInfo, InstanceInfo, InstanceRef,
    InstanceRequest, InstanceStatus, Provisioning,
};
use crate::error::{BackendError, QuotaScope, Result, ValidationError};
use crate::plan::{CheckOutcome, Destroyed, Step, StepCtx};
use crate::spec::{
    default_scopes, rules::region_of, scopes_cover, Env, GpuChoice, Instance, Zones, SCOPE_PREFIX,
};
use crate::state::{Owner, State, OWNER_ID_LABEL};
use candidates::Candidate;

/// Polling of an instance that is between two states: first and largest delay.
const SETTLE_FIRST_DELAY: Duration = Duration::from_millis(200);
const SETTLE_MAX_DELAY: Duration = Duration::from_secs(5);

pub use preemption::{preempted, recorded_preemption, Preempted};

/// The instance the state recorded (`projects/p/zones/z/instances/n`), whatever the config
/// now names it.
pub fn recorded_instance(state: &State) -> Option<InstanceRef> {
    let link = state.step("instance")?.created.get("instance")?;
    InstanceRef::from_link(link)
}

/// The VM kgenv made, as the state recorded it: its zone and the GPU choice it got.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedVm {
    /// The zone it is in.
    pub zone: String,
    /// Its machine type.
    pub machine_type: String,
    /// Its GPU type and count (`None`: no GPU).
    pub gpu: Option<(String, u8)>,
}

/// The recorded VM, with `spec`'s first choice where a state from before GPU choices has
/// no machine type or GPU recorded; `None` when no VM was recorded.
pub fn recorded_vm(state: &State, spec: &Instance) -> Option<RecordedVm> {
    let zone = state.fact("instance", "zone")?.to_string();
    let machine_type = state
        .fact("instance", "machine_type")
        .unwrap_or(&spec.machine_type)
        .to_string();
    let gpu = match state.fact("instance", "gpu") {
        Some(g) => parse_gpu_fact(g),
        None => spec.gpu_type.clone().map(|t| (t, spec.gpu_count)),
    };
    Some(RecordedVm {
        zone,
        machine_type,
        gpu,
    })
}

/// The `gpu` fact: `1x nvidia-tesla-t4`, or `none`.
fn gpu_fact(gpu: Option<&(String, u8)>) -> String {
    gpu.map_or("none".to_string(), |(t, n)| format!("{n}x {t}"))
}

fn parse_gpu_fact(fact: &str) -> Option<(String, u8)> {
    let (n, t) = fact.split_once("x ")?;
    Some((t.to_string(), n.parse().ok()?))
}

/// Whether the instance is between two states. GCE refuses stop, start, machine changes
/// and disk attachments meanwhile (400 `resourceNotReady`), so kgenv waits it out.
fn is_settling(status: &InstanceStatus) -> bool {
    matches!(
        status,
        InstanceStatus::Provisioning
            | InstanceStatus::Staging
            | InstanceStatus::Stopping
            | InstanceStatus::Suspending
            | InstanceStatus::Repairing
    )
}

/// Host-key polling: first delay, largest delay (the bound is the run's host-ready time).
const HOSTKEY_FIRST_DELAY: Duration = Duration::from_millis(250);
const HOSTKEY_MAX_DELAY: Duration = Duration::from_secs(5);

/// The state fact naming the zone an insert was sent to, written before the insert and
/// replaced by `zone` once the VM is recorded.
const INSERTING_IN: &str = "inserting_in";

/// Id of the preflight step.
pub const PREFLIGHT_ID: &str = "preflight";

/// What the preflight found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Preflight {
    /// The image the family resolves to now.
    pub image: ImageInfo,
    /// The zones of the candidates, in the order first tried.
    pub zones: Vec<String>,
    /// Every (GPU choice, zone) offered, in the order `up` tries them.
    pub candidates: Vec<Candidate>,
    /// What was left out and why (`us-central1-a (type not offered)`), for the final error.
    pub not_offered: Vec<String>,
}

/// The preflight's account of one GPU choice.
struct ChoiceZones {
    /// (zone, index of the `zones` entry it came from).
    offered: Vec<(String, usize)>,
    /// Listed zones lacking the machine type.
    no_machine: Vec<String>,
    /// Listed zones lacking the GPU.
    no_gpu: Vec<String>,
    /// Whether GCE offers the machine type anywhere we looked (regions and auto).
    machine_anywhere: bool,
    /// Whether GCE offers the GPU anywhere we looked (regions and auto).
    gpu_anywhere: bool,
}

/// Where `choice` is offered among listed zones: machine type and GPU asked about per
/// zone (GETs, in parallel).
async fn listed_zones(
    ctx: &StepCtx,
    project: &str,
    zones: &[String],
    choice: &GpuChoice,
) -> Result<ChoiceZones> {
    let compute = &ctx.backends.compute;
    let per_zone = zones.iter().map(|z| async move {
        let gpu = async {
            match &choice.gpu_type {
                Some(g) => compute.check_accelerator(project, z, g).await,
                None => Ok(()),
            }
        };
        let (mt, gpu) = tokio::join!(
            compute.check_machine_type(project, z, &choice.machine_type),
            gpu
        );
        (z, mt, gpu)
    });
    let mut out = ChoiceZones {
        offered: Vec::new(),
        no_machine: Vec::new(),
        no_gpu: Vec::new(),
        machine_anywhere: false,
        gpu_anywhere: false,
    };
    for (i, (z, mt, gpu)) in futures::future::join_all(per_zone)
        .await
        .into_iter()
        .enumerate()
    {
        let mut ok = true;
        for (res, list) in [(mt, &mut out.no_machine), (gpu, &mut out.no_gpu)] {
            match res {
                Ok(()) => {}
                Err(BackendError::NotFound { .. }) => {
                    list.push(z.clone());
                    ok = false;
                }
                Err(e) => return Err(e.into()),
            }
        }
        if ok {
            out.offered.push((z.clone(), i));
        }
    }
    out.machine_anywhere = out.no_machine.len() < zones.len();
    out.gpu_anywhere = out.no_gpu.len() < zones.len();
    Ok(out)
}

/// Where `choice` is offered for `zones = "auto"` or a list with regions: GCE's
/// aggregated lists of the GPU and machine type, kept to the listed regions and zones.
async fn expanded_zones(
    ctx: &StepCtx,
    project: &str,
    zones: &Zones,
    choice: &GpuChoice,
) -> Result<ChoiceZones> {
    let compute = &ctx.backends.compute;
    let gpu = async {
        match &choice.gpu_type {
            Some(g) => compute.accelerator_zones(project, g).await.map(Some),
            None => Ok(None),
        }
    };
    let (machine, gpu) = tokio::join!(
        compute.machine_type_zones(project, &choice.machine_type),
        gpu
    );
    let (machine, gpu) = (machine?, gpu?);
    let offered_in = |z: &str| {
        machine.iter().any(|m| m == z) && gpu.as_ref().is_none_or(|g| g.iter().any(|x| x == z))
    };
    let mut out = ChoiceZones {
        offered: Vec::new(),
        no_machine: Vec::new(),
        no_gpu: Vec::new(),
        machine_anywhere: !machine.is_empty(),
        gpu_anywhere: gpu.as_ref().is_none_or(|g| !g.is_empty()),
    };
    match zones {
        Zones::Auto => {
            out.offered = machine
                .iter()
                .filter(|z| offered_in(z))
                .map(|z| (z.clone(), 0))
                .collect();
        }
        Zones::Listed(entries) => {
            for (i, e) in entries.iter().enumerate() {
                if crate::spec::rules::zone("", e).is_ok() {
                    if offered_in(e) {
                        out.offered.push((e.clone(), i));
                    } else if !machine.contains(e) {
                        out.no_machine.push(e.clone());
                    } else {
                        out.no_gpu.push(e.clone());
                    }
                    continue;
                }
                let in_region: Vec<(String, usize)> = machine
                    .iter()
                    .filter(|z| region_of(z) == e && offered_in(z))
                    .filter(|z| !out.offered.iter().any(|(o, _)| o == *z))
                    .map(|z| (z.clone(), i))
                    .collect();
                if in_region.is_empty() {
                    out.no_gpu.push(format!("region {e}"));
                }
                out.offered.extend(in_region);
            }
        }
    }
    Ok(out)
}

/// Whether `i` is this environment's: it carries the owner id (or, for a state from before
/// owner ids, the environment's name), or it is the very VM the state recorded (same GCE
/// id).
fn owned(owner: &Owner, state: &State, i: &InstanceInfo) -> bool {
    owner.owns(&i.labels)
        || (!i.id.is_empty()
            && state.fact("instance", "id") == Some(i.id.as_str())
            && recorded_instance(state).as_ref() == Some(&i.at))
}

/// A change GCE makes only on a stopped instance.
#[derive(Debug, Clone, PartialEq, Eq)]
enum RestartChange {
    /// `instances.setMachineType`.
    MachineType(String),
    /// `instances.setMachineResources` (GPU type and count; `None` removes them).
    Gpus(Option<(String, u8)>),
    /// `instances.setServiceAccount` (`None`: the project's default account) with scopes.
    ServiceAccount(Option<String>, Vec<String>),
}

impl RestartChange {
    fn field(&self) -> &'static str {
        match self {
            Self::MachineType(_) => "machine_type",
            Self::Gpus(_) => "gpu_type/gpu_count",
            Self::ServiceAccount(..) => "service_account/scopes",
        }
    }
    fn method(&self) -> &'static str {
        match self {
            Self::MachineType(_) => "setMachineType",
            Self::Gpus(_) => "setMachineResources",
            Self::ServiceAccount(..) => "setServiceAccount",
        }
    }
    fn describe(&self, info: &InstanceInfo) -> String {
        let gpu = |g: &Option<(String, u8)>| {
            g.as_ref()
                .map_or("none".to_string(), |(t, n)| format!("{n}x {t}"))
        };
        match self {
            Self::MachineType(m) => format!(
                "machine_type: {} → {m} (stops and restarts the VM)",
                info.machine_type
            ),
            Self::Gpus(g) => format!(
                "gpu: {} → {} (stops and restarts the VM)",
                gpu(&info.gpu),
                gpu(g)
            ),
            Self::ServiceAccount(email, scopes) => format!(
                "service account: {} [{}] → {} [{}] (stops and restarts the VM)",
                info.service_account.as_deref().unwrap_or("default"),
                info.scopes.join(", "),
                email.as_deref().unwrap_or("default"),
                scopes.join(", ")
            ),
        }
    }
}

/// What a round of tries that placed nothing found.
#[derive(Debug, Default)]
struct RoundFailed {
    /// Each candidate tried and why it failed (`us-central1-a (stockout)`).
    tried: Vec<String>,
    /// How many were out of capacity (a capacity wait goes on only then).
    stockouts: usize,
    /// The last error, for the error's kind.
    last: Option<BackendError>,
}

/// The error for a same-named instance that is not this environment's.
fn not_ours(at: &InstanceRef) -> crate::Error {
    BackendError::AlreadyExists {
        resource: format!("{at} (it does not carry this environment's owner id: another person's or another state directory's VM, or one made outside kgenv); kgenv leaves it alone — pick another `instance.name`"),
    }
    .into()
}

/// Checks the instance spec against the project before anything is created: image family,
/// disk size against the image's minimum, machine and GPU types per zone (all GETs, in
/// parallel). Bad input is a [`ValidationError`] naming the field.
pub async fn preflight(ctx: &StepCtx, spec: &Instance) -> Result<Preflight> {
    let compute = &ctx.backends.compute;
    let per_choice = spec.gpus.iter().map(|choice| async move {
        match spec.zones.only_zones() {
            Some(zones) => listed_zones(ctx, &spec.project, zones, choice).await,
            None => expanded_zones(ctx, &spec.project, &spec.zones, choice).await,
        }
    });
    let (image, choices) = tokio::join!(
        compute.image_from_family(&spec.image_project, &spec.image_family),
        futures::future::join_all(per_choice)
    );
    let image = image.map_err(|e| match e {
        BackendError::NotFound { .. } => crate::Error::from(ValidationError::new(
            "instance.image_family",
            format!("image family `{}` does not exist in project `{}` (see `gcloud compute images list --project {} --filter=family:{}`)", spec.image_family, spec.image_project, spec.image_project, spec.image_family),
        )),
        e => e.into(),
    })?;
    if spec.disk_size_gb < image.disk_size_gb {
        return Err(ValidationError::new(
            "instance.disk_size_gb",
            format!("{} GB is below the {} GB that image {} needs; set disk_size_gb to at least {} (200 leaves room for the Kaggle image and data)", spec.disk_size_gb, image.disk_size_gb, image.name, image.disk_size_gb),
        )
        .into());
    }
    let choices = choices.into_iter().collect::<Result<Vec<_>>>()?;
    let several = spec.gpus.len() > 1;
    let mut found = Vec::new();
    let mut not_offered = Vec::new();
    for (i, (choice, z)) in spec.gpus.iter().zip(&choices).enumerate() {
        let gpu = choice.gpu_type.as_deref().unwrap_or("none");
        let what = if several {
            format!(" for {}", choice.describe())
        } else {
            String::new()
        };
        for zone in &z.no_machine {
            ctx.warn(format!(
                "zone {zone} does not offer machine type {}{what}; skipping it",
                choice.machine_type
            ));
            not_offered.push(format!("{zone}{what} (type not offered)"));
        }
        for zone in z.no_gpu.iter().filter(|x| !z.no_machine.contains(x)) {
            ctx.warn(format!("{zone} does not offer {gpu}{what}; skipping it"));
            not_offered.push(format!("{zone}{what} (type not offered)"));
        }
        found.extend(z.offered.iter().map(|(zone, entry)| Candidate {
            choice: i,
            gpu: choice.clone(),
            zone: zone.clone(),
            entry: *entry,
        }));
    }
    if found.is_empty() {
        return Err(nothing_offered(spec, &choices).into());
    }
    let candidates = order_by_price(ctx, spec, found).await;
    let mut zones: Vec<String> = Vec::new();
    for c in &candidates {
        if !zones.contains(&c.zone) {
            zones.push(c.zone.clone());
        }
    }
    Ok(Preflight {
        image,
        zones,
        candidates,
        not_offered,
    })
}

/// `found` in the order `up` tries them ([`candidates::order`]). Prices are looked up only
/// when they decide something: when a GPU choice has several zones from one `zones` entry
/// (`"auto"`, a region), which the user left unordered.
async fn order_by_price(ctx: &StepCtx, spec: &Instance, found: Vec<Candidate>) -> Vec<Candidate> {
    let unordered = found.iter().enumerate().any(|(i, a)| {
        found[..i]
            .iter()
            .any(|b| b.choice == a.choice && b.entry == a.entry)
    });
    let catalog = if unordered {
        super::prices::loaded(ctx).await.catalog
    } else {
        None
    };
    let Some(catalog) = catalog else {
        return candidates::order(found, |_| None);
    };
    let price = |c: &Candidate| {
        super::prices::vm_hourly_usd(
            &catalog,
            &c.gpu.machine_type,
            c.gpu.gpu_type.as_deref().map(|t| (t, c.gpu.count)),
            region_of(&c.zone),
            spec.provisioning,
        )
    };
    let ordered = candidates::order(found, price);
    let shown: Vec<String> = ordered
        .iter()
        .map(|c| match price(c) {
            Some(p) => format!("{} (${p:.4}/h)", c.zone),
            None => format!("{} (price unknown)", c.zone),
        })
        .collect();
    ctx.log(format!(
        "zones to try, the cheaper first where you left the order open: {}",
        shown.join(", ")
    ));
    ordered
}

/// The error when no GPU choice is offered in any zone the spec allows, naming the field
/// to change.
fn nothing_offered(spec: &Instance, choices: &[ChoiceZones]) -> ValidationError {
    let where_ = match &spec.zones {
        Zones::Auto => "any zone".to_string(),
        z => z.to_string(),
    };
    if let ([choice], [z]) = (spec.gpus.as_slice(), choices) {
        let gpu = choice.gpu_type.as_deref().unwrap_or("none");
        let listed = spec.zones.only_zones().map(<[String]>::len);
        let no_gpu = match listed {
            Some(n) => z.no_gpu.len() == n,
            None => !z.gpu_anywhere,
        };
        let no_machine = match listed {
            Some(n) => z.no_machine.len() == n,
            None => !z.machine_anywhere,
        };
        return if no_gpu {
            ValidationError::new("instance.gpu_type", format!("`{gpu}` is not offered in {where_} (see `gcloud compute accelerator-types list --filter=name={gpu}` for zones that have it)"))
        } else if no_machine {
            ValidationError::new("instance.machine_type", format!("`{}` is not offered in {where_} (see `gcloud compute machine-types list --filter=name={}`)", choice.machine_type, choice.machine_type))
        } else {
            ValidationError::new(
                "instance.zones",
                format!(
                    "no zone of {where_} offers both `{}` and `{gpu}`: {} lack the machine type, {} the GPU",
                    choice.machine_type,
                    z.no_machine.join(", "),
                    z.no_gpu.join(", ")
                ),
            )
        };
    }
    let each: Vec<String> = spec.gpus.iter().map(GpuChoice::describe).collect();
    ValidationError::new(
        "instance.gpu",
        format!("none of the GPU choices ({}) is offered in {where_}: add regions or zones (or use zones = \"auto\"), or other choices (see `gcloud compute accelerator-types list`)", each.join("; ")),
    )
}

/// The preflight's findings, shared by the steps of a run.
#[derive(Default)]
struct PreflightOnce(tokio::sync::OnceCell<Preflight>);

/// The preflight of this run (computed once, shared by the steps of the run).
async fn preflight_once(ctx: &StepCtx, spec: &Instance) -> Result<Preflight> {
    let once = ctx.shared::<PreflightOnce>();
    Ok(once
        .0
        .get_or_try_init(|| preflight(ctx, spec))
        .await?
        .clone())
}

/// Runs the preflight before the firewall and instance steps change anything.
pub struct PreflightStep {
    spec: Instance,
}

impl PreflightStep {
    /// The preflight for `spec`.
    pub fn new(spec: Instance) -> Self {
        Self { spec }
    }
}

#[async_trait]
impl Step for PreflightStep {
    fn id(&self) -> &str {
        PREFLIGHT_ID
    }
    fn deps(&self) -> &[String] {
        &[]
    }
    fn summary(&self) -> String {
        let gpus: Vec<String> = self.spec.gpus.iter().map(GpuChoice::describe).collect();
        format!(
            "check image family {}/{}, disk size, {} in {} before creating anything",
            self.spec.image_project,
            self.spec.image_family,
            gpus.join(" or "),
            self.spec.zones
        )
    }
    fn planned_actions(&self) -> Vec<String> {
        let p = &self.spec.project;
        let mut a = vec![format!(
            "GET compute/v1/projects/{}/global/images/family/{}",
            self.spec.image_project, self.spec.image_family
        )];
        for choice in &self.spec.gpus {
            let Some(zones) = self.spec.zones.only_zones() else {
                a.push(format!(
                    "GET compute/v1/projects/{p}/aggregated/machineTypes?filter=name=\"{}\"",
                    choice.machine_type
                ));
                if let Some(g) = &choice.gpu_type {
                    a.push(format!(
                        "GET compute/v1/projects/{p}/aggregated/acceleratorTypes?filter=name=\"{g}\""
                    ));
                }
                continue;
            };
            for z in zones {
                a.push(format!(
                    "GET compute/v1/projects/{p}/zones/{z}/machineTypes/{}",
                    choice.machine_type
                ));
                if let Some(g) = &choice.gpu_type {
                    a.push(format!(
                        "GET compute/v1/projects/{p}/zones/{z}/acceleratorTypes/{g}"
                    ));
                }
            }
        }
        a
    }
    async fn check(&self, ctx: &StepCtx) -> Result<CheckOutcome> {
        // Once kgenv has made the instance, there is nothing left to vet (and a retired
        // image family must not block `up` on an instance that already runs).
        if ctx
            .state
            .snapshot()
            .await
            .fact("instance", "zone")
            .is_some()
        {
            return Ok(CheckOutcome::satisfied());
        }
        let p = preflight_once(ctx, &self.spec).await?;
        let several = self.spec.gpus.len() > 1;
        let order: Vec<String> = p.candidates.iter().map(|c| c.label(several)).collect();
        ctx.log(format!(
            "image family {} → {}; {} to try: {}",
            self.spec.image_family,
            p.image.name,
            if several { "candidates" } else { "zones" },
            order.join(", ")
        ));
        Ok(CheckOutcome::satisfied())
    }
    async fn apply(&self, _ctx: &StepCtx) -> Result<()> {
        Ok(())
    }
    async fn destroy(&self, _ctx: &StepCtx) -> Result<Destroyed> {
        Ok(Destroyed::Nothing)
    }
}

/// Creates, starts or deletes the environment's instance.
pub struct InstanceStep {
    env: String,
    spec: Instance,
    deps: Vec<String>,
}

impl InstanceStep {
    /// The step for `spec`, after the preflight.
    pub fn new(env: &Env, spec: Instance) -> Self {
        Self {
            env: env.name.clone(),
            spec,
            deps: vec![PREFLIGHT_ID.to_string()],
        }
    }

    fn at(&self, zone: &str) -> InstanceRef {
        InstanceRef {
            project: self.spec.project.clone(),
            zone: zone.into(),
            name: self.spec.name.clone(),
        }
    }

    fn labels(&self, owner: &Owner) -> BTreeMap<String, String> {
        let mut l = self.spec.labels.clone();
        l.extend(owner.labels());
        l
    }

    /// The instance wherever it is: the one the state recorded (by its link, whatever the
    /// config names it now), else the spec's name in the spec's zones.
    async fn find(&self, ctx: &StepCtx) -> Result<Option<InstanceInfo>> {
        let state = ctx.state.snapshot().await;
        if let Some(at) = recorded_instance(&state) {
            if at.name != self.spec.name || at.project != self.spec.project {
                return Err(self.renamed(&at));
            }
            if let Some(i) = ctx.backends.compute.get_instance(&at).await? {
                return Ok(Some(i));
            }
        }
        for z in self.zones_to_look_in(&state) {
            if let Some(i) = ctx.backends.compute.get_instance(&self.at(&z)).await? {
                return Ok(Some(i));
            }
        }
        Ok(None)
    }

    /// Where an instance kgenv has not recorded yet may be: the zone an insert was sent
    /// to (recorded before the insert, so a run killed before it recorded the VM still finds
    /// it, wherever `zones = "auto"` put it), then the zones the spec lists by name.
    fn zones_to_look_in(&self, state: &State) -> Vec<String> {
        let mut zones: Vec<String> = state
            .fact("instance", INSERTING_IN)
            .map(String::from)
            .into_iter()
            .collect();
        for z in self.spec.zones.listed() {
            if crate::spec::rules::zone("", z).is_ok() && !zones.contains(z) {
                zones.push(z.clone());
            }
        }
        zones
    }

    /// The insert `plan` shows: the first candidate, and the others to try after it.
    fn insert_action(&self, pre: &Preflight) -> String {
        let several = self.spec.gpus.len() > 1;
        let first = &pre.candidates[0];
        let rest: Vec<String> = pre.candidates[1..]
            .iter()
            .map(|c| c.label(several))
            .collect();
        let what = if several {
            format!(" as {}", first.gpu.describe())
        } else {
            String::new()
        };
        format!(
            "POST compute/v1/projects/{}/zones/{}/instances (insert {}{what}; next on stockout: {})",
            self.spec.project,
            first.zone,
            self.spec.name,
            if rest.is_empty() { "none".to_string() } else { rest.join(", ") }
        )
    }

    /// The error for a config whose instance name or project no longer matches the one
    /// kgenv made: kgenv neither renames a VM nor makes a second one beside it.
    fn renamed(&self, recorded: &InstanceRef) -> crate::Error {
        crate::Error::Usage(format!(
            "`instance.name`/`instance.project` say {}/{}, but this environment's VM is {recorded}; put the old values back, or run `kgenv down` first (it deletes the recorded VM, never one found by the new name)",
            self.spec.project, self.spec.name
        ))
    }

    /// The instance, which must exist and be kgenv's (for `stop` and `start`).
    async fn find_owned(&self, ctx: &StepCtx) -> Result<InstanceInfo> {
        let owner = ctx.owner().await;
        let state = ctx.state.snapshot().await;
        match self.find(ctx).await? {
            Some(i) if owned(&owner, &state, &i) => Ok(i),
            Some(i) => Err(not_ours(&i.at)),
            None => Err(BackendError::NotFound {
                resource: format!(
                    "instance {} in {} (run `kgenv up` to create it)",
                    self.spec.name, self.spec.zones
                ),
            }
            .into()),
        }
    }

    fn request(
        &self,
        owner: &Owner,
        c: &Candidate,
        source_image: &str,
        ssh_key: &str,
    ) -> InstanceRequest {
        let mut metadata = BTreeMap::new();
        metadata.insert("ssh-keys".into(), ssh_key.to_string());
        metadata.insert("enable-guest-attributes".into(), "TRUE".into());
        if c.gpu.gpu_type.is_some() {
            metadata.insert("install-nvidia-driver".into(), "True".into());
        }
        InstanceRequest {
            at: self.at(&c.zone),
            machine_type: c.gpu.machine_type.clone(),
            gpu: c.gpu.gpu(),
            source_image: source_image.into(),
            disk_size_gb: self.spec.disk_size_gb,
            disk_type: self.spec.disk_type.clone(),
            provisioning: self.spec.provisioning,
            service_account: self.spec.service_account.clone(),
            scopes: self.spec.scopes.clone(),
            tags: self.spec.tags.clone(),
            labels: self.labels(owner),
            metadata,
        }
    }

    async fn record(&self, ctx: &StepCtx, info: &InstanceInfo) -> Result<()> {
        ctx.state
            .update("instance", |r| {
                if !info.id.is_empty() && r.facts.get("id").is_some_and(|old| *old != info.id) {
                    // Another VM now stands at this name: the keys pinned for the old
                    // one would fail every connection, and must be read again.
                    r.facts.remove("host_keys");
                }
                r.created.insert("instance".into(), instance_path(&info.at));
                r.facts.insert("zone".into(), info.at.zone.clone());
                r.facts.remove(INSERTING_IN);
                // The GPU choice the VM got (any of the spec's is kept as it is).
                r.facts
                    .insert("machine_type".into(), info.machine_type.clone());
                r.facts.insert("gpu".into(), gpu_fact(info.gpu.as_ref()));
                if !info.id.is_empty() {
                    r.facts.insert("id".into(), info.id.clone());
                }
                match &info.external_ip {
                    Some(ip) => r.facts.insert("external_ip".into(), ip.clone()),
                    None => r.facts.remove("external_ip"),
                };
            })
            .await?;
        Ok(())
    }

    /// Reads the host keys the guest agent publishes and pins them in the state file,
    /// polling with growing delays until the run's host-ready time is used up.
    async fn record_host_keys(&self, ctx: &StepCtx, at: &InstanceRef) -> Result<()> {
        let started = Instant::now();
        let mut delay = HOSTKEY_FIRST_DELAY;
        let mut last_seen = "no hostkeys/ entries yet (is enable-guest-attributes set and the guest agent running?)".to_string();
        loop {
            match ctx.backends.compute.guest_attributes(at, "hostkeys/").await {
                Ok(keys) if !keys.is_empty() => {
                    let lines: Vec<String> = keys
                        .iter()
                        .map(|(alg, body)| format!("{alg} {body}"))
                        .collect();
                    ctx.state
                        .update("instance", |r| {
                            r.facts.insert("host_keys".into(), lines.join("\n"));
                        })
                        .await?;
                    ctx.log(format!(
                        "pinned {} host key(s) from guest attributes",
                        lines.len()
                    ));
                    return Ok(());
                }
                // Not published yet (the guest agent starts after boot): keep polling.
                Ok(_) => {}
                Err(e @ BackendError::NotFound { .. }) => last_seen = e.to_string(),
                Err(e) => return Err(e.into()),
            }
            if started.elapsed() + delay > ctx.host_ready_within() {
                return Err(BackendError::Timeout {
                    what: format!("host keys in the guest attributes of {at}"),
                    after: started.elapsed(),
                    last_seen: Some(last_seen),
                }
                .into());
            }
            if delay == HOSTKEY_FIRST_DELAY {
                ctx.log("waiting for the guest agent to publish the host keys");
            }
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                () = ctx.cancel.cancelled() => return Err(BackendError::Cancelled.into()),
            }
            delay = (delay * 2).min(HOSTKEY_MAX_DELAY);
        }
    }

    /// Whether the state already pins host keys read from this very VM (same GCE id).
    async fn keys_pinned_for(&self, ctx: &StepCtx, info: &InstanceInfo) -> bool {
        let state = ctx.state.snapshot().await;
        !info.id.is_empty()
            && state.fact("instance", "id") == Some(info.id.as_str())
            && state.fact("instance", "host_keys").is_some()
    }

    /// Deletes what a failed insert left in `at`, if it is kgenv's.
    async fn remove_half_made(
        &self,
        ctx: &StepCtx,
        at: &InstanceRef,
        cause: &BackendError,
    ) -> Result<()> {
        let compute = &ctx.backends.compute;
        let Some(half) = compute.get_instance(at).await? else {
            return Ok(());
        };
        if !ctx.owner().await.owns(&half.labels) {
            return Ok(());
        }
        ctx.log(format!(
            "deleting the half-made {at} left by the failed insert"
        ));
        match compute.delete_instance(at).await {
            Ok(()) => Ok(()),
            // GCE shows a failed insert's instance a while, then removes it itself: gone
            // before the delete (404) or while it ran (the operation's RESOURCE_NOT_FOUND)
            // is what the delete was for.
            Err(BackendError::NotFound { .. }) => {
                ctx.log(format!("{at} was already gone (GCE removed it)"));
                Ok(())
            }
            Err(e) => Err(crate::Error::from(BackendError::Other {
                message: format!("creating {at} failed ({cause}) and deleting what it left failed too; delete it with `kgenv down --only instance` or `gcloud compute instances delete {} --zone {}`", at.name, at.zone),
                source: Some(Box::new(e)),
            })),
        }
    }

    /// Runs `call` on the instance at `at`. When GCE refuses it because the instance is
    /// between two states (400 `resourceNotReady`: PROVISIONING, STAGING, STOPPING, ...),
    /// waits until it settles and calls again; the wait is bounded by the host-ready time.
    async fn when_ready<F, Fut>(&self, ctx: &StepCtx, at: &InstanceRef, call: F) -> Result<()>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = crate::backends::BackendResult<()>>,
    {
        loop {
            let e = match call().await {
                Err(e @ BackendError::FailedPrecondition { .. }) => e,
                other => return other.map_err(Into::into),
            };
            // Ask GCE what state it is in rather than reading the message: a refusal for
            // another reason (a running VM's machine type) is not waited on.
            let Some(now) = ctx.backends.compute.get_instance(at).await? else {
                return Err(e.into());
            };
            if !is_settling(&now.status) {
                return Err(e.into());
            }
            if self.wait_settled(ctx, now).await?.is_none() {
                return Err(BackendError::NotFound {
                    resource: format!("{at} (it went away while kgenv waited for it to settle)"),
                }
                .into());
            }
        }
    }

    /// Starts the stopped instance at `at` (waiting out a state change first). A zone
    /// without capacity leaves the VM stopped with its disks and data: the error says so
    /// and what to do, and nothing is deleted.
    async fn start(&self, ctx: &StepCtx, at: &InstanceRef) -> Result<()> {
        let mut rounds = ctx.capacity_wait().map(capacity::Rounds::new);
        loop {
            match self.start_once(ctx, at).await {
                Err(e) if e.is_stockout() => {
                    // With a capacity wait, try the start again in rounds: the VM stays
                    // stopped with its disks meanwhile, so nothing is at risk.
                    let Some(r) = rounds.as_mut() else {
                        return Err(e);
                    };
                    if !r.pause(ctx, 1, ("zone", "zones")).await? {
                        return Err(e);
                    }
                }
                other => return other,
            }
        }
    }

    async fn start_once(&self, ctx: &StepCtx, at: &InstanceRef) -> Result<()> {
        ctx.log(format!("starting {at}"));
        let compute = &ctx.backends.compute;
        self.when_ready(ctx, at, move || async move {
            compute.start_instance(at).await.map_err(|e| match e {
                BackendError::Stockout { zone, resource, message } => BackendError::Stockout {
                    message: format!("{message}; {} stays stopped in {zone} with its disks and data (nothing was deleted). Run `kgenv start --wait-for-capacity` (or `kgenv up`) to try again in rounds until the zone has capacity, or move it to a zone with capacity with `kgenv move ZONE`", at.name),
                    zone,
                    resource,
                },
                e => e,
            })
        })
        .await
    }

    /// Waits while `info` is between two states (PROVISIONING or STAGING: a run killed
    /// during its insert, or an insert or start still under way; STOPPING: a stop or a
    /// preemption under way): the instance once it has settled, or `None` when GCE removed
    /// it (its insert failed, e.g. on a stockout). Bounded by the host-ready time.
    async fn settle(&self, ctx: &StepCtx, info: InstanceInfo) -> Result<InstanceInfo> {
        match self.wait_settled(ctx, info).await? {
            Some(i) => Ok(i),
            None => Err(BackendError::NotFound {
                resource: format!(
                    "instance {} (its insert failed and GCE removed it; run `kgenv up` again)",
                    self.spec.name
                ),
            }
            .into()),
        }
    }

    async fn wait_settled(
        &self,
        ctx: &StepCtx,
        mut info: InstanceInfo,
    ) -> Result<Option<InstanceInfo>> {
        let started = Instant::now();
        let mut delay = SETTLE_FIRST_DELAY;
        while is_settling(&info.status) {
            if started.elapsed() + delay > ctx.host_ready_within() {
                return Err(BackendError::Timeout {
                    what: format!("{} to leave {:?}", info.at, info.status),
                    after: started.elapsed(),
                    last_seen: Some(format!("{:?}", info.status)),
                }
                .into());
            }
            ctx.log(format!(
                "{} is {:?} (an insert, start or stop still under way); waiting for it",
                info.at, info.status
            ));
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                () = ctx.cancel.cancelled() => return Err(BackendError::Cancelled.into()),
            }
            delay = (delay * 2).min(SETTLE_MAX_DELAY);
            match ctx.backends.compute.get_instance(&info.at).await? {
                Some(now) => info = now,
                None => {
                    ctx.log(format!(
                        "{} is gone (its insert failed, or it was deleted)",
                        info.at
                    ));
                    return Ok(None);
                }
            }
        }
        Ok(Some(info))
    }

    /// Marks an instance adopted from a state without owner ids with the owner id.
    async fn mark_owned(&self, ctx: &StepCtx, owner: &Owner, info: &InstanceInfo) -> Result<()> {
        let Some(id) = &owner.id else { return Ok(()) };
        if info.labels.get(OWNER_ID_LABEL) == Some(id) {
            return Ok(());
        }
        let mut labels = info.labels.clone();
        labels.extend(owner.labels());
        ctx.log(format!(
            "marking {} with this environment's owner id",
            info.at
        ));
        ctx.backends
            .compute
            .set_instance_labels(&info.at, &labels)
            .await?;
        Ok(())
    }

    async fn create(&self, ctx: &StepCtx) -> Result<InstanceInfo> {
        let owner = ctx.owner().await;
        let pre = preflight_once(ctx, &self.spec).await?;
        let key = crate::keys::ensure(&self.env)?;
        let ssh_key = key.gce_metadata(crate::keys::GCE_USER);
        // A kept data disk attaches only in its own zone: the VM goes there, or nowhere.
        let disk_zone = super::data_disk::data_disk_zone(&ctx.state.snapshot().await);
        let candidates = match &disk_zone {
            Some(z) => {
                let here: Vec<Candidate> = pre
                    .candidates
                    .iter()
                    .filter(|c| c.zone == *z)
                    .cloned()
                    .collect();
                if here.is_empty() {
                    ctx.warn(format!("your data disk is in {z}, which `instance.zones` does not list (or which lacks the machine or GPU type); creating the VM there anyway, as the disk cannot attach elsewhere (`kgenv move ZONE` moves it)"));
                    self.spec
                        .gpus
                        .iter()
                        .enumerate()
                        .map(|(i, g)| Candidate {
                            choice: i,
                            gpu: g.clone(),
                            zone: z.clone(),
                            entry: 0,
                        })
                        .collect()
                } else {
                    here
                }
            }
            None => pre.candidates.clone(),
        };
        let mut rounds = ctx.capacity_wait().map(capacity::Rounds::new);
        let failed = loop {
            let round = self
                .create_round(ctx, &owner, &pre, &candidates, &ssh_key)
                .await;
            let failed = match round {
                Ok(Ok(info)) => return Ok(info),
                Ok(Err(failed)) => failed,
                Err(e) => {
                    // Cancelled between inserts: nothing of this run's inserts is left. Any
                    // other error may leave a half-made VM (its delete failed too): keep
                    // its zone, so `find` — and `down` — still see it.
                    if e.is_cancelled() {
                        self.forget_insert(ctx).await?;
                    }
                    return Err(e);
                }
            };
            let Some(r) = rounds.as_mut().filter(|_| failed.stockouts > 0) else {
                break failed;
            };
            if !r
                .pause(ctx, failed.stockouts, ("candidate", "candidates"))
                .await?
            {
                break failed;
            }
        };
        self.forget_insert(ctx).await?;
        let several = self.spec.gpus.len() > 1;
        let mut tried = pre.not_offered.clone();
        tried.extend(failed.tried);
        let waited = rounds.as_ref().map_or(String::new(), |r| {
            format!(
                " (after {} rounds in {})",
                r.round,
                humantime::format_duration(Duration::from_secs(r.waited().as_secs()))
            )
        });
        let hint = if failed.stockouts > 0 && rounds.is_none() {
            ", or wait for capacity with `kgenv up --wait-for-capacity`"
        } else {
            ""
        };
        let summary = match &disk_zone {
            Some(z) => format!("no capacity for the instance in {z}, where your data disk is{waited} (tried {}). Run `kgenv up` again later{hint}, or move the data with `kgenv move ZONE` to a zone that has capacity", tried.join(", ")),
            None => format!(
                "no zone could host the instance{waited}; tried {}. Add zones (other regions too, or zones = \"auto\") to `instance.zones`, {}, or request quota{hint}",
                tried.join(", "),
                if several { "add GPU choices to `instance.gpu`" } else { "pick another `gpu_type` (or list several in `instance.gpu`)" }
            ),
        };
        Err(match failed.last {
            Some(BackendError::Stockout { zone, resource, .. }) => BackendError::Stockout {
                zone,
                resource,
                message: summary,
            },
            Some(BackendError::Quota { quota, .. }) => BackendError::Quota {
                quota,
                message: summary,
            },
            _ => BackendError::NotFound { resource: summary },
        }
        .into())
    }

    /// Forgets the zone an insert was sent to once nothing of it is left.
    async fn forget_insert(&self, ctx: &StepCtx) -> Result<()> {
        if ctx
            .state
            .snapshot()
            .await
            .fact("instance", INSERTING_IN)
            .is_some()
        {
            ctx.state
                .update("instance", |r| {
                    r.facts.remove(INSERTING_IN);
                })
                .await?;
        }
        Ok(())
    }

    /// One pass over the candidates: the VM made in the first with capacity, or what each
    /// candidate failed on. An error that no other candidate can fix (a global quota, bad
    /// input, Ctrl-C) ends the run at once.
    async fn create_round(
        &self,
        ctx: &StepCtx,
        owner: &Owner,
        pre: &Preflight,
        candidates: &[Candidate],
        ssh_key: &str,
    ) -> Result<std::result::Result<InstanceInfo, RoundFailed>> {
        let compute = &ctx.backends.compute;
        let several = self.spec.gpus.len() > 1;
        let mut failed = RoundFailed::default();
        // (region, GPU type): a regional GPU quota skips that GPU's candidates in the
        // region; any other regional quota (CPUs, addresses) the whole region (`None`).
        let mut skipped: Vec<(String, Option<String>)> = Vec::new();
        for c in candidates {
            let label = c.label(several);
            let region = region_of(&c.zone).to_string();
            if let Some((_, gpu)) = skipped
                .iter()
                .find(|(r, g)| *r == region && (g.is_none() || *g == c.gpu.gpu_type))
            {
                let what = gpu
                    .as_deref()
                    .map_or(String::new(), |g| format!(" for {g}"));
                failed.tried.push(format!("{label} (region quota{what})"));
                continue;
            }
            if ctx.cancel.is_cancelled() {
                return Err(BackendError::Cancelled.into());
            }
            let req = self.request(owner, c, &pre.image.self_link, ssh_key);
            ctx.log(format!(
                "creating {} in {} ({}) from image {}",
                req.at,
                c.zone,
                c.gpu.describe(),
                pre.image.name
            ));
            // Recorded before the insert: a run killed before it records the VM still
            // finds it here (see `find`).
            ctx.state
                .update("instance", |r| {
                    r.facts.insert(INSERTING_IN.into(), c.zone.clone());
                })
                .await?;
            let err = match compute.insert_instance(&req).await {
                Ok(info) => return Ok(Ok(info)),
                Err(BackendError::AlreadyExists { .. }) => {
                    // A retried insert that landed, or a name clash: adopt only what is ours.
                    if let Some(info) = compute.get_instance(&req.at).await? {
                        if owner.owns(&info.labels) {
                            ctx.log(format!(
                                "adopting {} (it carries this environment's owner id)",
                                info.at
                            ));
                            return self.settle(ctx, info).await.map(Ok);
                        }
                        return Err(not_ours(&info.at));
                    }
                    // Gone again (a failed insert GCE cleaned up): try this zone's error path.
                    BackendError::NotFound {
                        resource: req.at.to_string(),
                    }
                }
                Err(e) => e,
            };
            // Whatever went wrong, leave nothing half-made behind in this zone.
            self.remove_half_made(ctx, &req.at, &err).await?;
            match err {
                e if e.is_stockout() => {
                    ctx.warn(format!(
                        "{label}: no capacity ({e}); trying the next candidate"
                    ));
                    failed.tried.push(format!("{label} (stockout)"));
                    failed.stockouts += 1;
                    failed.last = Some(e);
                }
                BackendError::Quota { quota, message } => match &quota.scope {
                    QuotaScope::Global => {
                        failed
                            .tried
                            .push(format!("{label} (quota {}, all regions)", quota.metric));
                        let mut tried = pre.not_offered.clone();
                        tried.extend(failed.tried);
                        return Err(BackendError::Quota {
                            message: format!("{message}; tried {}", tried.join(", ")),
                            quota,
                        }
                        .into());
                    }
                    QuotaScope::Region(r) => {
                        let gpu_only = quota.metric.contains("GPU");
                        ctx.warn(format!(
                            "quota {} reached in {r}; skipping its {}",
                            quota.metric,
                            if gpu_only {
                                "candidates with this GPU"
                            } else {
                                "zones"
                            }
                        ));
                        skipped.push((
                            r.clone(),
                            if gpu_only {
                                c.gpu.gpu_type.clone()
                            } else {
                                None
                            },
                        ));
                        failed
                            .tried
                            .push(format!("{label} (quota {} in {r})", quota.metric));
                        failed.last = Some(BackendError::Quota { quota, message });
                    }
                },
                e => return Err(e.into()),
            }
        }
        Ok(Err(failed))
    }

    /// `kgenv stop`: stops the instance and keeps its disk, so the GPU is no longer billed.
    /// Returns whether it was running.
    async fn power_off(&self, ctx: &StepCtx) -> Result<bool> {
        let mut info = self.find_owned(ctx).await?;
        if is_settling(&info.status) {
            // GCE takes no stop while it is starting or stopping: wait it out.
            info = self
                .wait_settled(ctx, info)
                .await?
                .ok_or_else(|| BackendError::NotFound {
                    resource: format!(
                        "instance {} (it went away while kgenv waited to stop it)",
                        self.spec.name
                    ),
                })?;
        }
        let was_running = info.status != InstanceStatus::Terminated;
        if !was_running {
            ctx.log(format!("{} is already stopped", info.at));
        } else {
            ctx.log(format!("stopping {} (the disk is kept)", info.at));
            let (compute, at) = (&ctx.backends.compute, &info.at);
            self.when_ready(ctx, at, move || compute.stop_instance(at))
                .await?;
        }
        let after = ctx
            .backends
            .compute
            .get_instance(&info.at)
            .await?
            .ok_or_else(|| BackendError::NotFound {
                resource: info.at.to_string(),
            })?;
        // A stopped instance has no external address; the next start gets a new one.
        self.record(ctx, &after).await?;
        Ok(was_running)
    }

    /// What differs from the spec and GCE changes only on a stopped VM (never by
    /// recreating it: the VM holds the user's work).
    fn restart_changes(&self, info: &InstanceInfo) -> Vec<RestartChange> {
        let mut c = Vec::new();
        // A VM on any GPU choice is kept as it is: it is not restarted only because the
        // first choice had no capacity when it was made. On none of them, it changes to
        // the first.
        let on_a_choice = self
            .spec
            .gpus
            .iter()
            .any(|g| g.machine_type == info.machine_type && g.gpu() == info.gpu);
        if !on_a_choice {
            if info.machine_type != self.spec.machine_type {
                c.push(RestartChange::MachineType(self.spec.machine_type.clone()));
            }
            let want_gpu = self.spec.gpu_type.clone().map(|t| (t, self.spec.gpu_count));
            if info.gpu != want_gpu {
                c.push(RestartChange::Gpus(want_gpu));
            }
        }
        // No account in the spec means the project's default compute account, which GCE
        // reports by its email.
        let account_differs = match (&self.spec.service_account, &info.service_account) {
            (None, None) => false,
            (None, Some(have)) => !is_default_compute_account(have),
            (Some(want), have) => have.as_ref() != Some(want),
        };
        if account_differs || self.scopes_differ(info) {
            c.push(RestartChange::ServiceAccount(
                self.spec.service_account.clone(),
                self.spec.scopes.clone(),
            ));
        }
        c
    }

    /// Whether the VM's scopes must change. Scopes the user wrote must match exactly. kgenv's
    /// own default need only be covered ([`scopes_cover`]): a VM made by an earlier kgenv,
    /// whose default was `cloud-platform`, keeps its scopes rather than being stopped on the
    /// next `up` because the default narrowed — the change a user did not ask for should not
    /// interrupt their work. `check` warns about it and says how to narrow them.
    fn scopes_differ(&self, info: &InstanceInfo) -> bool {
        if self.spec.scopes_defaulted {
            return !scopes_cover(&info.scopes, &self.spec.scopes);
        }
        let set = |v: &[String]| v.iter().cloned().collect::<std::collections::BTreeSet<_>>();
        set(&info.scopes) != set(&self.spec.scopes)
    }

    /// The warning for a VM kept with broader scopes than kgenv's default (see
    /// [`Self::scopes_differ`]).
    fn wider_scopes_warning(&self, info: &InstanceInfo) -> Option<String> {
        let wider = self.spec.scopes_defaulted
            && !self.scopes_differ(info)
            && !scopes_cover(&self.spec.scopes, &info.scopes);
        wider.then(|| {
            let short = |v: &[String]| {
                v.iter()
                    .map(|s| s.strip_prefix(SCOPE_PREFIX).unwrap_or(s).to_string())
                    .collect::<Vec<_>>()
            };
            format!(
                "VM {} keeps the scopes it was made with ({}), wider than kgenv's least-privilege default; to narrow them, write `scopes = {:?}` under [instance] (the next `up` then stops and restarts the VM, after asking)",
                info.at.name,
                short(&info.scopes).join(", "),
                short(&self.spec.scopes)
            )
        })
    }

    /// Grows the boot disk to the spec's size (online; GCE never shrinks a disk). Returns
    /// the difference to show, if any.
    async fn grow_boot_disk(
        &self,
        ctx: &StepCtx,
        info: &InstanceInfo,
        apply: bool,
    ) -> Result<Option<String>> {
        let Some(boot) = info.disks.iter().find(|d| d.boot) else {
            return Ok(None);
        };
        let Some(at) = DiskRef::from_link(&boot.source) else {
            return Ok(None);
        };
        let Some(disk) = ctx.backends.compute.get_disk(&at).await? else {
            return Ok(None);
        };
        let want = self.spec.disk_size_gb;
        if disk.size_gb > want {
            return Err(ValidationError::new(
                "instance.disk_size_gb",
                format!("{want} GB is below the boot disk's {} GB: GCE cannot shrink a disk; set disk_size_gb to {} or more", disk.size_gb, disk.size_gb),
            )
            .into());
        }
        if disk.size_gb == want {
            return Ok(None);
        }
        if apply {
            ctx.log(format!(
                "growing the boot disk {at} from {} to {want} GB",
                disk.size_gb
            ));
            ctx.backends.compute.resize_disk(&at, want).await?;
        }
        Ok(Some(format!(
            "disk_size_gb: {} → {want} (grown in place)",
            disk.size_gb
        )))
    }

    /// Stops the VM, applies each change, starts it again. Killed half-way, the next `up`
    /// finds the VM stopped with the changes left, and goes on.
    async fn change_in_place(&self, ctx: &StepCtx, info: InstanceInfo) -> Result<InstanceInfo> {
        let compute = &ctx.backends.compute;
        let changes = self.restart_changes(&info);
        if info.status != InstanceStatus::Terminated {
            ctx.log(format!(
                "stopping {} to change {} (the disks are kept)",
                info.at,
                changes
                    .iter()
                    .map(RestartChange::field)
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
            let at = &info.at;
            self.when_ready(ctx, at, move || compute.stop_instance(at))
                .await?;
        }
        for change in &changes {
            ctx.log(format!("{}: {}", info.at, change.describe(&info)));
            let at = &info.at;
            self.when_ready(ctx, at, move || async move {
                match change {
                    RestartChange::MachineType(m) => compute.set_machine_type(at, m).await,
                    RestartChange::Gpus(g) => compute.set_gpus(at, g.clone()).await,
                    RestartChange::ServiceAccount(email, scopes) => {
                        compute
                            .set_service_account(at, email.as_deref(), scopes)
                            .await
                    }
                }
            })
            .await?;
        }
        self.start(ctx, &info.at).await?;
        Ok(compute
            .get_instance(&info.at)
            .await?
            .ok_or_else(|| BackendError::NotFound {
                resource: info.at.to_string(),
            })?)
    }

    async fn power_on(&self, ctx: &StepCtx, info: InstanceInfo) -> Result<InstanceInfo> {
        match info.status {
            // Up or on its way up: nothing to start.
            InstanceStatus::Running | InstanceStatus::Provisioning | InstanceStatus::Staging | InstanceStatus::Repairing => Ok(info),
            InstanceStatus::Suspended | InstanceStatus::Suspending => Err(BackendError::InvalidArgument {
                resource: info.at.to_string(),
                message: format!("is suspended; resume it with `gcloud compute instances resume {} --zone {}`, then run kgenv again", info.at.name, info.at.zone),
            }
            .into()),
            _ => {
                self.start(ctx, &info.at).await?;
                Ok(ctx.backends.compute.get_instance(&info.at).await?.ok_or_else(|| BackendError::NotFound { resource: info.at.to_string() })?)
            }
        }
    }
}

#[async_trait]
impl Step for InstanceStep {
    fn id(&self) -> &str {
        "instance"
    }
    fn deps(&self) -> &[String] {
        &self.deps
    }
    fn warnings(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.spec.has_cloud_platform_scope() {
            out.push(format!(
                "instance {} runs with the `cloud-platform` scope: anything on the VM (the container, every package it installs) can call every Google Cloud API the service account's roles allow; kgenv needs only {}",
                self.spec.name,
                default_scopes(true)
                    .iter()
                    .map(|s| s.strip_prefix(SCOPE_PREFIX).unwrap_or(s))
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        if let Provisioning::FlexStart {
            max_run_duration_secs,
        } = self.spec.provisioning
        {
            // Said before the run, so nobody is surprised when a long training stops.
            out.push(format!(
                "instance {} is flex-start: GCE stops it after {} of running (its max_run_duration); its boot and data disks and your data are kept, and `kgenv start` asks GCE for capacity again",
                self.spec.name,
                humantime::format_duration(Duration::from_secs(max_run_duration_secs))
            ));
        }
        out
    }
    fn summary(&self) -> String {
        let gpus: Vec<String> = self.spec.gpus.iter().map(GpuChoice::describe).collect();
        format!(
            "GCE instance {} ({}, {} GB {}, {}/{}{}) in {}",
            self.spec.name,
            gpus.join(" or "),
            self.spec.disk_size_gb,
            self.spec.disk_type,
            self.spec.image_project,
            self.spec.image_family,
            match self.spec.provisioning {
                Provisioning::Standard => String::new(),
                Provisioning::Spot =>
                    ", spot: GCE may preempt it, then it stops with its disks kept".into(),
                Provisioning::FlexStart {
                    max_run_duration_secs,
                } => format!(
                    ", flex-start: GCE stops it after {} of running, its disks and data kept",
                    humantime::format_duration(Duration::from_secs(max_run_duration_secs))
                ),
            },
            match &self.spec.zones {
                Zones::Auto => "any zone that offers it".to_string(),
                Zones::Listed(v) => v.join(" or "),
            }
        )
    }
    fn planned_actions(&self) -> Vec<String> {
        let p = &self.spec.project;
        vec![
            format!("GET compute/v1/projects/{}/global/images/family/{}", self.spec.image_project, self.spec.image_family),
            format!("POST compute/v1/projects/{p}/zones/ZONE/instances (insert {} in the first of {} with capacity)", self.spec.name, self.spec.zones),
            format!("GET compute/v1/projects/{p}/zones/ZONE/instances/{}/getGuestAttributes?queryPath=hostkeys/", self.spec.name),
        ]
    }
    async fn check(&self, ctx: &StepCtx) -> Result<CheckOutcome> {
        let Some(info) = self.find(ctx).await? else {
            let pre = preflight_once(ctx, &self.spec).await?;
            let p = &self.spec.project;
            return Ok(CheckOutcome::missing(vec![
                format!("image family {} resolves to {} ({} GB minimum)", self.spec.image_family, pre.image.name, pre.image.disk_size_gb),
                self.insert_action(&pre),
                format!("GET compute/v1/projects/{p}/zones/ZONE/instances/{}/getGuestAttributes?queryPath=hostkeys/", self.spec.name),
            ]));
        };
        let owner = ctx.owner().await;
        let recorded = ctx.state.snapshot().await;
        if !owned(&owner, &recorded, &info) {
            return Err(not_ours(&info.at));
        }
        let mut diff = Vec::new();
        if let Some(id) = owner
            .id
            .as_ref()
            .filter(|id| info.labels.get(OWNER_ID_LABEL) != Some(*id))
        {
            diff.push(format!(
                "label {OWNER_ID_LABEL}: none → {id} (made before owner ids)"
            ));
        }
        if let Some(w) = self.wider_scopes_warning(&info) {
            ctx.warn(w);
        }
        let changes = self.restart_changes(&info);
        if !changes.is_empty() {
            diff.extend(changes.iter().map(|c| c.describe(&info)));
            let at = &info.at;
            let base = format!(
                "compute/v1/projects/{}/zones/{}/instances/{}",
                at.project, at.zone, at.name
            );
            let mut actions = vec![format!("POST {base}/stop")];
            actions.extend(
                changes
                    .iter()
                    .map(|c| format!("POST {base}/{}", c.method())),
            );
            actions.push(format!("POST {base}/start"));
            let outcome = CheckOutcome::drifted(diff, actions);
            if info.status == InstanceStatus::Terminated {
                // Already stopped (`kgenv stop`, then `start` or `up`): nothing is interrupted.
                return Ok(outcome);
            }
            return Ok(outcome.disruptive(format!(
                "stops and restarts the VM {} (disks and data are kept) to change {}",
                info.at.name,
                changes
                    .iter()
                    .map(RestartChange::field)
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
        if let Some(d) = self.grow_boot_disk(ctx, &info, false).await? {
            diff.push(d);
        }
        if !diff.is_empty() {
            return Ok(CheckOutcome::drifted(diff, vec![]));
        }
        if let Some(old) = recorded
            .fact("instance", "id")
            .filter(|id| !info.id.is_empty() && *id != info.id)
        {
            return Ok(CheckOutcome::drifted(
                vec![format!("{} was recreated outside kgenv (GCE id {old} → {}); its new host keys will be read from guest attributes", info.at, info.id)],
                vec!["GET getGuestAttributes hostkeys/".into()],
            ));
        }
        let host_keys_missing = recorded.fact("instance", "host_keys").is_none();
        match info.status {
            InstanceStatus::Running
                if !host_keys_missing
                    && recorded.fact("instance", "external_ip") == info.external_ip.as_deref() =>
            {
                Ok(CheckOutcome::satisfied())
            }
            InstanceStatus::Running => Ok(CheckOutcome::drifted(
                vec!["host keys or address not recorded yet".into()],
                vec!["GET getGuestAttributes hostkeys/".into()],
            )),
            InstanceStatus::Terminated | InstanceStatus::Stopping | InstanceStatus::Suspended => {
                let why = match preempted(ctx, &self.spec, &info).await? {
                    Some(p) => format!(" ({})", p.message),
                    None => String::new(),
                };
                Ok(CheckOutcome::drifted(
                    vec![format!("status: {:?} → RUNNING{why}", info.status)],
                    vec![format!(
                        "POST compute/v1/projects/{}/zones/{}/instances/{}/start",
                        info.at.project, info.at.zone, info.at.name
                    )],
                ))
            }
            _ => Ok(CheckOutcome::drifted(
                vec![format!("status: {:?} (waiting for RUNNING)", info.status)],
                vec![],
            )),
        }
    }
    async fn apply(&self, ctx: &StepCtx) -> Result<()> {
        let owner = ctx.owner().await;
        let state = ctx.state.snapshot().await;
        let found = match self.find(ctx).await? {
            Some(info) if !owned(&owner, &state, &info) => return Err(not_ours(&info.at)),
            // A run killed during the insert: wait it out; gone means the insert failed.
            Some(info) if is_settling(&info.status) => self.wait_settled(ctx, info).await?,
            other => other,
        };
        let info = match found {
            Some(info) if !self.restart_changes(&info).is_empty() => {
                self.mark_owned(ctx, &owner, &info).await?;
                self.change_in_place(ctx, info).await?
            }
            Some(info) => {
                self.mark_owned(ctx, &owner, &info).await?;
                self.power_on(ctx, info).await?
            }
            None => self.create(ctx).await?,
        };
        let keys_pinned = self.keys_pinned_for(ctx, &info).await;
        // Record before anything else can fail, so `down` can always find it.
        self.record(ctx, &info).await?;
        self.grow_boot_disk(ctx, &info, true).await?;
        if keys_pinned {
            // The same VM (same id) keeps its host keys across stop and start.
            return Ok(());
        }
        self.record_host_keys(ctx, &info.at).await
    }
    async fn stop(&self, ctx: &StepCtx) -> Result<bool> {
        self.power_off(ctx).await
    }
    async fn destroy(&self, ctx: &StepCtx) -> Result<Destroyed> {
        let state = ctx.state.snapshot().await;
        let owner = state.owner();
        let compute = &ctx.backends.compute;
        // The VM the state recorded, by its link: never one found by the config's name
        // alone. Not recorded (a run killed between insert and record): the spec's name,
        // only if it carries this environment's owner id.
        let candidate = match recorded_instance(&state) {
            Some(at) => compute.get_instance(&at).await?,
            None if owner.id.is_some() => {
                let mut found = None;
                for z in self.zones_to_look_in(&state) {
                    if let Some(i) = compute.get_instance(&self.at(&z)).await? {
                        found = Some(i);
                        break;
                    }
                }
                found.filter(|i| owner.owns(&i.labels))
            }
            None => None,
        };
        let Some(info) = candidate else {
            if state.step("instance").is_some() {
                ctx.state
                    .update("instance", |r| *r = Default::default())
                    .await?;
                return Ok(Destroyed::Removed);
            }
            return Ok(Destroyed::Nothing);
        };
        if !owned(&owner, &state, &info) {
            ctx.warn(format!("{} no longer carries this environment's owner id or recorded GCE id (deleted and remade outside kgenv?); kgenv leaves it alone and forgets it", info.at));
            ctx.state
                .update("instance", |r| *r = Default::default())
                .await?;
            return Ok(Destroyed::Nothing);
        }
        let at = info.at;
        ctx.log(format!("deleting {at}"));
        match compute.delete_instance(&at).await {
            Ok(()) | Err(BackendError::NotFound { .. }) => {}
            Err(e) => return Err(e.into()),
        }
        ctx.state
            .update("instance", |r| *r = Default::default())
            .await?;
        Ok(Destroyed::Removed)
    }
}
