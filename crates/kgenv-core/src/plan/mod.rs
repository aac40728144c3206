//! Plans and runs: turns an [`Env`] into a DAG of [`Step`]s and runs `plan`, `up`, `down`
//! and `status` over it, streaming [`Event`]s.
//!
//! A second `up` finds every step satisfied and makes no mutating call; `down` removes only
//! what the state file says kgenv created, in reverse dependency order; cancelling lets
//! running steps finish so the state file stays consistent.

mod events;
mod executor;
mod ops;
mod step;

pub use events::{Change, Event, EventSink, Phase};
pub use executor::{Outcome, StepOutcome};
pub use step::{CheckOutcome, Destroyed, Observed, Step, StepCtx};

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::backends::Backends;
use crate::error::{error_chain, Error, Result, StateError};
use crate::spec::Env;
use crate::state::{State, StateStore};
use executor::{run_dag, Direction};

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
}

/// What a run did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// `plan`, `up`, `down` or `status`.
    pub operation: String,
    /// Environment name.
    pub env: String,
    /// Each step's outcome, in the order they finished.
    pub steps: Vec<StepOutcome>,
    /// Wall time in milliseconds.
    pub elapsed_ms: u64,
}

impl Report {
    /// Steps that changed something (created, updated, removed).
    pub fn changed(&self) -> usize {
        self.steps
            .iter()
            .filter(|s| matches!(s.outcome, Outcome::Changed | Outcome::Removed))
            .count()
    }

    /// Steps `plan` expects to change.
    pub fn planned_changes(&self) -> usize {
        self.steps
            .iter()
            .filter(
                |s| matches!(&s.outcome, Outcome::Planned { change } if *change != Change::None),
            )
            .count()
    }

    /// The outcome of one step.
    pub fn outcome(&self, step: &str) -> Option<&Outcome> {
        self.steps
            .iter()
            .find(|s| s.step == step)
            .map(|s| &s.outcome)
    }
}

/// What `status` shows: the state file and a live look at each step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatusReport {
    /// The state file's path.
    pub state_file: PathBuf,
    /// What kgenv recorded.
    pub state: State,
    /// A live check of each step (as `plan` does).
    pub live: Report,
}

/// Runs operations on one environment.
pub struct Runner {
    env: Arc<Env>,
    backends: Backends,
    state_dir: PathBuf,
    cancel: CancellationToken,
    steps: Vec<Arc<dyn Step>>,
    host_ready_within: Duration,
    ssh_config: Option<crate::ssh::SshConfigFiles>,
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
            state_dir: StateStore::default_dir(),
            cancel: CancellationToken::new(),
            steps,
            host_ready_within: Duration::from_secs(600),
            ssh_config: None,
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

    /// How long to wait for a new host to accept SSH.
    #[must_use]
    pub fn host_ready_within(mut self, d: Duration) -> Self {
        self.host_ready_within = d;
        self
    }

    /// Keeps a Host block for this environment in `files` (and an `Include` line in the
    /// user's `~/.ssh/config`), so `ssh <env>` and editors' remote plugins work.
    #[must_use]
    pub fn ssh_config(mut self, files: crate::ssh::SshConfigFiles) -> Self {
        self.ssh_config = Some(files);
        self
    }

    /// An SSH session to the environment's host (from the state file on gce), or `None` on
    /// the local target. For `kgenv jupyter` and `kgenv ssh`.
    pub async fn connect_host(&self) -> Result<Option<Arc<dyn crate::backends::Remote>>> {
        let ctx = self.ctx(&EventSink::new(|_| {}))?;
        ctx.remote().await
    }

    /// The spec.
    pub fn env(&self) -> &Env {
        &self.env
    }

    /// The steps, in declared order.
    pub fn steps(&self) -> &[Arc<dyn Step>] {
        &self.steps
    }

    /// The state file of this environment.
    pub fn state_path(&self) -> PathBuf {
        StateStore::path_for(&self.state_dir, &self.env.name)
    }

    fn select(&self, opts: &RunOptions) -> Result<BTreeSet<String>> {
        let ids: Vec<&str> = self.steps.iter().map(|s| s.id()).collect();
        let matching = |pat: &str| -> Result<Vec<String>> {
            let m: Vec<String> = ids
                .iter()
                .filter(|id| **id == pat || id.starts_with(&format!("{pat}/")))
                .map(|s| s.to_string())
                .collect();
            if m.is_empty() {
                return Err(Error::Usage(format!(
                    "no step `{pat}` in this environment; steps are: {}",
                    ids.join(", ")
                )));
            }
            Ok(m)
        };
        let mut selected: BTreeSet<String> = if opts.only.is_empty() {
            ids.iter().map(|s| s.to_string()).collect()
        } else {
            let mut s = BTreeSet::new();
            for pat in &opts.only {
                s.extend(matching(pat)?);
            }
            s
        };
        if let Some(until) = &opts.until {
            let mut keep = BTreeSet::new();
            let mut stack = matching(until)?;
            while let Some(id) = stack.pop() {
                if keep.insert(id.clone()) {
                    if let Some(step) = self.steps.iter().find(|s| s.id() == id) {
                        stack.extend(step.deps().iter().cloned());
                    }
                }
            }
            selected = selected.intersection(&keep).cloned().collect();
        }
        Ok(selected)
    }

    fn ctx(&self, events: &EventSink) -> Result<StepCtx> {
        let state = StateStore::open(&self.state_dir, &self.env.name, self.env.target.kind())?;
        Ok(StepCtx {
            env: self.env.clone(),
            backends: self.backends.clone(),
            state,
            cancel: self.cancel.clone(),
            session: Arc::default(),
            events: events.clone(),
            step: String::new(),
            host_ready_within: self.host_ready_within,
            delete_buckets: Arc::default(),
            ssh_config: self.ssh_config.clone(),
        })
    }

    /// Holds the environment's lock for the duration of a mutating run, so two shells
    /// cannot run `up` and `down` on the same environment at once.
    fn lock(&self) -> Result<std::fs::File> {
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
        match file.try_lock() {
            Ok(()) => Ok(file),
            Err(std::fs::TryLockError::WouldBlock) => Err(StateError::Locked {
                env: self.env.name.clone(),
                path,
            }
            .into()),
            Err(std::fs::TryLockError::Error(source)) => {
                Err(StateError::Io { path, source }.into())
            }
        }
    }

    /// Dry run: what would change, and the API calls and host commands it would make.
    /// Makes no mutating call. Steps whose dependencies will change are not observed (their
    /// host may not exist yet) and are shown with the actions they would take.
    pub async fn plan(
        &self,
        opts: RunOptions,
        on_event: impl Fn(Event) + Send + Sync + 'static,
    ) -> Result<Report> {
        let events = EventSink::new(on_event);
        self.plan_with(opts, &events, "plan").await
    }

    async fn plan_with(
        &self,
        opts: RunOptions,
        events: &EventSink,
        operation: &str,
    ) -> Result<Report> {
        let selected = self.select(&opts)?;
        let ctx = self.ctx(events)?;
        let t0 = Instant::now();
        let changes: Arc<Mutex<BTreeMap<String, Change>>> = Arc::default();
        let (outcomes, errors) = run_dag(
            &self.steps,
            &selected,
            Direction::Forward,
            &self.cancel,
            events,
            |step| {
                let ctx = ctx.for_step(step.id());
                let changes = changes.clone();
                let events = events.clone();
                async move {
                    for w in step.warnings() {
                        ctx.warn(w);
                    }
                    let (upstream, unobserved): (Vec<String>, Vec<String>) = {
                        let c = changes.lock().unwrap_or_else(|p| p.into_inner());
                        let with = |want: &dyn Fn(Change) -> bool| {
                            step.deps()
                                .iter()
                                .filter(|d| c.get(*d).is_some_and(|ch| want(*ch)))
                                .cloned()
                                .collect()
                        };
                        (
                            with(&|ch| !matches!(ch, Change::None | Change::Unknown)),
                            with(&|ch| ch == Change::Unknown),
                        )
                    };
                    let (change, diff, actions) = if !upstream.is_empty() {
                        (
                            Change::Create,
                            vec![format!("after {} changes", upstream.join(", "))],
                            step.planned_actions(),
                        )
                    } else if !unobserved.is_empty() {
                        // Its host or inputs could not be observed either; trying would only wait.
                        (
                            Change::Unknown,
                            vec![format!(
                                "after {}, which could not be observed",
                                unobserved.join(", ")
                            )],
                            step.planned_actions(),
                        )
                    } else {
                        match step.check(&ctx).await {
                            Ok(CheckOutcome {
                                observed: Observed::Satisfied,
                                ..
                            }) => (Change::None, vec![], vec![]),
                            Ok(CheckOutcome {
                                observed: Observed::Missing,
                                actions,
                            }) => (Change::Create, vec![], actions),
                            Ok(CheckOutcome {
                                observed: Observed::Drifted(diff),
                                actions,
                            }) => (Change::Update, diff, actions),
                            Err(e)
                                if e.backend().is_some_and(|b| {
                                    b.is_auth()
                                        || matches!(
                                            b,
                                            crate::BackendError::Unavailable { .. }
                                                | crate::BackendError::Connection { .. }
                                        )
                                }) =>
                            {
                                (
                                    Change::Unknown,
                                    vec![format!("cannot observe: {}", error_chain(&e))],
                                    step.planned_actions(),
                                )
                            }
                            Err(e) => return Err(e),
                        }
                    };
                    changes
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .insert(step.id().to_string(), change);
                    events.emit(Event::Planned {
                        step: step.id().to_string(),
                        summary: step.summary(),
                        change,
                        diff,
                        actions,
                    });
                    Ok(Outcome::Planned { change })
                }
            },
        )
        .await;
        finish(
            operation,
            &self.env.name,
            outcomes,
            errors,
            t0,
            &self.cancel,
        )
    }

    /// Converges the environment: each step checks, and applies only when it differs.
    pub async fn up(
        &self,
        opts: RunOptions,
        on_event: impl Fn(Event) + Send + Sync + 'static,
    ) -> Result<Report> {
        let _lock = self.lock()?;
        let events = EventSink::new(on_event);
        let selected = self.select(&opts)?;
        let ctx = self.ctx(&events)?;
        for step in self.steps.iter().filter(|s| selected.contains(s.id())) {
            step.preflight(&ctx.for_step(step.id()))
                .await
                .map_err(|e| e.in_step(step.id()))?;
        }
        let t0 = Instant::now();
        let (outcomes, errors) = run_dag(
            &self.steps,
            &selected,
            Direction::Forward,
            &self.cancel,
            &events,
            |step| {
                let ctx = ctx.for_step(step.id());
                let events = events.clone();
                async move {
                    let id = step.id().to_string();
                    for w in step.warnings() {
                        ctx.warn(w);
                    }
                    events.emit(Event::Started {
                        step: id.clone(),
                        phase: Phase::Check,
                    });
                    let checked = step.check(&ctx).await?;
                    if checked.observed == Observed::Satisfied {
                        events.emit(Event::Satisfied { step: id });
                        return Ok(Outcome::Satisfied);
                    }
                    if let Observed::Drifted(diff) = &checked.observed {
                        for d in diff {
                            ctx.log(format!("differs: {d}"));
                        }
                    }
                    let t = Instant::now();
                    events.emit(Event::Started {
                        step: id.clone(),
                        phase: Phase::Apply,
                    });
                    step.apply(&ctx).await?;
                    events.emit(Event::Done {
                        step: id,
                        phase: Phase::Apply,
                        elapsed_ms: t.elapsed().as_millis() as u64,
                    });
                    Ok(Outcome::Changed)
                }
            },
        )
        .await;
        finish("up", &self.env.name, outcomes, errors, t0, &self.cancel)
    }

    /// Removes what kgenv created, dependents first. Buckets and data are kept.
    pub async fn down(
        &self,
        opts: RunOptions,
        on_event: impl Fn(Event) + Send + Sync + 'static,
    ) -> Result<Report> {
        let _lock = self.lock()?;
        let events = EventSink::new(on_event);
        let selected = self.select(&opts)?;
        let known: Vec<&str> = self.env.bucket.iter().map(|b| b.bucket.as_str()).collect();
        if let Some(unknown) = opts
            .delete_buckets
            .iter()
            .find(|b| !known.contains(&b.as_str()))
        {
            return Err(Error::Usage(format!("bucket `{unknown}` is not this environment's bucket ({}); kgenv deletes only the bucket it mounts, and only when named", if known.is_empty() { "it has none".to_string() } else { known.join(", ") })));
        }
        let mut ctx = self.ctx(&events)?;
        ctx.delete_buckets = Arc::new(opts.delete_buckets.clone());
        let t0 = Instant::now();
        let (outcomes, errors) = run_dag(
            &self.steps,
            &selected,
            Direction::Reverse,
            &self.cancel,
            &events,
            |step| {
                let ctx = ctx.for_step(step.id());
                let events = events.clone();
                async move {
                    let id = step.id().to_string();
                    let t = Instant::now();
                    events.emit(Event::Started {
                        step: id.clone(),
                        phase: Phase::Destroy,
                    });
                    Ok(match step.destroy(&ctx).await? {
                        Destroyed::Removed => {
                            events.emit(Event::Done {
                                step: id,
                                phase: Phase::Destroy,
                                elapsed_ms: t.elapsed().as_millis() as u64,
                            });
                            Outcome::Removed
                        }
                        Destroyed::Nothing => {
                            events.emit(Event::Satisfied { step: id });
                            Outcome::Nothing
                        }
                    })
                }
            },
        )
        .await;
        finish("down", &self.env.name, outcomes, errors, t0, &self.cancel)
    }

    /// `kgenv stop`: stops the environment's GCE instance and keeps its disk, so the GPU is
    /// no longer billed. Returns the instance as it is afterwards.
    pub async fn stop_instance(
        &self,
        on_event: impl Fn(Event) + Send + Sync + 'static,
    ) -> Result<crate::backends::compute::InstanceInfo> {
        let (step, ctx, _lock) = self.instance_step(on_event)?;
        step.stop(&ctx).await.map_err(|e| e.in_step("instance"))
    }

    /// `kgenv start`: starts the environment's stopped GCE instance, records its new
    /// address, and pins its host keys if they are not yet. Returns the running instance.
    pub async fn start_instance(
        &self,
        on_event: impl Fn(Event) + Send + Sync + 'static,
    ) -> Result<crate::backends::compute::InstanceInfo> {
        let (step, ctx, _lock) = self.instance_step(on_event)?;
        step.start(&ctx).await.map_err(|e| e.in_step("instance"))
    }

    fn instance_step(
        &self,
        on_event: impl Fn(Event) + Send + Sync + 'static,
    ) -> Result<(crate::steps::instance::InstanceStep, StepCtx, std::fs::File)> {
        let spec = match (&self.env.target, &self.env.instance) {
            (crate::spec::Target::Gce, Some(i)) => i.clone(),
            _ => {
                return Err(Error::Usage(format!(
                    "`{}` has no GCE instance to stop or start (target is `{}`)",
                    self.env.name,
                    self.env.target.kind()
                )))
            }
        };
        let lock = self.lock()?;
        let ctx = self.ctx(&EventSink::new(on_event))?.for_step("instance");
        Ok((
            crate::steps::instance::InstanceStep::new(&self.env, spec),
            ctx,
            lock,
        ))
    }

    /// The state file and a live check of every step.
    pub async fn status(
        &self,
        on_event: impl Fn(Event) + Send + Sync + 'static,
    ) -> Result<StatusReport> {
        let events = EventSink::new(on_event);
        let live = self
            .plan_with(RunOptions::default(), &events, "status")
            .await?;
        let store = StateStore::open(&self.state_dir, &self.env.name, self.env.target.kind())?;
        Ok(StatusReport {
            state_file: store.path().to_path_buf(),
            state: store.snapshot().await,
            live,
        })
    }
}

fn finish(
    operation: &str,
    env: &str,
    steps: Vec<StepOutcome>,
    mut errors: Vec<(String, Error)>,
    t0: Instant,
    cancel: &CancellationToken,
) -> Result<Report> {
    if cancel.is_cancelled() {
        return Err(Error::Cancelled);
    }
    if !errors.is_empty() {
        let failed = errors.iter().map(|(id, _)| id.clone()).collect();
        let (_, first) = errors.remove(0);
        return Err(Error::RunFailed {
            failed,
            first: Box::new(first),
        });
    }
    Ok(Report {
        operation: operation.into(),
        env: env.into(),
        steps,
        elapsed_ms: t0.elapsed().as_millis() as u64,
    })
}
