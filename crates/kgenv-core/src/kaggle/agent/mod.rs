//! The data agent: running the data step ON a remote host, so competition data never
//! passes through the user's machine.
//!
//! [`RemoteKaggle`] implements [`Kaggle`](crate::backends::Kaggle) over the
//! [`Remote`](crate::backends::Remote) trait:
//!
//! 1. it asks the host for `$HOME` and `uname -sm`, and copies kgenv's own Linux binary
//!    there once (`~/.cache/kgenv/bin/kgenv-<sha256 prefix>`, mode 0755, through
//!    `put_file`; an existing copy with the same hash is reused). The binary is the running
//!    executable, or the file named by `KGENV_REMOTE_BINARY` (a Linux build for hosts of
//!    another OS or architecture than the user's machine);
//! 2. every call runs the hidden agent command (`kgenv data agent`) there, with a JSON
//!    [`AgentRequest`] on stdin — the Kaggle credentials travel only on that stdin, never
//!    on a command line or in the environment, and only with the operations that reach
//!    Kaggle (list, fetch): looking at the destination (`present`, `space`: free bytes of
//!    its file system) needs none;
//! 3. the agent answers with JSON lines on stdout: progress lines (turned back into
//!    [`Progress::Transfer`](crate::backends::Progress::Transfer)), log lines, and one final
//!    result or typed error.
//!
//! `plan` and `status` use [`RemoteKaggle::observe_only`]: it never copies the binary
//! (without it on the host, the answer is unknown) and only looks.
//!
//! The CLI wires `kgenv data agent` to [`agent_main`].
//!
//! The files follow the roles: `protocol` (the request and the lines, shared by both
//! sides), `server` (what runs on the host: [`agent_main`], over the local backend) and
//! `client` (what runs here: [`RemoteKaggle`], which knows only the protocol). The client
//! never imports the local backend, and nothing here knows how a backend decides to go
//! remote (that is [`super::backend`]).

mod client;
mod protocol;
mod server;

pub use client::{AgentCommand, RemoteKaggle};
pub use protocol::{AgentOp, AgentRequest};
pub use server::agent_main;
