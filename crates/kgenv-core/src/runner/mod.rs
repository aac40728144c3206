//! kgenv's verbs: the one API the CLI, the Python bindings and Rust programs call.
//!
//! A [`Runner`] joins an environment's spec, its backends and its state file to kgenv's
//! steps ([`crate::steps`]) and drives them with the engine ([`crate::plan`]):
//!
//! | verb | call |
//! | --- | --- |
//! | plan, up, down, status | [`Runner::plan`], [`Runner::up`], [`Runner::down`], [`Runner::status`] |
//! | what `down` would delete and keep, then `down` once confirmed | [`Runner::down_preview`], [`Runner::down_confirmed`] |
//! | stop, start | [`Runner::stop`], [`Runner::start`] |
//! | run a command on the host, log in | [`Runner::ssh`], [`Runner::ssh_command`] |
//! | the container: logs, a command, the GPU | [`Runner::logs`], [`Runner::exec`], [`Runner::gpu_report`] |
//! | Jupyter through an SSH tunnel | [`Runner::jupyter`] |
//! | change autostop in place | [`Runner::autostop`] |
//! | move the data disk and the VM to another zone | [`Runner::move_preview`], [`Runner::move_to`] |
//! | competition data, no environment needed | [`data::list`], [`data::pull`] |
//! | Jupyter password hash | [`hash_password`] |
//!
//! [`verbs::VERBS`] lists them for the surfaces' parity tests.
//!
//! Nothing that deletes, stops or restarts happens unannounced on a surface: `kgenv down`
//! and `env.down()` call [`Runner::down_confirmed`], which shows the [`DownPreview`] to an
//! `ask` callback (a terminal prompt, or a refusal where there is no terminal) unless
//! [`RunOptions::yes`] is set; `up` applies a change that restarts the VM only when
//! `yes` is set or the runner's [`Runner::confirm_with`] callback agrees. Refused, both
//! fail with [`Error::NotConfirmed`] (exit 2) and change nothing. [`Runner::down`] itself
//! does not ask: a Rust program calling it has decided.
//!
//! ```no_run
//! # async fn demo() -> kgenv_core::Result<()> {
//! use kgenv_core::{config, mock::MockWorld, runner::{RunOptions, Runner}};
//! let env = config::load("kgenv.toml".as_ref())?;
//! let world = MockWorld::new(); // or kgenv_core::wiring::from_env().await
//! let runner = Runner::new(env, world.backends()).state_dir(std::env::temp_dir());
//! let report = runner.up(RunOptions::default(), |event| eprintln!("{event}")).await?;
//! println!("{} steps changed", report.changed());
//! # Ok(()) }
//! ```

mod autostop;
mod container;
pub mod data;
mod host;
mod jupyter;
mod move_zone;
mod prices;
pub mod tunnel;
pub mod verbs;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

pub use crate::backends::container::{LogOptions, TermSize};
pub use crate::backends::remote::{ExecOutput, ExecRequest, HostAddr};
pub use crate::backends::Stream;
pub use crate::error::Unconfirmed;
pub use crate::gpu::{GpuInfo, GpuReport};
pub use crate::jupyter::{hash_password, verify_password};
pub use crate::plan::{
    Change, ConfirmFn, Disruption, DownPreview, Event, Outcome, Phase, Report, StepOutcome,
    StepTeardown, Teardown,
};
pub use crate::pricing::{Estimate, Prices, RunningCost, Usd};
pub use crate::state::State;
pub use crate::steps::instance::Preempted;
pub use container::{ShellIo, DEFAULT_SHELL};
pub use jupyter::JupyterTunnel;
pub use move_zone::MovePreview;
pub use verbs::{Verb, VERBS};

use crate::backends::Backends;
use crate::error::{Error, Result, StateError};
use crate::plan::{drive, EventSink, Step, StepCtx};
use crate::spec::{Env, Target};
use crate::state::StateStore;

/// How long an operation on a running environment (`exec`, `logs`, a tunnel, ...) waits
/// for its host to accept SSH. The host should be up; `up` waits longer for a new VM.
const OPS_CONNECT_WITHIN: Duration = Duration::from_secs(60);

/// How long `up` waits for a new host to accept SSH (a fresh VM boots in minutes).
const UP_CONNECT_WITHIN: Duration = Duration::from_secs(600);

/// How long a run asks again for an environment lock that is still held before it reports
/// the environment busy (see `Runner::lock`).
pub const LOCK_GRACE: Duration = Duration::from_secs(1);

/// The default directory of state files: the XDG state dir, or `$KGENV_HOME/state`.
pub fn default_state_dir() -> PathBuf {
    StateStore::default_dir()
}

/// The state file of environment `env` in `state_dir` (it exists while kgenv has created
/// something).
pub fn state_file(state_dir: &std::path::Path, env: &str) -> PathBuf {
    StateStore::path_for(state_dir, env)
}

/// The steps `env` runs, in declared order, with what they run after.
pub fn step_infos(env: &Env) -> Vec<StepInfo> {
    infos(&crate::steps::for_env(env))
}

fn infos(steps: &[Arc<dyn Step>]) -> Vec<StepInfo> {
    steps
        .iter()
        .map(|s| StepInfo {
            id: s.id().to_string(),
            deps: s.deps().to_vec(),
            summary: s.summary(),
        })
        .collect()
}

/// Which steps a run covers.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunOptions {
    /// Only these steps (an id, or a prefix such as `firewall` for `firewall/*`).
    pub only: Vec<String>,
    /// This step and everything it depends on.
    pub until: Option<String>,
    /// `down` only: buckets to delete, by name. Buckets are kept by `down` unless named
    /// here (GCS refuses to delete a bucket that still holds objects).
    #[serde(default)]
    pub delete_buckets: Vec<String>,
    /// `down` only: persistent disks to delete, by name. Data disks are kept by `down`
    /// unless named here; a name that is not one of the environment's kept disks is an
    /// error before anything changes.
    #[serde(default)]
    pub delete_disks: Vec<String>,
    /// Go ahead without asking (`--yes`, Python `yes=True`): [`Runner::down_confirmed`]
    /// deletes without calling its `ask`, and `up` applies changes that stop or restart
    /// the VM. Without it those are confirmed first, and refused where nobody can answer.
    #[serde(default)]
    pub yes: bool,
    /// `up` and `start` only: when every candidate zone is out of GPU capacity, try them
    /// all again in rounds, with growing pauses, instead of failing after one pass
    /// (`--wait-for-capacity`). Ctrl-C ends the wait and leaves nothing half-made.
    #[serde(default)]
    pub wait_for_capacity: bool,
    /// With [`Self::wait_for_capacity`], the longest wait (`None`: until capacity or
    /// Ctrl-C).
    #[serde(default)]
    pub wait_for_capacity_limit: Option<Duration>,
}

impl RunOptions {
    /// Only these steps.
    #[must_use]
    pub fn only<I: IntoIterator<Item = S>, S: Into<String>>(mut self, ids: I) -> Self {
        self.only = ids.into_iter().map(Into::into).collect();
        self
    }
    /// Up to and including this step.
    #[must_use]
    pub fn until(mut self, id: impl Into<String>) -> Self {
        self.until = Some(id.into());
        self
    }
    /// `down` also deletes this bucket (by name, `gs://` optional).
    #[must_use]
    pub fn delete_bucket(mut self, name: impl Into<String>) -> Self {
        let name: String = name.into();
        self.delete_buckets.push(
            name.strip_prefix("gs://")
                .unwrap_or(&name)
                .trim_end_matches('/')
                .to_string(),
        );
        self
    }
    /// `down` also deletes this persistent disk (by name: `kg-data`); data disks are kept
    /// otherwise.
    #[must_use]
    pub fn delete_disk(mut self, name: impl Into<String>) -> Self {
        self.delete_disks.push(name.into());
        self
    }
    /// Go ahead without asking: `down` deletes what its preview lists, `up` applies
    /// changes that stop or restart the VM (`--yes`).
    #[must_use]
    pub fn yes(mut self) -> Self {
        self.yes = true;
        self
    }
    /// Waits for GPU capacity in rounds when every zone is out, at most `limit` (`None`:
    /// until capacity or Ctrl-C): `--wait-for-capacity[=DURATION]`.
    #[must_use]
    pub fn wait_for_capacity(mut self, limit: Option<Duration>) -> Self {
        self.wait_for_capacity = true;
        self.wait_for_capacity_limit = limit;
        self
    }
}

/// The first pause between two rounds of a capacity wait.
pub const CAPACITY_FIRST_DELAY: Duration = Duration::from_secs(30);
/// The largest pause between two rounds of a capacity wait.
pub const CAPACITY_MAX_DELAY: Duration = Duration::from_secs(600);

/// What `status` shows: the state file and a live look at each step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatusReport {
    /// The state file's path.
    pub state_file: PathBuf,
    /// What kgenv recorded.
    pub state: State,
    /// A live check of each step (as `plan` does).
    pub live: Report,
    /// What `down` keeps (data disks with their size, buckets): what stays billed after
    /// the environment is torn down, and holds the user's work.
    #[serde(default)]
    pub kept: Vec<String>,
    /// What the environment costs per hour (VM, GPUs, disks) and its disks per month;
    /// `None` without a GCE instance.
    #[serde(default)]
    pub prices: Option<Box<Prices>>,
    /// What the running VM has cost since it last started; `None` when it is not running.
    #[serde(default)]
    pub running: Option<Box<RunningCost>>,
    /// Set when the environment's VM is stopped because GCE preempted it (a spot VM): when,
    /// and how to bring it back.
    #[serde(default)]
    pub preempted: Option<Preempted>,
    /// The environment's bucket that `down` keeps, with what it holds (still billed).
    #[serde(default)]
    pub buckets: Vec<KeptBucket>,
}

/// A bucket `down` keeps, as `status` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeptBucket {
    /// Bucket name.
    pub name: String,
    /// What it holds; `None` when it could not be listed (`note` says why).
    pub usage: Option<crate::backends::storage::BucketUsage>,
    /// Why the usage is unknown.
    #[serde(default)]
    pub note: Option<String>,
}

/// One step as `kgenv steps` lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepInfo {
    /// Step id (`instance`, `firewall/kg-ssh`, `data/titanic`).
    pub id: String,
    /// Ids of the steps it runs after.
    pub deps: Vec<String>,
    /// What it manages.
    pub summary: String,
}

/// Runs kgenv's verbs on one environment.
pub struct Runner {
    env: Arc<Env>,
    backends: Backends,
    state_dir: PathBuf,
    cancel: CancellationToken,
    steps: Vec<Arc<dyn Step>>,
    host_ready_within: Duration,
    confirm: Option<ConfirmFn>,
    capacity_backoff: (Duration, Duration),
    price_cache: PathBuf,
}

impl std::fmt::Debug for Runner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runner")
            .field("env", &self.env.name)
            .finish_non_exhaustive()
    }
}

impl Runner {
    /// A runner for `env` on `backends`, with state in the XDG state dir.
    pub fn new(env: Env, backends: Backends) -> Self {
        let steps = crate::steps::for_env(&env);
        Self {
            env: Arc::new(env),
            backends,
            state_dir: default_state_dir(),
            cancel: CancellationToken::new(),
            steps,
            host_ready_within: UP_CONNECT_WITHIN,
            confirm: None,
            capacity_backoff: (CAPACITY_FIRST_DELAY, CAPACITY_MAX_DELAY),
            price_cache: crate::pricing::cache::default_dir(),
        }
    }

    /// Keeps the state file in `dir`.
    #[must_use]
    pub fn state_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.state_dir = dir.into();
        self
    }

    /// Cancels runs when `token` is cancelled (Ctrl-C).
    #[must_use]
    pub fn cancel_token(mut self, token: CancellationToken) -> Self {
        self.cancel = token;
        self
    }

    /// How long `up` waits for a new host to accept SSH (default 10 minutes).
    #[must_use]
    pub fn host_ready_within(mut self, d: Duration) -> Self {
        self.host_ready_within = d;
        self
    }

    /// The pauses of a capacity wait ([`RunOptions::wait_for_capacity`]): the first, and
    /// the largest they double up to (default 30 s and 10 min; tests make them short).
    #[must_use]
    pub fn capacity_backoff(mut self, first: Duration, max: Duration) -> Self {
        self.capacity_backoff = (first, max.max(first));
        self
    }

    /// The capacity wait a run with `opts` uses.
    fn capacity_wait(&self, opts: &RunOptions) -> Option<crate::plan::CapacityWait> {
        opts.wait_for_capacity.then_some(crate::plan::CapacityWait {
            limit: opts.wait_for_capacity_limit,
            first_delay: self.capacity_backoff.0,
            max_delay: self.capacity_backoff.1,
        })
    }

    /// How `up` and `start` ask before applying a change that stops or restarts the VM
    /// (the CLI: a terminal prompt). Without one, such a change needs
    /// [`RunOptions::yes`] and is refused otherwise.
    #[must_use]
    pub fn confirm_with(mut self, confirm: ConfirmFn) -> Self {
        self.confirm = Some(confirm);
        self
    }

    /// The confirmation a run of `up` uses: everything with `yes`, else the runner's
    /// callback (none: refuse).
    fn confirmation(&self, yes: bool) -> Option<ConfirmFn> {
        if yes {
            Some(Arc::new(|_: &Disruption| true))
        } else {
            self.confirm.clone()
        }
    }

    /// The spec.
    pub fn env(&self) -> &Env {
        &self.env
    }

    /// The steps, in declared order, with what they run after.
    pub fn steps(&self) -> Vec<StepInfo> {
        infos(&self.steps)
    }

    /// The state file of this environment (it exists while kgenv has created something).
    pub fn state_path(&self) -> PathBuf {
        state_file(&self.state_dir, &self.env.name)
    }

    /// What kgenv recorded for this environment.
    pub async fn state(&self) -> Result<State> {
        Ok(self.store()?.snapshot().await)
    }

    fn store(&self) -> Result<StateStore> {
        Ok(StateStore::open(
            &self.state_dir,
            &self.env.name,
            self.env.target.kind(),
        )?)
    }

    /// The engine's context for a run of this environment.
    fn ctx(&self, events: EventSink) -> Result<StepCtx> {
        Ok(StepCtx::new(
            self.env.clone(),
            self.backends.clone(),
            self.store()?,
            events,
            crate::steps::host::addr_for,
        )
        .with_cancel(self.cancel.clone())
        .with_host_ready_within(self.host_ready_within)
        .with_price_cache(self.price_cache.clone()))
    }

    /// The context of an operation on a running environment, reporting as `step`: it
    /// waits for SSH only [`OPS_CONNECT_WITHIN`].
    fn ops_ctx(&self, events: EventSink, step: &str) -> Result<StepCtx> {
        Ok(self
            .ctx(events)?
            .with_host_ready_within(OPS_CONNECT_WITHIN)
            .for_step(step))
    }

    /// Holds the environment's lock for the duration of a mutating run, so two shells
    /// cannot run `up` and `down` on the same environment at once. A lock still held is
    /// asked for again for [`LOCK_GRACE`] before the run gives up: a process that has just
    /// finished (or a child forked while the lock's file was open, until its `exec` closes
    /// it) lets go within moments, and the user should not see "busy" for that.
    async fn lock(&self) -> Result<std::fs::File> {
        std::fs::create_dir_all(&self.state_dir).map_err(|source| StateError::Io {
            path: self.state_dir.clone(),
            source,
        })?;
        let path = self.state_dir.join(format!("{}.lock", self.env.name));
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|source| StateError::Io {
                path: path.clone(),
                source,
            })?;
        let give_up = std::time::Instant::now() + LOCK_GRACE;
        loop {
            match file.try_lock() {
                Ok(()) => return Ok(file),
                Err(std::fs::TryLockError::WouldBlock) if std::time::Instant::now() < give_up => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(std::fs::TryLockError::WouldBlock) => {
                    return Err(StateError::Locked {
                        env: self.env.name.clone(),
                        path,
                    }
                    .into())
                }
                Err(std::fs::TryLockError::Error(source)) => {
                    return Err(StateError::Io { path, source }.into())
                }
            }
        }
    }

    fn select(&self, opts: &RunOptions) -> Result<std::collections::BTreeSet<String>> {
        drive::select(&self.steps, &opts.only, opts.until.as_deref())
    }

    /// Dry run: what would change, and the API calls and host commands it would make, and
    /// what the environment would cost ([`Report::prices`]). Makes no mutating call. Steps whose dependencies will change are not observed (their
    /// host may not exist yet) and are shown with the actions they would take.
    pub async fn plan(
        &self,
        opts: RunOptions,
        on_event: impl Fn(Event) + Send + Sync + 'static,
    ) -> Result<Report> {
        let selected = self.select(&opts)?;
        let ctx = self.ctx(EventSink::new(on_event))?;
        let report = drive::plan(&self.steps, &selected, &ctx, "plan").await?;
        Ok(self.with_prices(&ctx, report).await)
    }

    /// Converges the environment: each step checks, and applies only when it differs.
    pub async fn up(
        &self,
        opts: RunOptions,
        on_event: impl Fn(Event) + Send + Sync + 'static,
    ) -> Result<Report> {
        let _lock = self.lock().await?;
        self.refuse_mid_move("up").await?;
        let selected = self.select(&opts)?;
        let mut ctx = self
            .ctx(EventSink::new(on_event))?
            .with_capacity_wait(self.capacity_wait(&opts));
        if let Some(confirm) = self.confirmation(opts.yes) {
            ctx = ctx.with_confirm(confirm);
        }
        drive::up(&self.steps, &selected, &ctx, "up").await
    }

    /// What `down` with `opts` would delete and keep, step by step in `down`'s order
    /// (honouring `only`, `until`, `delete_buckets` and `delete_disks`). Read-only: it
    /// reads the state file and makes no call.
    pub async fn down_preview(&self, opts: &RunOptions) -> Result<DownPreview> {
        let selected = self.select(opts)?;
        let ctx = self.down_ctx(opts, EventSink::new(|_| {}))?;
        Ok(self.preview(&selected, &ctx).await)
    }

    /// `down`'s preview; with a move under way, also what the move keeps (`down` never
    /// deletes the old disk, the snapshot or the new disk of an unfinished move).
    async fn preview(
        &self,
        selected: &std::collections::BTreeSet<String>,
        ctx: &StepCtx,
    ) -> DownPreview {
        let state = ctx.state.snapshot().await;
        let mut preview = drive::down_preview(&self.steps, selected, &state, ctx);
        if let Some(keeps) = Self::move_keeps(&state) {
            preview.steps.push(StepTeardown {
                step: crate::steps::data_disk::relocate::MOVE_ID.to_string(),
                teardown: Teardown {
                    keeps,
                    ..Teardown::default()
                },
            });
        }
        preview
    }

    /// The context of a `down` with `opts`' buckets and disks to delete.
    fn down_ctx(&self, opts: &RunOptions, events: EventSink) -> Result<StepCtx> {
        Ok(self
            .ctx(events)?
            .with_delete_buckets(opts.delete_buckets.clone())
            .with_delete_disks(opts.delete_disks.clone()))
    }

    /// Removes what kgenv created, dependents first, without asking (a Rust program calling
    /// it has decided; the CLI and Python call [`Runner::down_confirmed`]). Buckets and
    /// data disks are kept unless named in `opts.delete_buckets` / `opts.delete_disks`;
    /// naming one that is not the environment's is an error before anything changes.
    pub async fn down(
        &self,
        opts: RunOptions,
        on_event: impl Fn(Event) + Send + Sync + 'static,
    ) -> Result<Report> {
        self.down_asking(opts.yes(), |_| true, on_event).await
    }

    /// `down` as the CLI and Python run it: first the [`DownPreview`] of what it deletes
    /// and keeps, then — unless `opts.yes`, or nothing would be deleted — `ask` with that
    /// preview (a terminal prompt; `|_| false` where nobody can answer). Refused, it fails
    /// with [`Error::NotConfirmed`] carrying the preview and changes nothing. The
    /// environment stays locked from the preview to the end, so what was shown is what is
    /// deleted.
    pub async fn down_confirmed(
        &self,
        opts: RunOptions,
        ask: impl FnOnce(&DownPreview) -> bool,
        on_event: impl Fn(Event) + Send + Sync + 'static,
    ) -> Result<Report> {
        self.down_asking(opts, ask, on_event).await
    }

    async fn down_asking(
        &self,
        opts: RunOptions,
        ask: impl FnOnce(&DownPreview) -> bool,
        on_event: impl Fn(Event) + Send + Sync + 'static,
    ) -> Result<Report> {
        let _lock = self.lock().await?;
        let selected = self.select(&opts)?;
        let known: Vec<&str> = self.env.bucket.iter().map(|b| b.bucket.as_str()).collect();
        if let Some(unknown) = opts
            .delete_buckets
            .iter()
            .find(|b| !known.contains(&b.as_str()))
        {
            return Err(Error::Usage(format!("bucket `{unknown}` is not this environment's bucket ({}); kgenv deletes only the bucket it mounts, and only when named", if known.is_empty() { "it has none".to_string() } else { known.join(", ") })));
        }
        let ctx = self.down_ctx(&opts, EventSink::new(on_event))?;
        if !opts.delete_disks.is_empty() {
            if let Some(m) =
                crate::steps::data_disk::relocate::pending_move(&ctx.state.snapshot().await)
            {
                return Err(Error::Usage(format!(
                    "a move of the data disk to {} is incomplete, so `down` deletes no disk; finish it with `kgenv move {}` first (the old disk and the snapshot are kept until then)",
                    m.to_zone, m.to_zone
                )));
            }
        }
        let preview = self.preview(&selected, &ctx).await;
        let disks = preview.disks();
        if let Some(unknown) = opts.delete_disks.iter().find(|d| !disks.contains(d)) {
            return Err(Error::Usage(format!(
                "disk `{unknown}` is not a disk this environment keeps ({}); kgenv deletes only the data disk it made, and only when named",
                if disks.is_empty() {
                    "it keeps none in the steps this `down` covers".to_string()
                } else {
                    disks.join(", ")
                }
            )));
        }
        if !opts.yes && !preview.deletes_nothing() && !ask(&preview) {
            return Err(preview.not_confirmed());
        }
        drive::down(&self.steps, &selected, &ctx).await
    }

    /// The state file, a live check of every step, the environment's prices and what the
    /// running VM has cost so far.
    pub async fn status(
        &self,
        on_event: impl Fn(Event) + Send + Sync + 'static,
    ) -> Result<StatusReport> {
        let selected = self.select(&RunOptions::default())?;
        let ctx = self.ctx(EventSink::new(on_event))?;
        let live = drive::plan(&self.steps, &selected, &ctx, "status").await?;
        let kept = self.preview(&selected, &ctx).await.keeps();
        let state = ctx.state.snapshot().await;
        let (prices, running) = self.status_prices(&ctx, &state).await;
        let buckets = self.kept_buckets(&state).await;
        let preempted = match (&self.env.target, &self.env.instance) {
            (Target::Gce, Some(spec)) => {
                crate::steps::instance::recorded_preemption(&ctx, spec).await?
            }
            _ => None,
        };
        Ok(StatusReport {
            state_file: ctx.state.path().to_path_buf(),
            state,
            live,
            kept,
            prices: prices.map(Box::new),
            running: running.map(Box::new),
            preempted,
            buckets,
        })
    }

    /// The error for a verb that needs a GCE instance on an environment without one.
    fn needs_instance(&self, verb: &str) -> Result<()> {
        match (&self.env.target, &self.env.instance) {
            (Target::Gce, Some(_)) => Ok(()),
            _ => Err(Error::Usage(format!(
                "`kgenv {verb}` needs a GCE instance; `{}` has none (target is `{}`)",
                self.env.name,
                self.env.target.kind()
            ))),
        }
    }

    /// `kgenv stop`: stops the environment's GCE instance and keeps its disks, so the GPU
    /// is no longer billed. `start` or `up` resumes.
    pub async fn stop(&self, on_event: impl Fn(Event) + Send + Sync + 'static) -> Result<Report> {
        self.needs_instance("stop")?;
        let _lock = self.lock().await?;
        let selected = self.select(&RunOptions::default())?;
        let ctx = self.ctx(EventSink::new(on_event))?;
        drive::stop(&self.steps, &selected, &ctx).await
    }

    /// `kgenv start`: starts the stopped instance and converges everything up to the host
    /// (its new address and pinned host keys recorded, the firewall rule still admitting
    /// this machine, `ssh <env>` pointing at it): `up --until host`.
    pub async fn start(&self, on_event: impl Fn(Event) + Send + Sync + 'static) -> Result<Report> {
        self.start_with(RunOptions::default(), on_event).await
    }

    /// `kgenv start` with options: [`RunOptions::wait_for_capacity`] retries the start in
    /// rounds while the VM's zone has no capacity (the VM stays stopped with its disks
    /// meanwhile). Steps and `yes` in `opts` are not used: `start` runs up to the host.
    pub async fn start_with(
        &self,
        opts: RunOptions,
        on_event: impl Fn(Event) + Send + Sync + 'static,
    ) -> Result<Report> {
        self.needs_instance("start")?;
        let _lock = self.lock().await?;
        self.refuse_mid_move("start").await?;
        let selected = self.select(&RunOptions::default().until("host"))?;
        let mut ctx = self
            .ctx(EventSink::new(on_event))?
            .with_capacity_wait(self.capacity_wait(&opts));
        if let Some(confirm) = self.confirmation(false) {
            ctx = ctx.with_confirm(confirm);
        }
        drive::up(&self.steps, &selected, &ctx, "start").await
    }
}
