//! kgenv-core: a Kaggle GPU analysis environment in the cloud, as typed, idempotent steps.
//!
//! The guide kgenv automates — a GCE GPU VM, a firewall rule, a gcsfuse bucket, a GitHub
//! key, Kaggle's docker image with the GPU visible, Jupyter with a password and TLS, and the
//! competition data — is modelled as:
//!
//! - [`runner`]: kgenv's verbs (plan, up, down, status, stop, start, ssh, exec, logs, gpu,
//!   jupyter, autostop, data list/pull, hash-password) — what the CLI and Python call;
//! - [`plan`]: the generic step engine — the [`plan::Step`] trait, the DAG executor, events;
//! - [`steps`]: one module per step of the guide;
//! - [`spec`]: one validated, by-value builder per resource, gathered in [`spec::Env`];
//! - [`config`]: `kgenv.toml` to and from those builders, errors with file:line:col;
//! - [`state`]: what kgenv created, so `status` and `down` work from any shell;
//! - [`backends`]: one trait per outside system, with stateful mocks in [`mock`] and the
//!   real clients (`gce`, `gcs`, `ssh`, `docker`, `kaggle`, `github`, `billing`) built by
//!   [`wiring`];
//! - [`pricing`]: hourly prices from Compute Engine's SKUs, and their cache on disk;
//! - [`http`] and [`google_auth`]: the one HTTP layer and Google's credentials.
//!
//! Arrows point one way — surfaces → runner → steps and engine → backend traits ← clients;
//! `tests/architecture.rs` keeps it so.
//!
//! ```no_run
//! # async fn demo() -> kgenv_core::Result<()> {
//! use kgenv_core::{config, mock::MockWorld, runner::{Runner, RunOptions}};
//! let env = config::load(std::path::Path::new("kgenv.toml"))?;
//! let world = MockWorld::new();
//! let runner = Runner::new(env, world.backends()).state_dir(std::env::temp_dir());
//! let report = runner.up(RunOptions::default(), |event| println!("{event}")).await?;
//! println!("{} steps changed", report.changed());
//! # Ok(()) }
//! ```

pub mod backends;
pub mod billing;
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
pub mod pricing;
pub mod runner;
pub mod shell;
pub mod spec;
pub mod ssh;
pub mod state;
pub mod steps;
pub mod wiring;

pub use error::{BackendError, ConfigError, Error, Result, ValidationError};
