//! kgenv-core: a Kaggle GPU analysis environment in the cloud, as typed, idempotent steps.
//!
//! The guide kgenv automates — a GCE GPU VM, a firewall rule, a gcsfuse bucket, a GitHub
//! key, Kaggle's docker image with the GPU visible, Jupyter with a password and TLS, and the
//! competition data — is modelled as:
//!
//! - [`spec`]: one validated, by-value builder per resource, gathered in [`spec::Env`];
//! - [`config`]: `kgenv.toml` to and from those builders, errors with file:line:col;
//! - [`plan`]: the [`plan::Step`] trait, the DAG executor, [`plan::Event`]s, `plan`/`up`/`down`;
//! - [`steps`]: one module per step of the guide;
//! - [`backends`]: one trait per outside system, with stateful mocks in [`mock`];
//! - [`state`]: what kgenv created, so `status` and `down` work from any shell;
//! - [`ssh`]: the real Remote backend on russh (exec, files, tunnels, `~/.ssh/config`).
//!
//! ```no_run
//! # async fn demo() -> kgenv_core::Result<()> {
//! use kgenv_core::{config, mock::MockWorld, plan::{Runner, RunOptions}};
//! let env = config::load(std::path::Path::new("kgenv.toml"))?;
//! let world = MockWorld::new();
//! let runner = Runner::new(env, world.backends()).state_dir(std::env::temp_dir());
//! let report = runner.up(RunOptions::default(), |event| println!("{event}")).await?;
//! println!("{} steps changed", report.changed());
//! # Ok(()) }
//! ```

pub mod backends;
pub mod config;
pub mod docker;
pub mod download;
pub mod error;
pub mod gce;
pub mod gcs;
pub mod github;
pub mod google_auth;
pub mod gpu;
pub mod http;
pub mod jupyter;
pub mod kaggle;
pub mod keys;
pub mod mock;
pub mod paths;
pub mod plan;
pub mod runner;
pub mod shell;
pub mod spec;
pub mod ssh;
pub mod state;
pub mod steps;
pub mod wiring;

pub use error::{BackendError, ConfigError, Error, Result, ValidationError};
