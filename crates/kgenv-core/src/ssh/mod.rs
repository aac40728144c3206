//! The SSH layer: kgenv's [`Remote`](crate::backends::Remote),
//! [`RemoteConnector`](crate::backends::RemoteConnector) and
//! [`SshAliases`](crate::backends::SshAliases) on russh and OpenSSH's config files.
//!
//! - [`connect`]: the client's options, dialing in two stages (TCP + banner, then login +
//!   `id -u`) and the bounded readiness wait;
//! - [`verify`]: host keys — pinned from GCE guest attributes, kgenv's known_hosts file,
//!   trust-on-first-use only when asked;
//! - [`identity`]: loading the client key (kgenv's own or the user's; encrypted keys refused
//!   with a clear error);
//! - [`session`]: [`SshConnector`] and [`SshSession`] — one connection, many channels,
//!   reconnect after a drop;
//! - `exec` / `files`: commands with streamed output, timeouts and `sudo -n`; binary-safe
//!   file upload and read;
//! - [`tunnel`]: TCP and unix-socket byte streams on the host;
//! - [`config_file`]: the `Include`d ssh_config file and the `ssh` command for `kgenv ssh`.
//!
//! ```no_run
//! # async fn demo() -> kgenv_core::backends::BackendResult<()> {
//! use std::time::Duration;
//! use kgenv_core::backends::{no_progress, remote::{ExecRequest, HostAddr}, RemoteConnector};
//! use kgenv_core::shell::Cmd;
//! use kgenv_core::ssh::SshConnector;
//! let addr = HostAddr {
//!     user: "kgenv".into(),
//!     host: "203.0.113.7".into(),
//!     port: 22,
//!     identity_file: Some(kgenv_core::keys::private_key_path("dev")?),
//!     pinned_host_keys: vec!["ssh-ed25519 AAAAC3Nza...".into()],
//!     trust_on_first_use: false,
//! };
//! let remote = SshConnector::new().connect(&addr, Duration::from_secs(300)).await?;
//! let out = remote.exec(ExecRequest::new(Cmd::new("ls").arg("/my data").line()), &no_progress).await?;
//! println!("{}", out.stdout_text());
//! # Ok(()) }
//! ```

pub mod config_file;
pub mod connect;
mod exec;
mod files;
pub mod identity;
pub mod session;
pub mod tunnel;
pub mod verify;

pub use config_file::SshConfigFiles;
pub use connect::SshOptions;
pub use session::{SshConnector, SshSession};
