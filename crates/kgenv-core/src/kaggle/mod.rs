//! Kaggle competition data: the API client (credentials and endpoint as the official
//! client finds them), the real [`Kaggle`](crate::backends::Kaggle) backend for a local
//! directory or `gs://`, and the remote variant that runs on a VM. The pull itself (select,
//! skip what is complete, fetch a few files at a time) is the data step's
//! ([`crate::steps::data::pull`]), over any backend.
//!
//! The files, by role; no two import each other (the agent's server runs `data` on the
//! host, and only `backend` joins the agent's client to `data`):
//!
//! - [`backend`]: the `Kaggle` implementation of [`KaggleData`] (which hands itself to a
//!   host's agent) and [`LazyKaggle`];
//! - [`agent`]: the data agent that runs on a host — its wire protocol, its server
//!   ([`agent_main`]) over [`data`], and its client ([`RemoteKaggle`]);
//! - [`data`]: the local and `gs://` work ([`KaggleData`], [`Dest`]);
//! - `client`, [`credentials`], [`env`](mod@env), [`api`]: the Kaggle API itself.
//!
//! ```no_run
//! # async fn demo() -> kgenv_core::Result<()> {
//! use kgenv_core::backends::Kaggle;
//! use kgenv_core::download::DownloadOptions;
//! use kgenv_core::kaggle::KaggleData;
//! use kgenv_core::runner::data::{self, PullOptions};
//! // Credentials as the official client finds them; 8 parallel streams per file.
//! let kaggle = KaggleData::from_env(DownloadOptions::default().concurrency(8))?;
//! for f in kaggle.list_files("titanic").await? {
//!     println!("{} {}", f.name, f.size);
//! }
//! let opts = PullOptions::new("/data/titanic").files("*.csv");
//! let report = data::pull(&kaggle, "titanic", &opts, |e| println!("{e}")).await?;
//! println!("{} files, {} bytes", report.fetched.len(), report.bytes);
//! # Ok(()) }
//! ```

pub mod agent;
pub mod api;
pub mod backend;
mod client;
pub mod credentials;
pub mod data;
pub mod env;

pub use agent::{agent_main, AgentCommand, RemoteKaggle};
pub use backend::LazyKaggle;
pub use client::KaggleClient;
pub use credentials::Credentials;
pub use data::{Dest, KaggleData};
pub use env::KaggleEndpoint;
