//! The [`Step`] trait every step of the guide implements, and the context it runs in.
//!
//! The engine knows no step: what steps share during a run (the GCE preflight's findings,
//! the caller's IP) lives in typed slots of the run's session ([`StepCtx::shared`]), and how
//! to reach the host is a function the runner hands in ([`HostLocator`]).
//!
//! Two things let a run show what it would destroy before it does: each step says what its
//! `destroy` would delete and keep ([`Step::teardown`], read from the state file alone, for
//! `down`'s preview), and a `check` that finds a change which stops or restarts something
//! marks it ([`CheckOutcome::disruptive`]) so `up` asks the context's confirmation
//! ([`StepCtx::with_confirm`]) before applying it.

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::OnceCell;
use tokio_util::sync::CancellationToken;

use super::events::{Event, EventSink};
use super::remote::StepRemote;
use crate::backends::container::{ContainerEngine, EngineLocation};
use crate::backends::remote::{CommandTimeout, HostAddr};
use crate::backends::{Backends, Progress, Remote, SshAliases};
use crate::error::{BackendError, Result};
use crate::spec::{Env, Target};
use crate::state::{State, StateStore, StepRecord};

/// What `check` observed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Observed {
    /// Everything is as specified.
    Satisfied,
    /// Nothing of it exists yet.
    Missing,
    /// It exists but differs; each entry is a readable difference (`machine_type: a → b`).
    Drifted(Vec<String>),
}

/// The result of [`Step::check`]: what is there and what applying would do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckOutcome {
    /// The observation.
    pub observed: Observed,
    /// The API calls and host commands `apply` would make (empty when satisfied).
    pub actions: Vec<String>,
    /// What applying would stop, restart or recreate ("stops and restarts the VM"), when
    /// it would: `plan` shows it, and `up` applies it only once confirmed.
    pub disruption: Option<String>,
}

impl CheckOutcome {
    /// Nothing to do.
    pub fn satisfied() -> Self {
        Self {
            observed: Observed::Satisfied,
            actions: Vec::new(),
            disruption: None,
        }
    }
    /// To be created by these actions.
    pub fn missing(actions: Vec<String>) -> Self {
        Self {
            observed: Observed::Missing,
            actions,
            disruption: None,
        }
    }
    /// To be changed: differences and actions.
    pub fn drifted(diff: Vec<String>, actions: Vec<String>) -> Self {
        Self {
            observed: Observed::Drifted(diff),
            actions,
            disruption: None,
        }
    }
    /// Applying stops, restarts or recreates something the user may be using: `what`
    /// says what, as a phrase (`"stops and restarts the VM"`). `up` asks before applying.
    #[must_use]
    pub fn disruptive(mut self, what: impl Into<String>) -> Self {
        self.disruption = Some(what.into());
        self
    }
}

/// A change `up` is about to apply that stops, restarts or recreates something: what the
/// confirmation callback ([`StepCtx::with_confirm`]) is shown.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Disruption {
    /// The step that would apply it.
    pub step: String,
    /// What it stops or restarts (`"stops and restarts the VM"`).
    pub what: String,
    /// The differences that call for it (`machine_type: a → b`).
    pub diff: Vec<String>,
}

impl std::fmt::Display for Disruption {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "step `{}` {}", self.step, self.what)?;
        if !self.diff.is_empty() {
            write!(f, " ({})", self.diff.join("; "))?;
        }
        Ok(())
    }
}

/// Asks whether a [`Disruption`] may go ahead: `true` applies it. Called from the run's
/// tasks, so it must be `Send + Sync`; it may block (a terminal prompt).
pub type ConfirmFn = Arc<dyn Fn(&Disruption) -> bool + Send + Sync>;

/// How long a remote command of a step may run unless the step says otherwise
/// ([`Step::command_timeout`]) or kgenv.toml's `[timeouts]` does: long enough for an
/// install script on a slow first boot, short enough that a hung `mount` does not hold `up`
/// for ever.
pub const DEFAULT_COMMAND_TIMEOUT: CommandTimeout =
    CommandTimeout::total(Duration::from_secs(10 * 60));

/// What a step's `destroy` would do, from the state file alone: one readable line per
/// resource it deletes (`instance projects/p/zones/z/instances/kg`) and per resource it
/// keeps on purpose (`bucket gs://b (delete with --delete-bucket b)`).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Teardown {
    /// What `down` deletes.
    pub deletes: Vec<String>,
    /// What `down` leaves in place (buckets, data disks), with how to delete it.
    pub keeps: Vec<String>,
    /// Names of the persistent disks this step keeps unless named with `--delete-disk`,
    /// listed whether or not this run deletes them: the names `--delete-disk` accepts.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub disks: Vec<String>,
}

impl Teardown {
    /// The default: every resource the record lists as created is deleted.
    pub fn deleting_created(record: &StepRecord) -> Self {
        Self {
            deletes: record
                .created
                .iter()
                .map(|(role, id)| format!("{role} {id}"))
                .collect(),
            ..Self::default()
        }
    }

    /// Also deletes `what` (a readable line).
    #[must_use]
    pub fn delete(mut self, what: impl Into<String>) -> Self {
        self.deletes.push(what.into());
        self
    }

    /// Also keeps `what` (a readable line).
    #[must_use]
    pub fn keep(mut self, what: impl Into<String>) -> Self {
        self.keeps.push(what.into());
        self
    }

    /// A persistent disk this step holds, kept unless `--delete-disk NAME` names it.
    /// Only records the name; say whether it is deleted or kept with
    /// [`delete`](Self::delete) or [`keep`](Self::keep).
    #[must_use]
    pub fn disk(mut self, name: impl Into<String>) -> Self {
        self.disks.push(name.into());
        self
    }

    /// Whether the step would neither delete nor keep anything.
    pub fn is_empty(&self) -> bool {
        self.deletes.is_empty() && self.keeps.is_empty()
    }
}

/// What `destroy` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Destroyed {
    /// It removed something kgenv had created.
    Removed,
    /// There was nothing of kgenv's to remove (or it is kept on purpose, like a bucket).
    Nothing,
}

/// One step of the guide: observe, converge, tear down.
///
/// `check` must not change anything. `apply` is called only when `check` found a
/// difference, and records what it created in the state file *as soon as it exists*, so a
/// crash right after leaves a state `down` can clean up. `destroy` removes only what the
/// state file says kgenv created.
#[async_trait]
pub trait Step: Send + Sync {
    /// Stable id (`instance`, `firewall/kg-ssh`, `data/titanic`).
    fn id(&self) -> &str;
    /// Ids of steps that must be done first.
    fn deps(&self) -> &[String];
    /// One line saying what the step manages.
    fn summary(&self) -> String;
    /// Warnings known from the spec alone (a world-open firewall).
    fn warnings(&self) -> Vec<String> {
        Vec::new()
    }
    /// Checks local inputs (a password variable, certificate files) before the run makes any
    /// call, so bad input fails fast with nothing sent.
    async fn preflight(&self, _ctx: &StepCtx) -> Result<()> {
        Ok(())
    }
    /// The actions `apply` would take from nothing, for `plan` when `check` cannot run yet.
    fn planned_actions(&self) -> Vec<String>;
    /// Observes the real state.
    async fn check(&self, ctx: &StepCtx) -> Result<CheckOutcome>;
    /// Converges the real state to the spec.
    async fn apply(&self, ctx: &StepCtx) -> Result<()>;
    /// Removes what kgenv created.
    async fn destroy(&self, ctx: &StepCtx) -> Result<Destroyed>;
    /// What `destroy` would delete and keep, from this step's `record` in the state file
    /// (empty when it has none) and the run's choices on `ctx`
    /// ([`StepCtx::delete_bucket_requested`], [`StepCtx::delete_disk_requested`]). Must make
    /// no call: `down` shows it before asking. Default: every `created` entry is deleted.
    fn teardown(&self, record: &StepRecord, _ctx: &StepCtx) -> Teardown {
        Teardown::deleting_created(record)
    }
    /// How long each command this step runs on the host may take before it is killed and
    /// the step fails, unless the request sets its own limit. kgenv.toml's `[timeouts]`
    /// entry for the step replaces the duration (what it measures stays). Steps with long
    /// commands that show progress override it with an inactivity limit.
    fn command_timeout(&self) -> CommandTimeout {
        DEFAULT_COMMAND_TIMEOUT
    }
    /// `stop`: pauses what bills by the hour and keeps everything else (the VM stops, its
    /// disks stay). `Ok(true)` when something was stopped; most steps have nothing to stop.
    async fn stop(&self, _ctx: &StepCtx) -> Result<bool> {
        Ok(false)
    }
}

/// How to reach an environment's host from its spec and what the state file recorded (on
/// gce: the instance's address and pinned host keys). Given by the runner, so the engine
/// does not depend on the step that records the address.
pub type HostLocator = fn(&Env, &State) -> Result<HostAddr>;

/// Connections opened during a run and values its steps share, made on first use.
#[derive(Default)]
pub(crate) struct Session {
    remote: OnceCell<Arc<dyn Remote>>,
    engine: OnceCell<Arc<dyn ContainerEngine>>,
    shared: Mutex<HashMap<TypeId, Arc<dyn Any + Send + Sync>>>,
}

/// How a run waits for GPU capacity when every zone is out (`--wait-for-capacity`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CapacityWait {
    /// The longest kgenv waits; `None`: until it gets capacity or Ctrl-C.
    pub limit: Option<Duration>,
    /// The first pause between two rounds of tries.
    pub first_delay: Duration,
    /// The largest pause (the pauses double up to it).
    pub max_delay: Duration,
}

/// Everything a step may use: the spec, the backends, the state file, events, cancellation.
#[derive(Clone)]
pub struct StepCtx {
    /// The environment's spec.
    pub env: Arc<Env>,
    /// The backends.
    pub backends: Backends,
    /// The state file.
    pub state: StateStore,
    /// Cancelled on Ctrl-C; long steps stop at a safe point.
    pub cancel: CancellationToken,
    session: Arc<Session>,
    events: EventSink,
    step: String,
    locate_host: HostLocator,
    host_ready_within: Duration,
    delete_buckets: Arc<Vec<String>>,
    delete_disks: Arc<Vec<String>>,
    confirm: Option<ConfirmFn>,
    read_only: bool,
    command_timeout: Option<CommandTimeout>,
    capacity_wait: Option<CapacityWait>,
    price_cache: Option<std::path::PathBuf>,
}

impl std::fmt::Debug for StepCtx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StepCtx")
            .field("step", &self.step)
            .finish_non_exhaustive()
    }
}

impl StepCtx {
    /// A context for a run of `env` on `backends` with its state in `state`. Events go to
    /// `events`; the host is found with `locate_host`.
    pub fn new(
        env: Arc<Env>,
        backends: Backends,
        state: StateStore,
        events: EventSink,
        locate_host: HostLocator,
    ) -> Self {
        Self {
            env,
            backends,
            state,
            cancel: CancellationToken::new(),
            session: Arc::default(),
            events,
            step: String::new(),
            locate_host,
            host_ready_within: Duration::from_secs(600),
            delete_buckets: Arc::default(),
            delete_disks: Arc::default(),
            confirm: None,
            read_only: false,
            command_timeout: None,
            capacity_wait: None,
            price_cache: None,
        }
    }

    /// The context of a run that only looks (`plan`, `status`): steps write nothing, here
    /// or on the host, make no token or key and copy nothing; what they cannot know
    /// without a change they report as [`BackendError::Unavailable`] (shown as unknown).
    /// The host connection does not record a new host key either.
    #[must_use]
    pub fn read_only(mut self) -> Self {
        self.read_only = true;
        self
    }

    /// Whether this run only looks (see [`Self::read_only`]): a step's `check` must then
    /// leave every file, here and on the host, as it found it.
    pub fn is_read_only(&self) -> bool {
        self.read_only
    }

    /// Cancels the run's steps when `token` is cancelled.
    #[must_use]
    pub fn with_cancel(mut self, token: CancellationToken) -> Self {
        self.cancel = token;
        self
    }

    /// How long a step waits for the host to accept SSH (a new VM takes minutes).
    #[must_use]
    pub fn with_host_ready_within(mut self, d: Duration) -> Self {
        self.host_ready_within = d;
        self
    }

    /// `down` also deletes these buckets (kept otherwise).
    #[must_use]
    pub fn with_delete_buckets(mut self, names: Vec<String>) -> Self {
        self.delete_buckets = Arc::new(names);
        self
    }

    /// `down` also deletes these persistent disks (data disks are kept otherwise).
    #[must_use]
    pub fn with_delete_disks(mut self, names: Vec<String>) -> Self {
        self.delete_disks = Arc::new(names);
        self
    }

    /// How `up` asks before applying a change that stops or restarts something
    /// ([`CheckOutcome::disruptive`]). Without one, such changes are refused.
    #[must_use]
    pub fn with_confirm(mut self, confirm: ConfirmFn) -> Self {
        self.confirm = Some(confirm);
        self
    }

    /// Whether `disruption` may go ahead: the confirmation callback's answer, `false`
    /// without one.
    pub fn confirm(&self, disruption: &Disruption) -> bool {
        self.confirm.as_ref().is_some_and(|f| f(disruption))
    }

    /// The same context for another step (events are attributed to it). Its remote
    /// commands get [`DEFAULT_COMMAND_TIMEOUT`], or the `[timeouts]` entry for `step`.
    pub fn for_step(&self, step: &str) -> Self {
        Self {
            step: step.to_string(),
            ..self.clone()
        }
        .with_command_timeout(DEFAULT_COMMAND_TIMEOUT)
    }

    /// The context `step` runs in: [`Self::for_step`] with the step's own command limit
    /// ([`Step::command_timeout`]), still overridden by `[timeouts]`.
    pub fn for_step_of(&self, step: &dyn Step) -> Self {
        self.for_step(step.id())
            .with_command_timeout(step.command_timeout())
    }

    /// Limits this step's remote commands to `default`, or to the duration kgenv.toml's
    /// `[timeouts]` gives the step (what the limit measures stays `default`'s).
    #[must_use]
    pub fn with_command_timeout(mut self, default: CommandTimeout) -> Self {
        let limit = match self.env.timeouts.for_step(&self.step) {
            Some(d) => default.with_after(d),
            None => default,
        };
        self.command_timeout = Some(limit);
        self
    }

    /// Lifts the limit on remote commands: for the user's own commands (`kgenv ssh -- CMD`,
    /// a tunnel), which take as long as they take unless the request says otherwise.
    #[must_use]
    pub fn without_command_timeout(mut self) -> Self {
        self.command_timeout = None;
        self
    }

    /// The limit this context puts on remote commands that set none.
    pub fn command_timeout(&self) -> Option<CommandTimeout> {
        self.command_timeout
    }

    /// Where the run's events go.
    pub fn events(&self) -> &EventSink {
        &self.events
    }

    /// The step this context reports for.
    pub fn step_id(&self) -> &str {
        &self.step
    }

    /// How long to wait for the host to accept SSH.
    pub fn host_ready_within(&self) -> Duration {
        self.host_ready_within
    }

    /// Waits for GPU capacity in rounds when every zone is out (`None`: give up after
    /// one pass).
    #[must_use]
    pub fn with_capacity_wait(mut self, wait: Option<CapacityWait>) -> Self {
        self.capacity_wait = wait;
        self
    }

    /// Keeps the price cache files in `dir` (the runner's; default: kgenv's cache dir).
    #[must_use]
    pub fn with_price_cache(mut self, dir: std::path::PathBuf) -> Self {
        self.price_cache = Some(dir);
        self
    }

    /// Where this run keeps the price cache, when the runner said.
    pub fn price_cache(&self) -> Option<&std::path::Path> {
        self.price_cache.as_deref()
    }

    /// Whether and how this run waits for GPU capacity.
    pub fn capacity_wait(&self) -> Option<CapacityWait> {
        self.capacity_wait
    }

    /// The value of type `T` shared by every step of this run, made with `Default` on first
    /// use: how one step hands what it learned to another (a `OnceCell` inside `T` makes
    /// it computed once) without the engine knowing the type.
    pub fn shared<T: Default + Send + Sync + 'static>(&self) -> Arc<T> {
        let mut slots = self
            .session
            .shared
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let slot = slots
            .entry(TypeId::of::<T>())
            .or_insert_with(|| Arc::new(T::default()));
        match slot.clone().downcast::<T>() {
            Ok(v) => v,
            // Unreachable: the slot was made for this TypeId.
            Err(_) => Arc::new(T::default()),
        }
    }

    /// Who owns this environment's resources (the owner id from the state file).
    pub async fn owner(&self) -> crate::state::Owner {
        self.state.snapshot().await.owner()
    }

    /// How to reach the host, from the spec and the state recorded so far.
    pub async fn host_addr(&self) -> Result<HostAddr> {
        (self.locate_host)(&self.env, &self.state.snapshot().await)
    }

    /// Whether the user asked `down` to delete bucket `name` (buckets are kept otherwise).
    pub fn delete_bucket_requested(&self, name: &str) -> bool {
        self.delete_buckets.iter().any(|b| b == name)
    }

    /// Whether the user asked `down` to delete persistent disk `name` (data disks are kept
    /// otherwise).
    pub fn delete_disk_requested(&self, name: &str) -> bool {
        self.delete_disks.iter().any(|d| d == name)
    }

    /// Reports a line of output.
    pub fn log(&self, line: impl Into<String>) {
        self.events.emit(Event::Log {
            step: self.step.clone(),
            stream: crate::backends::Stream::Stdout,
            line: line.into(),
        });
    }

    /// Reports a warning.
    pub fn warn(&self, message: impl Into<String>) {
        self.events.emit(Event::Warning {
            step: self.step.clone(),
            message: message.into(),
        });
    }

    /// Forwards backend progress as events of this step.
    pub fn progress(&self, p: Progress) {
        self.events.emit(Event::from_progress(&self.step, p));
    }

    /// The user's SSH config, to keep `ssh <env>` working, when the run manages it.
    pub fn ssh_aliases(&self) -> Option<&Arc<dyn SshAliases>> {
        self.backends.ssh_aliases.as_ref()
    }

    /// The host session (SSH), connecting on first use. `None` on the local target. The
    /// session is shared by the run; what this returns is this step's view of it: commands
    /// without a limit of their own get [`Self::command_timeout`], and a timeout names the
    /// step.
    pub async fn remote(&self) -> Result<Option<Arc<dyn Remote>>> {
        if self.env.target == Target::Local {
            return Ok(None);
        }
        let remote = self
            .session
            .remote
            .get_or_try_init(|| async {
                let mut addr = self.host_addr().await?;
                self.log(format!("connecting to {addr}"));
                // Trusting a key on first use records it in known_hosts: a run that only
                // looks connects only to a host whose key is already known.
                let asked_tofu = addr.trust_on_first_use;
                addr.trust_on_first_use = asked_tofu && !self.read_only;
                let r = self
                    .backends
                    .remote
                    .connect(&addr, self.host_ready_within)
                    .await;
                match r {
                    Ok(r) => Ok::<_, crate::Error>(r),
                    Err(BackendError::InvalidArgument { message, .. })
                        if asked_tofu && self.read_only =>
                    {
                        Err(BackendError::Unavailable {
                            backend: "remote",
                            hint: format!("{addr}: {message} (its key is not recorded yet: `kgenv up` trusts it on first use and records it; plan and status record nothing)"),
                        }
                        .into())
                    }
                    Err(e) => Err(e.into()),
                }
            })
            .await?;
        Ok(Some(match self.command_timeout {
            Some(limit) => Arc::new(StepRemote::new(remote.clone(), &self.step, limit)),
            None => remote.clone(),
        }))
    }

    /// The host session, or an error on the local target (for host-only steps).
    pub async fn require_remote(&self) -> Result<Arc<dyn Remote>> {
        self.remote().await?.ok_or_else(|| {
            BackendError::Unavailable {
                backend: "remote",
                hint: "this step needs a gce or ssh host".into(),
            }
            .into()
        })
    }

    /// The Docker engine where the container runs, connecting on first use.
    pub async fn engine(&self) -> Result<Arc<dyn ContainerEngine>> {
        let engine = self
            .session
            .engine
            .get_or_try_init(|| async {
                // The engine outlives this step and is shared by all: it gets the session
                // itself, not this step's limited view of it.
                let at = match self.clone().without_command_timeout().remote().await? {
                    Some(r) => EngineLocation::Remote(r),
                    None => EngineLocation::Local,
                };
                Ok::<_, crate::Error>(self.backends.engine.connect(at).await?)
            })
            .await?;
        Ok(engine.clone())
    }
}
