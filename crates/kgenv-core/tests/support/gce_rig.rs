//! The runner on the Compute fake, for the GCE pipeline tests (`gce_pipeline.rs`,
//! `gce_lifecycle.rs`): kgenv's real GCE client against [`FakeGce`], every other backend from
//! the stateful mock, events recorded. A test file declares `mod gce_fake` (the fake) and
//! then this module, which uses it as `crate::gce_fake`.
#![allow(dead_code)]

use std::sync::{Arc, Mutex, Once};
use std::time::Duration;

use kgenv_core::backends::remote::HostAddr;
use kgenv_core::backends::RemoteConnector;
use kgenv_core::mock::MockWorld;
use kgenv_core::runner::{Event, RunOptions, Runner};
use kgenv_core::spec::{Env, Firewall, Instance, InstanceBuilder};
use kgenv_core::state::StateStore;

use crate::gce_fake::{FakeGce, Recorded};

/// The project every rig's environment lives in.
pub const PROJECT: &str = "my-project";

/// Keys go under one temporary KGENV_HOME for this test process (set before any client).
pub fn home() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let dir = std::env::temp_dir().join(format!("kgenv-gce-rig-{}", std::process::id()));
        std::env::set_var("KGENV_HOME", dir);
    });
}

/// An environment `kg` in [`PROJECT`] on `zones`, shaped further by `f` (and, with
/// `ssh_rule`, a firewall rule `kg-ssh` for port 22).
pub fn env_in(
    zones: &[&str],
    base: InstanceBuilder,
    ssh_rule: bool,
    f: impl FnOnce(InstanceBuilder) -> InstanceBuilder,
) -> Env {
    let mut b = base.project(PROJECT);
    for z in zones {
        b = b.zone(*z);
    }
    let mut env = Env::builder("kg").instance(f(b));
    if ssh_rule {
        env = env.firewall(Firewall::builder("kg-ssh").port(22));
    }
    env.build().expect("a valid env")
}

/// A T4 instance (Google's GPU recipe) on `zones`: the pipeline tests' default.
pub fn gpu_env(zones: &[&str], f: impl FnOnce(InstanceBuilder) -> InstanceBuilder) -> Env {
    env_in(
        zones,
        Instance::builder().gpu("nvidia-tesla-t4", 1),
        false,
        f,
    )
}

/// The mock host, reached at whatever address and pinned keys the Compute fake hands out
/// (the mock's own connector ties its 203.0.113.x addresses and its key to mock instances).
/// Records the addresses it was asked for, so a test can tell where kgenv logged in.
pub struct FakeHosts {
    inner: Arc<dyn RemoteConnector>,
    /// The addresses kgenv connected to, in order.
    pub asked: Mutex<Vec<String>>,
}

impl FakeHosts {
    /// The mock's connector `inner`, reached at the fake's addresses.
    pub fn over(inner: Arc<dyn RemoteConnector>) -> Self {
        Self {
            inner,
            asked: Mutex::default(),
        }
    }
}

#[async_trait::async_trait]
impl RemoteConnector for FakeHosts {
    async fn connect(
        &self,
        addr: &HostAddr,
        ready_within: Duration,
    ) -> kgenv_core::backends::BackendResult<Arc<dyn kgenv_core::backends::Remote>> {
        self.asked
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(addr.host.clone());
        let mut at = addr.clone();
        at.host = "10.0.0.1".into();
        at.pinned_host_keys.clear();
        self.inner.connect(&at, ready_within).await
    }
}

/// One runner of one environment on one fake, with its events and state directory.
pub struct Rig {
    /// The Compute fake.
    pub fake: FakeGce,
    /// The host connector the runner uses.
    pub hosts: Arc<FakeHosts>,
    /// The runner (shared, so a test can run it in a spawned task).
    pub runner: Arc<Runner>,
    /// Every event the runs sent to [`Rig::sink`].
    pub events: Arc<Mutex<Vec<Event>>>,
    /// The simulated world behind every backend but Compute (its Billing Catalog's SKUs,
    /// for one).
    pub world: MockWorld,
    up_steps: RunOptions,
    _state: tempfile::TempDir,
}

impl Rig {
    /// A rig on a fake with the default config; `up` runs the GCE part.
    pub async fn new(env: Env) -> Self {
        Self::with_fake(FakeGce::start().await, env)
    }

    /// A rig on `fake`; `up` runs the GCE part.
    pub fn with_fake(fake: FakeGce, env: Env) -> Self {
        home();
        let state = tempfile::tempdir().expect("state dir");
        let world = MockWorld::new();
        let mut backends = world.backends();
        backends.compute = Arc::new(fake.client());
        let hosts = Arc::new(FakeHosts::over(backends.remote.clone()));
        backends.remote = hosts.clone();
        let runner = Runner::new(env, backends)
            .state_dir(state.path())
            .host_ready_within(Duration::from_secs(20))
            // A capacity wait's rounds follow each other in milliseconds here.
            .capacity_backoff(Duration::from_millis(20), Duration::from_millis(80));
        Self {
            fake,
            hosts,
            runner: Arc::new(runner),
            events: Arc::default(),
            world,
            up_steps: gce_part(),
            _state: state,
        }
    }

    /// The steps [`Rig::up`] runs instead of the GCE part.
    #[must_use]
    pub fn up_steps(mut self, steps: RunOptions) -> Self {
        self.up_steps = steps;
        self
    }

    /// Another runner of `env` on the same Compute fake, with its own state directory: a
    /// second person (or a second checkout) using the same environment name.
    pub fn other_runner(&self, env: Env, state: &std::path::Path) -> Runner {
        let mut backends = MockWorld::new().backends();
        backends.compute = Arc::new(self.fake.client());
        backends.remote = self.hosts.clone();
        Runner::new(env, backends)
            .state_dir(state)
            .host_ready_within(Duration::from_secs(20))
    }

    /// An event sink that records into [`Rig::events`].
    pub fn sink(&self) -> impl Fn(Event) + Send + Sync + 'static {
        let events = self.events.clone();
        move |e| events.lock().unwrap_or_else(|p| p.into_inner()).push(e)
    }

    /// `up` of the rig's steps (by default the GCE part).
    pub async fn up(&self) -> kgenv_core::Result<kgenv_core::runner::Report> {
        self.runner.up(self.up_steps.clone(), self.sink()).await
    }

    /// The state file as it is now.
    pub async fn state(&self) -> kgenv_core::state::State {
        StateStore::open(self.runner.state_path().parent().expect("dir"), "kg", "gce")
            .expect("state")
            .snapshot()
            .await
    }

    /// The warnings sent so far.
    pub fn warnings(&self) -> Vec<String> {
        self.events
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter_map(|e| match e {
                Event::Warning { message, .. } => Some(message.clone()),
                _ => None,
            })
            .collect()
    }

    /// The log lines and warnings sent so far.
    pub fn logs(&self) -> Vec<String> {
        self.events
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter_map(|e| match e {
                Event::Log { line, .. } => Some(line.clone()),
                Event::Warning { message, .. } => Some(message.clone()),
                _ => None,
            })
            .collect()
    }

    /// The mutating requests the fake received.
    pub fn mutating(&self) -> Vec<Recorded> {
        self.fake
            .requests()
            .into_iter()
            .filter(Recorded::is_mutating)
            .collect()
    }
}

/// The GCE part: the preflight, the firewall rules and the instance (the firewall is not a
/// dependency of the instance, so `--until instance` alone would leave it out).
pub fn gce_part() -> RunOptions {
    RunOptions::default().only(["preflight", "firewall", "instance"])
}

/// The GCE part and the data disk.
pub fn gce_and_disk() -> RunOptions {
    RunOptions::default().only(["preflight", "firewall", "instance", "data-disk"])
}
