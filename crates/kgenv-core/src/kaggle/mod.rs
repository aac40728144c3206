//! Kaggle competition data: the API client (credentials and endpoint as the official
//! client finds them), the real [`Kaggle`](crate::backends::Kaggle) backend for a local
//! directory or `gs://`, the remote variant that runs on a VM, and the `list`/`pull` entry
//! points the CLI calls.
//!
//! The files, by role; no two import each other (the agent's server runs `data` on the
//! host, and only `backend` joins the agent's client to `data`):
//!
//! - [`backend`]: the `Kaggle` implementation of [`KaggleData`] (which hands itself to a
//!   host's agent) and [`LazyKaggle`];
//! - [`agent`]: the data agent that runs on a host — its wire protocol, its server
//!   ([`agent_main`]) over [`data`], and its client ([`RemoteKaggle`]);
//! - [`data`]: the local and `gs://` work ([`KaggleData`], [`Dest`]);
//! - [`pull`](mod@pull): `kgenv data pull` over any backend;
//! - `client`, [`credentials`], [`env`](mod@env), [`api`]: the Kaggle API itself.
//!
//! ```no_run
//! # async fn demo() -> kgenv_core::backends::BackendResult<()> {
//! use kgenv_core::kaggle::{self, PullOptions};
//! for f in kaggle::list_files("titanic").await? {
//!     println!("{} {}", f.name, f.size);
//! }
//! let opts = PullOptions::new("/data/titanic").files("*.csv");
//! let report = kaggle::pull("titanic", &opts, &|e| println!("{e:?}")).await?;
//! println!("{} files, {} bytes", report.fetched, report.bytes);
//! # Ok(()) }
//! ```

pub mod agent;
pub mod api;
pub mod backend;
mod client;
pub mod credentials;
pub mod data;
pub mod env;
pub mod pull;

pub use agent::{agent_main, AgentCommand, RemoteKaggle};
pub use backend::LazyKaggle;
pub use client::KaggleClient;
pub use credentials::Credentials;
pub use data::{Dest, KaggleData};
pub use env::KaggleEndpoint;
pub use pull::{list_files, pull, pull_with, PullEvent, PullOptions, PullReport};
