//! One module per command group; each turns parsed arguments into runner calls and hands
//! what comes back to [`crate::render`]. [`Session`] is what every environment command
//! shares: the loaded config, the backends (real or `--mock`), the runner, Ctrl-C and the
//! event renderer.

pub mod container;
pub mod data;
pub mod host;
pub mod lifecycle;
pub mod local;

use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use kgenv_core::config::{self, Overrides};
use kgenv_core::mock::MockWorld;
use kgenv_core::runner::{self, Disruption, Event, Runner};
use kgenv_core::{wiring, Error};
use tokio_util::sync::CancellationToken;

use crate::cli::{Global, TargetArg};
use crate::render::{self, Renderer};

/// Exit code for a cancelled run (128 + SIGINT), as shells expect.
pub const EXIT_CANCELLED: u8 = 130;

/// An environment command's context.
pub struct Session {
    /// The environment's runner.
    pub runner: Runner,
    /// Cancelled by Ctrl-C.
    pub cancel: CancellationToken,
    /// Shows events.
    pub renderer: Arc<Renderer>,
    /// `--json`.
    pub json: bool,
    /// The `plan` verdicts of the run, kept to print the plan in the DAG's order.
    planned: Arc<Mutex<Vec<Event>>>,
}

impl Session {
    /// Loads the config with the command line's overrides and picks the backends.
    pub async fn open(global: &Global) -> Result<Self, Error> {
        let overrides = Overrides {
            target: global.target.map(|t| match t {
                TargetArg::Gce => "gce".to_string(),
                TargetArg::Ssh => "ssh".into(),
                TargetArg::Local => "local".into(),
            }),
            ssh_host: global.host.clone(),
            ..Overrides::from_env()
        };
        let env = config::load_with(&global.config, &overrides)?;
        let state_dir = state_dir(global);
        let backends = if global.mock {
            let world = state_dir.join("mock-world.json");
            eprintln!(
                "SIMULATED (--mock): nothing real is created; the simulated world lives in {}",
                world.display()
            );
            MockWorld::persistent(&world)?.backends()
        } else {
            wiring::from_env().await
        };
        let cancel = CancellationToken::new();
        spawn_ctrl_c(cancel.clone());
        let renderer = Arc::new(Renderer::new(global.json, global.verbose > 0));
        let mut runner = Runner::new(env, backends)
            .state_dir(&state_dir)
            .cancel_token(cancel.clone());
        if std::io::stdin().is_terminal() {
            // Someone can answer: `up` asks before a change that restarts the VM. Without
            // a terminal there is no callback, and such a change needs --yes.
            let r = renderer.clone();
            runner = runner.confirm_with(Arc::new(move |d: &Disruption| {
                r.suspend(|| render::confirm_disruption(d))
            }));
        }
        Ok(Self {
            runner,
            cancel,
            renderer,
            json: global.json,
            planned: Arc::default(),
        })
    }

    /// The event sink of a run: shown by the renderer, `plan` verdicts kept.
    pub fn sink(&self) -> impl Fn(Event) + Send + Sync + 'static {
        let (renderer, planned) = (self.renderer.clone(), self.planned.clone());
        move |e: Event| {
            if matches!(e, Event::Planned { .. }) {
                planned
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push(e.clone());
            }
            renderer.event(&e);
        }
    }

    /// The `plan` verdicts seen so far.
    pub fn planned(&self) -> Vec<Event> {
        self.planned
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The step ids in declared order.
    pub fn order(&self) -> Vec<String> {
        self.runner.steps().into_iter().map(|s| s.id).collect()
    }
}

/// Where state files live: `--state-dir`, else the XDG state dir (or `$KGENV_HOME/state`).
pub fn state_dir(global: &Global) -> PathBuf {
    global
        .state_dir
        .clone()
        .unwrap_or_else(runner::default_state_dir)
}

/// The first Ctrl-C cancels (running steps finish or roll back); a second aborts at once.
fn spawn_ctrl_c(cancel: CancellationToken) {
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            eprintln!("\ncancelling: running steps finish or roll back so the state stays consistent (Ctrl-C again to abort now)");
            cancel.cancel();
            if tokio::signal::ctrl_c().await.is_ok() {
                eprintln!("aborted");
                std::process::exit(i32::from(EXIT_CANCELLED));
            }
        }
    });
}
