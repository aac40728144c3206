//! Kaggle competition data: the API client (credentials and endpoint as the official
//! client finds them), the real [`Kaggle`](crate::backends::Kaggle) backend for a local
//! directory or `gs://`, the remote variant that runs on a VM, and the `list`/`pull` entry
//! points the CLI calls.
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

pub mod api;
mod client;
pub mod credentials;
pub mod data;
pub mod env;
pub mod pull;
pub mod remote;

pub use client::KaggleClient;
pub use credentials::Credentials;
pub use data::{Dest, KaggleData, LazyKaggle};
pub use env::KaggleEndpoint;
pub use pull::{list_files, pull, pull_with, PullEvent, PullOptions, PullReport};
pub use remote::{agent_main, AgentCommand, RemoteKaggle};
