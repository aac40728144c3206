//! Stateful in-memory backends for tests, demos (`kgenv --mock`) and users' own tests.
//!
//! A [`MockWorld`] holds a simulated cloud, host, Docker engine, Kaggle and GitHub. The six
//! mock backends are views onto it, so what the compute mock creates the host mock can log
//! into. Every call is recorded with start and end times ([`MockWorld::calls`]); faults can
//! be injected ([`MockWorld::fail_next`]) and latency added ([`MockWorld::set_latency`]).
//! A call can also be held at its start ([`MockWorld::hold_next`]) until the test lets it
//! go, so a test can act while that call is known to be in flight instead of guessing it
//! from the clock.
//! The world can be saved to a file so separate processes (CLI invocations) share it.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! use kgenv_core::mock::{Fault, MockWorld};
//! use kgenv_core::backends::compute::InstanceRef;
//! let world = MockWorld::new();
//! world.fail_next("compute.get_instance", 1, Fault::Transient);
//! let at = InstanceRef { project: "my-project".into(), zone: "us-central1-a".into(), name: "kg".into() };
//! let compute = world.backends().compute;
//! assert!(compute.get_instance(&at).await.is_err());
//! assert!(compute.get_instance(&at).await.expect("second call passes").is_none());
//! assert_eq!(world.calls().len(), 2);
//! # }
//! ```

mod billing;
mod compute;
mod engine;
mod github;
mod kaggle;
mod remote;
mod storage;

pub use github::GITHUB_HOST_KEYS;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::backends::compute::{DiskInfo, FirewallRule, InstanceInfo, SnapshotInfo};
use crate::backends::container::{ContainerInfo, EngineImage};
use crate::backends::github::{GithubKeyInfo, KeyScope};
use crate::backends::kaggle::DataFile;
use crate::backends::storage::BucketInfo;
use crate::backends::{BackendResult, Backends};
use crate::error::{BackendError, QuotaInfo};

/// One recorded backend call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Call {
    /// `backend.operation`, e.g. `compute.insert_instance`.
    pub op: String,
    /// What it was about (an instance path, a container name, a command).
    pub target: String,
    /// Whether it changes anything.
    pub mutating: bool,
    /// Start, since the world was made.
    pub start: Duration,
    /// End, since the world was made.
    pub end: Duration,
    /// Whether it failed.
    pub failed: bool,
}

/// An error to inject.
#[derive(Debug, Clone, PartialEq)]
pub enum Fault {
    /// A 5xx-like failure (retryable).
    Transient,
    /// A 429 (retryable).
    RateLimited,
    /// The zone is out of GPUs.
    Stockout,
    /// A quota.
    Quota(QuotaInfo),
    /// Permission denied.
    PermissionDenied,
    /// The connection dropped.
    Connection,
    /// A command on the host ran past its limit and was killed (inject on `remote.exec`).
    CommandTimeout,
}

impl Fault {
    fn to_error(&self, op: &str, target: &str) -> BackendError {
        match self {
            Self::Transient => BackendError::transient("mock", format!("injected 503 on {op}")),
            Self::RateLimited => BackendError::RateLimited {
                service: "mock",
                retry_after: None,
            },
            Self::Stockout => BackendError::Stockout {
                zone: target.split('/').nth(1).unwrap_or("unknown").to_string(),
                resource: target.to_string(),
                message: "ZONE_RESOURCE_POOL_EXHAUSTED (injected)".into(),
            },
            Self::Quota(q) => BackendError::Quota {
                quota: q.clone(),
                message: "injected".into(),
            },
            Self::PermissionDenied => BackendError::PermissionDenied {
                resource: target.into(),
                message: "injected".into(),
            },
            Self::Connection => BackendError::Connection {
                endpoint: target.into(),
                message: "injected drop".into(),
                source: None,
            },
            Self::CommandTimeout => {
                BackendError::CommandTimeout(Box::new(crate::error::CommandTimedOut {
                    step: None,
                    command: target
                        .split_whitespace()
                        .take(4)
                        .collect::<Vec<_>>()
                        .join(" "),
                    host: "mock".into(),
                    after: std::time::Duration::from_secs(600),
                    inactivity: false,
                    last_lines: vec!["injected: the command hung".into()],
                }))
            }
        }
    }
}

/// Everything the simulated world holds. Public so tests can look inside and seed it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct WorldState {
    /// Instances by `project/zone/name`.
    pub instances: BTreeMap<String, InstanceInfo>,
    /// Firewall rules by `project/name`.
    pub firewalls: BTreeMap<String, FirewallRule>,
    /// Zones that answer inserts with a stockout. As on GCE, the insert is accepted, the
    /// instance shows PROVISIONING for [`WorldState::failed_insert_window_ms`], then it is
    /// removed and the insert fails with ZONE_RESOURCE_POOL_EXHAUSTED.
    pub stockout_zones: Vec<String>,
    /// When set, capacity comes back after that many inserts failed on a stockout:
    /// [`WorldState::stockout_zones`] is then cleared (a wait for capacity that succeeds in
    /// a later round).
    #[serde(default)]
    pub stockout_inserts_left: Option<u32>,
    /// How long an insert that will fail shows its instance PROVISIONING, in milliseconds.
    #[serde(default)]
    pub failed_insert_window_ms: u64,
    /// Inserts that will fail: instance key → when (Unix milliseconds) the instance is
    /// removed. Kept in the state so a process killed meanwhile still sees it vanish.
    #[serde(default)]
    pub failing_inserts: BTreeMap<String, u64>,
    /// Persistent disks by `project/zone/name` (boot disks included).
    #[serde(default)]
    pub disks: BTreeMap<String, MockDisk>,
    /// Snapshots by `project/name`.
    #[serde(default)]
    pub snapshots: BTreeMap<String, MockSnapshot>,
    /// Buckets by name.
    pub buckets: BTreeMap<String, BucketInfo>,
    /// What each bucket holds (none listed: empty).
    #[serde(default)]
    pub bucket_usage: BTreeMap<String, crate::backends::storage::BucketUsage>,
    /// Files on the host by path: (content, mode).
    pub host_files: BTreeMap<String, (Vec<u8>, u32)>,
    /// Applied host scripts by name: the sha256 of the applied script.
    pub host_scripts: BTreeMap<String, String>,
    /// Number of GPUs the simulated host has.
    pub host_gpus: u32,
    /// Engine images by reference.
    pub images: BTreeMap<String, EngineImage>,
    /// Engine containers by name.
    pub containers: BTreeMap<String, ContainerInfo>,
    /// Containers created with a GPU request (starting one fails when `host_gpus` is 0,
    /// as a real engine without the NVIDIA runtime does).
    #[serde(default)]
    pub gpu_containers: std::collections::BTreeSet<String>,
    /// GitHub keys with their scope.
    pub github_keys: Vec<(KeyScope, GithubKeyInfo)>,
    /// Competitions and their files.
    pub competitions: BTreeMap<String, Vec<DataFile>>,
    /// Data landed: `dest/file` → bytes, by listed name (what `present` answers).
    pub landed: BTreeMap<String, u64>,
    /// Competition files that arrive as a zip archive: `competition/file` → the entries
    /// inside (names relative to the file's directory). A name without `.zip` is served as
    /// `<name>.zip`, as Kaggle wraps large files.
    #[serde(default)]
    pub zipped: BTreeMap<String, Vec<DataFile>>,
    /// What the destinations hold after fetches, as a directory listing would show it:
    /// `dest/path` → bytes — an archive as served, or its entries once a fetch extracted it.
    #[serde(default)]
    pub data_files: BTreeMap<String, u64>,
    /// Fetches that asked for extraction, as `dest/file` (the per-call choice, recorded).
    #[serde(default)]
    pub extract_requested: std::collections::BTreeSet<String>,
    /// Compute Engine's SKUs the mock Billing Catalog serves; `None`: the catalog is
    /// unavailable (as with no credentials), so prices are unknown.
    #[serde(default)]
    pub billing_skus: Option<Vec<crate::backends::billing::Sku>>,
    /// Preemptions GCE recorded, by instance id, oldest first (see [`MockWorld::preempt`]).
    #[serde(default)]
    pub preemptions: BTreeMap<String, Vec<crate::backends::compute::Preemption>>,
    /// Counter for ids.
    pub next_id: u64,
}

/// A simulated persistent disk: what GCE shows, and an opaque stand-in for its content.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MockDisk {
    /// What `get_disk` answers.
    pub info: DiskInfo,
    /// The content: `blank-<id>` for a new disk, copied from the snapshot for a restored
    /// one; tests change it to stand for data written on the disk.
    pub data: String,
    /// Deleted with the instance it is attached to (boot disks).
    pub auto_delete: bool,
}

/// A simulated snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MockSnapshot {
    /// What `get_snapshot` answers.
    pub info: SnapshotInfo,
    /// The source disk's content when the snapshot was taken.
    pub data: String,
    /// The source disk's size: disks made from it are at least this big.
    pub size_gb: u64,
}

impl WorldState {
    fn seeded() -> Self {
        let mut s = Self {
            host_gpus: 1,
            failed_insert_window_ms: 50,
            next_id: 1000,
            ..Self::default()
        };
        s.competitions.insert(
            "titanic".into(),
            vec![
                DataFile {
                    name: "train.csv".into(),
                    size: 61_194,
                },
                DataFile {
                    name: "test.csv".into(),
                    size: 28_629,
                },
                DataFile {
                    name: "gender_submission.csv".into(),
                    size: 3_258,
                },
            ],
        );
        s
    }

    fn id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }
}

struct FaultRule {
    op: String,
    remaining: u32,
    fault: Fault,
}

struct Inner {
    state: Mutex<WorldState>,
    calls: Mutex<Vec<Call>>,
    faults: Mutex<Vec<FaultRule>>,
    latency: Mutex<BTreeMap<String, Duration>>,
    holds: Mutex<Vec<HoldRule>>,
    epoch: Instant,
    persist: Option<PathBuf>,
}

/// A call to hold, waiting for the next call of `op` to take it.
struct HoldRule {
    op: String,
    started: tokio::sync::watch::Sender<bool>,
    released: tokio::sync::watch::Receiver<bool>,
}

/// The handle of a call held by [`MockWorld::hold_next`]: says when the call has started
/// and lets it go on when released or dropped.
#[derive(Debug)]
pub struct Held {
    op: String,
    started: tokio::sync::watch::Receiver<bool>,
    release: tokio::sync::watch::Sender<bool>,
}

impl Held {
    /// Waits until the held call has started (it is then waiting for [`Held::release`]).
    pub async fn started(&self) {
        let mut started = self.started.clone();
        // The sender lives in the world until a call takes the rule, then in that call:
        // an error means the world was dropped with the call never made, so nothing starts.
        let seen = started.wait_for(|s| *s).await.is_ok();
        if !seen {
            std::future::pending::<()>().await;
        }
    }

    /// Whether the held call has started.
    pub fn has_started(&self) -> bool {
        *self.started.borrow()
    }

    /// The operation held (`compute.insert_instance`).
    pub fn op(&self) -> &str {
        &self.op
    }

    /// Lets the held call go on (dropping the handle does the same; releasing twice is
    /// harmless).
    pub fn release(&self) {
        self.release.send_replace(true);
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        self.release.send_replace(true);
    }
}

/// The simulated world behind the mock backends. Cheap to clone (shared).
#[derive(Clone)]
pub struct MockWorld {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for MockWorld {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MockWorld").finish_non_exhaustive()
    }
}

impl Default for MockWorld {
    fn default() -> Self {
        Self::new()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic in one test thread must not poison the world for the others.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl MockWorld {
    /// A world with one GPU on the host and the `titanic` competition.
    pub fn new() -> Self {
        Self::with_state(WorldState::seeded(), None)
    }

    fn with_state(state: WorldState, persist: Option<PathBuf>) -> Self {
        Self {
            inner: Arc::new(Inner {
                state: Mutex::new(state),
                calls: Mutex::default(),
                faults: Mutex::default(),
                latency: Mutex::default(),
                holds: Mutex::default(),
                epoch: Instant::now(),
                persist,
            }),
        }
    }

    /// A world loaded from `path` (or new), saved back after every mutating call, so several
    /// processes see one simulated cloud in turn (the CLI's `--mock`).
    pub fn persistent(path: &Path) -> BackendResult<Self> {
        let state = match std::fs::read(path) {
            Ok(b) => serde_json::from_slice(&b).map_err(|e| {
                BackendError::other(format!(
                    "mock world {} is corrupt: {e}; delete it to start over",
                    path.display()
                ))
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => WorldState::seeded(),
            Err(e) => return Err(BackendError::io(format!("reading {}", path.display()), e)),
        };
        Ok(Self::with_state(state, Some(path.to_path_buf())))
    }

    /// All the backends, viewing this world. A simulated run keeps no `ssh <env>` alias.
    pub fn backends(&self) -> Backends {
        Backends {
            compute: Arc::new(compute::MockCompute(self.clone())),
            storage: Arc::new(storage::MockStorage(self.clone())),
            remote: Arc::new(remote::MockConnector(self.clone())),
            engine: Arc::new(engine::MockEngineConnector(self.clone())),
            kaggle: Arc::new(kaggle::MockKaggle(self.clone())),
            github: Arc::new(github::MockGitHub(self.clone())),
            billing: Arc::new(billing::MockBilling(self.clone())),
            ssh_aliases: None,
        }
    }

    /// A copy of the world's state.
    pub fn state(&self) -> WorldState {
        lock(&self.inner.state).clone()
    }

    /// Changes the world's state directly (seeding, simulating outside changes).
    pub fn edit<R>(&self, f: impl FnOnce(&mut WorldState) -> R) -> R {
        let r = f(&mut lock(&self.inner.state));
        self.save();
        r
    }

    /// Every call so far.
    pub fn calls(&self) -> Vec<Call> {
        lock(&self.inner.calls).clone()
    }

    /// Calls that changed something.
    pub fn mutating_calls(&self) -> Vec<Call> {
        self.calls().into_iter().filter(|c| c.mutating).collect()
    }

    /// Forgets recorded calls.
    pub fn clear_calls(&self) {
        lock(&self.inner.calls).clear();
    }

    /// Makes the next `n` calls of `op` (`compute.insert_instance`, or `*`) fail with `fault`.
    pub fn fail_next(&self, op: &str, n: u32, fault: Fault) {
        lock(&self.inner.faults).push(FaultRule {
            op: op.into(),
            remaining: n,
            fault,
        });
    }

    /// Adds `latency` to every call of `op` (or `*`).
    pub fn set_latency(&self, op: &str, latency: Duration) {
        lock(&self.inner.latency).insert(op.into(), latency);
    }

    /// Holds the next call of `op` (exact name, e.g. `compute.insert_instance`) at its
    /// start (its start time taken, before its latency, fault or effect) until
    /// the returned [`Held`] is released or dropped. Several holds on one `op` take its next
    /// calls in turn. For tests that must act while a call is in flight (cancel a run, start
    /// a second one): they wait on [`Held::started`] instead of sleeping and hoping.
    pub fn hold_next(&self, op: &str) -> Held {
        let (started_tx, started_rx) = tokio::sync::watch::channel(false);
        let (release_tx, release_rx) = tokio::sync::watch::channel(false);
        lock(&self.inner.holds).push(HoldRule {
            op: op.into(),
            started: started_tx,
            released: release_rx,
        });
        Held {
            op: op.into(),
            started: started_rx,
            release: release_tx,
        }
    }

    fn save(&self) {
        if let Some(path) = &self.inner.persist {
            let state = lock(&self.inner.state).clone();
            if let Ok(bytes) = serde_json::to_vec_pretty(&state) {
                // Best effort: a demo world that fails to save only loses the simulation.
                let _ = crate::paths::write_atomic(path, &bytes, 0o600);
            }
        }
    }

    /// Runs one simulated call: records it, waits its latency, applies injected faults,
    /// then runs `f` on the state.
    pub(crate) async fn call<T>(
        &self,
        op: &str,
        target: &str,
        mutating: bool,
        f: impl FnOnce(&mut WorldState) -> BackendResult<T>,
    ) -> BackendResult<T> {
        let start = self.inner.epoch.elapsed();
        let hold = {
            let mut holds = lock(&self.inner.holds);
            holds
                .iter()
                .position(|h| h.op == op)
                .map(|i| holds.remove(i))
        };
        if let Some(mut h) = hold {
            h.started.send_replace(true);
            // An error means the handle is gone, which releases the call too.
            let _ = h.released.wait_for(|r| *r).await;
        }
        let latency = {
            let l = lock(&self.inner.latency);
            l.get(op).or_else(|| l.get("*")).copied()
        };
        if let Some(d) = latency {
            tokio::time::sleep(d).await;
        }
        let fault = {
            let mut faults = lock(&self.inner.faults);
            let hit = faults
                .iter_mut()
                .find(|r| r.remaining > 0 && (r.op == op || r.op == "*"));
            hit.map(|r| {
                r.remaining -= 1;
                r.fault.clone()
            })
        };
        let result = match fault {
            Some(fault) => Err(fault.to_error(op, target)),
            None => f(&mut lock(&self.inner.state)),
        };
        let end = self.inner.epoch.elapsed();
        lock(&self.inner.calls).push(Call {
            op: op.into(),
            target: target.into(),
            mutating,
            start,
            end,
            failed: result.is_err(),
        });
        if mutating && result.is_ok() {
            self.save();
        }
        result
    }
}
