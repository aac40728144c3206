//! A fake Compute Engine API on 127.0.0.1 for the GCE tests, the end-to-end tests and the
//! benchmark. kgenv's real REST client talks to it through the service-root override.
//!
//! It keeps its own state (instances, firewall rules, operations, request ids) and behaves
//! like the real service where kgenv depends on it:
//! - every request is routed and validated with Google's discovery document
//!   ([`discovery`]); a request that breaks it gets a 400 and is listed in
//!   [`FakeGce::violations`] (so is a mutating call without `requestId`), and dropping the
//!   fake fails the test unless the test took or expected each such violation;
//! - mutating calls return operations that go PENDING → RUNNING → DONE over configured
//!   latencies; `operations.wait` blocks until DONE or the configured cap, whichever is first;
//! - a repeated `requestId` returns the first call's operation (no second resource);
//! - instances follow GCE's lifecycle: an insert shows PROVISIONING for the first half of
//!   its operation and STAGING for the second, RUNNING once it is DONE; `start` goes
//!   TERMINATED → PROVISIONING → STAGING → RUNNING; `stop` RUNNING → STOPPING → TERMINATED;
//!   `delete` of a running one shows STOPPING until it is gone. Every status change is
//!   kept ([`FakeGce::status_history`]). RUNNING instances publish `hostkeys/` guest
//!   attributes only after a delay;
//! - an instance between two states (PROVISIONING, STAGING, STOPPING, SUSPENDING, ...)
//!   refuses stop, start, setMachineType/Resources/ServiceAccount, attach/detachDisk,
//!   setMetadata and setTags with 400 `resourceNotReady` ("The resource '…' is not ready");
//!   delete and setLabels are accepted in any state. `start` on a RUNNING instance and
//!   `stop` on a TERMINATED one are accepted and change nothing. A stop, start or delete
//!   whose operation fails leaves the instance in its earlier status;
//! - a failing insert (a stockout zone, an injected operation error) is accepted, shows the
//!   instance PROVISIONING for [`Config::failed_insert_window`], then its operation ends
//!   DONE with the error and the instance lingers (in [`Config::failed_insert_linger_status`],
//!   for [`Config::failed_insert_linger`] or until shown by
//!   [`Config::failed_insert_vanishes_after_gets`] GETs) before GCE removes it; a delete
//!   sent while it lingers is accepted (its operation ends RESOURCE_NOT_FOUND if the
//!   instance vanished first), one sent after gets 404. A fault may leave it TERMINATED
//!   for good ([`Config::half_made_on_stockout`], [`Fault::fails_after_appearing`]);
//! - `start` in a stockout zone ends DONE with ZONE_RESOURCE_POOL_EXHAUSTED and leaves the
//!   instance TERMINATED, disks attached;
//! - [`FakeGce::preempt`] preempts a RUNNING spot VM as GCE does: STOPPING, then TERMINATED
//!   with its disks kept, recorded as a `compute.instances.preempted` zone operation by
//!   `system`; operations carry `insertTime`/`startTime`/`endTime` and `targetId`, and
//!   instances `lastStartTimestamp`/`lastStopTimestamp` (RFC 3339, Pacific offset as GCE
//!   writes them); `zoneOperations.list` filters (AIP-160 `field = "value"` expressions,
//!   parenthesised and ANDed, or the regular-expression `eq`/`ne` form; mixing them, or
//!   `OR`, is refused with GCE's 400), orders (`name`, or `creationTimestamp desc`, the
//!   only other order GCE supports) and pages (`maxResults` up to 500, `nextPageToken`);
//! - disks are resources: the boot disk is named like the instance and made with it, and
//!   deleted with it only when the insert asked for `autoDelete` (the API's default is
//!   false); other disks are detached and kept (their `users`
//!   cleared); an attached disk cannot be deleted (400 `resourceInUseByAnotherResource`);
//!   a disk only grows; a disk attaches only in its own zone and to one instance (an
//!   attach accepted while another is under way fails when it runs, as GCE's does);
//!   snapshots are global and go CREATING → UPLOADING → READY; a disk's content is an
//!   opaque value ([`FakeGce::disk_data`]) that snapshots carry to the disks made from them;
//! - setMachineType, setMachineResources and setServiceAccount need a TERMINATED instance
//!   (400 `invalidResourceUsage` otherwise); `default` service accounts read back as the
//!   project's `NUMBER-compute@developer.gserviceaccount.com`;
//! - faults can be injected per method: an HTTP error before the work, the work done but the
//!   answer lost, or an operation that fails (optionally leaving the instance behind); zones
//!   can be out of stock;
//! - `/ip` answers with a fixed caller address for `KGENV_CALLER_IP_URL`;
//! - optionally ([`Config::device_links`], the end-to-end tests), it plays udev on the
//!   instance for attached disks: `/dev/disk/by-id/google-DEVICE` appears on attach and
//!   goes on detach or when the instance is deleted.
#![allow(dead_code)]

#[path = "gce_discovery.rs"]
pub mod discovery;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::Response;
use axum::Router;
use serde_json::{json, Value};

use discovery::Discovery;

/// The bearer token the fake accepts.
pub const TOKEN: &str = "fake-token-for-kgenv-tests";
/// The address `/ip` answers with.
pub const CALLER_IP: &str = "198.51.100.23";
/// The host key instances publish in `hostkeys/`.
pub const HOST_KEY: (&str, &str) = (
    "ssh-ed25519",
    "AAAAC3NzaC1lZDI1NTE5AAAAIFakeGceHostKeyForKgenvTests0000000000000000",
);
/// The project the default image lives in.
pub const IMAGE_PROJECT: &str = "deeplearning-platform-release";
/// Self links use the public root, as the real service does.
const SELF_ROOT: &str = "https://www.googleapis.com/compute/v1/";

/// Ten zones over three regions: the capacity scenarios' world (issue 14), shared by
/// `tests/gce_capacity.rs` and the `gce_up` bench.
pub const TEN_ZONES: [&str; 10] = [
    "us-central1-a",
    "us-central1-b",
    "us-central1-c",
    "us-central1-f",
    "us-east1-b",
    "us-east1-c",
    "us-east1-d",
    "europe-west4-a",
    "europe-west4-b",
    "europe-west4-c",
];

/// How the fake behaves. Change it with [`FakeGce::configure`].
#[derive(Debug, Clone)]
pub struct Config {
    /// The accepted bearer token.
    pub token: String,
    /// Added to every request (network round trip).
    pub request_latency: Duration,
    /// Operation durations by method id (`compute.instances.insert`).
    pub op_latency: BTreeMap<String, Duration>,
    /// Duration of other operations.
    pub default_op_latency: Duration,
    /// The longest a `wait` blocks (the real service: about two minutes).
    pub wait_cap: Duration,
    /// Time from RUNNING until `hostkeys/` appears.
    pub hostkey_delay: Duration,
    /// Zones and the accelerator types each offers.
    pub zones: BTreeMap<String, BTreeSet<String>>,
    /// Machine-type families offered in every zone.
    pub machine_type_prefixes: Vec<String>,
    /// Images by (project, family): (name, minimum disk GB).
    pub images: BTreeMap<(String, String), (String, u64)>,
    /// Zones out of capacity: their inserts end in ZONE_RESOURCE_POOL_EXHAUSTED_WITH_DETAILS
    /// and their `instances.start` in ZONE_RESOURCE_POOL_EXHAUSTED (the instance stays
    /// TERMINATED), as a zone without capacity refuses both.
    pub stockout_zones: BTreeSet<String>,
    /// Whether a stockout leaves a TERMINATED instance behind for good (it sometimes does).
    pub half_made_on_stockout: bool,
    /// When set, capacity comes back everywhere once that many inserts (or starts) ended in
    /// a stockout:
    /// [`Self::stockout_zones`] is cleared after the last of them (a capacity wait that
    /// succeeds in a later round, with no timing involved).
    pub clear_stockouts_after_inserts: Option<u32>,
    /// Regional quotas already used up: region → (metric, limit). An insert in the region
    /// is accepted and its operation ends in QUOTA_EXCEEDED with the region's quotaInfo.
    pub region_quotas: BTreeMap<String, (String, f64)>,
    /// How many zones one page of an aggregated list holds (the rest follow by
    /// `nextPageToken`).
    pub aggregated_page_size: usize,
    /// How long a failing insert shows its instance PROVISIONING before the operation ends
    /// with the error.
    pub failed_insert_window: Duration,
    /// How long the instance of a failed insert lingers after its operation ended DONE with
    /// the error, before GCE removes it (unless the fault leaves it for good).
    pub failed_insert_linger: Duration,
    /// The status a failed insert's instance lingers in (GCE has been seen showing STAGING
    /// after the stockout error; lupinemachines/lupine#741).
    pub failed_insert_linger_status: String,
    /// When set, a lingering failed instance vanishes as soon as that many `instances.get`
    /// have shown it, instead of after [`Self::failed_insert_linger`]: puts the vanishing
    /// exactly between a client's GET and its next call, with no timing involved.
    pub failed_insert_vanishes_after_gets: Option<u32>,
    /// Time from a snapshot's operation being DONE until the snapshot is READY (UPLOADING
    /// meanwhile).
    pub snapshot_ready_delay: Duration,
    /// The project number in the default service account's email.
    pub project_number: String,
    /// The external IP every running instance gets (the end-to-end tests: `127.0.0.1`, so
    /// kgenv reaches a local sshd); `None`: a fresh 203.0.113.x address per start.
    pub fixed_nat_ip: Option<String>,
    /// The host key instances publish in `hostkeys/` (type, base64); default [`HOST_KEY`].
    pub host_key: (String, String),
    /// Plays the guest agent: after every instance change, the `ssh-keys` metadata of the
    /// running instances is written to this file (one public key a line), which the
    /// end-to-end tests' sshd uses as its `AuthorizedKeysFile`.
    pub guest_authorized_keys: Option<std::path::PathBuf>,
    /// Plays udev on the instance for attached disks: `None` (the default) touches no file.
    pub device_links: Option<DeviceLinks>,
}

/// What [`Config::device_links`] links: a disk attached under a device name in `devices`
/// gets `dir/google-NAME` (GCE's udev rule names the link after the device name) as a
/// symlink to that block device when its attach is DONE; the link is removed when the disk
/// is detached or its instance deleted. The end-to-end tests map the data disk's device
/// name to a loop device, so kgenv's host step finds a real disk where it looks on a VM.
#[derive(Debug, Clone)]
pub struct DeviceLinks {
    /// The directory the links go in (`/dev/disk/by-id` on a VM); made when missing.
    pub dir: std::path::PathBuf,
    /// Device name → the block device its link points at.
    pub devices: BTreeMap<String, std::path::PathBuf>,
}

impl DeviceLinks {
    /// The link for `device`, with its target, when `device` is one this fake links.
    fn link(&self, device: &str) -> Option<(std::path::PathBuf, &std::path::Path)> {
        let target = self.devices.get(device)?;
        Some((self.dir.join(format!("google-{device}")), target.as_path()))
    }

    /// `ln -sfn TARGET DIR/google-DEVICE`, as udev does once the disk shows up.
    fn attached(&self, device: &str) {
        let Some((link, target)) = self.link(device) else {
            return;
        };
        std::fs::create_dir_all(&self.dir)
            .unwrap_or_else(|e| panic!("device link directory {}: {e}", self.dir.display()));
        match std::fs::remove_file(&link) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => panic!("removing the old device link {}: {e}", link.display()),
        }
        std::os::unix::fs::symlink(target, &link)
            .unwrap_or_else(|e| panic!("device link {}: {e}", link.display()));
    }

    /// Removes `DIR/google-DEVICE` when it is this fake's link (the disk went away).
    fn detached(&self, device: &str) {
        let Some((link, target)) = self.link(device) else {
            return;
        };
        if std::fs::read_link(&link).is_ok_and(|t| t == target) {
            std::fs::remove_file(&link)
                .unwrap_or_else(|e| panic!("removing the device link {}: {e}", link.display()));
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        let gpus: BTreeSet<String> = ["nvidia-tesla-t4", "nvidia-l4", "nvidia-tesla-v100"]
            .into_iter()
            .map(String::from)
            .collect();
        let zones = [
            "us-central1-a",
            "us-central1-b",
            "us-central1-c",
            "europe-west4-a",
            "europe-west4-b",
            "asia-east1-a",
        ]
        .into_iter()
        .map(|z| (z.to_string(), gpus.clone()))
        .collect();
        let images = BTreeMap::from([(
            (
                IMAGE_PROJECT.to_string(),
                kgenv_core::spec::DEFAULT_IMAGE_FAMILY.to_string(),
            ),
            (
                format!("{}-v20261110", kgenv_core::spec::DEFAULT_IMAGE_FAMILY),
                50,
            ),
        )]);
        Self {
            token: TOKEN.into(),
            request_latency: Duration::ZERO,
            op_latency: BTreeMap::new(),
            default_op_latency: Duration::from_millis(60),
            wait_cap: Duration::from_secs(10),
            hostkey_delay: Duration::from_millis(200),
            zones,
            machine_type_prefixes: ["n1-standard-", "n1-highmem-", "g2-standard-", "a2-highgpu-"]
                .into_iter()
                .map(String::from)
                .collect(),
            images,
            stockout_zones: BTreeSet::new(),
            half_made_on_stockout: false,
            clear_stockouts_after_inserts: None,
            region_quotas: BTreeMap::new(),
            aggregated_page_size: 4,
            failed_insert_window: Duration::from_millis(150),
            failed_insert_linger: Duration::from_millis(300),
            failed_insert_linger_status: "STAGING".into(),
            failed_insert_vanishes_after_gets: None,
            snapshot_ready_delay: Duration::from_millis(100),
            project_number: "123456789012".into(),
            fixed_nat_ip: None,
            host_key: (HOST_KEY.0.to_string(), HOST_KEY.1.to_string()),
            guest_authorized_keys: None,
            device_links: None,
        }
    }
}

/// A fault to inject on the next calls of a method.
#[derive(Debug, Clone, PartialEq)]
pub enum Fault {
    /// Answer with this HTTP error before doing anything.
    Http {
        /// HTTP status.
        status: u16,
        /// Google's legacy reason (`backendError`, `rateLimitExceeded`).
        reason: String,
        /// Message.
        message: String,
        /// `Retry-After` seconds.
        retry_after: Option<u64>,
    },
    /// Do the work, then answer with this HTTP status (the answer was lost).
    AfterApply {
        /// HTTP status.
        status: u16,
    },
    /// Accept the call; its operation ends DONE with this error.
    OperationError {
        /// `error.errors[].code`.
        code: String,
        /// Message.
        message: String,
        /// `httpErrorStatusCode`.
        http_status: i32,
        /// `errorDetails[].quotaInfo`.
        quota_info: Option<Value>,
        /// For inserts: the instance stays behind (TERMINATED) after the failure.
        leave_instance: bool,
    },
}

impl Fault {
    /// 503 backendError.
    pub fn unavailable() -> Self {
        Self::Http {
            status: 503,
            reason: "backendError".into(),
            message: "The service is currently unavailable.".into(),
            retry_after: None,
        }
    }
    /// 429 with an optional `Retry-After`.
    pub fn too_many(retry_after: Option<u64>) -> Self {
        Self::Http {
            status: 429,
            reason: "rateLimitExceeded".into(),
            message: "Rate Limit Exceeded".into(),
            retry_after,
        }
    }
    /// 403 rateLimitExceeded (Compute's per-minute API quota).
    pub fn rate_limit_403() -> Self {
        Self::Http {
            status: 403,
            reason: "rateLimitExceeded".into(),
            message: "Quota exceeded for quota metric 'Queries' and limit 'Queries per minute' of service 'compute.googleapis.com'".into(),
            retry_after: None,
        }
    }
    /// 403 forbidden.
    pub fn forbidden() -> Self {
        Self::Http {
            status: 403,
            reason: "forbidden".into(),
            message: "Required 'compute.instances.create' permission for 'projects/my-project'"
                .into(),
            retry_after: None,
        }
    }
    /// An operation ending in QUOTA_EXCEEDED, for `metric` in `region` (`None`: global).
    pub fn quota(metric: &str, limit: f64, region: Option<&str>) -> Self {
        let where_ = region.map_or("globally".to_string(), |r| format!("in region {r}"));
        let dims = region.map_or(json!({}), |r| json!({"region": r}));
        Self::OperationError {
            code: "QUOTA_EXCEEDED".into(),
            message: format!("Quota '{metric}' exceeded.  Limit: {limit:.1} {where_}."),
            http_status: 403,
            quota_info: Some(
                json!({"metricName": format!("compute.googleapis.com/{}", metric.to_ascii_lowercase()), "limitName": format!("{}-per-project", metric.replace('_', "-")), "dimensions": dims, "limit": limit}),
            ),
            leave_instance: false,
        }
    }
    /// An operation that fails after the instance appeared, leaving it behind.
    pub fn fails_after_appearing() -> Self {
        Self::OperationError {
            code: "RESOURCE_OPERATION_RATE_EXCEEDED".into(),
            message: "Operation rate exceeded for resource 'projects/my-project/zones/us-central1-a/instances/kg'. Too frequent operations from the source resource.".into(),
            http_status: 400,
            quota_info: None,
            leave_instance: true,
        }
    }
}

/// One request the fake received.
#[derive(Debug, Clone)]
pub struct Recorded {
    /// HTTP method.
    pub http_method: String,
    /// Path (under the service root).
    pub path: String,
    /// The discovery method id, or `?` when it matched none.
    pub method_id: String,
    /// Decoded query.
    pub query: Vec<(String, String)>,
    /// JSON body.
    pub body: Option<Value>,
    /// The status answered.
    pub status: u16,
    /// When it arrived and was answered, since the fake started.
    pub start: Duration,
    /// When it was answered.
    pub end: Duration,
}

impl Recorded {
    /// The `requestId` query parameter.
    pub fn request_id(&self) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == "requestId")
            .map(|(_, v)| v.as_str())
    }
    /// Whether this call asks for a change (not a read, not a wait).
    pub fn is_mutating(&self) -> bool {
        is_mutating_id(&self.method_id, &self.http_method)
    }
}

fn is_mutating_id(id: &str, http_method: &str) -> bool {
    http_method != "GET" && !id.ends_with(".wait")
}

type IKey = (String, String, String);
type FKey = (String, String);

#[derive(Debug, Clone)]
struct Inst {
    body: Value,
    status: String,
    nat_ip: Option<String>,
    running_since: Option<Instant>,
    id: u64,
    fp: u64,
    /// Every status it has been in, in order (see [`FakeGce::status_history`]).
    history: Vec<String>,
    /// A failed insert's instance: when GCE removes it.
    vanish: Option<Vanish>,
    /// When it last became RUNNING and TERMINATED (`lastStartTimestamp`,
    /// `lastStopTimestamp`).
    last_start: Option<Instant>,
    last_stop: Option<Instant>,
}

/// When a failed insert's lingering instance goes.
#[derive(Debug, Clone, Copy)]
enum Vanish {
    /// At this time.
    At(Instant),
    /// Once this many more `instances.get` have shown it.
    AfterGets(u32),
}

impl Inst {
    fn new(body: Value, status: &str, id: u64) -> Self {
        Self {
            body,
            status: status.into(),
            nat_ip: None,
            running_since: None,
            id,
            fp: 1,
            history: vec![status.into()],
            vanish: None,
            last_start: (status == "RUNNING").then(Instant::now),
            last_stop: None,
        }
    }

    /// Moves to `status`, recording it when it changed.
    fn set_status(&mut self, status: &str) {
        if self.status != status {
            self.status = status.into();
            self.history.push(status.into());
            match status {
                "RUNNING" => self.last_start = Some(Instant::now()),
                "TERMINATED" => self.last_stop = Some(Instant::now()),
                _ => {}
            }
        }
    }
}

/// Statuses in which GCE refuses most calls on an instance with 400 `resourceNotReady`:
/// it is between two states.
const TRANSITIONAL: [&str; 6] = [
    "PROVISIONING",
    "STAGING",
    "STOPPING",
    "SUSPENDING",
    "PENDING_STOP",
    "REPAIRING",
];

/// A persistent disk.
#[derive(Debug, Clone)]
struct DiskRes {
    /// What the insert asked (name, labels, sourceSnapshot), without output fields.
    labels: Value,
    disk_type: String,
    size_gb: u64,
    status: String,
    /// Instances using it, as `projects/p/zones/z/instances/n`.
    users: Vec<String>,
    id: u64,
    source_snapshot: Option<(String, u64)>,
    /// Opaque content: `image-…` for a boot disk, `blank-…` for a new disk, copied from the
    /// snapshot for a restored one.
    data: String,
}

/// A snapshot.
#[derive(Debug, Clone)]
struct SnapRes {
    labels: Value,
    id: u64,
    source_disk: String,
    source_disk_id: u64,
    size_gb: u64,
    data: String,
    /// When it is READY; `None` while its operation runs.
    ready_at: Option<Instant>,
}

#[derive(Debug, Clone)]
enum Effect {
    Insert {
        key: IKey,
        leave_on_error: bool,
    },
    InsertDisk(IKey),
    DeleteDisk(IKey),
    ResizeDisk(IKey, u64),
    AttachDisk(IKey, Value),
    DetachDisk(IKey, String),
    CreateSnapshot(FKey),
    DeleteSnapshot(FKey),
    SetMachineType(IKey, String),
    SetAccelerators(IKey, Value),
    SetServiceAccount(IKey, Value),
    Delete(IKey),
    Stop(IKey),
    Start(IKey),
    /// GCE's own stop of a spot VM (`compute.instances.preempted`).
    Preempted(IKey),
    /// A call that changes nothing (`start` on a RUNNING instance, `stop` on a TERMINATED one).
    Nothing,
    SetMetadata(IKey, Value),
    SetTags(IKey, Value),
    SetLabels(IKey, Value),
    InsertFirewall(FKey, Value),
    PatchFirewall(FKey, Value),
    DeleteFirewall(FKey),
}

#[derive(Debug, Clone)]
struct Op {
    id: u64,
    name: String,
    project: String,
    zone: Option<String>,
    op_type: String,
    target: String,
    start: Instant,
    done_at: Instant,
    effect: Effect,
    error: Option<Fault>,
    finalized: bool,
    /// The instance's status before the call: a failed stop, start or delete leaves it
    /// there (GCE rolls the instance back, it does not stay STOPPING).
    prior_status: Option<String>,
    /// Who started it (`system` for GCE's own operations, such as a preemption).
    user: String,
    /// `statusMessage`, when GCE sets one.
    status_message: Option<String>,
    /// The target instance's id (`targetId`), when the target is one that exists.
    target_id: Option<u64>,
}

/// An operation the fake ran, for the benchmark's figures.
#[derive(Debug, Clone)]
pub struct OpRecord {
    /// `insert`, `delete`, ...
    pub op_type: String,
    /// The target resource.
    pub target: String,
    /// How long it ran.
    pub duration: Duration,
    /// Whether it failed.
    pub failed: bool,
}

struct World {
    config: Config,
    instances: BTreeMap<IKey, Inst>,
    firewalls: BTreeMap<FKey, Value>,
    disks: BTreeMap<IKey, DiskRes>,
    snapshots: BTreeMap<FKey, SnapRes>,
    ops: BTreeMap<String, Op>,
    request_ids: BTreeMap<String, String>,
    log: Vec<Recorded>,
    faults: Vec<(String, u32, Fault)>,
    violations: Vec<String>,
    next_id: u64,
    /// Inserts that ended in a stockout so far.
    stockout_inserts: u32,
}

struct Shared {
    world: Mutex<World>,
    disc: Arc<Discovery>,
    epoch: Instant,
}

fn lock(m: &Mutex<World>) -> MutexGuard<'_, World> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Google's JSON error body.
pub fn google_error(status: u16, reason: &str, message: &str) -> Value {
    json!({"error": {"code": status, "message": message, "errors": [{"message": message, "domain": "global", "reason": reason}]}})
}

enum Outcome {
    Reply(u16, Value, Option<u64>),
    Wait { op: String, until: Instant },
}

fn not_found(what: &str) -> Outcome {
    Outcome::Reply(
        404,
        google_error(
            404,
            "notFound",
            &format!("The resource '{what}' was not found"),
        ),
        None,
    )
}

fn bad_request(message: &str) -> Outcome {
    Outcome::Reply(400, google_error(400, "invalid", message), None)
}

impl World {
    /// `acceleratorTypes.aggregatedList` / `machineTypes.aggregatedList` as GCE answers
    /// them: every zone is a scope `zones/Z`, holding the matching types or, without any,
    /// a `NO_RESULTS_ON_PAGE` warning; zones come [`Config::aggregated_page_size`] a page,
    /// the rest behind `nextPageToken`. `filter` is honoured for `name = "X"` / `name=X`.
    fn aggregated_list(&self, id: &str, project: &str, query: &[(String, String)]) -> Outcome {
        let accelerators = id.starts_with("compute.acceleratorTypes");
        let q = |k: &str| query.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        let wanted = match q("filter") {
            None => None,
            Some(f) => {
                let Some(v) = f.trim().strip_prefix("name").map(str::trim_start) else {
                    return bad_request(&format!("Invalid value for field 'filter': '{f}'. The fake knows only name filters."));
                };
                let Some(v) = v.strip_prefix('=') else {
                    return bad_request(&format!("Invalid value for field 'filter': '{f}'."));
                };
                Some(v.trim().trim_matches('"').to_string())
            }
        };
        let start: usize = match q("pageToken") {
            None => 0,
            Some(t) => match t.strip_prefix("page-").and_then(|n| n.parse().ok()) {
                Some(n) => n,
                None => {
                    return bad_request(&format!("Invalid value for field 'pageToken': '{t}'."))
                }
            },
        };
        let zones: Vec<&String> = self.config.zones.keys().collect();
        let size = self.config.aggregated_page_size.max(1);
        let mut items = serde_json::Map::new();
        for zone in zones.iter().skip(start).take(size) {
            let names: Vec<String> = if accelerators {
                self.config.zones[*zone].iter().cloned().collect()
            } else {
                // Machine types by family: the wanted name when its family is offered.
                wanted
                    .iter()
                    .filter(|t| {
                        self.config
                            .machine_type_prefixes
                            .iter()
                            .any(|p| t.starts_with(p.as_str()))
                    })
                    .cloned()
                    .collect()
            };
            let names: Vec<String> = names
                .into_iter()
                .filter(|n| wanted.as_ref().is_none_or(|w| w == n))
                .collect();
            let (key, kind, coll) = if accelerators {
                (
                    "acceleratorTypes",
                    "compute#acceleratorType",
                    "acceleratorTypes",
                )
            } else {
                ("machineTypes", "compute#machineType", "machineTypes")
            };
            let scope = format!("zones/{zone}");
            let v = if names.is_empty() {
                json!({"warning": {"code": "NO_RESULTS_ON_PAGE",
                    "message": format!("There are no results for scope '{scope}' on this page."),
                    "data": [{"key": "scope", "value": scope}]}})
            } else {
                let list: Vec<Value> = names
                    .iter()
                    .map(|n| json!({"kind": kind, "name": n, "zone": format!("{SELF_ROOT}projects/{project}/zones/{zone}"),
                        "selfLink": format!("{SELF_ROOT}projects/{project}/zones/{zone}/{coll}/{n}")}))
                    .collect();
                json!({ key: list })
            };
            items.insert(scope, v);
        }
        let mut body = json!({
            "kind": if accelerators { "compute#acceleratorTypeAggregatedList" } else { "compute#machineTypeAggregatedList" },
            "id": format!("projects/{project}/aggregated/{}", if accelerators { "acceleratorTypes" } else { "machineTypes" }),
            "items": items,
            "selfLink": format!("{SELF_ROOT}projects/{project}/aggregated/{}", if accelerators { "acceleratorTypes" } else { "machineTypes" }),
        });
        if start + size < zones.len() {
            body["nextPageToken"] = json!(format!("page-{}", start + size));
        }
        Outcome::Reply(200, body, None)
    }

    fn id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    fn nat_ip(&mut self) -> String {
        let n = self.id();
        match &self.config.fixed_nat_ip {
            Some(ip) => ip.clone(),
            None => format!("203.0.113.{}", n % 250 + 1),
        }
    }

    /// The guest agent's part: `ssh-keys` of running instances into the authorized keys file.
    fn sync_guest_keys(&self) {
        let Some(path) = &self.config.guest_authorized_keys else {
            return;
        };
        let mut lines = String::new();
        for i in self.instances.values().filter(|i| i.status == "RUNNING") {
            let items = i.body["metadata"]["items"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            for item in items.iter().filter(|it| it["key"] == "ssh-keys") {
                for l in item["value"].as_str().unwrap_or_default().lines() {
                    // `user:ssh-ed25519 AAAA… comment` → the key part.
                    if let Some((_, key)) = l.split_once(':') {
                        lines.push_str(key.trim());
                        lines.push('\n');
                    }
                }
            }
        }
        std::fs::write(path, lines).expect("guest authorized_keys file");
    }

    /// Brings the world to `now`: ends due operations and removes due lingering instances,
    /// earliest first, then sets the in-between status of what is still under way.
    fn advance(&mut self, now: Instant) {
        loop {
            let op = self
                .ops
                .values()
                .filter(|o| !o.finalized && o.done_at <= now)
                .min_by_key(|o| o.done_at)
                .map(|o| (o.done_at, o.name.clone()));
            let gone = self
                .instances
                .iter()
                .filter_map(|(k, i)| match i.vanish {
                    Some(Vanish::At(t)) if t <= now => Some((t, k.clone())),
                    _ => None,
                })
                .min_by_key(|(t, _)| *t);
            match (op, gone) {
                (None, None) => break,
                (Some((t, _)), Some((g, key))) if g < t => self.vanish(&key),
                (None, Some((_, key))) => self.vanish(&key),
                (Some((_, name)), _) => self.finish_op(&name),
            }
        }
        self.update_phases(now);
    }

    /// GCE removes a failed insert's lingering instance (and its auto-delete boot disk).
    fn vanish(&mut self, key: &IKey) {
        self.remove_instance(key);
        self.sync_guest_keys();
    }

    /// The status an instance shows while its insert or start runs: PROVISIONING for the
    /// first half, STAGING for the second (a failing one never gets past PROVISIONING),
    /// as GCE's lifecycle goes PROVISIONING → STAGING → RUNNING
    /// (https://cloud.google.com/compute/docs/instances/instance-lifecycle).
    fn update_phases(&mut self, now: Instant) {
        let phases: Vec<(IKey, &'static str)> = self
            .ops
            .values()
            .filter(|o| !o.finalized)
            .filter_map(|o| {
                let key = match &o.effect {
                    Effect::Insert { key, .. } | Effect::Start(key) => key.clone(),
                    _ => return None,
                };
                let total = o.done_at.saturating_duration_since(o.start);
                let elapsed = now.saturating_duration_since(o.start);
                let staging = o.error.is_none() && elapsed * 2 >= total;
                Some((key, if staging { "STAGING" } else { "PROVISIONING" }))
            })
            .collect();
        for (key, status) in phases {
            if let Some(i) = self.instances.get_mut(&key) {
                i.set_status(status);
            }
        }
    }

    /// Ends one operation: checks it again as GCE does when it runs, rolls a failed stop,
    /// start or delete back to the instance's earlier status, and applies its effect.
    fn finish_op(&mut self, name: &str) {
        let Some(op) = self.ops.get_mut(name) else {
            return;
        };
        op.finalized = true;
        let (effect, failed, done_at) = (op.effect.clone(), op.error.is_some(), op.done_at);
        let prior = op.prior_status.clone();
        // GCE checks an operation again when it runs: an attach accepted while another
        // attach of the same disk was under way fails once that one has attached it,
        // and so does an insert of a name another insert took meanwhile.
        let conflict = match &effect {
            Effect::AttachDisk(_, attached) if !failed => {
                let source = attached["source"].as_str().unwrap_or_default();
                disk_key_of(source)
                    .and_then(|dk| self.disks.get(&dk))
                    .and_then(|d| d.users.first())
                    .map(|user| Fault::OperationError {
                        code: "RESOURCE_IN_USE_BY_ANOTHER_RESOURCE".into(),
                        message: format!(
                            "The disk resource '{}' is already being used by '{user}'",
                            &source[source.find("projects/").unwrap_or(0)..]
                        ),
                        http_status: 400,
                        quota_info: None,
                        leave_instance: false,
                    })
            }
            // Two inserts of one rule accepted side by side: the later one to run
            // finds the name taken.
            Effect::InsertFirewall(key, _) if !failed && self.firewalls.contains_key(key) => {
                Some(Fault::OperationError {
                    code: "RESOURCE_ALREADY_EXISTS".into(),
                    message: format!(
                        "The resource 'projects/{}/global/firewalls/{}' already exists",
                        key.0, key.1
                    ),
                    http_status: 409,
                    quota_info: None,
                    leave_instance: false,
                })
            }
            // A delete accepted while the instance was there, which GCE removed meanwhile
            // (a failed insert's leftover): the operation ends with RESOURCE_NOT_FOUND, as
            // seen in cloudfoundry/bosh-google-cpi-release#298.
            Effect::Delete(key) if !failed && !self.instances.contains_key(key) => {
                Some(Fault::OperationError {
                    code: "RESOURCE_NOT_FOUND".into(),
                    message: format!("The resource '{}' was not found", ipath_of(key)),
                    http_status: 404,
                    quota_info: None,
                    leave_instance: false,
                })
            }
            _ => None,
        };
        let failed = failed || conflict.is_some();
        if let Some(e) = conflict {
            if let Some(op) = self.ops.get_mut(name) {
                op.error = Some(e);
            }
        }
        if failed {
            if let (
                Some(prior),
                Effect::Stop(key)
                | Effect::Start(key)
                | Effect::Delete(key)
                | Effect::Preempted(key),
            ) = (&prior, &effect)
            {
                if let Some(i) = self.instances.get_mut(key) {
                    i.set_status(prior);
                }
            }
        }
        self.finalize(effect, failed, done_at);
        self.sync_guest_keys();
    }

    fn finalize(&mut self, effect: Effect, failed: bool, at: Instant) {
        match effect {
            Effect::Insert {
                key,
                leave_on_error,
            } => {
                if failed {
                    let linger_status = self.config.failed_insert_linger_status.clone();
                    let vanish = match self.config.failed_insert_vanishes_after_gets {
                        Some(n) if n > 0 => Vanish::AfterGets(n),
                        _ => Vanish::At(at + self.config.failed_insert_linger),
                    };
                    if let Some(i) = self.instances.get_mut(&key) {
                        if leave_on_error {
                            // Left behind for good: someone must delete it.
                            i.set_status("TERMINATED");
                        } else {
                            // Shown a while longer, then removed by GCE.
                            i.set_status(&linger_status);
                            i.vanish = Some(vanish);
                        }
                    }
                } else {
                    let ip = self.nat_ip();
                    if let Some(i) = self.instances.get_mut(&key) {
                        i.set_status("STAGING");
                        i.set_status("RUNNING");
                        i.nat_ip = Some(ip);
                        i.running_since = Some(at);
                    }
                }
            }
            // A failed create leaves nothing behind.
            Effect::InsertDisk(key) if failed => {
                self.disks.remove(&key);
            }
            Effect::CreateSnapshot(key) if failed => {
                self.snapshots.remove(&key);
            }
            _ if failed => {}
            Effect::Delete(key) => {
                self.remove_instance(&key);
            }
            Effect::InsertDisk(key) => {
                if let Some(d) = self.disks.get_mut(&key) {
                    d.status = "READY".into();
                }
            }
            Effect::DeleteDisk(key) => {
                self.disks.remove(&key);
            }
            Effect::ResizeDisk(key, size) => {
                if let Some(d) = self.disks.get_mut(&key) {
                    d.size_gb = size;
                }
            }
            Effect::AttachDisk(key, attached) => {
                if let (Some(links), Some(device)) =
                    (&self.config.device_links, attached["deviceName"].as_str())
                {
                    links.attached(device);
                }
                let user = ipath_of(&key);
                if let Some(dk) = disk_key_of(attached["source"].as_str().unwrap_or_default()) {
                    if let Some(d) = self.disks.get_mut(&dk) {
                        d.users.push(user);
                    }
                }
                if let Some(i) = self.instances.get_mut(&key) {
                    match i.body["disks"].as_array_mut() {
                        Some(list) => list.push(attached),
                        None => i.body["disks"] = json!([attached]),
                    }
                }
            }
            Effect::DetachDisk(key, device) => {
                if let Some(links) = &self.config.device_links {
                    links.detached(&device);
                }
                let user = ipath_of(&key);
                let mut source = None;
                if let Some(list) = self
                    .instances
                    .get_mut(&key)
                    .and_then(|i| i.body["disks"].as_array_mut())
                {
                    if let Some(pos) = list.iter().position(|d| d["deviceName"] == device) {
                        source = list.remove(pos)["source"].as_str().map(str::to_string);
                    }
                }
                if let Some(d) = source
                    .as_deref()
                    .and_then(disk_key_of)
                    .and_then(|k| self.disks.get_mut(&k))
                {
                    d.users.retain(|u| *u != user);
                }
            }
            Effect::CreateSnapshot(key) => {
                let ready = at + self.config.snapshot_ready_delay;
                if let Some(snap) = self.snapshots.get_mut(&key) {
                    snap.ready_at = Some(ready);
                }
            }
            Effect::DeleteSnapshot(key) => {
                self.snapshots.remove(&key);
            }
            Effect::SetMachineType(key, mt) => {
                if let Some(i) = self.instances.get_mut(&key) {
                    i.body["machineType"] = json!(mt);
                }
            }
            Effect::SetAccelerators(key, accs) => {
                if let Some(i) = self.instances.get_mut(&key) {
                    i.body["guestAccelerators"] = accs;
                }
            }
            Effect::SetServiceAccount(key, account) => {
                if let Some(i) = self.instances.get_mut(&key) {
                    i.body["serviceAccounts"] = json!([account]);
                }
            }
            Effect::Nothing => {}
            Effect::Stop(key) => {
                if let Some(i) = self.instances.get_mut(&key) {
                    i.set_status("TERMINATED");
                    i.nat_ip = None;
                    i.running_since = None;
                }
            }
            Effect::Preempted(key) => {
                let delete = self
                    .instances
                    .get(&key)
                    .is_some_and(|i| i.body["scheduling"]["instanceTerminationAction"] == "DELETE");
                if delete {
                    self.remove_instance(&key);
                } else if let Some(i) = self.instances.get_mut(&key) {
                    // Stopped, disks kept: the external address goes with the VM.
                    i.set_status("TERMINATED");
                    i.nat_ip = None;
                    i.running_since = None;
                }
            }
            Effect::Start(key) => {
                let ip = self.nat_ip();
                if let Some(i) = self.instances.get_mut(&key) {
                    i.set_status("STAGING");
                    i.set_status("RUNNING");
                    i.nat_ip = Some(ip);
                    i.running_since = Some(at);
                }
            }
            Effect::SetMetadata(key, items) => {
                if let Some(i) = self.instances.get_mut(&key) {
                    i.body["metadata"] = json!({"items": items});
                    i.fp += 1;
                }
            }
            Effect::SetTags(key, items) => {
                if let Some(i) = self.instances.get_mut(&key) {
                    i.body["tags"] = json!({"items": items});
                    i.fp += 1;
                }
            }
            Effect::SetLabels(key, labels) => {
                if let Some(i) = self.instances.get_mut(&key) {
                    i.body["labels"] = labels;
                    i.fp += 1;
                }
            }
            Effect::InsertFirewall(key, body) => {
                self.firewalls.insert(key, body);
            }
            Effect::PatchFirewall(key, patch) => {
                if let (Some(fw), Some(p)) = (self.firewalls.get_mut(&key), patch.as_object()) {
                    for (k, v) in p {
                        fw[k] = v.clone();
                    }
                }
            }
            Effect::DeleteFirewall(key) => {
                self.firewalls.remove(&key);
            }
        }
    }

    fn op_json(&self, name: &str, now: Instant) -> Value {
        let Some(op) = self.ops.get(name) else {
            return json!({});
        };
        let total = op.done_at.saturating_duration_since(op.start);
        let elapsed = now.saturating_duration_since(op.start);
        let status = if op.finalized || elapsed >= total {
            "DONE"
        } else if elapsed < total / 4 {
            "PENDING"
        } else {
            "RUNNING"
        };
        let scope = match &op.zone {
            Some(z) => format!("projects/{}/zones/{z}", op.project),
            None => format!("projects/{}/global", op.project),
        };
        let progress = if status == "DONE" {
            100
        } else {
            (elapsed.as_millis() * 100 / total.as_millis().max(1)) as u64
        };
        let mut v = json!({
            "kind": "compute#operation",
            "id": op.id.to_string(),
            "name": op.name,
            "operationType": op.op_type,
            "targetLink": format!("{SELF_ROOT}{}", op.target),
            "status": status,
            "progress": progress,
            "user": op.user,
            "selfLink": format!("{SELF_ROOT}{scope}/operations/{}", op.name),
        });
        if let Some(m) = &op.status_message {
            v["statusMessage"] = json!(m);
        }
        v["insertTime"] = json!(rfc3339(op.start));
        v["creationTimestamp"] = json!(rfc3339(op.start));
        v["startTime"] = json!(rfc3339(op.start));
        if status == "DONE" {
            v["endTime"] = json!(rfc3339(op.done_at.min(now)));
        }
        if let Some(t) = op.target_id {
            v["targetId"] = json!(t.to_string());
        }
        if let Some(z) = &op.zone {
            v["zone"] = json!(format!("{SELF_ROOT}projects/{}/zones/{z}", op.project));
        }
        if status == "DONE" {
            if let Some(Fault::OperationError {
                code,
                message,
                http_status,
                quota_info,
                ..
            }) = &op.error
            {
                let mut item = json!({"code": code, "message": message});
                if let Some(q) = quota_info {
                    item["errorDetails"] = json!([{"quotaInfo": q}]);
                }
                v["error"] = json!({"errors": [item]});
                v["httpErrorStatusCode"] = json!(http_status);
                v["httpErrorMessage"] = json!(if *http_status == 403 {
                    "FORBIDDEN"
                } else if *http_status == 503 {
                    "SERVICE UNAVAILABLE"
                } else {
                    "BAD REQUEST"
                });
            }
        }
        v
    }

    #[allow(clippy::too_many_arguments)] // one call site per operation kind; a struct would only rename them
    fn new_op(
        &mut self,
        method_id: &str,
        project: &str,
        zone: Option<&str>,
        op_type: &str,
        target: String,
        effect: Effect,
        error: Option<Fault>,
        now: Instant,
    ) -> String {
        let id = self.id();
        let name = format!("operation-{id}-{:08x}", fastrand_like(id));
        let target_id = ikey_of(&target).and_then(|k| self.instances.get(&k).map(|i| i.id));
        let latency = self
            .config
            .op_latency
            .get(method_id)
            .copied()
            .unwrap_or(self.config.default_op_latency);
        self.ops.insert(
            name.clone(),
            Op {
                id,
                name: name.clone(),
                project: project.into(),
                zone: zone.map(str::to_string),
                op_type: op_type.into(),
                target,
                start: now,
                done_at: now + latency,
                effect,
                error,
                finalized: false,
                prior_status: None,
                user: "kgenv-tests@example.com".into(),
                status_message: None,
                target_id,
            },
        );
        name
    }

    /// Records the instance's status before an operation on it, for a rollback if it fails.
    fn set_prior(&mut self, op: &str, status: String) {
        if let Some(o) = self.ops.get_mut(op) {
            o.prior_status = Some(status);
        }
    }

    /// An `instances.get` showed `key`: a lingering instance counted down to its vanishing
    /// goes once it has been shown enough times.
    fn shown(&mut self, key: &IKey) {
        let left = match self.instances.get(key).and_then(|i| i.vanish) {
            Some(Vanish::AfterGets(n)) => n.saturating_sub(1),
            _ => return,
        };
        if left == 0 {
            self.vanish(key);
        } else if let Some(i) = self.instances.get_mut(key) {
            i.vanish = Some(Vanish::AfterGets(left));
        }
    }

    fn instance_json(&self, key: &IKey, now: Instant) -> Option<Value> {
        let i = self.instances.get(key)?;
        let (p, z, n) = key;
        let mut v = i.body.clone();
        v["kind"] = json!("compute#instance");
        v["id"] = json!(i.id.to_string());
        v["status"] = json!(i.status);
        v["zone"] = json!(format!("{SELF_ROOT}projects/{p}/zones/{z}"));
        v["selfLink"] = json!(format!("{SELF_ROOT}projects/{p}/zones/{z}/instances/{n}"));
        v["creationTimestamp"] = json!("2026-11-28T10:00:00.000-08:00");
        if let Some(t) = i.last_start {
            v["lastStartTimestamp"] = json!(rfc3339(t));
        }
        if let Some(t) = i.last_stop {
            v["lastStopTimestamp"] = json!(rfc3339(t));
        }
        if let Some(mt) = v["machineType"].as_str() {
            let short = mt.rsplit('/').next().unwrap_or(mt).to_string();
            v["machineType"] = json!(format!(
                "{SELF_ROOT}projects/{p}/zones/{z}/machineTypes/{short}"
            ));
        }
        if let Some(accs) = v.get_mut("guestAccelerators").and_then(Value::as_array_mut) {
            for a in accs {
                let t = a["acceleratorType"]
                    .as_str()
                    .unwrap_or_default()
                    .rsplit('/')
                    .next()
                    .unwrap_or_default()
                    .to_string();
                a["acceleratorType"] = json!(format!(
                    "{SELF_ROOT}projects/{p}/zones/{z}/acceleratorTypes/{t}"
                ));
            }
        }
        let fp = format!("{:016x}", i.fp);
        v["labelFingerprint"] = json!(fp);
        if v.get("metadata").is_none() {
            v["metadata"] = json!({"items": []});
        }
        v["metadata"]["fingerprint"] = json!(fp);
        v["metadata"]["kind"] = json!("compute#metadata");
        if v.get("tags").is_none() {
            v["tags"] = json!({"items": []});
        }
        v["tags"]["fingerprint"] = json!(fp);
        if let Some(nics) = v.get_mut("networkInterfaces").and_then(Value::as_array_mut) {
            for (n, nic) in nics.iter_mut().enumerate() {
                nic["name"] = json!(format!("nic{n}"));
                nic["networkIP"] = json!("10.128.0.2");
                if let Some(acs) = nic.get_mut("accessConfigs").and_then(Value::as_array_mut) {
                    for ac in acs {
                        match &i.nat_ip {
                            Some(ip) => ac["natIP"] = json!(ip),
                            None => {
                                if let Some(o) = ac.as_object_mut() {
                                    o.remove("natIP");
                                }
                            }
                        }
                    }
                }
            }
        }
        let _ = now;
        Some(v)
    }

    /// Removes an instance as GCE deletes one: auto-delete disks go with it, the others are
    /// detached (kept, `users` cleared).
    fn remove_instance(&mut self, key: &IKey) {
        let Some(inst) = self.instances.remove(key) else {
            return;
        };
        let user = ipath_of(key);
        for d in inst.body["disks"].as_array().cloned().unwrap_or_default() {
            if let (Some(links), Some(device)) =
                (&self.config.device_links, d["deviceName"].as_str())
            {
                links.detached(device);
            }
            let Some(dk) = disk_key_of(d["source"].as_str().unwrap_or_default()) else {
                continue;
            };
            if d["autoDelete"] == true {
                self.disks.remove(&dk);
            } else if let Some(disk) = self.disks.get_mut(&dk) {
                disk.users.retain(|u| *u != user);
            }
        }
    }

    fn disk_json(&self, key: &IKey) -> Option<Value> {
        let d = self.disks.get(key)?;
        let (p, z, n) = key;
        let mut v = json!({
            "kind": "compute#disk",
            "id": d.id.to_string(),
            "name": n,
            "sizeGb": d.size_gb.to_string(),
            "type": format!("{SELF_ROOT}projects/{p}/zones/{z}/diskTypes/{}", d.disk_type),
            "zone": format!("{SELF_ROOT}projects/{p}/zones/{z}"),
            "status": d.status,
            "selfLink": format!("{SELF_ROOT}projects/{p}/zones/{z}/disks/{n}"),
            "labelFingerprint": "42WmSpB8rSM=",
            "creationTimestamp": "2026-11-28T10:00:00.000-08:00",
            "physicalBlockSizeBytes": "4096",
        });
        if d.labels.as_object().is_some_and(|o| !o.is_empty()) {
            v["labels"] = d.labels.clone();
        }
        if !d.users.is_empty() {
            v["users"] = json!(d
                .users
                .iter()
                .map(|u| format!("{SELF_ROOT}{u}"))
                .collect::<Vec<_>>());
        }
        if let Some((snap, id)) = &d.source_snapshot {
            v["sourceSnapshot"] = json!(format!("{SELF_ROOT}{snap}"));
            v["sourceSnapshotId"] = json!(id.to_string());
        }
        Some(v)
    }

    fn snapshot_json(&self, key: &FKey, now: Instant) -> Option<Value> {
        let snap = self.snapshots.get(key)?;
        let (p, n) = key;
        let status = match snap.ready_at {
            None => "CREATING",
            Some(t) if now < t => "UPLOADING",
            Some(_) => "READY",
        };
        let mut v = json!({
            "kind": "compute#snapshot",
            "id": snap.id.to_string(),
            "name": n,
            "status": status,
            "sourceDisk": format!("{SELF_ROOT}{}", snap.source_disk),
            "sourceDiskId": snap.source_disk_id.to_string(),
            "diskSizeGb": snap.size_gb.to_string(),
            "storageBytes": "0",
            "selfLink": format!("{SELF_ROOT}projects/{p}/global/snapshots/{n}"),
            "creationTimestamp": "2026-11-28T10:00:00.000-08:00",
        });
        if snap.labels.as_object().is_some_and(|o| !o.is_empty()) {
            v["labels"] = snap.labels.clone();
        }
        Some(v)
    }

    fn take_fault(&mut self, method_id: &str) -> Option<Fault> {
        let hit = self
            .faults
            .iter_mut()
            .find(|(m, n, _)| *n > 0 && (m == method_id || m == "*"))?;
        hit.1 -= 1;
        Some(hit.2.clone())
    }
}

/// `projects/p/zones/z/instances/n` of an instance key.
fn ipath_of((p, z, n): &IKey) -> String {
    format!("projects/{p}/zones/{z}/instances/{n}")
}

/// The instance key of an instance path (`projects/p/zones/z/instances/n`).
fn ikey_of(path: &str) -> Option<IKey> {
    let rest = path.strip_prefix("projects/")?;
    let (p, rest) = rest.split_once("/zones/")?;
    let (z, n) = rest.split_once("/instances/")?;
    (!n.contains('/')).then(|| (p.to_string(), z.to_string(), n.to_string()))
}

/// An instant as GCE writes its timestamps: RFC 3339 with milliseconds, in Pacific time
/// (`2026-12-04T02:02:11.482-08:00`), so clients must convert. (Formatted here rather than
/// with a date crate: this file is shared with crates that do not depend on one.)
fn rfc3339(t: Instant) -> String {
    use std::sync::OnceLock;
    use std::time::{SystemTime, UNIX_EPOCH};
    static ORIGIN: OnceLock<(Instant, SystemTime)> = OnceLock::new();
    let (i0, s0) = *ORIGIN.get_or_init(|| (Instant::now(), SystemTime::now()));
    let wall = if t >= i0 {
        s0 + (t - i0)
    } else {
        s0 - (i0 - t)
    };
    let ms = wall
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_millis() as i64
        - 8 * 3600 * 1000;
    let (secs, milli) = (ms.div_euclid(1000), ms.rem_euclid(1000));
    let (days, sod) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Days since 1970-01-01 to a civil date (Howard Hinnant's `civil_from_days`).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{milli:03}-08:00",
        sod / 3600,
        sod % 3600 / 60,
        sod % 60
    )
}

/// A `list` filter as GCE reads it: each term `(field, operator, value)`, all ANDed.
/// AIP-160 terms (`=`, `!=`) compare exactly; `eq`/`ne` terms match a regular expression
/// against the whole field. `Err` is GCE's complaint about the expression.
fn parse_filter(filter: &str) -> Result<Vec<(String, String, String)>, String> {
    let invalid =
        || format!("Invalid value for field 'filter': '{filter}'. Invalid list filter expression.");
    let text = filter.trim();
    if text.is_empty() {
        return Ok(Vec::new());
    }
    // Parenthesised terms, optionally joined by AND; or a single bare term.
    let mut terms = Vec::new();
    if text.starts_with('(') {
        let mut rest = text;
        while !rest.is_empty() {
            let inner_end = rest.find(')').ok_or_else(invalid)?;
            if !rest.starts_with('(') {
                return Err(invalid());
            }
            terms.push(rest[1..inner_end].trim().to_string());
            rest = rest[inner_end + 1..].trim_start();
            if let Some(r) = rest.strip_prefix("AND ") {
                rest = r.trim_start();
            } else if rest.starts_with("OR ") {
                return Err("the fake does not implement OR in filters".into());
            }
        }
    } else {
        terms.push(text.to_string());
    }
    let mut out = Vec::new();
    for t in terms {
        let (field, op, value) = ["!=", "=", " eq ", " ne "]
            .iter()
            .find_map(|op| {
                t.split_once(op)
                    .map(|(f, v)| (f.trim(), op.trim(), v.trim()))
            })
            .ok_or_else(invalid)?;
        if field.is_empty() || !field.chars().all(|c| c.is_ascii_alphanumeric() || c == '.') {
            return Err(invalid());
        }
        let value = value
            .strip_prefix('"')
            .and_then(|v| v.strip_suffix('"'))
            .or_else(|| value.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')))
            .unwrap_or(value);
        out.push((field.to_string(), op.to_string(), value.to_string()));
    }
    let regex = out.iter().any(|(_, op, _)| op == "eq" || op == "ne");
    let exact = out.iter().any(|(_, op, _)| op == "=" || op == "!=");
    if regex && exact {
        // "These two types of filter expressions cannot be mixed in one request."
        return Err(invalid());
    }
    Ok(out)
}

/// Whether a resource (as JSON) passes the parsed filter.
fn filter_matches(terms: &[(String, String, String)], v: &Value) -> bool {
    terms.iter().all(|(field, op, want)| {
        let mut cur = v;
        for part in field.split('.') {
            cur = &cur[part];
        }
        let have = match cur {
            Value::String(s) => s.clone(),
            Value::Null => String::new(),
            other => other.to_string(),
        };
        match op.as_str() {
            "=" => have == *want,
            "!=" => have != *want,
            "eq" | "ne" => {
                let full =
                    regex::Regex::new(&format!("^(?:{want})$")).is_ok_and(|r| r.is_match(&have));
                full == (op == "eq")
            }
            _ => false,
        }
    })
}

/// The disk key of a disk URL (full or partial: `…projects/p/zones/z/disks/d`).
fn disk_key_of(url: &str) -> Option<IKey> {
    let rest = &url[url.find("projects/")? + 9..];
    let (p, rest) = rest.split_once("/zones/")?;
    let (z, n) = rest.split_once("/disks/")?;
    (!n.contains('/')).then(|| (p.to_string(), z.to_string(), n.to_string()))
}

/// The error GCE gives for a change that needs a stopped instance.
fn needs_stopped(name: &str, status: &str, what: &str) -> Outcome {
    Outcome::Reply(
        400,
        google_error(
            400,
            "invalidResourceUsage",
            &format!("Invalid resource usage: 'Instance '{name}' must be stopped (status TERMINATED) before its {what} can be changed; it is {status}.'."),
        ),
        None,
    )
}

/// GCE's answer to a call on an instance that is between two states (PROVISIONING,
/// STAGING, STOPPING, ...): 400 `resourceNotReady`, the shape Terraform's Google provider
/// retries on (`error_retry_predicates.go`) and google-api-python-client#485 shows for an
/// instance call.
fn not_ready(path: &str) -> Outcome {
    Outcome::Reply(
        400,
        google_error(
            400,
            "resourceNotReady",
            &format!("The resource '{path}' is not ready"),
        ),
        None,
    )
}

fn is_transitional(status: &str) -> bool {
    TRANSITIONAL.contains(&status)
}

/// A deterministic hex suffix for operation names.
fn fastrand_like(n: u64) -> u32 {
    (n.wrapping_mul(2_654_435_761) >> 7) as u32
}

fn s<'a>(params: &'a BTreeMap<String, String>, k: &str) -> &'a str {
    params.get(k).map(String::as_str).unwrap_or_default()
}

fn last_segment(v: &Value) -> String {
    v.as_str()
        .unwrap_or_default()
        .rsplit('/')
        .next()
        .unwrap_or_default()
        .to_string()
}

impl Shared {
    #[allow(clippy::too_many_arguments)] // the parsed request, passed through once
    fn exec(
        &self,
        w: &mut World,
        id: &str,
        p: &BTreeMap<String, String>,
        query: &[(String, String)],
        body: Option<Value>,
        fault: Option<Fault>,
        now: Instant,
    ) -> Outcome {
        let project = s(p, "project").to_string();
        let zone = s(p, "zone").to_string();
        let ikey = |name: &str| (project.clone(), zone.clone(), name.to_string());
        let ipath = |name: &str| format!("projects/{project}/zones/{zone}/instances/{name}");
        let op_fault = match &fault {
            Some(f @ Fault::OperationError { .. }) => Some(f.clone()),
            _ => None,
        };
        let zone_known = w.config.zones.contains_key(&zone);
        match id {
            "compute.instances.get" => {
                let key = ikey(s(p, "instance"));
                match w.instance_json(&key, now) {
                    Some(v) => {
                        w.shown(&key);
                        Outcome::Reply(200, v, None)
                    }
                    None => not_found(&ipath(s(p, "instance"))),
                }
            }
            "compute.instances.insert" => {
                let body = body.unwrap_or_default();
                let name = body["name"].as_str().unwrap_or_default().to_string();
                if !zone_known {
                    return not_found(&format!("projects/{project}/zones/{zone}"));
                }
                if w.instances.contains_key(&ikey(&name)) {
                    return Outcome::Reply(
                        409,
                        google_error(
                            409,
                            "alreadyExists",
                            &format!("The resource '{}' already exists", ipath(&name)),
                        ),
                        None,
                    );
                }
                let mt = last_segment(&body["machineType"]);
                if !w
                    .config
                    .machine_type_prefixes
                    .iter()
                    .any(|pre| mt.starts_with(pre.as_str()))
                {
                    return bad_request(&format!("Invalid value for field 'resource.machineType': '{mt}'. Machine type does not exist in zone {zone}."));
                }
                for a in body["guestAccelerators"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default()
                {
                    let t = last_segment(&a["acceleratorType"]);
                    if !w.config.zones[&zone].contains(&t) {
                        return bad_request(&format!("Invalid value for field 'resource.guestAccelerators[0].acceleratorType': '{t}'. Accelerator type does not exist in zone {zone}."));
                    }
                }
                let init = &body["disks"][0]["initializeParams"];
                let src = init["sourceImage"].as_str().unwrap_or_default();
                let Some((_, (img, min))) = w.config.images.iter().find(|((ip, _), (n, _))| {
                    src.ends_with(&format!("projects/{ip}/global/images/{n}"))
                }) else {
                    return bad_request(&format!("Invalid value for field 'resource.disks[0].initializeParams.sourceImage': '{src}'. The referenced image resource cannot be found."));
                };
                let size: u64 = init["diskSizeGb"]
                    .as_str()
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(*min);
                if size < *min {
                    return bad_request(&format!("Invalid value for field 'resource.disks[0].initializeParams.diskSizeGb': '{size}'. Requested disk size cannot be smaller than the image size ({min} GB) of image {img}."));
                }
                let img = img.clone();
                let stockout = w.config.stockout_zones.contains(&zone);
                let region = zone
                    .rsplit_once('-')
                    .map_or(zone.as_str(), |(r, _)| r)
                    .to_string();
                // A GPU quota (`NVIDIA_L4_GPUS`) binds inserts of that GPU only; any other
                // (`CPUS`) every insert in the region.
                let gpus_in_body: Vec<String> = body["guestAccelerators"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default()
                    .iter()
                    .map(|a| {
                        let t = last_segment(&a["acceleratorType"]);
                        format!(
                            "{}_GPUS",
                            t.replace("nvidia-tesla-", "nvidia-")
                                .to_ascii_uppercase()
                                .replace('-', "_")
                        )
                    })
                    .collect();
                let region_quota = w
                    .config
                    .region_quotas
                    .get(&region)
                    .filter(|(metric, _)| {
                        !metric.ends_with("_GPUS") || gpus_in_body.contains(metric)
                    })
                    .cloned();
                let (error, leave) = match op_fault {
                    Some(f @ Fault::OperationError { leave_instance, .. }) => {
                        (Some(f), leave_instance)
                    }
                    _ if region_quota.is_some() => {
                        let (metric, limit) = region_quota.unwrap_or_default();
                        (Some(Fault::quota(&metric, limit, Some(&region))), false)
                    }
                    _ if stockout => {
                        w.stockout_inserts += 1;
                        if w.config
                            .clear_stockouts_after_inserts
                            .is_some_and(|n| w.stockout_inserts >= n)
                        {
                            w.config.stockout_zones.clear();
                        }
                        (
                        Some(Fault::OperationError {
                            code: "ZONE_RESOURCE_POOL_EXHAUSTED_WITH_DETAILS".into(),
                            message: format!("The zone 'projects/{project}/zones/{zone}' does not have enough resources available to fulfill the request.  '(resource type:compute)'."),
                            http_status: 503,
                            quota_info: None,
                            leave_instance: false,
                        }),
                        w.config.half_made_on_stockout,
                    )
                    }
                    _ => (None, false),
                };
                let boot_key = ikey(&name);
                if w.disks.contains_key(&boot_key) {
                    return Outcome::Reply(
                        409,
                        google_error(
                            409,
                            "alreadyExists",
                            &format!(
                                "The resource 'projects/{project}/zones/{zone}/disks/{name}' already exists"
                            ),
                        ),
                        None,
                    );
                }
                let disk_type = last_segment(&init["diskType"]);
                let boot_labels = init.get("labels").cloned().unwrap_or_else(|| json!({}));
                let disk_id = w.id();
                w.disks.insert(
                    boot_key,
                    DiskRes {
                        labels: boot_labels,
                        disk_type: if disk_type.is_empty() {
                            "pd-standard".into()
                        } else {
                            disk_type
                        },
                        size_gb: size,
                        status: "READY".into(),
                        users: vec![ipath(&name)],
                        id: disk_id,
                        source_snapshot: None,
                        data: format!("image-{img}-{disk_id}"),
                    },
                );
                // What GCE keeps of the insert: the boot disk as attached (no
                // initializeParams), the default service account resolved to its email.
                let mut body = body;
                let boot_device = body["disks"][0]["deviceName"]
                    .as_str()
                    .unwrap_or(&name)
                    .to_string();
                // As asked: the API's default is false (only gcloud and the console default
                // a boot disk to true), so a client that leaves it out keeps the boot disk.
                let auto_delete = body["disks"][0]["autoDelete"].as_bool().unwrap_or(false);
                body["disks"] = json!([{
                    "kind": "compute#attachedDisk", "type": "PERSISTENT", "mode": "READ_WRITE",
                    "boot": true, "autoDelete": auto_delete, "index": 0, "deviceName": boot_device,
                    "interface": "SCSI", "diskSizeGb": size.to_string(),
                    "source": format!("{SELF_ROOT}projects/{project}/zones/{zone}/disks/{name}"),
                }]);
                let default_email = format!(
                    "{}-compute@developer.gserviceaccount.com",
                    w.config.project_number
                );
                if let Some(accounts) = body
                    .get_mut("serviceAccounts")
                    .and_then(Value::as_array_mut)
                {
                    for a in accounts {
                        if a["email"] == "default" {
                            a["email"] = json!(default_email);
                        }
                    }
                }
                let iid = w.id();
                let failing = error.is_some();
                w.instances
                    .insert(ikey(&name), Inst::new(body, "PROVISIONING", iid));
                let op = w.new_op(
                    id,
                    &project,
                    Some(&zone),
                    "insert",
                    ipath(&name),
                    Effect::Insert {
                        key: ikey(&name),
                        leave_on_error: leave,
                    },
                    error,
                    now,
                );
                if failing {
                    // GCE shows the instance PROVISIONING for a while before the insert fails.
                    let window = w.config.failed_insert_window;
                    if let Some(o) = w.ops.get_mut(&op) {
                        o.done_at = now + window;
                    }
                }
                Outcome::Reply(200, w.op_json(&op, now), None)
            }
            "compute.instances.delete"
            | "compute.instances.stop"
            | "compute.instances.start"
            | "compute.instances.setMetadata"
            | "compute.instances.setTags"
            | "compute.instances.setLabels" => {
                let name = s(p, "instance").to_string();
                let key = ikey(&name);
                let stockout = w.config.stockout_zones.contains(&zone);
                let Some(inst) = w.instances.get_mut(&key) else {
                    return not_found(&ipath(&name));
                };
                let prior = inst.status.clone();
                // Between two states, GCE refuses all but delete and labels.
                if is_transitional(&prior)
                    && !matches!(
                        id,
                        "compute.instances.delete" | "compute.instances.setLabels"
                    )
                {
                    return not_ready(&ipath(&name));
                }
                let body = body.unwrap_or_default();
                let fp_ok =
                    |field: &Value| field.as_str() == Some(format!("{:016x}", inst.fp).as_str());
                let mut op_fault = op_fault;
                let mut stocked_out_start = false;
                let (op_type, effect) = match id {
                    "compute.instances.delete" => {
                        if prior == "RUNNING" {
                            inst.set_status("STOPPING");
                        }
                        ("delete", Effect::Delete(key))
                    }
                    // Stopping a stopped instance is accepted and changes nothing.
                    "compute.instances.stop" if prior == "TERMINATED" => ("stop", Effect::Nothing),
                    "compute.instances.stop" => {
                        inst.set_status("STOPPING");
                        ("stop", Effect::Stop(key))
                    }
                    // Starting a running instance is accepted and changes nothing.
                    "compute.instances.start" if prior == "RUNNING" => ("start", Effect::Nothing),
                    "compute.instances.start" => {
                        // A restart allocates resources again: PROVISIONING, STAGING, RUNNING
                        // (https://cloud.google.com/compute/docs/instances/instance-lifecycle),
                        // and a zone without capacity ends it with ZONE_RESOURCE_POOL_EXHAUSTED,
                        // the instance left TERMINATED (GoogleCloudPlatform/
                        // opentelemetry-operations-collector#607 retries starts on it).
                        inst.set_status("PROVISIONING");
                        if stockout && op_fault.is_none() {
                            stocked_out_start = true;
                            op_fault = Some(Fault::OperationError {
                                code: "ZONE_RESOURCE_POOL_EXHAUSTED".into(),
                                message: format!("The zone 'projects/{project}/zones/{zone}' does not have enough resources available to fulfill the request.  Try a different zone, or try again later."),
                                http_status: 503,
                                quota_info: None,
                                leave_instance: false,
                            });
                        }
                        ("start", Effect::Start(key))
                    }
                    "compute.instances.setMetadata" => {
                        if !fp_ok(&body["fingerprint"]) {
                            return Outcome::Reply(412, google_error(412, "conditionNotMet", "Supplied fingerprint does not match current metadata fingerprint."), None);
                        }
                        (
                            "setMetadata",
                            Effect::SetMetadata(key, body["items"].clone()),
                        )
                    }
                    "compute.instances.setTags" => {
                        if !fp_ok(&body["fingerprint"]) {
                            return Outcome::Reply(
                                412,
                                google_error(
                                    412,
                                    "conditionNotMet",
                                    "Supplied fingerprint does not match current tags fingerprint.",
                                ),
                                None,
                            );
                        }
                        ("setTags", Effect::SetTags(key, body["items"].clone()))
                    }
                    _ => {
                        if !fp_ok(&body["labelFingerprint"]) {
                            return Outcome::Reply(412, google_error(412, "conditionNotMet", "Labels fingerprint either invalid or resource labels have changed"), None);
                        }
                        ("setLabels", Effect::SetLabels(key, body["labels"].clone()))
                    }
                };
                let op = w.new_op(
                    id,
                    &project,
                    Some(&zone),
                    op_type,
                    ipath(&name),
                    effect,
                    op_fault,
                    now,
                );
                w.set_prior(&op, prior);
                if stocked_out_start {
                    w.stockout_inserts += 1;
                    if w.config
                        .clear_stockouts_after_inserts
                        .is_some_and(|n| w.stockout_inserts >= n)
                    {
                        w.config.stockout_zones.clear();
                    }
                }
                Outcome::Reply(200, w.op_json(&op, now), None)
            }
            "compute.instances.setMachineType"
            | "compute.instances.setMachineResources"
            | "compute.instances.setServiceAccount" => {
                let name = s(p, "instance").to_string();
                let key = ikey(&name);
                let Some(inst) = w.instances.get(&key) else {
                    return not_found(&ipath(&name));
                };
                let body = body.unwrap_or_default();
                let (what, op_type) = match id {
                    "compute.instances.setMachineType" => ("machine type", "setMachineType"),
                    "compute.instances.setMachineResources" => {
                        ("machine resources", "setMachineResources")
                    }
                    _ => ("service account", "setServiceAccount"),
                };
                if is_transitional(&inst.status) {
                    return not_ready(&ipath(&name));
                }
                if inst.status != "TERMINATED" {
                    return needs_stopped(&name, &inst.status, what);
                }
                let effect = match id {
                    "compute.instances.setMachineType" => {
                        let mt = last_segment(&body["machineType"]);
                        if !w
                            .config
                            .machine_type_prefixes
                            .iter()
                            .any(|pre| mt.starts_with(pre.as_str()))
                        {
                            return bad_request(&format!("Invalid value for field 'machineType': '{mt}'. Machine type does not exist in zone {zone}."));
                        }
                        Effect::SetMachineType(key, format!("zones/{zone}/machineTypes/{mt}"))
                    }
                    "compute.instances.setMachineResources" => {
                        let accs = body["guestAccelerators"]
                            .as_array()
                            .cloned()
                            .unwrap_or_default();
                        for a in &accs {
                            let t = last_segment(&a["acceleratorType"]);
                            if !w.config.zones.get(&zone).is_some_and(|g| g.contains(&t)) {
                                return bad_request(&format!("Invalid value for field 'guestAccelerators[0].acceleratorType': '{t}'. Accelerator type does not exist in zone {zone}."));
                            }
                        }
                        Effect::SetAccelerators(key, json!(accs))
                    }
                    _ => {
                        let email = match body["email"].as_str() {
                            None | Some("default") => format!(
                                "{}-compute@developer.gserviceaccount.com",
                                w.config.project_number
                            ),
                            Some(e) => e.to_string(),
                        };
                        Effect::SetServiceAccount(
                            key,
                            json!({"email": email, "scopes": body["scopes"].clone()}),
                        )
                    }
                };
                let op = w.new_op(
                    id,
                    &project,
                    Some(&zone),
                    op_type,
                    ipath(&name),
                    effect,
                    op_fault,
                    now,
                );
                Outcome::Reply(200, w.op_json(&op, now), None)
            }
            "compute.instances.attachDisk" => {
                let name = s(p, "instance").to_string();
                let key = ikey(&name);
                let Some(inst) = w.instances.get(&key) else {
                    return not_found(&ipath(&name));
                };
                if is_transitional(&inst.status) {
                    return not_ready(&ipath(&name));
                }
                let body = body.unwrap_or_default();
                let source = body["source"].as_str().unwrap_or_default().to_string();
                let Some(dk) = disk_key_of(&source) else {
                    return bad_request(&format!(
                        "Invalid value for field 'resource.source': '{source}'. The URL is malformed."
                    ));
                };
                if dk.0 != project || dk.1 != zone {
                    return bad_request(&format!("Invalid value for field 'resource.source': '{source}'. Disk must be in the same zone as the instance ({zone})."));
                }
                let device = body["deviceName"].as_str().unwrap_or(&dk.2).to_string();
                let taken = inst.body["disks"]
                    .as_array()
                    .is_some_and(|l| l.iter().any(|d| d["deviceName"] == device.as_str()));
                let Some(disk) = w.disks.get(&dk) else {
                    return not_found(&format!("projects/{}/zones/{}/disks/{}", dk.0, dk.1, dk.2));
                };
                if let Some(user) = disk.users.first() {
                    return Outcome::Reply(
                        400,
                        google_error(
                            400,
                            "resourceInUseByAnotherResource",
                            &format!(
                                "The disk resource 'projects/{}/zones/{}/disks/{}' is already being used by '{user}'",
                                dk.0, dk.1, dk.2
                            ),
                        ),
                        None,
                    );
                }
                if taken {
                    return bad_request(&format!("Invalid value for field 'resource.deviceName': '{device}'. A disk with this device name is already attached to the instance."));
                }
                let index = inst.body["disks"].as_array().map_or(0, Vec::len);
                let attached = json!({
                    "kind": "compute#attachedDisk", "type": "PERSISTENT",
                    "mode": body["mode"].as_str().unwrap_or("READ_WRITE"),
                    "boot": false, "autoDelete": body["autoDelete"].as_bool().unwrap_or(false),
                    "index": index, "deviceName": device, "interface": "SCSI",
                    "diskSizeGb": disk.size_gb.to_string(),
                    "source": format!("{SELF_ROOT}projects/{}/zones/{}/disks/{}", dk.0, dk.1, dk.2),
                });
                let op = w.new_op(
                    id,
                    &project,
                    Some(&zone),
                    "attachDisk",
                    ipath(&name),
                    Effect::AttachDisk(key, attached),
                    op_fault,
                    now,
                );
                Outcome::Reply(200, w.op_json(&op, now), None)
            }
            "compute.instances.detachDisk" => {
                let name = s(p, "instance").to_string();
                let key = ikey(&name);
                let Some(inst) = w.instances.get(&key) else {
                    return not_found(&ipath(&name));
                };
                if is_transitional(&inst.status) {
                    return not_ready(&ipath(&name));
                }
                let device = query
                    .iter()
                    .find(|(k, _)| k == "deviceName")
                    .map(|(_, v)| v.clone())
                    .unwrap_or_default();
                let found = inst.body["disks"]
                    .as_array()
                    .is_some_and(|l| l.iter().any(|d| d["deviceName"] == device.as_str()));
                if !found {
                    return bad_request(&format!("Invalid value for field 'deviceName': '{device}'. No attached disk found with this device name."));
                }
                let op = w.new_op(
                    id,
                    &project,
                    Some(&zone),
                    "detachDisk",
                    ipath(&name),
                    Effect::DetachDisk(key, device),
                    op_fault,
                    now,
                );
                Outcome::Reply(200, w.op_json(&op, now), None)
            }
            "compute.disks.get" => {
                let key = ikey(s(p, "disk"));
                match w.disk_json(&key) {
                    Some(v) => Outcome::Reply(200, v, None),
                    None => not_found(&format!("projects/{project}/zones/{zone}/disks/{}", key.2)),
                }
            }
            "compute.disks.insert" => {
                if !zone_known {
                    return not_found(&format!("projects/{project}/zones/{zone}"));
                }
                let body = body.unwrap_or_default();
                let name = body["name"].as_str().unwrap_or_default().to_string();
                let dpath = format!("projects/{project}/zones/{zone}/disks/{name}");
                if w.disks.contains_key(&ikey(&name)) {
                    return Outcome::Reply(
                        409,
                        google_error(
                            409,
                            "alreadyExists",
                            &format!("The resource '{dpath}' already exists"),
                        ),
                        None,
                    );
                }
                let mut size: Option<u64> = body["sizeGb"].as_str().and_then(|v| v.parse().ok());
                let (source, data) = match body["sourceSnapshot"].as_str() {
                    None => (None, None),
                    Some(src) => {
                        let sname = src.rsplit('/').next().unwrap_or_default().to_string();
                        let spath = format!("projects/{project}/global/snapshots/{sname}");
                        let Some(snap) = w.snapshots.get(&(project.clone(), sname)) else {
                            return not_found(&spath);
                        };
                        if snap.ready_at.is_none_or(|t| now < t) {
                            return Outcome::Reply(
                                400,
                                google_error(
                                    400,
                                    "resourceNotReady",
                                    &format!("The resource '{spath}' is not ready"),
                                ),
                                None,
                            );
                        }
                        if size.is_some_and(|g| g < snap.size_gb) {
                            return bad_request(&format!("Invalid value for field 'resource.sizeGb': '{}'. Requested disk size cannot be smaller than the snapshot size ({} GB).", size.unwrap_or_default(), snap.size_gb));
                        }
                        size.get_or_insert(snap.size_gb);
                        (Some((spath, snap.id)), Some(snap.data.clone()))
                    }
                };
                let disk_type = last_segment(&body["type"]);
                let did = w.id();
                w.disks.insert(
                    ikey(&name),
                    DiskRes {
                        labels: body.get("labels").cloned().unwrap_or_else(|| json!({})),
                        disk_type: if disk_type.is_empty() {
                            "pd-standard".into()
                        } else {
                            disk_type
                        },
                        size_gb: size.unwrap_or(500),
                        status: if source.is_some() {
                            "RESTORING"
                        } else {
                            "CREATING"
                        }
                        .into(),
                        users: Vec::new(),
                        id: did,
                        source_snapshot: source,
                        data: data.unwrap_or_else(|| format!("blank-{did}")),
                    },
                );
                let op = w.new_op(
                    id,
                    &project,
                    Some(&zone),
                    "insert",
                    dpath,
                    Effect::InsertDisk(ikey(&name)),
                    op_fault,
                    now,
                );
                Outcome::Reply(200, w.op_json(&op, now), None)
            }
            "compute.disks.delete" | "compute.disks.resize" | "compute.disks.createSnapshot" => {
                let name = s(p, "disk").to_string();
                let key = ikey(&name);
                let dpath = format!("projects/{project}/zones/{zone}/disks/{name}");
                let Some(disk) = w.disks.get(&key).cloned() else {
                    return not_found(&dpath);
                };
                let body = body.unwrap_or_default();
                let (op_type, target, effect) = match id {
                    "compute.disks.delete" => {
                        if let Some(user) = disk.users.first() {
                            return Outcome::Reply(
                                400,
                                google_error(
                                    400,
                                    "resourceInUseByAnotherResource",
                                    &format!("The disk resource '{dpath}' is already being used by '{user}'"),
                                ),
                                None,
                            );
                        }
                        ("delete", dpath, Effect::DeleteDisk(key))
                    }
                    "compute.disks.resize" => {
                        let new: u64 = body["sizeGb"]
                            .as_str()
                            .and_then(|v| v.parse().ok())
                            .unwrap_or_default();
                        if new <= disk.size_gb {
                            return bad_request(&format!("Invalid value for field 'sizeGb': '{new}'. New disk size '{new}' GB must be larger than existing size '{}' GB.", disk.size_gb));
                        }
                        ("resize", dpath, Effect::ResizeDisk(key, new))
                    }
                    _ => {
                        let sname = body["name"].as_str().unwrap_or_default().to_string();
                        let skey = (project.clone(), sname.clone());
                        let spath = format!("projects/{project}/global/snapshots/{sname}");
                        if w.snapshots.contains_key(&skey) {
                            return Outcome::Reply(
                                409,
                                google_error(
                                    409,
                                    "alreadyExists",
                                    &format!("The resource '{spath}' already exists"),
                                ),
                                None,
                            );
                        }
                        let sid = w.id();
                        w.snapshots.insert(
                            skey.clone(),
                            SnapRes {
                                labels: body.get("labels").cloned().unwrap_or_else(|| json!({})),
                                id: sid,
                                source_disk: dpath.clone(),
                                source_disk_id: disk.id,
                                size_gb: disk.size_gb,
                                data: disk.data.clone(),
                                ready_at: None,
                            },
                        );
                        ("createSnapshot", dpath, Effect::CreateSnapshot(skey))
                    }
                };
                let op = w.new_op(
                    id,
                    &project,
                    Some(&zone),
                    op_type,
                    target,
                    effect,
                    op_fault,
                    now,
                );
                Outcome::Reply(200, w.op_json(&op, now), None)
            }
            "compute.snapshots.get" => {
                let key = (project.clone(), s(p, "snapshot").to_string());
                match w.snapshot_json(&key, now) {
                    Some(v) => Outcome::Reply(200, v, None),
                    None => not_found(&format!("projects/{project}/global/snapshots/{}", key.1)),
                }
            }
            "compute.snapshots.delete" => {
                let key = (project.clone(), s(p, "snapshot").to_string());
                let spath = format!("projects/{project}/global/snapshots/{}", key.1);
                if !w.snapshots.contains_key(&key) {
                    return not_found(&spath);
                }
                let op = w.new_op(
                    id,
                    &project,
                    None,
                    "delete",
                    spath,
                    Effect::DeleteSnapshot(key),
                    op_fault,
                    now,
                );
                Outcome::Reply(200, w.op_json(&op, now), None)
            }
            "compute.instances.getGuestAttributes" => {
                let name = s(p, "instance");
                let qp = query
                    .iter()
                    .find(|(k, _)| k == "queryPath")
                    .map(|(_, v)| v.as_str())
                    .unwrap_or_default();
                let Some(inst) = w.instances.get(&ikey(name)) else {
                    return not_found(&ipath(name));
                };
                let published = inst.status == "RUNNING"
                    && inst
                        .running_since
                        .is_some_and(|t| now >= t + w.config.hostkey_delay);
                if !published || !qp.starts_with("hostkeys") {
                    return not_found(&format!("{}/guestAttributes/{qp}", ipath(name)));
                }
                Outcome::Reply(
                    200,
                    json!({"kind": "compute#guestAttributes", "queryPath": qp, "selfLink": format!("{SELF_ROOT}{}/guestAttributes/{qp}", ipath(name)),
                           "queryValue": {"items": [{"namespace": "hostkeys", "key": w.config.host_key.0, "value": w.config.host_key.1}]}}),
                    None,
                )
            }
            "compute.firewalls.get" => match w
                .firewalls
                .get(&(project.clone(), s(p, "firewall").to_string()))
            {
                Some(v) => Outcome::Reply(200, v.clone(), None),
                None => not_found(&format!(
                    "projects/{project}/global/firewalls/{}",
                    s(p, "firewall")
                )),
            },
            "compute.firewalls.insert" | "compute.firewalls.patch" | "compute.firewalls.delete" => {
                let name = match id {
                    "compute.firewalls.insert" => body
                        .as_ref()
                        .and_then(|b| b["name"].as_str())
                        .unwrap_or_default()
                        .to_string(),
                    _ => s(p, "firewall").to_string(),
                };
                let key = (project.clone(), name.clone());
                let path = format!("projects/{project}/global/firewalls/{name}");
                let exists = w.firewalls.contains_key(&key);
                let (op_type, effect) = match id {
                    "compute.firewalls.insert" => {
                        if exists {
                            return Outcome::Reply(
                                409,
                                google_error(
                                    409,
                                    "alreadyExists",
                                    &format!("The resource '{path}' already exists"),
                                ),
                                None,
                            );
                        }
                        let mut b = body.unwrap_or_default();
                        let fid = w.id();
                        b["kind"] = json!("compute#firewall");
                        b["id"] = json!(fid.to_string());
                        b["selfLink"] = json!(format!("{SELF_ROOT}{path}"));
                        let net = last_segment(&b["network"]);
                        b["network"] = json!(format!(
                            "{SELF_ROOT}projects/{project}/global/networks/{}",
                            if net.is_empty() {
                                "default".into()
                            } else {
                                net
                            }
                        ));
                        b["priority"] = json!(1000);
                        ("insert", Effect::InsertFirewall(key, b))
                    }
                    "compute.firewalls.patch" => {
                        if !exists {
                            return not_found(&path);
                        }
                        let mut b = body.unwrap_or_default();
                        if let Some(net) = b.get("network").map(last_segment) {
                            b["network"] = json!(format!(
                                "{SELF_ROOT}projects/{project}/global/networks/{net}"
                            ));
                        }
                        ("patch", Effect::PatchFirewall(key, b))
                    }
                    _ => {
                        if !exists {
                            return not_found(&path);
                        }
                        ("delete", Effect::DeleteFirewall(key))
                    }
                };
                let op = w.new_op(id, &project, None, op_type, path, effect, op_fault, now);
                Outcome::Reply(200, w.op_json(&op, now), None)
            }
            "compute.images.getFromFamily" => {
                let fam = s(p, "family");
                match w.config.images.get(&(project.clone(), fam.to_string())) {
                    Some((name, min)) => Outcome::Reply(
                        200,
                        json!({"kind": "compute#image", "id": "4242", "name": name, "family": fam, "status": "READY", "diskSizeGb": min.to_string(),
                               "selfLink": format!("{SELF_ROOT}projects/{project}/global/images/{name}")}),
                        None,
                    ),
                    None => not_found(&format!("projects/{project}/global/images/family/{fam}")),
                }
            }
            "compute.acceleratorTypes.get" => {
                let t = s(p, "acceleratorType");
                if w.config.zones.get(&zone).is_some_and(|g| g.contains(t)) {
                    Outcome::Reply(
                        200,
                        json!({"kind": "compute#acceleratorType", "name": t, "maximumCardsPerInstance": 8, "zone": zone,
                                               "selfLink": format!("{SELF_ROOT}projects/{project}/zones/{zone}/acceleratorTypes/{t}")}),
                        None,
                    )
                } else {
                    not_found(&format!(
                        "projects/{project}/zones/{zone}/acceleratorTypes/{t}"
                    ))
                }
            }
            "compute.acceleratorTypes.aggregatedList" | "compute.machineTypes.aggregatedList" => {
                w.aggregated_list(id, &project, query)
            }
            "compute.machineTypes.get" => {
                let t = s(p, "machineType");
                if zone_known
                    && w.config
                        .machine_type_prefixes
                        .iter()
                        .any(|pre| t.starts_with(pre.as_str()))
                {
                    Outcome::Reply(
                        200,
                        json!({"kind": "compute#machineType", "name": t, "guestCpus": 8, "zone": zone,
                                               "selfLink": format!("{SELF_ROOT}projects/{project}/zones/{zone}/machineTypes/{t}")}),
                        None,
                    )
                } else {
                    not_found(&format!("projects/{project}/zones/{zone}/machineTypes/{t}"))
                }
            }
            "compute.zoneOperations.list" => {
                let q = |k: &str| query.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
                let terms = match parse_filter(q("filter").unwrap_or_default()) {
                    Ok(t) => t,
                    Err(m) => return bad_request(&m),
                };
                let max = match q("maxResults").map(str::parse::<usize>) {
                    None => 500,
                    Some(Ok(n)) if n <= 500 => n,
                    Some(_) => {
                        return bad_request(
                            "Invalid value for field 'maxResults': must be between 0 and 500.",
                        )
                    }
                };
                let mut ops: Vec<&Op> = w
                    .ops
                    .values()
                    .filter(|o| o.project == project && o.zone.as_deref() == Some(zone.as_str()))
                    .collect();
                match q("orderBy") {
                    None | Some("name") => ops.sort_by(|a, b| a.name.cmp(&b.name)),
                    Some("creationTimestamp desc") => {
                        ops.sort_by(|a, b| b.start.cmp(&a.start).then(b.id.cmp(&a.id)))
                    }
                    Some(other) => {
                        return bad_request(&format!("Invalid value for field 'orderBy': '{other}'. Currently, only sorting by 'name' or 'creationTimestamp desc' is supported."))
                    }
                }
                let names: Vec<String> = ops.into_iter().map(|o| o.name.clone()).collect();
                let matching: Vec<Value> = names
                    .iter()
                    .map(|n| w.op_json(n, now))
                    .filter(|v| filter_matches(&terms, v))
                    .collect();
                let from = match q("pageToken") {
                    None => 0,
                    Some(t) => match t
                        .strip_prefix("page-")
                        .and_then(|n| n.parse::<usize>().ok())
                    {
                        Some(n) => n,
                        None => return bad_request("Invalid value for field 'pageToken'."),
                    },
                };
                let page: Vec<Value> = matching.iter().skip(from).take(max).cloned().collect();
                let mut v = json!({
                    "kind": "compute#operationList",
                    "id": format!("projects/{project}/zones/{zone}/operations"),
                    "selfLink": format!("{SELF_ROOT}projects/{project}/zones/{zone}/operations"),
                });
                if !page.is_empty() {
                    v["items"] = json!(page);
                }
                if from + max < matching.len() {
                    v["nextPageToken"] = json!(format!("page-{}", from + max));
                }
                Outcome::Reply(200, v, None)
            }
            "compute.zoneOperations.wait"
            | "compute.globalOperations.wait"
            | "compute.zoneOperations.get"
            | "compute.globalOperations.get" => {
                let name = s(p, "operation");
                let Some(op) = w.ops.get(name) else {
                    return not_found(&format!("projects/{project}/operations/{name}"));
                };
                if id.ends_with(".wait") && !op.finalized {
                    let until = op.done_at.min(now + w.config.wait_cap);
                    return Outcome::Wait {
                        op: name.to_string(),
                        until,
                    };
                }
                Outcome::Reply(200, w.op_json(name, now), None)
            }
            other => {
                w.violations
                    .push(format!("the fake does not implement {other}"));
                Outcome::Reply(
                    501,
                    google_error(
                        501,
                        "notImplemented",
                        &format!("{other} is not implemented by the fake"),
                    ),
                    None,
                )
            }
        }
    }

    /// Handles one request; returns (method id, outcome, parsed body).
    fn dispatch(
        &self,
        method: &str,
        path: &str,
        query: &[(String, String)],
        bytes: &[u8],
        auth: Option<&str>,
    ) -> (String, Outcome, Option<Value>) {
        let now = Instant::now();
        let mut w = lock(&self.world);
        let Some(rel) = path.strip_prefix(&format!("/{}", self.disc.service_path)) else {
            return ("?".into(), not_found(path), None);
        };
        if auth != Some(format!("Bearer {}", w.config.token).as_str()) {
            return (
                "?".into(),
                Outcome::Reply(
                    401,
                    json!({"error": {"code": 401, "message": "Request had invalid authentication credentials. Expected OAuth 2 access token.", "status": "UNAUTHENTICATED"}}),
                    None,
                ),
                None,
            );
        }
        let Some((m, params)) = self.disc.route(method, rel) else {
            w.violations.push(format!(
                "{method} {rel}: no method of the discovery document has this path"
            ));
            return ("?".into(), not_found(rel), None);
        };
        let id = m.id.clone();
        let body: Option<Value> = if bytes.is_empty() {
            None
        } else {
            match serde_json::from_slice(bytes) {
                Ok(v) => Some(v),
                Err(e) => {
                    w.violations.push(format!("{id}: body is not JSON: {e}"));
                    return (id, bad_request("Invalid JSON payload received."), None);
                }
            }
        };
        let mut errs = self.disc.check_request(m, &params, query, body.as_ref());
        let request_id = query
            .iter()
            .find(|(k, _)| k == "requestId")
            .map(|(_, v)| v.clone());
        if is_mutating_id(&id, method) && request_id.is_none() {
            errs.push(format!(
                "{id}: mutating call without requestId (kgenv's rule: retries must be idempotent)"
            ));
        }
        if !errs.is_empty() {
            w.violations.extend(errs.iter().cloned());
            return (id, bad_request(&errs.join("; ")), body);
        }
        w.advance(now);
        if let Some(rid) = &request_id {
            if let Some(op) = w.request_ids.get(rid).cloned() {
                let v = w.op_json(&op, now);
                return (id, Outcome::Reply(200, v, None), body);
            }
        }
        let fault = w.take_fault(&id);
        if let Some(Fault::Http {
            status,
            reason,
            message,
            retry_after,
        }) = &fault
        {
            return (
                id,
                Outcome::Reply(
                    *status,
                    google_error(*status, reason, message),
                    *retry_after,
                ),
                body,
            );
        }
        let out = self.exec(
            &mut w,
            &id,
            &params,
            query,
            body.clone(),
            fault.clone(),
            now,
        );
        if let (Some(rid), Outcome::Reply(200, v, _)) = (&request_id, &out) {
            if let Some(op) = v["name"]
                .as_str()
                .filter(|_| v["kind"] == "compute#operation")
            {
                w.request_ids.insert(rid.clone(), op.to_string());
            }
        }
        if let (Some(Fault::AfterApply { status }), Outcome::Reply(200, ..)) = (&fault, &out) {
            return (
                id,
                Outcome::Reply(
                    *status,
                    google_error(*status, "backendError", "The answer was lost (injected)."),
                    None,
                ),
                body,
            );
        }
        (id, out, body)
    }
}

async fn handle(State(sh): State<Arc<Shared>>, req: Request) -> Response {
    let start = sh.epoch.elapsed();
    let (parts, body) = req.into_parts();
    let bytes = axum::body::to_bytes(body, 16 << 20)
        .await
        .unwrap_or_default();
    let latency = lock(&sh.world).config.request_latency;
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    if parts.uri.path() == "/ip" {
        return Response::builder()
            .status(200)
            .header(header::CONTENT_TYPE, "text/plain")
            .body(Body::from(CALLER_IP))
            .unwrap_or_default();
    }
    let query: Vec<(String, String)> = parts
        .uri
        .query()
        .map(|q| {
            reqwest::Url::parse(&format!("http://x/?{q}"))
                .map(|u| {
                    u.query_pairs()
                        .map(|(k, v)| (k.into_owned(), v.into_owned()))
                        .collect()
                })
                .unwrap_or_default()
        })
        .unwrap_or_default();
    let auth = parts
        .headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let method = parts.method.as_str().to_string();
    let path = parts.uri.path().to_string();
    let (id, outcome, body) = sh.dispatch(&method, &path, &query, &bytes, auth);
    let (status, json_body, retry_after) = match outcome {
        Outcome::Reply(s, v, ra) => (s, v, ra),
        Outcome::Wait { op, until } => {
            tokio::time::sleep_until(until.into()).await;
            let now = Instant::now();
            let mut w = lock(&sh.world);
            w.advance(now);
            (200, w.op_json(&op, now), None)
        }
    };
    let rel = path
        .strip_prefix(&format!("/{}", sh.disc.service_path))
        .unwrap_or(&path)
        .to_string();
    lock(&sh.world).log.push(Recorded {
        http_method: method,
        path: rel,
        method_id: id,
        query,
        body,
        status,
        start,
        end: sh.epoch.elapsed(),
    });
    let mut resp = Response::builder()
        .status(StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR))
        .header(header::CONTENT_TYPE, "application/json; charset=UTF-8");
    if let Some(ra) = retry_after {
        resp = resp.header(header::RETRY_AFTER, HeaderValue::from(ra));
    }
    resp.body(Body::from(json_body.to_string()))
        .unwrap_or_default()
}

/// The running fake. Stops when dropped, and then fails the test if a request broke the
/// discovery document (or the requestId rule) without the test saying it meant to: see
/// [`FakeGce::take_violations`] and [`FakeGce::expect_violation`].
pub struct FakeGce {
    shared: Arc<Shared>,
    addr: std::net::SocketAddr,
    task: tokio::task::JoinHandle<()>,
    /// What [`FakeGce::expect_violation`] declared: substrings of violations the test
    /// causes on purpose.
    expected: Mutex<Vec<String>>,
}

impl Drop for FakeGce {
    /// Conformance is checked for every test, not only those that call
    /// [`FakeGce::assert_conforms`]: an expected failure met because a malformed request was
    /// refused with a 400 would otherwise pass. When the thread is already panicking (the
    /// test failed), the list is only printed, so the first failure stays the one reported.
    fn drop(&mut self) {
        self.task.abort();
        let problems = self.conformance_problems();
        if problems.is_empty() {
            return;
        }
        let report = format!(
            "the Compute fake was dropped with {} conformance problem(s) the test neither took \
             nor expected:\n- {}\n(requests must follow Google's Compute v1 discovery document \
             and kgenv's requestId rule; a test that breaks them on purpose says so with \
             FakeGce::take_violations or FakeGce::expect_violation)",
            problems.len(),
            problems.join("\n- ")
        );
        if std::thread::panicking() {
            eprintln!("{report}");
        } else {
            panic!("{report}");
        }
    }
}

impl FakeGce {
    /// Starts a fake with the default config on a free port of 127.0.0.1.
    pub async fn start() -> Self {
        Self::start_with(Config::default()).await
    }

    /// Starts a fake with `config`.
    pub async fn start_with(config: Config) -> Self {
        let disc = Discovery::load();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1:0 for the fake Compute API");
        let addr = listener.local_addr().expect("local address of the fake");
        let shared = Arc::new(Shared {
            world: Mutex::new(World {
                config,
                instances: BTreeMap::new(),
                firewalls: BTreeMap::new(),
                disks: BTreeMap::new(),
                snapshots: BTreeMap::new(),
                ops: BTreeMap::new(),
                request_ids: BTreeMap::new(),
                log: Vec::new(),
                faults: Vec::new(),
                violations: Vec::new(),
                next_id: 7_000_000,
                stockout_inserts: 0,
            }),
            disc,
            epoch: Instant::now(),
        });
        let app = Router::new().fallback(handle).with_state(shared.clone());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self {
            shared,
            addr,
            task,
            expected: Mutex::default(),
        }
    }

    /// The service root to give kgenv (`CLOUDSDK_API_ENDPOINT_OVERRIDES_COMPUTE`).
    pub fn base_url(&self) -> String {
        format!("http://{}/{}", self.addr, self.shared.disc.service_path)
    }

    /// The caller-IP service (`KGENV_CALLER_IP_URL`).
    pub fn caller_ip_url(&self) -> String {
        format!("http://{}/ip", self.addr)
    }

    /// The discovery document in use.
    pub fn discovery(&self) -> Arc<Discovery> {
        self.shared.disc.clone()
    }

    /// A real kgenv client for this fake, retrying fast (milliseconds, not seconds).
    pub fn client(&self) -> kgenv_core::gce::GceCompute {
        kgenv_core::gce::GceCompute::builder()
            .base_url(self.base_url())
            .static_token(TOKEN)
            .caller_ip_url(self.caller_ip_url())
            .retry_policy(fast_retries())
            .build()
            .expect("client for the fake")
    }

    /// Changes the config.
    pub fn configure(&self, f: impl FnOnce(&mut Config)) {
        f(&mut lock(&self.shared.world).config);
    }

    /// Makes the next `times` calls of `method_id` (or `*`) meet `fault`.
    pub fn inject(&self, method_id: &str, times: u32, fault: Fault) {
        lock(&self.shared.world)
            .faults
            .push((method_id.into(), times, fault));
    }

    /// Faults not yet used, by method id.
    pub fn unused_faults(&self) -> Vec<String> {
        lock(&self.shared.world)
            .faults
            .iter()
            .filter(|(_, n, _)| *n > 0)
            .map(|(m, n, f)| format!("{m} x{n}: {f:?}"))
            .collect()
    }

    /// Every request so far.
    pub fn requests(&self) -> Vec<Recorded> {
        lock(&self.shared.world).log.clone()
    }

    /// Forgets recorded requests.
    pub fn clear_requests(&self) {
        lock(&self.shared.world).log.clear();
    }

    /// Every way the requests so far broke the discovery document or the requestId rule (or
    /// asked for a method the fake does not implement), expected or not, in arrival order.
    pub fn violations(&self) -> Vec<String> {
        lock(&self.shared.world).violations.clone()
    }

    /// Takes the violations on record (they no longer fail the test): for a test that sends
    /// a bad request on purpose at a known point and asserts which rule it broke.
    #[must_use = "assert which violations the bad request caused"]
    pub fn take_violations(&self) -> Vec<String> {
        std::mem::take(&mut lock(&self.shared.world).violations)
    }

    /// Declares that this test sends, on purpose, requests breaking a rule: violations
    /// containing `needle` are then accepted by [`FakeGce::assert_conforms`] and at drop,
    /// and the drop fails if none was recorded (the bad request never came, or broke
    /// something else). For tests whose bad request comes from another process or task at
    /// no point the test can take the record.
    pub fn expect_violation(&self, needle: &str) {
        self.expected
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(needle.to_string());
    }

    /// Violations on record that no [`FakeGce::expect_violation`] covers.
    pub fn unexpected_violations(&self) -> Vec<String> {
        let expected = self.expected.lock().unwrap_or_else(|p| p.into_inner());
        self.violations()
            .into_iter()
            .filter(|v| !expected.iter().any(|n| v.contains(n.as_str())))
            .collect()
    }

    /// Panics listing the violations on record that the test did not expect, if any.
    pub fn assert_conforms(&self) {
        let v = self.unexpected_violations();
        assert!(
            v.is_empty(),
            "requests broke Google's Compute v1 discovery document:\n{}",
            v.join("\n")
        );
    }

    /// Sends one request straight to the fake, with the accepted token, bypassing kgenv's
    /// client (which refuses to build a malformed request): `path` is under the service root
    /// and may carry a query. Returns the HTTP status. For tests of the conformance check.
    pub async fn send_raw(&self, method: &str, path: &str, body: Option<&str>) -> u16 {
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("an HTTP method");
        let token = lock(&self.shared.world).config.token.clone();
        let client = kgenv_core::http::client_builder(&self.base_url())
            .build()
            .expect("an HTTP client");
        let mut req = client
            .request(
                method,
                format!("{}/{path}", self.base_url().trim_end_matches('/')),
            )
            .bearer_auth(token);
        if let Some(b) = body {
            req = req
                .header(header::CONTENT_TYPE, "application/json")
                .body(b.to_string());
        }
        req.send()
            .await
            .expect("the fake answers")
            .status()
            .as_u16()
    }

    /// What the drop check fails on: unexpected violations, and expected ones never seen.
    fn conformance_problems(&self) -> Vec<String> {
        let on_record = self.violations();
        let mut problems = self.unexpected_violations();
        let expected = self.expected.lock().unwrap_or_else(|p| p.into_inner());
        problems.extend(
            expected
                .iter()
                .filter(|n| !on_record.iter().any(|v| v.contains(n.as_str())))
                .map(|n| format!("expected a violation containing {n:?}; none was recorded")),
        );
        problems
    }

    /// Instances as (zone, name, status).
    pub fn instances(&self) -> Vec<(String, String, String)> {
        let mut w = lock(&self.shared.world);
        w.advance(Instant::now());
        w.instances
            .iter()
            .map(|((_, z, n), i)| (z.clone(), n.clone(), i.status.clone()))
            .collect()
    }

    /// One instance as `instances.get` would show it.
    pub fn instance(&self, project: &str, zone: &str, name: &str) -> Option<Value> {
        let now = Instant::now();
        let mut w = lock(&self.shared.world);
        w.advance(now);
        w.instance_json(&(project.into(), zone.into(), name.into()), now)
    }

    /// Every status the instance has been in, oldest first (`PROVISIONING`, `STAGING`,
    /// `RUNNING`, ...); empty when there is no such instance. Phases nobody looked at are
    /// listed too: an insert that ended unobserved still went through STAGING.
    pub fn status_history(&self, project: &str, zone: &str, name: &str) -> Vec<String> {
        let mut w = lock(&self.shared.world);
        w.advance(Instant::now());
        w.instances
            .get(&(project.into(), zone.into(), name.into()))
            .map(|i| i.history.clone())
            .unwrap_or_default()
    }

    /// Preempts a RUNNING spot (or preemptible) VM, as GCE does when it needs the capacity
    /// back: the instance goes STOPPING at once and TERMINATED when the zone operation
    /// `compute.instances.preempted` (started by `system`, status message "Instance was
    /// preempted.", the shape `gcloud compute operations list
    /// --filter=operationType=compute.instances.preempted` shows) is DONE — after
    /// [`Config::op_latency`] for that id, or the default. With
    /// `instanceTerminationAction: STOP` (kgenv's choice, and GCE's default) its disks
    /// stay attached and its external address goes; with `DELETE` the instance is deleted
    /// (auto-delete disks with it). Returns the operation's name.
    ///
    /// Panics when the instance is missing, not RUNNING, or not a spot/preemptible VM:
    /// GCE preempts nothing else.
    pub fn preempt(&self, project: &str, zone: &str, name: &str) -> String {
        let now = Instant::now();
        let mut w = lock(&self.shared.world);
        w.advance(now);
        let key: IKey = (project.into(), zone.into(), name.into());
        let inst = w
            .instances
            .get_mut(&key)
            .unwrap_or_else(|| panic!("preempt: no instance {project}/{zone}/{name}"));
        let scheduling = &inst.body["scheduling"];
        assert!(
            scheduling["provisioningModel"] == "SPOT" || scheduling["preemptible"] == true,
            "preempt: {name} is not a spot or preemptible VM: {scheduling}"
        );
        assert_eq!(
            inst.status, "RUNNING",
            "preempt: GCE preempts only a RUNNING VM"
        );
        inst.set_status("STOPPING");
        let method = "compute.instances.preempted";
        let op = w.new_op(
            method,
            project,
            Some(zone),
            method,
            ipath_of(&key),
            Effect::Preempted(key),
            None,
            now,
        );
        w.set_prior(&op, "RUNNING".into());
        if let Some(o) = w.ops.get_mut(&op) {
            o.user = "system".into();
            o.status_message = Some("Instance was preempted.".into());
        }
        op
    }

    /// One operation as `zoneOperations.get` / `globalOperations.get` would show it.
    pub fn operation(&self, name: &str) -> Option<Value> {
        let now = Instant::now();
        let mut w = lock(&self.shared.world);
        w.advance(now);
        w.ops.contains_key(name).then(|| w.op_json(name, now))
    }

    /// Firewall rules as stored.
    pub fn firewalls(&self) -> Vec<Value> {
        let mut w = lock(&self.shared.world);
        w.advance(Instant::now());
        w.firewalls.values().cloned().collect()
    }

    /// Puts an instance there, RUNNING, as if someone else made it.
    pub fn seed_instance(&self, project: &str, zone: &str, name: &str, labels: Value) {
        let mut w = lock(&self.shared.world);
        let id = w.id();
        let ip = w.nat_ip();
        // As an older kgenv's defaults made one: the project's default account, `cloud-platform`.
        let account = format!(
            "{}-compute@developer.gserviceaccount.com",
            w.config.project_number
        );
        let body = json!({"name": name, "machineType": format!("zones/{zone}/machineTypes/n1-standard-8"), "labels": labels,
                          "serviceAccounts": [{"email": account, "scopes": ["https://www.googleapis.com/auth/cloud-platform"]}],
                          "networkInterfaces": [{"network": "global/networks/default", "accessConfigs": [{"type": "ONE_TO_ONE_NAT", "name": "External NAT"}]}]});
        let mut inst = Inst::new(body, "RUNNING", id);
        inst.nat_ip = Some(ip);
        inst.running_since = Some(Instant::now());
        w.instances
            .insert((project.into(), zone.into(), name.into()), inst);
    }

    /// Disks as (zone, name, size GB, users as `projects/p/zones/z/instances/n`).
    pub fn disks(&self) -> Vec<(String, String, u64, Vec<String>)> {
        let mut w = lock(&self.shared.world);
        w.advance(Instant::now());
        w.disks
            .iter()
            .map(|((_, z, n), d)| (z.clone(), n.clone(), d.size_gb, d.users.clone()))
            .collect()
    }

    /// One disk as `disks.get` would show it.
    pub fn disk(&self, project: &str, zone: &str, name: &str) -> Option<Value> {
        let mut w = lock(&self.shared.world);
        w.advance(Instant::now());
        w.disk_json(&(project.into(), zone.into(), name.into()))
    }

    /// A disk's content (an opaque value: `blank-…` when new, the source disk's when
    /// restored from a snapshot).
    pub fn disk_data(&self, project: &str, zone: &str, name: &str) -> Option<String> {
        let mut w = lock(&self.shared.world);
        w.advance(Instant::now());
        w.disks
            .get(&(project.into(), zone.into(), name.into()))
            .map(|d| d.data.clone())
    }

    /// Stands for the guest writing to a disk: replaces its content value.
    pub fn write_disk(&self, project: &str, zone: &str, name: &str, data: &str) {
        let mut w = lock(&self.shared.world);
        w.advance(Instant::now());
        let d = w
            .disks
            .get_mut(&(project.into(), zone.into(), name.into()))
            .expect("write_disk: no such disk");
        d.data = data.to_string();
    }

    /// Snapshots as (name, status).
    pub fn snapshots(&self) -> Vec<(String, String)> {
        let now = Instant::now();
        let mut w = lock(&self.shared.world);
        w.advance(now);
        w.snapshots
            .keys()
            .filter_map(|k| {
                let v = w.snapshot_json(k, now)?;
                Some((k.1.clone(), v["status"].as_str()?.to_string()))
            })
            .collect()
    }

    /// Ends every running operation now and makes every uploading snapshot READY (as if
    /// their time had come): lets a test hold an operation open with a long latency or
    /// window, look at the state meanwhile, then release it without depending on timing.
    pub fn finish_operations_now(&self) {
        let now = Instant::now();
        let mut w = lock(&self.shared.world);
        for op in w.ops.values_mut().filter(|o| !o.finalized) {
            op.done_at = op.done_at.min(now);
        }
        w.advance(now);
        for snap in w.snapshots.values_mut() {
            if let Some(t) = &mut snap.ready_at {
                *t = (*t).min(now);
            }
        }
    }

    /// GCE removes every lingering failed-insert instance now (with its auto-delete boot
    /// disk), whatever [`Config::failed_insert_linger`] said: lets a test hold one with a
    /// long linger and end it at the moment it chooses.
    pub fn end_lingering_now(&self) {
        let now = Instant::now();
        let mut w = lock(&self.shared.world);
        w.advance(now);
        for i in w.instances.values_mut() {
            if i.vanish.is_some() {
                i.vanish = Some(Vanish::At(now));
            }
        }
        w.advance(now);
    }

    /// Puts a firewall rule there, as if someone else made it.
    pub fn seed_firewall(&self, project: &str, body: Value) {
        let name = body["name"].as_str().unwrap_or_default().to_string();
        lock(&self.shared.world)
            .firewalls
            .insert((project.into(), name), body);
    }

    /// The operations run so far.
    pub fn operations(&self) -> Vec<OpRecord> {
        let w = lock(&self.shared.world);
        w.ops
            .values()
            .map(|o| OpRecord {
                op_type: o.op_type.clone(),
                target: o.target.clone(),
                duration: o.done_at.saturating_duration_since(o.start),
                failed: o.error.is_some(),
            })
            .collect()
    }
}

/// Retries in milliseconds, for tests: same shape as the default policy, scaled down.
pub fn fast_retries() -> kgenv_core::http::RetryPolicy {
    kgenv_core::http::RetryPolicy {
        initial_delay: Duration::from_millis(5),
        max_delay: Duration::from_millis(80),
        max_retries: 8,
        ..kgenv_core::gce::RETRY
    }
    .with_budget(Duration::from_secs(20))
    .with_attempt_timeout(Duration::from_secs(20))
}
