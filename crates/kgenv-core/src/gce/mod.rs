//! Google Compute Engine over its REST API: the real [`crate::backends::Compute`].
//!
//! Layers, bottom up (the shape of google-cloud-rust and bollard, written for kgenv), on
//! the shared [`crate::http`] transport and [`crate::google_auth`] credentials:
//!
//! - [`model`]: serde models of the fields kgenv uses, typed as the discovery document says;
//! - [`api`]: one request builder per method, no I/O, every path segment checked;
//! - [`recipe`]: kgenv's instance and firewall bodies (Google's GPU recipe);
//! - [`errors`]: HTTP errors and failed operations → typed [`crate::BackendError`]s;
//! - [`operation`]: `operations.wait` long-polls, looped until DONE;
//! - [`caller_ip`]: the caller's public address for SSH-only firewall rules;
//! - [`client`]: [`GceCompute`], the trait implementation: the service root
//!   (`CLOUDSDK_API_ENDPOINT_OVERRIDES_COMPUTE`), bearer tokens (`GOOGLE_OAUTH_ACCESS_TOKEN`,
//!   else Application Default Credentials), retries with backoff and full jitter,
//!   `Retry-After`, a `requestId` per mutating call reused across its retries.
//!
//! ```no_run
//! # async fn demo() -> kgenv_core::Result<()> {
//! use std::sync::Arc;
//! use kgenv_core::{config, gce::GceCompute, mock::MockWorld, runner::{Runner, RunOptions}};
//! let env = config::load(std::path::Path::new("kgenv.toml"))?;
//! let mut backends = MockWorld::new().backends();
//! backends.compute = Arc::new(GceCompute::from_env().await?);
//! let runner = Runner::new(env, backends);
//! runner.up(RunOptions::default().until("instance"), |e| println!("{e}")).await?;
//! runner.stop(|e| println!("{e}")).await?; // keep the disk, stop paying for the GPU
//! # Ok(()) }
//! ```

pub mod api;
pub mod caller_ip;
pub mod client;
pub mod errors;
pub mod model;
pub mod operation;
pub mod recipe;

pub use client::{GceCompute, GceComputeBuilder, BASE_URL_ENV, DEFAULT_BASE_URL, RETRY};
