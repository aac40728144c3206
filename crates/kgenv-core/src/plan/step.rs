//! The [`Step`] trait every step of the guide implements, and the context it runs in.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::OnceCell;
use tokio_util::sync::CancellationToken;

use super::events::{Event, EventSink};
use crate::backends::container::{ContainerEngine, EngineLocation};
use crate::backends::{Backends, Progress, Remote};
use crate::error::{BackendError, Result};
use crate::spec::{Env, Target};
use crate::state::StateStore;

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
}

impl CheckOutcome {
    /// Nothing to do.
    pub fn satisfied() -> Self {
        Self {
            observed: Observed::Satisfied,
            actions: Vec::new(),
        }
    }
    /// To be created by these actions.
    pub fn missing(actions: Vec<String>) -> Self {
        Self {
            observed: Observed::Missing,
            actions,
        }
    }
    /// To be changed: differences and actions.
    pub fn drifted(diff: Vec<String>, actions: Vec<String>) -> Self {
        Self {
            observed: Observed::Drifted(diff),
            actions,
        }
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
}

/// Connections opened during a run, shared by its steps and opened on first use.
#[derive(Default)]
pub(crate) struct Session {
    remote: OnceCell<Arc<dyn Remote>>,
    engine: OnceCell<Arc<dyn ContainerEngine>>,
    /// The GCE preflight's findings (resolved image, usable zones), once per run.
    pub(crate) gce_preflight: OnceCell<crate::steps::instance::Preflight>,
    /// The caller's public IP, detected once per run for the firewall rules.
    pub(crate) caller_ip: OnceCell<String>,
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
    pub(crate) session: Arc<Session>,
    pub(crate) events: EventSink,
    pub(crate) step: String,
    pub(crate) host_ready_within: Duration,
    /// Where `ssh <env>` gets its Host block; `None` leaves the user's SSH config alone
    /// (mocks, tests, library use).
    pub(crate) ssh_config: Option<crate::ssh::SshConfigFiles>,
    pub(crate) delete_buckets: Arc<Vec<String>>,
}

impl std::fmt::Debug for StepCtx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StepCtx")
            .field("step", &self.step)
            .finish_non_exhaustive()
    }
}

impl StepCtx {
    /// The same context for another step (events are attributed to it).
    pub(crate) fn for_step(&self, step: &str) -> Self {
        Self {
            step: step.to_string(),
            ..self.clone()
        }
    }

    /// Whether the user asked `down` to delete bucket `name` (buckets are kept otherwise).
    pub fn delete_bucket_requested(&self, name: &str) -> bool {
        self.delete_buckets.iter().any(|b| b == name)
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

    /// The user's SSH config files to keep `ssh <env>` working, when the run manages them.
    pub fn ssh_config(&self) -> Option<&crate::ssh::SshConfigFiles> {
        self.ssh_config.as_ref()
    }

    /// The host session (SSH), connecting on first use. `None` on the local target.
    pub async fn remote(&self) -> Result<Option<Arc<dyn Remote>>> {
        if self.env.target == Target::Local {
            return Ok(None);
        }
        let remote = self
            .session
            .remote
            .get_or_try_init(|| async {
                let addr = crate::steps::host::host_addr(self).await?;
                self.log(format!("connecting to {addr}"));
                let r = self
                    .backends
                    .remote
                    .connect(&addr, self.host_ready_within)
                    .await?;
                Ok::<_, crate::Error>(r)
            })
            .await?;
        Ok(Some(remote.clone()))
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
                let at = match self.remote().await? {
                    Some(r) => EngineLocation::Remote(r),
                    None => EngineLocation::Local,
                };
                Ok::<_, crate::Error>(self.backends.engine.connect(at).await?)
            })
            .await?;
        Ok(engine.clone())
    }
}
