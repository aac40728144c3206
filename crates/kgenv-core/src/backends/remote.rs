//! The Remote (SSH) backend traits: commands, files and tunnels on a host, and the user's
//! OpenSSH configuration where kgenv keeps a `Host <env>` alias for it.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncWrite};

use super::{BackendResult, ProgressFn};

/// A bidirectional byte stream: a tunnelled TCP connection or unix socket.
pub trait ByteStream: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> ByteStream for T {}

/// How to reach a host over SSH.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostAddr {
    /// Login user.
    pub user: String,
    /// Host name or IP.
    pub host: String,
    /// SSH port.
    pub port: u16,
    /// Private key to log in with.
    pub identity_file: Option<PathBuf>,
    /// Host keys to pin (`ssh-ed25519 AAAA...`), e.g. from GCE guest attributes. Empty: use
    /// kgenv's known_hosts file.
    pub pinned_host_keys: Vec<String>,
    /// Record an unknown host's key on first use (only when the user asked for it).
    pub trust_on_first_use: bool,
}

impl std::fmt::Display for HostAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}@{}:{}", self.user, self.host, self.port)
    }
}

/// One command to run on a host. `command` is a shell line whose every value was quoted
/// with [`crate::shell::quote`]; build it with [`crate::shell::Cmd`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecRequest {
    /// The shell line.
    pub command: String,
    /// Bytes written to the command's stdin, then closed.
    pub stdin: Option<Vec<u8>>,
    /// Run through `sudo -n`.
    pub sudo: bool,
    /// Give up after this long.
    pub timeout: Option<Duration>,
}

impl ExecRequest {
    /// A request for `command` with no stdin, no sudo and no timeout.
    pub fn new(command: impl Into<String>) -> Self {
        Self {
            command: command.into(),
            stdin: None,
            sudo: false,
            timeout: None,
        }
    }

    /// Feeds `stdin` to the command.
    #[must_use]
    pub fn stdin(mut self, stdin: impl Into<Vec<u8>>) -> Self {
        self.stdin = Some(stdin.into());
        self
    }

    /// Runs the command through `sudo -n`.
    #[must_use]
    pub fn sudo(mut self) -> Self {
        self.sudo = true;
        self
    }

    /// Gives up after `timeout`.
    #[must_use]
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }
}

/// What a finished command left.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExecOutput {
    /// Exit status (-1 when killed by a signal).
    pub exit_code: i64,
    /// Everything it wrote to stdout.
    pub stdout: Vec<u8>,
    /// Everything it wrote to stderr.
    pub stderr: Vec<u8>,
}

impl ExecOutput {
    /// Whether it exited 0.
    pub fn success(&self) -> bool {
        self.exit_code == 0
    }

    /// Stdout as text (lossy).
    pub fn stdout_text(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }

    /// The last few lines of stderr, for error messages.
    pub fn stderr_tail(&self) -> String {
        let text = String::from_utf8_lossy(&self.stderr);
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(5)..].join("\n")
    }
}

/// An authenticated, verified session on a host. Many calls may run at once.
#[async_trait]
pub trait Remote: Send + Sync {
    /// `user@host:port`, for messages.
    fn endpoint(&self) -> String;
    /// Runs a command, streaming its output lines to `progress`.
    async fn exec(&self, req: ExecRequest, progress: ProgressFn<'_>) -> BackendResult<ExecOutput>;
    /// Writes a file (binary-safe) with `mode`, creating parent directories.
    async fn put_file(&self, path: &str, content: &[u8], mode: u32) -> BackendResult<()>;
    /// Reads a file, `None` when it does not exist.
    async fn read_file(&self, path: &str) -> BackendResult<Option<Vec<u8>>>;
    /// Opens a TCP connection from the host to `host:port` (SSH `direct-tcpip`).
    async fn open_tcp(&self, host: &str, port: u16) -> BackendResult<Box<dyn ByteStream>>;
    /// Opens a unix socket on the host (SSH `direct-streamlocal`), e.g. Docker's.
    async fn open_unix(&self, path: &str) -> BackendResult<Box<dyn ByteStream>>;
}

/// Opens [`Remote`] sessions.
#[async_trait]
pub trait RemoteConnector: Send + Sync {
    /// Connects, verifies the host key and logs in; waits for the host up to `ready_within`.
    async fn connect(
        &self,
        addr: &HostAddr,
        ready_within: Duration,
    ) -> BackendResult<Arc<dyn Remote>>;
}

/// The user's OpenSSH configuration, where kgenv keeps one `Host <env>` block per
/// environment so `ssh <env>`, `scp` and editors' remote plugins reach the host with kgenv's
/// key and its pinned host key. The real one edits `~/.ssh/config` (an `Include` line) and a
/// file of kgenv's own; the mocks have none, so simulated runs never touch it.
pub trait SshAliases: Send + Sync {
    /// Writes (or replaces) the block for `env` pointing at `addr`. Idempotent.
    fn write_host(&self, env: &str, addr: &HostAddr) -> BackendResult<()>;
    /// Removes the block for `env` and its host-key entries.
    fn remove_host(&self, env: &str) -> BackendResult<()>;
    /// Whether a block for `env` exists.
    fn has_host(&self, env: &str) -> bool;
    /// Where the blocks live, for the state file and messages.
    fn location(&self) -> PathBuf;
    /// The system `ssh` command reaching `env` through its block: an interactive login
    /// without `command`; `tty` forces a terminal.
    fn ssh_command(&self, env: &str, command: &[String], tty: bool) -> std::process::Command;
}
